// Signing in, for every page: who is signed in, the CSRF token every write must carry, and the sign-in form
// shown at start and whenever the API answers 401 (session ended). The session itself is an HttpOnly cookie
// this script never sees; the CSRF token lives only in this page's memory.
const BASE = "/api/v1";
let current = null;   // GET /api/v1/session: {user, csrf_token, expires_at, permissions, ...}
let waiting = null;   // the pending sign-in while the form is shown

export const csrfToken = () => current?.csrf_token || null;
export const currentUser = () => current?.user || null;
export const can = (permission) => Boolean(current?.permissions?.includes(permission));

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key in node) node[key] = value;
    else node.setAttribute(key, value);
  }
  node.append(...children);
  return node;
}

async function fetchSession() {
  const response = await fetch(BASE + "/session", { headers: { Accept: "application/json" } });
  if (response.status === 401) return null;
  if (!response.ok) throw new Error(`${response.status}: could not read the session`);
  return response.json();
}

function renderUserBar() {
  let bar = document.getElementById("user-bar");
  if (!bar) {
    bar = el("span", { id: "user-bar", className: "user-bar" });
    document.querySelector("header")?.append(bar);
  }
  bar.replaceChildren();
  // admin pages: the shared nav (nav.js) shows the pages the signed-in user may use, and hides them on sign-out
  document.dispatchEvent(new CustomEvent("wardwatch:session", { detail: current }));
  if (!current) return;
  const button = el("button", { type: "button", id: "sign-out", textContent: "Sign out" });
  button.addEventListener("click", signOut);
  bar.append(el("span", { id: "user-name", textContent: `${current.user.username} (${current.user.role})` }), button);
}

function minutes(seconds) {
  const m = Math.ceil(seconds / 60);
  return m <= 1 ? "a minute" : `${m} minutes`;
}

function form() {
  let backdrop = document.getElementById("signin");
  if (backdrop) return backdrop;
  const username = el("input", { id: "signin-username", name: "username", autocomplete: "username", required: true,
    spellcheck: false });
  const password = el("input", { id: "signin-password", name: "password", type: "password",
    autocomplete: "current-password", required: true });
  const message = el("p", { id: "signin-message", className: "message error", role: "alert" });
  const submit = el("button", { type: "submit", id: "signin-submit", className: "primary", textContent: "Sign in" });
  const signinForm = el("form", { id: "signin-form", className: "signin-form" },
    el("h2", { id: "signin-heading", textContent: "Sign in to Wardwatch" }),
    el("label", { htmlFor: "signin-username", textContent: "Username" }), username,
    el("label", { htmlFor: "signin-password", textContent: "Password" }), password,
    el("div", { className: "buttons" }, submit), message);
  signinForm.setAttribute("aria-labelledby", "signin-heading");
  backdrop = el("div", { id: "signin", className: "signin-backdrop" }, signinForm);
  signinForm.addEventListener("submit", async (e) => {
    e.preventDefault();
    submit.disabled = true;
    message.textContent = "";
    try {
      const response = await fetch(BASE + "/session", {
        method: "POST",
        headers: { "Content-Type": "application/json", Accept: "application/json" },
        body: JSON.stringify({ username: username.value.trim(), password: password.value }),
      });
      const body = await response.json().catch(() => ({}));
      if (response.ok) {
        current = body;
        password.value = "";
        backdrop.hidden = true;
        renderUserBar();
        const done = waiting;
        waiting = null;
        done?.resolve(current);
      } else if (response.status === 429) {
        const retry = Number(response.headers.get("Retry-After") || 60);
        message.textContent = `Too many failed sign-ins. Try again in ${minutes(retry)}.`;
      } else if (response.status === 401) {
        message.textContent = "Wrong username or password.";
        password.select();
      } else {
        message.textContent = `Could not sign in: ${typeof body.detail === "string" ? body.detail : response.status}`;
      }
    } catch (err) {
      message.textContent = `Could not reach the server: ${err.message}`;
    } finally {
      submit.disabled = false;
    }
  });
  document.body.append(backdrop);
  return backdrop;
}

/** Show the sign-in form; resolves with the new session once the user has signed in. */
export function signIn(reason = "") {
  if (!waiting) {
    let resolve;
    const promise = new Promise((r) => { resolve = r; });
    waiting = { promise, resolve };
  }
  current = null;
  renderUserBar();
  const backdrop = form();
  backdrop.hidden = false;
  document.getElementById("signin-message").textContent = reason;
  document.getElementById("signin-username").focus();
  return waiting.promise;
}

/** The current session, asking the user to sign in first if there is none. */
export async function ensureSignedIn() {
  current = await fetchSession();
  if (current) {
    renderUserBar();
    return current;
  }
  return signIn();
}

export async function signOut() {
  try {
    await fetch(BASE + "/session", { method: "DELETE", headers: { "X-CSRF-Token": csrfToken() || "" } });
  } finally {
    current = null;
    window.location.reload();  // nothing of the previous user stays on the page
  }
}
