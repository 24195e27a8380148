// forkyard monitor: one page, no build step. Reads /api/series once, then
// follows /api/events (server-sent events, read through fetch so that the
// bearer token travels in a header, never in a URL).
"use strict";

const state = {
  token: null,
  who: null,
  snap: null,
  series: {},        // pool -> array of points (oldest first)
  charts: {},        // pool -> {key: {plot, sig}}
  retention: 600,
  filter: "all",
  abort: null,
};

const $ = (sel, root = document) => root.querySelector(sel);
const el = (tag, attrs = {}, ...kids) => {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? "" : v);
  }
  for (const k of kids.flat()) if (k !== null && k !== undefined) e.append(k);
  return e;
};

// ---- formatting -------------------------------------------------------------
const fmt = {
  rate(v) {
    if (v === undefined || v === null) return "–";
    const s = v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2);
    return s.includes(".") ? s.replace(/\.?0+$/, "") : s;
  },
  int(v) { return v === undefined || v === null ? "–" : Math.round(v).toLocaleString("en"); },
  ms(v) { return v === undefined || v === null ? "–" : v >= 1000 ? (v / 1000).toFixed(2) + " s" : v >= 10 ? v.toFixed(0) + " ms" : v.toFixed(1) + " ms"; },
  mib(b) { return b === undefined || b === null ? "–" : (b / 1048576).toFixed(1) + " MiB"; },
  pct(v) { return v === undefined || v === null ? "–" : v.toFixed(0) + "%"; },
  dur(s) {
    if (s === undefined || s === null) return "–";
    if (s < 60) return s.toFixed(0) + "s";
    if (s < 3600) return Math.floor(s / 60) + "m " + Math.floor(s % 60) + "s";
    return Math.floor(s / 3600) + "h " + Math.floor((s % 3600) / 60) + "m";
  },
  time(ms) { const d = new Date(ms); return d.toLocaleTimeString("en-GB", { hour12: false }) + "." + String(d.getMilliseconds()).padStart(3, "0"); },
  clock(ms) { return new Date(ms).toLocaleTimeString("en-GB", { hour12: false }); },
};

// ---- auth ---------------------------------------------------------------------
function readToken() {
  const m = location.hash.match(/token=([^&]+)/);
  if (m) {
    sessionStorage.setItem("forkyard-token", decodeURIComponent(m[1]));
    history.replaceState(null, "", location.pathname);
  }
  return sessionStorage.getItem("forkyard-token");
}

async function api(path, opts = {}) {
  const headers = Object.assign({}, opts.headers || {});
  if (state.token) headers["Authorization"] = "Bearer " + state.token;
  return fetch(path, Object.assign({}, opts, { headers }));
}

function setConn(s, text) {
  $("#conn").dataset.state = s;
  $("#conn-text").textContent = text;
}

function showSignedOut(message) {
  $("#signin-help").hidden = false;
  $("#login").hidden = false;
  $("#logout").hidden = true;
  $("#who").textContent = "";
  setConn("denied", message);
}

async function connect() {
  if (state.abort) state.abort.abort();
  state.token = readToken();
  if (!state.token) { showSignedOut("not signed in"); return; }
  const who = await api("/api/whoami").catch(() => null);
  if (!who || who.status === 401) {
    sessionStorage.removeItem("forkyard-token");
    state.token = null;
    showSignedOut(who ? "token refused" : "monitor unreachable");
    return;
  }
  state.who = await who.json();
  $("#signin-help").hidden = true;
  $("#login").hidden = true;
  $("#logout").hidden = false;
  $("#who").replaceChildren(el("span", { text: state.who.name }), el("span", { class: "role", "data-testid": "role", text: state.who.role }));
  const series = await api("/api/series").then(r => r.json()).catch(() => ({}));
  state.series = series;
  follow();
}

// Server-sent events over fetch: `event: tick` / `data: {snapshot}` blocks.
async function follow() {
  const ctl = new AbortController();
  state.abort = ctl;
  let delay = 500;
  for (;;) {
    try {
      setConn("reconnecting", "connecting…");
      const resp = await api("/api/events", { signal: ctl.signal });
      if (resp.status === 401) { showSignedOut("token refused"); return; }
      const reader = resp.body.getReader();
      const dec = new TextDecoder();
      let buf = "";
      setConn("live", "live");
      delay = 500;
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += dec.decode(value, { stream: true });
        let i;
        while ((i = buf.indexOf("\n\n")) >= 0) {
          const block = buf.slice(0, i);
          buf = buf.slice(i + 2);
          const data = block.split("\n").filter(l => l.startsWith("data: ")).map(l => l.slice(6)).join("\n");
          if (data) onTick(JSON.parse(data));
        }
      }
    } catch (e) {
      if (ctl.signal.aborted) return;
    }
    setConn("reconnecting", "reconnecting…");
    await new Promise(r => setTimeout(r, delay));
    delay = Math.min(delay * 2, 5000);
  }
}

