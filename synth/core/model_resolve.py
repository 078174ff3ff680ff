"""From `embedded.model` (a preset or a GGUF path) to what the embedded server serves, and under which name."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel

from synth.core.gguf_header import GGUFError, read_metadata
from synth.core.model_cache import install
from synth.core.models import DEFAULT_CHAT_FORMAT, Preset, preset_or_path
from synth.core.errors import ConfigError

FALLBACK_CHAT_FORMAT = "chatml-function-calling"  # a GGUF without a chat template: llama-cpp-python's ChatML


class ServedModel(BaseModel):
    path: Path
    alias: str
    chat_format: str
    chat_template: Path | None = None
    preset: str | None = None


def served_alias(model: str | Path | None, model_alias: str | None = None) -> str:
    """The model name the server will report, without installing or reading anything.

    A preset's alias differs per model, so the requests (and the run's cached replies, keyed by the
    request) of one model are never answered from another's cache.
    """
    if model_alias:
        return model_alias
    target = preset_or_path(model)
    return target.alias if isinstance(target, Preset) else target.stem


def resolve(model: str | Path | None, *, chat_format: str | None = None, model_alias: str | None = None) -> ServedModel:
    """The file to serve (a preset installed into the cache first if needed) and how to serve it."""
    target = preset_or_path(model)
    if isinstance(target, Preset):
        return ServedModel(path=install(target), alias=model_alias or target.alias,
                           chat_format=chat_format or target.chat_format, chat_template=target.template_path,
                           preset=target.name)
    if not target.is_file():
        raise ConfigError(f"embedded.model: no such GGUF file: {target}")
    try:
        meta = read_metadata(target)
    except (GGUFError, OSError) as exc:
        raise ConfigError(f"embedded.model: {target} is not a GGUF model ({exc})") from None
    default = DEFAULT_CHAT_FORMAT if meta.get("tokenizer.chat_template") else FALLBACK_CHAT_FORMAT
    return ServedModel(path=target, alias=model_alias or target.stem, chat_format=chat_format or default)
