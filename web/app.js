// Review queue: list flagged events, open one with its explanations, confirm / reject / relabel, undo one's own
// latest review, see the review history.
import { api } from "./api.js";
import { currentUser, ensureSignedIn } from "./session.js";

const METHOD_NAMES = {
  key_frame: "Frame",
  grad_cam: "Grad-CAM",
  guided_backprop: "Guided Backprop",
  guided_grad_cam: "Guided Grad-CAM",
  integrated_gradients: "Integrated Gradients",
};
const PAGE = 50;
const HISTORY = 20;  // newest reviews shown under an event
const state = { events: [], cursor: null, selected: null, views: [], view: 0, labels: [], classes: {},
                standing: null };  // standing: {event, review} — the latest review not undone, as the history shows it
const $ = (id) => document.getElementById(id);

function fmtSeconds(s) {
  const m = Math.floor(s / 60);
  return `${m}:${(s - m * 60).toFixed(1).padStart(4, "0")}`;
}

function filters() {
  const params = { limit: PAGE };
  if ($("filter-status").value) params.status = $("filter-status").value;
  if ($("filter-label").value) params.label = $("filter-label").value;
  return params;
}

async function loadEvents(append = false) {
  const params = filters();
  if (append && state.cursor) params.cursor = state.cursor;
  try {
    const page = await api.events(params);
    state.events = append ? state.events.concat(page.data) : page.data;
    state.cursor = page.next_cursor;
    $("queue-count").textContent = `${page.count} event${page.count === 1 ? "" : "s"}`;
    $("load-more").hidden = !page.next_cursor;
    renderList();
  } catch (err) {
    $("queue-count").textContent = `Could not load events: ${err.message}`;
  }
}

function renderList() {
  const list = $("event-list");
  list.replaceChildren();
  for (const event of state.events) {
    const item = document.createElement("li");
    item.className = "event-item" + (state.selected?.id === event.id ? " selected" : "");
    item.dataset.id = event.id;
    item.tabIndex = 0;
    const shown = event.reviewed_label || event.label;
    // Built node by node (no innerHTML): a label or status is data, never markup.
    const span = (className, text = "") => Object.assign(document.createElement("span"), { className, textContent: text });
    item.append(
      span(`badge label-${event.label}`),
      span("event-label", shown.replaceAll("_", " ")),
      span("event-time", `rec ${event.recording_id} · ${fmtSeconds(event.start)}–${fmtSeconds(event.end)}`),
      span("event-score", `${(event.peak_score * 100).toFixed(0)}%`),
      span(`status status-${event.status}`, event.status),
    );
    item.addEventListener("click", () => select(event.id));
    list.append(item);
  }
}

async function select(id) {
  const event = state.events.find((e) => e.id === id) || (await api.event(id));
  state.selected = event;
  renderList();
  $("detail-empty").hidden = true;
  $("event-detail").hidden = false;
  $("event-title").textContent = `${(event.reviewed_label || event.label).replaceAll("_", " ")} — event ${event.id}`;
  const facts = [
    ["Recording", event.recording_id],
    ["Time in recording", `${fmtSeconds(event.start)} – ${fmtSeconds(event.end)}`],
    ["Wall clock", event.start_wall ? new Date(event.start_wall).toLocaleString() : "unknown"],
    ["Peak score", `${(event.peak_score * 100).toFixed(1)}% at ${fmtSeconds(event.peak_time)}`],
    ["Explanation agreement", event.agreement == null ? "n/a" : event.agreement.toFixed(2)],
    ["Status", event.status + (event.reviewed_label ? ` → ${event.reviewed_label}` : "")],
  ];
  if (event.note) facts.push(["Note", event.note]);
  const dl = $("event-facts");
  dl.replaceChildren();
  for (const [k, v] of facts) {
    const dt = document.createElement("dt");
    dt.textContent = k;
    const dd = document.createElement("dd");
    dd.textContent = String(v);
    dl.append(dt, dd);
  }
  $("review-note").value = event.note || "";
  $("review-status").textContent = "";
  // a relabel chooses among the classes of the model version that flagged the event (the server insists)
  fillOptions($("relabel-label"), state.classes[event.model_version_id] || state.labels);
  $("undo").hidden = event.status === "flagged" || event.reviewer !== currentUser()?.username;
  await showHistory(event.id);
  $("clip-figure").hidden = !event.clip_url;
  if (event.clip_url) {
    $("event-clip").poster = event.key_frame_url || "";
    $("event-clip").src = event.clip_url;
  }
  const explanations = (await api.explanations(id)).data;
  state.views = explanations.map((e) => ({ method: e.method, url: e.overlay_url, video: e.video_url }));
  if (event.key_frame_url) state.views.push({ method: "key_frame", url: event.key_frame_url, video: null });
  renderViews(0);
  const video = explanations.find((e) => e.video_url);
  $("video-figure").hidden = !video;
  if (video) {
    $("overlay-video").poster = video.overlay_url;  // the key-frame overlay until the clip plays
    $("overlay-video").src = video.video_url;
  }
}

