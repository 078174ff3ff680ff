"""The `judge` section of the run config: how trajectories are judged and kept."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class JudgeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    keep_threshold: float = Field(0.5, ge=0, le=1, description="Keep trajectories whose normalized rubric score reaches this.")
    require_user_stop: bool = Field(False, description="Drop episodes cut off by max_turns instead of ended by the user.")
    mode: Literal["rubric", "single"] = Field(
        "rubric", description="rubric: pass/fail per criterion; single: one holistic 0-10 score with a reason "
        "(normalized to 0-1; essential criteria are then not checked one by one).")
    samples: int = Field(1, ge=1, le=15, description="Judge samples per trajectory (different seeds); per-criterion majority, ties fail.")
    sample_temperature: float = Field(
        0.7, ge=0, le=2, description="Temperature of each sample when samples > 1 and of calibration calls; one sample is judged at 0.")
