"""A few real SFTTrainer steps on an exported dataset, with the card's own snippet: a tiny model on
CPU, assistant-only loss; the loss is finite and exactly the assistant's tokens carry labels."""

from __future__ import annotations

import math
import re

import pytest

from synth.stages.export import export_run
from tests.exported_run import build
from tests.tiny_model import load_tiny_model

pytestmark = pytest.mark.train


def card_snippets(card: str) -> list[str]:
    section = card.split("## Train with it", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, re.S)


def test_sft_trainer_runs_the_cards_snippet(tmp_path, monkeypatch):
    ctx = build(tmp_path)
    export_run(ctx)
    export_dir = ctx.store.root / "export"
    monkeypatch.chdir(tmp_path)  # the snippet writes sft-out/ in the working directory
    model, tokenizer = load_tiny_model()
    namespace = {"export_dir": str(export_dir), "model": model, "tokenizer": tokenizer,
                 "train_args": {"max_steps": 2, "per_device_train_batch_size": 2, "learning_rate": 1e-5,
                                "use_cpu": True, "report_to": "none", "save_strategy": "no", "logging_steps": 1,
                                "max_length": 1024, "dataloader_num_workers": 0}}
    sft_snippet = card_snippets((export_dir / "README.md").read_text())[0]
    exec(compile(sft_snippet, "card:sft", "exec"), namespace)
    trainer = namespace["trainer"]

    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert trainer.state.global_step == 2 and losses and all(math.isfinite(x) for x in losses)
    exported = namespace["sft"]
    for example, row in zip(trainer.train_dataset, exported, strict=True):
        learned = tokenizer.decode([t for t, label in zip(example["input_ids"], example["labels"]) if label != -100])
        for message in row["messages"]:
            text = message["content"].strip()
            if message["role"] == "assistant":
                assert text in learned
                for call in message.get("tool_calls") or []:
                    assert call["function"]["name"] in learned
            elif text:
                assert text not in learned, (message["role"], text)
    ctx.store.close()
