// msctl's dashboard: five live views over the supervisor's JSON. A server-sent event says when
// something changed; the open view fetches again. No framework, no build step.
"use strict";

// The session token: given once in the address (`msctl dashboard` prints it), then kept in this
// origin's storage (scheme, host and port: no other local server sees it) and sent in a header.
const TOKEN_KEY = "msctl-dashboard-token";
const given = new URLSearchParams(location.search).get("token");
if (given) {
  localStorage.setItem(TOKEN_KEY, given);
  history.replaceState(null, "", location.pathname + location.hash);
}
const token = localStorage.getItem(TOKEN_KEY) || "";
const $ = (sel, root = document) => root.querySelector(sel);
const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
const ms = (v) => (v == null ? "-" : v < 10 ? v.toFixed(2) + " ms" : v.toFixed(1) + " ms");
const clock = (ns) => new Date(ns / 1e6).toLocaleTimeString(undefined, { hour12: false }) + "." + String(Math.floor(ns / 1e6) % 1000).padStart(3, "0");
const uptime = (ms) => {
  if (ms == null) return "-";
  const s = Math.floor(ms / 1000);
  return s < 60 ? s + "s" : s < 3600 ? Math.floor(s / 60) + "m" + (s % 60) + "s" : Math.floor(s / 3600) + "h" + Math.floor((s % 3600) / 60) + "m";
};
const cpu = (ms) => (ms == null ? "-" : ms < 60000 ? (ms / 1000).toFixed(1) + "s" : uptime(ms));
const mem = (b) => (b == null ? "-" : b >= 1 << 30 ? (b / (1 << 30)).toFixed(1) + "G" : (b / (1 << 20)).toFixed(b >= 100 << 20 ? 0 : 1) + "M");
const KINDS = { 1: "internal", 2: "server", 3: "client", 4: "producer", 5: "consumer" };

async function getJSON(url) {
  const r = await fetch(url, { headers: { "x-msctl-token": token } });
  if (r.status === 401) {
    const note = document.getElementById("session");
    note.textContent = "No session: open the address `msctl dashboard` prints (it carries the token).";
    note.hidden = false;
  }
  if (!r.ok) throw new Error(url + ": " + r.status);
  return r.json();
}

// ---- views --------------------------------------------------------------------------------

