"use strict";
// One trajectory, rendered when opened: verdicts per criterion (with the turn each cites), checks,
// user flags, the conversation with tool calls and results, and the final state's diff.
// Fields this viewer does not know are shown generically under "other fields".

const Detail = (() => {
  const TRAJECTORY_KEYS = new Set(["id", "unit", "task_id", "agent_id", "sample", "seed", "messages", "tools", "tool_calls",
    "final_state", "user_stopped", "turns", "duration_s", "user_flags", "usage"]);
  const VERDICT_KEYS = new Set(["id", "unit", "trajectory_id", "task_id", "results", "checks", "score", "keep", "reasons", "samples"]);
  const MESSAGE_KEYS = new Set(["role", "content", "tool_calls", "tool_call_id", "name", "reasoning_content"]);
  const TRACE_KEYS = new Set(["call_id", "name", "arguments", "result", "is_error", "fault", "latency_s", "turn", "runtime"]);

  function render(row, d, tables) {
    const t = d.t, v = d.v;
    const task = tables.tasks[t.task_id] || {};
    const agent = tables.agents[t.agent_id] || {};
    const root = el("div", { class: "trajectory", data: { id: t.id } });
    root.append(header(row, t, v, task, agent));
    const userTurns = (t.messages || []).filter(m => m.role === "user").length;
    // met: a criterion passed, or a pitfall avoided
    const met = (v && v.results || []).filter(r => r.passed !== (((task.rubric || [])[r.index] || {}).kind === "pitfall")).length;
    if (v) root.append(section("Rubric verdicts", rubric(task, v, root, userTurns), true, `${met}/${(v.results || []).length} met`));
    else root.append(section("Rubric", rubric(task, { results: [] }, root, userTurns), true, "not judged"));
    if (v) root.append(section("Checks", checks(v.checks || {}), true));
    root.append(section("Conversation", conversation(t, d.rt || {}), true, `${t.turns ?? "?"} turns, ${(t.tool_calls || []).length} tool calls`));
    root.append(section("Final state", stateDiff(d, task, t), true, d.d.length ? `${d.d.length + (d.dm || 0)} changes` : "unchanged"));
    root.append(section("Offered tools", offered(t.tools || []), false, `${(t.tools || []).length}`));
    const otherT = fieldTable(t, TRAJECTORY_KEYS), otherV = v ? fieldTable(v, VERDICT_KEYS) : null;
    if (otherT || otherV) root.append(section("Other fields", el("div", null, otherT && el("h4", null, "trajectory"), otherT, otherV && el("h4", null, "verdict"), otherV), true));
    return root;
  }

  function header(row, t, v, task, agent) {
    const facts = [
      ["trajectory", t.id], ["task", el("a", { href: "#", class: "go", onclick: e => { e.preventDefault(); App.openTask(t.task_id); } }, t.task_id)],
      ["agent", `${agent.name || "?"} (${agent.strategy || "single"})`], ["domain", row.dom], ["toolsets", row.ts.join(" + ")],
      ["difficulty", task.difficulty], ["sample / seed", `${t.sample ?? ""} / ${t.seed ?? ""}`],
      ["ended by", t.user_stopped ? "the user" : "max_turns"], ["duration", t.duration_s != null ? `${t.duration_s} s` : ""],
      ["usage", t.usage && Object.keys(t.usage).length ? Object.entries(t.usage).map(([k, n]) => `${k} ${fmt(n)}`).join(", ") : ""],
    ];
    return el("div", { class: "dhead" },
      el("div", { class: "title" }, keptBadge(v ? !!v.keep : null), " ", v ? el("b", null, `score ${score(v.score)}`) : null, " ",
        el("span", { class: "goal-text" }, task.goal || "")),
      v && (v.reasons || []).length ? el("ul", { class: "reasons" }, v.reasons.map(r => el("li", null, String(r)))) : null,
      (t.user_flags || []).length ? el("div", { class: "flags" }, "user-simulator flags: ", t.user_flags.map(x => badge(String(x), "flag"))) : null,
      el("div", { class: "facts" }, facts.filter(([, x]) => x !== undefined && x !== "").map(([k, x]) => el("span", { class: "fact" }, el("span", { class: "k" }, k), " ", x))),
      task.user_facts && task.user_facts.length ? el("div", { class: "muted" }, "user knows: ", task.user_facts.join(" · ")) : null);
  }

  function verdictBadge(kind, passed) {
    if (passed === undefined) return badge("no verdict", "muted");
    if (kind === "pitfall") return passed ? badge("happened", "bad", "a pitfall criterion passed: the mistake was made") : badge("avoided", "ok");
    return passed ? badge("pass", "ok") : badge("fail", "bad");
  }

  function turnLink(turn, root, userTurns) {
    if (turn === null || turn === undefined) return el("span", { class: "muted" }, "–");
    if (!(turn >= 1 && turn <= userTurns)) return el("span", { class: "turn-link missing", title: `the conversation has ${userTurns} turns` }, `turn ${turn}`, el("span", { class: "muted" }, " (not in the conversation)"));
    return el("a", { href: "#", class: "turn-link", data: { turn }, onclick: e => { e.preventDefault(); scrollToTurn(root, turn, e.currentTarget); } }, `turn ${turn}`);
  }

  function scrollToTurn(root, turn, link) {
    const target = root.querySelector(`.msg[data-turn="${Number(turn)}"]`);
    if (!target) { link.classList.add("missing"); link.title = `the conversation has no turn ${turn}`; return; }
    target.closest("details.sect").open = true;
    target.scrollIntoView({ block: "start" });
    target.classList.remove("flash"); void target.offsetWidth; target.classList.add("flash");
  }

  function rubric(task, v, root, userTurns) {
    const criteria = task.rubric || [];
    const results = v.results || [];
    const samples = v.samples || [];
    const byIndex = new Map(results.map(r => [r.index, r]));
    const indexes = [...new Set([...criteria.map((_, i) => i), ...results.map(r => r.index)])].sort((a, b) => a - b);
    const head = ["#", "kind", "weight", "criterion", "verdict", samples.length ? `passed in samples` : null, "reason", "turn"].filter(h => h !== null);
    const body = indexes.map(i => {
      const c = criteria[i] || {}, r = byIndex.get(i);
      const tally = samples.length ? el("td", { class: "num" }, `${samples.filter(s => (s.results || []).some(x => x.index === i && x.passed)).length}/${samples.length}`) : null;
      const text = i === -1 ? el("i", null, "holistic score (judge.mode: single)") : (c.text ?? el("i", { class: "muted" }, `criterion #${i} is not in the task`));
      return el("tr", { class: "criterion " + (r ? (r.passed !== (c.kind === "pitfall") ? "c-ok" : "c-bad") : "") , data: { index: i } },
        el("td", { class: "num" }, i >= 0 ? i + 1 : "–"), el("td", null, c.kind ? badge(c.kind, "kind-" + c.kind) : ""),
        el("td", { class: "num" }, c.weight ?? ""), el("td", null, text), el("td", null, verdictBadge(c.kind, r && r.passed)), tally,
        el("td", { class: "reason" }, r ? String(r.reason ?? "") : ""), el("td", null, r ? turnLink(r.turn, root, userTurns) : ""));
    });
    const table = el("table", { class: "grid rubric" }, el("thead", null, el("tr", null, head.map(h => el("th", null, h)))), el("tbody", null, body));
    const sampleScores = samples.length ? el("p", { class: "muted" }, "judge samples: ", samples.map(s => `seed ${s.seed}: ${score(s.score)} ${s.keep ? "keep" : "drop"}`).join(" · ")) : null;
    return el("div", null, table, sampleScores);
  }

  function checks(checks) {
    const entries = Object.entries(checks);
    if (!entries.length) return el("p", { class: "muted" }, "no checks recorded");
    return el("div", { class: "checks" }, entries.map(([name, ok]) => el("span", { class: "check " + (ok ? "ok" : "bad"), data: { check: name } }, ok ? "✓ " : "✗ ", name)));
  }

  function text(content) {
    if (typeof content === "string") return content;
    if (Array.isArray(content)) return content.map(p => (p && typeof p.text === "string") ? p.text : json(p)).join("\n");
    return content == null ? "" : json(content);
  }

  function conversation(t, runtimes) {
    const messages = t.messages || [];
    const traces = new Map((t.tool_calls || []).map(c => [String(c.call_id), c]));
    const results = new Map(messages.filter(m => m.role === "tool").map(m => [String(m.tool_call_id), m]));
    const attached = new Set();
    const out = [];
    let turn = 0;
    for (const m of messages) {
      if (m.role === "system") {
        const content = text(m.content);
        out.push(el("details", { class: "msg system" }, el("summary", null, el("span", { class: "role" }, "system prompt"), " ", el("span", { class: "preview" }, content.split("\n")[0])), el("div", { class: "content" }, content)));
        continue;
      }
      if (m.role === "tool" && attached.has(String(m.tool_call_id))) continue;
      if (m.role === "user") turn += 1;
      const node = el("div", { class: "msg " + String(m.role || "unknown"), data: m.role === "user" ? { turn } : {} },
        el("div", { class: "role" }, m.role === "user" ? `turn ${turn} · user` : String(m.role || "?") + (m.name ? ` · ${m.name}` : "")));
      if (m.reasoning_content) node.append(el("details", { class: "reasoning" }, el("summary", null, "reasoning"), el("div", { class: "content" }, text(m.reasoning_content))));
      const content = text(m.content);
      if (content) node.append(el("div", { class: "content" }, content));
      else if (m.role === "user") node.append(el("div", { class: "content muted" }, "(empty message)"));
      for (const call of m.tool_calls || []) {
        const id = String(call.id);
        attached.add(id);
        node.append(toolCall(call, traces.get(id), results.get(id), runtimes[id]));
      }
      if (m.role === "tool") node.append(el("div", { class: "muted" }, `result of ${m.tool_call_id} (no call with this id)`));
      const other = fieldTable(m, MESSAGE_KEYS);
      if (other) node.append(other);
      out.push(node);
    }
    return el("div", { class: "conversation" }, out);
  }

  function args(raw) {
    if (typeof raw !== "string") return pre(raw, "args");
    try { return pre(JSON.parse(raw), "args"); } catch (e) { return el("div", null, badge("arguments are not JSON", "bad"), pre(raw, "args")); }
  }

  function toolCall(call, trace, result, rt) {
    const fn = call.function || {};
    const isError = trace ? !!trace.is_error : false;
    const marks = [
      rt ? badge(rt.runtime, "rt rt-" + rt.runtime, rt.traced ? "runtime from the trace" : "runtime inferred (the trace does not say)") : null,
      isError ? badge("error", "bad err-mark") : null,
      trace && trace.fault ? badge(`injected fault: ${trace.fault}`, "fault fault-mark") : null,
      trace && trace.latency_s != null ? el("span", { class: "muted" }, ` ${Math.round(trace.latency_s * 1000)} ms`) : null,
    ];
    const resultText = result ? text(result.content) : (trace ? String(trace.result ?? "") : null);
    const extra = trace ? fieldTable(trace, TRACE_KEYS) : null;
    return el("div", { class: "call" + (isError ? " is-error" : "") + (trace && trace.fault ? " is-fault" : ""), data: { call: String(call.id) } },
      el("div", { class: "call-head" }, "→ ", el("b", { class: "fn" }, String(fn.name ?? "?")), " ", el("span", { class: "muted" }, String(call.id ?? "")), " ", marks),
      args(fn.arguments ?? "{}"),
      resultText === null ? el("div", { class: "muted" }, "no result") : el("div", { class: "result" + (isError ? " error" : "") }, resultText),
      extra);
  }

  function short(value) {
    const s = json(value, 0);
    return s && s.length > 300 ? el("details", null, el("summary", null, s.slice(0, 120) + "…"), pre(value)) : el("code", null, s ?? "undefined");
  }

  function stateDiff(d, task, t) {
    const rows = d.d.map(c => el("tr", { class: "op-" + c.op }, el("td", null, c.op), el("td", { class: "path" }, c.path),
      el("td", null, "before" in c ? short(c.before) : ""), el("td", null, "after" in c ? short(c.after) : "")));
    return el("div", null,
      rows.length ? el("table", { class: "grid diff" }, el("thead", null, el("tr", null, ["", "path", "initial state", "final state"].map(h => el("th", null, h)))), el("tbody", null, rows))
        : el("p", { class: "muted" }, "the final state equals the task's initial state"),
      d.dm ? el("p", { class: "muted" }, `${fmt(d.dm)} more changes not shown`) : null,
      el("details", null, el("summary", null, "final state"), pre(t.final_state ?? {})),
      el("details", null, el("summary", null, "initial state (task)"), pre(task.initial_state ?? {})));
  }

  function offered(tools) {
    return el("div", null, tools.map(tool => {
      const fn = tool.function || tool;
      return el("details", { class: "tool" }, el("summary", null, el("b", null, String(fn.name ?? "?")), " ", el("span", { class: "muted" }, String(fn.description ?? ""))), pre(fn.parameters ?? fn));
    }));
  }

  return { render, text };
})();
