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
// The samples' roll-up interval (fleet/metrics/storage.py ROLLUP_S): the report's
// utilization chart draws one point per roll-up interval, or per a whole number of
// them when the window would need more than CHART_POINTS points.
const ROLLUP_S = 60;
const CHART_POINTS = 1500;
const WINDOW_S = { "1h": 3600, "24h": 86400, "7d": 7 * 86400, "30d": 30 * 86400 };
// Times for people: the browser's local time, with its zone named (the project's convention).
const STAMP = new Intl.DateTimeFormat(undefined, {
  month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit", timeZoneName: "short",
});
const STAMP_FULL = new Intl.DateTimeFormat(undefined, {
  year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit", timeZoneName: "short",
});
const CLOCK = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit", second: "2-digit", timeZoneName: "short" });
// A task's log lines carry their arrival time in UTC (`2026-11-29T23:27:30.260Z `): shown in
// local time, with the zone named once above the log.
const LOG_TIME = new Intl.DateTimeFormat(undefined, {
  month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit", fractionalSecondDigits: 3, hourCycle: "h23",
});
const LOG_STAMP = /^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?Z) /gm;
const ZONE = new Intl.DateTimeFormat(undefined, { timeZoneName: "short" }).formatToParts(new Date())
  .find((part) => part.type === "timeZoneName").value;

const state = {
  loginRefused: false, // the last login link was refused (used, expired or wrong)
  view: "overview",
  queues: [],
  selected: null, // task id shown in the panel
  logOffset: 0,
  logRest: "", // the end of the log after its last newline: shown once the line is whole
  logTask: null,
  logTimer: null,
  logGen: 0, // bumped whenever a new log poll starts; older polls stop
  queueWaits: {}, // queue -> {p50, p95} from the 24 h report
  waitsAt: 0,
  expanded: new Set(), // array ids shown with their tasks
  arrays: {}, // array id -> GET /arrays/{id}
  arrayTasks: {}, // array id -> its tasks, while expanded
  lastTasks: null,
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
  // The session cookie (HttpOnly, SameSite=Strict) authenticates: no token in this page.
  const headers = Object.assign({}, options.headers || {});
  if (options.body !== undefined && typeof options.body !== "string") {
    headers["Content-Type"] = "application/json";
    options = Object.assign({}, options, { body: JSON.stringify(options.body) });
  }
  const answer = await fetch(API + path, Object.assign({}, options, { headers }));
  if (answer.status === 401) {
    document.getElementById("login-bar").hidden = false;
    throw new Unauthorized(state.loginRefused
      ? "this login link is used or expired: run `fleetctl page` for a new one"
      : "not logged in: run `fleetctl page` and open the link it prints");
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

// A time for people: local, with the zone ("Nov 29, 11:30:05 PM GMT+1"); `full` adds the year.
function when(iso, full = false) {
  return iso ? (full ? STAMP_FULL : STAMP).format(new Date(iso)) : "";
}

function clock() {
  return CLOCK.format(new Date());
}

// A cell for a time: the short form, the full one on hover; the ISO value for scripts and tests.
function timeCell(iso) {
  return iso ? h("time", { datetime: iso, title: when(iso, true) }, when(iso)) : "";
}

// Header names as data-label on each cell: narrow screens show a row as labelled lines (style.css).
function labelCells(table) {
  const names = [...table.tHead.rows[0].cells].map((th) => th.textContent);
  for (const row of table.tBodies[0].rows) {
    [...row.cells].forEach((td, i) => { td.dataset.label = td.colSpan > 1 ? "" : names[i] || ""; });
  }
}

// Task ids as links, with a separator between them.
function taskLinks(ids) {
  return ids.flatMap((id, i) => [
    i ? h("span", { class: "sep" }, ", ") : null,
    h("a", { href: "#task=" + id, onclick: (e) => { e.preventDefault(); selectTask(id); } }, id.slice(0, 12)),
  ]);
}

// A question in the page's own dialog: resolves true for the confirming button only
// (Cancel, Escape and closing it answer no).
function confirmAction(text, yes) {
  const dialog = document.getElementById("confirm");
  document.getElementById("confirm-text").textContent = text;
  document.getElementById("confirm-yes").textContent = yes;
  dialog.returnValue = "";
  dialog.showModal();
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "yes"), { once: true });
  });
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