const views = {
  async services() {
    const o = await getJSON("/api/overview");
    $("#project").textContent = o.project + (o.watching ? " · watching" : "");
    const rows = [];
    for (const s of o.services) {
      const f = s.figures;
      s.instances.forEach((i, n) => {
        rows.push(`<tr data-instance="${esc(i.id)}" data-service="${esc(s.name)}">
          <td>${n === 0 ? esc(s.name) : ""}</td><td>${esc(i.id)}</td>
          <td class="state state-${esc(i.state)}">${esc(i.state)}${s.build_failed ? ", build failed" : ""}</td>
          <td>${esc(i.address || "-")}</td><td>${uptime(i.uptime_ms)}</td>
          <td class="cpu">${cpu(i.cpu_ms)}</td><td class="mem">${mem(i.rss_bytes)}</td>
          <td class="restarts">${i.restarts}</td><td class="muted">${esc(s.build_failed || i.health || "")}</td>
          <td>${n === 0 && f ? f.rps.toFixed(1) : ""}</td>
          <td class="${f && f.error_rate > 0 ? "err" : ""}">${n === 0 && f ? (f.error_rate * 100).toFixed(1) + "%" : ""}</td>
          <td>${n === 0 && f ? ms(f.p99_ms) : ""}</td>
          <td>${n === 0 ? ["restart", "stop", "start", "kill"].map((a) => `<button data-action="${a}" data-service="${esc(s.name)}">${a}</button>`).join("") + `<button data-action="scale" data-service="${esc(s.name)}">scale…</button>` : ""}</td>
        </tr>`);
      });
    }
    $("#services tbody").innerHTML = rows.join("");
  },

  async logs() {
    const params = new URLSearchParams({ service: $("#log-service").value, level: $("#log-level").value, q: $("#log-text").value, limit: "400" });
    const lines = await getJSON("/api/logs?" + params);
    const reserved = ["ts_ms", "level", "msg", "instance", "service", "trace_id", "span_id"];
    const extra = [...new Set(lines.flatMap((l) => Object.keys(l).filter((k) => !reserved.includes(k))))].slice(0, 8);
    $("#logs thead").innerHTML = `<tr><th>time</th><th>instance</th><th>level</th><th>message</th>${extra.map((k) => `<th>${esc(k)}</th>`).join("")}<th>trace</th></tr>`;
    $("#logs tbody").innerHTML = lines.map((l) => {
      const level = String(l.level || "info").toLowerCase();
      const service = String(l.instance).replace(/-\d+$/, "");
      return `<tr class="log-row" data-service="${esc(service)}" data-level="${esc(level)}">
        <td>${l.ts_ms ? clock(l.ts_ms * 1e6) : ""}</td><td>${esc(l.instance)}</td><td class="level-${esc(level)}">${esc(level)}</td><td>${esc(l.msg)}</td>
        ${extra.map((k) => `<td>${esc(typeof l[k] === "object" ? JSON.stringify(l[k]) : l[k])}</td>`).join("")}
        <td>${l.trace_id ? `<a class="trace-link" href="#traces/${esc(l.trace_id)}">${esc(l.trace_id.slice(0, 8))}</a>` : ""}</td></tr>`;
    }).join("");
    if ($("#log-follow").checked) $("#log-scroll").scrollTop = $("#log-scroll").scrollHeight;
  },

  async traces() {
    const params = new URLSearchParams({ service: $("#trace-service").value, route: $("#trace-route").value, errors: $("#trace-errors").checked ? "true" : "", limit: "100" });
    const list = await getJSON("/api/traces?" + params);
    $("#traces tbody").innerHTML = list.map((t) => `<tr class="clickable${t.trace_id === state.trace ? " selected" : ""}" data-trace="${esc(t.trace_id)}">
      <td>${clock(t.start_unix_nano)}</td><td>${esc(t.route)}</td><td class="${t.error ? "err" : ""}">${t.status ?? (t.error ? "ERR" : "")}</td>
      <td>${ms(t.duration_ms)}</td><td>${esc(t.services.join(" → "))}</td><td>${t.spans}</td></tr>`).join("");
    if (state.trace && !state.traceShown) await showTrace(state.trace);
  },

  async map() {
    const m = await getJSON("/api/map?minutes=" + $("#map-minutes").value);
    drawMap(m);
  },

  async metrics() {
    const m = await getJSON("/api/metrics?minutes=5");
    drawMetrics(m);
  },
};

const state = { page: "services", trace: null, traceShown: false };

async function showTrace(id) {
  state.trace = id;
  state.traceShown = true;
  let t;
  try {
    t = await getJSON("/api/traces/" + encodeURIComponent(id));
  } catch (e) {
    $("#trace-view").innerHTML = `<p class="err">${esc(e.message)}</p>`;
    return;
  }
  const total = Math.max(t.summary.duration_ms, 0.001);
  const services = [...new Set(t.spans.map((s) => s.service))];
  $("#trace-view").innerHTML = `<h2 id="trace-title">${esc(t.summary.route)} · ${ms(t.summary.duration_ms)} · <span id="span-count">${t.spans.length}</span> spans · <span id="service-count">${services.length}</span> services</h2>
    <table id="waterfall"><thead><tr><th>span</th><th>kind</th><th>duration</th><th class="bar-cell">0 – ${ms(total)}</th></tr></thead><tbody>
    ${t.spans.map((s, n) => `<tr class="span-row clickable${s.error ? " err" : ""}" data-index="${n}" data-service="${esc(s.service)}" data-kind="${esc(KINDS[s.kind] || s.kind)}">
      <td style="padding-left:${8 + s.depth * 14}px">${s.critical ? "★ " : ""}${esc(s.service)} <b>${esc(s.name)}</b>${s.orphan ? ' <span class="muted">(orphan)</span>' : ""}</td>
      <td class="kind">${esc(KINDS[s.kind] || s.kind)}</td><td>${ms(s.duration_ms)}</td>
      <td class="bar-cell"><div class="bar-track"><div class="bar${s.error ? " err" : ""}${s.critical ? " critical" : ""}" style="left:${(s.start_ms / total) * 100}%;width:${Math.max((s.duration_ms / total) * 100, 0.3)}%"></div></div></td></tr>`).join("")}
    </tbody></table>
    <div id="span-detail" class="hint">Click a span for its attributes and events. ★ marks the critical path.</div>
    <h3>Logs of this trace</h3>
    <div id="trace-logs">${t.logs.length ? t.logs.map((l) => `<pre>+${ms(l.time_ms)} ${esc(l.instance)} ${esc(l.severity)} ${esc(l.body)}</pre>`).join("") : '<p class="hint">No log records.</p>'}</div>`;
  $("#waterfall").addEventListener("click", (e) => {
    const row = e.target.closest(".span-row");
    if (!row) return;
    const s = t.spans[Number(row.dataset.index)];
    $("#span-detail").classList.remove("hint");
    $("#span-detail").innerHTML = `<b>${esc(s.service)} ${esc(s.name)}</b> (${esc(KINDS[s.kind] || s.kind)}, ${esc(s.instance)})${s.error ? ` <span class="err">ERROR ${esc(s.status_message || "")}</span>` : ""}
      <pre>${esc(JSON.stringify(s.attributes, null, 2))}</pre>${s.events && s.events.length ? `<pre>${esc(JSON.stringify(s.events, null, 2))}</pre>` : ""}`;
  });
}

