// One event on screen: its facts, the review clip with the explanation drawn on it (overlay.js), the method
// selector, opacity and side-by-side controls, the explanation agreement in plain words, and the per-class
// scores over the event and its surroundings (timeline endpoint, drawn by score-plot.js).
import { api } from "./api.js";
import { METHODS, VideoOverlay } from "./overlay.js";
import { describeScores, drawScores, formatTime, renderLegend } from "./score-plot.js";

const AROUND = 20;  // seconds of context either side of the event in the score chart
const $ = (id) => document.getElementById(id);
const pretty = (label) => label.replaceAll("_", " ");

/** What an agreement value means for trusting the flag, in words a clinician can act on. */
export function agreementHint(agreement) {
  if (agreement == null) return ["not available", "No second explanation to compare for this event."];
  if (agreement >= 0.5) {
    return ["high", "Both explanations point at the same part of the picture: the flag rests on one consistent " +
            "region. Still check that this region is the patient."];
  }
  if (agreement >= 0.2) {
    return ["moderate", "The explanations only partly agree on where the evidence is. Watch the clip before " +
            "relying on the flag."];
  }
  return ["low", "The explanations point at different places: the model may be reacting to something other " +
          "than the patient (light, a visitor, the camera). Treat the flag with caution and judge from the clip."];
}

export class EventView {
  constructor() {
    this.event = null;
    this.scores = null;
    this.overlay = new VideoOverlay({ video: $("event-clip"), canvas: $("overlay-canvas"), stage: $("clip-stage") });
    this.buildMethods();
    $("overlay-opacity").addEventListener("input", (e) => {
      this.overlay.setOpacity(Number(e.target.value) / 100);
      $("opacity-value").textContent = `${e.target.value}%`;
    });
    $("side-by-side").addEventListener("change", (e) => this.overlay.setSideBySide(e.target.checked));
    $("event-clip").addEventListener("timeupdate", () => this.drawScores());
    new ResizeObserver(() => this.drawScores()).observe($("scores-canvas"));
  }

  buildMethods() {
    const box = $("method-options");
    for (const { id, name } of METHODS) {
      const input = Object.assign(document.createElement("input"), { type: "radio", name: "overlay-method",
        value: id, id: `method-${id}`, checked: id === this.overlay.method });
      input.addEventListener("change", () => this.setMethod(id));
      const label = Object.assign(document.createElement("label"), { htmlFor: input.id, className: "method" });
      label.append(input, document.createTextNode(` ${name}`));
      box.append(label);
    }
  }

  setMethod(id) {
    this.overlay.setMethod(id);
    $(`method-${id}`).checked = true;
    const name = METHODS.find((m) => m.id === id).name;
    $("overlay-state").textContent = id === "none" ? "No overlay" : this.overlay.available(id)
      ? `${name} drawn on the video` : `${name}: no maps for this event`;
  }

  /** ``o``: the next method (none → Grad-CAM → Guided Backprop → Guided Grad-CAM → none). */
  cycleMethod() {
    const at = METHODS.findIndex((m) => m.id === this.overlay.method);
    this.setMethod(METHODS[(at + 1) % METHODS.length].id);
  }

  togglePlay() {
    const video = $("event-clip");
    if (!video.src) return;
    if (video.paused) video.play().catch(() => {});
    else video.pause();
  }

  /** Recording time the player shows (null without a clip or its start). */
  playerTime() {
    return $("clip-figure").hidden ? null : this.overlay.recordingTime();
  }

  /** The recording range the player can show: [clip_start, clip_start + duration]. */
  clipRange() {
    const video = $("event-clip");
    if (this.overlay.clipStart == null || !Number.isFinite(video.duration)) return null;
    return [this.overlay.clipStart, this.overlay.clipStart + video.duration];
  }

  /** Seek to recording time ``t`` if the clip covers it. */
  seek(t) {
    const range = this.clipRange();
    if (!range || t < range[0] || t > range[1]) return false;
    $("event-clip").currentTime = t - range[0];
    return true;
  }