// ---- rendering ------------------------------------------------------------------
function onTick(snap) {
  state.snap = snap;
  state.retention = Math.max(2, Math.round(600 / Math.max(snap.sample_secs, 0.01)));
  for (const p of snap.pools) {
    const arr = state.series[p.name] || (state.series[p.name] = []);
    const last = arr[arr.length - 1];
    if (p.last && (!last || p.last.t > last.t)) arr.push(p.last);
    while (arr.length > state.retention) arr.shift();
  }
  $("#uptime").textContent = "up " + fmt.dur(snap.uptime_secs);
  renderAlerts(snap);
  renderOverview(snap);
  renderPools(snap);
  renderSupervisors(snap);
  renderLog(snap);
  readLogs();
}

// The action log (operators, auditors) and the security audit log
// (auditors), read every few seconds rather than at every sample.
let lastLogRead = 0;
async function readLogs() {
  const role = state.who && state.who.role;
  $("#actions-panel").hidden = !(role === "operator" || role === "auditor");
  $("#audit-panel").hidden = role !== "auditor";
  if (Date.now() - lastLogRead < 3000 || (role !== "operator" && role !== "auditor")) return;
  lastLogRead = Date.now();
  const actions = await api("/api/actions").then(r => r.ok ? r.json() : null).catch(() => null);
  if (actions) {
    const cls = { done: "info", unauthenticated: "error", forbidden: "error", rejected: "warn", failed: "error" };
    $("#actions tbody").replaceChildren(...actions.records.slice().reverse().map(r => el("tr", { class: "log-row " + (cls[r.result] || "info"), "data-result": r.result },
      el("td", { class: "t", text: fmt.time(r.at_ms) }),
      el("td", { class: "src", text: r.who + (r.role ? " (" + r.role + ")" : "") }),
      el("td", { class: "src", text: r.request }),
      el("td", {}, el("span", { class: "pill " + (r.result === "done" ? "ok" : "bad"), text: r.result + " " + r.status })),
      el("td", { class: "msg", text: r.detail }))));
  }
  if (role !== "auditor") return;
  const r = await api("/api/audit").catch(() => null);
  if (!r) return;
  const audit = await r.json().catch(() => ({}));
  if (!r.ok) {
    $("#audit-status").replaceChildren(el("span", { class: "pill off", text: audit.error || r.statusText }));
    return;
  }
  $("#audit-status").replaceChildren(el("span", { class: "pill " + (audit.intact ? "ok" : "bad"), "data-testid": "audit-intact",
    text: audit.intact ? "hash chain intact" : "TAMPERED: " + audit.findings.join("; ") }));
  $("#audit-path").textContent = `${audit.path} (${audit.lines} records)`;
  $("#audit tbody").replaceChildren(...audit.records.slice(-100).reverse().map((rec, i) => el("tr", { class: "log-row info" },
    el("td", { class: "t", text: String(rec.seq ?? audit.lines - i) }),
    el("td", { class: "msg", text: JSON.stringify(rec).slice(0, 400) }))));
}

function renderAlerts(snap) {
  const box = $("#alerts");
  const active = snap.alerts.filter(a => a.status !== "resolved");
  const resolved = snap.alerts.filter(a => a.status === "resolved").slice(0, 3);
  const rows = [];
  if (active.length === 0) {
    rows.push(el("div", { class: "alert none", "data-testid": "no-alerts" },
      `No alert firing (${snap.rules.length} rule${snap.rules.length === 1 ? "" : "s"} watching)`));
  }
  for (const a of active.concat(resolved)) {
    const label = a.status === "firing" ? "FIRING" : a.status === "pending" ? "PENDING" : "RESOLVED";
    const when = a.status === "resolved" ? "resolved " + fmt.clock(a.resolved_at_ms)
      : a.status === "firing" ? "since " + fmt.clock(a.fired_at_ms) : "holding since " + fmt.clock(a.active_since_ms);
    rows.push(el("div", { class: "alert " + a.status, "data-alert": a.rule + ":" + a.subject, "data-status": a.status },
      el("span", { class: "pill " + (a.status === "firing" ? "bad" : a.status === "pending" ? "warn" : "off"), text: label }),
      el("span", { class: "name", text: a.rule }),
      el("span", { text: "on " + a.subject + ": " + a.condition + " — now " + fmt.rate(a.value) }),
      el("span", { class: "when", text: when })));
  }
  box.replaceChildren(...rows);
}

