"use strict";
// The trajectory browser: filters over the index (no detail is inflated to filter, unless "search
// messages" is on), one page of rows at a time, and the opened trajectory on the right.

const Trajectories = (() => {
  const rows = INDEX.trajectories;
  const f = {
    kept: el("select", { id: "f-kept" }, el("option", { value: "" }, "kept + dropped"), el("option", { value: "kept" }, "kept"),
      el("option", { value: "dropped" }, "dropped"), el("option", { value: "unjudged" }, "not judged")),
    reason: el("select", { id: "f-reason" }), domain: el("select", { id: "f-domain" }), toolset: el("select", { id: "f-toolset" }),
    difficulty: el("select", { id: "f-difficulty" }), strategy: el("select", { id: "f-strategy" }), flag: el("select", { id: "f-flag" }),
    calls: el("select", { id: "f-calls" }, el("option", { value: "" }, "any tool calls"), el("option", { value: "errors" }, "with tool errors"),
      el("option", { value: "faults" }, "with injected faults"), el("option", { value: "none" }, "no tool call")),
    min: el("input", { id: "f-min", type: "number", min: 0, max: 1, step: 0.05, placeholder: "score ≥", title: "minimum score" }),
    max: el("input", { id: "f-max", type: "number", min: 0, max: 1, step: 0.05, placeholder: "score ≤", title: "maximum score" }),
    text: el("input", { id: "f-text", type: "search", placeholder: "search id, goal, agent, tools, reasons…" }),
    deep: el("input", { id: "f-deep", type: "checkbox", title: "also search every message, tool result and state (inflates all details once)" }),
    sort: el("select", { id: "f-sort" }, ["file order", "score ↑", "score ↓", "turns ↓", "tool calls ↓", "tool errors ↓"].map(s => el("option", { value: s }, s))),
  };
  options(f.reason, counts(rows, r => r.r), "any drop reason");
  options(f.domain, counts(rows, r => r.dom), "any domain");
  options(f.toolset, counts(rows, r => r.ts), "any toolset");
  options(f.difficulty, counts(rows, r => r.d), "any difficulty");
  options(f.strategy, counts(rows, r => r.st), "any strategy");
  options(f.flag, counts(rows, r => r.f), "any user flag");
  const status = el("span", { class: "muted", id: "deep-status" });
  const body = el("tbody");
  const list = pager(body, 100, row, markSelected);
  const detail = el("div", { id: "detail", class: "detail" }, el("p", { class: "muted" }, "Open a trajectory from the list."));
  let deepText = null, selected = null;

  function filtersBar() {
    return el("div", { class: "filters" }, f.kept, f.reason, f.domain, f.toolset, f.difficulty, f.strategy, f.flag, f.calls,
      f.min, f.max, f.text, el("label", { title: f.deep.title }, f.deep, " search messages"), status, f.sort,
      el("button", { type: "button", onclick: reset }, "reset"));
  }

  function row(r) {
    return el("tr", { data: { i: r.i }, class: "row", onclick: () => open(r.i) },
      el("td", null, keptBadge(r.k)), el("td", { class: "num" }, score(r.s)), el("td", { class: "num" }, r.tu),
      el("td", { class: "num" }, r.c, r.e ? el("span", { class: "err-count", title: "tool errors" }, ` ✗${r.e}`) : null,
        r.fa ? el("span", { class: "fault-count", title: "injected faults" }, ` ⚡${r.fa}`) : null),
      el("td", { title: r.dom }, r.dom), el("td", { title: r.ts.join(" + ") }, r.ts.join(" + ")), el("td", null, r.d),
      el("td", { class: "tags" }, r.f.map(x => badge(x, "flag")), r.k === false ? r.r.map(x => badge(x, "reason")) : null),
      el("td", { class: "goal", title: r.g }, r.g));
  }

  function matches(r) {
    const v = id => f[id].value;
    if (v("kept") === "kept" && r.k !== true) return false;
    if (v("kept") === "dropped" && r.k !== false) return false;
    if (v("kept") === "unjudged" && r.k !== null) return false;
    if (v("reason") && !r.r.includes(v("reason"))) return false;
    if (v("domain") && r.dom !== v("domain")) return false;
    if (v("toolset") && !r.ts.includes(v("toolset"))) return false;
    if (v("difficulty") && r.d !== v("difficulty")) return false;
    if (v("strategy") && r.st !== v("strategy")) return false;
    if (v("flag") && !r.f.includes(v("flag"))) return false;
    if (v("calls") === "errors" && !r.e) return false;
    if (v("calls") === "faults" && !r.fa) return false;
    if (v("calls") === "none" && r.c) return false;
    if (v("min") !== "" && !(typeof r.s === "number" && r.s >= Number(v("min")))) return false;
    if (v("max") !== "" && !(typeof r.s === "number" && r.s <= Number(v("max")))) return false;
    const words = terms();
    if (words.length) {
      const hay = haystack(r);
      if (!words.every(w => hay.includes(w) || (deepText && deepText[r.i].includes(w)))) return false;
    }
    return true;
  }

  let termsFor = null, termsList = [];
  function terms() {
    const text = f.text.value.trim().toLowerCase();
    if (text !== termsFor) { termsFor = text; termsList = text ? text.split(/\s+/) : []; }
    return termsList;
  }
  const hays = new Map();
  function haystack(r) {
    let hay = hays.get(r.i);
    if (hay === undefined) { hay = [r.q, r.g, r.dom, r.ts.join(" "), r.d, r.st, r.f.join(" "), r.r.join(" ")].join(" ").toLowerCase(); hays.set(r.i, hay); }
    return hay;
  }

  const SORTS = {
    "score ↑": (a, b) => (a.s ?? 2) - (b.s ?? 2), "score ↓": (a, b) => (b.s ?? -1) - (a.s ?? -1),
    "turns ↓": (a, b) => b.tu - a.tu, "tool calls ↓": (a, b) => b.c - a.c, "tool errors ↓": (a, b) => b.e - a.e,
  };

  function apply(keepPage, save = true) {
    const shown = rows.filter(matches);
    const sort = SORTS[f.sort.value];
    if (sort) shown.sort((a, b) => sort(a, b) || a.i - b.i);
    list.set(shown, keepPage);
    if (save) App.saveState();
  }

  async function loadDeepText() {
    if (deepText) return;
    status.textContent = " inflating…";
    const started = performance.now();
    const texts = new Array(rows.length);
    const chunks = Math.ceil(rows.length / INDEX.chunk);
    for (let c = 0; c < chunks; c++) {
      const details = await blob("chunk-" + c);
      details.forEach((d, k) => { texts[c * INDEX.chunk + k] = JSON.stringify(d.t).toLowerCase(); });
    }
    deepText = texts;
    status.textContent = ` (${Math.round(performance.now() - started)} ms)`;
  }

  async function open(i, options = {}) {
    selected = i;
    markSelected();
    const [d, t] = await Promise.all([trajectoryDetail(i), tables()]);
    if (selected !== i) return;  // another one was opened meanwhile
    clear(detail, Detail.render(rows[i], d, t));
    if (!options.keepScroll) detail.scrollTop = 0;
    App.saveState();
    document.dispatchEvent(new CustomEvent("trajectory-shown", { detail: i }));
  }

  function markSelected() {
    for (const tr of body.children) tr.classList.toggle("selected", Number(tr.dataset.i) === selected);
  }

  function step(delta) {
    const items = list.items();
    const at = items.findIndex(r => r.i === selected);
    const next = items[Math.max(0, Math.min(items.length - 1, at + delta))];
    if (next) { list.showIndex(items.indexOf(next)); open(next.i); }
  }

  const FILTERS = ["kept", "reason", "domain", "toolset", "difficulty", "strategy", "flag", "calls", "min", "max", "text"];
  function reset() {
    for (const id of FILTERS) f[id].value = "";
    f.sort.value = "file order";
    apply();
  }

  // Filters not named are cleared: a link or a saved hash describes the whole list.
  function set(state) {
    for (const id of FILTERS) f[id].value = state[id] ?? "";
    f.sort.value = state.sort || "file order";
    apply();
  }

  function state() {
    const s = {};
    for (const id of FILTERS) if (f[id].value) s[id] = f[id].value;
    if (f.sort.value !== "file order") s.sort = f.sort.value;
    if (selected !== null) s.t = rows[selected].id;
    return s;
  }

  function mount(root) {
    const head = el("thead", null, el("tr", null, ["", "score", "turns", "calls", "domain", "toolset", "difficulty", "flags / drop reasons", "goal"].map(h => el("th", null, h))));
    clear(root, filtersBar(), el("div", { class: "split" },
      el("div", { class: "listpane" }, list.controls, el("table", { class: "grid list", id: "trajectory-list" }, head, body)), detail));
    for (const input of Object.values(f)) input.addEventListener(input.tagName === "INPUT" && input.type !== "checkbox" ? "input" : "change", async () => {
      if (f.deep.checked) await loadDeepText();
      apply();
    });
    document.addEventListener("keydown", e => {
      if (App.tab() !== "trajectories" || e.target.tagName === "INPUT" || e.target.tagName === "SELECT") return;
      if (e.key === "j" || e.key === "ArrowDown") { step(1); e.preventDefault(); }
      if (e.key === "k" || e.key === "ArrowUp") { step(-1); e.preventDefault(); }
    });
    apply(false, false);
  }

  function openById(id) {
    const r = rows.find(x => x.id === id);
    if (r) { const at = list.items().indexOf(r); if (at >= 0) list.showIndex(at); open(r.i); }
  }

  return { mount, set, state, apply, open, openById };
})();
