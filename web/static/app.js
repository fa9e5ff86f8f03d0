// The fleet page: plain JavaScript, no build step, no framework.
// Everything shown comes from the manager's REST API (/api/v1), polled every
// POLL_MS while the page is visible; a task's log is polled from its byte
// offset.  Text from the API is only ever set as textContent, never as HTML.
"use strict";

const API = "/api/v1";
const POLL_MS = 2000;
const LOG_POLL_MS = 1000;
const REPORT_POLL_MS = 60000;
const SVG = "http://www.w3.org/2000/svg";
const ENDED = new Set(["completed", "failed", "stopped"]);

const state = {
  token: localStorage.getItem("fleet-token") || "",
  view: "overview",
  queues: [],
  selected: null, // task id shown in the panel
  logOffset: 0,
  logTask: null,
  logTimer: null,
  logGen: 0, // bumped whenever a new log poll starts; older polls stop
  queueWaits: {}, // queue -> {p50, p95} from the 24 h report
  waitsAt: 0,
};

// -- small helpers -------------------------------------------------------------
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") el.addEventListener(key.slice(2), value);
    else if (value === true) el[key] = true;
    else if (key === "class") el.className = value;
    else if (/^data[A-Z]/.test(key)) el.setAttribute("data-" + key.slice(4).replace(/[A-Z]/g, (c, i) => (i ? "-" : "") + c.toLowerCase()), value);
    else el.setAttribute(key, value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

function svg(tag, attrs) {
  const el = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs || {})) el.setAttribute(key, value);
  return el;
}

function setStatus(text, bad) {
  const el = document.getElementById("status");
  el.textContent = text;
  el.classList.toggle("bad", Boolean(bad));
}

class Unauthorized extends Error {}

async function api(path, options = {}) {
  const headers = Object.assign({}, options.headers || {});
  if (state.token) headers.Authorization = "Bearer " + state.token;
  if (options.body !== undefined && typeof options.body !== "string") {
    headers["Content-Type"] = "application/json";
    options = Object.assign({}, options, { body: JSON.stringify(options.body) });
  }
  const answer = await fetch(API + path, Object.assign({}, options, { headers }));
  if (answer.status === 401) {
    document.getElementById("token-bar").hidden = false;
    throw new Unauthorized("this manager needs an API token");
  }
  if (!answer.ok) {
    let message = answer.status + " " + answer.statusText;
    try { message = (await answer.json()).error || message; } catch (e) { /* not JSON */ }
    throw new Error(message);
  }
  return answer;
}

async function getJSON(path) {
  return (await api(path)).json();
}

async function act(what, call) {
  try {
    await call();
    setStatus(what + ": done");
    await refresh();
  } catch (err) {
    setStatus(what + ": " + err.message, true);
  }
}

function ago(iso) {
  if (!iso) return "";
  return duration((Date.now() - Date.parse(iso)) / 1000);
}

function duration(s) {
  if (s === null || s === undefined || Number.isNaN(s)) return "–";
  if (s < 1) return Math.round(s * 1000) + " ms";
  if (s < 60) return s.toFixed(1) + " s";
  if (s < 3600) return Math.floor(s / 60) + " m " + String(Math.floor(s % 60)).padStart(2, "0") + " s";
  return Math.floor(s / 3600) + " h " + String(Math.floor((s % 3600) / 60)).padStart(2, "0") + " m";
}

function when(iso) {
  return iso ? new Date(iso).toLocaleString() : "";
}

function num(value, digits = 1, unit = "") {
  return value === null || value === undefined ? "–" : Number(value).toFixed(digits) + unit;
}

function badge(status) {
  return h("span", { class: "badge " + status }, status);
}

// -- charts (hand-written SVG) ---------------------------------------------------
function sparkline(values, max, width = 120, height = 24) {
  const el = svg("svg", { width, height, class: "spark", viewBox: `0 0 ${width} ${height}` });
  const points = values.length;
  if (!points) return el;
  const top = Math.max(max, ...values.filter((v) => v !== null)) || 1;
  let path = "";
  let pen = false;
  values.forEach((v, i) => {
    if (v === null) { pen = false; return; }
    const x = points === 1 ? width : (i / (points - 1)) * width;
    const y = height - 1 - (v / top) * (height - 2);
    path += (pen ? "L" : "M") + x.toFixed(1) + " " + y.toFixed(1) + " ";
    pen = true;
  });
  el.append(svg("path", { d: path.trim(), class: "line" }));
  return el;
}

