// Auditor and admin page: the audit trail (GET /api/v1/audit), filtered by who, action, record and time range,
// paged by the server's keyset cursor (older pages) with the cursors seen kept for going back (newer pages).
// The filters live in the address so a filtered view survives a reload and can be shared.
import { api } from "./api.js";
import { $, el, fmtTime } from "./dom.js";
import "./nav.js";
import { ensureSignedIn } from "./session.js";

const FIELDS = ["user", "action", "object_type", "object_id", "outcome", "since", "until", "limit"];
const state = { filters: {}, cursors: [null], page: 0, next: null };

/** datetime-local ("2026-12-01T21:00") is the reader's local time; the API wants ISO 8601 with a zone. */
function isoFromLocal(value) {
  const date = new Date(value);
  return Number.isNaN(date.getTime()) ? null : date.toISOString();
}

function readForm() {
  const form = $("audit-filters");
  const filters = {};
  for (const name of FIELDS) {
    const value = form.elements[name].value.trim();
    if (value) filters[name] = value;
  }
  return filters;
}

function fillForm(filters) {
  const form = $("audit-filters");
  for (const name of FIELDS) {
    if (name === "limit") form.elements.limit.value = filters.limit || "50";
    else form.elements[name].value = filters[name] || "";
  }
}

function query(filters, cursor) {
  const params = { count: "true", limit: filters.limit || "50" };
  for (const [key, value] of Object.entries(filters)) {
    if (key === "limit") continue;
    params[key] = key === "since" || key === "until" ? isoFromLocal(value) : value;
  }
  if (cursor != null) params.cursor = String(cursor);
  return params;
}

function row(entry) {
  const who = entry.username ? `${entry.username}${entry.role ? ` (${entry.role})` : ""}` : "anonymous";
  const record = [entry.object_type, entry.object_id].filter(Boolean).join(" ");
  return el("tr", { dataset: { id: entry.id, action: entry.action, outcome: entry.outcome } },
    el("td", { className: "small" }, el("time", { dateTime: entry.at }, fmtTime(entry.at))),
    el("td", {}, who, entry.token_id != null ? el("div", { className: "muted small" }, `token ${entry.token_id}`) : null),
    el("td", {}, el("code", {}, entry.action)),
    el("td", {}, record),
    el("td", {}, el("span", { className: `pill outcome-${entry.outcome}` }, entry.outcome),
      entry.status_code != null ? el("span", { className: "muted small" }, ` ${entry.status_code}`) : null),
    el("td", { className: "wrap small" }, entry.detail || ""),
    el("td", { className: "small" }, entry.client_address || ""));
}

async function load() {
  const count = $("audit-count");
  count.className = "muted";
  try {
    const page = await api.audit(query(state.filters, state.cursors[state.page]));
    state.next = page.next_cursor;
    $("audit-rows").replaceChildren(...page.data.map(row));
    const first = state.page * Number(state.filters.limit || 50);
    count.textContent = page.data.length
      ? `${page.count ?? "?"} matching entries; showing ${first + 1}–${first + page.data.length}, newest first.`
      : "No audit entries match these filters.";
    $("audit-page").textContent = `page ${state.page + 1}`;
    $("audit-older").disabled = state.next == null;
    $("audit-newer").disabled = state.page === 0;
  } catch (err) {
    if (err.message.startsWith("403")) {
      const box = $("page-refused");
      box.textContent = `You cannot read the audit trail: ${err.message}`;
      box.hidden = false;
      $("audit").hidden = true;
      return;
    }
    count.className = "message error";
    count.textContent = `Could not load the audit trail — ${err.message}`;
  }
}

function apply(filters) {
  state.filters = filters;
  state.cursors = [null];
  state.page = 0;
  const address = new URL(window.location.href);
  address.search = new URLSearchParams(filters).toString();
  window.history.replaceState(null, "", address);
  return load();
}

async function init() {
  const form = $("audit-filters");
  form.addEventListener("submit", (e) => { e.preventDefault(); apply(readForm()); });
  $("audit-clear").addEventListener("click", () => { fillForm({}); apply({}); });
  $("audit-older").addEventListener("click", () => {
    if (state.next == null) return;
    state.cursors[state.page + 1] = state.next;
    state.page += 1;
    load();
  });
  $("audit-newer").addEventListener("click", () => {
    if (state.page === 0) return;
    state.page -= 1;
    load();
  });
  const initial = Object.fromEntries([...new URLSearchParams(window.location.search)]
    .filter(([key, value]) => FIELDS.includes(key) && value));
  fillForm(initial);
  await ensureSignedIn();
  await apply(initial);
}

init();
