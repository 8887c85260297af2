// The room's task board and file claims (GET board): read on load, again on each board event
// and whenever the stream (re)connects (events may have been missed), and when the soonest
// claim shown would expire (they lapse without an event); never polled. Clicking a task opens
// its detail and history. The operator's changes (POST tasks: add, assign, done) need the
// token, as sending does. Everything a peer wrote is put in as text (textContent).
// Uses room.js's BASE, $ and state, and common.js's el, api, clock and ago.
"use strict";

const board = {
  timer: null,     // a read of the board is due
  busy: false,     // a read is in flight
  again: false,    // ... and another is wanted after it
  expiry: null,    // the read due when the soonest claim expires
  offset: 0,       // Redis' clock minus ours
  opened: new Set(),  // ids of the tasks whose detail is open
};

function boardSoon(delay) {
  if (board.timer) return;
  board.timer = setTimeout(() => { board.timer = null; loadBoard(); }, delay === undefined ? 100 : delay);
}

async function loadBoard() {
  if (board.busy) { board.again = true; return; }
  board.busy = true;
  const error = $("board-error");
  try {
    showBoard(await api(BASE + "/board"));
    error.hidden = true;
  } catch (e) {
    error.textContent = "the board could not be read: " + e.message;
    error.hidden = false;
  } finally {
    board.busy = false;
    if (board.again) { board.again = false; boardSoon(0); }
  }
}

function boardNow() { return Date.now() + board.offset; }

function inTime(ms, now) {
  const s = Math.max(0, Math.floor((ms - now) / 1000));
  if (s < 120) return "in " + s + "s";
  if (s < 7200) return "in " + Math.floor(s / 60) + "m";
  return "in " + Math.floor(s / 3600) + "h";
}

function markerOf(record) {
  return record.marker ? el("span", {class: "marker", text: record.marker, title: record.problem || ""}) : null;
}

function showBoard(data) {
  board.offset = data.now ? data.now - Date.now() : 0;
  showTasks(data);
  showClaims(data);
  clearTimeout(board.expiry);
  const soonest = Math.min(...data.claims.map((c) => c.expires).filter((ms) => ms > 0));
  if (Number.isFinite(soonest)) {
    board.expiry = setTimeout(() => boardSoon(0), Math.max(1000, soonest - data.now + 250));
  }
}

function showTasks(data) {
  const body = $("board-tasks").querySelector("tbody");
  const rows = [];
  for (const t of data.tasks) {
    const row = el("tr", {"data-id": t.id, "data-status": t.status, title: "open its detail and history",
      class: "task" + (t.status === "done" ? " done" : "") + (t.marker ? " flagged" : "")},
      el("td", {class: "id"}, markerOf(t), t.id), el("td", {class: "status", text: t.status}),
      el("td", {class: "assignee", text: t.assignee || "-"}),
      el("td", {class: "waits", text: t.waits_for.join(" ") || "-"}),
      el("td", {class: "title", text: t.title}));
    row.addEventListener("click", () => toggleTask(t.id));
    rows.push(row);
  }
  if (data.done_hidden) {
    rows.push(el("tr", {class: "hint"}, el("td", {colSpan: 5,
      text: data.done_hidden + " older done tasks not shown (bridge tasks --status done lists them)"})));
  }
  if (!data.tasks.length) rows.push(el("tr", {class: "hint"}, el("td", {colSpan: 5, text: "no tasks: add one below"})));
  body.replaceChildren(...rows);
  const open = data.tasks.filter((t) => t.status !== "done").length;
  $("task-count").textContent = open + " not done" + (data.tasks.length > open ? ", " + (data.tasks.length - open + data.done_hidden) + " done" : "");
  $("task-ids").replaceChildren(...data.tasks.filter((t) => t.status !== "done").map((t) => el("option", {value: t.id, label: t.title})));
  for (const id of [...board.opened]) {
    const row = body.querySelector(`tr.task[data-id="${CSS.escape(id)}"]`);
    if (row) openTask(id, row); else board.opened.delete(id);
  }
}

function showClaims(data) {
  const body = $("board-claims").querySelector("tbody");
  body.replaceChildren(...data.claims.map((c) => el("tr", {"data-agent": c.agent, "data-path": c.pattern,
      class: c.marker ? "flagged" : ""},
    el("td", {class: "agent"}, markerOf(c), c.agent), el("td", {class: "path", text: c.pattern}),
    el("td", {class: "mode", text: c.mode}),
    el("td", {class: "since", "data-ms": String(c.since)}),
    el("td", {class: "expires", "data-ms": String(c.expires)}),
    el("td", {class: "reason", text: c.reason || "-"}))));
  if (!data.claims.length) body.append(el("tr", {class: "hint"}, el("td", {colSpan: 6, text: "no file claims"})));
  $("claim-count").textContent = String(data.claims.length);
  boardTick();
}