function lineChart(series, { width = 720, height = 180, max = 100, unit = "%" } = {}) {
  const pad = { l: 40, r: 10, t: 10, b: 22 };
  const el = svg("svg", { width, height, viewBox: `0 0 ${width} ${height}`, class: "linechart" });
  const all = series.flatMap((s) => s.t);
  if (!all.length) {
    const empty = svg("text", { x: width / 2, y: height / 2, "text-anchor": "middle", class: "axis" });
    empty.textContent = "no samples in this window";
    el.append(empty);
    return el;
  }
  const t0 = Math.min(...all);
  const t1 = Math.max(...all, t0 + 1);
  const top = Math.max(max, ...series.flatMap((s) => s.v.filter((v) => v !== null)));
  const x = (t) => pad.l + ((t - t0) / (t1 - t0)) * (width - pad.l - pad.r);
  const y = (v) => height - pad.b - (v / top) * (height - pad.t - pad.b);
  for (const frac of [0, 0.5, 1]) {
    const v = top * frac;
    el.append(svg("line", { x1: pad.l, x2: width - pad.r, y1: y(v), y2: y(v), class: "grid" }));
    const label = svg("text", { x: pad.l - 4, y: y(v) + 4, "text-anchor": "end", class: "axis" });
    label.textContent = Math.round(v) + unit;
    el.append(label);
  }
  for (const [t, anchor] of [[t0, "start"], [t1, "end"]]) {
    const label = svg("text", { x: x(t), y: height - 6, "text-anchor": anchor, class: "axis" });
    label.textContent = new Date(t * 1000).toLocaleString();
    el.append(label);
  }
  series.forEach((s, k) => {
    let d = "";
    let pen = false;
    s.t.forEach((t, i) => {
      const v = s.v[i];
      if (v === null) { pen = false; return; }
      d += (pen ? "L" : "M") + x(t).toFixed(1) + " " + y(v).toFixed(1) + " ";
      pen = true;
    });
    el.append(svg("path", { d: d.trim(), class: "line c" + (k % 6) }));
  });
  const legend = h("div", { class: "legend" }, series.map((s, k) => h("span", { class: "key c" + (k % 6) }, s.name)));
  return h("div", {}, el, legend);
}

function hoursChart(rows) {
  const width = 720;
  const bar = 18;
  const labelW = 160;
  const height = rows.length * (bar + 8) + 4;
  const el = svg("svg", { width, height, viewBox: `0 0 ${width} ${height}`, class: "barchart" });
  const total = (r) => (r.busy_gpu_hours || 0) + (r.idle_gpu_hours || 0) + (r.paused_gpu_hours || 0);
  const top = Math.max(...rows.map(total), 1e-9);
  const scale = (hours) => (hours / top) * (width - labelW - 60);
  rows.forEach((r, i) => {
    const y = 4 + i * (bar + 8);
    const label = svg("text", { x: labelW - 6, y: y + bar - 5, "text-anchor": "end", class: "axis" });
    label.textContent = r.key;
    el.append(label);
    let x = labelW;
    for (const part of ["busy", "idle", "paused"]) {
      const w = scale(r[part + "_gpu_hours"] || 0);
      const rect = svg("rect", { x, y, width: Math.max(w, 0), height: bar, class: part });
      const tip = svg("title", {});
      tip.textContent = `${r.key}: ${part} ${num(r[part + "_gpu_hours"], 2)} GPU-hours`;
      rect.append(tip);
      el.append(rect);
      x += w;
    }
    const sum = svg("text", { x: x + 4, y: y + bar - 5, class: "axis" });
    sum.textContent = num(total(r), 2) + " h";
    el.append(sum);
  });
  const legend = h("div", { class: "legend" },
    h("span", { class: "key busy" }, "busy"), h("span", { class: "key idle" }, "idle"), h("span", { class: "key paused" }, "paused"));
  return h("div", {}, el, legend);
}

