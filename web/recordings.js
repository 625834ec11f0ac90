// Recordings page: upload a file, import one from the server's import folder, start a live stream; every
// recording with its status, scoring progress (from its job), errors and warnings (stream gaps among them),
// and Stop for a running stream. Pages by the server's keyset cursor; polls while anything is in flight.
import { api } from "./api.js";
import { $, el, fmtBytes, fmtTime, say } from "./dom.js";
import "./nav.js";
import { can, ensureSignedIn } from "./session.js";

const POLL_MS = 2000;
const BUSY = new Set(["pending", "queued", "ingesting"]);
const LIVE_JOB = new Set(["queued", "running"]);
const state = { cursors: [null], page: 0, next: null, status: "", limit: 20, jobs: new Map(), poll: null, jobsRefused: null };

function seconds(value) {
  if (typeof value !== "number") return "";
  const m = Math.floor(value / 60);
  const s = Math.round(value - m * 60);
  return m ? `${m} min ${s} s` : `${s} s`;
}

/** The newest score / stream job of each recording (jobs carry parameters, so only admins may read them). */
async function loadJobs() {
  if (!can("read_jobs")) {
    state.jobsRefused = "Scoring progress and live-stream state come from the jobs, which only admins may read.";
    return;
  }
  try {
    const [score, stream] = await Promise.all([api.jobs({ kind: "score", limit: 200 }),
      api.jobs({ kind: "stream", limit: 200 })]);
    const jobs = new Map();
    for (const job of [...score.data, ...stream.data].sort((a, b) => b.id - a.id)) {
      if (job.recording_id != null && !jobs.has(job.recording_id)) jobs.set(job.recording_id, job);
    }
    state.jobs = jobs;
    state.jobsRefused = null;
  } catch (err) {
    state.jobsRefused = `Progress unavailable — ${err.message}`;
  }
}

function progressCell(recording, job, stop) {
  if (!job) return el("td", { className: "muted small" }, BUSY.has(recording.status) ? "waiting" : "—");
  if (job.kind === "stream") {
    const text = LIVE_JOB.has(job.status) ? `live since ${fmtTime(job.started_at || job.created_at)}`
      : `stream ${job.result?.stopped ? "stopped" : "ended"}`;
    const gaps = job.result?.gaps?.length ? el("div", {}, `${job.result.gaps.length} gap(s)`) : null;
    return el("td", { className: "small" }, el("div", {}, text), gaps, stop);
  }
  const percent = Math.round((job.progress || 0) * 100);
  return el("td", { className: "small" },
    el("progress", { max: 1, value: job.progress || 0, "aria-label": `recording ${recording.id} scoring progress` },
      `${percent}%`), ` ${percent}%`);
}

function problems(recording, job) {
  const lines = [];
  if (recording.error) lines.push(el("div", { className: "error" }, recording.error));
  if (job?.error && job.error !== recording.error) lines.push(el("div", { className: "error" }, `job: ${job.error}`));
  if (recording.warnings?.length) {
    lines.push(el("ul", { className: "warnings" }, ...recording.warnings.map((w) => el("li", {}, w))));
  }
  return lines;
}

function row(recording) {
  const job = state.jobs.get(recording.id);
  const live = job?.kind === "stream" && LIVE_JOB.has(job.status);
  const status = live ? "live" : recording.status;
  const stop = live && can("write_recordings")
    ? el("button", { type: "button", textContent: "Stop", "aria-label": `Stop stream ${recording.id}`,
      onclick: () => stopStream(recording.id) })
    : null;
  const facts = [recording.codec, recording.width && `${recording.width}×${recording.height}`,
    recording.fps && `${recording.fps.toFixed(1)} fps`, fmtBytes(recording.size_bytes)].filter(Boolean).join(" · ");
  return el("tr", { id: `recording-${recording.id}`, dataset: { id: recording.id, status } },
    el("td", { className: "num" }, String(recording.id)),
    el("td", { className: "source" }, recording.source, facts ? el("div", { className: "muted small" }, facts) : null,
      // the recording view: its timeline and the missed-event form, even when the model flagged nothing
      el("div", { className: "small" }, el("a", { href: `index.html?recording=${recording.id}`,
        className: "timeline-link", "aria-label": `Timeline of recording ${recording.id} (mark a missed event)` },
      "Timeline"))),
    el("td", {}, recording.room || ""),
    el("td", {}, el("span", { className: `pill status-${status}` }, status)),
    progressCell(recording, job, stop),
    // a live stream's clips are counted on the recording when it ends
    el("td", { className: "num" }, live ? "—" : String(recording.clip_count)),
    el("td", { className: "num" }, seconds(recording.duration)),
    el("td", { className: "small" }, fmtTime(recording.created_at)),
    el("td", { className: "wrap small" }, ...problems(recording, job)));
}