function stat(label, value, field, bad) {
  return el("div", { class: "stat" },
    el("div", { class: "v" + (bad ? " bad" : ""), "data-field": field, text: value }),
    el("div", { class: "l", text: label }));
}

function poolAlertClass(snap, name) {
  const a = snap.alerts.filter(x => x.subject === name && x.status !== "resolved");
  if (a.some(x => x.status === "firing")) return "bad";
  if (a.length) return "warn";
  return "ok";
}

function renderOverview(snap) {
  const cards = [];
  for (const p of snap.pools) {
    const cls = p.status === "degraded" ? "bad" : poolAlertClass(snap, p.name);
    const errs = p.last.errors_per_sec;
    cards.push(el("div", { class: "card " + cls, "data-testid": "pool-" + p.name },
      el("div", { class: "card-head" },
        el("span", { class: "kind", text: "pool" }), el("span", { class: "title", text: p.name }),
        el("span", { class: "pill " + (p.status === "degraded" ? "bad" : cls === "ok" ? "ok" : cls), "data-field": "status",
          text: p.status === "degraded" ? "breaker open" : cls === "bad" ? "alerting" : cls === "warn" ? "pending alert" : "ok" })),
      el("div", { class: "stats" },
        stat("tasks/s", fmt.rate(p.last.tasks_per_sec), "tasks_per_sec"),
        stat("errors/s", fmt.rate(errs), "errors_per_sec", errs > 0),
        stat("queued", fmt.int(p.queue_depth), "queue_depth", p.queue_depth > 0),
        stat("workers", p.workers_ready + "/" + p.workers, "workers"),
        stat("completed", fmt.int(p.totals.completed), "completed"),
        stat("failed", fmt.int(p.totals.failed), "failed", p.totals.failed > 0),
        stat("crashes", fmt.int(p.totals.crashes), "crashes", p.totals.crashes > 0),
        stat("p99 wait", fmt.ms(p.last.queue_wait.p99_ms), "queue_wait_p99")),
      p.cache ? el("div", { class: "note", "data-field": "cache",
        text: `cache: ${(p.cache.hit_rate * 100).toFixed(1)}% hits, ${fmt.int(p.cache.entries)} entries, ${fmt.mib(p.cache.bytes)}` }) : null,
      p.degraded ? el("div", { class: "note bad", text: "cannot start workers: " + p.degraded }) : null));
  }
  for (const s of snap.supervisors) {
    const running = s.children.filter(c => c.state === "running").length;
    const restarts = s.children.reduce((n, c) => n + c.restarts, 0);
    const cls = s.health === "healthy" ? poolAlertClass(snap, s.name) : "bad";
    cards.push(el("div", { class: "card " + cls, "data-testid": "supervisor-" + s.name },
      el("div", { class: "card-head" },
        el("span", { class: "kind", text: "supervisor" }), el("span", { class: "title", text: s.name }),
        el("span", { class: "pill " + (s.health === "healthy" ? "ok" : s.health === "degraded" ? "warn" : "bad"), "data-field": "health", text: s.health })),
      el("div", { class: "stats" },
        stat("running", running + "/" + s.children.length, "running"),
        stat("restarts", fmt.int(restarts), "restarts", restarts > 0),
        stat("backing off", fmt.int(s.children.filter(c => c.state === "backing_off").length), "backing_off"),
        stat("breaker open", fmt.int(s.children.filter(c => c.state === "breaker_open").length), "breaker_open")),
      s.detail ? el("div", { class: "note bad", text: s.detail }) : null));
  }
  $("#overview").replaceChildren(...cards);
}

// ---- charts -------------------------------------------------------------------
const COLORS = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#ca8a04", "#db2777"];