// -- the overview ---------------------------------------------------------------
function renderWorkers(workers, sparks) {
  const body = document.querySelector("#workers tbody");
  const rows = workers.map((w) => {
    const series = sparks[w.id];
    let spark = null;
    let title = "no samples yet";
    if (series) {
      const gpu = series.values.gpu_util_percent;
      const useGpu = gpu.some((v) => v !== null);
      const values = useGpu ? gpu : series.values.cpu_percent;
      spark = sparkline(values, 100);
      const last = values.filter((v) => v !== null).pop();
      title = (useGpu ? "GPU utilization " : "task CPU (no GPU metrics) ") + num(last, 0, "%");
    }
    const force = (w.runtime_properties.force || {}).value || "";
    const forceButton = (value, label) => h("button", {
      type: "button", dataAction: "force-" + value, class: force === value ? "on" : "",
      onclick: () => act(`force ${w.id} ${value}`, () => api(`/workers/${encodeURIComponent(w.id)}/runtime-properties/force`, { method: "PUT", body: { value, expiry: null } })),
    }, label);
    const clear = h("button", {
      type: "button", dataAction: "force-clear", disabled: !force,
      onclick: () => act(`force ${w.id} clear`, () => api(`/workers/${encodeURIComponent(w.id)}/runtime-properties/force`, { method: "DELETE" })),
    }, "clear");
    return h("tr", { dataWorker: w.id },
      h("td", {}, w.id),
      h("td", {}, w.cpu_only ? "cpu" : w.gpus.join(",")),
      h("td", {}, w.queues.join(", ")),
      h("td", { class: "state" }, badge(w.state), " ", h("span", { class: "muted reason" }, w.state_reason)),
      h("td", { class: "task" }, w.tasks.map((id) => h("a", { href: "#task=" + id, onclick: (e) => { e.preventDefault(); selectTask(id); } }, id.slice(0, 12)))),
      h("td", { title }, spark || h("span", { class: "muted" }, "–")),
      h("td", { class: "force" }, forceButton("on", "on"), forceButton("off", "off"), clear),
    );
  });
  body.replaceChildren(...(rows.length ? rows : [h("tr", {}, h("td", { colSpan: 7, class: "muted" }, "no workers: start one with fleetctl up"))]));
}

// GPUs: in service or drained (by a person, or for its health) and why; drain with a reason, undrain
function renderGpus(gpus) {
  const body = document.querySelector("#gpus tbody");
  const rows = gpus.map((g) => {
    const path = `/gpus/${encodeURIComponent(g.name)}/`;
    const d = g.drained;
    const reason = h("input", { type: "text", placeholder: "reason", dataField: "drain-reason", maxlength: "500" });
    const control = d
      ? h("button", { type: "button", dataAction: "undrain", onclick: () => act(`undrain ${g.name}`, () => api(path + "undrain", { method: "POST" })) }, "Undrain")
      : h("span", {}, reason, " ", h("button", {
        type: "button", dataAction: "drain",
        onclick: () => act(`drain ${g.name}`, () => api(path + "drain", { method: "POST", body: { reason: reason.value } })),
      }, "Drain"));
    const stateCell = d
      ? [badge("drained"), " ", h("span", { class: "muted reason" }, `${d.source === "health" ? "health" : "by hand"}: ${d.reason}`)]
      : [badge("in service")];
    return h("tr", { dataGpu: g.name },
      h("td", {}, g.parent === null ? g.name : `${g.name} (MIG, on GPU ${g.parent})`),
      h("td", { class: "muted" }, g.uuid || "–"),
      h("td", { class: "state" }, stateCell),
      h("td", { class: "force" }, control),
    );
  });
  body.replaceChildren(...(rows.length ? rows : [h("tr", {}, h("td", { colSpan: 4, class: "muted" }, "no GPUs"))]));
}