function drawMap(m) {
  const svg = $("#map");
  const W = 900, H = 520;
  const services = m.nodes.filter((n) => n.kind === "service");
  const subjects = m.nodes.filter((n) => n.kind === "subject");
  // Callers left, callees right: a node's column is the length of the longest call chain into it.
  const depth = {};
  const incoming = (id) => m.edges.filter((e) => e.to === id && e.from !== id);
  const visit = (id, seen = new Set()) => {
    if (depth[id] != null) return depth[id];
    if (seen.has(id)) return 0;
    seen.add(id);
    const d = Math.max(0, ...incoming(id).map((e) => visit(e.from, seen) + 1));
    return (depth[id] = d);
  };
  m.nodes.forEach((n) => visit(n.id));
  const columns = {};
  m.nodes.forEach((n) => (columns[depth[n.id]] ||= []).push(n));
  const ncol = Object.keys(columns).length || 1;
  const pos = {};
  Object.entries(columns).forEach(([c, nodes]) => nodes.forEach((n, i) => {
    pos[n.id] = { x: 90 + (Number(c) * (W - 180)) / Math.max(ncol - 1, 1), y: ((i + 1) * H) / (nodes.length + 1) };
  }));
  const edges = m.edges.map((e) => {
    const a = pos[e.from], b = pos[e.to];
    const rate = e.rps >= 0.1 ? e.rps.toFixed(1) + "/s" : e.calls + (e.calls === 1 ? " call" : " calls");
    const label = rate + (e.error_rate > 0 ? " · " + (e.error_rate * 100).toFixed(0) + "% err" : "");
    return `<g class="edge${e.error_rate > 0 ? " failing" : ""}" data-from="${esc(e.from)}" data-to="${esc(e.to)}" data-calls="${e.calls}">
      <line x1="${a.x}" y1="${a.y}" x2="${b.x}" y2="${b.y}" marker-end="url(#arrow)"></line>
      <text x="${(a.x + b.x) / 2}" y="${(a.y + b.y) / 2 - 6}" text-anchor="middle">${esc(label)}</text></g>`;
  });
  const nodes = [...services, ...subjects].map((n) => {
    const p = pos[n.id];
    const label = n.id.replace(/^bus:/, "⇢ ");
    return `<g class="node ${esc(n.kind)}" data-id="${esc(n.id)}"><rect x="${p.x - 70}" y="${p.y - 16}" width="140" height="32" rx="6"></rect>
      <text x="${p.x}" y="${p.y + 4}" text-anchor="middle">${esc(label)}</text></g>`;
  });
  svg.innerHTML = `<defs><marker id="arrow" viewBox="0 0 10 10" refX="78" refY="5" markerWidth="8" markerHeight="8" orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" fill="currentColor"></path></marker></defs>${edges.join("")}${nodes.join("")}`;
}

