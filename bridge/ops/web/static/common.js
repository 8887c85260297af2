// Shared by the pages. Everything an agent wrote is put into the page as text
// (textContent), never as HTML: the server's Content-Security-Policy allows no inline
// script, and no page code builds HTML from strings.
"use strict";

const TOKEN_KEY = "bridge-web-token";

// The address `bridge web` prints ends in #token=…: kept for this tab (sessionStorage),
// then taken out of the address bar, so it is neither bookmarked nor shown.
function takeToken() {
  const match = /(?:^#|&)token=([A-Za-z0-9_~.-]+)/.exec(location.hash);
  if (match) {
    sessionStorage.setItem(TOKEN_KEY, match[1]);
    history.replaceState(null, "", location.pathname + location.search);
  }
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("data-")) node.setAttribute(key, value);
    else node[key] = value;
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(typeof child === "string" ? document.createTextNode(child) : child);
  }
  return node;
}

async function api(path, options) {
  const response = await fetch(path, Object.assign({credentials: "same-origin"}, options || {}));
  let body = {};
  try { body = await response.json(); } catch (e) { body = {}; }
  if (!response.ok) {
    const error = new Error(body.error || ("HTTP " + response.status));
    error.status = response.status;
    throw error;
  }
  return body;
}

// Off loopback the server wants the token for reading too: trade it for a cookie,
// since an EventSource cannot send a header. Resolves true when the token is right.
async function login(token) {
  if (!token) return false;
  try {
    const response = await fetch("/api/login", {method: "POST", credentials: "same-origin",
      headers: {"Authorization": "Bearer " + token}});
    return response.ok;
  } catch (e) { return false; }
}

function clock(ms) {
  const d = new Date(ms);
  const pad = (n) => String(n).padStart(2, "0");
  const time = pad(d.getHours()) + ":" + pad(d.getMinutes()) + ":" + pad(d.getSeconds());
  return d.toDateString() === new Date().toDateString() ? time
    : d.getFullYear() + "-" + pad(d.getMonth() + 1) + "-" + pad(d.getDate()) + " " + time;
}

function ago(ms, nowMs) {
  if (!ms) return "-";
  const s = Math.max(0, Math.floor((nowMs - ms) / 1000));
  if (s < 60) return s + "s ago";
  if (s < 3600) return Math.floor(s / 60) + "m ago";
  if (s < 86400) return Math.floor(s / 3600) + "h" + String(Math.floor(s % 3600 / 60)).padStart(2, "0") + "m ago";
  return Math.floor(s / 86400) + "d ago";
}
