"""No setting hides less without saying so (issue #18): untrusted code gets a process per episode and
bounded local sandboxes by default, and `isolation: none`, when chosen, is printed in the run's
summary and the dataset card."""

from __future__ import annotations

import pytest

from sandboxes.local import LocalConfig
from synth.config import RolloutConfig, RunConfig, dump_config
from tests.security.attacks import EXEC_MODULE, EXEC_SPECS
from tools.executable import ExecutableToolset

pytestmark = pytest.mark.security


def test_untrusted_code_gets_a_process_per_episode_by_default():
    assert RolloutConfig().tool_process == "per_episode"
    assert ExecutableToolset(EXEC_SPECS, None, module=EXEC_MODULE).process_mode == "per_episode"  # type: ignore[arg-type]


def test_local_sandboxes_are_bounded_by_default():
    cfg = LocalConfig()
    assert cfg.memory_mb and cfg.cpu_s and cfg.max_processes and cfg.file_mb


def test_isolation_none_is_printed_in_the_summary_and_the_dataset_card(tmp_path):
    from synth.context import Context
    from synth.core.store import RunStore
    from synth.core.usage import UsageMeter
    from synth.run import summary_table
    from synth.stages.export import export_run

    shown = {}
    for isolation in ("none", "bwrap"):
        cfg = RunConfig(runs_dir=str(tmp_path), name=f"run-{isolation}",
                        rollout={"sandbox": {"type": "local", "isolation": isolation}})
        store = RunStore(cfg.run_dir)
        store.open(dump_config(cfg), cfg.content_hash())
        ctx = Context(cfg=cfg, store=store, llm=None, meter=UsageMeter(), quiet=True)  # type: ignore[arg-type]
        export_run(ctx)
        shown[isolation] = (str(summary_table(ctx).caption), (store.root / "export" / "README.md").read_text())
        store.close()
    for text in shown["none"]:
        assert "isolation: none" in text and "NOT isolated" in text, text
    for text in shown["bwrap"]:
        assert "NOT isolated" not in text, text