  async show(event) {
    this.event = event;
    this.renderFacts(event);
    $("clip-figure").hidden = !event.clip_url;
    const video = $("event-clip");
    if (event.clip_url) {
      // no poster: Chrome keeps a poster up until playback starts, and the key frame (the peak) beside the
      // drawn map of t=0 would show two different moments
      if (!video.src.endsWith(event.clip_url)) video.src = event.clip_url;
    } else {
      video.removeAttribute("src");
      video.load();
    }
    // the clip's start is the event's own (exact, from the export), whatever the maps answer: a clinician's
    // event has no maps, yet its clip must seek and the timeline cursor follow it
    this.overlay.setMaps(null, event.clip_url ? event.clip_start ?? null : null);
    this.showAgreement(event.agreement);
    await Promise.all([this.loadMaps(event), this.loadScores(event)]);
  }

  async loadMaps(event) {
    try {
      const maps = await api.maps(event.id);
      if (this.event?.id !== event.id) return;
      this.overlay.setMaps(maps, event.clip_url ? event.clip_start ?? null : null);
      this.showAgreement(maps.agreement ?? event.agreement);
    } catch (err) {
      if (this.event?.id !== event.id) return;
      this.overlay.setMaps(null, event.clip_url ? event.clip_start ?? null : null);
      $("overlay-state").textContent = err.status === 404
        ? (event.source === "clinician" ? "Added by a clinician: the model has no explanation for it."
          : "No explanation maps stored for this event.")
        : `Explanation maps: ${err.message}`;
      return;
    }
    this.setMethod(this.overlay.method);
  }

  showAgreement(agreement) {
    const [level, hint] = agreementHint(agreement);
    $("agreement-value").textContent = agreement == null ? "n/a" : `${agreement.toFixed(2)} (${level})`;
    $("agreement-hint").textContent = hint;
    $("agreement").dataset.level = level;
  }

  renderFacts(event) {
    $("event-title").textContent = `${pretty(event.reviewed_label || event.label)} — event ${event.id}`;
    const name = `${event.recording_id}${event.room ? ` (${event.room})` : ""}`;
    const recording = Object.assign(document.createElement("a"), { href: `index.html?recording=${event.recording_id}`,
      textContent: name });
    // the accessible name holds the visible text (WCAG 2.5.3) and says where the link leads
    recording.setAttribute("aria-label", `Recording ${name}: its timeline, to mark a missed event`);
    const facts = [
      ["Recording", recording],
      ["Time in recording", `${formatTime(event.start)} – ${formatTime(event.end)}`],
      ["Wall clock", event.start_wall ? new Date(event.start_wall).toLocaleString() : "unknown"],
      event.source === "clinician" ? ["Source", "added by a clinician"]
        : ["Peak score", `${(event.peak_score * 100).toFixed(1)}% at ${formatTime(event.peak_time)}`],
      ["Status", event.status + (event.reviewed_label ? ` → ${pretty(event.reviewed_label)}` : "")
        + (event.reviewer ? ` by ${event.reviewer}` : "")],
    ];
    // the standing review's note, read-only: the note box is for this reviewer's own note
    if (event.note) facts.push([event.reviewer ? `Note by ${event.reviewer}` : "Note", event.note]);
    const dl = $("event-facts");
    dl.replaceChildren();
    for (const [k, v] of facts) {
      const dd = document.createElement("dd");
      if (v instanceof Node) dd.append(v);
      else dd.textContent = String(v);  // text, never markup
      dl.append(Object.assign(document.createElement("dt"), { textContent: k }), dd);
    }
  }

  async loadScores(event) {
    const start = Math.max(0, event.start - AROUND);
    const end = event.end + AROUND;
    try {
      const data = await api.timeline(event.recording_id, { start, end, points: 240 });
      if (this.event?.id !== event.id) return;
      this.scores = { data, view: { start: data.start ?? start, end: data.end ?? end } };
      renderLegend($("scores-legend"), data);
      $("scores-canvas").setAttribute("aria-label", `Scores per class from ${formatTime(start)} to ` +
        `${formatTime(this.scores.view.end)}: ${describeScores(data)}`);
      $("scores-status").textContent = "";
    } catch (err) {
      if (this.event?.id !== event.id) return;  // an answer about an event no longer on screen
      this.scores = null;
      $("scores-status").textContent = `Scores: ${err.message}`;
    }
    this.drawScores();
  }

  drawScores() {
    if (!this.scores || !this.event) return;
    drawScores($("scores-canvas"), this.scores.data, this.scores.view,
               { cursor: this.playerTime(), current: this.event.id });
  }
}
