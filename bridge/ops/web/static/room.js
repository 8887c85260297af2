// A room, live: the agents, the conversation (from the log, resumed from the last id shown),
// events, history with filters, threads, who talks to whom, and the operator's send form;
// the task board and file claims are board.js's.
"use strict";

const ROOM = decodeURIComponent(location.pathname.split("/")[2] || "");
const BASE = "/api/r/" + encodeURIComponent(ROOM);
const $ = (id) => document.getElementById(id);

const state = {
  token: "",
  lastId: "",       // the newest log id this page has: where the stream resumes
  oldest: "",       // where "load older" goes on ("" at the start of the log)
  agent: "",        // filter: messages from or to this agent
  text: "",         // filter: a piece of the text
  shown: new Map(), // id -> message record, for reply labels
  agents: [],
  nowOffset: 0,     // Redis' clock minus ours
  source: null,
};

function msOfId(id) { return parseInt(String(id).split("-")[0], 10) || 0; }

function matches(m) {
  if (state.agent && m.from !== state.agent && !(Array.isArray(m.to) && m.to.includes(state.agent))) return false;
  return !state.text || m.text.toLowerCase().includes(state.text.toLowerCase());
}

function recipients(m) { return m.to === "*" ? "everyone (*)" : m.to.join(", "); }

function snippet(text, n) { const line = text.replace(/\s+/g, " "); return line.length > n ? line.slice(0, n - 1) + "…" : line; }

function messageNode(m) {
  const marker = m.marker ? el("span", {class: "marker", text: m.marker, title: m.problem}) : null;
  const reply = el("button", {type: "button", class: "act", text: "reply", title: "answer this message"});
  reply.addEventListener("click", () => replyTo(m));
  const thread = el("button", {type: "button", class: "act", text: "thread", title: "open its thread"});
  thread.addEventListener("click", () => openThread(m.id));
  const head = el("div", {class: "head"},
    el("time", {class: "time", text: clock(msOfId(m.id)), title: m.id}), marker,
    el("span", {class: "from", text: m.from}), el("span", {class: "arrow", text: " → "}),
    el("span", {class: "to", text: recipients(m)}), el("span", {class: "acts"}, reply, thread));
  let parent = null;
  if (m.reply_to) {
    const original = state.shown.get(m.reply_to);
    parent = el("a", {class: "replyto", href: "#", title: "open the thread",
      text: "↪ " + (original ? original.from + ": " + snippet(original.text, 80) : "reply to " + m.reply_to)});
    parent.addEventListener("click", (event) => { event.preventDefault(); openThread(m.id); });
  }
  const node = el("li", {class: "msg" + (m.marker ? " flagged" : ""), "data-id": m.id},
    head, parent, el("div", {class: "text", text: m.text}));
  return node;
}

function eventNode(e) {
  let what;
  if (e.kind === "joined") {
    const who = [e.role, e.host].filter(Boolean).join(", ");
    what = e.name + " joined" + (who ? " (" + who + ")" : "");
  } else if (e.kind === "board") {
    what = e.name + " " + e.status;
  } else if (e.kind === "left") {
    what = e.name + " left" + (e.reason === "timeout" ? " (timed out)" : "");
  } else {
    what = e.status ? e.name + " status: " + e.status : e.name + " cleared their status";
  }
  return el("li", {class: "event", "data-kind": e.kind, "data-name": e.name},
    el("time", {class: "time", text: clock(e.ts || Date.now())}),
    e.marker ? el("span", {class: "marker", text: e.marker}) : null, el("span", {text: " · " + what}));
}

function nearBottom() { const log = $("log"); return log.scrollHeight - log.scrollTop - log.clientHeight < 80; }
function toBottom() { const log = $("log"); log.scrollTop = log.scrollHeight; }

function append(node) {
  const stick = nearBottom();
  $("messages").append(node);
  if (stick) toBottom();
}

function remember(m) { state.shown.set(m.id, m); noteName(m.from); }

// ------------------------------------------------------------------ history
async function page(before) {
  const query = new URLSearchParams({limit: "100"});
  if (before) query.set("before", before);
  if (state.agent) query.set("agent", state.agent);
  if (state.text) query.set("q", state.text);
  return api(BASE + "/history?" + query);
}

async function reload() {
  const data = await page("");
  const list = $("messages");
  list.replaceChildren();
  data.messages.forEach(remember);
  list.append(...data.messages.map(messageNode));
  state.oldest = data.older;
  $("older").hidden = !data.older;
  toBottom();
  return data;
}

