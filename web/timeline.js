// The recording timeline: the whole recording as a strip of per-class scores with its events and stream gaps
// (GET /recordings/{id}/timeline for the visible window), zoom (buttons, wheel), pan (buttons, shift+wheel),
// a click to seek or open an event, a drag to select a range for a missed event.
import { api } from "./api.js";
import { drawScores, formatTime, renderLegend } from "./score-plot.js";

const MIN_SPAN = 2;  // seconds: the closest zoom
const DRAG_PX = 4;   // a pointer that moved less than this clicked
// a burst of wheel turns or pan presses redraws at once but asks the server once, when it stops: every
// timeline read is audited, so a spin of the wheel must not write a trail of them
const SETTLE_MS = 150;

export class Timeline {
  /**
   * ``root``: the section with #timeline-canvas, the zoom buttons and #timeline-status.
   * ``on``: {seek(t) → bool (true: the player shows t), open(eventId), select([a, b]), error(message)}.
   */
  constructor(root, on) {
    this.root = root;
    this.on = on;
    this.canvas = root.querySelector("#timeline-canvas");
    this.status = root.querySelector("#timeline-status");
    this.readout = root.querySelector("#timeline-hover");
    this.recording = null;
    this.duration = 0;
    this.view = { start: 0, end: 1 };
    this.data = null;
    this.marks = { cursor: null, selection: null, current: null, clip: null };
    this.pending = 0;
    this.timer = null;
    this.settled = null;  // resolves a superseded wait, so no caller awaits forever
    this.drag = null;
    this.bind();
    new ResizeObserver(() => this.render()).observe(this.canvas);
  }

  bind() {
    const buttons = { "#zoom-in": () => this.zoom(0.5), "#zoom-out": () => this.zoom(2),
                      "#zoom-all": () => this.show(0, this.duration), "#pan-left": () => this.pan(-0.5),
                      "#pan-right": () => this.pan(0.5) };
    for (const [selector, action] of Object.entries(buttons)) {
      this.root.querySelector(selector).addEventListener("click", action);
    }
    this.canvas.addEventListener("wheel", (e) => {
      e.preventDefault();
      if (e.shiftKey || Math.abs(e.deltaX) > Math.abs(e.deltaY)) {
        this.pan(((e.shiftKey ? e.deltaY : e.deltaX) > 0 ? 1 : -1) * 0.2);
      } else {
        this.zoom(e.deltaY > 0 ? 1.25 : 0.8, this.timeAt(e.offsetX));
      }
    }, { passive: false });
    this.canvas.addEventListener("pointerdown", (e) => {
      if (e.button !== 0 || !this.recording) return;
      this.canvas.setPointerCapture(e.pointerId);
      this.drag = { x: e.offsetX, t: this.timeAt(e.offsetX), moved: false };
    });
    this.canvas.addEventListener("pointermove", (e) => {
      this.hover(this.timeAt(e.offsetX));
      if (!this.drag) return;
      if (Math.abs(e.offsetX - this.drag.x) >= DRAG_PX) this.drag.moved = true;
      if (this.drag.moved) {
        this.marks.selection = [this.drag.t, this.timeAt(e.offsetX)];
        this.render();
      }
    });
    this.canvas.addEventListener("pointerleave", () => { this.readout.textContent = ""; });
    this.canvas.addEventListener("pointerup", (e) => {
      const drag = this.drag;
      this.drag = null;
      if (!drag) return;
      if (drag.moved) {
        const [a, b] = [drag.t, this.timeAt(e.offsetX)].sort((p, q) => p - q);
        this.marks.selection = [a, b];
        this.render();
        this.on.select([a, b]);
      } else {
        this.click(drag.t);
      }
    });
  }

  /** Clicking time ``t``: seek when the player can show it, else open the event there, else say why not. */
  click(t) {
    if (this.on.seek(t)) return;
    const hit = (this.data?.events || []).find((ev) => ev.start <= t && t <= ev.end);
    if (hit) {
      this.on.open(hit.id);
      return;
    }
    this.marks.cursor = t;
    this.render();
    this.say(`${formatTime(t)}: no review clip covers this time (clips exist around events only). ` +
             "Drag across it to mark a missed event.");
  }

