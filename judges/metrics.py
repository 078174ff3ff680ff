"""Run-wide measures from the records: pass@k and pass^k over the samples of each task, and the
funnel (counts per stage, failed units, drops per reason kind). The stages put them in manifest.json
(judge: pass_k; every stage: funnel and counts) and the dataset card shows the funnel."""

from __future__ import annotations

from collections import Counter
from math import comb
from typing import Any, Iterable

from judges.checks import STATE_CHECKS
from judges.filters import reason_kind
from synth.core.records import Trajectory, Verdict
from synth.core.store import RunStore

FUNNEL_KINDS = ("tools", "agents", "tasks", "trajectories", "verdicts")


def state_check_report(verdicts: Iterable[Verdict]) -> dict[str, Any]:
    """How many kept trajectories rest on a state check (one of STATE_CHECKS applied, and passed:
    it was kept), per check; the rest rest on the judge and the structural checks alone."""
    kept = [v for v in verdicts if v.keep]
    per_check = {name: sum(name in v.checks for v in kept) for name in STATE_CHECKS}
    return {"kept": len(kept), "kept_on_state_check": sum(any(n in v.checks for n in STATE_CHECKS) for v in kept),
            **{f"kept_on_{name}": n for name, n in per_check.items()}}


def pass_at_k(n: int, c: int, k: int) -> float:
    """Chance that at least one of k samples passes, given c of n passed (Chen et al. 2021, unbiased)."""
    _check(n, c, k)
    return 1.0 if n - c < k else 1.0 - comb(n - c, k) / comb(n, k)


def pass_hat_k(n: int, c: int, k: int) -> float:
    """Chance that all k samples pass, given c of n passed (tau-bench's pass^k): C(c,k) / C(n,k)."""
    _check(n, c, k)
    return comb(c, k) / comb(n, k)


def _check(n: int, c: int, k: int) -> None:
    if not (0 <= c <= n and 1 <= k <= n):
        raise ValueError(f"need 0 <= c <= n and 1 <= k <= n, got n={n} c={c} k={k}")


def pass_report(trajectories: Iterable[Trajectory], verdicts: Iterable[Verdict]) -> dict[str, Any]:
    """pass@k and pass^k per task and their means over tasks, k = 1..samples; a sample passes when
    its verdict keeps it. Trajectories without a verdict (judge failed) are left out and counted."""
    kept = {v.trajectory_id: v.keep for v in verdicts}
    outcomes: dict[str, list[bool]] = {}
    unjudged = 0
    for trajectory in trajectories:
        if trajectory.id in kept:
            outcomes.setdefault(trajectory.task_id, []).append(kept[trajectory.id])
        else:
            unjudged += 1
    metrics = {"pass@k": pass_at_k, "pass^k": pass_hat_k}
    exact = {task_id: {name: [f(len(o), sum(o), k) for k in range(1, len(o) + 1)] for name, f in metrics.items()}
             for task_id, o in sorted(outcomes.items())}
    ks = list(range(1, max((len(o) for o in outcomes.values()), default=0) + 1))
    # A task counts towards the mean at k only when it has at least k judged samples.
    mean = {name: {str(k): round(_mean([v[name][k - 1] for v in exact.values() if len(v[name]) >= k]), 4)
                   for k in ks} for name in metrics}
    tasks = {task_id: {"n": len(outcomes[task_id]), "c": sum(outcomes[task_id]),
                       **{name: {str(k): round(v, 4) for k, v in enumerate(values, 1)} for name, values in m.items()}}
             for task_id, m in exact.items()}
    return {"tasks_judged": len(tasks), "unjudged_trajectories": unjudged, "k": ks, "mean": mean, "tasks": tasks}


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def funnel_report(store: RunStore) -> dict[str, Any]:
    """Counts per stage, failed units per stage, and drops per reason kind, for manifest.json and the card.

    A dropped trajectory usually has several reasons, so `drop_reasons` counts reasons (each kind at
    most once per trajectory) and can sum to more than `dropped`.
    """
    verdicts = store.read("verdicts")
    counts = {kind: len(store.read(kind)) for kind in FUNNEL_KINDS}
    kept = sum(v.keep for v in verdicts)
    reasons = Counter(kind for v in verdicts for kind in {reason_kind(r) for r in v.reasons})
    failed = Counter(e.stage for e in store.read("errors"))
    return {
        "counts": {**counts, "kept": kept},
        "dropped": len(verdicts) - kept,
        "drop_reasons": dict(reasons.most_common()),
        "failed_units": dict(sorted(failed.items())),
    }
