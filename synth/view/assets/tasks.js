"use strict";
// The tasks tab (gold actions, assertions, rubric, the task's trajectories) and the errors tab
// (failed units with the raw reply).

const Tasks = (() => {
  const rows = INDEX.tasks;
  const f = {
    domain: el("select", { id: "t-domain" }), difficulty: el("select", { id: "t-difficulty" }),
    gold: el("select", { id: "t-gold" }, el("option", { value: "" }, "gold or not"), el("option", { value: "gold" }, "with gold actions"),
      el("option", { value: "validated" }, "validated"), el("option", { value: "none" }, "no gold actions")),
    text: el("input", { id: "t-text", type: "search", placeholder: "search id, goal, agent…" }),
  };
  options(f.domain, counts(rows, r => r.dom), "any domain");
  options(f.difficulty, counts(rows, r => r.d), "any difficulty");
  const body = el("tbody");
  const list = pager(body, 100, row);
  const detail = el("div", { class: "detail", id: "task-detail" }, el("p", { class: "muted" }, "Open a task from the list."));

  function row(r) {
    const kept = r.tr.filter(i => INDEX.trajectories[i].k === true).length;
    return el("tr", { class: "row", data: { id: r.id }, onclick: () => open(r.id) }, el("td", null, r.d),
      el("td", { class: "num" }, r.n), el("td", { class: "num" }, r.ga), el("td", { class: "num" }, r.as),
      el("td", null, r.v ? badge("validated", "ok") : ""), el("td", { class: "num", title: "kept / trajectories" }, `${kept}/${r.tr.length}`),
      el("td", { class: "goal", title: r.g }, r.g), el("td", { title: r.dom }, r.dom), el("td", { title: r.ts.join(" + ") }, r.ts.join(" + ")));
  }

  function apply() {
    const text = f.text.value.trim().toLowerCase();
    list.set(rows.filter(r => (!f.domain.value || r.dom === f.domain.value) && (!f.difficulty.value || r.d === f.difficulty.value)
      && (f.gold.value !== "gold" || r.ga) && (f.gold.value !== "validated" || r.v) && (f.gold.value !== "none" || !r.ga)
      && (!text || `${r.id} ${r.g} ${r.ag} ${r.dom} ${r.ts.join(" ")}`.toLowerCase().includes(text))));
  }

  async function open(id) {
    const t = await tables();
    const task = t.tasks[id];
    if (!task) return;
    const r = rows.find(x => x.id === id);
    const agent = t.agents[task.agent_id] || {};
    const known = new Set(["id", "unit", "agent_id", "goal", "persona", "user_facts", "difficulty", "initial_state", "rubric", "gold_actions", "assertions", "validated"]);
    clear(detail, el("div", { class: "task", data: { id } },
      el("div", { class: "dhead" }, el("div", { class: "title" }, el("b", null, task.goal || "(no goal)")),
        el("table", { class: "kv facts" }, [["task", id], ["agent", `${agent.name || "?"} (${agent.strategy || "single"})`], ["domain", r ? r.dom : ""],
          ["difficulty", task.difficulty], ["persona", task.persona], ["validated", task.validated ? "yes: the gold actions replayed and every assertion held" : "no"]]
          .map(([k, v]) => el("tr", null, el("th", null, k), el("td", null, v ?? ""))))),
      section("User facts", el("ul", null, (task.user_facts || []).map(x => el("li", null, String(x))))),
      section("Rubric", el("table", { class: "grid" }, el("thead", null, el("tr", null, ["#", "kind", "weight", "criterion"].map(h => el("th", null, h)))),
        el("tbody", null, (task.rubric || []).map((c, i) => el("tr", null, el("td", { class: "num" }, i + 1), el("td", null, badge(c.kind || "", "kind-" + c.kind)), el("td", { class: "num" }, c.weight), el("td", null, String(c.text ?? ""))))))),
      section("Gold actions", (task.gold_actions || []).length ? el("ol", { class: "gold" }, task.gold_actions.map(a => el("li", null, el("b", { class: "fn" }, String(a.tool ?? "?")), goldArgs(a.arguments))))
        : el("p", { class: "muted" }, "none (gold actions are written for executable toolsets with tasks.gold)")),
      section("Assertions on the final state", (task.assertions || []).length ? el("table", { class: "grid" }, el("thead", null, el("tr", null, ["path", "op", "value"].map(h => el("th", null, h)))),
        el("tbody", null, task.assertions.map(a => el("tr", null, el("td", { class: "path" }, String(a.path ?? "")), el("td", null, String(a.op ?? "")), el("td", null, el("code", null, String(a.value ?? "")))))))
        : el("p", { class: "muted" }, "none")),
      section("Initial state", pre(task.initial_state ?? {}), false),
      section("System prompt", el("div", { class: "content prompt" }, agent.system_prompt || ""), false),
      section("Trajectories", r && r.tr.length ? el("table", { class: "grid" }, el("tbody", null, r.tr.map(i => {
        const x = INDEX.trajectories[i];
        return el("tr", { class: "row", onclick: () => App.openTrajectory(x.id) }, el("td", null, keptBadge(x.k)), el("td", { class: "num" }, score(x.s)), el("td", null, x.id), el("td", null, x.r.join(", ")));
      }))) : el("p", { class: "muted" }, "no trajectory yet")),
      fieldTable(task, known) ? section("Other fields", fieldTable(task, known)) : null));
    for (const tr of body.children) tr.classList.toggle("selected", tr.dataset.id === id);
  }

  function goldArgs(raw) {
    try { return el("code", null, " ", json(typeof raw === "string" ? JSON.parse(raw) : raw, 0)); } catch (e) { return el("code", null, " ", String(raw)); }
  }

  function mount(root) {
    const head = el("thead", null, el("tr", null, ["difficulty", "criteria", "gold", "assertions", "", "kept", "goal", "domain", "toolset"].map(h => el("th", null, h))));
    clear(root, el("div", { class: "filters" }, f.domain, f.difficulty, f.gold, f.text),
      el("div", { class: "split" }, el("div", { class: "listpane" }, list.controls, el("table", { class: "grid list" }, head, body)), detail));
    for (const input of Object.values(f)) input.addEventListener(input.tagName === "INPUT" ? "input" : "change", apply);
    apply();
  }
  return { mount, open };
})();

