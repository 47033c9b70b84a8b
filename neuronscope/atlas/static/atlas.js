// The NeuronScope atlas: an index of neurons and a page per neuron, from data shards in data/.
// Every corpus string reaches the page as a text node (el() below), never as markup.
"use strict";
window.NS_DATA = window.NS_DATA || {};

(function () {
  const PAGE_ROWS = 200; // rows drawn at once, more on demand: a table's layout grows with its rows
  const SEARCH_K = 50;
  const HIST_BINS = 24;
  const $ = (id) => document.getElementById(id);
  const state = {
    index: null,
    pos: new Map(), // neuron id -> position in the index (previous / next)
    hits: null, // the served semantic search's answer for the current query, or null
    api: location.protocol.startsWith("http") ? null : false, // null: not tried yet
    seq: 0,
    rows: [], // the current filter's matches, as [neuron, search hit]
  };

  function build(node, attrs, kids) {
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") node.setAttribute("class", v);
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else if (v !== null && v !== undefined) node.setAttribute(k, String(v));
    }
    for (const kid of kids.flat(Infinity)) {
      if (kid === null || kid === undefined || kid === false) continue;
      node.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
    }
    return node;
  }
  const el = (tag, attrs, ...kids) => build(document.createElement(tag), attrs, kids);
  const svg = (tag, attrs, ...kids) => build(document.createElementNS("http://www.w3.org/2000/svg", tag), attrs, kids);

  const isNum = (x) => typeof x === "number" && Number.isFinite(x);
  // Scores as the page shows them; their terminal counterpart is neuronscope/report.py (number,
  // score_vs_control, interval, half_width, judged), to be kept alike. A score is never shown
  // alone: beside its control, and where it has one, with its 95 % interval.
  const fmt = (x, d = 2) => (isNum(x) ? x.toFixed(d) : "–");
  const pair = (score, control) => `${fmt(score)} vs ${fmt(control)}`;
  // "[0.85, 0.96]"; empty where there is none
  const interval = (ci) => (Array.isArray(ci) && ci.length === 2 && ci.every(isNum) ? `[${fmt(ci[0])}, ${fmt(ci[1])}]` : "");
  // "0.91±.05", for tables (no interval: the score alone)
  const halfWidth = (score, ci) =>
    isNum(score) && interval(ci) ? `${fmt(score)}±${fmt((ci[1] - ci[0]) / 2).replace(/^0+/, "")}` : fmt(score);
  const withCi = (score, ci) => `${fmt(score, 3)} ${interval(ci)}`.trim();
  // "0.912 [0.85, 0.96] vs words 0.801 [0.72, 0.88] vs control 0.512 [0.43, 0.60]" (no lexical given:
  // no words)
  const judged = (score, ci, control, controlCi, lexical, lexicalCi) =>
    withCi(score, ci) + (lexical === undefined ? "" : ` vs words ${withCi(lexical, lexicalCi)}`) +
    ` vs control ${withCi(control, controlCi)}`;
  // The neuron's words baseline (prefix "mode_": the mode's) as [score, ci], [] where the run has none.
  const wordsOf = (r, prefix = "") =>
    r[`${prefix}lexical_explanation`] || isNum(r[`${prefix}lexical_score`])
      ? [r[`${prefix}lexical_score`], r[`${prefix}lexical_score_ci`]] : [];
  // The score of the explanation a neuron's row shows: its modes', or where it has none its single pass's.
  const shownScore = (n) => (n.n_modes > 0 ? n.score : n.baseline_score);
  const showToken = (t) => String(t).replace(/\n/g, "⏎");
  const hashOf = (n) => `#/L${n.layer}/N${n.neuron}`;
  const idOf = (layer, neuron) => `L${layer}_N${neuron}`; // the key of a neuron in the data shards

  // Shards are scripts, not fetch()ed JSON: Chromium refuses fetch() on file:// pages.
  function load(name) {
    if (name in window.NS_DATA) return Promise.resolve(window.NS_DATA[name]);
    const file = `data/${name}.js`;
    return new Promise((resolve, reject) => {
      const s = document.createElement("script");
      s.src = file;
      s.onload = () =>
        name in window.NS_DATA ? resolve(window.NS_DATA[name]) : reject(new Error(`data shard ${file} holds no data`));
      s.onerror = () =>
        reject(new Error(`cannot load data shard ${file}: it is missing or unreadable (rebuild with \`neuronscope atlas RUN\`)`));
      document.head.append(s);
    });
  }

  function showError(err) {
    $("error").textContent = String((err && err.message) || err);
    $("error").hidden = false;
    $("loading").hidden = true;
    $("neuron-view").replaceChildren(state.index ? el("a", { href: "#/" }, "all neurons") : "");
  }

  async function route() {
    $("error").hidden = true;
    try {
      if (!state.index) await loadIndex();
      const m = location.hash.match(/^#\/L(\d+)\/N(\d+)$/);
      if (m) await showNeuron(Number(m[1]), Number(m[2]));
      else showIndex();
      $("loading").hidden = true;
    } catch (err) {
      showError(err);
    }
  }

  // -- index ------------------------------------------------------------------------------------
  async function loadIndex() {
    const data = await load("index");
    data.neurons = rowsOf(data.columns);
    state.index = data;
    data.neurons.forEach((n, i) => state.pos.set(n.id, i));
    const about = [data.model && `model ${data.model}`, data.corpus && `corpus ${data.corpus}`];
    $("meta").textContent = [...about, `${data.neurons.length} neurons`].filter(Boolean).join(" · ");
    const options = (key) => [...new Set(data.neurons.map((n) => n[key]))].sort((a, b) => a - b);
    options("layer").forEach((v) => $("f-layer").append(el("option", { value: v }, `L${v}`)));
    options("n_modes").forEach((v) => $("f-modes").append(el("option", { value: v }, String(v))));
    for (const id of ["f-layer", "f-min", "f-max", "f-modes", "f-explained"]) $(id).addEventListener("input", renderTable);
    let timer = null;
    $("f-search").addEventListener("input", () => {
      clearTimeout(timer);
      timer = setTimeout(runSearch, 200);
    });
    $("filters").addEventListener("submit", (e) => e.preventDefault());
    $("more").addEventListener("click", drawMore);
    renderTable();
  }

  // The index shard is column-wise (a key per column, not per neuron); the page works on rows.
  function rowsOf(columns) {
    const keys = Object.keys(columns);
    return columns.layer.map((layer, i) => {
      const n = { id: idOf(layer, columns.neuron[i]) };
      for (const k of keys) n[k] = columns[k][i];
      return n;
    });
  }

  function showIndex() {
    $("neuron-view").hidden = true;
    $("index-view").hidden = false;
  }

  // read once per render, not per neuron: a whole-model index has tens of thousands
  const filterValues = () => ["f-layer", "f-min", "f-max", "f-modes", "f-explained"].map((id) => $(id).value);

  function passes(n, [layer, lo, hi, modes, explained]) {
    if (layer !== "" && n.layer !== Number(layer)) return false;
    const score = shownScore(n);
    if (lo !== "" && !(isNum(score) && score >= Number(lo))) return false;
    if (hi !== "" && !(isNum(score) && score <= Number(hi))) return false;
    if (modes !== "" && n.n_modes !== Number(modes)) return false;
    if (explained !== "" && (n.status === "ok") !== (explained === "yes")) return false;
    return true;
  }

  function textMatch(n, q) {
    const texts = [...n.modes.map((m) => m.explanation), n.baseline_explanation, ...n.top_tokens];
    return texts.some((t) => typeof t === "string" && t.toLowerCase().includes(q));
  }

  // Served (`neuronscope atlas serve`): search by meaning through /api/search, the CLI's search.
  // Opened from a file or a plain static host: substring search over explanations and top tokens.
  async function runSearch() {
    const q = $("f-search").value.trim();
    const seq = ++state.seq;
    let hits = null;
    if (q && state.api !== false) {
      try {
        const r = await fetch(`api/search?q=${encodeURIComponent(q)}&k=${SEARCH_K}`);
        if (!r.ok) throw new Error(`search endpoint answered ${r.status}`);
        hits = (await r.json()).hits;
        state.api = true;
      } catch (err) {
        state.api = false;
      }
    }
    if (seq !== state.seq) return; // a newer query is under way
    state.hits = hits;
    renderTable();
  }

  function matching() {
    const q = $("f-search").value.trim().toLowerCase();
    const neurons = state.index.neurons;
    if (!q) return neurons.map((n) => [n, null]);
    if (!state.hits) return neurons.filter((n) => textMatch(n, q)).map((n) => [n, null]);
    const seen = new Set();
    const out = [];
    for (const h of state.hits) {
      const id = idOf(h.layer, h.neuron);
      if (seen.has(id) || !state.pos.has(id)) continue;
      seen.add(id);
      out.push([neurons[state.pos.get(id)], h]);
    }
    return out;
  }

  function renderTable() {
    const values = filterValues();
    state.rows = matching().filter(([n]) => passes(n, values));
    $("neurons").tBodies[0].replaceChildren();
    drawMore();
    $("search-mode").textContent = $("f-search").value.trim()
      ? state.hits ? "search by meaning" : "text search" : "";
  }

  function drawMore() {
    const body = $("neurons").tBodies[0];
    const [rows, drawn] = [state.rows, body.rows.length];
    body.append(...rows.slice(drawn, drawn + PAGE_ROWS).map(([n, hit]) => tableRow(n, hit)));
    const left = rows.length - body.rows.length;
    const shown = left > 0 ? ` (first ${body.rows.length} shown)` : "";
    $("count").textContent = `${rows.length} of ${state.index.neurons.length} neurons${shown}`;
    $("more").hidden = left <= 0;
    $("more").textContent = `show ${Math.min(left, PAGE_ROWS)} more`;
  }

  function explanationCell(n, hit) {
    if (hit) return `${hit.polarity < 0 ? "negative side " : ""}${hit.mode >= 0 ? `mode ${hit.mode}` : "single pass"}: ${hit.explanation || ""} (similarity ${fmt(hit.match)})`;
    if (n.status === "unexplained") return el("span", { class: "muted" }, "not explained");
    if (n.status !== "ok") return el("span", { class: "muted" }, `explain ${n.status}`);
    if (!n.modes.length) return [el("span", { class: "muted" }, "single pass: "), n.baseline_explanation || ""];
    const side = (m) => m.polarity ?? 1; // a side's modes are numbered where it has several
    const several = (m) => n.modes.filter((o) => side(o) === side(m)).length > 1;
    return n.modes.map((m) => el("div", {}, side(m) < 0 ? el("span", { class: "muted" }, "fires negative on: ") : "",
      several(m) ? `${m.mode}: ` : "", m.explanation || ""));
  }

  function tableRow(n, hit) {
    const ok = n.status === "ok";
    const tr = el("tr", { "data-id": n.id },
      el("td", {}, el("a", { href: hashOf(n) }, `L${n.layer} N${n.neuron}`)),
      el("td", {}, String(n.n_modes)),
      el("td", {}, explanationCell(n, hit)),
      ["score", "baseline_score", "lexical_score", "control_score"].map((c) =>
        el("td", { class: "score" }, ok ? halfWidth(n[c], n[`${c}_ci`]) : "–")),
      el("td", {}, fmt(n.density, 4)),
      el("td", {}, fmt(n.max, 3)),
      el("td", {}, n.top_tokens.map((t) => el("span", { class: "chip" }, showToken(t)))));
    tr.addEventListener("click", (e) => {
      if (!e.target.closest("a")) location.hash = hashOf(n);
    });
    return tr;
  }

  // -- one neuron -------------------------------------------------------------------------------
  async function showNeuron(layer, neuron) {
    const id = idOf(layer, neuron);
    if (!state.pos.has(id)) throw new Error(`layer ${layer} neuron ${neuron} is not in this atlas`);
    $("index-view").hidden = true;
    const view = $("neuron-view");
    view.hidden = false;
    view.replaceChildren(pager(id), el("p", {}, "Loading…"));
    const d = await neuronData(layer, neuron);
    view.replaceChildren(pager(id), el("div", { id: "neuron" }, neuronPage(d)));
    window.scrollTo(0, 0);
  }

  // A neuron's data is in the shard of its block of neighbours in the layer; its exemplars come
  // as columns, their token lists (shared by many neurons) in text shards, their activations as
  // base64 little-endian float32.
  async function neuronData(layer, neuron) {
    const per = state.index.neurons_per_shard;
    const name = `L${layer}_S${Math.floor(neuron / per)}`;
    const d = (await load(name))[idOf(layer, neuron)];
    if (!d) throw new Error(`data shard data/${name}.js does not hold layer ${layer} neuron ${neuron}`);
    const exemplars = exemplarList(d.exemplars, d.rows, await loadTexts(d.exemplars.text));
    return { ...d, exemplars, histogram: histogram(exemplars) }; // the shard's own entry stays as loaded
  }

  async function loadTexts(ids) {
    const per = state.index.texts_per_shard;
    const shards = [...new Set(ids.map((t) => Math.floor(t / per)))];
    const loaded = await Promise.all(shards.map((k) => load(`texts_${k}`)));
    const at = new Map(shards.map((k, i) => [k, loaded[i]]));
    return ids.map((t) => at.get(Math.floor(t / per))[t % per]);
  }

  function floats(b64) {
    const bin = atob(b64);
    const bytes = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
    return new Float32Array(bytes.buffer); // little-endian, as on every platform browsers run on
  }

  // Top exemplars take the mode whose exemplars list their window; the most negative ones, the
  // negative side's mode (its rows have polarity -1).
  const SIDE_KIND = { 1: "top", [-1]: "bottom" };
  function exemplarList(c, rows, texts) {
    const modeOf = new Map();
    for (const r of rows) if (r.mode >= 0) for (const w of r.exemplar_ids) modeOf.set(`${SIDE_KIND[r.polarity ?? 1]}:${w}`, r.mode);
    const acts = floats(c.acts);
    let at = 0;
    return c.kind.map((kind, i) => {
      const e = { kind, rank: c.rank[i], window_id: c.window_id[i], tokens: texts[i], max_act: c.max_act[i],
        max_pos: c.max_pos[i], acts: Array.from(acts.subarray(at, at + c.n[i])),
        mode: modeOf.get(`${kind}:${c.window_id[i]}`) ?? null };
      at += c.n[i];
      return e;
    });
  }

  // Activation counts over the uniform sample (random exemplars), else the top ones, in HIST_BINS
  // equal bins from the least to the largest (the last bin closed), as numpy's. The strata and the
  // negative side are chosen by activation: counted in, they would skew it.
  function histogram(exemplars) {
    const sample = exemplars.filter((e) => e.kind === "random");
    const source = sample.length ? "random exemplars" : "top exemplars";
    const acts = (sample.length ? sample : exemplars).flatMap((e) => e.acts).filter(isNum);
    if (!acts.length) return null;
    let lo = acts.reduce((m, a) => Math.min(m, a)), hi = acts.reduce((m, a) => Math.max(m, a));
    if (lo === hi) [lo, hi] = [lo - 0.5, hi + 0.5];
    const counts = new Array(HIST_BINS).fill(0);
    for (const a of acts) counts[Math.min(Math.floor(((a - lo) / (hi - lo)) * HIST_BINS), HIST_BINS - 1)]++;
    const edges = counts.map((_, i) => lo + ((hi - lo) * i) / HIST_BINS).concat(hi);
    return { counts, edges, source, n: acts.length };
  }

  function pager(id) {
    const i = state.pos.get(id);
    const [prev, next] = [state.index.neurons[i - 1], state.index.neurons[i + 1]];
    const link = (n, rel, text) => (n ? el("a", { href: hashOf(n), id: rel }, text) : el("span", { class: "muted" }, text));
    return el("nav", { class: "pager" }, el("a", { href: "#/" }, "all neurons"),
      link(prev, "prev", prev ? `‹ L${prev.layer} N${prev.neuron}` : "‹ first"),
      link(next, "next", next ? `L${next.layer} N${next.neuron} ›` : "last ›"));
  }

  function neuronPage(d) {
    const positive = d.rows.filter((r) => (r.polarity ?? 1) > 0);
    const first = positive[0] || d.rows[0];
    const scale = actScale(d.exemplars);
    return [
      el("h2", { id: "title" }, `Layer ${d.layer} · Neuron ${d.neuron}`),
      el("div", { class: "columns" }, statsView(first), d.histogram && histogramView(d.histogram), topTokens(first)),
      sideView(positive, d.exemplars, scale, ""),
      negativeView(d.rows.filter((r) => r.polarity < 0), d.exemplars, scale),
      exemplarGroups(d.exemplars, scale),
      el("h3", {}, "Similar neurons"),
      d.similar.length ? el("ul", { id: "similar" }, d.similar.map((s) => el("li", {},
        el("a", { href: hashOf(s) }, `L${s.layer} N${s.neuron}`), ` (similarity ${fmt(s.similarity)}): `, s.explanation || "")))
        : el("p", { class: "muted" }, "none (similarity comes from explanations)"),
      transcriptView(d.transcript),
    ];
  }

  // One side's explanations: its scores, modes (with their exemplars) and single-pass baseline;
  // ``prefix`` keeps the negative side's element ids apart.
  function sideView(rows, exemplars, scale, prefix) {
    const [first, kind] = [rows[0], SIDE_KIND[rows[0].polarity ?? 1]];
    const modes = rows.filter((r) => r.mode >= 0);
    return [
      explanationView(first, modes, `${prefix}status`),
      modes.map((m) => modeView(m, exemplars.filter((e) => e.kind === kind && e.mode === m.mode), scale)),
      first.status === "ok" && first.baseline_explanation ? baselineView(first, `${prefix}baseline`) : null,
    ];
  }

  // The negative side, where explained: the same views, of what drives the neuron most negative.
  function negativeView(rows, exemplars, scale) {
    if (!rows.length) return null;
    return el("section", { id: "negative" }, el("h3", {}, "Negative side: fires negative on"),
      el("p", { class: "muted" }, "explained like the positive side, on the neuron's activations negated: its most negative exemplars"),
      sideView(rows, exemplars, scale, "negative-"));
  }

  function statsView(r) {
    const q = (r.quantile_levels || []).map((l, i) => `${Number(l.toPrecision(4))}: ${fmt(r.quantiles[i], 3)}`).join(", ");
    const row = (k, v) => el("tr", {}, el("td", {}, k), el("td", {}, v));
    return el("div", {}, el("h3", {}, "Activation"), el("table", { class: "stats" },
      row("max", fmt(r.max, 3)), row("mean", fmt(r.mean, 4)), row("std", fmt(r.std, 4)), row("min", fmt(r.min, 3)),
      row("density", `${fmt(r.density, 4)} (share of tokens above a quarter of the max)`),
      row("tokens", isNum(r.n_tokens) ? String(r.n_tokens) : "–"), row("quantiles", q || "–")));
  }

  function histogramView(h) {
    const W = 360, H = 110, n = h.counts.length;
    const top = Math.max(...h.counts.map((c) => Math.log1p(c)), 1e-9);
    const bars = h.counts.map((c, i) => {
      const bh = (Math.log1p(c) / top) * H;
      return svg("rect", { x: (i * W) / n + 1, y: H - bh, width: Math.max(W / n - 2, 1), height: bh,
        class: h.edges[i + 1] <= 0 ? "neg" : "pos" }, svg("title", {}, `${fmt(h.edges[i], 3)} to ${fmt(h.edges[i + 1], 3)}: ${c}`));
    });
    return el("div", {}, el("h3", {}, "Histogram"),
      svg("svg", { id: "histogram", width: W, height: H + 16, viewBox: `0 0 ${W} ${H + 16}` }, bars,
        svg("text", { x: 0, y: H + 13 }, fmt(h.edges[0], 2)),
        svg("text", { x: W, y: H + 13, "text-anchor": "end" }, fmt(h.edges[n], 2))),
      el("div", { class: "muted" }, `${h.n} tokens of the ${h.source}; log-scaled counts`));
  }

  function topTokens(r) {
    return el("div", {}, el("h3", {}, "Top tokens"), r.top_tokens.length
      ? el("ul", { id: "top-tokens" }, r.top_tokens.map((t, i) =>
        el("li", {}, el("span", { class: "chip" }, showToken(t)), ` ×${r.top_token_counts[i]}, up to ${fmt(r.top_token_acts[i], 3)}`)))
      : el("p", { class: "muted" }, "none recorded"), outputTokens(r));
  }

  // What the neuron's output pushes the next token towards and away from (where the run has it).
  function outputTokens(r) {
    if (!(r.promoted_tokens || []).length) return null;
    const chips = (ts) => ts.map((t) => el("span", { class: "chip" }, showToken(t)));
    return el("div", { id: "output-tokens" }, el("h3", {}, "Output"),
      el("p", {}, "promotes: ", chips(r.promoted_tokens)), el("p", {}, "suppresses: ", chips(r.suppressed_tokens)));
  }

  // The simulation scorer's r beside its control, where it ran (off by default).
  const simulation = (r, score) => (isNum(r.sim_control_score) ? ` · simulation r ${pair(score, r.sim_control_score)}` : "");

  // "words: Rosalind, Touchstone — 0.640 [0.55, 0.72]" (prefix "mode_": the mode's words baseline)
  function wordsLine(r, prefix = "") {
    const words = wordsOf(r, prefix);
    return words.length > 0 && el("p", { class: "words muted" }, "words: ", r[`${prefix}lexical_explanation`] || "–", ` — ${withCi(...words)}`);
  }

  function explanationView(r, modes, id = "status") {
    if (r.status === "unexplained") return el("p", { id, class: "muted" }, "Not explained yet: run `neuronscope explain` on this run.");
    if (r.status !== "ok") return el("p", { id, class: "error" }, `Explaining failed: ${r.error || r.status}`);
    const judge = r.calibrated === null ? "no self-check" : r.calibrated ? "self-check passed" : "self-check FAILED: uncalibrated";
    const scorer = `scorer ${r.scorer || "?"}, ${judge}`;
    return el("div", { id },
      el("h3", {}, modes.length ? `${modes.length} mode(s)` : "Single-pass explanation only"),
      modes.length
        ? el("p", { class: "scores" }, `NeuronScope score ${judged(r.score, r.score_ci, r.control_score, r.control_score_ci, ...wordsOf(r))}`,
          ` (${scorer})${simulation(r, r.sim_score)}; coverage ${fmt(r.coverage)}`)
        : el("p", { class: "scores" }, scorer),
      wordsLine(r),
      el("p", { class: "muted" }, "control: ", r.control_explanation || "–", ` — ${withCi(r.control_score, r.control_score_ci)}`));
  }

  // The mode's causal check beside its control and the random windows (report.py's
  // causal_vs_control), where the run has one.
  function causalLine(m) {
    if (!isNum(m.causal_effect)) return null;
    // "1.2e-02", as Python's ".1e" writes it
    const sci = (x) => (isNum(x) ? x.toExponential(1).replace(/e([+-])(\d)$/, (_, sign, d) => `e${sign}0${d}`) : "–");
    const ci = (c) => (Array.isArray(c) && c.length === 2 && c.every(isNum) ? `[${sci(c[0])}, ${sci(c[1])}]` : "");
    const kl = (x, c) => `${sci(x)} ${ci(c)}`.trim();
    const signed = (x) => (isNum(x) ? `${x >= 0 ? "+" : ""}${x.toFixed(3)}` : "–");
    return el("p", { class: "scores causal" },
      `causal (${m.ablation} ablation, ${m.n_windows} windows): KL ${kl(m.causal_effect, m.causal_effect_ci)} vs control ` +
      `${kl(m.causal_control, m.causal_control_ci)} (neuron ${m.control_neuron}) vs random windows ` +
      `${kl(m.causal_random, m.causal_random_ci)}; next-token log p ${signed(-m.causal_logprob)} vs control ` +
      `${signed(-m.causal_logprob_control)}`);
  }

  function modeView(m, exemplars, scale) {
    const share = isNum(m.mode_share) ? fmt(100 * m.mode_share, 0) : "–";
    return el("section", { class: "mode", "data-mode": m.mode, "data-polarity": m.polarity ?? 1 },
      el("h4", {}, `Mode ${m.mode} · ${share}% of the top exemplars · ${m.mode_size} exemplars`,
        m.source ? ` · source ${m.source}` : ""),
      el("p", { class: "explanation" }, m.explanation || ""),
      el("p", { class: "scores" }, `score ${judged(m.mode_score, m.mode_score_ci, m.control_score, m.control_score_ci, ...wordsOf(m, "mode_"))}`,
        simulation(m, m.sim_mode_score)),
      causalLine(m),
      wordsLine(m, "mode_"),
      m.mode_tokens.length ? el("p", { class: "muted" }, m.polarity < 0 ? "fires negative on: " : "fires on: ", m.mode_tokens.join(", ")) : null,
      exemplars.map((e) => exemplarView(e, scale)));
  }

  function baselineView(r, id = "baseline") {
    return el("section", { id }, el("h3", {}, "Single-pass baseline"),
      el("p", { class: "explanation" }, r.baseline_explanation || "–"),
      el("p", { class: "scores" }, `score ${judged(r.baseline_score, r.baseline_score_ci, r.control_score, r.control_score_ci, ...wordsOf(r))}`,
        simulation(r, r.sim_baseline_score)));
  }

  function exemplarGroups(exemplars, scale) {
    const groups = [["Top exemplars in no mode", (e) => e.kind === "top" && e.mode === null],
      ["Random exemplars", (e) => e.kind === "random"], ["Quantile exemplars", (e) => e.kind.startsWith("quantile")],
      ["Most negative exemplars in no mode", (e) => e.kind === "bottom" && e.mode === null],
      ["Negative quantile exemplars", (e) => e.kind.startsWith("negative_quantile")]];
    return groups.map(([title, keep]) => {
      const list = exemplars.filter(keep);
      return list.length ? el("section", { class: "group" }, el("h3", {}, title), list.map((e) => exemplarView(e, scale))) : null;
    });
  }

  // Shading: positive activations by their share of the neuron's top activation (the max token is
  // the darkest), negative ones in another colour and never as dark.
  function actScale(exemplars) {
    let pos = 0, neg = 0;
    for (const e of exemplars) for (const a of e.acts) { if (a > pos) pos = a; if (-a > neg) neg = -a; }
    return { pos, neg };
  }

  function shade(a, scale) {
    if (a > 0 && scale.pos > 0) return [217, 72, 15, a / scale.pos];
    if (a < 0 && scale.neg > 0) return [37, 99, 235, (0.6 * -a) / scale.neg];
    return null;
  }

  function exemplarView(e, scale) {
    const toks = e.tokens.map((t, i) => {
      const span = el("span", { class: "tok", "data-act": e.acts[i], title: fmt(e.acts[i], 3) }, showToken(t));
      const c = shade(e.acts[i], scale);
      if (c) {
        span.style.backgroundColor = `rgba(${c[0]}, ${c[1]}, ${c[2]}, ${c[3].toFixed(3)})`;
        if (c[3] > 0.55) span.classList.add("dark");
      }
      return span;
    });
    return el("div", { class: "exemplar", "data-kind": e.kind },
      el("span", { class: "ex-meta" }, `${e.kind} #${e.rank} · max ${fmt(e.max_act, 3)}`), el("span", { class: "text" }, toks));
  }

  function transcriptView(href) {
    if (!href) return el("p", { class: "muted" }, "No transcript in this run.");
    // a transcript in another store (s3://...) is named, not linked: browsers cannot open it
    const linkable = !/^[a-z][a-z0-9+.-]*:/i.test(href) || /^https?:/i.test(href);
    return el("p", {}, "Agent transcript: ", linkable ? el("a", { href, id: "transcript" }, href) : el("code", {}, href));
  }

  window.addEventListener("hashchange", route);
  route();
})();
