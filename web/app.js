// The clinician's review workspace: wires the queue, the event view (clip with the explanation drawn on it,
// scores), the decision, the recording timeline and marking a missed event, and the keyboard shortcuts.
// Each part lives in its own module; this one only decides what follows from what.
import { api } from "./api.js";
import "./nav.js";
import { EventView } from "./event-view.js";
import { bindKeys, fillHelp } from "./keys.js";
import { MissedEvent } from "./missed.js";
import { Queue } from "./queue.js";
import { Review } from "./review.js";
import { ensureSignedIn } from "./session.js";
import { Timeline } from "./timeline.js";

const $ = (id) => document.getElementById(id);
const state = { event: null, labels: [], classes: {}, durations: new Map(), selecting: 0 };

const queue = new Queue((id) => select(id));
const view = new EventView();
const review = new Review(async (updated) => {
  queue.update(updated);
  timeline.show(timeline.view.start, timeline.view.end);  // the event's new status colour
  if (state.event?.id !== updated.id) return;  // the reviewer already moved on (j/k while it was saving)
  Object.assign(state.event, updated);
  view.renderFacts(state.event);
  await review.show(state.event, labelsOf(state.event));
});
const timeline = new Timeline($("timeline"), {
  seek: (t) => view.seek(t),
  open: (id) => select(id),
  select: (range) => missed.setRange(range),
  error: (message) => { $("timeline-status").textContent = message; },
});
const missed = new MissedEvent({
  onRange: (range) => timeline.mark({ selection: range }),
  onSaved: async () => {
    await queue.load();
    timeline.show(timeline.view.start, timeline.view.end);
  },
});

/** The classes a relabel may choose: those of the model version that flagged the event (the server insists). */
function labelsOf(event) {
  return state.classes[event.model_version_id] || state.labels;
}

async function duration(recordingId) {
  if (!state.durations.has(recordingId)) {
    const recording = await api.recording(recordingId);
    state.durations.set(recordingId, recording.duration || 0);
  }
  return state.durations.get(recordingId);
}

async function select(id) {
  const ticket = ++state.selecting;
  let event = queue.events.find((e) => e.id === id);
  try {
    event = event ? { ...event } : await api.event(id);
  } catch (err) {
    $("review-status").textContent = `Could not open event ${id} — ${err.message}`;
    return;
  }
  if (ticket !== state.selecting) return;  // a later j/k already moved on
  state.event = event;
  // a key pressed from now on acts on this event, with an empty note and this event's labels, even before
  // anything below has loaded
  review.reset(event, labelsOf(event));
  queue.selected = id;
  queue.render();
  showDetail(true);
  $("review-status").textContent = "";
  const known = await duration(event.recording_id).catch(() => 0);
  if (ticket !== state.selecting) return;
  missed.setRecording(event.recording_id, known);
  timeline.mark({ current: event.id, clip: null });
  await Promise.all([
    review.history(event.id),
    view.show(event),
    timeline.recording === event.recording_id ? Promise.resolve() : timeline.load(event.recording_id, known),
  ]);
}

/** Show the detail pane: with an event (its clip, facts, decision, history) or, for the recording view, only
 * the recording's timeline and the missed-event form. */
function showDetail(withEvent) {
  $("detail-empty").hidden = true;
  $("event-detail").hidden = false;
  for (const id of ["event-grid", "review-history"]) $(id).hidden = !withEvent;
  $("recording-hint").hidden = withEvent;
}

/** ``index.html?recording=ID``: the recording's timeline and the missed-event form with no event selected, for
 * a recording where the model flagged nothing (or nothing that was missed). There is no player: the range is
 * dragged on the timeline or typed; [ and ] say they need an event's clip. */
async function openRecording(id) {
  state.event = null;
  review.event = null;
  view.event = null;
  showDetail(false);
  $("event-title").textContent = `Recording ${id} — no event selected`;
  let known = 0;
  try {
    const recording = await api.recording(id);
    known = recording.duration || 0;
    state.durations.set(id, known);
    $("event-title").textContent = `Recording ${id}${recording.room ? ` (${recording.room})` : ""} — no event ` +
      "selected";
  } catch (err) {
    $("timeline-status").textContent = `Could not open recording ${id} — ${err.message}`;
    return;
  }
  missed.setRecording(id, known);
  timeline.mark({ current: null, clip: null, cursor: null });
  await timeline.load(id, known);
}

async function move(step) {
  let next = queue.neighbour(step);
  if (next == null && step > 0 && queue.cursor) {
    await queue.load(true);  // the end of this page: fetch the next one
    next = queue.neighbour(step);
  }
  if (next != null) await select(next);
}

/** ``u``: undo the review of the event on screen; on an event without one of mine (j already moved on),
 * go back to the event of my latest decision and undo that. */
async function undoLast() {
  const last = review.lastDecided;
  if (!review.canUndo() && last != null && last !== state.event?.id) await select(last);
  await review.undo();
}

function markAtPlayer(which) {
  const t = view.playerTime();
  if (t == null) {
    $("missed-status").textContent = "No player time here: [ and ] take the time of an event's review clip. " +
      "Drag on the timeline or type the start and end instead.";
    return;
  }
  if (which === "start") missed.setStart(t);
  else missed.setEnd(t);
}

function followPlayer() {
  timeline.mark({ cursor: view.playerTime(), clip: view.clipRange() });
}

async function init() {
  try {
    const health = await api.health();
    $("health").textContent = `v${health.version} · ${health.mode}`;
  } catch (err) {
    $("health").textContent = `server unreachable: ${err.message}`;
  }
  await ensureSignedIn();
  try {
    const models = await api.models();
    const active = models.find((m) => m.state === "active");
    state.labels = active ? active.class_names : [];
    state.classes = Object.fromEntries(models.map((m) => [m.id, m.class_names]));
  } catch (err) {
    $("health").textContent = `could not read the models: ${err.message}`;
  }
  queue.setLabels(state.labels);
  missed.setLabels(state.labels);
  review.fillLabels(state.labels);
  for (const name of ["timeupdate", "seeked", "loadedmetadata"]) $("event-clip").addEventListener(name, followPlayer);
  fillHelp($("help-list"));
  $("show-help").addEventListener("click", () => $("help-dialog").showModal());
  $("help-close").addEventListener("click", () => $("help-dialog").close());
  bindKeys({
    next: () => move(1),
    previous: () => move(-1),
    confirm: () => review.decide("confirmed"),
    reject: () => review.decide("rejected"),
    relabel: () => review.startRelabel(),
    undo: () => undoLast(),
    overlay: () => view.cycleMethod(),
    play: () => view.togglePlay(),
    markStart: () => markAtPlayer("start"),
    markEnd: () => markAtPlayer("end"),
    help: () => $("help-dialog").showModal(),
  });
  const recording = Number(new URLSearchParams(window.location.search).get("recording"));
  await Promise.all([queue.load(), Number.isInteger(recording) && recording > 0 ? openRecording(recording) : null]);
}

init();