function renderQueues(queues, waitingSince) {
  const table = document.getElementById("queues");
  if (table.contains(document.activeElement)) return; // someone is typing tags
  const rows = queues.map((q) => {
    const input = h("input", { type: "text", value: q.tags.join(", "), dataQueue: q.name, "aria-label": "tags of " + q.name });
    const save = h("button", {
      type: "button", dataAction: "save-tags",
      onclick: () => act(`tags of ${q.name}`, () => api(`/queues/${encodeURIComponent(q.name)}`, {
        method: "PATCH", body: { tags: input.value.split(",").map((t) => t.trim()).filter(Boolean) },
      })),
    }, "save");
    const waits = state.queueWaits[q.name];
    return h("tr", { dataQueue: q.name },
      h("td", {}, q.name),
      h("td", {}, q.pending),
      h("td", {}, q.running),
      h("td", {}, waitingSince[q.name] ? ago(waitingSince[q.name]) : "–"),
      h("td", {}, waits ? duration(waits.p50) + " / " + duration(waits.p95) : "–"),
      h("td", { class: "tags" }, input, save),
    );
  });
  table.tBodies[0].replaceChildren(...rows);
}

function renderTasks(tasks) {
  const rows = tasks.map((t) => {
    const running = t.status === "in_progress" || t.status === "queued";
    const runtime = t.started_at ? ((t.finished_at ? Date.parse(t.finished_at) : Date.now()) - Date.parse(t.started_at)) / 1000 : null;
    return h("tr", { dataTask: t.id, class: t.id === state.selected ? "selected" : "" },
      h("td", {}, h("a", { href: "#task=" + t.id, onclick: (e) => { e.preventDefault(); selectTask(t.id); } }, t.id.slice(0, 12))),
      h("td", { class: "name" }, t.name),
      h("td", {}, t.queue || ""),
      h("td", {}, badge(t.status)),
      h("td", {}, t.worker || ""),
      h("td", {}, when(t.started_at)),
      h("td", {}, runtime === null ? "" : duration(runtime)),
      h("td", {}, running ? h("button", { type: "button", dataAction: "abort", onclick: () => abortTask(t.id) }, "abort") : null),
    );
  });
  document.querySelector("#tasks tbody").replaceChildren(...rows);
}

function abortTask(id) {
  return act("abort " + id.slice(0, 12), () => api(`/tasks/${id}/abort`, { method: "POST", body: { reason: "aborted from the web page" } }));
}

async function refresh() {
  if (state.view !== "overview") return;
  try {
    const [workers, queues, tasks, current, sparks, gpus] = await Promise.all([
      getJSON("/workers"),
      getJSON("/queues"),
      getJSON("/tasks?limit=20"),
      getJSON("/metrics/current"),
      getJSON("/metrics?kind=worker&since=10m"),
      getJSON("/gpus"),
    ]);
    document.getElementById("token-bar").hidden = true;
    state.queues = queues.queues;
    const bySeries = Object.fromEntries(sparks.series.map((s) => [s.id, s]));
    renderWorkers(workers.workers, bySeries);
    renderGpus(gpus.gpus);
    renderQueues(queues.queues, current.queues_waiting_since || {});
    renderTasks(tasks.tasks);
    renderQueueChoices();
    if (state.selected) await refreshPanel();
    const s = current.sampler;
    document.getElementById("host").textContent =
      (current.snapshot ? current.snapshot.host.host + " · " : "") + (current.nvml ? "NVML on" : "no NVML: logical GPUs") +
      ` · sampler ${s.wall_ms_mean} ms/tick`;
    setStatus("updated " + new Date().toLocaleTimeString());
    if (Date.now() - state.waitsAt > REPORT_POLL_MS) refreshWaits();
  } catch (err) {
    setStatus(err.message, true);
  }
}

async function refreshWaits() {
  state.waitsAt = Date.now();
  try {
    const report = await getJSON("/report?since=24h&by=queue");
    state.queueWaits = Object.fromEntries(report.rows.map((r) => [r.key, { p50: r.wait_p50_s, p95: r.wait_p95_s }]));
  } catch (err) { /* shown by the next refresh */ }
}

// -- the task panel and its live log ------------------------------------------------
function renderQueueChoices() {
  const select = document.getElementById("tp-queue");
  if (select === document.activeElement) return;
  const current = select.value;
  select.replaceChildren(...state.queues.map((q) => h("option", { value: q.name }, q.name)));
  if (current) select.value = current;
}

