// taskgate's operator dashboard: queues, tasks, dead letters, workers and RPC latency, live
// over /admin/stream. Plain browser JavaScript (an ES module), no build step. Server data only
// ever goes into the DOM as text. The API it reads is gateway/admin/ (admins only).

import { $, api, showError } from "./http.js";
import { LiveSource } from "./live.js";
import { startSession } from "./session.js";
import { drawChart } from "./chart.js";

const WINDOW_S = 15 * 60; // what the charts show at most
const MIN_WINDOW_S = 60; // ... and at least, while less is known (a gateway just started)
const TASK_PAGE = 50;
const MAX_TASKS = 200; // rows kept while events add more
const TERMINAL_STATES = new Set(["succeeded", "failed", "dead", "cancelled"]);
const RETRYABLE_STATES = new Set(["failed", "dead", "cancelled"]);
const TIMELINE_REFRESH_MS = 300; // several events of one task in a burst: one re-read
// The metrics the charts draw, by the sample field they read (see sample()).
const CHARTS = ["queued", "in_flight", "oldest", "done"];

const enc = encodeURIComponent;

// ---------------------------------------------------------------------------------------------
// Formatting

function clock(t) {
  return t ? new Date(t * 1000).toLocaleTimeString() : "";
}

function ago(t, now = Date.now() / 1000) {
  return duration(Math.max(0, now - t));
}

function duration(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  if (seconds < 60) return `${seconds.toFixed(seconds < 10 ? 1 : 0)} s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ${Math.round(seconds % 60)} s`;
  return `${Math.floor(seconds / 3600)} h ${Math.round((seconds % 3600) / 60)} min`;
}

function ms(value) {
  return value === null || value === undefined ? "–" : `${value.toFixed(value < 10 ? 1 : 0)} ms`;
}

function rate(value) {
  return value ? value.toFixed(value < 10 ? 1 : 0) : "0";
}

function el(tag, { text, cls, data = {}, attrs = {} } = {}, children = []) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (cls) node.className = cls;
  for (const [key, value] of Object.entries(data)) node.dataset[key] = value;
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  node.append(...children);
  return node;
}

function cell(text, cls) {
  return el("td", { text, cls });
}

function stateBadge(state) {
  return el("span", { text: state, cls: "state", data: { state } });
}

function taskButton(taskId) {
  const button = el("button", { text: taskId, cls: "link", attrs: { type: "button" } });
  button.dataset.taskId = taskId;
  button.addEventListener("click", () => openTimeline(taskId));
  return button;
}

/** An endpoint another part of the work has not shipped yet: that section says so. */
function unavailable(error) {
  return error.status === 404 || error.status === 405;
}

// ---------------------------------------------------------------------------------------------
// Overview: queues, workers, RPC; charts from history plus each live sample

const overview = { last: null, deadTotal: null };
// kind -> [{at, queued, in_flight, oldest, done, failed}], oldest first, per-minute rates.
let series = new Map();

function sample(series, kind, point) {
  if (!series.has(kind)) series.set(kind, []);
  series.get(kind).push(point);
}

async function loadHistory() {
  try {
    const history = await api("GET", `/admin/api/history?minutes=${WINDOW_S / 60}`);
    const fresh = new Map();
    const perMin = 60 / (history.step_s || 60);
    let last = 0;
    for (const point of history.points) {
      last = Math.max(last, point.at);
      for (const [kind, k] of Object.entries(point.kinds)) {
        sample(fresh, kind, {
          at: point.at, queued: k.queued, in_flight: k.in_flight, oldest: null,
          done: k.done * perMin, failed: k.failed * perMin,
        });
      }
    }
    // Keep the live samples the history does not cover yet (and the oldest ages, which
    // only the live samples carry).
    for (const [kind, points] of series) {
      for (const point of points) if (point.at > last) sample(fresh, kind, point);
    }
    series = fresh;
    $("charts").dataset.history = "loaded";
  } catch (error) {
    $("charts").dataset.history = unavailable(error) ? "unavailable" : "error";
  }
  drawCharts();
}

