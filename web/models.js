// Admin page: model versions (activate / roll back), start ATCON fine-tuning, watch and cancel fine-tune jobs.
import { api } from "./api.js";
import { perClassTable } from "./comparison.js";
import { renderCurves } from "./curves.js";
import "./nav.js";
import { ensureSignedIn } from "./session.js";

const POLL_MS = 2000;
const LIVE = new Set(["queued", "running"]);
const state = { models: [], jobs: [], highlight: null, poll: null, live: new Set(), basePicked: false };
const $ = (id) => document.getElementById(id);

/** A 0..1 score as points with one decimal ("61.2"), or an em dash. */
function pts(value) {
  return typeof value === "number" && Number.isFinite(value) ? (value * 100).toFixed(1) : "—";
}

/** A 0..1 difference as signed points ("+2.8", "-1.0"). */
function signedPts(diff) {
  let value = Math.round(diff * 1000) / 10;
  if (Object.is(value, -0)) value = 0;
  return (value >= 0 ? "+" : "") + value.toFixed(1);
}

function fmtNumber(value) {
  return typeof value === "number" && value !== 0 && Math.abs(value) < 1e-3 ? value.toExponential() : String(value);
}

function fmtTime(iso) {
  return iso ? new Date(iso).toLocaleString() : "";
}

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "dataset") Object.assign(node.dataset, value);
    else if (key in node) node[key] = value;
    else node.setAttribute(key, value);
  }
  node.append(...children.filter((c) => c != null));
  return node;
}

function modelName(id) {
  const model = state.models.find((m) => m.id === id);
  return model ? model.name : `model ${id}`;
}

/** "base 61.2 → candidate 64.0 (+2.8)" and, when scored, the same against the model active at training time. */
function comparisonLines(model) {
  const comparison = model.metrics?.comparison;
  if (!comparison?.base || !comparison?.candidate) return [];
  const candidate = comparison.candidate.macro_f1;
  const diff = comparison.diff_macro_f1 ?? candidate - comparison.base.macro_f1;
  const lines = [{
    kind: "base",
    text: `base ${pts(comparison.base.macro_f1)} → candidate ${pts(candidate)} (${signedPts(diff)})`,
    title: model.parent_id != null ? `base: ${modelName(model.parent_id)}` : "base model",
  }];
  const active = comparison.others?.active;
  if (active) {
    const who = active.model_version_id != null ? modelName(active.model_version_id) : "the active model";
    if (active.comparable === false) {
      const reason = active.reason || "different model";
      lines.push({ kind: "active", text: `active: not comparable (${reason})`, title: who });
    } else {
      const activeDiff = active.diff_macro_f1 ?? candidate - active.macro_f1;
      lines.push({
        kind: "active",
        text: `active ${pts(active.macro_f1)} → candidate ${pts(candidate)} (${signedPts(activeDiff)})`,
        title: `active when trained: ${who}`,
      });
    }
  }
  return lines;
}

// ---------------------------------------------------------------------------------------------- models table

async function loadModels() {
  try {
    state.models = await api.models();
  } catch (err) {
    $("models-status").textContent = `Could not load model versions: ${err.message}`;
    return;
  }
  renderModels();
  renderBaseOptions();
}

