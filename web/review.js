// The decision on one event: confirm / reject / relabel with a note, undo of one's own latest review, and the
// event's review history. Every failure shows the server's message (api.js makes it readable).
import { api } from "./api.js";
import { currentUser } from "./session.js";

const HISTORY = 20;  // newest reviews shown under an event
const $ = (id) => document.getElementById(id);

export class Review {
  /** ``onChange(event)``: the server answered with the event's new state. */
  constructor(onChange) {
    this.onChange = onChange;
    this.event = null;
    this.standing = null;  // {event, review}: the latest review not undone, as the history shows it
    this.saving = new Set();  // events whose decision or undo is in flight: one at a time per event, never global
    this.lastDecided = null;  // the event of this page's latest decision: "u" goes back to it from a fresh one
    $("confirm").addEventListener("click", () => this.decide("confirmed"));
    $("reject").addEventListener("click", () => this.decide("rejected"));
    $("relabel").addEventListener("click", () => this.decide("relabelled"));
    $("undo").addEventListener("click", () => this.undo());
    $("relabel-label").addEventListener("keydown", (e) => {
      if (e.key === "Enter") {
        e.preventDefault();
        this.decide("relabelled");
      } else if (e.key === "Escape") {
        e.target.blur();
        this.say("");
      }
    });
  }

  fillLabels(labels) {
    const select = $("relabel-label");
    select.replaceChildren();
    for (const label of labels) {
      select.append(Object.assign(document.createElement("option"), { value: label,
                                                                      textContent: label.replaceAll("_", " ") }));
    }
  }

  /** Make ``event`` the one the keys act on, synchronously: an empty note (the note box is this reviewer's
   * note for this decision; the previous reviewer's note is shown read-only in the facts and the history), its
   * model's labels, the undo button. Called before anything is awaited, so no key ever sends another event's
   * note or label. */
  reset(event, labels) {
    this.event = event;
    $("review-note").value = "";
    this.fillLabels(labels);
    if (labels.includes(event.reviewed_label || event.label)) $("relabel-label").value = event.reviewed_label || event.label;
    $("undo").hidden = event.status === "flagged" || event.reviewer !== currentUser()?.username;
  }

  async show(event, labels) {
    this.reset(event, labels);
    await this.history(event.id);
  }

  /** Refuse, saying so, when ``event`` already has a request in flight (a second press is never silent). */
  stillSaving(event) {
    if (!this.saving.has(event.id)) return false;
    this.say(this.about(event, "still saving the previous decision on this event — press again once it is saved"));
    return true;
  }

  /** A decision button keeps no focus: space (play/pause) must never press it again. */
  dropFocus() {
    const active = document.activeElement;
    if (active && active !== document.body && $("review-form").contains(active)) active.blur();
  }

  say(text) { $("review-status").textContent = text; }

  /** ``text`` as it reads under ``event``, or naming it when the reviewer has already moved to another. */
  about(event, text) {
    return this.event?.id === event.id ? text : `Event ${event.id}: ${text}`;
  }

  /** ``e``: choose the new label with the arrow keys, Enter saves (the note field is one Tab away). */
  startRelabel() {
    if (!this.event) return;
    $("relabel-label").focus();
    this.say("Relabel: choose the label, Enter saves, Escape cancels.");
  }

  async decide(decision) {
    const event = this.event;
    if (!event) {
      this.say("Select an event first (j).");
      return;
    }
    if (this.stillSaving(event)) return;
    const body = { decision };
    const note = $("review-note").value.trim();
    if (note) body.note = note;
    if (decision === "relabelled") body.label = $("relabel-label").value;
    this.dropFocus();
    this.saving.add(event.id);
    this.say(this.about(event, "Saving…"));
    try {
      const updated = await api.review(event.id, body);
      this.lastDecided = event.id;
      await this.onChange(updated);
      this.say(this.about(event, `Saved: ${updated.status}`));
    } catch (err) {
      this.say(this.about(event, `Not saved — ${err.message}`));
    } finally {
      this.saving = new Set();  // events whose decision or undo is in flight: one at a time per event, never global
    }
    if (document.activeElement === $("relabel-label")) $("relabel-label").blur();
  }

  /** True when the event on screen carries a review of this user's that can be taken back. */
  canUndo() {
    return Boolean(this.event) && !$("undo").hidden;
  }

  async undo() {
    const event = this.event;
    if (!event) {
      this.say("Select an event first (j).");
      return;
    }
    if (this.stillSaving(event)) return;
    if ($("undo").hidden) {
      this.say("Nothing of yours to undo on this event.");
      return;
    }
    this.dropFocus();
    this.saving.add(event.id);
    try {
      // name the review shown as the latest: a double press or a retry is refused (409), never an undo of
      // the review below it
      const named = this.standing?.event === event.id ? this.standing.review : null;
      const updated = await api.undoReview(event.id, named);
      if (this.lastDecided === event.id) this.lastDecided = null;
      await this.onChange(updated);
      this.say(this.about(event, `Undone: now ${updated.status}`));
    } catch (err) {
      this.say(this.about(event, `Not undone — ${err.message}`));
    } finally {
      this.saving = new Set();  // events whose decision or undo is in flight: one at a time per event, never global
    }
  }

  async history(id) {
    const list = $("history-list");
    list.replaceChildren();
    this.standing = null;
    try {
      const page = await api.reviews(id, { limit: HISTORY });
      if (this.event?.id !== id) return;
      const standing = page.data.find((r) => !r.undone_at);
      if (standing) this.standing = { event: id, review: standing.id };
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
}