function chartSpecs(points) {
  const kinds = [...new Set(points.flatMap(p => Object.keys(p.errors_by_kind)))].sort();
  // Workers come and go (a crashed one is replaced by a new id), so the
  // worker charts follow slots: the i-th live worker by id at each sample.
  const slots = Math.min(8, Math.max(0, ...points.map(p => p.workers.length)));
  const bySlot = (key) => [...Array(slots).keys()].map(i => points.map(p => {
    const w = p.workers.slice().sort((a, b) => a.worker - b.worker)[i];
    return w && w[key] !== null ? w[key] : null;
  }));
  return [
    { key: "tasks", title: "Throughput (tasks/s)", series: [["completed", points.map(p => p.tasks_per_sec)]] },
    { key: "errors", title: "Errors/s by kind", series: kinds.length ? kinds.map(k => [k, points.map(p => p.errors_by_kind[k] || 0)]) : [["errors", points.map(p => p.errors_per_sec)]] },
    { key: "queue", title: "Queue depth (tasks waiting)", series: [["queued", points.map(p => p.queue_depth)]] },
    { key: "wait", title: "Queue wait (ms)", series: [["p50", points.map(p => p.queue_wait.p50_ms)], ["p99", points.map(p => p.queue_wait.p99_ms)]] },
    { key: "service", title: "Service time (ms)", series: [["p50", points.map(p => p.service.p50_ms)], ["p99", points.map(p => p.service.p99_ms)]] },
    { key: "cpu", title: "Worker CPU (% of one CPU), per worker slot", series: bySlot("cpu_pct").map((d, i) => ["slot " + (i + 1), d]) },
    { key: "rss", title: "Worker memory (RSS, MiB), per worker slot", series: bySlot("rss_mib").map((d, i) => ["slot " + (i + 1), d]) },
  ];
}

function drawCharts(pool, box, points, startUnix) {
  const charts = state.charts[pool] || (state.charts[pool] = {});
  const xs = points.map(p => startUnix + p.t);
  const width = Math.max(300, Math.floor((box.clientWidth || 900) / Math.max(1, Math.floor((box.clientWidth || 900) / 452))) - 30);
  for (const spec of chartSpecs(points)) {
    let holder = box.querySelector(`[data-chart="${spec.key}"]`);
    if (!holder) {
      holder = el("div", { class: "chart", "data-chart": spec.key, "data-testid": `chart-${pool}-${spec.key}` });
      box.append(holder);
    }
    const data = [xs, ...spec.series.map(s => s[1])];
    const sig = spec.series.map(s => s[0]).join("|") + "@" + width;
    holder.dataset.last = JSON.stringify(spec.series.map(s => s[1][s[1].length - 1] ?? null));
    holder.dataset.points = String(xs.length);
    const c = charts[spec.key];
    if (c && c.sig === sig) { c.plot.setData(data); continue; }
    if (c) c.plot.destroy();
    holder.replaceChildren();
    const opts = {
      title: spec.title, width, height: 170,
      scales: { x: { time: true }, y: { range: (u, min, max) => [0, Math.max(max * 1.1, spec.key === "cpu" ? 10 : 1)] } },
      axes: [{ stroke: "#667085", grid: { stroke: "#eef0f3" }, space: 90, values: (u, vals) => vals.map(v => fmt.clock(v * 1000)) }, { stroke: "#667085", grid: { stroke: "#eef0f3" }, size: 50 }],
      series: [{}, ...spec.series.map((s, i) => ({ label: s[0], stroke: spec.key === "errors" ? ["#dc2626", "#ea580c", "#9333ea", "#ca8a04"][i % 4] : COLORS[i % COLORS.length], width: 1.6, spanGaps: spec.key === "cpu" || spec.key === "rss", points: { show: false } }))],
      legend: { live: false },
    };
    charts[spec.key] = { plot: new uPlot(opts, data, holder), sig };
  }
}