function renderModels() {
  const rows = $("model-rows");
  rows.replaceChildren();
  if (!state.models.length) {
    rows.append(el("tr", {}, el("td", { colSpan: 7, className: "muted" }, "No model versions yet.")));
    return;
  }
  for (const model of state.models) {
    const row = el("tr", {
      id: `model-${model.id}`,
      className: `model-row state-${model.state}` + (state.highlight === model.id ? " highlight" : ""),
      dataset: { id: model.id, state: model.state },
    });
    const nameCell = el("td", { className: "model-name" }, el("strong", {}, model.name),
      el("span", { className: "muted" }, ` #${model.id}`));
    if (model.parent_id != null) {
      nameCell.append(el("div", { className: "muted small" }, `fine-tuned from ${modelName(model.parent_id)}`));
    }
    const comparisonCell = el("td", { className: "comparison" });
    for (const line of comparisonLines(model)) {
      comparisonCell.append(el("div", { className: `comparison-${line.kind}`, title: line.title }, line.text));
    }
    const activeId = model.metrics?.comparison?.others?.active?.model_version_id;
    const perClass = perClassTable(model, { baseName: model.parent_id != null ? modelName(model.parent_id) : null,
      activeName: activeId != null ? modelName(activeId) : null });
    if (perClass) comparisonCell.append(perClass);
    const data = model.metrics?.data;
    if (data) {
      comparisonCell.append(el("div", { className: "muted small" },
        `${data.labelled} reviewed + ${data.unlabelled} unlabelled clips, ${data.validation} for validation`));
    }
    const actionCell = el("td", { className: "action" });
    if (model.state !== "active") {
      const rollback = model.state === "retired";
      actionCell.append(el("button", {
        type: "button",
        className: rollback ? "activate rollback" : "activate primary",
        textContent: rollback ? "Roll back to this" : "Activate",
        title: rollback ? "Make this earlier version active again (a rollback)" : "Make this version the active one",
        "aria-label": `${rollback ? "Roll back to" : "Activate"} ${model.name}`,
        onclick: () => activate(model),
      }));
    }
    row.append(
      nameCell,
      el("td", {}, model.architecture),
      el("td", {}, el("span", { className: `state-badge state-${model.state}` }, model.state)),
      el("td", { className: "num val-f1" }, pts(model.metrics?.val_macro_f1)),
      comparisonCell,
      el("td", { className: "muted small created" }, fmtTime(model.created_at)),
      actionCell,
    );
    rows.append(row);
  }
}

async function activate(model) {
  const previous = state.models.find((m) => m.state === "active");
  const verb = model.state === "retired" ? "Rolled back to" : "Activated";
  $("models-status").className = "message";
  $("models-status").textContent = `${verb === "Activated" ? "Activating" : "Rolling back to"} ${model.name}…`;
  try {
    const updated = await api.activate(model.id);
    // The server answers before its transaction commits, so an immediate re-read can still show the old
    // state: apply the answer here (the previously active version is retired by the same call).
    state.models = state.models.map((m) => m.id === updated.id ? { ...m, ...updated }
      : m.state === "active" ? { ...m, state: "retired" } : m);
    state.highlight = updated.id;
    renderModels();
    renderBaseOptions();
    renderJobs();
    $("models-status").textContent = `${verb} ${updated.name}` +
      (previous && previous.id !== updated.id ? ` (${previous.name} retired).` : ".") +
      " New scoring uses it at once.";
  } catch (err) {
    $("models-status").className = "message error";
    $("models-status").textContent = `Not activated — ${err.message}`;
  }
}

function renderBaseOptions() {
  const select = $("ft-base");
  const chosen = select.value;
  select.replaceChildren();
  for (const model of state.models) {
    select.append(el("option", { value: String(model.id) }, `${model.name} #${model.id} (${model.state})`));
  }
  // The active version is the default until the admin picks another one.
  const active = state.models.find((m) => m.state === "active");
  if (state.basePicked && state.models.some((m) => String(m.id) === chosen)) select.value = chosen;
  else if (active) select.value = String(active.id);
}

// ---------------------------------------------------------------------------------------------- fine-tune form

