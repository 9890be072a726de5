"""A PNG of search results: each query beside its neighbours, with their scores and labels."""

from __future__ import annotations

import logging
import os
import textwrap
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from zapmulti.data.images import decode_image
from zapmulti.errors import BadImageError, ConfigError
from zapmulti.fileio import atomic_path

logger = logging.getLogger(__name__)

MAX_GRID_QUERIES = 20
MAX_GRID_NEIGHBOURS = 20
FORMATS = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".pdf": "pdf", ".svg": "svg"}
CELL_INCHES = 1.7


def _thumbnail(path: str) -> np.ndarray | None:
    try:
        img = decode_image(path)
    except BadImageError as exc:
        logger.warning("grid: %s cannot be shown (%s)", path, exc.reason)
        return None
    img.thumbnail((160, 160))
    return np.asarray(img)


def grid_format(out: str | os.PathLike) -> str:
    """The picture format a grid file name asks for, or a ConfigError naming the choices."""
    suffix = Path(out).suffix.lower()
    if suffix not in FORMATS:
        raise ConfigError(
            f"--grid {out}: unknown picture format {suffix or '(no extension)'!r}; end the "
            f"name with one of {', '.join(FORMATS)}"
        )
    return FORMATS[suffix]


def save_grid(
    results: pd.DataFrame,
    out: str | os.PathLike,
    labels: Sequence[str] | None = None,
    max_queries: int = MAX_GRID_QUERIES,
    max_neighbours: int = MAX_GRID_NEIGHBOURS,
) -> Path:
    """Draw one row per query: the query, then its neighbours titled rank, score and labels.

    Args:
        results: a frame from `search` (query, rank, score, path and label columns).
        out: the PNG to write (atomically).
        labels: label columns to print under each neighbour (default: up to three of them).
        max_queries: draw at most this many queries; the rest are left out with a warning.
        max_neighbours: draw at most this many neighbours per query (the results file keeps
            them all); a grid of hundreds of columns would take gigabytes to draw.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out)
    fmt = grid_format(out)
    queries = list(dict.fromkeys(results["query"].tolist())) if len(results) else []
    if len(queries) > max_queries:
        logger.warning(
            "grid: drawing the first %d of %d queries; search fewer at a time to see them all",
            max_queries,
            len(queries),
        )
        queries = queries[:max_queries]
    if labels is None:
        skip = {"query", "rank", "score", "path", "key", "group"}
        labels = [c for c in results.columns if c not in skip][:3]
    if len(results) and (results["rank"] > max_neighbours).any():
        logger.warning(
            "grid: drawing the first %d neighbours of each query (the results keep all of them)",
            max_neighbours,
        )
        results = results[results["rank"] <= max_neighbours]
    cols = 1 + max((int((results["query"] == q).sum()) for q in queries), default=0)
    rows = max(1, len(queries))
    fig, axes = plt.subplots(
        rows, cols, figsize=(CELL_INCHES * cols, CELL_INCHES * 1.35 * rows), squeeze=False
    )
    for ax in axes.ravel():
        ax.axis("off")
    for r, query in enumerate(queries):
        thumb = _thumbnail(query)
        if thumb is not None:
            axes[r, 0].imshow(thumb)
        axes[r, 0].set_title("query\n" + textwrap.shorten(Path(query).name, 24), fontsize=7)
        for c, (_, hit) in enumerate(results[results["query"] == query].iterrows(), start=1):
            thumb = _thumbnail(hit["path"])
            if thumb is not None:
                axes[r, c].imshow(thumb)
            text = [f"#{hit['rank']}  {hit['score']:.3f}"]
            text += [textwrap.shorten(str(hit[col]), 22) for col in labels if col in hit.index]
            axes[r, c].set_title("\n".join(text), fontsize=6)
    if not queries:
        axes[0, 0].text(0.5, 0.5, "no results", ha="center", va="center")
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format=fmt, dpi=110)
    plt.close(fig)
    return out