function selectTask(id) {
  state.selected = id;
  document.getElementById("task-panel").hidden = false;
  document.querySelectorAll("#tasks tr.selected").forEach((tr) => tr.classList.remove("selected"));
  const row = document.querySelector(`#tasks tr[data-task="${id}"]`);
  if (row) row.classList.add("selected");
  if (state.logTask !== id) {
    state.logTask = id;
    state.logOffset = 0;
    document.getElementById("log").textContent = "";
  }
  refreshPanel();
  restartLog();
  document.getElementById("task-panel").scrollIntoView({ block: "nearest" });
}

async function refreshPanel() {
  const id = state.selected;
  try {
    const [task, fig] = await Promise.all([getJSON(`/tasks/${id}`), getJSON(`/metrics/tasks/${id}`)]);
    if (id !== state.selected) return;
    document.getElementById("tp-id").textContent = task.id;
    const status = document.getElementById("tp-status");
    status.textContent = task.status;
    status.className = "badge " + task.status;
    document.getElementById("tp-name").textContent = task.name + (task.status_reason ? " — " + task.status_reason : "");
    document.getElementById("tp-abort").disabled = !(task.status === "queued" || task.status === "in_progress");
    const figures = [
      ["runtime", duration(fig.runtime_s)],
      ["peak RSS", num(fig.peak_rss_mb, 0, " MB")],
      ["mean CPU", num(fig.mean_cpu_percent, 0, "%")],
      ["peak GPU memory", fig.nvml ? num(fig.peak_gpu_mem_mb, 0, " MB") : "– (no NVML)"],
      ["worker", task.worker || "–"],
      ["GPUs", task.gpus.join(",") || "–"],
      ["GPU UUIDs", (task.gpu_uuids || []).join(",") || "–"],
      ["attempt", String(task.attempt)],
    ];
    document.getElementById("tp-figures").replaceChildren(...figures.flatMap(([k, v]) => [h("dt", {}, k), h("dd", { dataFigure: k }, v)]));
    if (state.editFor !== task.id) { // fill the edit fields once per task, never over a person's edits
      state.editFor = task.id;
      state.editArgs = task.script.command.join("\n");
      state.editEnv = Object.entries(task.env).map(([k, v]) => k + "=" + v).join("\n");
      document.getElementById("tp-args").value = state.editArgs;
      document.getElementById("tp-env").value = state.editEnv;
    }
  } catch (err) {
    setStatus(err.message, true);
  }
}

function restartLog() {
  clearTimeout(state.logTimer);
  state.logGen += 1;
  pollLog(state.logGen);
}

async function pollLog(gen) {
  const id = state.logTask;
  if (gen !== state.logGen || !id || state.view !== "overview") return;
  let ended = false;
  try {
    const answer = await api(`/tasks/${id}/log?offset=${state.logOffset}`);
    const text = await answer.text();
    if (gen !== state.logGen || id !== state.logTask) return;
    state.logOffset = Number(answer.headers.get("X-Next-Offset") || state.logOffset);
    ended = ENDED.has(answer.headers.get("X-Task-Status"));
    if (text) {
      const log = document.getElementById("log");
      const atBottom = log.scrollTop + log.clientHeight >= log.scrollHeight - 8;
      log.append(document.createTextNode(text));
      if (atBottom) log.scrollTop = log.scrollHeight;
    }
    if (ended && !text) return; // the whole log is here
  } catch (err) {
    setStatus(err.message, true);
  }
  if (gen === state.logGen) state.logTimer = setTimeout(() => pollLog(gen), ended ? 0 : LOG_POLL_MS);
}