const charts = {};
function drawMetrics(m) {
  const root = $("#metrics");
  if (!m.series.length) {
    root.innerHTML = '<p class="hint">No requests in the last 5 minutes.</p>';
    for (const k of Object.keys(charts)) delete charts[k];
    return;
  }
  for (const s of m.series) {
    const key = s.service + " " + s.route;
    const data = [m.times, s.rps, s.p50_ms, s.p99_ms];
    if (charts[key]) {
      charts[key].setData(data);
      continue;
    }
    const box = document.createElement("div");
    box.className = "chart";
    box.dataset.key = key;
    box.innerHTML = `<h3>${esc(s.service)} · ${esc(s.route)}</h3>`;
    root.appendChild(box);
    charts[key] = new uPlot({
      width: 420, height: 180,
      scales: { x: { time: true }, rps: { auto: true }, ms: { auto: true } },
      series: [{}, { label: "req/s", scale: "rps", stroke: "#2f6fed" }, { label: "p50 ms", scale: "ms", stroke: "#1f8a4c" }, { label: "p99 ms", scale: "ms", stroke: "#d0342c" }],
      axes: [{}, { scale: "rps", label: "req/s" }, { scale: "ms", side: 1, label: "ms", grid: { show: false } }],
    }, data, box);
  }
}

// ---- navigation, actions, live updates ------------------------------------------------------

async function refresh() {
  try {
    await views[state.page]();
  } catch (e) {
    console.error(e);
  }
}

function show(page) {
  const [name, arg] = page.split("/");
  state.page = views[name] ? name : "services";
  document.querySelectorAll(".page").forEach((p) => p.classList.toggle("active", p.id === "page-" + state.page));
  document.querySelectorAll("nav a").forEach((a) => a.classList.toggle("active", a.dataset.page === state.page));
  if (state.page === "traces" && arg) {
    state.trace = arg;
    state.traceShown = false;
  }
  refresh();
}

window.addEventListener("hashchange", () => show(location.hash.slice(1)));

document.addEventListener("click", async (e) => {
  const button = e.target.closest("button[data-action]");
  if (button) {
    let action = button.dataset.action;
    const service = button.dataset.service;
    if (action === "scale") {
      const n = prompt(`How many instances of ${service}?`);
      if (!n) return;
      action = "scale?replicas=" + encodeURIComponent(n);
    }
    const out = $("#action-result");
    out.className = "";
    out.textContent = `${service}: ${action.split("?")[0]}…`;
    const r = await fetch(`/api/services/${encodeURIComponent(service)}/${action}`, { method: "POST", headers: { "x-msctl-token": token } });
    const body = await r.json().catch(() => ({ ok: false, message: r.statusText }));
    out.className = body.ok ? "ok" : "bad";
    out.textContent = body.message;
    refresh();
    return;
  }
  const row = e.target.closest("#traces tr[data-trace]");
  if (row) {
    document.querySelectorAll("#traces tr.selected").forEach((r) => r.classList.remove("selected"));
    row.classList.add("selected");
    history.replaceState(null, "", "#traces/" + row.dataset.trace);
    showTrace(row.dataset.trace);
  }
});

for (const id of ["#log-service", "#log-level", "#log-follow", "#map-minutes", "#trace-errors"]) $(id).addEventListener("change", refresh);
for (const id of ["#log-text", "#trace-service", "#trace-route"]) $(id).addEventListener("input", refresh);
for (const form of document.querySelectorAll("form")) form.addEventListener("submit", (e) => e.preventDefault());

// The services for the log filter, keeping what is chosen when the list is filled again.
function fillServices(o) {
  const select = $("#log-service");
  const chosen = select.value;
  select.innerHTML = '<option value="">all services</option>' + o.services.map((s) => `<option>${esc(s.name)}</option>`).join("");
  select.value = chosen;
}
getJSON("/api/overview").then(fillServices);

let pending = null;
// EventSource sends no headers: the stream alone takes the token in its address.
const live = new EventSource("/api/live?token=" + encodeURIComponent(token));
live.addEventListener("change", () => {
  // A burst of changes is one refresh.
  if (pending) return;
  pending = setTimeout(() => {
    pending = null;
    if (state.page !== "logs" || $("#log-follow").checked) refresh();
  }, 100);
});
live.onopen = () => $("#live").classList.remove("off");
live.onerror = () => $("#live").classList.add("off");

show(location.hash.slice(1) || "services");
