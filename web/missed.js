// Marking an event the model missed: a time range (dragged on the timeline, or "[" / "]" at the player's
// time, or typed), one of the model's classes and a note, saved as a clinician-added event with
// POST /recordings/{id}/events (contract A). It is confirmed at once and becomes a fine-tune positive.
import { api } from "./api.js";
import { formatTime } from "./score-plot.js";

const $ = (id) => document.getElementById(id);

export class MissedEvent {
  /** ``onRange([a, b])``: the range changed (to mark it on the timeline); ``onSaved(event)``: stored. */
  constructor({ onRange, onSaved }) {
    Object.assign(this, { onRange, onSaved });
    this.recording = null;
    this.duration = null;
    $("missed-form").addEventListener("submit", (e) => {
      e.preventDefault();
      this.save();
    });
    for (const id of ["missed-start", "missed-end"]) $(id).addEventListener("change", () => this.changed());
    $("missed-clear").addEventListener("click", () => this.clear());
  }

  setLabels(labels) {
    const select = $("missed-label");
    select.replaceChildren();
    for (const label of labels) {
      select.append(Object.assign(document.createElement("option"), { value: label,
                                                                      textContent: label.replaceAll("_", " ") }));
    }
  }

  setRecording(id, duration) {
    if (id === this.recording) return;
    this.recording = id;
    this.duration = duration;
    $("missed-recording").textContent = `recording ${id}`;
    this.clear();
  }

  read(id) {
    const value = $(id).value;
    return value === "" ? null : Number(value);
  }

  write(id, seconds) {
    $(id).value = seconds == null ? "" : seconds.toFixed(2);
  }

  setRange([a, b]) {
    this.write("missed-start", Math.min(a, b));
    this.write("missed-end", Math.max(a, b));
    this.changed();
  }

  setStart(t) {
    this.write("missed-start", t);
    if (this.read("missed-end") != null && this.read("missed-end") <= t) this.write("missed-end", null);
    this.changed();
  }

  setEnd(t) {
    this.write("missed-end", t);
    this.changed();
  }

  clear() {
    this.write("missed-start", null);
    this.write("missed-end", null);
    $("missed-note").value = "";
    this.changed();
  }

  changed() {
    const a = this.read("missed-start");
    const b = this.read("missed-end");
    const ready = a != null && b != null && b > a;
    $("missed-save").disabled = !ready || this.recording == null;
    $("missed-status").textContent = a == null && b == null ? ""
      : ready ? `${formatTime(a)} – ${formatTime(b)} (${(b - a).toFixed(1)} s)`
        : a != null && b == null ? `starts at ${formatTime(a)}; press ] (or drag) for the end` : "the end must come after the start";
    this.onRange(a != null ? [a, b ?? a] : null);
  }

  async save() {
    const start = this.read("missed-start");
    const end = this.read("missed-end");
    if (this.recording == null || start == null || end == null) return;
    const body = { label: $("missed-label").value, start, end };
    const note = $("missed-note").value.trim();
    if (note) body.note = note;
    try {
      const event = await api.addEvent(this.recording, body);
      this.clear();
      $("missed-status").textContent = `Saved as event ${event.id} (${event.label.replaceAll("_", " ")}, ` +
        `${event.status}).`;
      this.onSaved(event);
    } catch (err) {
      $("missed-status").textContent = `Not saved — ${err.message}`;
    }
  }
}
