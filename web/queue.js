// The review queue: filters (status, label, room, date range, minimum score), sort, counts per status and
// keyset paging with the server's cursor (GET /events, contract A). Rendering only; app.js decides what a
// selection does.
import { api } from "./api.js";
import { formatTime } from "./score-plot.js";

export const PAGE = 50;
const STATUSES = [["flagged", "to review"], ["confirmed", "confirmed"], ["rejected", "rejected"],
                  ["relabelled", "relabelled"]];
const $ = (id) => document.getElementById(id);
const pretty = (label) => label.replaceAll("_", " ");

function span(className, text = "") {
  return Object.assign(document.createElement("span"), { className, textContent: text });
}

export class Queue {
  /** ``onSelect(id)``: an item was chosen (click, Enter). */
  constructor(onSelect) {
    this.onSelect = onSelect;
    this.events = [];
    this.cursor = null;
    this.count = null;
    this.counts = null;
    this.selected = null;
    this.ticket = 0;  // the latest request: an older answer (a filter changed meanwhile) is dropped
    this.filteredStatus = "";  // the status filter the shown page was loaded with
    $("filters").addEventListener("change", () => this.load());
    $("filters").addEventListener("submit", (e) => { e.preventDefault(); this.load(); });
    $("load-more").addEventListener("click", () => this.load(true));
    $("status-counts").addEventListener("click", (e) => {
      const button = e.target.closest("button[data-status]");
      if (!button) return;
      $("filter-status").value = button.dataset.status;
      this.load();
    });
  }

  setLabels(labels) {
    for (const label of labels) {
      $("filter-label").append(Object.assign(document.createElement("option"), { value: label,
                                                                                 textContent: pretty(label) }));
    }
  }

  params() {
    const value = (id) => $(id).value.trim();
    const iso = (id) => (value(id) ? new Date(value(id)).toISOString() : "");
    const minScore = value("filter-min-score");
    return {
      limit: PAGE, status: value("filter-status"), label: value("filter-label"), room: value("filter-room"),
      since: iso("filter-since"), until: iso("filter-until"), sort: value("filter-sort"),
      min_score: minScore === "" ? "" : String(Math.min(100, Math.max(0, Number(minScore))) / 100),
    };
  }

  async load(append = false) {
    const params = this.params();
    if (append && this.cursor) params.cursor = this.cursor;
    const ticket = ++this.ticket;
    try {
      const page = await api.events(params);
      if (ticket !== this.ticket) return;  // answers can arrive out of order: only the latest request's counts
      this.events = append ? this.events.concat(page.data) : page.data;
      this.cursor = page.next_cursor;
      if (!append) {
        this.count = page.count;
        this.counts = page.counts ? { ...page.counts } : null;
        this.filteredStatus = params.status;
        this.renderCounts();
      }
      this.renderCount();
      $("load-more").hidden = !page.next_cursor;
      this.render();
    } catch (err) {
      if (ticket === this.ticket) $("queue-count").textContent = `Could not load events: ${err.message}`;
    }
  }

  renderCount() {
    const shown = this.events.length;
    $("queue-count").textContent = this.count == null ? `${shown} shown`
      : `${this.count} event${this.count === 1 ? "" : "s"}` + (shown < this.count ? ` (${shown} shown)` : "");
  }

  renderCounts() {
    const counts = this.counts;
    const box = $("status-counts");
    box.replaceChildren();
    if (!counts) return;
    const current = $("filter-status").value;
    for (const [status, name] of STATUSES) {
      const button = Object.assign(document.createElement("button"), { type: "button",
        className: "count-chip" + (current === status ? " active" : ""), textContent: `${name} ${counts[status] ?? 0}` });
      button.dataset.status = status;
      button.setAttribute("aria-pressed", String(current === status));
      box.append(button);
    }
  }

  /** Replace one event in place (after a review) and redraw. */
  update(event) {
    const at = this.events.findIndex((e) => e.id === event.id);
    if (at >= 0) {
      const before = this.events[at].status;
      if (this.counts && before !== event.status) {  // the counts follow the decision without a reload
        this.counts[before] = Math.max(0, (this.counts[before] ?? 0) - 1);
        this.counts[event.status] = (this.counts[event.status] ?? 0) + 1;
        // filtered by a status, the "N events" line is that status's count: it follows the decision too
        if (this.filteredStatus && this.count != null) this.count = this.counts[this.filteredStatus] ?? 0;
        this.renderCounts();
        this.renderCount();
      }
      this.events[at] = { ...this.events[at], ...event };
    }
    this.render();
  }

  render() {
    const list = $("event-list");
    list.replaceChildren();
    for (const event of this.events) {
      const item = document.createElement("li");
      item.className = "event-item" + (this.selected === event.id ? " selected" : "");
      item.dataset.id = event.id;
      item.tabIndex = 0;
      if (this.selected === event.id) item.setAttribute("aria-current", "true");
      const when = event.start_wall ? new Date(event.start_wall).toLocaleString([], { dateStyle: "short",
        timeStyle: "short" }) : `rec ${event.recording_id}`;
      const where = [event.room, when, `${formatTime(event.start)}–${formatTime(event.end)}`].filter(Boolean);
      // Built node by node (no innerHTML): a label, a room or a status is data, never markup.
      item.append(
        span(`badge label-${event.label}`),
        span("event-label", pretty(event.reviewed_label || event.label)
             + (event.source === "clinician" ? " (added)" : "")),
        span("event-time", where.join(" · ")),
        span("event-score", event.source === "clinician" ? "—" : `${(event.peak_score * 100).toFixed(0)}%`),
        span(`status status-${event.status}`, event.status),
      );
      item.addEventListener("click", () => this.onSelect(event.id));
      item.addEventListener("keydown", (e) => { if (e.key === "Enter") this.onSelect(event.id); });
      list.append(item);
    }
    list.querySelector(".selected")?.scrollIntoView({ block: "nearest" });
  }

  /** The id ``step`` places from the selected one (the first when none is), or null at the ends. */
  neighbour(step) {
    if (!this.events.length) return null;
    const at = this.events.findIndex((e) => e.id === this.selected);
    if (at < 0) return this.events[0].id;
    const next = at + step;
    return next >= 0 && next < this.events.length ? this.events[next].id : null;
  }
}