// Series of points `step` seconds apart: a line through consecutive points, broken
// where samples are missing; each point is a vertex of the path (and a dot when there are few).
function lineChart(series, { width = 720, height = 180, max = 100, unit = "%", step = ROLLUP_S, kind = "" } = {}) {
  const pad = { l: 40, r: 10, t: 10, b: 22 };
  const el = svg("svg", { width, height, viewBox: `0 0 ${width} ${height}`, class: "linechart", "data-kind": kind, "data-step": step });
  const all = series.flatMap((s) => s.t);
  if (!all.length) {
    const empty = svg("text", { x: width / 2, y: height / 2, "text-anchor": "middle", class: "axis" });
    empty.textContent = "no samples in this window";
    el.append(empty);
    return h("div", {}, el);
  }
  const t0 = Math.min(...all);
  const t1 = Math.max(...all, t0 + step);
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
    label.textContent = (width < 500 ? CLOCK : STAMP).format(new Date(t * 1000));
    el.append(label);
  }
  series.forEach((s, k) => {
    let d = "";
    let last = null;
    const dots = s.t.length <= 180;
    s.t.forEach((t, i) => {
      const v = s.v[i];
      if (v === null) { last = null; return; }
      d += (last !== null && t - last <= step ? "L" : "M") + x(t).toFixed(1) + " " + y(v).toFixed(1) + " ";
      last = t;
      if (dots) {
        const dot = svg("circle", { cx: x(t).toFixed(1), cy: y(v).toFixed(1), r: 2.5, class: "dot c" + (k % 6), "data-t": t });
        const tip = svg("title", {});
        tip.textContent = `${s.name}: ${num(v, 0, unit)} at ${STAMP.format(new Date(t * 1000))}`;
        dot.append(tip);
        el.append(dot);
      }
    });
    el.append(svg("path", { d: d.trim(), class: "line c" + (k % 6), "data-series": s.name }));
  });
  const legend = h("div", { class: "legend" }, series.map((s, k) => h("span", { class: "key c" + (k % 6) }, s.name)));
  return h("div", {}, el, legend);
}

// Charts are drawn at the width they get (720 px at most), so their text stays readable on a phone.
function chartWidth() {
  return Math.round(Math.max(300, Math.min(720, document.getElementById("report-summary").clientWidth || 720)));
}

