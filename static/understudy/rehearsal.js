// Rehearsal page: renders steps from the API state, streams step events over a
// WebSocket (live from where each log viewer is, resumable by per-step-run seq), sends actions.
// Each step run's output is a LogViewer (logviewer.js): it reads its log over the log API and
// takes the live lines from here.
(function () {
  "use strict";
  const cfg = window.UNDERSTUDY;
  let state = JSON.parse(document.getElementById("initial-state").textContent);
  const lastSeq = {};      // step_run id -> highest seq the socket has delivered (or started after)
  const viewers = {};      // step_run id -> LogViewer
  const permalink = window.LogViewer.fromHash(location.hash);
  const progress = {};     // step_run id -> latest progress payload
  const phase = {};        // step_run id -> latest phase name
  let ws = null, retryMs = 500, refreshTimer = null;

  const $ = (sel, el) => (el || document).querySelector(sel);
  const h = (tag, attrs, ...kids) => {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") el.className = v; else if (k.startsWith("data-")) el.setAttribute(k, v);
      else if (k === "text") el.textContent = v; else el[k] = v;
    }
    for (const kid of kids) if (kid !== null && kid !== undefined) el.append(kid);
    return el;
  };
  const fmtBytes = (n) => {
    if (n === null || n === undefined) return "?";
    const u = ["B", "KiB", "MiB", "GiB", "TiB"]; let i = 0;
    while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
    return `${n.toFixed(i ? 1 : 0)} ${u[i]}`;
  };
  const fmtSecs = (s) => s === null || s === undefined ? "" : s < 90 ? `${s.toFixed(1)} s` : `${(s / 60).toFixed(1)} min`;

  function progressText(p) {
    if (!p) return "";
    if (p.lag !== undefined) return `lag ${p.lag}` + (p.unit === "lag" ? ` (caught up ${p.done} of ${p.total})` : "");
    if (p.lag_files !== undefined) return `lag: ${p.lag_files} file(s), ${fmtBytes(p.lag_bytes)} still to move (pass ${p.pass_n})`;
    const isBytes = p.unit === "bytes";
    const done = isBytes ? fmtBytes(p.done) : p.done;
    const total = p.total === null || p.total === undefined ? "?" : isBytes ? fmtBytes(p.total) : p.total;
    let t = `${done} / ${total} ${isBytes ? "" : p.unit}`;
    if (p.rate) t += ` · ${isBytes ? fmtBytes(p.rate) + "/s" : p.rate.toFixed(1) + "/s"}`;
    if (p.eta) t += ` · ETA ${fmtSecs(p.eta)}`;
    return t;
  }

  function actionButton(label, action, extra, opts) {
    const b = h("button", { type: "button", text: label, class: (opts && opts.cls) || "" });
    b.dataset.action = action;
    b.addEventListener("click", () => {
      const data = Object.assign({}, extra);
      if (opts && opts.noteFrom) {
        data.note = opts.noteFrom.value;
      }
      send(action, data);
    });
    return b;
  }

  function renderStep(step) {
    const run = step.run;
    const status = run ? run.status : "not_started";
    const li = h("li", { class: `step s-${status}${step.is_next ? " next" : ""}`, id: `step-${step.id}` });
    li.dataset.status = status;
    const head = h("div", { class: "step-head" },
      h("span", { class: "pos", text: String(step.position) }),
      h("span", { class: "title", text: step.title }),
      h("span", { class: `kind target-${step.target}`, text: `${step.kind} → ${(state.targets || {})[step.target] || step.target}` }),
      step.needs_approval ? h("span", { class: "tag", text: "needs approval" }) : null,
      h("span", { class: `badge st-${status}`, text: run ? `${run.status_label}${run.attempt > 1 ? " (attempt " + run.attempt + ")" : ""}` : "Not started" }),
      h("span", { class: "est", text: `est. ${fmtSecs(step.estimated_seconds)}${run && run.duration !== null ? " · took " + fmtSecs(run.duration) : ""}` }),
    );
    li.append(head);
    if (step.summary) li.append(h("pre", { class: "summary", text: step.summary }));
    if (run) {
      const p = run.id in progress ? progress[run.id] : (run.progress && Object.keys(run.progress).length ? run.progress : null);
      if (p || status === "running") {
        const pct = p && p.total ? Math.min(100, (100 * p.done) / p.total) : null;
        const bar = h("div", { class: "progress" + (pct === null ? " indeterminate" : "") },
          h("div", { class: "bar" }));
        bar.firstChild.style.width = pct === null ? "100%" : `${pct.toFixed(1)}%`;
        li.append(h("div", { class: "progress-row" }, bar,
          h("span", { class: "progress-text", text: (phase[run.id] ? `[${phase[run.id]}] ` : "") + progressText(p) })));
      }
      if (run.carried_from) {
        const c = run.carried_from;
        li.append(h("p", { class: "muted carried" }, `Done in dress rehearsal #${c.rehearsal}`,
          c.duration !== null ? ` (took ${fmtSecs(c.duration)}) · ` : " · ",
          h("a", { href: c.url, text: "its log and result" }), "; not run again: this run continues on its workbench."));
      }
      if (run.waiting_note) li.append(h("p", { class: "waiting-note", text: run.waiting_note }));
      if (run.error) li.append(h("p", { class: "error", text: run.error }));
      if (run.approval) {
        const a = run.approval;
        li.append(h("p", { class: "muted", text: a.decision === "pending"
          ? `Approval requested by ${a.requested_by}; another ops member must approve.`
          : `${a.decision} by ${a.approver}${a.note ? ": " + a.note : ""}` }));
      }
      if (run.result && run.result.note) li.append(h("p", { class: "muted", text: `Note: ${run.result.note}` }));
      if (run.panel_html) li.append(renderPanel(run));
      li.append(viewerFor(run, step).el);
    }
    if (cfg.canOperate && state.status === "running") {
      const bar = h("div", { class: "row actions" });
      const note = h("input", { type: "text", placeholder: "note", class: "note" });
      if (run && run.status === "awaiting_approval" && run.approval && run.approval.requested_by === cfg.username) {
        bar.append(h("span", { class: "muted", text: "You asked for this step: another ops member approves it (four eyes)." }));
      } else if (run && run.status === "awaiting_approval") {
        bar.append(note, actionButton("Approve", "approve", { step_run: run.id }, { noteFrom: note }),
          actionButton("Reject", "reject", { step_run: run.id }, { noteFrom: note, cls: "danger" }));
      } else if (run && run.status === "awaiting_confirmation") {
        bar.append(note, actionButton("Confirm", "confirm", { step_run: run.id }, { noteFrom: note }));
      } else if (run && (run.status === "failed" || run.status === "cancelled")) {
        bar.append(actionButton("Retry", "retry", { step_run: run.id }));
      } else if (step.is_next && !run) {
        bar.append(actionButton("Run step", "advance", {}));
      }
      if (step.is_next && (!run || ["failed", "cancelled", "awaiting_approval", "awaiting_confirmation"].includes(run.status))) {
        if (!bar.contains(note)) bar.append(note);
        bar.append(actionButton("Skip", "skip", { step: step.id }, { noteFrom: note, cls: "secondary" }));
      }
      if (bar.childElementCount) li.append(bar);
    }
    return li;
  }

  // What is special about a step kind is rendered on the server by the kind's own panel
  // template; its buttons name an action (data-action) and the step run (data-step-run).
  // A note comes from the .note input of the button's row, lists from checked boxes with
  // data-list in the same form.
  function renderPanel(run) {
    const panel = h("div", { class: "panel" });
    panel.innerHTML = run.panel_html;
    panel.querySelectorAll("button[data-action]").forEach((b) => b.addEventListener("click", () => {
      const data = {};
      if (b.dataset.stepRun) data.step_run = Number(b.dataset.stepRun);
      const row = b.closest(".row");
      const note = row && row.querySelector("input.note");
      if (note) data.note = note.value;
      const form = b.closest("form");
      if (form) {
        form.querySelectorAll("input[data-list]").forEach((box) => {
          const list = (data[box.dataset.list] = data[box.dataset.list] || []);
          if (box.checked) list.push(Number(box.value));
        });
      }
      if (b.dataset.confirm && !confirm(b.dataset.confirm)) return;
      send(b.dataset.action, data);
    }));
    return panel;
  }

  function viewerFor(run, step) {
    let v = viewers[run.id];
    if (!v) {
      v = viewers[run.id] = new window.LogViewer({ stepRun: run.id, api: cfg.stepRunApi, title: step.title });
      const at = permalink && permalink.stepRun === run.id ? permalink.seq : null;
      v.open(at).then(() => { if (at) v.el.scrollIntoView({ block: "start" }); });
    }
    if (!["running", "queued", "preparing"].includes(run.status)) v.finished();
    return v;
  }

  function renderClone() {
    const box = $("#clone-panel");
    const clones = state.clones || [];
    if (!clones.length) { box.hidden = true; return; }
    box.hidden = false;
    box.replaceChildren(h("h2", {}, clones.length > 1 ? "Clones" : "Clone"));
    for (const c of clones) {
      const cons = c.consistency || {};
      const changed = (cons.changed || []).length, vanished = (cons.vanished || []).length;
      box.append(
        h("h3", { class: `clone-${c.role}` }, c.label + " ",
          h("span", { class: `badge st-${c.status === "running" ? "succeeded" : c.status === "failed" ? "failed" : "skipped"}`, text: c.status_label }),
          c.from_rehearsal ? h("span", { class: "muted", text: ` (built by dress rehearsal #${c.from_rehearsal})` }) : null),
        h("p", {}, h("code", { text: c.domain || "(no domain yet)" }), ` · ssh ${c.ssh || "—"} · host key ${c.host_key_fingerprint || "—"}`,
          c.point_in_time ? ` · copy of production as of ${c.point_in_time}` : "", c.keep ? " · kept after the rehearsal" : ""),
        c.role === "workbench" && cons.summary ? h("p", { class: changed || vanished ? "error" : "muted", text: cons.summary }) : null,
      );
    }
    const own = clones.filter((c) => !c.from_rehearsal && c.status !== "destroyed");
    if (cfg.canOperate && own.length) {
      const b = h("button", { type: "button", class: "danger", text: own.length > 1 ? "Destroy the clones" : "Destroy clone" });
      b.dataset.action = "destroy_clone";
      b.addEventListener("click", () => { if (confirm("Destroy the clone VM(s), their disks and staging tree?")) send("destroy_clone", {}); });
      box.append(b);
    }
  }

  function renderProductionRuns() {
    const p = $("#production-runs");
    const runs = state.production_runs || [];
    p.hidden = runs.length === 0;
    p.replaceChildren(...(runs.length ? ["Production run(s) continuing from this dress rehearsal: ",
      ...runs.flatMap((id, i) => [i ? ", " : "", h("a", { href: `/rehearsals/${id}/`, text: `#${id}` })])] : []));
  }

  function render() {
    renderClone();
    const ol = $("#steps");
    const focused = document.activeElement;   // a log viewer moves to the new step row: keep its focus
    ol.replaceChildren(...state.steps.map(renderStep));
    if (focused && focused !== document.activeElement && focused.isConnected) focused.focus({ preventScroll: true });
    Object.values(viewers).forEach((v) => { if (v.el.isConnected) v.reattached(); });
    const badge = $("#rehearsal-status");
    badge.textContent = state.status_label;
    badge.className = `badge st-${state.status}`;
    const start = $("#btn-start"), cancel = $("#btn-cancel");
    if (start) start.hidden = state.status !== "pending";
    if (cancel) cancel.hidden = ["succeeded", "cancelled"].includes(state.status);
    const real = $("#btn-run-for-real");
    if (real) real.hidden = !state.can_run_for_real;
    renderProductionRuns();
    if (state.timeline) renderTimeline(state.timeline);
  }

  function renderTimeline(entries) {
    const tbody = h("tbody");
    for (const e of entries) {
      tbody.append(h("tr", {}, h("td", { text: e.at }), h("td", { text: e.actor || "system" }),
        h("td", {}, h("code", { text: e.action })), h("td", { text: e.message })));
    }
    const table = $("#timeline table");
    if (table) table.replaceChild(tbody, table.tBodies[0]);
  }


  function onFrame(f) {
    if (f.type === "status") { scheduleRefresh(); return; }
    if (f.type !== "event") return;
    const prev = lastSeq[f.step_run] || 0;
    if (f.seq <= prev) return; // never show a line twice
    lastSeq[f.step_run] = f.seq;
    if (viewers[f.step_run]) viewers[f.step_run].onEvent(f);
    if (f.kind === "log") return;
    if (f.kind === "progress") { progress[f.step_run] = f.payload; updateProgress(f.step_run); }
    else if (f.kind === "phase") {
      // a new phase has no progress yet: show it as busy rather than the last phase's numbers
      phase[f.step_run] = f.payload.name; progress[f.step_run] = null; updateProgress(f.step_run);
    }
  }

  function updateProgress(runId) {
    const step = state.steps.find((s) => s.run && s.run.id === runId);
    if (!step) return;
    const li = document.getElementById(`step-${step.id}`);
    const text = li && $(".progress-text", li);
    if (!text) { scheduleRefresh(); return; }
    const p = progress[runId];
    text.textContent = (phase[runId] ? `[${phase[runId]}] ` : "") + progressText(p);
    const pct = p && p.total ? Math.min(100, (100 * p.done) / p.total) : null;
    const bar = $(".progress", li);
    bar.classList.toggle("indeterminate", pct === null);
    $(".bar", li).style.width = pct === null ? "100%" : `${pct.toFixed(1)}%`;
  }

  function scheduleRefresh() {
    if (refreshTimer) return;
    refreshTimer = setTimeout(refresh, 150);
  }

  async function refresh() {
    refreshTimer = null;
    const r = await fetch(cfg.api, { credentials: "same-origin" });
    if (r.ok) { state = await r.json(); render(); }
    // fragments of the page that follow the run's state (the Gantt chart) listen for this
    document.body.dispatchEvent(new CustomEvent("understudy:status"));
  }

  function connect() {
    const proto = location.protocol === "https:" ? "wss" : "ws";
    // the first connection names no step run: each starts at its last seq (the viewers read the rest over
    // the log API); a reconnection names what it has, so nothing is missed or doubled
    const after = encodeURIComponent(JSON.stringify(lastSeq));
    ws = new WebSocket(`${proto}://${location.host}/ws/rehearsals/${cfg.rehearsal}/?after=${after}`);
    const live = $("#live");
    ws.onopen = () => { retryMs = 500; live.textContent = "live"; live.className = "live on"; };
    ws.onmessage = (m) => {
      const msg = JSON.parse(m.data);
      if (msg.type === "batch") msg.frames.forEach(onFrame);
      else if (msg.type === "replayed") {
        for (const [sr, seq] of Object.entries(msg.last)) lastSeq[sr] = Math.max(lastSeq[sr] || 0, seq);
        scheduleRefresh();
      } else if (msg.type === "skipped") {
        lastSeq[msg.step_run] = Math.max(lastSeq[msg.step_run] || 0, msg.upto);
        if (viewers[msg.step_run]) viewers[msg.step_run].onSkipped(msg.upto);
      }
      else if (msg.type === "action.result") showActionResult(msg);
    };
    ws.onclose = (ev) => {
      live.textContent = ev.code === 4403 ? "no access" : "reconnecting…"; live.className = "live off";
      if (ev.code === 4403 || ev.code === 4404) return;
      setTimeout(connect, retryMs);
      retryMs = Math.min(retryMs * 2, 10000);
    };
  }

  function showActionResult(msg) {
    const p = $("#action-error");
    if (msg.ok) { p.hidden = true; scheduleRefresh(); }
    else { p.textContent = msg.error; p.hidden = false; }
  }

  async function send(action, data) {
    const r = await fetch(cfg.actionUrl + action + "/", {
      method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRFToken": cfg.csrf },
      body: JSON.stringify(data || {}),
    });
    let body = {};
    try { body = await r.json(); } catch (e) { body = {}; }
    if (body.state) { state = body.state; render(); }
    showActionResult({ ok: r.ok, error: body.detail || `HTTP ${r.status}` });
  }

  document.querySelectorAll("#toolbar button[data-action]").forEach((b) =>
    b.addEventListener("click", () => {
      if (b.dataset.action === "run_for_real" && !confirm("Create the production run? It will change the real production host, continuing from this dress rehearsal's repaired workbench.")) return;
      send(b.dataset.action, {});
    }));
  // a line's link pasted or followed on this page: that log goes to the line
  window.addEventListener("hashchange", () => {
    const at = window.LogViewer.fromHash(location.hash);
    const v = at && viewers[at.stepRun];
    if (v) { v.goTo(at.seq, `Line ${at.seq}`); v.el.scrollIntoView({ block: "start" }); }
  });
  window.understudyDebug = { lastSeq, viewers };
  render();
  connect();
})();