function fillOptions(select, labels) {
  select.replaceChildren();
  for (const label of labels) {
    const option = document.createElement("option");
    option.value = label;
    option.textContent = label.replaceAll("_", " ");
    select.append(option);
  }
}

async function showHistory(id) {
  const list = $("history-list");
  list.replaceChildren();
  state.standing = null;
  try {
    const page = await api.reviews(id, { limit: HISTORY });
    const standing = page.data.find((r) => !r.undone_at);
    if (standing) state.standing = { event: id, review: standing.id };
    $("history-count").textContent = String(page.count);
    for (const r of page.data) {
      const item = document.createElement("li");
      item.className = r.undone_at ? "undone" : "";
      const decision = r.decision + (r.label ? ` → ${r.label.replaceAll("_", " ")}` : "");
      const parts = [new Date(r.created_at).toLocaleString(), r.reviewer, decision];
      if (r.note) parts.push(`“${r.note}”`);
      if (r.undone_at) parts.push(`undone by ${r.undone_by} ${new Date(r.undone_at).toLocaleString()}`);
      item.textContent = parts.join(" · ");  // text, never markup: a note is whatever someone typed
      list.append(item);
    }
  } catch (err) {
    $("history-count").textContent = "?";
    list.append(Object.assign(document.createElement("li"), { textContent: `Could not load: ${err.message}` }));
  }
}

function renderViews(index) {
  state.view = index;
  const tabs = $("method-tabs");
  tabs.replaceChildren();
  state.views.forEach((view, i) => {
    const tab = document.createElement("button");
    tab.type = "button";
    tab.role = "tab";
    tab.className = "tab" + (i === index ? " active" : "");
    tab.setAttribute("aria-selected", String(i === index));
    tab.textContent = `${i + 1} ${METHOD_NAMES[view.method] || view.method}`;
    tab.addEventListener("click", () => renderViews(i));
    tabs.append(tab);
  });
  const view = state.views[index];
  if (view) {
    $("overlay").src = view.url;
    $("overlay").alt = `${METHOD_NAMES[view.method] || view.method} of event ${state.selected.id}`;
    $("overlay-caption").textContent = METHOD_NAMES[view.method] || view.method;
  }
}

async function review(decision) {
  const event = state.selected;
  if (!event) return;
  const body = { decision };
  const note = $("review-note").value.trim();
  if (note) body.note = note;
  if (decision === "relabelled") body.label = $("relabel-label").value;
  try {
    const updated = await api.review(event.id, body);
    Object.assign(event, updated);
    $("review-status").textContent = `Saved: ${updated.status}`;
    renderList();
    await select(event.id);
    $("review-status").textContent = `Saved: ${updated.status}`;
  } catch (err) {
    $("review-status").textContent = `Not saved — ${err.message}`;
  }
}

async function undo() {
  const event = state.selected;
  if (!event || $("undo").hidden) return;
  try {
    // name the review shown as the latest: a double click or a retry is then refused (409), never an undo of
    // the review below it
    const named = state.standing?.event === event.id ? state.standing.review : null;
    const updated = await api.undoReview(event.id, named);
    Object.assign(event, updated);
    renderList();
    await select(event.id);
    $("review-status").textContent = `Undone: now ${updated.status}`;
  } catch (err) {
    $("review-status").textContent = `Not undone — ${err.message}`;
  }
}

function move(step) {
  if (!state.events.length) return;
  const at = state.events.findIndex((e) => e.id === state.selected?.id);
  const next = Math.min(state.events.length - 1, Math.max(0, at + step));
  select(state.events[at < 0 ? 0 : next].id);
}

async function init() {
  try {
    const health = await api.health();
    $("health").textContent = `v${health.version} · ${health.mode}`;
    await ensureSignedIn();
    const models = await api.models();
    const active = models.find((m) => m.state === "active");
    state.labels = active ? active.class_names : [];
    state.classes = Object.fromEntries(models.map((m) => [m.id, m.class_names]));
  } catch (err) {
    $("health").textContent = `server unreachable: ${err.message}`;
  }
  for (const label of state.labels) {
    const option = document.createElement("option");
    option.value = label;
    option.textContent = label.replaceAll("_", " ");
    $("filter-label").append(option);
  }
  fillOptions($("relabel-label"), state.labels);
  $("filters").addEventListener("change", () => loadEvents());
  $("load-more").addEventListener("click", () => loadEvents(true));
  $("confirm").addEventListener("click", () => review("confirmed"));
  $("reject").addEventListener("click", () => review("rejected"));
  $("relabel").addEventListener("click", () => review("relabelled"));
  $("undo").addEventListener("click", () => undo());
  document.addEventListener("keydown", (e) => {
    if (["TEXTAREA", "INPUT", "SELECT"].includes(e.target.tagName)) return;
    if (e.key === "j") move(1);
    else if (e.key === "k") move(-1);
    else if (e.key === "c") review("confirmed");
    else if (e.key === "x") review("rejected");
    else if (e.key === "u") undo();
    else if (/^[1-9]$/.test(e.key) && state.views[Number(e.key) - 1]) renderViews(Number(e.key) - 1);
  });
  await loadEvents();
}

init();
