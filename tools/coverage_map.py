"""A PNG map of the tool pool's embedding space: where real and synthetic tools sit, what is empty.

2-D PCA (numpy SVD, no sklearn) of the tools' embeddings; one colour and marker per kind; each
category's label at the centroid of its tools, so clusters and gaps can be read off the picture.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from synth.core.records import ToolSpec
from tools.diversity import Embedder, tool_text

STYLE = {  # kind -> (colour, marker, legend label)
    "real": ("#1f77b4", "o", "real (imported MCP)"),
    "simulated": ("#ff7f0e", "^", "synthetic, simulated"),
    "executable": ("#2ca02c", "s", "synthetic, executable"),
}
MAX_LABELS = 25  # category names drawn: more overlap into noise


def pca_2d(vectors: np.ndarray) -> np.ndarray:
    """Coordinates on the two main axes of variation (zeros where there is no variation)."""
    if len(vectors) == 0:
        return np.zeros((0, 2))
    centered = vectors - vectors.mean(axis=0)
    if len(vectors) < 2 or not np.any(centered):
        return np.zeros((len(vectors), 2))
    u, s, _ = np.linalg.svd(centered, full_matrices=False)
    coords = u[:, :2] * s[:2]
    # SVD signs are arbitrary: fix them so the same pool always draws the same picture.
    for k in range(coords.shape[1]):
        if coords[np.argmax(np.abs(coords[:, k])), k] < 0:
            coords[:, k] *= -1
    return np.pad(coords, ((0, 0), (0, 2 - coords.shape[1])))


def write_map(tools: list[ToolSpec], embedder: Embedder, path: Path | str, title: str = "tool pool") -> Path:
    import matplotlib

    matplotlib.use("Agg")  # no display here, and none needed for a file
    import matplotlib.pyplot as plt

    path = Path(path)
    coords = pca_2d(embedder.embed([tool_text(t) for t in tools]))
    fig, ax = plt.subplots(figsize=(10, 7.5), dpi=120)
    counts = Counter(t.kind for t in tools)
    for kind, (colour, marker, label) in STYLE.items():
        idx = [i for i, t in enumerate(tools) if t.kind == kind]
        if idx:
            ax.scatter(coords[idx, 0], coords[idx, 1], c=colour, marker=marker, s=36, alpha=0.75,
                       edgecolors="white", linewidths=0.5, label=f"{label}: {counts[kind]}")
    by_category: dict[str, list[int]] = {}
    for i, t in enumerate(tools):
        by_category.setdefault(t.category or "-", []).append(i)
    biggest = sorted(by_category, key=lambda c: (-len(by_category[c]), c))[:MAX_LABELS]
    for category in biggest:
        x, y = coords[by_category[category]].mean(axis=0)
        ax.annotate(category, (x, y), fontsize=8, ha="center", va="bottom", color="#333333",
                    bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": "none", "alpha": 0.7})
    ax.set_title(f"{title}: {len(tools)} tools, {embedder.backend_name} embeddings, 2-D PCA")
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    ax.grid(True, alpha=0.3)
    if tools:
        ax.legend(loc="best", fontsize=9, title="kind")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    plt.close(fig)
    return path