function receiveOverview(data) {
  overview.last = data;
  for (const k of data.kinds) {
    sample(series, k.kind, {
      at: data.at, queued: k.queued + k.queued_high, in_flight: k.in_flight,
      oldest: k.oldest_queued_s, done: k.done_per_min, failed: k.failed_per_min,
    });
  }
  const cutoff = data.at - WINDOW_S;
  for (const points of series.values()) {
    while (points.length && points[0].at < cutoff) points.shift();
  }
  drawOverview(data);
  drawCharts();
  const deadTotal = data.kinds.reduce((sum, k) => sum + k.dead, 0);
  if (deadTotal !== overview.deadTotal) {
    overview.deadTotal = deadTotal;
    loadDeadQueues();
  }
}

async function loadOverview() {
  try {
    receiveOverview(await api("GET", "/admin/api/overview"));
    $("overview-error").textContent = "";
  } catch (error) {
    $("overview-error").textContent = unavailable(error)
      ? "The live overview is unavailable on this gateway."
      : `Could not read the overview: ${error.message}`;
  }
}

function drawOverview(data) {
  $("overview-at").textContent = `at ${clock(data.at)}`;
  const kinds = [...data.kinds].sort((a, b) => a.kind.localeCompare(b.kind));
  $("kind-rows").replaceChildren(...kinds.map((k) => {
    const row = el("tr", { data: { testid: "kind-row", kind: k.kind } });
    const name = el("th", { attrs: { scope: "row" } }, [swatch(k.kind), k.kind]);
    row.append(
      name, cell(k.queued, "num"), cell(k.queued_high, "num"), cell(k.in_flight, "num"),
      cell(duration(k.oldest_queued_s), "num"), cell(k.dead, k.dead ? "num bad" : "num"),
      cell(rate(k.done_per_min), "num"), cell(rate(k.failed_per_min), k.failed_per_min ? "num bad" : "num"),
    );
    return row;
  }));
  $("kinds-empty").hidden = kinds.length > 0;
  fillKindFilter(kinds.map((k) => k.kind));
  drawNodes(data);
  drawRpcMethods(data.rpc_methods);
}

// One colour per kind, the same in every chart and the table.
const PALETTE = 8;
const colours = new Map();

function colourOf(kind) {
  if (!colours.has(kind)) colours.set(kind, colours.size % PALETTE);
  return colours.get(kind);
}

function swatch(kind) {
  return el("span", { cls: `swatch c${colourOf(kind)}`, attrs: { "aria-hidden": "true" } });
}

function drawCharts() {
  const now = overview.last?.at ?? Date.now() / 1000;
  const kinds = [...series.keys()].sort();
  const first = Math.min(now, ...[...series.values()].map((points) => points[0]?.at ?? now));
  const from = Math.max(now - WINDOW_S, Math.min(first, now - MIN_WINDOW_S));
  for (const metric of CHARTS) {
    const figure = $("charts").querySelector(`[data-metric="${metric}"]`);
    const lines = [];
    for (const kind of kinds) {
      const points = series.get(kind).filter((p) => p[metric] !== null && p[metric] !== undefined);
      lines.push({ cls: `c${colourOf(kind)}`, points: points.map((p) => [p.at, p[metric]]) });
      if (metric === "done") {
        lines.push({
          cls: `c${colourOf(kind)} dashed`,
          points: series.get(kind).map((p) => [p.at, p.failed ?? 0]),
        });
      }
    }
    drawChart(figure.querySelector("svg"), { lines, from, to: now });
  }
  $("legend").replaceChildren(...kinds.map((kind) => el("li", {}, [swatch(kind), kind])));
}

function fillKindFilter(kinds) {
  const select = $("filter-kind");
  const known = new Set([...select.options].map((o) => o.value));
  for (const kind of kinds) {
    if (!known.has(kind)) select.append(el("option", { text: kind, attrs: { value: kind } }));
  }
}

