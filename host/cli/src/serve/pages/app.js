// The pages of `zu serve`: the runs list, one run as a timeline, two runs
// compared. Everything comes from the JSON API; new events arrive as
// server-sent events and are drawn in place.
"use strict";

// The session is an HttpOnly cookie the browser sends by itself; a change
// (log out) also carries the page's CSRF token. No token is ever in a URL.
const CSRF = document.querySelector('meta[name="csrf-token"]')?.content || "";
const api = async (url) => {
  const r = await fetch(url, { credentials: "same-origin" });
  if (r.status === 401) { location.href = "/login"; throw new Error("logged out"); }
  if (!r.ok) throw new Error(url + ": HTTP " + r.status);
  return r.json();
};
const logout = async () => {
  await fetch("/logout", { method: "POST", credentials: "same-origin", headers: { "x-csrf-token": CSRF } });
  location.href = "/login";
};
const $ = (sel, root = document) => root.querySelector(sel);
const el = (tag, attrs = {}, ...kids) => {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v; else if (k === "text") e.textContent = v; else e.setAttribute(k, v);
  }
  for (const k of kids) if (k != null) e.append(k);
  return e;
};
const json = (v) => typeof v === "string" ? v : JSON.stringify(v, null, 1);
const short = (id) => String(id).slice(0, 8);
const ms = (n) => n >= 1000 ? (n / 1000).toFixed(1) + " s" : n + " ms";
const usd = (d) => d == null ? "—" : "$" + d.toFixed(4);
const setLive = (on, text) => { const l = $("#live"); l.textContent = text; l.className = "live" + (on ? "" : " off"); };

function stream(query, onEvent) {
  const es = new EventSource("/api/stream" + query);
  es.onopen = () => setLive(true, "live");
  es.onerror = () => setLive(false, "reconnecting…");
  es.onmessage = (m) => onEvent(JSON.parse(m.data));
  es.addEventListener("lagged", () => location.reload());
  return es;
}

// ---- the runs list ---------------------------------------------------------

async function runsView(app) {
  $("#where").textContent = "runs";
  const params = new URLSearchParams(location.search);
  const state = { status: params.get("status") || "", q: params.get("q") || "", page: +(params.get("page") || 1) };
  const status = el("select", { id: "status" }, ...["", "success", "escalate", "terminal", "unfinished"].map(
    (s) => el("option", { value: s, text: s || "any status" })));
  status.value = state.status;
  const text = el("input", { id: "text", type: "search", placeholder: "query, task, trace, reason", value: state.q });
  const pager = el("span", { class: "muted", id: "pager" });
  const prev = el("button", { text: "‹ newer" }), next = el("button", { text: "older ›" });
  const compare = el("button", { id: "compare", text: "compare selected" });
  const table = el("table", { id: "runs" });
  app.replaceChildren(el("div", { class: "controls" }, status, text, prev, next, pager, compare), table);
  const head = el("tr", {}, ...["", "task", "trace", "query", "status", "steps", "tokens", "dollars", "started", "duration"].map((h) => el("th", { text: h })));
  const body = el("tbody");
  table.append(el("thead", {}, head), body);
  let total = 0;
  const load = async () => {
    const q = `?status=${encodeURIComponent(state.status)}&q=${encodeURIComponent(state.q)}&page=${state.page}&per_page=50`;
    const data = await api("/api/runs" + q);
    total = data.total;
    pager.textContent = `${data.total} runs${data.ready ? "" : " (reading the log…)"} · page ${data.page}`;
    const checked = new Set([...body.querySelectorAll("input:checked")].map((c) => c.value));
    body.replaceChildren(...data.runs.map((r) => el("tr", { "data-task": r.task_id },
      el("td", {}, el("input", { type: "checkbox", value: r.task_id, ...(checked.has(r.task_id) ? { checked: "" } : {}) })),
      el("td", {}, el("a", { href: "/runs/" + r.task_id, text: short(r.task_id) })),
      el("td", { class: "muted", text: short(r.trace_id) }),
      el("td", { text: r.query }),
      el("td", {}, el("span", { class: "status " + r.status, text: r.status }), r.reason ? el("div", { class: "muted", text: r.reason }) : null),
      el("td", { class: "num", text: r.steps + (r.replayed ? ` (+${r.replayed} replayed)` : "") }),
      el("td", { class: "num", text: r.tokens }),
      el("td", { class: "num", text: usd(r.usd) }),
      el("td", { text: r.started.replace("T", " ").slice(0, 19) }),
      el("td", { class: "num", text: ms(r.duration_ms) }))));
  };
  const go = () => { state.page = 1; history.replaceState(null, "", `/?status=${state.status}&q=${encodeURIComponent(state.q)}`); load(); };
  status.onchange = () => { state.status = status.value; go(); };
  text.oninput = () => { state.q = text.value; go(); };
  prev.onclick = () => { if (state.page > 1) { state.page--; load(); } };
  next.onclick = () => { if (state.page * 50 < total) { state.page++; load(); } };
  compare.onclick = () => {
    const picked = [...body.querySelectorAll("input:checked")].map((c) => c.value);
    if (picked.length === 2) location.href = `/compare?a=${picked[0]}&b=${picked[1]}`;
    else alert("select two runs");
  };
  await load();
  // A run that is still going updates in place: reload the page of rows at most every 250 ms.
  let pending = null;
  stream("", () => { if (!pending) pending = setTimeout(() => { pending = null; load(); }, 250); });
}