  /** What lies under the pointer: its time, the scores there, the event there. */
  hover(t) {
    const parts = [formatTime(t)];
    const times = this.data?.times || [];
    if (times.length) {
      let i = 0;
      while (i + 1 < times.length && Math.abs(times[i + 1] - t) < Math.abs(times[i] - t)) i++;
      for (const label of this.data.classes) {
        const score = this.data.scores[label]?.[i];
        if (score != null) parts.push(`${label.replaceAll("_", " ")} ${Math.round(score * 100)}%`);
      }
    }
    const hit = (this.data?.events || []).find((ev) => ev.start <= t && t <= ev.end);
    if (hit) parts.push(`event ${hit.id}: ${(hit.reviewed_label || hit.label).replaceAll("_", " ")} (${hit.status})`);
    this.readout.textContent = parts.join(" · ");
  }

  timeAt(px) {
    const width = Math.max(1, this.canvas.clientWidth);
    const t = this.view.start + (px / width) * (this.view.end - this.view.start);
    return Math.min(this.duration, Math.max(0, t));
  }

  say(text) { this.status.textContent = text; }

  /** Show recording ``id`` (its whole length unless a window is given). */
  async load(recordingId, duration, window = null) {
    if (recordingId !== this.recording) {
      this.recording = recordingId;
      this.duration = duration || 0;
      this.data = null;
      this.marks.selection = null;
    }
    if (window) await this.show(window[0], window[1], 0);
    else await this.show(0, this.duration, 0);
  }

  zoom(factor, around = null) {
    const { start, end } = this.view;
    const centre = around ?? (start + end) / 2;
    const span = Math.min(this.duration, Math.max(MIN_SPAN, (end - start) * factor));
    const f = (centre - start) / Math.max(1e-6, end - start);
    return this.show(centre - f * span, centre - f * span + span);
  }

  pan(fraction) {
    const span = this.view.end - this.view.start;
    return this.show(this.view.start + fraction * span, this.view.end + fraction * span);
  }

  /** Show ``[start, end]`` now and fetch its scores after ``wait`` ms without a further change (0: at once). */
  show(start, end, wait = SETTLE_MS) {
    if (!this.recording) return Promise.resolve();
    const span = Math.min(Math.max(this.duration, MIN_SPAN), Math.max(MIN_SPAN, end - start));
    let a = Math.max(0, Math.min(start, this.duration - span));
    if (!Number.isFinite(a)) a = 0;
    this.view = { start: a, end: a + span };
    this.render();
    const ticket = ++this.pending;
    clearTimeout(this.timer);
    this.settled?.();
    this.settled = null;
    if (!wait) return this.fetch(ticket);
    return new Promise((resolve) => {
      this.settled = resolve;
      this.timer = setTimeout(() => {
        this.settled = null;
        resolve(this.fetch(ticket));
      }, wait);
    });
  }

  async fetch(ticket) {
    const points = Math.min(2000, Math.max(100, Math.round(this.canvas.clientWidth)));
    try {
      const data = await api.timeline(this.recording, { start: this.view.start, end: this.view.end, points });
      if (ticket !== this.pending) return;  // a later zoom already asked again
      if (!this.data) renderLegend(this.root.querySelector("#timeline-legend"), data);
      this.data = data;
      if (data.duration && !this.duration) {  // the recording's length was unknown: show all of it now
        this.duration = data.duration;
        await this.show(0, data.duration, 0);
        return;
      }
      this.root.querySelector("#timeline-range").textContent =
        `${formatTime(this.view.start)} – ${formatTime(this.view.end)} of ${formatTime(this.duration)}`;
      this.render();
    } catch (err) {
      if (ticket === this.pending) this.on.error(`Timeline: ${err.message}`);
    }
  }

  /** Update what is marked (player cursor, selection, current event, clip range) and redraw. */
  mark(changes) {
    Object.assign(this.marks, changes);
    this.render();
  }

  render() {
    drawScores(this.canvas, this.data, this.view, this.marks);
    const events = this.data?.events?.length ?? 0;
    const gaps = this.data?.gaps?.length ?? 0;
    this.canvas.setAttribute("aria-label", `Recording ${this.recording ?? ""} timeline from ` +
      `${formatTime(this.view.start)} to ${formatTime(this.view.end)}: ${events} event${events === 1 ? "" : "s"}` +
      (gaps ? `, ${gaps} stream gap${gaps === 1 ? "" : "s"}` : ""));
  }
}