function hoursChart(rows, width = 720) {
  const bar = 18;
  const labelW = width < 500 ? 110 : 160;
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
// Workers are grouped by host (many hosts share one store): a heading row per host (every
// registered host, and any other host a worker names), then its workers, in name order.
function byHost(workers, hosts) {
  const groups = new Map();
  const order = (a, b) => a.localeCompare(b, undefined, { numeric: true });
  const names = [...new Set([...hosts.map((x) => x.name), ...workers.map((w) => w.host)])].sort(order);
  for (const name of names) groups.set(name, []);
  for (const w of [...workers].sort((a, b) => order(a.id, b.id))) groups.get(w.host).push(w);
  return groups;
}

// A host's heading: its state (up, lost, left) and lease age from the host registry, and
// its workers' count, how many are busy, and its GPUs (the registry's: what the host has;
// else those its workers hold).
function hostRow(name, members, host) {
  const live = members.filter((w) => w.state !== "dead");
  const busy = live.filter((w) => w.state === "busy").length;
  const gpus = host ? host.gpus.length : new Set(live.flatMap((w) => w.gpus.map(String))).size;
  const parts = [`${live.length} worker${live.length === 1 ? "" : "s"}`, `${busy} busy`, gpus ? `${gpus} GPU${gpus === 1 ? "" : "s"}` : "CPU only"];
  let lease = null;
  if (host && host.state !== "left") {
    lease = h("span", { class: "lease", dataLeaseAge: host.lease_age_s, title: `the lease lasts ${host.lease_seconds} s; renewed ${when(host.renewed_at, true)}` },
      `${host.state === "lost" ? "lease expired: " : ""}lease renewed ${duration(host.lease_age_s)} ago`);
  }
  return h("tr", { class: "host", dataHost: name, dataState: host ? host.state : null },
    h("td", { colSpan: 7 },
      h("span", { class: "hostname" }, name), " ",
      host ? badge(host.state) : null, " ",
      h("span", { class: "muted hostinfo" }, parts.join(" · "), lease ? " · " : "", lease)));
}

function renderWorkers(workers, sparks, hosts) {
  const body = document.querySelector("#workers tbody");
  const registry = Object.fromEntries(hosts.map((x) => [x.name, x]));
  const rows = [...byHost(workers, hosts)].flatMap(([name, members]) => [hostRow(name, members, registry[name]), ...members.flatMap((w) => workerRows(w, sparks))]);
  body.replaceChildren(...(rows.length ? rows : [h("tr", {}, h("td", { colSpan: 7, class: "muted" }, "no workers: start one with fleetctl up"))]));
  labelCells(body.closest("table"));
}

function workerRows(w, sparks) {
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
  const row = h("tr", { dataWorker: w.id, dataHost: w.host },
    h("td", {}, w.id),
    h("td", {}, w.cpu_only ? "cpu" : w.gpus.join(",")),
    h("td", {}, w.queues.join(", ")),
    h("td", { class: "state" }, badge(w.state), " ", h("span", { class: "muted reason" }, w.state_reason)),
    h("td", { class: "task" }, taskLinks(w.tasks)),
    h("td", { title }, spark || h("span", { class: "muted" }, "–")),
    h("td", { class: "force" }, forceButton("on", "on"), forceButton("off", "off"), clear),
  );
  // a pool (or services worker) runs each task in its own per-task worker: one row each, under it
  const children = [...((w.pool && w.pool.children) || [])].sort((a, b) => a.worker.localeCompare(b.worker, undefined, { numeric: true }));
  return [row, ...children.map((c) => h("tr", { dataWorker: c.worker, dataParent: w.id, class: "child" },
    h("td", {}, h("span", { class: "nest", "aria-hidden": "true" }, "└ "), c.worker),
    h("td", {}, c.gpus.length ? c.gpus.join(",") : "cpu"),
    h("td", {}, c.queue || ""),
    h("td", { class: "state" }, badge("busy"), " ", h("span", { class: "muted reason" }, "task worker of " + w.id)),
    h("td", { class: "task" }, taskLinks([c.task])),
    h("td", {}, h("span", { class: "muted" }, "–")),
    h("td", {}),
  ))];
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
  labelCells(body.closest("table"));
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
  labelCells(table);
}

// An array (a sweep: `fleetctl submit --array/--grid`) shows as one row with its
// counts; the row's button expands it to its tasks (fetched for that array).
function renderTasks(tasks) {
  state.lastTasks = tasks;
  const rows = [];
  const seen = new Set();
  for (const t of tasks) {
    if (!t.array_id) {
      rows.push(taskRow(t, ""));
      continue;
    }
    if (seen.has(t.array_id)) continue;
    seen.add(t.array_id);
    const members = tasks.filter((m) => m.array_id === t.array_id).sort((a, b) => a.array_index - b.array_index);
    rows.push(arrayRow(t.array_id, members));
    if (state.expanded.has(t.array_id)) {
      rows.push(...(state.arrayTasks[t.array_id] || members).map((m) => taskRow(m, "member")));
    }
  }
  document.querySelector("#tasks tbody").replaceChildren(...rows);
  labelCells(document.getElementById("tasks"));
}

function taskRow(t, kind) {
  const running = t.status === "in_progress" || t.status === "queued";
  const runtime = t.started_at ? ((t.finished_at ? Date.parse(t.finished_at) : Date.now()) - Date.parse(t.started_at)) / 1000 : null;
  return h("tr", { dataTask: t.id, class: [kind, t.id === state.selected ? "selected" : ""].join(" ").trim() },
    h("td", {}, taskLinks([t.id])),
    h("td", { class: "name", title: t.name }, t.name),
    h("td", {}, t.queue || ""),
    h("td", {}, badge(t.status)),
    h("td", {}, t.worker || ""),
    h("td", { class: "when" }, timeCell(t.started_at)),
    h("td", {}, runtime === null ? "" : duration(runtime)),
    h("td", {}, running ? h("button", { type: "button", dataAction: "abort", onclick: () => abortTask(t.id, t.name) }, "abort") : null),
  );
}

function arrayRow(id, members) {
  const open = state.expanded.has(id);
  const info = state.arrays[id];
  const c = info ? info.counts : null;
  const summary = c
    ? `${c.completed}/${info.size} done · ${c.failed + c.stopped} failed · ${c.in_progress} running · ${c.queued + c.created} queued`
    : `${members.length} tasks`;
  const active = c ? c.in_progress + c.queued > 0 : members.some((m) => m.status === "in_progress" || m.status === "queued");
  const toggle = h("button", { type: "button", class: "expand", dataAction: "expand", "aria-expanded": String(open), onclick: () => toggleArray(id) },
    (open ? "▾ " : "▸ ") + id.slice(0, 10));
  return h("tr", { dataArray: id, class: "array" + (open ? " open" : "") },
    h("td", {}, toggle),
    h("td", { class: "name", title: members[0].name }, members[0].name + (members.length > 1 ? " …" : "")),
    h("td", {}, members[0].queue || ""),
    h("td", { colSpan: 4, class: "counts" }, summary),
    h("td", {}, active ? h("button", { type: "button", dataAction: "abort-array", onclick: () => abortArray(id, info) }, "abort") : null),
  );
}

async function toggleArray(id) {
  if (state.expanded.has(id)) state.expanded.delete(id);
  else {
    state.expanded.add(id);
    await loadArray(id);
  }
  renderTasks(state.lastTasks || []);
}

async function loadArray(id) {
  const [info, list] = await Promise.all([getJSON(`/arrays/${id}`), getJSON(`/tasks?array=${id}&limit=1000`)]);
  state.arrays[id] = info;
  state.arrayTasks[id] = list.tasks;
}

async function abortArray(id, info) {
  const what = `array ${id}${info ? " (" + info.size + " tasks)" : ""}`;
  const yes = await confirmAction(`Abort ${what}? Its queued tasks stop at once, its running ones get SIGTERM (then SIGKILL).`, "Abort array");
  if (!yes) {
    setStatus(`abort of ${what}: cancelled`);
    return;
  }
  await act("abort " + id, () => api(`/arrays/${id}/abort`, { method: "POST", body: { reason: "aborted from the web page" } }));
}

// Abort only after the person confirms in the page's dialog.
async function abortTask(id, name) {
  const what = `task ${id.slice(0, 12)}${name ? " (" + name + ")" : ""}`;
  const yes = await confirmAction(`Abort ${what}? Its processes get SIGTERM (then SIGKILL) and it ends stopped.`, "Abort task");
  if (!yes) {
    setStatus(`abort of ${what}: cancelled`);
    return;
  }
  await act("abort " + id.slice(0, 12), () => api(`/tasks/${id}/abort`, { method: "POST", body: { reason: "aborted from the web page" } }));
}

async function refresh() {
  if (state.view !== "overview") return;
  try {
    const [workers, queues, tasks, current, sparks, gpus, hosts] = await Promise.all([
      getJSON("/workers"),
      getJSON("/queues"),
      getJSON("/tasks?limit=20"),
      getJSON("/metrics/current"),
      getJSON("/metrics?kind=worker&since=10m"),
      getJSON("/gpus"),
      getJSON("/hosts"),
    ]);
    document.getElementById("login-bar").hidden = true;
    state.queues = queues.queues;
    const bySeries = Object.fromEntries(sparks.series.map((s) => [s.id, s]));
    renderWorkers(workers.workers, bySeries, hosts.hosts);
    renderGpus(gpus.gpus);
    renderQueues(queues.queues, current.queues_waiting_since || {});
    const arrayIds = [...new Set(tasks.tasks.map((t) => t.array_id).filter(Boolean))];
    await Promise.all(arrayIds.map((id) => (state.expanded.has(id) ? loadArray(id) : getJSON(`/arrays/${id}`).then((a) => { state.arrays[id] = a; }))));
    renderTasks(tasks.tasks);
    renderQueueChoices();
    if (state.selected) await refreshPanel();
    const s = current.sampler;
    document.getElementById("host").textContent =
      (current.snapshot ? current.snapshot.host.host + " · " : "") + (current.nvml ? "NVML on" : "no NVML: logical GPUs") +
      ` · sampler ${s.wall_ms_mean} ms/tick`;
    setStatus("updated " + clock());
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
    state.logRest = "";
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
    state.selectedName = task.name;
    if (state.queueFor !== task.id) { // the clone goes to the task's own queue unless the person picks another
      state.queueFor = task.id;
      const select = document.getElementById("tp-queue");
      if ([...select.options].some((o) => o.value === task.queue)) select.value = task.queue;
    }
    const figures = [
      ["runtime", duration(fig.runtime_s)],
      ["peak RSS", num(fig.peak_rss_mb, 0, " MB")],
      ["mean CPU", num(fig.mean_cpu_percent, 0, "%")],
      ["peak GPU memory", fig.nvml ? num(fig.peak_gpu_mem_mb, 0, " MB") : "– (no NVML)"],
      ["worker", task.worker || "–"],
      ["GPUs", task.gpus.join(",") || "–"],
      ["GPU UUIDs", (task.gpu_uuids || []).join(",") || "–"],
      ["attempt", String(task.attempt)],
      ["created", when(task.created_at, true) || "–"],
      ["started", when(task.started_at, true) || "–"],
      ["finished", when(task.finished_at, true) || "–"],
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
    let lines = state.logRest + text;
    const cut = ended ? lines.length : lines.lastIndexOf("\n") + 1;
    state.logRest = lines.slice(cut);
    lines = lines.slice(0, cut);
    if (lines) {
      const log = document.getElementById("log");
      const atBottom = log.scrollTop + log.clientHeight >= log.scrollHeight - 8;
      log.append(document.createTextNode(lines.replace(LOG_STAMP, (line, at) => LOG_TIME.format(new Date(at)) + " ")));
      if (atBottom) log.scrollTop = log.scrollHeight;
    }
    if (ended && !text) return; // the whole log is here
  } catch (err) {
    setStatus(err.message, true);
  }
  if (gen === state.logGen) state.logTimer = setTimeout(() => pollLog(gen), ended ? 0 : LOG_POLL_MS);
}

// -- the report -----------------------------------------------------------------
// The report's utilization chart: GPU utilization where the manager has NVML, else the
// host's CPU, said so in the chart's title; one point per roll-up interval (see ROLLUP_S).
function chartStep(since) {
  return ROLLUP_S * Math.max(1, Math.ceil((WINDOW_S[since] || 86400) / ROLLUP_S / CHART_POINTS));
}

function utilTitle(gpu, step) {
  const every = step === ROLLUP_S ? "one point per minute" : `one point per ${step / 60} minutes`;
  return gpu
    ? `GPU utilization over the window (%, ${every})`
    : `Host CPU over the window (%, ${every}) — no NVML here, so no GPU utilization`;
}

function reportRows(rows) {
  // a pool's per-task workers (by worker) follow it, indented
  return rows.flatMap((r) => [r, ...(r.children || [])]);
}

// The report's host choice: every host of the fleet, or one (the hosts that have had a worker).
function renderHostChoices(workers) {
  const select = document.getElementById("report-host");
  const hosts = [...new Set(workers.map((w) => w.host))].sort((a, b) => a.localeCompare(b, undefined, { numeric: true }));
  const chosen = select.value;
  select.replaceChildren(h("option", { value: "" }, "every host"), ...hosts.map((name) => h("option", { value: name }, name)));
  select.value = hosts.includes(chosen) ? chosen : "";
}

async function refreshReport() {
  const since = document.getElementById("report-since").value;
  const by = document.getElementById("report-by").value;
  const step = chartStep(since);
  try {
    renderHostChoices((await getJSON("/workers?all=true")).workers);
    const chosen = document.getElementById("report-host").value;
    const host = chosen ? "&host=" + encodeURIComponent(chosen) : "";
    const [report, current] = await Promise.all([getJSON(`/report?since=${since}&by=${by}${host}`), getJSON("/metrics/current")]);
    const gpu = Boolean(current.nvml);
    const util = await getJSON(`/metrics?kind=${gpu ? "gpu" : "host"}&since=${since}&step=${step}${host}`);
    const t = report.totals;
    const summary = [
      ["window", when(report.since, true) + " – " + when(report.until, true)],
      ["hosts", report.host || "every host"],
      ["GPU-hours busy / idle / paused", `${num(t.busy_gpu_hours, 2)} / ${num(t.idle_gpu_hours, 2)} / ${num(t.paused_gpu_hours, 2)}`],
      ["task-hours (CPU-only tasks too)", num(t.task_hours, 2)],
      ["tasks completed / failed / stopped", `${t.completed} / ${t.failed} / ${t.stopped}`],
      ["success rate", t.success_rate === null ? "–" : (t.success_rate * 100).toFixed(1) + "%"],
      ["queue wait p50 / p95", duration(t.wait_p50_s) + " / " + duration(t.wait_p95_s)],
      ["mean utilization of busy GPUs", num(t.busy_gpu_util_percent, 0, "%")],
    ];
    document.getElementById("report-summary").replaceChildren(h("dl", {}, summary.flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v)])));
    const width = chartWidth();
    document.getElementById("chart-hours").replaceChildren(hoursChart([...report.rows, t], width));
    const lines = gpu
      ? util.series.map((s) => ({ name: `GPU ${s.labels.host}:${s.id} utilization`, t: s.t, v: s.values.util_percent }))
      : util.series.map((s) => ({ name: `host CPU (${s.id})`, t: s.t, v: s.values.cpu_percent }));
    document.getElementById("util-title").textContent = utilTitle(gpu, util.step);
    document.getElementById("chart-util").replaceChildren(lineChart(lines, { width, step: util.step, kind: gpu ? "gpu-util" : "host-cpu" }));
    const cells = (r) => [r.key, num(r.busy_gpu_hours, 2), num(r.idle_gpu_hours, 2), num(r.paused_gpu_hours, 2), num(r.task_hours, 2), r.completed, r.failed, r.stopped,
      r.success_rate === null ? "–" : (r.success_rate * 100).toFixed(1) + "%", duration(r.wait_p50_s), duration(r.wait_p95_s), num(r.busy_gpu_util_percent, 0, "%")];
    const table = document.getElementById("report-table");
    table.tHead.rows[0].cells[0].textContent = by;
    table.tBodies[0].replaceChildren(...[...reportRows(report.rows), t].map((r) => {
      const row = h("tr", { class: r.key === "total" && r === t ? "total" : r.parent ? "child" : "", dataKey: r.key, dataParent: r.parent || null },
        cells(r).map((c) => h("td", {}, c)));
      if (r.parent) row.cells[0].prepend(h("span", { class: "nest", "aria-hidden": "true" }, "└ "));
      return row;
    }));
    labelCells(table);
    document.getElementById("report-notes").textContent = report.notes.join(" ");
    setStatus("report updated " + clock());
  } catch (err) {
    setStatus(err.message, true);
  }
}

// -- wiring -----------------------------------------------------------------------
document.getElementById("log-zone").textContent = `Log times: this browser's local time (${ZONE}).`;
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
document.getElementById("tp-abort").addEventListener("click", () => state.selected && abortTask(state.selected, state.selectedName));
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
let resized = null;
window.addEventListener("resize", () => { // charts are drawn for the width they get
  clearTimeout(resized);
  resized = setTimeout(() => { if (state.view === "report") refreshReport(); }, 300);
});

// A one-time login link (`fleetctl page`) carries its code in the fragment, which the
// browser never sends to a server; trade it for the session cookie, then drop it from
// the address bar and the history so it is not kept or shared.
async function login() {
  const code = /^#login=([A-Za-z0-9_-]{1,256})$/.exec(location.hash);
  if (!code) return;
  history.replaceState(null, "", location.pathname + location.search);
  const answer = await fetch(API + "/login", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ code: code[1] }),
  });
  state.loginRefused = !answer.ok;
}

window.addEventListener("hashchange", () => { if (location.hash.startsWith("#login=")) login().finally(refresh); });

const linked = /^#task=([0-9a-f]{4,32})$/.exec(location.hash);
login().finally(() => refresh().then(() => { if (linked) selectTask(linked[1]); }));