async function older() {
  const log = $("log");
  const before = log.scrollHeight;
  const data = await page(state.oldest);
  data.messages.forEach(remember);
  $("messages").prepend(...data.messages.map(messageNode));
  state.oldest = data.older;
  $("older").hidden = !data.older;
  log.scrollTop += log.scrollHeight - before;
}

// ------------------------------------------------------------------ live
function setLive(what, text) { const live = $("live"); live.dataset.state = what; live.textContent = text; }

function connect() {
  const source = new EventSource(BASE + "/stream?after=" + encodeURIComponent(state.lastId));
  state.source = source;
  source.addEventListener("open", () => { setLive("live", "live"); boardSoon(); });
  source.addEventListener("message", (event) => {
    const m = JSON.parse(event.data);
    state.lastId = m.id;
    remember(m);
    if (matches(m)) append(messageNode(m));
    teamSoon();
  });
  source.addEventListener("skip", (event) => { state.lastId = event.lastEventId; });
  source.addEventListener("presence", (event) => {
    if (!state.agent && !state.text) append(eventNode(JSON.parse(event.data)));
  });
  source.addEventListener("board", (event) => {  // a task or claim changed (or events were missed)
    const e = JSON.parse(event.data);
    if (e.kind === "board" && !state.agent && !state.text) append(eventNode(e));
    boardSoon();
  });
  source.addEventListener("agents", (event) => showAgents(JSON.parse(event.data)));
  source.addEventListener("redis", (event) => {
    const data = JSON.parse(event.data);
    const box = $("redis-state");
    box.hidden = data.ok;
    box.textContent = data.ok ? "" : data.error;
  });
  source.addEventListener("error", () => {
    setLive("reconnecting", "reconnecting…");
    if (source.readyState === EventSource.CLOSED) {
      // the browser gave up (an error answer): a new stream, from the last id we have
      setTimeout(() => { if (state.source === source) connect(); }, 1000);
    }
  });
}

// ------------------------------------------------------------------ agents
const names = new Set();

function noteName(name) {
  if (!name || names.has(name)) return;
  names.add(name);
  const sorted = [...names].sort();
  const select = $("filter-agent");
  const keep = select.value;
  select.replaceChildren(el("option", {value: "", text: "all agents"}),
    ...sorted.map((n) => el("option", {value: n, text: n})));
  select.value = keep;
  $("agent-names").replaceChildren(el("option", {value: "*"}), ...sorted.map((n) => el("option", {value: n})));
}

function showAgents(data) {
  state.agents = data.agents;
  state.nowOffset = data.now ? data.now - Date.now() : 0;
  const body = $("agents").querySelector("tbody");
  body.replaceChildren(...data.agents.map((a) => {
    const name = el("a", {href: "#", class: "agent", text: a.name, title: "only this agent's messages"});
    name.addEventListener("click", (event) => { event.preventDefault(); setFilter(a.name, state.text); });
    const seen = el("td", {class: "seen", "data-ms": String(a.last_seen)});
    return el("tr", {"data-name": a.name, class: a.marker ? "flagged" : ""},
      el("td", {}, a.marker ? el("span", {class: "marker", text: a.marker}) : null, name),
      el("td", {text: a.role}), el("td", {text: a.host}),
      el("td", {class: "delivery", title: a.client === "-" ? "" : "client: " + a.client}, a.delivery,
        a.client && a.client !== "-" ? el("div", {class: "client", text: a.client}) : null),
      el("td", {class: "status", text: a.status}), seen);
  }));
  $("agent-count").textContent = String(data.agents.length);
  data.agents.forEach((a) => noteName(a.name));
  tick();
}

function tick() {
  const now = Date.now() + state.nowOffset;
  for (const cell of document.querySelectorAll("#agents td.seen")) {
    cell.textContent = ago(parseInt(cell.dataset.ms, 10), now);
  }
}

// ------------------------------------------------------------------ who talks to whom
let teamTimer = null;
function teamSoon() { if (!teamTimer) teamTimer = setTimeout(() => { teamTimer = null; team(); }, 2000); }

