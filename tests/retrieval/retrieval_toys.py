"""Helpers for the retrieval tests: small synthetic indexes, no model needed."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from zapmulti.retrieval.index import SimilarityIndex, create_faiss_index, new_manifest


def unit_vectors(n: int, dim: int, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def make_index(vectors: np.ndarray, factory: str = "Flat", **columns) -> SimilarityIndex:
    """An in-memory index over `vectors` whose metadata has a path plus the given columns."""
    n = len(vectors)
    meta = pd.DataFrame({"path": [f"/catalogue/item{i:03d}.jpg" for i in range(n)]})
    for name, values in columns.items():
        meta[name] = pd.Series(list(values), dtype=object)
    index, plan = create_faiss_index(vectors, factory)
    manifest = new_manifest(
        embedding="backbone",
        dim=vectors.shape[1],
        factory=plan.requested,
        factory_used=plan.used,
        items=n,
        head_columns={"colour": "colour"} if "colour" in columns else {},
        search={"ef_search": 16, "nprobe": 1},
    )
    return SimilarityIndex(index, meta.astype(object), vectors, manifest)


@pytest.fixture
def toy() -> SimilarityIndex:
    """60 random unit vectors in 16 dimensions, with a colour and a gender label."""
    vectors = unit_vectors(60, 16)
    colours = ["Black", "White", "Brown"] * 20
    genders = ["Men", "Women", None, "Women"] * 15
    return make_index(vectors, colour=colours, gender=genders)
