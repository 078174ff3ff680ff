"""A synthetic run directory of N trajectories with realistic shapes and sizes, for the viewer's tests and
bench/view.py. Records are built with the pipeline's own record classes, so the files have exactly
the shape the pipeline writes (ids included); `future=True` then adds fields later versions may
write (a `runtime` per tool call, `reasoning_content`, a new drop reason and user flag, an unknown
trajectory field), and `hostile=True` plants HTML/script payloads in text the viewer shows.

Text is pseudo-words drawn Zipf-like from a few thousand-word vocabulary plus numbers and ids, so it
compresses about as well as model output (not as well as one repeated word would).

    python -m tests.synthetic_run OUT_DIR --trajectories 10000
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from synth.core.records import (Agent, Criterion, CriterionResult, ErrorRecord, GoldAction, Implementation,
                                StateAssertion, Task, ToolCallTrace, ToolSpec, Trajectory, Verdict)

HOSTILE = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2">'
CHECKS = ("tool_calls_name_offered_tools", "tool_arguments_valid", "tool_calls_answered", "ends_with_assistant_reply",
          "claims_backed_by_tool_calls", "stated_ids_grounded")
FAULTS = {"unavailable": "Error: service temporarily unavailable (503), retry later",
          "rate_limited": "Error: rate limit exceeded (429), retry in a few seconds"}
VERBS = ("create", "get", "list", "update", "delete", "search")
KINDS = ("essential", "important", "important", "important", "important", "optional", "essential", "pitfall")
FLAGS = ("fact_leaked_unasked", "premature_stop", "empty_user_message")


class Words:
    """A Zipf-like pseudo-word source (deterministic per seed)."""

    def __init__(self, rng: random.Random, size: int = 4000):
        syllables = [c + v for c in "bcdfghjklmnprstvwz" for v in ("a", "e", "i", "o", "u", "ar", "en", "is", "on")]
        self.vocab = list(dict.fromkeys("".join(rng.choice(syllables) for _ in range(rng.choice((1, 2, 2, 3))))
                                        for _ in range(size * 2)))[:size]
        self.cumulative = list(itertools.accumulate(1 / (rank + 1) for rank in range(len(self.vocab))))
        self.rng = rng

    def __call__(self, n: int) -> str:
        words = self.rng.choices(self.vocab, cum_weights=self.cumulative, k=n)
        if n > 6:
            words[self.rng.randrange(n)] = str(self.rng.randrange(10, 99999))
        return " ".join(words)

    def sentence(self, lo: int, hi: int) -> str:
        text = self(self.rng.randint(lo, hi))
        return text[:1].upper() + text[1:] + "."

    def paragraph(self, sentences: int) -> str:
        return " ".join(self.sentence(6, 18) for _ in range(sentences))


@dataclass
class Toolset:
    id: str
    name: str
    domain: str
    noun: str
    tools: list[ToolSpec] = field(default_factory=list)
    passed: bool = False


def write_synthetic_run(root: Path, trajectories: int = 40, *, seed: int = 0, hostile: bool = False,
                        future: bool = False, samples_per_task: int = 2) -> Path:
    rng = random.Random(seed)
    words = Words(rng)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    domains = [f"{words(1)} {noun}" for noun in ("retail", "travel", "clinic", "fleet", "library", "billing", "support", "events")]
    if hostile:
        domains[0] = f"retail {HOSTILE}"
    toolsets = make_toolsets(words, domains, rng)
    tools = [t for ts in toolsets for t in ts.tools]
    agents = make_agents(words, toolsets, rng)
    tasks = [make_task(words, rng, agent, toolsets) for agent in agents
             for _ in range(max(1, -(-trajectories // samples_per_task // len(agents))))]
    rng.shuffle(tasks)
    by_agent = {a.id: a for a in agents}
    rows, verdicts, errors = [], [], []
    for n in range(trajectories):
        task = tasks[(n // samples_per_task) % len(tasks)]
        trajectory = make_trajectory(words, rng, task, by_agent[task.agent_id], toolsets, sample=n % samples_per_task)
        rows.append(trajectory)
        if rng.random() < 0.02:  # the judge failed on this one: an error instead of a verdict
            errors.append(ErrorRecord(unit=trajectory.id, stage="judge", error_type="ParseError",
                                      message="reply is not valid JSON after one repair round",
                                      raw='{"results": [{"reason": "' + words(40) + '", "passed": tr'))
            continue
        verdicts.append(make_verdict(words, rng, task, trajectory))
    for _ in range(max(1, trajectories // 100)):
        errors.append(ErrorRecord(unit=f"{rng.getrandbits(64):016x}", stage="rollout", error_type="SandboxError",
                                  message=f"episode timed out after 600 s: {words(8)}"))
    implementations = [Implementation(unit=ts.id, toolset_id=ts.id, toolset=ts.name, domain=ts.domain,
                                      tool_ids=[t.id for t in ts.tools], module=f'"""{ts.name}"""\n' + words(200),
                                      passed=ts.passed, rounds=1 if ts.passed else 3,
                                      errors=[] if ts.passed else [f"smoke test failed: {words(12)}"])
                       for ts in toolsets]
    dumped = {
        "tools": [t.model_dump(by_alias=True) for t in tools], "agents": [a.model_dump() for a in agents],
        "tasks": [t.model_dump() for t in tasks], "trajectories": [t.model_dump() for t in rows],
        "verdicts": [v.model_dump() for v in verdicts], "errors": [e.model_dump() for e in errors],
        "implementations": [i.model_dump() for i in implementations],
    }
    if future:
        add_future_fields(dumped, rng)
    if hostile:
        plant_hostile(dumped)
    for kind, records in dumped.items():
        with (root / f"{kind}.jsonl").open("w") as fh:
            fh.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    write_manifest(root, dumped)
    (root / "config.yaml").write_text(f"name: {root.name}\nseed: {seed}\nrollout:\n  samples_per_task: {samples_per_task}\n"
                                      + (f"# {HOSTILE}\n" if hostile else ""))
    return root


def make_toolsets(words: Words, domains: list[str], rng: random.Random) -> list[Toolset]:
    toolsets = []
    for d, domain in enumerate(domains):
        for k in range(2):
            noun = words(1).replace(" ", "_") + ("_order", "_ticket")[k]
            ts = Toolset(id=f"ts{d}{k}{rng.getrandbits(32):08x}", name=f"{noun}s", domain=domain, noun=noun,
                         passed=rng.random() < 0.5)
            for verb in VERBS[: rng.randint(4, 6)]:
                properties: dict[str, Any] = {"id": {"type": "string", "description": words(6)}} if verb in ("get", "update", "delete") else {}
                if verb in ("create", "update", "search"):
                    properties |= {"title": {"type": "string", "description": words(8)},
                                   "quantity": {"type": "integer", "minimum": 1, "description": words(5)},
                                   "status": {"type": "string", "enum": ["open", "held", "closed"]}}
                ts.tools.append(ToolSpec(
                    name=f"{verb}_{noun}", description=words.sentence(10, 24),
                    inputSchema={"type": "object", "properties": properties, "required": list(properties)[:1],
                                 "additionalProperties": False},
                    kind="executable" if ts.passed else "simulated", category=words(2), domain=domain,
                    toolset=ts.name, toolset_id=ts.id, state_model=f"{noun}s: id, title, quantity, status"))
            toolsets.append(ts)
    return toolsets


def make_agents(words: Words, toolsets: list[Toolset], rng: random.Random) -> list[Agent]:
    agents = []
    for n, ts in enumerate(toolsets):
        partner = toolsets[(n + 3) % len(toolsets)]
        for strategy in ("single", "mixed", "distractors"):
            tools = list(ts.tools)
            decoys: list[str] = []
            if strategy == "mixed":
                tools += partner.tools
            elif strategy == "distractors":
                decoy = partner.tools[:2]
                tools += decoy
                decoys = [t.id for t in decoy]
            name = words(2).title()
            policy = "\n".join([f"- Always: {words(10)}" for _ in range(3)] + [f"- Never: {words(9)}" for _ in range(2)])
            prompt = (f"You are {name}, {words.sentence(10, 20)}\n\nPolicy:\n{policy}\n- Ask the user when: {words(12)}\n\n"
                      f"Style: {words.sentence(8, 14)}\n\nYou can use tools. Call a tool when it helps the user; use only the "
                      "tools you are given and\nonly the results they return. If you need a detail the user has not given, ask for it.")
            names = " + ".join([ts.name] + ([partner.name] if strategy == "mixed" else []))
            agents.append(Agent(unit=f"{strategy}:{ts.id}", toolset_id=ts.id, toolset=names, domain=ts.domain,
                                tool_ids=[t.id for t in tools], name=name, system_prompt=prompt, strategy=strategy,
                                toolset_ids=[] if strategy == "single" else [ts.id, partner.id], distractor_tool_ids=decoys))
    return agents


def initial_state(words: Words, rng: random.Random, noun: str) -> dict[str, Any]:
    items = {str(i): {"id": str(i), "title": words(4), "quantity": rng.randint(1, 9), "status": "open"}
             for i in range(1, rng.randint(2, 4))}
    return {f"{noun}s": items, "next_id": len(items) + 1}


def make_task(words: Words, rng: random.Random, agent: Agent, toolsets: list[Toolset]) -> Task:
    ts = next(t for t in toolsets if t.id == agent.toolset_id)
    gold = ts.passed and agent.strategy == "single" and rng.random() < 0.8
    state = initial_state(words, rng, ts.noun) if gold or rng.random() < 0.3 else {}
    rubric = [Criterion(text=words.sentence(8, 20), weight=rng.choice((1.0, 2.0, 3.0, 5.0)), kind=kind) for kind in KINDS]
    return Task(
        unit=agent.id, agent_id=agent.id, goal=words.sentence(12, 30), persona=words.sentence(8, 16),
        user_facts=[f"{words(3)}: {words(2)} {rng.randrange(100, 9999)}" for _ in range(3)],
        difficulty=rng.choice(("easy", "easy", "medium", "hard")), initial_state=state, rubric=rubric,
        gold_actions=[GoldAction(tool=f"create_{ts.noun}", arguments=json.dumps({"title": words(3), "quantity": 2})),
                      GoldAction(tool=f"update_{ts.noun}", arguments=json.dumps({"id": "1", "status": "closed"}))] if gold else [],
        assertions=[StateAssertion(path=f"{ts.noun}s.1.status", op="equals", value='"closed"'),
                    StateAssertion(path=f"{ts.noun}s.{state.get('next_id', 1)}", op="exists")] if gold else [],
        validated=gold)


def make_trajectory(words: Words, rng: random.Random, task: Task, agent: Agent, toolsets: list[Toolset],
                    sample: int) -> Trajectory:
    offered = [t for ts in toolsets for t in ts.tools if t.id in agent.tool_ids]
    state = json.loads(json.dumps(task.initial_state)) or initial_state(words, rng, offered[0].name.split("_", 1)[1])
    collection = next(k for k in state if k != "next_id")
    messages: list[dict[str, Any]] = [{"role": "system", "content": agent.system_prompt}]
    traces: list[ToolCallTrace] = []
    turns = rng.randint(2, 4)
    for turn in range(1, turns + 1):
        messages.append({"role": "user", "content": words.paragraph(rng.randint(1, 3))})
        for _ in range(rng.choice((0, 1, 1, 2))):
            calls = []
            for _ in range(rng.choice((1, 1, 2))):
                tool = rng.choice(offered)
                call_id = f"call_{len(traces)}"
                arguments = json.dumps({"id": str(rng.randint(1, 4)), "title": words(4), "quantity": rng.randint(1, 5)})
                fault = rng.choice(list(FAULTS)) if rng.random() < 0.04 else None
                is_error = fault is not None or rng.random() < 0.06
                if fault:
                    result = FAULTS[fault]
                elif is_error:
                    result = f"Error: {words(6)} not found"
                else:
                    item = {"id": str(state["next_id"]), "title": words(5), "quantity": rng.randint(1, 9), "status": "open",
                            "notes": words(rng.randint(8, 30))}
                    if tool.name.startswith("create"):
                        state[collection][item["id"]] = item
                        state["next_id"] += 1
                    elif tool.name.startswith("update") and state[collection]:
                        state[collection][rng.choice(list(state[collection]))]["status"] = rng.choice(("held", "closed"))
                    result = json.dumps(item)
                calls.append({"id": call_id, "type": "function", "function": {"name": tool.name, "arguments": arguments}})
                traces.append(ToolCallTrace(call_id=call_id, name=tool.name, arguments=arguments, result=result,
                                            is_error=is_error, fault=fault, latency_s=round(rng.uniform(0.001, 0.4), 4), turn=turn))
            messages.append({"role": "assistant", "content": "", "tool_calls": calls})
            messages += [{"role": "tool", "tool_call_id": c["id"], "name": c["function"]["name"], "content": t.result}
                         for c, t in zip(calls, traces[-len(calls):])]
        messages.append({"role": "assistant", "content": words.paragraph(rng.randint(1, 4))})
    flags = [f for f in FLAGS if rng.random() < (0.1, 0.04, 0.02)[FLAGS.index(f)]]
    return Trajectory(unit=f"{task.id}:{sample}", task_id=task.id, agent_id=agent.id, sample=sample, seed=rng.getrandbits(32),
                      messages=messages, tools=[t.to_openai() for t in offered], tool_calls=traces, final_state=state,
                      user_stopped=rng.random() < 0.7, turns=turns, duration_s=round(rng.uniform(2, 90), 3), user_flags=flags,
                      usage={"agent_calls": turns * 2, "user_calls": turns, "cached_calls": 0,
                             "prompt_tokens": rng.randint(2000, 9000), "completion_tokens": rng.randint(200, 900)})


def make_verdict(words: Words, rng: random.Random, task: Task, trajectory: Trajectory) -> Verdict:
    quality = rng.random()
    results = [CriterionResult(index=i, passed=(rng.random() < quality) != (c.kind == "pitfall"),
                               reason=words.sentence(10, 26), turn=rng.randint(1, trajectory.turns))
               for i, c in enumerate(task.rubric)]
    checks = {name: rng.random() > 0.04 for name in CHECKS}
    positive = sum(c.weight for c in task.rubric if c.kind != "pitfall")
    gained = sum(c.weight for c, r in zip(task.rubric, results) if c.kind != "pitfall" and r.passed)
    lost = sum(c.weight for c, r in zip(task.rubric, results) if c.kind == "pitfall" and r.passed)
    score = round(max(0.0, min(1.0, (gained - lost) / positive)), 4)
    reasons = [f"check failed: {name}" for name, ok in checks.items() if not ok]
    reasons += [f"essential criterion failed: {c.text}" for c, r in zip(task.rubric, results)
                if c.kind == "essential" and not r.passed]
    if score < 0.5:
        reasons.append(f"score {score:.2f} below threshold 0.50")
    return Verdict(unit=trajectory.id, trajectory_id=trajectory.id, task_id=task.id, results=results, checks=checks,
                   score=score, keep=not reasons, reasons=reasons)


def add_future_fields(dumped: dict[str, list[dict[str, Any]]], rng: random.Random) -> None:
    """Fields later versions write: the viewer must show them, not choke on them."""
    for trajectory in dumped["trajectories"]:
        for call in trajectory["tool_calls"]:
            call["runtime"] = rng.choice(("real", "executable", "simulated"))
        for message in trajectory["messages"]:
            if message["role"] == "assistant" and message["content"]:
                message["reasoning_content"] = "Let me think: the user wants the order closed first."
        trajectory["episode_budget"] = {"tokens_left": 1234}
    if dumped["verdicts"]:
        dumped["verdicts"][0]["keep"] = False
        dumped["verdicts"][0]["reasons"].append("user simulator broke character at turn 2")
        dumped["verdicts"][0]["results"][0]["turn"] = 120  # small judges cite turns the conversation does not have
    if dumped["trajectories"]:
        dumped["trajectories"][0]["user_flags"].append("assistant_voice")


def plant_hostile(dumped: dict[str, list[dict[str, Any]]]) -> None:
    """Payloads in every kind of text the report shows: none may run."""
    trajectory = dumped["trajectories"][0]
    for message in trajectory["messages"]:
        if message["role"] in ("user", "assistant") and message["content"]:
            message["content"] = f"{HOSTILE} {message['content']}"
        if message["role"] == "tool":
            message["content"] = HOSTILE
    for call in trajectory["tool_calls"]:
        call["result"] = HOSTILE
    trajectory["final_state"][HOSTILE] = HOSTILE
    dumped["tasks"][0]["goal"] = HOSTILE + dumped["tasks"][0]["goal"]
    for verdict in dumped["verdicts"][:3]:
        verdict["results"][0]["reason"] = HOSTILE
        verdict["reasons"].append(HOSTILE)
    dumped["errors"][0]["raw"] = HOSTILE
    dumped["errors"][0]["message"] = HOSTILE
    dumped["tools"][0]["name"] = "evil" + HOSTILE


def write_manifest(root: Path, dumped: dict[str, list[dict[str, Any]]]) -> None:
    verdicts = dumped["verdicts"]
    kept = sum(v["keep"] for v in verdicts)
    counts = {kind: len(dumped[kind]) for kind in ("tools", "agents", "tasks", "trajectories", "verdicts")} | {"kept": kept}
    stage = lambda requests: {"requests": requests, "cached": requests // 10, "prompt_tokens": requests * 900,  # noqa: E731
                              "completion_tokens": requests * 120, "retries": requests // 50, "failures": 0, "seconds": requests * 0.8}
    manifest = {
        "config_hash": "0123456789abcdef", "created": "2026-01-01T00:00:00Z", "counts": counts,
        "funnel": {"counts": counts, "dropped": len(verdicts) - kept},
        "stages": {s: {"status": "done", "failed_units": 0} for s in ("tools", "agents", "tasks", "rollout", "judge")},
        "usage": {"tools": stage(16), "agents": stage(len(dumped["agents"])), "tasks": stage(len(dumped["tasks"])),
                  "rollout": stage(len(dumped["trajectories"]) * 6), "judge": stage(len(verdicts))},
        "user_flags": {"trajectories": len(dumped["trajectories"])},
        "judge_agreement": {"k": 0},
    }
    (root / "manifest.json").write_text(json.dumps(manifest, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--trajectories", type=int, default=10000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--hostile", action="store_true")
    parser.add_argument("--future", action="store_true")
    args = parser.parse_args()
    print(write_synthetic_run(args.out, args.trajectories, seed=args.seed, hostile=args.hostile, future=args.future))


if __name__ == "__main__":
    main()