function renderPools(snap) {
  const root = $("#pools");
  const startUnix = snap.now_ms / 1000 - snap.uptime_secs;
  for (const p of snap.pools) {
    let panel = root.querySelector(`[data-pool="${p.name}"]`);
    if (!panel) {
      panel = el("section", { class: "panel", "data-pool": p.name },
        el("div", { class: "panel-head" }, el("h2", { text: "Pool " + p.name }), el("div", { class: "spacer" }), el("div", { class: "pool-actions" })),
        el("div", { class: "charts" }),
        el("ul", { class: "verdicts" }),
        el("table", { class: "workers" }, el("thead", {}, el("tr", {}, ...["worker", "pid", "state", "in flight", "completed", "CPU", "RSS", ""].map(h => el("th", { text: h })))), el("tbody")));
      root.append(panel);
      renderPoolActions(p, panel.querySelector(".pool-actions"));
    }
    drawCharts(p.name, panel.querySelector(".charts"), state.series[p.name] || [], startUnix);
    panel.querySelector(".verdicts").replaceChildren(...p.verdicts.map(v => el("li", { text: v })));
    keyedRows(panel.querySelector("table.workers tbody"), p.worker_list, w => w.worker, (w) => el("tr", { "data-worker": w.worker },
      el("td", { text: String(w.worker) }), el("td"), el("td", {}, el("span", { class: "pill" })),
      el("td", { class: "num" }), el("td", { class: "num" }), el("td", { class: "num" }), el("td", { class: "num" }),
      el("td", { class: "actions" }, (p.actions || []).includes("recycle_worker")
        ? el("button", { "data-action": "recycle-worker", "data-pool": p.name, "data-worker": w.worker, onclick: () => act(`/api/pools/${enc(p.name)}/workers/${w.worker}/recycle`, `recycle worker ${w.worker}`) }, "recycle")
        : null)), (row, w) => {
      const td = row.children;
      td[1].textContent = w.pid ?? "–";
      td[2].firstChild.className = "pill " + ({ busy: "info", idle: "ok", starting: "warn" }[w.state] || "off");
      td[2].firstChild.textContent = w.state;
      td[3].textContent = fmt.int(w.in_flight);
      td[4].textContent = fmt.int(w.completed);
      td[5].textContent = fmt.pct(w.cpu_pct);
      td[6].textContent = fmt.mib(w.rss_bytes);
    });
  }
}

function renderPoolActions(p, box) {
  const acts = p.actions || [];
  const kids = [];
  if (acts.includes("resize")) {
    const input = el("input", { type: "number", min: "0", value: String(p.workers), "aria-label": "workers", "data-testid": "resize-" + p.name });
    kids.push(input, el("button", { "data-action": "resize", "data-pool": p.name, onclick: () => act(`/api/pools/${enc(p.name)}/resize`, `resize ${p.name}`, { workers: Number(input.value) }) }, "resize"));
  }
  if (acts.includes("breaker")) {
    kids.push(el("button", { "data-action": "breaker-open", onclick: () => act(`/api/pools/${enc(p.name)}/breaker`, "open breaker", { open: true }) }, "open breaker"));
    kids.push(el("button", { "data-action": "breaker-close", onclick: () => act(`/api/pools/${enc(p.name)}/breaker`, "close breaker", { open: false }) }, "close breaker"));
  }
  if (acts.includes("drain")) {
    kids.push(el("button", { class: "danger", "data-action": "drain", onclick: () => { if (confirm(`Drain pool ${p.name}? It stops taking tasks.`)) act(`/api/pools/${enc(p.name)}/drain`, "drain " + p.name); } }, "drain"));
  }
  box.replaceChildren(...kids);
}

const enc = encodeURIComponent;

// Rows are keyed (a child by its path, a worker by its id) and updated in
// place, so a button under the pointer stays the same element across
// samples: a click never lands on a row that was just redrawn.
function keyedRows(tbody, items, key, make, update) {
  const seen = new Set();
  let prev = null;
  for (const item of items) {
    const k = String(key(item));
    seen.add(k);
    let row = tbody.querySelector(`:scope > tr[data-key="${CSS.escape(k)}"]`);
    if (!row) { row = make(item); row.dataset.key = k; }
    update(row, item);
    const want = prev ? prev.nextSibling : tbody.firstChild;
    if (row !== want) tbody.insertBefore(row, want);
    prev = row;
  }
  for (const row of [...tbody.children]) if (!seen.has(row.dataset.key)) row.remove();
}

const STATE_CLASS = { running: "ok", starting: "info", backing_off: "warn", breaker_open: "bad", stopping: "warn", stopped: "off", exited: "off", not_started: "off" };

function childPath(s, c, op) {
  return `/api/supervisors/${enc(s.name)}/children/${c.name.split("/").map(enc).join("/")}/${op}`;
}

