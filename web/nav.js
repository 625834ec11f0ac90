// The same page navigation on every page that includes <nav id="site-nav">: only the pages the signed-in
// user's role (or token) may use, from the permissions GET /api/v1/session returns; the current page is
// marked aria-current. The server refuses the data of a page anyway: the nav only avoids dead ends.
const PAGES = [
  { href: "index.html", label: "Event review", permission: "read_events" },
  { href: "recordings.html", label: "Recordings", permission: "write_recordings" },
  { href: "models.html", label: "Models & fine-tuning", permission: "read_models" },
  { href: "users.html", label: "Users & tokens", permission: "manage_users" },
  { href: "audit.html", label: "Audit trail", permission: "read_audit" },
];

function here() {
  const name = window.location.pathname.split("/").pop();
  return name || "index.html";
}

/** Render the nav for a session ({permissions: [...]}) or empty it (signed out). */
export function renderNav(session) {
  const nav = document.getElementById("site-nav");
  if (!nav) return;
  const allowed = new Set(session?.permissions || []);
  const list = document.createElement("ul");
  list.className = "site-nav-list";
  for (const page of PAGES) {
    if (!allowed.has(page.permission)) continue;
    const link = document.createElement("a");
    link.href = page.href;
    link.className = "nav-link";
    link.textContent = page.label;
    if (page.href === here()) link.setAttribute("aria-current", "page");
    const item = document.createElement("li");
    item.append(link);
    list.append(item);
  }
  nav.replaceChildren(list);
}

document.addEventListener("wardwatch:session", (e) => renderNav(e.detail));
