// Loss and validation-F1 curves of a fine-tune job, drawn as SVG from job.result.curves (server/training_curves.py):
// the step losses (decimated by the server) as a line, each epoch's mean training loss and validation loss as
// points on the same axes, and the validation macro-F1 per epoch on its own 0..1 axis. Each chart carries its
// data domain and plot box as data- attributes so a test can map the drawn points back to values; a table with
// the per-epoch numbers follows for screen readers and for anyone who wants the figures.
const SVG = "http://www.w3.org/2000/svg";
const W = 340, H = 150;
const BOX = { left: 44, right: W - 10, top: 10, bottom: H - 26 };

function svg(tag, attrs = {}, text = null) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
  if (text != null) node.textContent = text;
  return node;
}

const finite = (v) => typeof v === "number" && Number.isFinite(v);
const round = (v) => Math.round(v * 100) / 100;

/** Linear maps of a domain onto the plot box (a degenerate domain is widened so nothing divides by zero). */
function scales([x0, x1], [y0, y1]) {
  if (x1 <= x0) x1 = x0 + 1;
  if (y1 <= y0) y1 = y0 + 1;
  return {
    domain: [x0, x1, y0, y1],
    x: (v) => round(BOX.left + ((v - x0) / (x1 - x0)) * (BOX.right - BOX.left)),
    y: (v) => round(BOX.bottom - ((v - y0) / (y1 - y0)) * (BOX.bottom - BOX.top)),
  };
}

function fmtTick(v) {
  return Number.isInteger(v) || Math.abs(v) >= 100 ? String(Math.round(v)) : v.toPrecision(2);
}

/** An empty chart: frame, axis ticks at both ends, an axis title. */
function frame(title, s, xLabel, describe) {
  const [x0, x1, y0, y1] = s.domain;
  const root = svg("svg", {
    viewBox: `0 0 ${W} ${H}`, width: W, height: H, role: "img", "aria-label": describe, class: "chart",
    "data-x0": x0, "data-x1": x1, "data-y0": y0, "data-y1": y1,
    "data-left": BOX.left, "data-right": BOX.right, "data-top": BOX.top, "data-bottom": BOX.bottom,
  });
  root.append(svg("title", {}, title));
  root.append(svg("rect", { x: BOX.left, y: BOX.top, width: BOX.right - BOX.left, height: BOX.bottom - BOX.top,
    class: "chart-frame" }));
  root.append(svg("text", { x: BOX.left - 4, y: BOX.top + 4, class: "chart-tick", "text-anchor": "end" }, fmtTick(y1)));
  root.append(svg("text", { x: BOX.left - 4, y: BOX.bottom, class: "chart-tick", "text-anchor": "end" }, fmtTick(y0)));
  root.append(svg("text", { x: BOX.left, y: H - 8, class: "chart-tick" }, fmtTick(x0)));
  root.append(svg("text", { x: BOX.right, y: H - 8, class: "chart-tick", "text-anchor": "end" }, fmtTick(x1)));
  root.append(svg("text", { x: (BOX.left + BOX.right) / 2, y: H - 8, class: "chart-tick", "text-anchor": "middle" },
    xLabel));
  return root;
}

function points(root, s, series, values, shape) {
  const group = svg("g", { class: `series series-${series}`, "data-series": series });
  for (const [x, y] of values) {
    group.append(shape === "square"
      ? svg("rect", { x: s.x(x) - 3, y: s.y(y) - 3, width: 6, height: 6, "data-x": x, "data-y": y })
      : svg("circle", { cx: s.x(x), cy: s.y(y), r: 3.5, "data-x": x, "data-y": y }));
  }
  root.append(group);
}

function lossChart(curves, jobId) {
  const steps = (curves.steps || []).filter(([x, y]) => finite(x) && finite(y));
  const epochs = curves.epochs || [];
  const train = epochs.filter((e) => finite(e.loss)).map((e) => [e.step, e.loss]);
  const val = epochs.filter((e) => finite(e.val_loss)).map((e) => [e.step, e.val_loss]);
  const all = [...steps, ...train, ...val];
  const ys = all.map(([, y]) => y);
  const xs = all.map(([x]) => x);
  const s = scales([0, Math.max(1, ...xs)], [Math.min(0, ...ys), Math.max(0, ...ys)]);
  const last = train.length ? train[train.length - 1][1] : steps.length ? steps[steps.length - 1][1] : null;
  const root = frame(`Job ${jobId}: loss`, s, "step",
    `Job ${jobId} loss over ${Math.max(0, ...xs)} steps` + (last != null ? `, latest ${last.toFixed(3)}` : ""));
  if (steps.length) {
    root.append(svg("polyline", { class: "series series-step_loss", "data-series": "step_loss",
      points: steps.map(([x, y]) => `${s.x(x)},${s.y(y)}`).join(" ") }));
  }
  points(root, s, "epoch_loss", train, "circle");
  points(root, s, "val_loss", val, "square");
  return root;
}

