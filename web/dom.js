// Small DOM helpers shared by the admin pages (recordings, users, audit): element building, times, messages.

/** An element with properties (or attributes, for names the element has no property for) and children. */
export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value == null) continue;
    if (key === "dataset") Object.assign(node.dataset, value);
    else if (key in node) node[key] = value;
    else node.setAttribute(key, value);
  }
  node.append(...children.filter((c) => c != null && c !== false));
  return node;
}

export const $ = (id) => document.getElementById(id);

/** An ISO time in the reader's locale, or "" for none. */
export function fmtTime(iso) {
  return iso ? new Date(iso).toLocaleString() : "";
}

/** A message in a status line: plain, or an error (red, and announced by its role="status" / "alert"). */
export function say(node, text, { error = false } = {}) {
  node.className = error ? "message error" : "message";
  node.textContent = text;
}

/** Bytes as "12.3 MB". */
export function fmtBytes(n) {
  if (typeof n !== "number") return "";
  const units = ["B", "kB", "MB", "GB", "TB"];
  let i = 0;
  while (n >= 1000 && i < units.length - 1) { n /= 1000; i += 1; }
  return `${i ? n.toFixed(1) : n} ${units[i]}`;
}