async function load() {
  clearTimeout(state.poll);
  const count = $("recordings-count");
  const params = { limit: state.limit };
  if (state.status) params.status = state.status;
  const cursor = state.cursors[state.page];
  if (cursor != null) params.cursor = cursor;
  let page;
  try {
    [page] = await Promise.all([api.recordings(params), loadJobs()]);
  } catch (err) {
    if (err.message.startsWith("403")) {
      const box = $("page-refused");
      box.textContent = `You cannot see the recordings: ${err.message}`;
      box.hidden = false;
      for (const id of ["add", "recordings"]) $(id).hidden = true;
      return;
    }
    say(count, `Could not load the recordings — ${err.message}`, { error: true });
    state.poll = setTimeout(load, POLL_MS * 3);
    return;
  }
  state.next = page.next_cursor;
  // Focus on a Stop button would be lost when its row is rebuilt: keep which one had it.
  const focused = document.activeElement?.closest?.("tr")?.id;
  $("recording-rows").replaceChildren(...page.data.map(row));
  if (focused) document.getElementById(focused)?.querySelector("button")?.focus();
  const first = state.page * state.limit;
  count.className = "muted";
  count.textContent = page.data.length
    ? `${page.count} recordings; showing ${first + 1}–${first + page.data.length}, newest first.`
    : "No recordings yet.";
  const note = $("jobs-note");
  note.textContent = state.jobsRefused || "";
  note.hidden = !state.jobsRefused;
  $("recordings-page").textContent = `page ${state.page + 1}`;
  $("recordings-older").disabled = state.next == null;
  $("recordings-newer").disabled = state.page === 0;
  const busy = page.data.some((r) => BUSY.has(r.status) || LIVE_JOB.has(state.jobs.get(r.id)?.status));
  if (busy) state.poll = setTimeout(load, POLL_MS);
}

function firstPage() {
  state.cursors = [null];
  state.page = 0;
  return load();
}

async function stopStream(id) {
  const status = $("recordings-status");
  try {
    await api.stopStream(id);
    say(status, `Stopping stream ${id}: the clips so far are kept.`);
  } catch (err) {
    say(status, `Stream ${id} not stopped — ${err.message}`, { error: true });
  }
  await load();
}

/** Room and patient reference only when given: the server refuses empty strings for its optional fields. */
function optional(form, names) {
  const out = {};
  for (const name of names) {
    const value = form.elements[name]?.value.trim();
    if (value) out[name] = value;
  }
  return out;
}

async function submitUpload(e) {
  e.preventDefault();
  const form = e.target;
  const status = $("upload-status");
  const file = form.elements.file.files[0];
  if (!file) {
    say(status, "Choose a video file first.", { error: true });
    form.elements.file.focus();
    return;
  }
  const body = new FormData();
  for (const [key, value] of Object.entries(optional(form, ["room", "patient_ref"]))) body.append(key, value);
  if (form.elements.allow_duplicate.checked) body.append("allow_duplicate", "true");
  body.append("file", file, file.name);
  const button = $("upload-submit");
  button.disabled = true;
  say(status, `Uploading ${file.name} (${fmtBytes(file.size)})…`);
  try {
    const recording = await api.upload(body);
    say(status, `Recording ${recording.id} uploaded: ${recording.status}. It is scored in the background.`);
    form.reset();
    await firstPage();
  } catch (err) {
    say(status, `Upload refused — ${err.message}`, { error: true });
    await firstPage();  // a file that is not a video is kept as a failed recording with its reason
  } finally {
    button.disabled = false;
  }
}

function jsonSubmit(statusId, source, describe) {
  return async (e) => {
    e.preventDefault();
    const form = e.target;
    const status = $(statusId);
    const body = optional(form, [source, "room"]);
    if (!body[source]) {
      say(status, `Give the ${source === "url" ? "stream URL" : "file path"} first.`, { error: true });
      form.elements[source].focus();
      return;
    }
    try {
      const recording = await api.importRecording(body);
      say(status, describe(recording));
      form.reset();
      await firstPage();
    } catch (err) {
      say(status, `Refused — ${err.message}`, { error: true });
    }
  };
}

async function init() {
  $("upload-form").addEventListener("submit", submitUpload);
  $("import-form").addEventListener("submit", jsonSubmit("import-status", "path",
    (r) => `Recording ${r.id} imported: ${r.status}. It is scored in the background.`));
  $("stream-form").addEventListener("submit", jsonSubmit("stream-status", "url",
    (r) => `Stream ${r.id} started (${r.source}).`));
  $("recording-status-filter").addEventListener("change", (e) => { state.status = e.target.value; firstPage(); });
  $("recording-limit").addEventListener("change", (e) => { state.limit = Number(e.target.value); firstPage(); });
  $("recordings-older").addEventListener("click", () => {
    if (state.next == null) return;
    state.cursors[state.page + 1] = state.next;
    state.page += 1;
    load();
  });
  $("recordings-newer").addEventListener("click", () => {
    if (state.page === 0) return;
    state.page -= 1;
    load();
  });
  await ensureSignedIn();
  if (!can("write_recordings")) $("add").hidden = true;
  await firstPage();
}

init();
