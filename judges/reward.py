"""The one reward definition: the judge stage's keep rule and the RL environments' reward.

A reward is the checks (judges/checks.py, no LLM) plus, optionally, the rubric judge, combined by
the keep rules of judges/filters.py: any failed check or judge drop reason gives reward 0, else the
reward is the judge's normalized score (1.0 when the judge is not used). The judge stage builds
every verdict from it (judges/verdict.py) and both environments (synth/envs/) score with it, so
what filtered the SFT data is what an RL policy is rewarded for.

TRL's environment API never shows the environment the assistant's text (its `get_reward()` takes no
completion), so there only the checks in `CALLS_AND_STATE` apply: those that read the tool calls,
their results and the final state. A check added to judges/checks.py is left out of that set
until it is listed here, so it can never fail for want of text the environment does not have.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from judges.checks import CHECKS, Check, Subject, run_checks
from judges.config import JudgeConfig
from judges.filters import drop_reasons
from judges.judge import JudgeOutcome

CALLS_AND_STATE = frozenset({
    "tool_calls_name_offered_tools", "tool_arguments_valid", "tool_calls_answered",
    "final_state_assertions", "final_state_matches_gold", "distractor_tools_unused",
})


def without_text(checks: dict[str, Check] = CHECKS) -> dict[str, Check]:
    """The checks an environment can run from tool calls and the final state alone."""
    return {name: check for name, check in checks.items() if name in CALLS_AND_STATE}


class Reward(BaseModel):
    reward: float = Field(description="0 when any check or judge rule drops the episode, else the judge score (1 without judge).")
    keep: bool
    score: float = Field(description="The judge's normalized score; 1.0 when the judge was not used.")
    checks: dict[str, bool]
    reasons: list[str] = Field(default_factory=list, description="Why it was dropped, as verdicts say it.")
    judged: bool = False


def reward(cfg: JudgeConfig, subject: Subject, checks: dict[str, bool], outcome: JudgeOutcome | None = None) -> Reward:
    """The keep rule of judges/filters.py over the checks' results and, when given, the judge's outcome."""
    assert subject.task is not None, "a reward needs the task (its rubric and assertions)"
    results, score = (outcome.results, outcome.score) if outcome else ([], 1.0)
    if outcome is None:  # no judge: only the verifiable rules (checks, require_user_stop) can drop
        cfg = cfg.model_copy(update={"keep_threshold": 0.0, "mode": "single"})
    reasons = drop_reasons(cfg, subject.task, subject.trajectory, results, checks, score)
    return Reward(reward=0.0 if reasons else score, keep=not reasons, score=score, checks=checks, reasons=reasons,
                  judged=outcome is not None)


def episode_reward(cfg: JudgeConfig, subject: Subject, outcome: JudgeOutcome | None = None, *,
                   sees_text: bool = True) -> Reward:
    """Run the checks (all of them, or those without the assistant's text) and score."""
    return reward(cfg, subject, run_checks(subject, CHECKS if sees_text else without_text()), outcome)
