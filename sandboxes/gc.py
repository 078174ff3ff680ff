"""Leftover sandboxes: what a killed run left behind (its stop() never ran), found by the run's label.

Every sandbox carries `synth.run=<run>` (and the container backends `synth.managed=1`). The pipeline
removes a run's leftovers when it opens the run (`remove_run_leftovers`), `synth sandboxes gc` does
it by hand (`remove_leftovers`). Both go through the backend table.
"""

from __future__ import annotations

import logging
from typing import Any

from sandboxes import backend_of

log = logging.getLogger(__name__)


def remove_leftovers(cfg: Any, run: str | None = None, *, run_id: str | None = None) -> int:
    """Remove the leftovers of one run dir (`run_id`), of every run named `run`, or of every run
    (both None) of cfg's backend; how many. Blocking."""
    return backend_of(cfg).remove_leftovers(cfg, run, run_id=run_id)


def remove_run_leftovers(cfg: Any, run_id: str) -> int:
    """As remove_leftovers for one run, when it opens (it holds the run dir's lock); a failure is only
    logged: an unreachable engine or cluster fails the episodes later, with a clear error."""
    try:
        return remove_leftovers(cfg, run_id=run_id)
    except Exception as exc:
        log.warning("could not look for leftover %s sandboxes of run %s: %s", cfg.type, run_id, exc)
        return 0
