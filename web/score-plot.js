// Drawing of per-class scores over recording time on a canvas (one job: pixels). Used by the recording
// timeline and by the event's score chart; both take the answer of GET /recordings/{id}/timeline.
// Colours are chosen to pass 3:1 against the white plot (WCAG non-text contrast) and to differ in lightness.
const PALETTE = ["#c0392b", "#1f5fbf", "#8a5a00", "#6b3fa0", "#0b7a5b", "#a3336b", "#4d5766"];
const STATUS_FILL = { flagged: "rgba(191, 135, 0, .16)", confirmed: "rgba(26, 127, 55, .16)",
                      rejected: "rgba(102, 112, 133, .14)", relabelled: "rgba(31, 111, 235, .15)" };
const STATUS_EDGE = { flagged: "#8a5a00", confirmed: "#1a7f37", rejected: "#4d5766", relabelled: "#1f5fbf" };

export const classColour = (classes, label) => PALETTE[Math.max(0, classes.indexOf(label)) % PALETTE.length];

/** Size the canvas's drawing buffer to its CSS box; returns [ctx, width, height] in CSS pixels. */
function prepare(canvas) {
  const ratio = window.devicePixelRatio || 1;
  const width = Math.max(1, canvas.clientWidth);
  const height = Math.max(1, canvas.clientHeight);
  if (canvas.width !== Math.round(width * ratio) || canvas.height !== Math.round(height * ratio)) {
    canvas.width = Math.round(width * ratio);
    canvas.height = Math.round(height * ratio);
  }
  const ctx = canvas.getContext("2d");
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.clearRect(0, 0, width, height);
  return [ctx, width, height];
}

export const AXIS = 18;  // px of time labels under the plot

/**
 * Draw ``data`` (a timeline answer) over the visible window ``[view.start, view.end]``.
 * ``marks``: {cursor: seconds|null, selection: [a, b]|null, current: event id|null, clip: [a, b]|null}.
 */
export function drawScores(canvas, data, view, marks = {}) {
  const [ctx, width, height] = prepare(canvas);
  const plotH = height - AXIS;
  const span = Math.max(1e-6, view.end - view.start);
  const x = (t) => ((t - view.start) / span) * width;
  const y = (score) => plotH - score * (plotH - 4) - 2;
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, width, plotH);
  if (!data) return;
  if (marks.clip) {  // the part of the recording the player can show
    ctx.fillStyle = "rgba(31, 111, 235, .07)";
    ctx.fillRect(x(marks.clip[0]), 0, x(marks.clip[1]) - x(marks.clip[0]), plotH);
  }
  for (const [a, b] of data.gaps || []) {  // stream outages: hatched
    ctx.save();
    ctx.beginPath();
    ctx.rect(x(a), 0, Math.max(2, x(b) - x(a)), plotH);
    ctx.clip();
    ctx.fillStyle = "#eceef1";
    ctx.fillRect(x(a), 0, x(b) - x(a) + 2, plotH);
    ctx.strokeStyle = "#8b93a1";
    for (let s = x(a) - plotH; s < x(b) + plotH; s += 6) {
      ctx.beginPath();
      ctx.moveTo(s, plotH);
      ctx.lineTo(s + plotH, 0);
      ctx.stroke();
    }
    ctx.restore();
  }
  for (const event of data.events || []) {
    const left = x(event.start);
    const w = Math.max(3, x(event.end) - left);
    ctx.fillStyle = STATUS_FILL[event.status] || STATUS_FILL.flagged;
    ctx.fillRect(left, 0, w, plotH);
    ctx.fillStyle = STATUS_EDGE[event.status] || STATUS_EDGE.flagged;
    ctx.fillRect(left, 0, w, 5);  // the status band along the top
    ctx.strokeStyle = STATUS_EDGE[event.status] || STATUS_EDGE.flagged;
    ctx.lineWidth = event.id === marks.current ? 3 : 1;
    ctx.setLineDash(event.source === "clinician" ? [4, 3] : []);
    ctx.strokeRect(left + 0.5, 0.5, w - 1, plotH - 1);
    ctx.setLineDash([]);
  }
  ctx.lineWidth = 1;
  ctx.strokeStyle = "#d9dde3";
  for (const level of [0.5, 1]) {
    ctx.beginPath();
    ctx.moveTo(0, y(level));
    ctx.lineTo(width, y(level));
    ctx.stroke();
  }
  ctx.lineWidth = 1.6;
  for (const label of data.classes || []) {
    const series = data.scores?.[label] || [];
    ctx.strokeStyle = classColour(data.classes, label);
    ctx.beginPath();
    let drawing = false;
    series.forEach((score, i) => {
      if (score == null) { drawing = false; return; }  // no clip scored there: a break, not a zero
      const px = x(data.times[i]);
      if (drawing) ctx.lineTo(px, y(score));
      else ctx.moveTo(px, y(score));
      drawing = true;
    });
    ctx.stroke();
  }
  if (marks.selection) {
    const [a, b] = [Math.min(...marks.selection), Math.max(...marks.selection)];
    ctx.fillStyle = "rgba(207, 34, 46, .18)";
    ctx.fillRect(x(a), 0, Math.max(2, x(b) - x(a)), plotH);
    ctx.strokeStyle = "#cf222e";
    ctx.lineWidth = 2;
    ctx.strokeRect(x(a), 1, Math.max(2, x(b) - x(a)), plotH - 2);
  }
  if (marks.cursor != null) {
    ctx.strokeStyle = "#1d2430";
    ctx.lineWidth = 2;
    ctx.beginPath();
    ctx.moveTo(x(marks.cursor), 0);
    ctx.lineTo(x(marks.cursor), plotH);
    ctx.stroke();
  }
  drawAxis(ctx, view, width, plotH);
}