function renderSupervisors(snap) {
  const root = $("#supervisors");
  for (const s of snap.supervisors) {
    let panel = root.querySelector(`[data-supervisor="${CSS.escape(s.name)}"]`);
    if (!panel) {
      panel = el("section", { class: "panel", "data-supervisor": s.name },
        el("div", { class: "panel-head" }, el("h2", { text: "Supervisor " + s.name })),
        el("table", { class: "tree" },
          el("thead", {}, el("tr", {}, ...["child", "state", "pid", "up", "restarts", "last exit", "last decision (explain)", ""].map(h => el("th", { text: h })))),
          el("tbody")));
      root.append(panel);
    }
    keyedRows(panel.querySelector("tbody"), s.children, c => c.name, (c) => {
      const toggle = el("button", { onclick: () => {
        const op = toggle.dataset.action === "start-child" ? "start" : "stop";
        act(childPath(s, c, op), `${op} ${c.name}`);
      } });
      return el("tr", { "data-child": c.name },
        el("td", { class: "name", style: `padding-left:${8 + c.depth * 18}px` }, (c.depth ? "└ " : "") + c.name.split("/").pop(), c.optional ? el("span", { class: "muted", text: " (optional)" }) : null),
        el("td", {}, el("span", { class: "pill" })),
        el("td"), el("td", { class: "num" }), el("td", { class: "num", "data-field": "restarts" }), el("td"), el("td", { class: "why" }),
        el("td", { class: "actions" },
          el("button", { "data-action": "restart-child", "data-child": c.name, onclick: () => act(childPath(s, c, "restart"), `restart ${c.name}`) }, "restart"), " ",
          toggle));
    }, (row, c) => {
      row.dataset.state = c.state;
      const td = row.children;
      const pill = td[1].firstChild;
      pill.className = "pill " + (STATE_CLASS[c.state] || "off");
      pill.textContent = c.state_text;
      td[2].textContent = c.pid ?? "–";
      td[3].textContent = fmt.dur(c.uptime_secs);
      td[4].textContent = String(c.restarts);
      td[5].textContent = c.last_exit ?? "–";
      td[6].replaceChildren(...(c.last_decision ? [el("div", { text: c.last_decision.event }), el("div", { class: "d", text: "→ " + c.last_decision.decision })] : ["–"]));
      const toggle = td[7].lastChild;
      const stopped = c.state === "stopped";
      toggle.dataset.action = stopped ? "start-child" : "stop-child";
      toggle.dataset.child = c.name;
      toggle.textContent = stopped ? "start" : "stop";
    });
  }
  for (const panel of [...root.children]) if (!snap.supervisors.some(s => s.name === panel.dataset.supervisor)) panel.remove();
}

function renderLog(snap) {
  const f = state.filter;
  const keep = (e) => f === "all" || (f === "problems" ? e.level !== "info" : e.kind === f);
  const rows = snap.events.filter(keep).slice().reverse().map(e => el("tr", { class: "log-row " + e.level, "data-kind": e.kind, "data-seq": e.seq },
    el("td", { class: "t", text: fmt.time(e.at_ms) }),
    el("td", { class: "src", text: e.source }),
    el("td", { class: "src", text: e.subject ?? "" }),
    el("td", { class: "msg" }, el("span", { class: "lvl" }), e.message)));
  $("#log tbody").replaceChildren(...rows);
}

// ---- actions --------------------------------------------------------------------
let toastTimer = null;
function toast(kind, text) {
  const t = $("#toast");
  t.className = "toast " + kind;
  t.dataset.result = kind;
  t.textContent = text;
  t.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { t.hidden = true; }, 6000);
}

async function act(path, what, body) {
  toast("ok", what + "…");
  try {
    const r = await api(path, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body || {}) });
    const j = await r.json().catch(() => ({}));
    if (r.ok) toast("ok", what + ": " + (j.detail || "done"));
    else toast(r.status === 401 || r.status === 403 ? "refused" : "failed", `${what} refused (${r.status}): ${j.error || r.statusText}`);
  } catch (e) {
    toast("failed", what + " failed: " + e);
  }
}

// ---- wiring ---------------------------------------------------------------------
$("#login").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const v = $("#token").value.trim();
  if (!v) return;
  sessionStorage.setItem("forkyard-token", v);
  $("#token").value = "";
  state.charts = {};
  $("#pools").replaceChildren();
  connect();
});
$("#logout").addEventListener("click", () => {
  sessionStorage.removeItem("forkyard-token");
  if (state.abort) state.abort.abort();
  state.token = null;
  showSignedOut("signed out");
});
$("#log-filters").addEventListener("click", (ev) => {
  const b = ev.target.closest("button[data-filter]");
  if (!b) return;
  state.filter = b.dataset.filter;
  for (const x of document.querySelectorAll("#log-filters button")) x.classList.toggle("on", x === b);
  if (state.snap) renderLog(state.snap);
});
window.addEventListener("hashchange", () => { if (/token=/.test(location.hash)) { state.charts = {}; $("#pools").replaceChildren(); connect(); } });
connect();