function boardTick() {
  const now = boardNow();
  for (const cell of document.querySelectorAll("#board-claims td.since")) cell.textContent = ago(parseInt(cell.dataset.ms, 10), now);
  for (const cell of document.querySelectorAll("#board-claims td.expires")) cell.textContent = inTime(parseInt(cell.dataset.ms, 10), now);
}

// ------------------------------------------------------------------ one task, opened
function toggleTask(id) {
  const row = $("board-tasks").querySelector(`tr.task[data-id="${CSS.escape(id)}"]`);
  if (board.opened.has(id)) {
    board.opened.delete(id);
    const detail = row && row.nextElementSibling;
    if (detail && detail.classList.contains("task-detail")) detail.remove();
    return;
  }
  board.opened.add(id);
  if (row) openTask(id, row);
}

async function openTask(id, row) {
  const cell = el("td", {colSpan: 5}, el("span", {class: "hint", text: "loading…"}));
  let detail = row.nextElementSibling;
  if (!detail || !detail.classList.contains("task-detail")) {
    detail = el("tr", {class: "task-detail", "data-for": id});
    row.after(detail);
  }
  detail.replaceChildren(cell);
  let t;
  try { t = await api(BASE + "/task/" + encodeURIComponent(id)); } catch (e) {
    cell.replaceChildren(el("span", {class: "error", text: e.message}));
    return;
  }
  const now = boardNow();
  const assign = el("button", {type: "button", class: "act", text: "assign…", title: "assign it to an agent"});
  assign.addEventListener("click", (event) => { event.stopPropagation(); $("task-id").value = t.id; $("task-to").focus(); });
  const done = el("button", {type: "button", class: "act", text: "done", title: "close it, as the operator"});
  done.addEventListener("click", (event) => { event.stopPropagation(); changeTask({action: "done", task_id: t.id}); });
  cell.replaceChildren(...[  // (replaceChildren would show a null as "null")
    el("div", {class: "text", text: t.detail || "(no detail)"}),
    el("div", {class: "hint", text: "created by " + (t.creator || "-") + " " + ago(t.created, now) +
      "; updated by " + (t.by || "-") + " " + ago(t.updated, now)}),
    t.problem ? el("div", {class: "error", text: t.problem + ": not written by a holder of the room secret (forged or altered)"}) : null,
    el("ol", {class: "history"}, ...t.history.map((h) => el("li", {},
      el("time", {class: "time", text: clock(h.at)}), h.actor + " " + h.what))),
    el("div", {class: "acts"}, assign, t.status === "done" ? null : done)].filter(Boolean));
}

// ------------------------------------------------------------------ the operator's changes
async function changeTask(body) {
  const result = $("task-result");
  result.className = "result";
  result.textContent = "changing the board…";
  try {
    const data = await api(BASE + "/tasks", {method: "POST", body: JSON.stringify(body),
      headers: {"Content-Type": "application/json", "Authorization": "Bearer " + state.token}});
    const unsent = Object.entries(data.not_told || {});
    result.textContent = data.said + ": " + data.task.title +
      (data.told.length ? "; told " + data.told.join(", ") : "") +
      (unsent.length ? "; NOT told " + unsent.map(([name, why]) => name + " (" + why + ")").join(", ") : "");
    boardSoon(0);
    return true;
  } catch (e) {
    result.className = "result error";
    result.textContent = "refused: " + e.message;
    return false;
  }
}

async function addTask(event) {
  event.preventDefault();
  const ok = await changeTask({action: "add", title: $("task-title").value, detail: $("task-detail").value,
    assignee: $("task-assignee").value.trim(), waits_for: $("task-waits").value.trim()});
  if (ok) for (const id of ["task-title", "task-detail", "task-assignee", "task-waits"]) $(id).value = "";
}

async function assignTask(event) {
  event.preventDefault();
  if (await changeTask({action: "assign", task_id: $("task-id").value.trim(), assignee: $("task-to").value.trim()})) {
    $("task-to").value = "";
  }
}

function boardStart() {
  $("task-add").addEventListener("submit", addTask);
  $("task-change").addEventListener("submit", assignTask);
  $("task-done").addEventListener("click", () => changeTask({action: "done", task_id: $("task-id").value.trim()}));
  setInterval(boardTick, 1000);
  loadBoard();
}