function drawAxis(ctx, view, width, top) {
  const span = view.end - view.start;
  const steps = [0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 1800, 3600];
  const step = steps.find((s) => span / s <= Math.max(2, width / 90)) || 7200;
  ctx.fillStyle = "#4d5766";
  ctx.strokeStyle = "#8b93a1";
  ctx.font = "11px system-ui, sans-serif";
  ctx.textBaseline = "top";
  for (let t = Math.ceil(view.start / step) * step; t <= view.end; t += step) {
    const px = ((t - view.start) / span) * width;
    ctx.beginPath();
    ctx.moveTo(px, top);
    ctx.lineTo(px, top + 4);
    ctx.stroke();
    ctx.fillText(formatTime(t), Math.min(width - 30, Math.max(0, px - 12)), top + 5);
  }
}

/** m:ss (h:mm:ss past an hour), tenths below ten seconds of span. */
export function formatTime(seconds) {
  // rounded first (to the tenth shown below ten seconds): 59.96 is 1:00, never 0:60
  const s = Math.round(Math.max(0, seconds) * 10) / 10;
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const rest = s % 60;
  const sec = Number.isInteger(Math.round(rest * 10) / 10) ? String(Math.round(rest)).padStart(2, "0")
    : rest.toFixed(1).padStart(4, "0");
  return h ? `${h}:${String(m).padStart(2, "0")}:${sec}` : `${m}:${sec}`;
}

/** A sentence for screen readers: the peak of each class in the data. */
export function describeScores(data) {
  if (!data?.classes?.length) return "no scores";
  return data.classes.map((label) => {
    const series = (data.scores[label] || []).filter((v) => v != null);
    const peak = series.length ? Math.max(...series) : null;
    return `${label.replaceAll("_", " ")} peak ${peak == null ? "n/a" : `${Math.round(peak * 100)}%`}`;
  }).join(", ");
}

/** Fill ``list`` (a <ul>) with one coloured swatch and name per class of ``data``. */
export function renderLegend(list, data) {
  list.replaceChildren();
  for (const label of data?.classes || []) {
    const swatch = Object.assign(document.createElement("span"), { className: "swatch" });
    swatch.style.background = classColour(data.classes, label);  // CSSOM: allowed under the strict CSP
    const item = document.createElement("li");
    item.append(swatch, document.createTextNode(label.replaceAll("_", " ")));
    list.append(item);
  }
}