const Errors = (() => {
  const rows = INDEX.errors;
  const f = { stage: el("select", { id: "e-stage" }), type: el("select", { id: "e-type" }), text: el("input", { id: "e-text", type: "search", placeholder: "search message, unit…" }) };
  options(f.stage, counts(rows, r => r.st), "any stage");
  options(f.type, counts(rows, r => r.ty), "any error type");
  const body = el("tbody");
  const list = pager(body, 100, row);
  const detail = el("div", { class: "detail", id: "error-detail" }, el("p", { class: "muted" }, rows.length ? "Open a failed unit from the list." : "No failed units."));

  function row(r) {
    return el("tr", { class: "row", data: { i: r.i }, onclick: () => open(r.i) }, el("td", null, r.st), el("td", null, badge(r.ty, "bad")), el("td", { class: "mono" }, r.u), el("td", { class: "goal" }, r.m));
  }
  function apply() {
    const text = f.text.value.trim().toLowerCase();
    list.set(rows.filter(r => (!f.stage.value || r.st === f.stage.value) && (!f.type.value || r.ty === f.type.value) && (!text || `${r.m} ${r.u} ${r.ty}`.toLowerCase().includes(text))));
  }
  async function open(i) {
    const all = await blob("errors-blob");
    const e = all[i];
    const known = new Set(["id", "unit", "stage", "error_type", "message", "raw"]);
    clear(detail, el("div", { class: "error" },
      el("table", { class: "kv facts" }, [["stage", e.stage], ["error type", e.error_type], ["unit", e.unit], ["id", e.id]].map(([k, v]) => el("tr", null, el("th", null, k), el("td", null, String(v ?? ""))))),
      section("Message", el("div", { class: "content" }, String(e.message ?? ""))),
      section("Raw reply", e.raw ? pre(String(e.raw), "raw") : el("p", { class: "muted" }, "no raw reply recorded")),
      fieldTable(e, known) ? section("Other fields", fieldTable(e, known)) : null));
    for (const tr of body.children) tr.classList.toggle("selected", Number(tr.dataset.i) === i);
  }
  function mount(root) {
    clear(root, el("div", { class: "filters" }, f.stage, f.type, f.text), el("div", { class: "split" },
      el("div", { class: "listpane" }, list.controls, el("table", { class: "grid list" }, el("thead", null, el("tr", null, ["stage", "type", "unit", "message"].map(h => el("th", null, h)))), body)), detail));
    for (const input of Object.values(f)) input.addEventListener(input.tagName === "INPUT" ? "input" : "change", apply);
    apply();
  }
  function set(state) { if (state.stage !== undefined) f.stage.value = state.stage; apply(); }
  return { mount, set };
})();