// ---- one run ---------------------------------------------------------------

async function allEvents(task) {
  const out = [];
  let after = 0;
  for (;;) {
    const page = await api(`/api/runs/${task}/events?after_seq=${after}&limit=10000`);
    out.push(...page.events);
    if (!page.more) return out;
    after = page.next_after_seq;
  }
}

// Draws events one by one into `root`: a card per turn, with its calls,
// observations, verdicts and blocks; escalations, validation and the end between.
class Timeline {
  constructor(root) { this.root = root; this.turn = null; this.lastSeq = 0; this.turnStart = null; }
  line(parent, cls, tag, body, seq) {
    const e = el("div", { class: "event " + cls, "data-seq": seq }, el("span", { class: "tag", text: tag }), body);
    parent.append(e);
    return e;
  }
  add(ev, live) {
    if (ev.seq <= this.lastSeq) return;
    this.lastSeq = ev.seq;
    const p = ev.payload, t = ev.type, into = this.turn ? this.turn.body : this.root;
    let shown = null;
    if (t === "harness.turn.started") {
      if (this.turn) this.turn.time.textContent = ms(Date.parse(ev.ts) - this.turnStart);
      this.turnStart = Date.parse(ev.ts);
      const time = el("span", { class: "meta" }), tokens = el("span", { class: "meta" });
      const body = el("div");
      const card = el("section", { class: "turn", "data-seq": ev.seq },
        el("h3", {}, el("span", { text: `Step ${p.step}${p.replay ? " · replayed" : ""}` }), tokens, time), body);
      this.root.append(card);
      this.turn = { card, body, time, tokens };
      shown = card;
    } else if (t === "harness.turn.completed") {
      const u = p.usage || {};
      if (this.turn) this.turn.tokens.textContent = `tier ${p.tier} · ${p.model || "model?"} · ${(u.input_tokens ?? u.prompt_tokens ?? 0)} in / ${(u.output_tokens ?? u.completion_tokens ?? 0)} out`;
      shown = this.line(into, "model", "model", el("pre", { text: p.text == null ? "(no text)" : json(p.text) }), ev.seq);
    } else if (t === "harness.tool.invoked") {
      shown = this.line(into, "tool-call", "call", el("code", { text: `${p.tool}(${json(p.args || {})})` }), ev.seq);
    } else if (t === "harness.tool.returned") {
      shown = this.line(into, "observation", "observation", el("pre", { text: json(p.observation) }), ev.seq);
    } else if (t === "harness.detector.fired") {
      shown = this.line(into, "verdict " + p.severity, "verdict",
        el("span", {}, el("b", { text: p.detector + " " }), el("span", { class: "sev", text: p.severity }), " " + (p.detail ?? "")), ev.seq);
    } else if (t === "harness.defense.blocked") {
      shown = this.line(into, "block", "blocked", el("span", { text: `${p.kind} on ${p.tool}: ${p.detail ?? ""}` }), ev.seq);
    } else if (t === "harness.plugin.contained" || t === "harness.check.failed") {
      shown = this.line(into, "block", t.split(".")[1], el("span", { text: json(p) }), ev.seq);
    } else if (t === "harness.task.escalated") {
      const text = p.exhausted ? `no tier left above ${p.tier} (${p.reason})` : `tier ${p.from_tier} → ${p.to_tier} (${p.reason}${p.detail ? ": " + p.detail : ""})`;
      shown = el("div", { class: "escalation", "data-seq": ev.seq, text: "escalated: " + text });
      this.root.append(shown); this.turn = null;
    } else if (t === "harness.validation.failed") {
      shown = el("div", { class: "validation", "data-seq": ev.seq, text: `validation ${p.severity}: ${p.detector} ${p.detail ?? ""}` });
      this.root.append(shown);
    } else if (t === "harness.task.completed" || t === "harness.task.terminal") {
      const ok = t === "harness.task.completed";
      shown = el("div", { class: "final " + (ok ? "success" : "terminal"), "data-seq": ev.seq },
        el("b", { text: ok ? "final value " : "ended: " }), ok ? el("pre", { text: json(p.value) }) : el("span", { text: p.reason }));
      this.root.append(shown); this.turn = null;
    } else if (t === "harness.task.resumed") {
      shown = el("div", { class: "escalation", "data-seq": ev.seq, text: `resumed at step ${p.step}` });
      this.root.append(shown); this.turn = null;
    }
    if (shown && live) shown.classList.add("new");
  }
}