function drawNodes(data) {
  const now = data.at;
  $("worker-list").replaceChildren(...data.workers.map((w) => {
    const running = el("ul", { cls: "running" }, w.running.map((r) => el("li", {}, [
      taskButton(r.task_id), ` ${r.kind}, ${ago(r.since, now)}`,
    ])));
    return el("li", { data: { testid: "worker" } }, [
      el("strong", { text: w.name }),
      el("span", { cls: "muted", text: ` ${w.host} pid ${w.pid}, up ${ago(w.started_at, now)}, seen ${ago(w.seen_at, now)} ago` }),
      el("div", { cls: "small", text: `kinds: ${w.kinds.join(", ") || "–"}` }),
      w.running.length ? running : el("div", { cls: "small muted", text: "idle" }),
    ]);
  }));
  $("workers-empty").hidden = data.workers.length > 0;
  $("rpc-server-list").replaceChildren(...data.rpc_servers.map((s) => el("li", { data: { testid: "rpc-server" } }, [
    el("strong", { text: s.name }),
    el("span", { cls: "muted", text: ` ${s.host} pid ${s.pid}, up ${ago(s.started_at, now)}, seen ${ago(s.seen_at, now)} ago` }),
    el("div", { cls: "small", text: `methods: ${s.methods.join(", ") || "–"}` }),
  ])));
  $("rpc-servers-empty").hidden = data.rpc_servers.length > 0;
}

function drawRpcMethods(methods) {
  $("rpc-rows").replaceChildren(...methods.map((m) => {
    const row = el("tr", { data: { testid: "rpc-method" } });
    row.append(
      el("th", { text: m.method, attrs: { scope: "row" } }), cell(m.calls, "num"),
      cell(m.errors, m.errors ? "num bad" : "num"), cell(ms(m.p50_ms), "num"), cell(ms(m.p99_ms), "num"),
    );
    return row;
  }));
  $("rpc-empty").hidden = methods.length > 0;
}

// ---------------------------------------------------------------------------------------------
// Tasks: the list (filters, newest first) and one task's timeline

const tasks = { rows: new Map(), cursor: null, drawPending: false };

function filters() {
  return { state: $("filter-state").value, kind: $("filter-kind").value };
}

function matches(task) {
  const { state, kind } = filters();
  return (!state || task.state === state) && (!kind || task.kind === kind);
}

async function loadTasks({ more = false } = {}) {
  const { state, kind } = filters();
  const query = new URLSearchParams({ limit: String(TASK_PAGE) });
  if (state) query.set("state", state);
  if (kind) query.set("kind", kind);
  if (more && tasks.cursor) query.set("cursor", tasks.cursor);
  try {
    const page = await api("GET", `/tasks?${query}`);
    if (!more) tasks.rows.clear();
    for (const task of page.tasks) tasks.rows.set(task.task_id, task);
    tasks.cursor = page.next_cursor;
    $("tasks-error").textContent = "";
  } catch (error) {
    showError($("tasks-error"), error);
  }
  drawTasks();
}

function receiveTask(task) {
  if (timeline.taskId === task.task_id) timelineChanged(task);
  if (!matches(task)) {
    tasks.rows.delete(task.task_id); // it left the filtered state
  } else {
    tasks.rows.set(task.task_id, task);
  }
  // A busy system sends hundreds of task events a second: redraw the list once per frame.
  if (!tasks.drawPending) {
    tasks.drawPending = true;
    requestAnimationFrame(() => {
      tasks.drawPending = false;
      drawTasks();
    });
  }
}

function drawTasks() {
  const sorted = [...tasks.rows.values()].sort((a, b) => b.created_at - a.created_at);
  for (const task of sorted.slice(MAX_TASKS)) tasks.rows.delete(task.task_id);
  $("task-rows").replaceChildren(...sorted.slice(0, MAX_TASKS).map((task) => {
    const row = el("tr", { data: { testid: "task-row", taskId: task.task_id, state: task.state } });
    const id = el("td", {}, [taskButton(task.task_id)]);
    const state = el("td", {}, [stateBadge(task.state)]);
    if (task.state === "running" && typeof task.percent === "number") {
      state.append(el("span", { cls: "muted small", text: ` ${Math.round(task.percent)} %` }));
    }
    row.append(id, cell(task.kind), state, cell(task.attempt ?? "", "num"), cell(clock(task.updated_at), "time"));
    return row;
  }));
  $("tasks-empty").hidden = tasks.rows.size > 0;
  $("tasks-more").hidden = !tasks.cursor;
}

