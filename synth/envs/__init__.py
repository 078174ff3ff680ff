"""RL environments from exported RL rows, with the reward the SFT data was filtered with.

- `trl_environments(rows)`: TRL GRPOTrainer's `environment_factory` (a class per toolset, routed by
  the `environment` column).
- `load_environment(path)`: a verifiers multi-turn environment (the user simulator is the
  environment's turn; the reward is the rubric).
Both run `EpisodeSession` (synth/envs/session.py) and score with judges/reward.py.
"""

from synth.envs.session import EnvironmentOptions, EpisodeSession
from synth.envs.trl_env import ToolEnvironment, environment_class, trl_environments


def load_environment(path: str, **kwargs):
    """The verifiers environment over export/rl at `path` (needs `pip install verifiers`)."""
    from synth.envs.verifiers_env import load_environment as load

    return load(path, **kwargs)


__all__ = ["EnvironmentOptions", "EpisodeSession", "ToolEnvironment", "environment_class", "load_environment",
           "trl_environments"]
