// Dispatch dashboard: the few live parts. Everything the server sends is
// already-escaped HTML (fragments) or plain text (log chunks, appended as
// text nodes); nothing here builds markup from agent text.
"use strict";

function localTimes(root) {
  for (const t of (root || document).querySelectorAll("time[data-ts]")) {
    const d = new Date(Number(t.dataset.ts));
    if (isNaN(d)) continue;
    t.textContent = d.toLocaleString(undefined, {
      year: "numeric", month: "short", day: "2-digit",
      hour: "2-digit", minute: "2-digit", second: "2-digit",
    });
    const tz = Intl.DateTimeFormat().resolvedOptions().timeZone || "local";
    t.title = d.toISOString() + " (UTC) · " + d.toString() + " (" + tz + ")";
  }
}

function announce(text) {
  let live = document.getElementById("announcer");
  if (!live) {
    live = document.createElement("div");
    live.id = "announcer";
    live.setAttribute("role", "status");
    live.className = "skip";
    document.body.appendChild(live);
  }
  live.textContent = text;
}

document.addEventListener("click", (e) => {
  const b = e.target.closest("button[data-copy]");
  if (!b) return;
  const text = b.dataset.copy;
  const done = () => { b.textContent = "copied"; announce("Copied " + text); setTimeout(() => { b.textContent = "copy"; }, 1200); };
  if (navigator.clipboard && window.isSecureContext) {
    navigator.clipboard.writeText(text).then(done, () => window.prompt("Copy:", text));
  } else {
    window.prompt("Copy:", text);
  }
});

document.addEventListener("submit", (e) => {
  const f = e.target;
  if (f.dataset.confirm && !window.confirm(f.dataset.confirm)) e.preventDefault();
});

function liveDot(on) {
  const dot = document.querySelector(".live-dot");
  if (dot) { dot.classList.toggle("on", on); dot.title = on ? "live" : "not live"; }
}

function runsLive() {
  const body = document.querySelector("tbody[data-live]");
  if (!body || !window.EventSource) return;
  const es = new EventSource(body.dataset.live);
  es.onopen = () => liveDot(true);
  es.onerror = () => liveDot(false);
  es.addEventListener("rows", (ev) => {
    const seen = new Set([...body.querySelectorAll("tr[data-id]")].map((r) => r.dataset.id + ":" + r.dataset.v));
    body.innerHTML = JSON.parse(ev.data).html;
    for (const r of body.querySelectorAll("tr[data-id]")) {
      if (!seen.has(r.dataset.id + ":" + r.dataset.v)) r.classList.add("fresh");
    }
    body.dataset.version = String(Number(body.dataset.version || "0") + 1);
    localTimes(body);
  });
}

function runLive() {
  const root = document.querySelector("[data-live-run]");
  if (!root || !window.EventSource) return;
  const es = new EventSource(root.dataset.liveRun);
  es.onopen = () => liveDot(true);
  es.addEventListener("update", (ev) => {
    const parts = JSON.parse(ev.data);
    for (const [id, html] of Object.entries(parts)) {
      const el = document.getElementById(id);
      if (el) { el.innerHTML = html; localTimes(el); }
    }
  });
  es.addEventListener("end", () => { es.close(); liveDot(false); });
  es.onerror = () => liveDot(false);
}

function logLive() {
  const pre = document.querySelector("pre[data-live-log]");
  if (!pre || !window.EventSource) return;
  const follow = document.getElementById("follow");
  const es = new EventSource(pre.dataset.liveLog);
  es.addEventListener("chunk", (ev) => {
    const atEnd = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 24;
    pre.appendChild(document.createTextNode(JSON.parse(ev.data)));
    pre.dataset.bytes = String(Number(pre.dataset.bytes || "0") + 1);
    if (follow ? follow.checked : atEnd) pre.scrollTop = pre.scrollHeight;
  });
  es.addEventListener("end", () => { es.close(); pre.dataset.ended = "true"; });
  if (follow && follow.checked) pre.scrollTop = pre.scrollHeight;
}

document.addEventListener("DOMContentLoaded", () => {
  localTimes();
  runsLive();
  runLive();
  logLive();
});
