"""The `judge` section of the run config: how trajectories are judged and kept."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from judges.user_checks import USER_FLAGS

UserFlag = Literal["user_broke_role", "user_invented_fact", "fact_leaked_unasked", "premature_stop", "empty_user_message"]
assert set(UserFlag.__args__) == set(USER_FLAGS)  # type: ignore[attr-defined]


class JudgeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    keep_threshold: float = Field(0.5, ge=0, le=1, description="Keep trajectories whose normalized rubric score reaches "
                                  "this, once every essential criterion passed and no pitfall happened.")
    require_user_stop: bool = Field(False, description="Drop episodes cut off by max_turns instead of ended by the user.")
    mode: Literal["rubric", "single"] = Field(
        "rubric", description="rubric: pass/fail per criterion; single: one holistic 0-10 score with a reason "
        "(normalized to 0-1; essential criteria are then not checked one by one).")
    samples: int = Field(1, ge=1, le=15, description="Judge samples per trajectory (different seeds); per-criterion majority, ties fail.")
    sample_temperature: float = Field(
        0.7, ge=0, le=2, description="Temperature of each sample when samples > 1 and of calibration calls; one sample is judged at 0.")
    drop_user_flags: list[UserFlag] = Field(
        default_factory=lambda: list(USER_FLAGS),
        description="User-simulator errors that drop a trajectory (judges/user_checks.py): user_broke_role, "
        "user_invented_fact, fact_leaked_unasked, premature_stop, empty_user_message. The checks run either way "
        "and are recorded on the verdict; a flag left out only stops dropping.")
