"""The tool pool of a run: load tools.jsonl, filter it, and measure it (validity, duplicates)."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

from pydantic import BaseModel, Field

from synth.core.hashing import content_hash
from synth.core.records import ToolSpec
from synth.core.store import RunStore
from tools.diversity import Embedder, near_duplicates, tool_text
from tools.spec import schema_problems

NEAR_DUP_JACCARD = 0.8  # lexical fallback; embedding near-duplicates are a separate concern


def load_tools(run_dir: Path | str) -> list[ToolSpec]:
    return RunStore(Path(run_dir)).read("tools", ToolSpec)


def filter_tools(
    tools: list[ToolSpec], *, category: str | None = None, domain: str | None = None, kind: str | None = None
) -> list[ToolSpec]:
    return [
        t for t in tools
        if (category is None or t.category == category) and (domain is None or t.domain == domain)
        and (kind is None or t.kind == kind)
    ]  # fmt: skip


class ToolStats(BaseModel):
    total: int = 0
    by_category: dict[str, int] = Field(default_factory=dict)
    by_kind: dict[str, int] = Field(default_factory=dict)
    by_toolset: dict[str, int] = Field(default_factory=dict)
    valid: int = Field(0, description="Tools whose spec passes schema_problems().")
    exact_duplicates: int = Field(0, description="Tools whose MCP form equals an earlier tool's.")
    near_duplicates: int = Field(0, description=f"Tools whose name+description token Jaccard >= {NEAR_DUP_JACCARD} "
                                                "with an earlier tool (exact duplicates excluded).")

    embedding_backend: str = Field("", description="Embedder of the embedding near-duplicate count; empty: not measured.")
    embedding_threshold: float = 0.0
    embedding_near_duplicates: int = Field(0, description="Tools within embedding_threshold cosine of an earlier "
                                                          "kept tool (exact duplicates included).")

    @property
    def embedding_near_duplicate_rate(self) -> float:
        return self.embedding_near_duplicates / self.total if self.total else 0.0

    @property
    def exact_duplicate_rate(self) -> float:
        return self.exact_duplicates / self.total if self.total else 0.0

    @property
    def near_duplicate_rate(self) -> float:
        return self.near_duplicates / self.total if self.total else 0.0


def _tokens(spec: ToolSpec) -> frozenset[str]:
    # snake_case and camelCase names split into words, so get_time ~ getTime
    text = re.sub(r"([a-z])([A-Z])", r"\1 \2", f"{spec.name} {spec.description}").lower()
    return frozenset(re.findall(r"[a-z0-9]+", text))


def _jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


def stats(tools: list[ToolSpec], embedder: Embedder | None = None, threshold: float | None = None) -> ToolStats:
    """Counts, validity and duplicate rates; with an embedder also the embedding near-duplicate rate."""
    s = ToolStats(total=len(tools))
    if embedder is not None:
        s.embedding_backend = embedder.backend_name
        s.embedding_threshold = threshold if threshold is not None else embedder.default_threshold
        vectors = embedder.embed([tool_text(t) for t in tools])
        s.embedding_near_duplicates = sum(hit is not None for hit in near_duplicates(vectors, s.embedding_threshold))
    s.by_category = dict(Counter(t.category or "-" for t in tools).most_common())
    s.by_kind = dict(Counter(t.kind for t in tools).most_common())
    s.by_toolset = dict(Counter(t.toolset or "-" for t in tools).most_common())
    s.valid = sum(not schema_problems(t) for t in tools)
    seen: set[str] = set()
    kept: list[frozenset[str]] = []
    for t in tools:
        key = content_hash(t.to_mcp())
        if key in seen:
            s.exact_duplicates += 1
            continue
        seen.add(key)
        tokens = _tokens(t)
        # Quadratic, fine for pools of a few thousand tools.
        if any(_jaccard(tokens, other) >= NEAR_DUP_JACCARD for other in kept):
            s.near_duplicates += 1
        kept.append(tokens)
    return s


class EvolutionDedup(BaseModel):
    """How `synth tools evolve` removed near duplicates (manifest.json `tools_embeddings` + errors.jsonl)."""

    recorded: bool = False
    configured: str = ""
    backend: str | None = None
    threshold: float | None = None
    dropped: int = Field(0, description="Evolved tools dropped as near duplicates (errors.jsonl).")


def evolution_dedup(store: RunStore) -> EvolutionDedup:
    info = store.manifest().get("tools_embeddings")
    dropped = sum(e.stage == "tools" and "near duplicate of" in e.message for e in store.read("errors"))
    if not isinstance(info, dict):
        return EvolutionDedup(dropped=dropped)
    return EvolutionDedup(recorded=True, configured=info.get("configured", ""), backend=info.get("backend"),
                          threshold=info.get("near_duplicate_threshold"), dropped=dropped)
