// The log viewer of one step run: however long the log, only the rows on screen are in the DOM (fixed row
// height, one row per event seq). It opens at the tail (one request), reads pages by seq from the log API when
// they are scrolled to, follows live lines from the socket (rehearsal.js hands them over), searches on the
// server, and links every line (#sr<step run>-L<seq>). Plain JavaScript, no dependency.
(function () {
  "use strict";

  const ROW = 18;                 // px, every row
  const PAGE = 500;               // rows per page fetched from the API
  const MAX_PAGES = 120;          // pages kept in memory (60,000 rows); the farthest from view are dropped
  const MAX_SCROLL_PX = 8000000;  // a scroll area taller than this is scaled (browsers cap element heights)
  const HASH = /^#sr(\d+)-L(\d+)$/;

  const h = (tag, attrs, ...kids) => {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") el.className = v;
      else if (k === "text") el.textContent = v;
      else if (k.startsWith("data-") || k.startsWith("aria-") || k === "role" || k === "for") el.setAttribute(k, v);
      else el[k] = v;
    }
    for (const kid of kids) if (kid !== null && kid !== undefined) el.append(kid);
    return el;
  };
  const fmtSecs = (s) => s < 60 ? `${s.toFixed(1)} s` : s < 3600 ? `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`
    : `${(s / 3600).toFixed(1)} h`;
  const fmtTs = (iso) => { const d = new Date(iso); return isNaN(d) ? "" : d.toISOString().slice(11, 23); };

  // --- ANSI SGR (colours, bold, italic, underline); any other escape sequence is dropped from the text ---
  const ANSI = /\x1b\[([0-9;]*)([A-Za-z])|\x1b[()][A-Za-z0-9]|\x1b./g;
  const PALETTE = ["#1f2937", "#f87171", "#4ade80", "#facc15", "#60a5fa", "#e879f9", "#22d3ee", "#e5e7eb"];
  const BRIGHT = ["#6b7280", "#fca5a5", "#86efac", "#fde047", "#93c5fd", "#f0abfc", "#67e8f9", "#ffffff"];
  function xterm256(n) {
    if (n < 8) return PALETTE[n];
    if (n < 16) return BRIGHT[n - 8];
    if (n >= 232) { const g = 8 + (n - 232) * 10; return `rgb(${g},${g},${g})`; }
    n -= 16; const c = (v) => (v ? 55 + v * 40 : 0);
    return `rgb(${c(Math.floor(n / 36))},${c(Math.floor(n / 6) % 6)},${c(n % 6)})`;
  }
  function applySgr(style, params) {
    const p = params === "" ? [0] : params.split(";").map((x) => parseInt(x || "0", 10));
    for (let i = 0; i < p.length; i++) {
      const c = p[i];
      if (c === 0) { for (const k of Object.keys(style)) delete style[k]; }
      else if (c === 1) style.bold = true; else if (c === 22) delete style.bold;
      else if (c === 3) style.italic = true; else if (c === 23) delete style.italic;
      else if (c === 4) style.underline = true; else if (c === 24) delete style.underline;
      else if (c >= 30 && c <= 37) style.fg = PALETTE[c - 30]; else if (c >= 90 && c <= 97) style.fg = BRIGHT[c - 90];
      else if (c >= 40 && c <= 47) style.bg = PALETTE[c - 40]; else if (c >= 100 && c <= 107) style.bg = BRIGHT[c - 100];
      else if (c === 39) delete style.fg; else if (c === 49) delete style.bg;
      else if ((c === 38 || c === 48) && p[i + 1] === 5) { style[c === 38 ? "fg" : "bg"] = xterm256(p[i + 2] || 0); i += 2; }
      else if ((c === 38 || c === 48) && p[i + 1] === 2) {
        style[c === 38 ? "fg" : "bg"] = `rgb(${p[i + 2] || 0},${p[i + 3] || 0},${p[i + 4] || 0})`; i += 4;
      }
    }
  }
  // [{text, style}] pieces of one line; the text is always set with textContent, never parsed as HTML.
  function ansiPieces(line) {
    if (line.indexOf("\x1b") < 0) return [{ text: line, style: null }];
    const out = []; const style = {}; let last = 0; let m;
    ANSI.lastIndex = 0;
    while ((m = ANSI.exec(line))) {
      if (m.index > last) out.push({ text: line.slice(last, m.index), style: Object.assign({}, style) });
      if (m[2] === "m") applySgr(style, m[1]);
      last = ANSI.lastIndex;
    }
    if (last < line.length) out.push({ text: line.slice(last), style: Object.assign({}, style) });
    return out;
  }
  const plain = (line) => line.indexOf("\x1b") < 0 ? line : line.replace(ANSI, "");

  function eventText(row) {
    const p = row.payload || {};
    if (row.kind === "progress") {
      return `progress ${p.done}${p.total !== null && p.total !== undefined ? " / " + p.total : ""} ${p.unit || ""}`;
    }
    if (row.kind === "data") return `data ${p.key}`;
    if (row.kind === "phase") return p.name || "";
    return JSON.stringify(p);
  }

  class LogViewer {
    constructor({ stepRun, api, title }) {
      this.stepRun = stepRun;
      this.api = `${api}${stepRun}/`;
      this.total = 0;              // highest seq known
      this.pages = new Map();      // page number -> {rows: [], fetchedUpTo, used}
      this.pending = new Map();    // page number -> Promise
      this.sections = [];          // from the API: {name, seq, end_seq, seconds, open}
      this.collapsed = new Set();  // phase seqs whose section is collapsed
      this.following = true;
      this.newLines = 0;
      this.showTs = false;
      this.hits = null;            // {q, count, seqs, index}
      this.current = null;         // the seq of the highlighted line (a hit or a permalink)
      this.savedTop = 0;
      // a scroll is the user's only right after their wheel, key, touch or pointer in the log: the viewer's own
      // scrolling, and the reset when the page re-renders the step around it, must not pause following
      this.userAt = -1e9;
      this.pointerHeld = false;
      this.opened = null;
      this.failedAt = new Map();   // page number -> when its fetch failed (retried after a pause, not in a loop)
      this.renderedKey = "";
      this.build(title);
    }

    // --- DOM ---------------------------------------------------------------------------------------------
    build(title) {
      const id = `lv-${this.stepRun}`;
      this.status = h("span", { class: "lv-status", role: "status", "aria-live": "polite" });
      this.search = h("input", { type: "search", class: "lv-search", placeholder: "Search the whole log",
        "aria-label": "Search the whole log (Enter: next, Shift+Enter: previous)" });
      this.hitText = h("span", { class: "lv-hits", "aria-live": "polite" });
      const button = (text, label, fn, cls) => {
        const b = h("button", { type: "button", class: `lv-btn ${cls || ""}`, text, title: label, "aria-label": label });
        b.addEventListener("click", fn);
        return b;
      };
      this.followBtn = button("Follow", "Follow new lines (f)", () => this.follow(), "lv-follow");
      this.newBtn = button("", "Show the new lines", () => this.follow(), "lv-new");
      this.newBtn.hidden = true;
      this.tsBox = h("input", { type: "checkbox", id: `${id}-ts` });
      this.tsBox.addEventListener("change", () => { this.showTs = this.tsBox.checked; this.el.classList.toggle("lv-with-ts", this.showTs); this.render(); });
      this.toolbar = h("div", { class: "lv-toolbar", role: "toolbar", "aria-label": `Log of ${title || "step"}` },
        button("⇤ Top", "Jump to the first line (Home)", () => this.jumpTop()),
        button("⇥ Bottom", "Jump to the last line (End)", () => this.jumpBottom()),
        button("Next error", "Next line on stderr or saying error (e)", () => this.nextError()),
        this.followBtn,
        h("span", { class: "lv-search-box" }, this.search,
          button("↑", "Previous hit (Shift+Enter)", () => this.stepHit(-1)),
          button("↓", "Next hit (Enter)", () => this.stepHit(1)), this.hitText),
        h("label", { class: "lv-ts", for: `${id}-ts` }, this.tsBox, " timestamps"),
        h("a", { class: "lv-download", href: `${this.api}log/raw/`, download: `step-run-${this.stepRun}.log`,
          text: "Download" }),
        this.status);
      this.search.addEventListener("keydown", (e) => {
        if (e.key === "Enter") { e.preventDefault(); this.onSearchEnter(e.shiftKey); }
        else if (e.key === "Escape") { this.search.value = ""; this.clearSearch(); }
      });
      this.spacer = h("span", { class: "lv-spacer" });
      this.rows = h("span", { class: "lv-rows" });
      // the scroll container keeps the class "log" (the page's styles and tests know it)
      this.viewport = h("pre", { class: "log lv-viewport", tabIndex: 0, id, role: "log",
        "aria-label": `Output of ${title || "the step"}; Home/End, PageUp/PageDown, / to search, e: next error` },
        this.spacer, this.rows);
      this.viewport.addEventListener("scroll", () => this.onScroll(), { passive: true });
      const touched = () => { this.userAt = performance.now(); };
      for (const type of ["wheel", "touchstart", "touchmove", "keydown"]) this.viewport.addEventListener(type, touched, { passive: true });
      this.viewport.addEventListener("pointerdown", () => { this.pointerHeld = true; touched(); });
      window.addEventListener("pointerup", () => { if (this.pointerHeld) { this.pointerHeld = false; touched(); } });
      this.viewport.addEventListener("keydown", (e) => this.onKey(e));
      this.viewport.addEventListener("click", (e) => this.onClick(e));
      this.full = h("div", { class: "lv-full", hidden: true });
      this.el = h("div", { class: "lv", "data-step-run": String(this.stepRun) }, this.toolbar, this.viewport,
        this.newBtn, this.full);
      this.el.hidden = true;
      document.addEventListener("selectionchange", () => {
        const sel = document.getSelection();
        if (sel && !sel.isCollapsed && this.viewport.contains(sel.anchorNode)) this.pause();
      });
    }

    say(text) { this.status.textContent = text; }

    // --- rows and pages ----------------------------------------------------------------------------------
    pageOf(seq) { return Math.floor((seq - 1) / PAGE); }

    row(seq) {
      const page = this.pages.get(this.pageOf(seq));
      if (!page) return undefined;
      page.used = performance.now();
      return page.rows[(seq - 1) % PAGE];
    }

    put(row) {
      const n = this.pageOf(row.seq);
      let page = this.pages.get(n);
      if (!page) { page = { rows: new Array(PAGE), fetchedUpTo: 0, used: performance.now() }; this.pages.set(n, page); }
      page.rows[(row.seq - 1) % PAGE] = row;
      if (row.kind === "phase" && !this.sections.some((s) => s.seq === row.seq)) this.refreshSections();
    }

    learnTotal(lastSeq) {
      if (lastSeq > this.total) {
        const grew = lastSeq - this.total;
        this.total = lastSeq;
        if (!this.following) this.newLines += grew;
        this.el.hidden = false;
      }
    }

    async fetchJson(url) {
      const r = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } });
      if (!r.ok) throw new Error(`HTTP ${r.status}`);
      return r.json();
    }

    loadPage(n) {
      if (this.pending.has(n)) return this.pending.get(n);
      if (performance.now() - (this.failedAt.get(n) || -1e9) < 3000) return Promise.resolve();
      const p = this.fetchJson(`${this.api}log/?after=${n * PAGE}&limit=${PAGE}`).then((body) => {
        body.lines.forEach((r) => this.put(r));
        const page = this.pages.get(n);
        if (page) page.fetchedUpTo = Math.min((n + 1) * PAGE, body.last_seq);
        this.learnTotal(body.last_seq);
        this.evict();
      }).catch((e) => { this.failedAt.set(n, performance.now()); this.say(`could not load lines: ${e.message}`); }).finally(() => {
        this.pending.delete(n); this.schedule();
      });
      this.pending.set(n, p);
      return p;
    }

    evict() {
      if (this.pages.size <= MAX_PAGES) return;
      const keep = new Set([this.pageOf(Math.max(1, this.total))]);
      const [first] = this.visibleRange();
      keep.add(this.pageOf(Math.max(1, this.rowToSeq(first))));
      const byAge = [...this.pages.entries()].filter(([n]) => !keep.has(n)).sort((a, b) => a[1].used - b[1].used);
      for (const [n] of byAge.slice(0, this.pages.size - MAX_PAGES)) this.pages.delete(n);
    }

    // --- sections (phases) and the row <-> seq mapping with collapsed sections -----------------------------
    async refreshSections() {
      if (this.sectionsPending) return;
      this.sectionsPending = true;
      try {
        this.sections = (await this.fetchJson(`${this.api}log/sections/`)).sections;
      } catch (e) { /* the rows still show; durations come with the next refresh */ }
      this.sectionsPending = false;
      this.schedule();
    }

    hiddenRanges() {
      return this.sections.filter((s) => this.collapsed.has(s.seq) && s.end_seq > s.seq)
        .map((s) => [s.seq + 1, Math.min(s.end_seq, this.total)]).filter(([a, b]) => b >= a);
    }

    rowCount() { return this.total - this.hiddenRanges().reduce((n, [a, b]) => n + (b - a + 1), 0); }

    rowToSeq(i) {
      let seq = i + 1;
      for (const [a, b] of this.hiddenRanges()) if (seq >= a) seq += b - a + 1;
      return seq;
    }

    seqToRow(seq) {
      let row = seq - 1;
      for (const [a, b] of this.hiddenRanges()) {
        if (seq > b) row -= b - a + 1;
        else if (seq >= a) row -= seq - a + 1;
      }
      return row;
    }

    toggleSection(seq) {
      if (this.collapsed.has(seq)) this.collapsed.delete(seq); else this.collapsed.add(seq);
      this.schedule();
    }

    // --- scrolling: a scaled scroll area when the rows are too many for one element -------------------------
    geometry() {
      const rows = this.rowCount();
      const view = this.viewport.clientHeight || 320;
      const height = Math.min(rows * ROW, MAX_SCROLL_PX);
      const visible = Math.ceil(view / ROW) + 1;
      return { rows, view, height, visible, scaled: rows * ROW > MAX_SCROLL_PX };
    }

    // The position in the whole log, in px as if every row were in the page: the scroll position itself, or
    // scaled to it when the scroll area is capped (then the bottom of the scroll is the bottom of the log).
    logPx(g) {
      const top = this.viewport.scrollTop;
      if (!g.scaled) return top;
      return (top / Math.max(1, g.height - g.view)) * Math.max(0, g.rows * ROW - g.view);
    }

    visibleRange() {
      const g = this.geometry();
      const first = Math.max(0, Math.min(Math.floor(this.logPx(g) / ROW), Math.max(0, g.rows - 1)));
      return [first, Math.min(g.rows, first + g.visible)];
    }

    scrollToRow(row, where) {
      const g = this.geometry();
      const top = where === "center" ? row - Math.floor(g.visible / 2) : row;
      const px = Math.max(0, Math.min(top * ROW, g.rows * ROW - g.view));
      this.spacer.style.height = `${g.height}px`;
      if (!g.scaled) this.setTop(px);
      else this.setTop((px / Math.max(1, g.rows * ROW - g.view)) * Math.max(1, g.height - g.view));
      this.savedTop = this.viewport.scrollTop;
      this.schedule();
    }

    setTop(px) { this.viewport.scrollTop = px; }

    byUser() { return this.pointerHeld || performance.now() - this.userAt < 800; }

    atBottom() {
      return this.viewport.scrollTop + this.viewport.clientHeight >= this.viewport.scrollHeight - ROW;
    }

    onScroll() {
      if (!this.byUser()) { this.schedule(); return; }
      this.savedTop = this.viewport.scrollTop;
      if (this.atBottom()) { if (!this.following) this.follow(); }
      else if (this.following) this.pause();
      this.schedule();
    }

    pause() {
      if (!this.following) return;
      this.following = false;
      this.newLines = 0;
      this.say("Paused: not following new lines");
      this.schedule();
    }

    follow() {
      this.following = true;
      this.newLines = 0;
      this.say("Following new lines");
      this.scrollToRow(this.rowCount(), "top");
    }

    // --- render (once per animation frame) -----------------------------------------------------------------
    schedule() {
      if (this.frame) return;
      this.frame = requestAnimationFrame(() => { this.frame = null; this.render(); });
    }

    render() {
      if (this.el.hidden && this.total) this.el.hidden = false;
      const g = this.geometry();
      this.spacer.style.height = `${g.height}px`;
      if (this.following && g.rows) {
        const bottom = Math.max(0, g.height - g.view);
        if (Math.abs(this.viewport.scrollTop - bottom) > 1) this.setTop(bottom);
      }
      const [first, end] = this.visibleRange();
      // the first row starts where it would in the whole log, shifted to the scroll position when scaled
      const shift = g.scaled ? this.viewport.scrollTop - (this.logPx(g) - first * ROW) : first * ROW;
      this.rows.style.transform = `translateY(${shift}px)`;
      // the same rows, all loaded, drawn the same way: leave the DOM alone (a selection in it survives)
      let loaded = 0;
      for (let i = first; i < end; i++) if (this.row(this.rowToSeq(i)) !== undefined) loaded++;
      const key = [first, end, loaded, this.showTs, this.hits && this.hits.q, this.current,
        JSON.stringify(this.sections.map((s) => [s.seq, s.seconds])), [...this.collapsed].join()].join("|");
      if (key !== this.renderedKey || loaded < end - first) { this.renderedKey = key; this.drawRows(first, end); }
      this.followBtn.setAttribute("aria-pressed", String(this.following));
      this.followBtn.classList.toggle("on", this.following);
      this.newBtn.hidden = this.following || this.newLines === 0;
      if (!this.newBtn.hidden) this.newBtn.textContent = `↓ ${this.newLines.toLocaleString()} new line${this.newLines === 1 ? "" : "s"}`;
    }

    drawRows(first, end) {
      const frag = document.createDocumentFragment();
      const missing = new Set();
      for (let i = first; i < end; i++) {
        const seq = this.rowToSeq(i);
        const row = this.row(seq);
        if (row === undefined) {
          const page = this.pages.get(this.pageOf(seq));
          if (!page || seq > page.fetchedUpTo) missing.add(this.pageOf(seq));
          frag.append(h("span", { class: "lv-row lv-loading", "data-seq": String(seq) },
            h("a", { class: "lv-n", href: `#sr${this.stepRun}-L${seq}`, text: String(seq) }), "…"));
        } else frag.append(this.renderRow(row));
      }
      this.rows.replaceChildren(frag);
      for (const n of missing) this.loadPage(n);
    }

    renderRow(row) {
      const seq = row.seq;
      const cls = ["lv-row"];
      if (row.kind === "log") cls.push(row.stream === "stderr" ? "stderr" : row.stream === "info" ? "info" : "stdout");
      else cls.push(`lv-${row.kind}`);
      if (seq === this.current) cls.push("lv-current");
      const el = h("span", { class: cls.join(" "), "data-seq": String(seq) },
        h("a", { class: "lv-n", href: `#sr${this.stepRun}-L${seq}`, text: String(seq), "aria-label": `line ${seq}` }));
      if (this.showTs) el.append(h("span", { class: "lv-time", text: fmtTs(row.ts) }));
      if (row.kind === "log" && row.stream === "stderr") el.append(h("span", { class: "lv-err", text: "err", title: "stderr" }));
      if (row.kind === "phase") {
        const s = this.sections.find((x) => x.seq === seq);
        const closed = this.collapsed.has(seq);
        const b = h("button", { type: "button", class: "lv-section", "data-section": String(seq), "aria-expanded": String(!closed),
          text: `${closed ? "▸" : "▾"} ${eventText(row)}` });
        el.append(b, h("span", { class: "lv-dur", text: s ? ` ${fmtSecs(s.seconds)}${s.open ? " (running)" : ""}` +
          ` · lines ${s.seq}–${s.end_seq}` : "" }));
        return el;
      }
      if (row.kind !== "log") { el.append(h("span", { class: "lv-text", text: eventText(row) })); return el; }
      const text = h("span", { class: "lv-text" });
      const q = this.hits && this.hits.q ? this.hits.q.toLowerCase() : null;
      for (const piece of ansiPieces(row.line)) {
        const span = piece.style && Object.keys(piece.style).length ? h("span") : null;
        if (span) {
          const st = piece.style;
          if (st.fg) span.style.color = st.fg; if (st.bg) span.style.background = st.bg;
          if (st.bold) span.style.fontWeight = "bold"; if (st.italic) span.style.fontStyle = "italic";
          if (st.underline) span.style.textDecoration = "underline";
        }
        const target = span || text;
        this.appendMarked(target, piece.text, q);
        if (span) text.append(span);
      }
      el.append(text);
      if (row.truncated) {
        el.append(h("button", { type: "button", class: "lv-showall", "data-show": String(seq),
          text: `show all (${row.length.toLocaleString()} characters)` }));
      }
      return el;
    }

    appendMarked(target, text, q) {
      if (!q) { target.append(text); return; }
      const low = text.toLowerCase();
      let at = 0, i;
      while ((i = low.indexOf(q, at)) >= 0) {
        if (i > at) target.append(text.slice(at, i));
        target.append(h("mark", { text: text.slice(i, i + q.length) }));
        at = i + q.length;
      }
      if (at < text.length) target.append(text.slice(at));
    }

    // --- input ---------------------------------------------------------------------------------------------
    onClick(e) {
      const section = e.target.closest("[data-section]");
      if (section) { this.toggleSection(Number(section.dataset.section)); return; }
      const show = e.target.closest("[data-show]");
      if (show) { this.showAll(Number(show.dataset.show)); return; }
      const link = e.target.closest("a.lv-n");
      if (link) {
        e.preventDefault();
        const seq = Number(link.textContent);
        history.replaceState(null, "", `#sr${this.stepRun}-L${seq}`);
        this.current = seq; this.pause(); this.schedule();
        this.say(`Line ${seq}: its link is in the address bar`);
      }
    }

    onKey(e) {
      if (e.target !== this.viewport) return;
      if (e.key === "Home") { e.preventDefault(); this.jumpTop(); }
      else if (e.key === "End") { e.preventDefault(); this.jumpBottom(); }
      else if (e.key === "/") { e.preventDefault(); this.search.focus(); }
      else if (e.key === "e") { e.preventDefault(); this.nextError(); }
      else if (e.key === "f") { e.preventDefault(); this.follow(); }
      else if (e.key === "n" || e.key === "N") { e.preventDefault(); this.stepHit(e.key === "n" ? 1 : -1); }
    }

    jumpTop() { this.pause(); this.scrollToRow(0, "top"); this.say("First line"); }

    jumpBottom() { this.follow(); }

    async goTo(seq, why) {
      seq = Math.max(1, Math.min(seq, Math.max(this.total, seq)));
      for (const s of this.sections) if (this.collapsed.has(s.seq) && seq > s.seq && seq <= s.end_seq) this.collapsed.delete(s.seq);
      this.pause();
      this.current = seq;
      await this.loadPage(this.pageOf(seq));
      this.scrollToRow(this.seqToRow(seq), "center");
      if (why) this.say(why);
    }

    async nextError() {
      const from = this.current || this.rowToSeq(this.visibleRange()[0]);
      try {
        const body = await this.fetchJson(`${this.api}log/errors/?after=${from}&limit=1`);
        if (body.seqs.length) await this.goTo(body.seqs[0], `Error at line ${body.seqs[0]}`);
        else this.say("No error after this line");
      } catch (e) { this.say(`could not search: ${e.message}`); }
    }

    // --- search (on the server, over the whole log) ---------------------------------------------------------
    async onSearchEnter(back) {
      const q = this.search.value;
      if (!q) { this.clearSearch(); return; }
      if (this.hits && this.hits.q === q) { this.stepHit(back ? -1 : 1); return; }
      await this.runSearch(q);
    }

    async runSearch(q) {
      this.say("Searching…");
      try {
        const body = await this.fetchJson(`${this.api}log/search/?q=${encodeURIComponent(q)}`);
        this.learnTotal(body.last_seq);
        this.hits = { q, count: body.count, seqs: body.seqs, index: -1 };
        if (!body.count) { this.hitText.textContent = "no match"; this.say(`No line contains “${q}”`); this.schedule(); return; }
        // the first hit at or after the line in view
        const here = this.rowToSeq(this.visibleRange()[0]);
        const next = body.seqs.findIndex((s) => s >= here);
        this.hits.index = next < 0 ? 0 : next;
        await this.showHit();
      } catch (e) { this.say(`could not search: ${e.message}`); }
    }

    async stepHit(dir) {
      if (!this.hits || !this.hits.count) { if (this.search.value) await this.runSearch(this.search.value); return; }
      let i = this.hits.index + dir;
      if (i >= this.hits.seqs.length && this.hits.seqs.length < this.hits.count) {
        const after = this.hits.seqs[this.hits.seqs.length - 1];
        const body = await this.fetchJson(`${this.api}log/search/?q=${encodeURIComponent(this.hits.q)}&after=${after}`);
        this.hits.seqs = this.hits.seqs.concat(body.seqs);
      }
      if (i >= this.hits.seqs.length) i = 0;
      if (i < 0) i = this.hits.seqs.length - 1;
      this.hits.index = i;
      await this.showHit();
    }

    async showHit() {
      const seq = this.hits.seqs[this.hits.index];
      this.hitText.textContent = `${(this.hits.index + 1).toLocaleString()} / ${this.hits.count.toLocaleString()}`;
      await this.goTo(seq, `Match ${this.hits.index + 1} of ${this.hits.count} at line ${seq}`);
    }

    clearSearch() { this.hits = null; this.hitText.textContent = ""; this.schedule(); }

    async showAll(seq) {
      this.say(`Loading line ${seq}…`);
      try {
        const body = await this.fetchJson(`${this.api}log/line/?seq=${seq}`);
        const close = h("button", { type: "button", class: "lv-btn", text: "Close" });
        close.addEventListener("click", () => { this.full.hidden = true; this.full.replaceChildren(); this.viewport.focus(); });
        this.full.replaceChildren(h("p", { text: `Line ${seq}, ${body.length.toLocaleString()} characters ` }, close),
          h("pre", { class: "lv-full-text", text: plain(body.line) }));
        this.full.hidden = false;
        close.focus();
        this.say(`Line ${seq} shown whole below the log`);
      } catch (e) { this.say(`could not load line ${seq}: ${e.message}`); }
    }

    // --- from outside: open, live frames, the socket's skipped ranges, re-attachment -----------------------
    async open(at) {
      this.refreshSections();
      if (at) { this.opened = this.goTo(at, `Line ${at}`); return this.opened; }
      this.opened = this.fetchJson(`${this.api}log/?tail=${PAGE}`).then((body) => {
        body.lines.forEach((r) => this.put(r));
        const last = body.lines.length ? body.lines[body.lines.length - 1].seq : 0;
        const page = this.pages.get(this.pageOf(Math.max(1, last)));
        if (page) page.fetchedUpTo = Math.max(page.fetchedUpTo, body.last_seq);
        // the tail's first page may be partly before the tail: those rows load when scrolled to
        const head = this.pages.get(this.pageOf(Math.max(1, body.last_seq - PAGE + 1)));
        if (head && head !== page) head.fetchedUpTo = 0;
        this.learnTotal(body.last_seq);
        this.say(body.last_seq ? `${body.last_seq.toLocaleString()} lines; following` : "No output yet");
        this.schedule();
      }).catch((e) => this.say(`could not load the log: ${e.message}`));
      return this.opened;
    }

    onEvent(frame) {
      const row = { seq: frame.seq, ts: frame.ts, kind: frame.kind };
      if (frame.kind === "log") {
        Object.assign(row, { line: frame.payload.line, stream: frame.payload.stream });
        if (frame.payload.truncated) Object.assign(row, { truncated: true, length: frame.payload.length });
      } else row.payload = frame.payload;
      this.put(row);
      const page = this.pages.get(this.pageOf(frame.seq));
      // a live row right after what the page holds extends what is known of the page
      if (page && page.fetchedUpTo === frame.seq - 1) page.fetchedUpTo = frame.seq;
      this.learnTotal(frame.seq);
      this.schedule();
    }

    onSkipped(upto) { this.learnTotal(upto); this.schedule(); }

    finished() { if (this.done) return; this.done = true; this.refreshSections(); }

    reattached() {
      if (this.following) this.schedule();
      else { this.setTop(this.savedTop); this.schedule(); }
    }
  }

  LogViewer.fromHash = function (hash) {
    const m = HASH.exec(hash || "");
    return m ? { stepRun: Number(m[1]), seq: Number(m[2]) } : null;
  };

  window.LogViewer = LogViewer;
})();