const timeline = { taskId: null, task: null, timer: null };

// The task on show is in the address (#task=<id>): a link to it can be passed on.
const TASK_HASH = "#task=";

function taskInAddress() {
  return location.hash.startsWith(TASK_HASH)
    ? decodeURIComponent(location.hash.slice(TASK_HASH.length))
    : null;
}

async function openTimeline(taskId) {
  timeline.taskId = taskId;
  history.replaceState(null, "", `${TASK_HASH}${enc(taskId)}`);
  $("timeline").hidden = false;
  $("timeline-id").textContent = taskId;
  $("timeline-error").textContent = "";
  $("timeline-note").textContent = "";
  $("timeline-rows").replaceChildren();
  $("timeline").scrollIntoView({ block: "start" });
  await loadTimeline();
}

async function loadTimeline() {
  const taskId = timeline.taskId;
  if (!taskId) return;
  try {
    const answer = await api("GET", `/admin/api/tasks/${enc(taskId)}/timeline`);
    if (timeline.taskId !== taskId) return;
    drawTimeline(answer.task, answer.events);
  } catch (error) {
    if (timeline.taskId !== taskId) return;
    // Without the timeline endpoint, the task's summary is still worth showing.
    try {
      const task = await api("GET", `/tasks/${enc(taskId)}`);
      if (timeline.taskId !== taskId) return;
      drawTimeline(task, null);
      $("timeline-error").textContent = `Its events are unavailable: ${error.message}`;
    } catch (taskError) {
      drawTimeline(null, null);
      showError($("timeline-error"), taskError.status === 404 ? new Error(`No task ${taskId}.`) : taskError);
    }
  }
}

function drawTimeline(task, events) {
  timeline.task = task;
  $("timeline").dataset.state = task?.state ?? "";
  $("timeline-state").replaceChildren(...(task ? [stateBadge(task.state)] : []));
  $("timeline-summary").textContent = task
    ? `${task.kind}, created ${new Date(task.created_at * 1000).toLocaleString()}, attempt ${task.attempt ?? "–"}`
    : "";
  $("task-cancel").hidden = !task || TERMINAL_STATES.has(task.state);
  $("task-retry").hidden = !task || !RETRYABLE_STATES.has(task.state);
  if (events === null) return;
  $("timeline-rows").replaceChildren(...events.map((event) => {
    const row = el("tr", { data: { testid: "timeline-event", state: event.state } });
    row.append(
      cell(clock(event.timestamp), "time"), el("td", {}, [stateBadge(event.state)]),
      cell(event.attempt ?? "", "num"), cell(event.worker ?? ""), el("td", {}, eventDetail(event)),
    );
    return row;
  }));
}

function eventDetail(event) {
  const parts = [];
  if (typeof event.percent === "number" && event.state === "progress") parts.push(`${Math.round(event.percent)} %`);
  if (event.message) parts.push(event.message);
  if (event.retry_in_ms) parts.push(`retry in ${duration(event.retry_in_ms / 1000)}`);
  if (event.run_at) parts.push(`runs at ${new Date(event.run_at * 1000).toLocaleString()}`);
  const nodes = [parts.join(" · ")];
  if (event.error) nodes.push(el("div", { cls: "error", text: event.error }));
  if (event.result !== null && event.result !== undefined) {
    nodes.push(el("details", {}, [
      el("summary", { text: outputsSummary(event.result) }),
      el("pre", { text: JSON.stringify(event.result, null, 2) }),
    ]));
  }
  return nodes;
}

function outputsSummary(result) {
  const outputs = result?.outputs;
  return Array.isArray(outputs) ? `${outputs.length} outputs` : "result";
}

