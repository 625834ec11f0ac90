// Keyboard triage: one table of shortcuts, used both to dispatch the keys and to fill the "?" dialog, so the
// help can never disagree with what the keys do. Keys do nothing while the user types in a field or while a
// dialog (sign-in, relabel, help) is open.
export const SHORTCUTS = [
  ["j", "next event", "next"],
  ["k", "previous event", "previous"],
  ["c", "confirm", "confirm"],
  ["r", "reject", "reject"],
  ["e", "relabel (choose the label, Enter saves)", "relabel"],
  ["u", "undo my review of this event (or my latest one)", "undo"],
  ["o", "cycle the explanation overlay", "overlay"],
  [" ", "play / pause the clip", "play"],
  ["[", "missed event: start at the player time", "markStart"],
  ["]", "missed event: end at the player time", "markEnd"],
  ["?", "show these shortcuts", "help"],
];

// inputs that take letters; a checkbox, radio or slider does not, so the shortcuts work while one has focus
const NOT_TEXT = new Set(["checkbox", "radio", "range", "button", "submit", "reset", "color", "file"]);
// controls that space presses, toggles or plays by itself: there space keeps its own meaning
const SPACE_OWNERS = "button, input, select, textarea, a[href], summary, video, [role=button], [role=radio]";

function typing(target) {
  if (target.tagName === "INPUT") return !NOT_TEXT.has(target.type);
  return target.tagName === "TEXTAREA" || target.tagName === "SELECT" || target.isContentEditable;
}

function blocked() {
  const signin = document.getElementById("signin");
  return (signin && !signin.hidden) || document.querySelector("dialog[open]") !== null;
}

/** Dispatch the shortcuts to ``actions`` (an object with the third column's names as methods). */
export function bindKeys(actions) {
  const byKey = new Map(SHORTCUTS.map(([key, , action]) => [key, action]));
  document.addEventListener("keydown", (e) => {
    if (e.ctrlKey || e.metaKey || e.altKey || typing(e.target) || blocked()) return;
    const action = byKey.get(e.key);
    if (!action) return;
    if (e.key === " " && e.target.closest?.(SPACE_OWNERS)) return;  // a focused control keeps its space
    e.preventDefault();  // e.g. space must not scroll the page
    actions[action]();
  });
}

/** Fill the help dialog from the table. */
export function fillHelp(list) {
  list.replaceChildren();
  for (const [key, what] of SHORTCUTS) {
    const dt = document.createElement("dt");
    dt.append(Object.assign(document.createElement("kbd"), { textContent: key === " " ? "space" : key }));
    list.append(dt, Object.assign(document.createElement("dd"), { textContent: what }));
  }
}