async function runView(app, task) {
  $("#where").textContent = "run " + task;
  const [run, events] = await Promise.all([api("/api/runs/" + task), allEvents(task)]);
  const head = el("div", { id: "summary" },
    el("span", { class: "status " + run.status, id: "run-status", text: run.status }), " ",
    el("b", { text: run.query }), " ",
    el("span", { class: "muted", text: `task ${run.task_id} · trace ${run.trace_id} · ${run.steps} steps · ${run.tokens} tokens · ${usd(run.usd)} · ${ms(run.duration_ms)}` }));
  const root = el("div", { id: "timeline" });
  app.replaceChildren(head, root);
  const tl = new Timeline(root);
  for (const ev of events) tl.add(ev, false);
  stream(`?task=${task}&after_seq=${tl.lastSeq}`, async (ev) => {
    tl.add(ev, true);
    if (/task\.(completed|terminal|escalated|resumed)/.test(ev.type)) {
      const r = await api("/api/runs/" + task);
      const s = $("#run-status"); s.textContent = r.status; s.className = "status " + r.status;
    }
  });
}

// ---- two runs compared -----------------------------------------------------

function steps(events) {
  const out = [];
  let cur = null;
  for (const ev of events) {
    const p = ev.payload;
    if (ev.type === "harness.turn.started") { cur = { label: `${p.step}${p.replay ? "r" : ""}`, tool: [], args: [], observation: [], verdict: [] }; out.push(cur); }
    if (!cur) continue;
    if (ev.type === "harness.tool.invoked") { cur.tool.push(p.tool); cur.args.push(json(p.args || {})); }
    if (ev.type === "harness.tool.returned") cur.observation.push(json(p.observation));
    if (ev.type === "harness.detector.fired") cur.verdict.push(`${p.detector} ${p.severity}`);
    if (ev.type === "harness.turn.completed" && p.text != null) cur.text = json(p.text);
  }
  return out;
}

async function compareView(app, a, b) {
  $("#where").textContent = `compare ${short(a)} ↔ ${short(b)}`;
  const [ea, eb, ra, rb] = await Promise.all([allEvents(a), allEvents(b), api("/api/runs/" + a), api("/api/runs/" + b)]);
  const sa = steps(ea), sb = steps(eb);
  const table = el("table", { class: "cmp", id: "compare-table" },
    el("tr", {}, el("th", { text: "step" }), ...[ra, rb].map((r) => el("th", {},
      el("a", { href: "/runs/" + r.task_id, text: short(r.task_id) }), " ", el("span", { class: "status " + r.status, text: r.status })))));
  let diffs = 0;
  for (let i = 0; i < Math.max(sa.length, sb.length); i++) {
    const x = sa[i], y = sb[i];
    for (const field of ["tool", "args", "observation", "verdict"]) {
      const vx = x ? x[field].join("\n") : "", vy = y ? y[field].join("\n") : "";
      if (!vx && !vy) continue;
      const differ = vx !== vy;
      if (differ) diffs++;
      table.append(el("tr", { "data-field": field, ...(differ ? { "data-diff": "" } : {}) },
        el("td", { class: "step", text: `${i + 1} ${field}` }),
        el("td", { class: differ ? "diff" : "" }, el("pre", { text: vx || "—" })),
        el("td", { class: differ ? "diff" : "" }, el("pre", { text: vy || "—" }))));
    }
  }
  app.replaceChildren(el("p", { id: "diff-count", text: `${sa.length} vs ${sb.length} steps · ${diffs} differences marked` }), table);
  setLive(true, "static");
}

// ---- routing ---------------------------------------------------------------

(async () => {
  $("#logout")?.addEventListener("click", logout);
  const app = $("#app");
  try {
    const path = location.pathname;
    if (path.startsWith("/runs/")) await runView(app, path.slice(6));
    else if (path === "/compare") {
      const q = new URLSearchParams(location.search);
      await compareView(app, q.get("a"), q.get("b"));
    } else await runsView(app);
  } catch (e) {
    app.replaceChildren(el("p", { class: "status terminal", text: String(e) }));
  }
})();