/** A task event for the task on show: redraw its state now, its events once the burst ends. */
function timelineChanged(task) {
  if (timeline.task) drawTimeline({ ...timeline.task, ...task }, null);
  clearTimeout(timeline.timer);
  timeline.timer = setTimeout(loadTimeline, TIMELINE_REFRESH_MS);
}

async function cancelTask() {
  const taskId = timeline.taskId;
  $("task-cancel").disabled = true;
  try {
    await api("DELETE", `/tasks/${enc(taskId)}`);
    $("timeline-note").textContent = "Cancel requested.";
    await loadTimeline();
  } catch (error) {
    showError($("timeline-error"), error);
  } finally {
    $("task-cancel").disabled = false;
  }
}

async function retryTask() {
  const taskId = timeline.taskId;
  $("task-retry").disabled = true;
  try {
    const answer = await api("POST", `/tasks/${enc(taskId)}/retry`, { json: {} });
    await openTimeline(answer.task_id);
    $("timeline-note").textContent = answer.task_id === taskId
      ? "Retried."
      : `Retry of ${taskId}.`;
  } catch (error) {
    showError($("timeline-error"), error);
  } finally {
    $("task-retry").disabled = false;
  }
}

function closeTimeline() {
  if (taskInAddress() !== null) history.replaceState(null, "", location.pathname);
  timeline.taskId = null;
  timeline.task = null;
  $("timeline").hidden = true;
}

function searchTask(event) {
  event.preventDefault();
  const taskId = $("task-search").value.trim();
  if (taskId) openTimeline(taskId);
}

// ---------------------------------------------------------------------------------------------
// Dead letters: queues and their counts, one queue's messages, replay and discard

const dead = { queue: null };

async function loadDeadQueues() {
  try {
    const answer = await api("GET", "/admin/api/dead");
    $("dead-error").textContent = "";
    const full = answer.queues.filter((q) => q.count > 0);
    const empty = answer.queues.filter((q) => q.count === 0);
    $("dead-queues").replaceChildren(...full.map(deadQueueItem));
    // The empty ones (one per kind, and the system's) stay out of the way, still reachable.
    $("dead-empty-queues").replaceChildren(...empty.map(deadQueueItem));
    $("dead-empty-summary").textContent = `${empty.length} empty queue${empty.length === 1 ? "" : "s"}`;
    $("dead-empty-list").hidden = empty.length === 0;
    $("dead-empty").hidden = full.length > 0;
    if (dead.queue) await loadDeadMessages();
  } catch (error) {
    $("dead-error").textContent = unavailable(error)
      ? "Dead letters are unavailable on this gateway."
      : `Could not read the dead letters: ${error.message}`;
  }
}

function deadQueueItem(q) {
  const show = el("button", { text: "Show", cls: "secondary", attrs: { type: "button" } });
  show.addEventListener("click", () => showDeadQueue(q.queue));
  return el("li", { data: { testid: "dead-queue", queue: q.queue } }, [
    el("code", { text: q.queue }), " ",
    el("strong", { text: q.count, data: { testid: "dead-count" }, cls: q.count ? "bad" : "" }), " ",
    show,
  ]);
}

async function showDeadQueue(queue) {
  dead.queue = queue;
  $("dead-view").hidden = false;
  $("dead-queue-name").textContent = queue;
  $("dead-note").textContent = "";
  await loadDeadMessages();
}

async function loadDeadMessages() {
  const queue = dead.queue;
  try {
    const answer = await api("GET", `/admin/api/dead/${enc(queue)}?limit=50`);
    if (dead.queue !== queue) return;
    $("dead-all").checked = false;
    $("dead-rows").replaceChildren(...answer.messages.map(deadRow));
    $("dead-view").dataset.count = String(answer.messages.length);
  } catch (error) {
    showError($("dead-note"), error);
  }
}