// -- the report -----------------------------------------------------------------
async function refreshReport() {
  const since = document.getElementById("report-since").value;
  const by = document.getElementById("report-by").value;
  try {
    const [report, host, gpu] = await Promise.all([
      getJSON(`/report?since=${since}&by=${by}`),
      getJSON(`/metrics?kind=host&since=${since}`),
      getJSON(`/metrics?kind=gpu&since=${since}`),
    ]);
    const t = report.totals;
    const summary = [
      ["window", when(report.since) + " – " + when(report.until)],
      ["GPU-hours busy / idle / paused", `${num(t.busy_gpu_hours, 2)} / ${num(t.idle_gpu_hours, 2)} / ${num(t.paused_gpu_hours, 2)}`],
      ["tasks completed / failed / stopped", `${t.completed} / ${t.failed} / ${t.stopped}`],
      ["success rate", t.success_rate === null ? "–" : (t.success_rate * 100).toFixed(1) + "%"],
      ["queue wait p50 / p95", duration(t.wait_p50_s) + " / " + duration(t.wait_p95_s)],
      ["mean utilization of busy GPUs", num(t.busy_gpu_util_percent, 0, "%")],
    ];
    document.getElementById("report-summary").replaceChildren(h("dl", {}, summary.flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v)])));
    document.getElementById("chart-hours").replaceChildren(hoursChart([...report.rows, t]));
    const lines = host.series.map((s) => ({ name: "host CPU " + s.id, t: s.t, v: s.values.cpu_percent }));
    lines.push(...gpu.series.map((s) => ({ name: "GPU " + s.id, t: s.t, v: s.values.util_percent })));
    document.getElementById("chart-util").replaceChildren(lineChart(lines));
    const cells = (r) => [r.key, num(r.busy_gpu_hours, 2), num(r.idle_gpu_hours, 2), num(r.paused_gpu_hours, 2), r.completed, r.failed, r.stopped,
      r.success_rate === null ? "–" : (r.success_rate * 100).toFixed(1) + "%", duration(r.wait_p50_s), duration(r.wait_p95_s), num(r.busy_gpu_util_percent, 0, "%")];
    document.querySelector("#report-table tbody").replaceChildren(
      ...[...report.rows, t].map((r) => h("tr", { class: r.key === "total" ? "total" : "" }, cells(r).map((c) => h("td", {}, c)))));
    document.getElementById("report-notes").textContent = report.notes.join(" ");
    setStatus("report updated " + new Date().toLocaleTimeString());
  } catch (err) {
    setStatus(err.message, true);
  }
}

// -- wiring -----------------------------------------------------------------------
function show(view) {
  state.view = view;
  document.querySelectorAll(".tab").forEach((b) => b.classList.toggle("active", b.dataset.view === view));
  document.getElementById("view-overview").hidden = view !== "overview";
  document.getElementById("view-report").hidden = view !== "report";
  if (view === "report") refreshReport();
  else { refresh(); restartLog(); }
}

document.querySelectorAll(".tab").forEach((b) => b.addEventListener("click", () => show(b.dataset.view)));
document.getElementById("report-form").addEventListener("submit", (e) => { e.preventDefault(); refreshReport(); });
document.getElementById("token-bar").addEventListener("submit", (e) => {
  e.preventDefault();
  state.token = document.getElementById("token-input").value.trim();
  localStorage.setItem("fleet-token", state.token);
  refresh();
});
document.getElementById("tp-abort").addEventListener("click", () => state.selected && abortTask(state.selected));
document.getElementById("tp-clone").addEventListener("click", () => {
  const queue = document.getElementById("tp-queue").value;
  if (!state.selected || !queue) return;
  const body = { queue };
  const args = document.getElementById("tp-args").value;
  const envText = document.getElementById("tp-env").value;
  if (args !== state.editArgs) body.command = args.replace(/\n+$/, "").split("\n");
  if (envText !== state.editEnv) {
    body.env = {};
    for (const line of envText.split("\n")) {
      if (!line.trim()) continue;
      const at = line.indexOf("=");
      if (at < 1) { setStatus(`environment line ${JSON.stringify(line)}: expected KEY=VALUE`, true); return; }
      body.env[line.slice(0, at).trim()] = line.slice(at + 1);
    }
  }
  act("clone into " + queue, async () => {
    const clone = await (await api(`/tasks/${state.selected}/clone`, { method: "POST", body })).json();
    selectTask(clone.id);
  });
});
document.getElementById("tp-close").addEventListener("click", () => {
  state.selected = null;
  state.logTask = null;
  state.logGen += 1;
  clearTimeout(state.logTimer);
  document.getElementById("task-panel").hidden = true;
});

setInterval(() => {
  if (document.hidden) return;
  if (state.view === "overview") refresh();
}, POLL_MS);
setInterval(() => {
  if (!document.hidden && state.view === "report") refreshReport();
}, REPORT_POLL_MS);

const linked = /^#task=([0-9a-f]{4,32})$/.exec(location.hash);
refresh().then(() => { if (linked) selectTask(linked[1]); });