async function team() {
  let data;
  try { data = await api(BASE + "/team"); } catch (e) { return; }
  const counts = new Map();
  const people = new Set(state.agents.map((a) => a.name));
  let most = 1;
  for (const [from, to, n] of data.pairs) {
    counts.set(from + "\u0000" + to, n);
    people.add(from);
    if (to !== "*") people.add(to);
    most = Math.max(most, n);
  }
  const rows = [...people].sort();
  const cols = [...rows, "*"];
  const present = new Set(state.agents.map((a) => a.name));
  const head = el("tr", {}, el("th", {text: "from \\ to"}), ...cols.map((c) => el("th", {class: "col", text: c})));
  const body = rows.map((from) => {
    const silent = present.has(from) && !data.last[from];
    const label = el("th", {class: "row" + (silent ? " silent" : ""), text: from,
      title: data.last[from] ? "last wrote " + ago(data.last[from], data.now) : "sent nothing this hour"});
    return el("tr", {}, label, ...cols.map((to) => {
      const n = counts.get(from + "\u0000" + to) || 0;
      const cell = el("td", {class: "n heat-" + (n ? Math.min(4, 1 + Math.floor(3 * n / most)) : 0),
        text: from === to ? "·" : (n ? String(n) : ""), title: from + " → " + to + ": " + n});
      return cell;
    }));
  });
  const table = el("table", {class: "matrix"}, el("thead", {}, head), el("tbody", {}, ...body));
  $("team").replaceChildren(rows.length ? table : el("p", {class: "hint", text: "no messages this hour"}));
}

// ------------------------------------------------------------------ threads, replies, filters
async function openThread(id) {
  const panel = $("thread");
  panel.hidden = false;
  const list = $("thread-messages");
  list.replaceChildren(el("li", {class: "hint", text: "loading…"}));
  try {
    const data = await api(BASE + "/thread/" + encodeURIComponent(id));
    list.replaceChildren(...data.messages.map((m) => {
      const node = messageNode(m);
      if (m.id === id) node.classList.add("current");
      return node;
    }));
  } catch (e) {
    list.replaceChildren(el("li", {class: "error", text: e.message}));
  }
}

function replyTo(m) {
  $("send-to").value = m.from;
  $("send-text").dataset.replyTo = m.id;
  $("reply-label").textContent = m.from + ": " + snippet(m.text, 40);
  $("reply-box").hidden = false;
  $("send-text").focus();
}

function clearReply() { delete $("send-text").dataset.replyTo; $("reply-box").hidden = true; }

async function setFilter(agent, text) {
  state.agent = agent;
  state.text = text;
  $("filter-agent").value = agent;
  $("filter-text").value = text;
  try { await reload(); } catch (e) { showError(e); }
}

function showError(e) { const box = $("redis-state"); box.hidden = false; box.textContent = e.message; }

// ------------------------------------------------------------------ sending
async function send(event) {
  event.preventDefault();
  const result = $("send-result");
  const name = $("send-name").value.trim();
  localStorage.setItem("bridge-web-name", name);
  const body = {name: name, to: $("send-to").value.trim(), text: $("send-text").value,
    reply_to: $("send-text").dataset.replyTo || ""};
  result.className = "result";
  result.textContent = "sending…";
  try {
    const data = await api(BASE + "/send", {method: "POST", body: JSON.stringify(body),
      headers: {"Content-Type": "application/json", "Authorization": "Bearer " + state.token}});
    result.textContent = "sent " + data.sent + " to " + (data.online.join(", ") || "nobody online") +
      (data.offline.length ? "; queued for " + data.offline.join(", ") : "") +
      (data.not_queued && data.not_queued.length ?
        "; NOT queued for " + data.not_queued.join(", ") : "");
    $("send-text").value = "";
    clearReply();
  } catch (e) {
    result.className = "result error";
    result.textContent = "not sent: " + e.message;
  }
}

// ------------------------------------------------------------------ start
(async function start() {
  document.title = "bridge: " + ROOM;
  $("room-name").textContent = ROOM;
  state.token = takeToken();
  const ok = await login(state.token);
  const tokenState = $("token-state");
  tokenState.textContent = ok ? "can send" : "read only: open the address bridge web printed to send";
  tokenState.dataset.state = ok ? "ok" : "none";
  $("send-name").value = localStorage.getItem("bridge-web-name") || "operator";
  $("send").addEventListener("submit", send);
  $("reply-clear").addEventListener("click", clearReply);
  $("thread-close").addEventListener("click", () => { $("thread").hidden = true; });
  $("older").addEventListener("click", () => older().catch(showError));
  $("filter-agent").addEventListener("change", () => setFilter($("filter-agent").value, state.text));
  let typing = null;
  $("filter-text").addEventListener("input", () => {
    clearTimeout(typing);
    typing = setTimeout(() => setFilter(state.agent, $("filter-text").value.trim()), 300);
  });
  $("filter-clear").addEventListener("click", () => setFilter("", ""));
  $("filters").addEventListener("submit", (event) => event.preventDefault());
  try {
    const data = await reload();
    state.lastId = data.end;
  } catch (e) {
    showError(e);
    state.lastId = "";
  }
  boardStart();
  connect();
  team();
  setInterval(tick, 1000);
  setInterval(team, 15000);
})();