/** The request body from the form, or an error message for the inline slot it belongs to. */
function readForm() {
  const extraText = $("ft-extra").value.trim();
  let extra = {};
  if (extraText) {
    try {
      extra = JSON.parse(extraText);
    } catch (err) {
      return { field: "extra", error: `Extra hyper-parameters are not valid JSON: ${err.message}` };
    }
    if (extra === null || typeof extra !== "object" || Array.isArray(extra)) {
      return { field: "extra", error: 'Extra hyper-parameters must be a JSON object, e.g. {"batch_size": 8}' };
    }
    const clash = ["epochs", "lr", "mode"].filter((key) => key in extra);
    if (clash.length) {
      return { field: "extra", error: `Set ${clash.join(", ")} with the fields above, not in the JSON` };
    }
  }
  const epochs = Number($("ft-epochs").value);
  if (!Number.isInteger(epochs) || epochs < 1) return { field: "form", error: "Epochs must be a whole number ≥ 1" };
  const lr = Number($("ft-lr").value.trim());
  if (!$("ft-lr").value.trim() || !Number.isFinite(lr) || lr <= 0) {
    return { field: "form", error: "Learning rate must be a positive number, e.g. 1e-5" };
  }
  const body = { mode: $("ft-mode").value, hyperparameters: { ...extra, epochs, lr } };
  if ($("ft-base").value) body.base_model_id = Number($("ft-base").value);
  return { body };
}

async function submitFinetune(event) {
  event.preventDefault();
  const status = $("finetune-status");
  const extraError = $("ft-extra-error");
  status.textContent = "";
  status.className = "message";
  extraError.textContent = "";
  $("ft-extra").removeAttribute("aria-invalid");
  const { body, field, error } = readForm();
  if (error) {
    if (field === "extra") {
      extraError.textContent = error;
      $("ft-extra").setAttribute("aria-invalid", "true");
    } else {
      status.className = "message error";
      status.textContent = error;
    }
    return;
  }
  $("ft-submit").disabled = true;
  try {
    const job = await api.startFinetune(body);
    const base = modelName(job.params.base_model_id);
    status.textContent = `Job ${job.id} ${job.status}: ${body.mode} fine-tuning of ${base}.`;
    await loadJobs();
  } catch (err) {
    status.className = "message error";
    status.textContent = `Not started — ${err.message}`;
  } finally {
    $("ft-submit").disabled = false;
  }
}

// ---------------------------------------------------------------------------------------------- jobs list

async function loadJobs() {
  clearTimeout(state.poll);
  try {
    const page = await api.jobs({ kind: "finetune", limit: 20 });
    state.jobs = page.data;  // newest first
    $("jobs-count").textContent = page.count ? `${page.count} fine-tune job${page.count === 1 ? "" : "s"}` +
      (page.count > page.data.length ? ` (newest ${page.data.length} shown)` : "") : "No fine-tune jobs yet.";
  } catch (err) {
    $("jobs-count").textContent = `Could not load jobs: ${err.message}`;
    state.poll = setTimeout(loadJobs, POLL_MS * 3);
    return;
  }
  // A job that succeeded since the last look brought a candidate: refresh the table and point at it.
  const known = new Set(state.models.map((m) => m.id));
  const done = state.jobs.filter((j) => j.status === "succeeded" && j.result?.model_version_id != null);
  const justDone = done.filter((j) => state.live.has(j.id));
  if (justDone.length) state.highlight = justDone[0].result.model_version_id;
  if (justDone.length || done.some((j) => !known.has(j.result.model_version_id))) await loadModels();
  state.live = new Set(state.jobs.filter((j) => LIVE.has(j.status)).map((j) => j.id));
  renderJobs();
  if (state.live.size) state.poll = setTimeout(loadJobs, POLL_MS);
}

function jobProgressText(job) {
  const p = job.result?.progress;
  if (!p) return job.status === "queued" ? "waiting for the training worker" : "";
  const parts = [`epoch ${p.epoch}/${p.epochs}`];
  if (p.step != null) parts.push(`step ${p.step}`);
  if (typeof p.loss === "number") parts.push(`loss ${p.loss.toFixed(3)}`);
  if (typeof p.val_macro_f1 === "number") parts.push(`val F1 ${pts(p.val_macro_f1)}`);
  return parts.join(" · ");
}