function deadRow(message) {
  const row = el("tr", { data: { testid: "dead-message", messageId: message.message_id } });
  const pick = el("input", { attrs: { type: "checkbox", "aria-label": `Select ${message.message_id}` } });
  pick.value = message.message_id;
  const body = el("details", {}, [
    el("summary", { text: message.from_queue ? `from ${message.from_queue}` : "message" }),
    el("pre", { text: message.body }),
    el("pre", { cls: "muted", text: JSON.stringify(message.headers, null, 2) }),
  ]);
  row.append(
    el("td", {}, [pick]), el("td", {}, message.task_id ? [taskButton(message.task_id)] : ["–"]),
    cell(message.attempt ?? "", "num"), cell(message.reason ?? "", "error"),
    cell(message.died_at ? clock(message.died_at) : "", "time"), el("td", {}, [body]),
  );
  return row;
}

function selectedDead() {
  return [...$("dead-rows").querySelectorAll("input[type=checkbox]:checked")].map((box) => box.value);
}

async function actOnDead(action) {
  const ids = selectedDead();
  if (!ids.length) {
    $("dead-note").textContent = "Select messages first.";
    return;
  }
  if (action === "discard" && !window.confirm(`Discard ${ids.length} message(s) for good?`)) return;
  const button = $(`dead-${action}`);
  button.disabled = true;
  try {
    const answer = await api("POST", `/admin/api/dead/${enc(dead.queue)}/${action}`, {
      json: { message_ids: ids },
    });
    const done = action === "replay" ? answer.replayed : answer.discarded;
    const missing = answer.missing.length ? `, ${answer.missing.length} gone already` : "";
    $("dead-note").textContent = `${action === "replay" ? "Replayed" : "Discarded"} ${done}${missing}.`;
    await loadDeadQueues();
  } catch (error) {
    showError($("dead-note"), error);
  } finally {
    button.disabled = false;
  }
}

function selectAllDead() {
  for (const box of $("dead-rows").querySelectorAll("input[type=checkbox]")) {
    box.checked = $("dead-all").checked;
  }
}

// ---------------------------------------------------------------------------------------------
// The stream, and what the page re-reads on each (re)connect

function setLive(state) {
  const badge = $("live");
  badge.dataset.state = state;
  badge.textContent = { open: "live", connecting: "reconnecting…", closed: "offline" }[state];
  // A reopened stream (after a gateway restart) may have missed events: re-read.
  if (state === "open" && streamOpened) refreshAll();
  if (state === "open") streamOpened = true;
}

let streamOpened = false;

const stream = new LiveSource("/admin/stream", {
  events: { overview: receiveOverview, task: receiveTask },
  onState: setLive,
});

function refreshAll() {
  loadHistory();
  loadTasks();
  loadDeadQueues();
  if (timeline.taskId) loadTimeline();
}

function signedIn(info) {
  if (!info.admin) {
    // The API refuses everything to a non-admin: do not even ask.
    $("admins-only").hidden = false;
    $("app").hidden = true;
    return;
  }
  $("admins-only").hidden = true;
  $("app").hidden = false;
  streamOpened = false;
  loadOverview();
  refreshAll();
  stream.open();
  const linked = taskInAddress();
  if (linked && timeline.taskId !== linked) openTimeline(linked);
}

function signedOut() {
  $("app").hidden = true;
  $("admins-only").hidden = true;
  stream.close();
}

function forget() {
  closeTimeline();
  tasks.rows.clear();
  series = new Map();
  dead.queue = null;
  $("dead-view").hidden = true;
}

function start() {
  $("task-filters").addEventListener("submit", searchTask);
  for (const id of ["filter-state", "filter-kind"]) $(id).addEventListener("change", () => loadTasks());
  $("tasks-more").addEventListener("click", () => loadTasks({ more: true }));
  $("task-cancel").addEventListener("click", cancelTask);
  $("task-retry").addEventListener("click", retryTask);
  $("timeline-close").addEventListener("click", closeTimeline);
  $("dead-replay").addEventListener("click", () => actOnDead("replay"));
  $("dead-discard").addEventListener("click", () => actOnDead("discard"));
  $("dead-all").addEventListener("change", selectAllDead);
  startSession({ signedIn, signedOut, forget });
}

start();
