// Admin page: users (list, create, disable) and API tokens (list, create, revoke). A new token's value is in
// the POST answer only; it is shown once in this page's memory and never stored or fetched again.
import { api } from "./api.js";
import { $, el, fmtTime, say } from "./dom.js";
import "./nav.js";
import { ensureSignedIn } from "./session.js";

const state = { users: [], tokens: [] };

/** A 403 (or any refusal) for the whole page: the server refused the data; say so instead of empty tables. */
function refuse(err) {
  const box = $("page-refused");
  box.textContent = `You cannot manage users and tokens: ${err.message}`;
  box.hidden = false;
  for (const id of ["users", "tokens"]) $(id).hidden = true;
}

/** What a token does now: revoked and expired tokens, and every token of a disabled user, no longer work. */
function tokenState(token) {
  if (token.revoked_at) return "revoked";
  if (token.expires_at && new Date(token.expires_at) < new Date()) return "expired";
  if (state.users.some((u) => u.username === token.username && !u.active)) return "user disabled";
  return "active";
}

// ------------------------------------------------------------------------------------------------- users

function renderUsers() {
  const rows = $("user-rows");
  rows.replaceChildren(...state.users.map((user) => {
    const stateText = user.active ? "active" : "disabled";
    const action = user.active
      ? el("button", { type: "button", textContent: "Disable", "aria-label": `Disable ${user.username}`,
        onclick: () => disableUser(user.username) })
      : null;
    return el("tr", { id: `user-${user.id}`, dataset: { username: user.username, state: stateText } },
      el("td", {}, el("strong", {}, user.username), user.demo ? el("span", { className: "muted small" }, " demo") : null),
      el("td", {}, user.role),
      el("td", {}, el("span", { className: `pill status-${stateText}` }, stateText),
        user.disabled_at ? el("div", { className: "muted small" }, fmtTime(user.disabled_at)) : null),
      el("td", { className: "small" }, fmtTime(user.created_at)),
      el("td", {}, action));
  }));
  const select = $("token-user");
  const chosen = select.value;
  select.replaceChildren(...state.users.filter((u) => u.active).map((u) =>
    el("option", { value: u.username, textContent: `${u.username} (${u.role})` })));
  if (chosen && [...select.options].some((o) => o.value === chosen)) select.value = chosen;
  else select.selectedIndex = 0;
}

async function loadUsers() {
  state.users = (await api.users()).data;
  renderUsers();
}

async function disableUser(username) {
  const status = $("users-status");
  if (!window.confirm(`Disable ${username}? Their sessions and tokens stop working at once.`)) return;
  try {
    await api.disableUser(username);
    say(status, `Disabled ${username}: their sessions and tokens no longer work.`);
    await loadUsers();  // first: a token's state reads its user's (renderTokens)
    await loadTokens();
  } catch (err) {
    say(status, `${username} not disabled — ${err.message}`, { error: true });
  }
}

async function createUser(e) {
  e.preventDefault();
  const form = e.target;
  const status = $("user-form-status");
  const body = { username: form.username.value.trim(), password: form.password.value, role: form.role.value };
  try {
    const user = await api.createUser(body);
    form.reset();
    say(status, `Created ${user.username} (${user.role}).`);
    await loadUsers();
  } catch (err) {
    say(status, `User not created — ${err.message}`, { error: true });
  }
}

// ------------------------------------------------------------------------------------------------ tokens

function renderTokens() {
  $("token-rows").replaceChildren(...state.tokens.map((token) => {
    const current = tokenState(token);
    const revoke = !token.revoked_at
      ? el("button", { type: "button", textContent: "Revoke", "aria-label": `Revoke token ${token.id}`,
        onclick: () => revokeToken(token.id) })
      : null;
    return el("tr", { id: `token-${token.id}`, dataset: { id: token.id, state: current.replace(" ", "-") } },
      el("td", { className: "num" }, String(token.id)),
      el("td", {}, token.username),
      el("td", { className: "wrap" }, token.name || ""),
      el("td", { className: "small" }, token.scopes.join(" ")),
      el("td", { className: "small" }, token.expires_at ? fmtTime(token.expires_at) : "never"),
      el("td", { className: "small" }, token.last_used_at ? fmtTime(token.last_used_at) : "—"),
      el("td", {}, el("span", { className: `pill status-${current.replace(" ", "-")}` }, current)),
      el("td", {}, revoke));
  }));
}

async function loadTokens() {
  state.tokens = (await api.tokens()).data;
  renderTokens();
}

async function revokeToken(id) {
  const status = $("tokens-status");
  try {
    await api.revokeToken(id);
    say(status, `Token ${id} revoked: it no longer works.`);
    await loadTokens();
  } catch (err) {
    say(status, `Token ${id} not revoked — ${err.message}`, { error: true });
  }
}

async function createToken(e) {
  e.preventDefault();
  const form = e.target;
  const status = $("token-form-status");
  const scopes = [...form.querySelectorAll('input[name="scopes"]:checked')].map((box) => box.value);
  const days = form.expires_days.value.trim();
  const body = { username: form.username.value, scopes, expires_days: days ? Number(days) : null,
    name: form.name.value.trim() || null };
  try {
    const created = await api.createToken(body);
    say(status, `Created token ${created.id} for ${created.username}.`);
    $("new-token-value").textContent = created.token;
    const box = $("new-token");
    box.hidden = false;
    box.focus();
    form.name.value = "";
    await loadTokens();
  } catch (err) {
    say(status, `Token not created — ${err.message}`, { error: true });
  }
}

function dismissToken() {
  $("new-token-value").textContent = "";
  $("new-token").hidden = true;
  $("token-form").querySelector("button[type=submit]").focus();
}

async function init() {
  $("user-form").addEventListener("submit", createUser);
  $("token-form").addEventListener("submit", createToken);
  $("new-token-dismiss").addEventListener("click", dismissToken);
  await ensureSignedIn();
  try {
    await loadUsers();
    await loadTokens();
  } catch (err) {
    refuse(err);
  }
}

init();
