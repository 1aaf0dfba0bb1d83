// ORB tracker dashboard: polls the JSON API and renders it. No build step,
// no dependencies. Everything from the API goes in via textContent.
"use strict";

const POLL_MS = 2000;
const MAX_ROWS = 200;

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v; else node.setAttribute(k, v);
  }
  for (const c of children) {
    node.append(c instanceof Node ? c : document.createTextNode(c == null ? "" : String(c)));
  }
  return node;
}

function short(hex) { return hex ? hex.slice(0, 12) + "\u2026" : "\u2013"; }
function setText(id, text) { document.getElementById(id).textContent = text; }

function age(s) {
  if (s == null) return "\u2013";
  if (s < 1) return "now";
  if (s < 90) return Math.round(s) + " s ago";
  if (s < 5400) return Math.round(s / 60) + " min ago";
  return Math.round(s / 3600) + " h ago";
}

function duration(s) {
  s = Math.floor(s || 0);
  const d = Math.floor(s / 86400), h = Math.floor(s % 86400 / 3600), m = Math.floor(s % 3600 / 60);
  if (d) return d + "d " + h + "h";
  if (h) return h + "h " + m + "m";
  if (m) return m + "m " + (s % 60) + "s";
  return s + "s";
}

function addr(list) {
  if (!list || !list.length) return "\u2013";
  const a = list[0];
  const host = a.ip.includes(":") ? "[" + a.ip + "]" : a.ip;
  return host + ":" + a.port + (list.length > 1 ? " +" + (list.length - 1) : "");
}

function rttCell(rtt, maxRtt) {
  if (rtt == null) return el("td", {}, "\u2013");
  const width = Math.max(2, Math.round(80 * rtt / Math.max(maxRtt, 1)));
  const cls = rtt > 250 ? "bar vslow" : rtt > 80 ? "bar slow" : "bar";
  const bar = el("div", {class: cls});
  bar.style.width = width + "px";  // CSSOM, which the CSP allows (inline style attributes it does not)
  return el("td", {}, el("div", {class: "rtt"}, bar, rtt.toFixed(1) + " ms"));
}

function fillTable(id, rows, colspan, emptyText) {
  const tbody = document.querySelector("#" + id + " tbody");
  const frag = document.createDocumentFragment();
  if (!rows.length) frag.append(el("tr", {class: "empty"}, el("td", {colspan: String(colspan)}, emptyText)));
  for (const r of rows) frag.append(r);
  tbody.replaceChildren(frag);
}

async function getJson(path) {
  const resp = await fetch(path, {cache: "no-store", headers: {Accept: "application/json"}});
  if (!resp.ok) throw new Error(path + ": HTTP " + resp.status);
  return resp.json();
}

function renderStats(stats) {
  setText("tracker-id", short(stats.tracker_id));
  setText("uptime", duration(stats.uptime_s));
  const c = stats.counts, r = stats.reachability;
  setText("peer-count", String(c.peers));
  setText("peer-reach", r.reachable + " reachable \u00b7 " + r.relayed + " relayed \u00b7 " + r.unknown + " unknown");
  setText("tracker-count", String(c.trackers));
  setText("function-count", String(c.functions));
  let rin = 0, rout = 0, tin = 0, tout = 0;
  for (const v of Object.values(stats.rates_per_s.in || {})) rin += v;
  for (const v of Object.values(stats.rates_per_s.out || {})) rout += v;
  for (const v of Object.values(stats.messages.in || {})) tin += v;
  for (const v of Object.values(stats.messages.out || {})) tout += v;
  setText("msg-rate", (rin + rout).toFixed(1));
  setText("msg-sub", "in " + rin.toFixed(1) + " \u00b7 out " + rout.toFixed(1) + " \u00b7 total " + (tin + tout));
  const m = stats.rtt_ms;
  setText("rtt-median", m.median == null ? "\u2013" : m.median.toFixed(1) + " ms");
  setText("rtt-sub", m.peers_measured + " peers measured" + (m.max == null ? "" : " \u00b7 max " + m.max.toFixed(1) + " ms"));
}

