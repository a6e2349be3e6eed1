// Polls /dashboard/data and draws it. Every string from the data goes in
// through textContent: names and identities come from proxies.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const REFRESH_MS = 3000;

function el(tag, attrs, text) {
  const e = tag.startsWith("svg:")
    ? document.createElementNS(SVG, tag.slice(4))
    : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

function pct(v) { return v === null || v === undefined ? "-" : (v * 100).toFixed(2) + "%"; }
function rps(v) { return (v || 0).toFixed(1); }
function ms(v) {
  if (v === null || v === undefined) return "-";
  return v < 10 ? v.toFixed(2) + "ms" : v.toFixed(0) + "ms";
}
function left(secs) {
  if (secs === null || secs === undefined) return "-";
  if (secs <= 0) return "expired";
  const h = Math.floor(secs / 3600), m = Math.floor((secs % 3600) / 60);
  return h > 0 ? h + "h " + m + "m" : m + "m " + (secs % 60) + "s";
}

function fill(id, rows) {
  const body = document.querySelector("#" + id + " tbody");
  body.replaceChildren();
  for (const cells of rows) {
    const tr = el("tr");
    for (const c of cells) {
      tr.appendChild(el("td", c.cls ? { class: c.cls } : {}, c.text));
    }
    body.appendChild(tr);
  }
}

function nodeKey(ns, name) { return ns + "/" + name; }

function drawTopology(data) {
  const svg = document.getElementById("topology");
  svg.replaceChildren();
  const defs = el("svg:defs");
  const marker = el("svg:marker", { id: "arrow", viewBox: "0 0 10 10", refX: "10", refY: "5",
    markerWidth: "7", markerHeight: "7", orient: "auto-start-reverse" });
  marker.appendChild(el("svg:path", { d: "M 0 0 L 10 5 L 0 10 z", fill: "#7a8796" }));
  defs.appendChild(marker);
  svg.appendChild(defs);

  const nodes = new Map();
  for (const w of data.workloads) nodes.set(nodeKey(w.namespace, w.name), w);
  // A called service whose workloads are unknown still gets a node.
  for (const e of data.edges) {
    const [svc, ns] = e.to.split(".");
    if (e.to_workloads.length === 0 && !nodes.has(nodeKey(ns, svc))) {
      nodes.set(nodeKey(ns, svc), { namespace: ns, name: svc, mode: "service" });
    }
  }
  const keys = [...nodes.keys()].sort((a, b) => {
    const ga = nodes.get(a).mode === "gateway" ? 0 : 1, gb = nodes.get(b).mode === "gateway" ? 0 : 1;
    return ga - gb || a.localeCompare(b);
  });
  const cx = 500, cy = 280, r = Math.min(220, 60 + keys.length * 25);
  const pos = new Map();
  keys.forEach((k, i) => {
    const a = -Math.PI / 2 + (2 * Math.PI * i) / Math.max(keys.length, 1);
    pos.set(k, { x: cx + r * Math.cos(a) * 1.6, y: cy + r * Math.sin(a) });
  });

  const R = 34;
  for (const e of data.edges) {
    const [svc, ns] = e.to.split(".");
    const targets = e.to_workloads.length ? e.to_workloads.map(w => nodeKey(ns, w)) : [nodeKey(ns, svc)];
    const from = pos.get(nodeKey(e.from_namespace, e.from));
    for (const t of targets) {
      const to = pos.get(t);
      if (!from || !to) continue;
      const dx = to.x - from.x, dy = to.y - from.y, len = Math.hypot(dx, dy) || 1;
      const g = el("svg:g", { class: "edge" + (e.success_rate !== null && e.success_rate < 0.95 ? " failing" : "") });
      g.appendChild(el("svg:line", {
        x1: from.x + dx / len * R, y1: from.y + dy / len * R,
        x2: to.x - dx / len * R, y2: to.y - dy / len * R,
      }));
      // Split between callees (versions): each line gets what that
      // callee served this caller; otherwise the caller's own view.
      const w = t.slice(t.indexOf("/") + 1);
      const s = targets.length > 1 && e.servers && e.servers[w] ? e.servers[w] : e;
      const label = rps(s.rps) + " rps · " + pct(s.success_rate) + " · p99 " + ms(s.p99_ms);
      g.appendChild(el("svg:text", { x: (from.x + to.x) / 2, y: (from.y + to.y) / 2 - 4, class: "edge-label" }, label));
      svg.appendChild(g);
    }
  }
  for (const k of keys) {
    const n = nodes.get(k), p = pos.get(k);
    const g = el("svg:g", { class: "node " + (n.mode || "") });
    g.appendChild(el("svg:circle", { cx: p.x, cy: p.y, r: R }));
    g.appendChild(el("svg:text", { x: p.x, y: p.y + 4 }, n.name));
    if (n.rps !== undefined) {
      g.appendChild(el("svg:text", { x: p.x, y: p.y + R + 14 }, rps(n.rps) + " rps " + pct(n.success_rate)));
    }
    svg.appendChild(g);
  }
}

function render(data) {
  drawTopology(data);
  fill("services", data.workloads.map(w => [
    { text: w.namespace }, { text: w.name }, { text: String(w.proxies), cls: "num" },
    { text: pct(w.success_rate), cls: w.success_rate !== null && w.success_rate < 0.95 ? "num bad" : "num" },
    { text: rps(w.rps), cls: "num" }, { text: ms(w.p50_ms), cls: "num" },
    { text: ms(w.p95_ms), cls: "num" }, { text: ms(w.p99_ms), cls: "num" },
  ]));
  const edges = [...data.edges].sort((a, b) => b.rps - a.rps);
  fill("edges", edges.map(e => [
    { text: e.from_namespace + "/" + e.from }, { text: e.to },
    { text: e.to_workloads.length ? e.to_workloads.join(", ") : "-" },
    { text: pct(e.success_rate), cls: "num" }, { text: rps(e.rps), cls: "num edge-rps" },
    { text: ms(e.p99_ms), cls: "num" }, { text: e.server ? "yes" : "-" },
  ]));
  fill("proxies", data.proxies.map(p => [
    { text: p.proxy_id }, { text: p.spiffe_id, cls: "identity" }, { text: p.mode },
    { text: left(p.cert_expires_in_secs), cls: "num" },
    { text: p.config_version + " (" + p.acked_resources + " resources)" },
    { text: p.ack_state + (p.last_nack ? ": " + p.last_nack : ""), cls: p.ack_state === "ACK" ? "" : "bad" },
    { text: p.scrape_error ? "unreadable: " + p.scrape_error : "ok", cls: p.scrape_error ? "bad" : "" },
  ]));
  document.getElementById("status").textContent =
    "updated " + data.generated_at + " · window " + data.window_secs.toFixed(1) + "s · " +
    data.proxies.length + " proxies" + (data.latency ? "" : " · no latency histograms");
}

async function refresh() {
  try {
    const r = await fetch("/dashboard/data", { cache: "no-store" });
    if (!r.ok) throw new Error("HTTP " + r.status);
    render(await r.json());
  } catch (e) {
    document.getElementById("status").textContent = "cannot load data: " + e.message;
  } finally {
    setTimeout(refresh, REFRESH_MS);
  }
}

refresh();