function f1Chart(curves, jobId) {
  const epochs = (curves.epochs || []).filter((e) => finite(e.val_macro_f1));
  const values = epochs.map((e) => [e.epoch, e.val_macro_f1]);
  const s = scales([0, Math.max(1, ...values.map(([x]) => x))], [0, 1]);
  const last = values.length ? values[values.length - 1][1] : null;
  const root = frame(`Job ${jobId}: validation macro-F1`, s, "epoch",
    `Job ${jobId} validation macro-F1 over ${values.length} epochs` +
    (last != null ? `, latest ${(last * 100).toFixed(1)}` : ""));
  if (values.length > 1) {
    root.append(svg("polyline", { class: "series series-val_f1-line", "data-series": "val_f1_line",
      points: values.map(([x, y]) => `${s.x(x)},${s.y(y)}`).join(" ") }));
  }
  points(root, s, "val_f1", values, "circle");
  return root;
}

function legend(items) {
  const list = document.createElement("ul");
  list.className = "chart-legend small";
  for (const [cls, text] of items) {
    const item = document.createElement("li");
    const swatch = document.createElement("span");
    swatch.className = `swatch ${cls}`;
    swatch.setAttribute("aria-hidden", "true");
    item.append(swatch, text);
    list.append(item);
  }
  return list;
}

function cell(tag, text) {
  const node = document.createElement(tag);
  node.textContent = text;
  if (tag === "th") node.scope = "col";
  return node;
}

function table(curves, jobId) {
  const fmt = (v, digits = 3) => (finite(v) ? v.toFixed(digits) : "—");
  const t = document.createElement("table");
  t.className = "curve-table small";
  const caption = document.createElement("caption");
  caption.textContent = `Job ${jobId}: per-epoch figures`;
  const head = document.createElement("tr");
  head.append(cell("th", "Epoch"), cell("th", "Step"), cell("th", "Loss"), cell("th", "Val. loss"),
    cell("th", "Val. macro-F1"));
  t.append(caption, head);
  for (const e of curves.epochs || []) {
    const row = document.createElement("tr");
    row.append(cell("td", String(e.epoch)), cell("td", String(e.step)), cell("td", fmt(e.loss)),
      cell("td", fmt(e.val_loss)), cell("td", finite(e.val_macro_f1) ? (e.val_macro_f1 * 100).toFixed(1) : "—"));
    t.append(row);
  }
  return t;
}

/** Fill ``container`` with the job's charts; does nothing while the curves are unchanged (no flicker, the
 * figures' <details> keeps its open state). */
export function renderCurves(container, job) {
  const curves = job.result?.curves;
  const key = curves ? JSON.stringify(curves) : "";
  if (container.dataset.key === key) return;
  container.dataset.key = key;
  if (!curves || (!curves.steps?.length && !curves.epochs?.length)) {
    container.replaceChildren();
    container.hidden = true;
    return;
  }
  container.hidden = false;
  let details = container.querySelector("details");
  const open = details?.open ?? false;
  details = document.createElement("details");
  details.open = open;
  const summary = document.createElement("summary");
  summary.textContent = `Figures for job ${job.id}`;
  details.append(summary, table(curves, job.id));
  const charts = document.createElement("div");
  charts.className = "charts";
  charts.append(
    document.createElement("figure"), document.createElement("figure"));
  const caption = (text) => { const c = document.createElement("figcaption"); c.className = "small"; c.textContent = text; return c; };
  charts.children[0].append(caption("Loss"));
  charts.children[1].append(caption("Validation macro-F1"));
  charts.children[0].append(lossChart(curves, job.id), legend([["swatch-step", "step loss"],
    ["swatch-epoch", "epoch mean loss"], ["swatch-val", "validation loss"]]));
  charts.children[1].append(f1Chart(curves, job.id), legend([["swatch-f1", "validation macro-F1"]]));
  container.replaceChildren(charts, details);
}