function renderPeers(data) {
  const peers = data.peers.slice().sort((a, b) => (a.rtt_ms ?? 1e9) - (b.rtt_ms ?? 1e9)).slice(0, MAX_ROWS);
  const maxRtt = Math.max(1, ...peers.map(p => p.rtt_ms || 0));
  fillTable("peers", peers.map(p => el("tr", {"data-node": p.node_id},
    el("td", {}, el("code", {title: p.node_id}, short(p.node_id))),
    el("td", {}, el("code", {}, addr(p.addresses))),
    el("td", {}, el("span", {class: "badge " + p.reachability}, p.reachability)),
    rttCell(p.rtt_ms, maxRtt),
    el("td", {}, p.load == null ? "\u2013" : p.load.toFixed(2)),
    el("td", {}, String(Object.keys(p.functions).length)),
    el("td", {}, p.home_is_here ? "here" : el("code", {title: p.home}, short(p.home))),
    el("td", {}, age(p.age_s)))), 8, "no peers yet");
  setText("peers-note", data.total > peers.length ? "showing " + peers.length + " of " + data.total + " peers, fastest first" : "");
}

function renderTrackers(data) {
  const up = data.trackers.filter(t => t.connected).length;
  setText("tracker-sub", up + " connected");
  fillTable("trackers", data.trackers.map(t => {
    const state = t.self ? "self" : t.connected ? "connected" : "disconnected";
    return el("tr", {},
      el("td", {}, el("code", {title: t.node_id}, short(t.node_id))),
      el("td", {}, el("code", {}, addr(t.addresses))),
      el("td", {}, el("span", {class: "badge " + state}, state)),
      el("td", {}, String(t.peers)),
      el("td", {}, t.self ? "\u2013" : age(t.age_s)));
  }), 5, "no trackers");
}

function ms(v) { return v == null ? "\u2013" : (v < 10 ? v.toFixed(2) : v.toFixed(1)) + " ms"; }
function pct(v) { return v == null ? "\u2013" : (100 * v).toFixed(1) + " %"; }

function renderFunctions(data) {
  const under = data.functions.filter(f => f.live_replicas < f.replicas).length;
  setText("function-sub", under ? under + " under-replicated" : "all replicated");
  fillTable("functions", data.functions.slice(0, MAX_ROWS).map(f => {
    const c = f.calls || {};
    return el("tr", {"data-fid": f.fid},
      el("td", {}, el("code", {title: f.fid}, f.fid.length > 20 ? f.fid.slice(0, 20) + "\u2026" : f.fid)),
      el("td", {}, String(f.version)),
      el("td", {class: "replicas", title: (f.hosted_by || []).join("\n")}, f.live_replicas + " / " + f.replicas),
      el("td", {class: "rate"}, c.rate_per_s == null ? "\u2013" : c.rate_per_s.toFixed(2) + " /s"),
      el("td", {class: "p50"}, ms(c.p50_ms)),
      el("td", {class: "p99"}, ms(c.p99_ms)),
      el("td", {class: "errors" + (c.error_rate ? " bad" : "")}, pct(c.error_rate)),
      el("td", {}, el("code", {title: f.owner}, short(f.owner))));
  }), 8, "no functions");
}

async function poll() {
  const status = document.getElementById("status");
  try {
    const [stats, peers, trackers, functions] = await Promise.all([
      getJson("api/v1/stats"), getJson("api/v1/peers"),
      getJson("api/v1/trackers"), getJson("api/v1/functions")]);
    renderStats(stats);
    renderPeers(peers);
    renderTrackers(trackers);
    renderFunctions(functions);
    status.textContent = "live";
    status.className = "status live";
  } catch (err) {
    status.textContent = "offline";
    status.className = "status error";
    status.title = String(err);
  } finally {
    setTimeout(poll, POLL_MS);
  }
}

document.addEventListener("DOMContentLoaded", poll);