/** Jobs are updated in place (keyed by id, never detached) so polling does not steal a Cancel button's focus. */
function renderJobs() {
  const list = $("job-list");
  const existing = new Map([...list.children].map((li) => [Number(li.dataset.id), li]));
  state.jobs.forEach((job, i) => {
    let item = existing.get(job.id);
    if (!item) {
      const cancel = el("button", { type: "button", className: "cancel", textContent: "Cancel",
        "aria-label": `Cancel job ${job.id}`, onclick: () => cancelJob(job.id) });
      item = el("li", { dataset: { id: job.id } }, el("div", { className: "job-body" }),
        el("div", { className: "job-actions" }, cancel), el("div", { className: "job-curves", hidden: true }));
    }
    fillJob(item, job);
    renderCurves(item.querySelector(".job-curves"), job);
    if (list.children[i] !== item) list.insertBefore(item, list.children[i] || null);
  });
  while (list.children.length > state.jobs.length) list.lastElementChild.remove();
}

function fillJob(item, job) {
  item.className = `job job-${job.status}`;
  item.dataset.status = job.status;
  const params = job.params || {};
  const hp = params.hyperparameters || {};
  const heading = el("div", { className: "job-head" },
    el("strong", {}, `Job ${job.id}`),
    el("span", { className: `job-status status-${job.status}` }, job.status),
    el("span", { className: "muted small" },
      `${params.mode || "?"} · base ${modelName(params.base_model_id)} · ` +
      `${hp.epochs ?? "?"} epoch${hp.epochs === 1 ? "" : "s"}, lr ${hp.lr == null ? "?" : fmtNumber(hp.lr)} · ` +
      fmtTime(job.created_at)));
  const percent = Math.round((job.progress || 0) * 100);
  const bar = el("progress", { max: 1, value: job.progress || 0, "aria-label": `job ${job.id} progress` },
    `${percent}%`);
  const body = [heading, el("div", { className: "job-progress" }, bar,
    el("span", { className: "small num" }, `${percent}%`),
    el("span", { className: "job-metrics small" }, jobProgressText(job)))];
  if (job.error) body.push(el("p", { className: "job-error error small" }, job.error));
  const id = job.result?.model_version_id;
  if (job.status === "succeeded" && id != null) {
    const link = el("a", { href: `#model-${id}`, className: "candidate-link",
      onclick: () => { state.highlight = id; renderModels(); } }, `candidate ${modelName(id)}`);
    const model = state.models.find((m) => m.id === id);
    const line = model ? comparisonLines(model)[0] : null;
    body.push(el("p", { className: "job-result small" }, "→ ", link, line ? ` · ${line.text}` : ""));
  }
  item.querySelector(".job-body").replaceChildren(...body);
  item.querySelector(".job-actions").hidden = !LIVE.has(job.status);
}

async function cancelJob(id) {
  const status = $("jobs-status");
  status.className = "message";
  try {
    const job = await api.cancelJob(id);
    status.textContent = `Job ${job.id} ${job.status}.`;
    // Applied from the answer (an immediate re-read may precede the server's commit); polling goes on.
    state.jobs = state.jobs.map((j) => (j.id === job.id ? job : j));
    state.live.delete(job.id);
    renderJobs();
  } catch (err) {
    status.className = "message error";
    status.textContent = `Job ${id} not cancelled — ${err.message}`;
    await loadJobs();
  }
}

// ---------------------------------------------------------------------------------------------- start

async function init() {
  $("finetune-form").addEventListener("submit", submitFinetune);
  $("ft-base").addEventListener("change", () => { state.basePicked = true; });
  try {
    const health = await api.health();
    $("health").textContent = `v${health.version} · ${health.mode}`;
  } catch (err) {
    $("health").textContent = `server unreachable: ${err.message}`;
  }
  await ensureSignedIn();
  await loadModels();
  await loadJobs();
}

init();
