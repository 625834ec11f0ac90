// The candidate-vs-base (and vs-active) comparison of a fine-tuned model version, per class, side by side:
// ModelVersion.metrics.comparison holds each side's per_class_f1 scored on the same validation clips
// (model/training/finetune.py score()).
const finite = (v) => typeof v === "number" && Number.isFinite(v);
const pts = (v) => (finite(v) ? (v * 100).toFixed(1) : "—");

function signed(diff) {
  if (!finite(diff)) return "—";
  let value = Math.round(diff * 1000) / 10;
  if (Object.is(value, -0)) value = 0;
  return (value >= 0 ? "+" : "") + value.toFixed(1);
}

/** candidate − other, or null when either side is undefined (a class with no positives has no F1). */
const minus = (a, b) => (finite(a) && finite(b) ? a - b : null);

function cell(tag, text, className = "") {
  const node = document.createElement(tag);
  node.textContent = text;
  if (className) node.className = className;
  if (tag === "th") node.scope = node.scope || "col";
  return node;
}

/** A <details> with a per-class F1 table for ``model`` (or null when it carries no per-class comparison);
 * ``baseName`` / ``activeName`` head their columns. */
export function perClassTable(model, { baseName = null, activeName = null } = {}) {
  const comparison = model.metrics?.comparison;
  const base = comparison?.base?.per_class_f1;
  const candidate = comparison?.candidate?.per_class_f1;
  if (!base || !candidate) return null;
  const active = comparison.others?.active;
  const activeScores = active?.comparable !== false ? active?.per_class_f1 : null;
  const table = document.createElement("table");
  table.className = "per-class small";
  const caption = cell("caption", `${model.name}: validation F1 per class (points)`);
  const head = document.createElement("tr");
  head.append(cell("th", "Class"), cell("th", baseName ? `Base (${baseName})` : "Base", "num"), cell("th", "Candidate", "num"), cell("th", "Δ", "num"));
  if (activeScores) head.append(cell("th", activeName ? `Active (${activeName})` : "Active", "num"),
    cell("th", "Δ active", "num"));
  table.append(caption, head);
  for (const name of Object.keys(candidate)) {
    const row = document.createElement("tr");
    row.dataset.class = name;
    const label = cell("th", name.replaceAll("_", " "));
    label.scope = "row";
    row.append(label, cell("td", pts(base[name]), "num base"), cell("td", pts(candidate[name]), "num candidate"),
      cell("td", signed(minus(candidate[name], base[name])), "num diff"));
    if (activeScores) row.append(cell("td", pts(activeScores[name]), "num active"),
      cell("td", signed(minus(candidate[name], activeScores[name])), "num diff-active"));
    table.append(row);
  }
  const details = document.createElement("details");
  details.className = "per-class-details";
  const summary = cell("summary", "Per class");
  details.append(summary, table);
  return details;
}
