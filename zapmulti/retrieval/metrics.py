"""Retrieval metrics of an index: precision@1, R-precision, MAP@R, label agreement, recall@k.

precision@1, R-precision and MAP@R come from pytorch-metric-learning's AccuracyCalculator over
exact cosine search of the stored vectors, with each query left out of its own references: they
measure the embedding. Label agreement uses the index's own search (what a user gets back), and
for an approximate index recall@k compares that search with exact search over the same vectors.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import pandas as pd

from zapmulti.errors import ConfigError, DataError
from zapmulti.retrieval.index import SimilarityIndex, load_index
from zapmulti.retrieval.search import exact_search, search_vectors

logger = logging.getLogger(__name__)

PML_METRICS = ("precision_at_1", "r_precision", "mean_average_precision_at_r")
DEFAULT_MAX_QUERIES = 2000


@contextlib.contextmanager
def _quiet_pml() -> Iterator[None]:
    """pytorch-metric-learning logs every k-nn call at INFO; keep that out of our output."""
    pml_logger = logging.getLogger("PML")
    level = pml_logger.level
    pml_logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        pml_logger.setLevel(level)


def accuracy_metrics(
    vectors: np.ndarray, labels: np.ndarray, queries: np.ndarray | None = None
) -> dict[str, float]:
    """precision@1, R-precision and MAP@R, each query left out of its own references.

    Args:
        vectors: [N, D] L2-normalised embeddings (the references).
        labels: [N] integer labels; -1 marks an item without a label, which is neither a query
            nor a reference.
        queries: rows of `vectors` to use as queries (default: every labelled row).

    Returns:
        The three metrics (NaN where no query has another item of its label) and the number of
        queries scored.
    """
    import torch
    from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator
    from pytorch_metric_learning.utils.inference import FaissKNN

    labels = np.asarray(labels, dtype=np.int64)
    labelled = np.flatnonzero(labels >= 0)
    queries = labelled if queries is None else np.intersect1d(queries, labelled)
    if len(queries) == 0 or len(labelled) < 2:
        return {**{m: float("nan") for m in PML_METRICS}, "queries": 0}
    # AccuracyCalculator wants the queries first among the references when they are included.
    rest = np.setdiff1d(labelled, queries, assume_unique=True)
    ref_rows = np.concatenate([queries, rest])
    reference = np.ascontiguousarray(vectors[ref_rows], dtype=np.float32)
    ref_labels = labels[ref_rows]
    calculator = AccuracyCalculator(
        include=PML_METRICS,
        k="max_bin_count",
        device=torch.device("cpu"),
        knn_func=FaissKNN(index_init_fn=faiss.IndexFlatIP, reset_before=True, reset_after=True),
    )
    with _quiet_pml():
        result = calculator.get_accuracy(
            reference[: len(queries)],
            ref_labels[: len(queries)],
            reference,
            ref_labels,
            ref_includes_query=True,
        )
    return {**{m: float(result[m]) for m in PML_METRICS}, "queries": int(len(queries))}


def label_agreement(
    query_labels: Sequence[Any], neighbour_labels: Sequence[Sequence[Any]]
) -> tuple[float, int]:
    """Share of neighbours whose label equals their query's, over all labelled pairs.

    Queries without a label and neighbours without a label (None/NaN) are left out.

    Returns:
        The share (NaN when no pair is labelled) and the number of pairs counted.
    """
    agree = total = 0
    for q, neighbours in zip(query_labels, neighbour_labels, strict=True):
        if _missing(q):
            continue
        for n in neighbours:
            if _missing(n):
                continue
            total += 1
            agree += int(n == q)
    return (agree / total if total else float("nan")), total


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA


def recall_at_k(found: Sequence[np.ndarray], truth: Sequence[np.ndarray]) -> float:
    """Mean over queries of |found ∩ truth| / |truth| (queries with an empty truth skipped)."""
    shares = [
        len(np.intersect1d(f, t)) / len(t) for f, t in zip(found, truth, strict=True) if len(t)
    ]
    return float(np.mean(shares)) if shares else float("nan")


def resolve_label_columns(index: SimilarityIndex, labels: Sequence[str] | None) -> list[str]:
    """Metadata columns for `labels` (head names or column names); default: the run's heads."""
    heads: dict[str, str] = index.manifest.get("head_columns", {})
    columns = index.label_columns
    if not labels:
        chosen = [c for c in heads.values() if c in columns]
        if not chosen:
            raise DataError(
                f"{index.path}: none of the run's head columns {list(heads.values())} is in the "
                f"index metadata; name the labels to score with --label (columns: {columns})"
            )
        return list(dict.fromkeys(chosen))
    out = []
    for name in labels:
        if name in columns:
            out.append(name)
        elif name in heads and heads[name] in columns:
            out.append(heads[name])
        else:
            folded = [c for c in columns if c.lower() == name.lower()]
            if len(folded) != 1:
                raise DataError(
                    f"--label {name}: not a head or metadata column of {index.path}; "
                    f"columns: {columns}, heads: {sorted(heads)}"
                )
            out.append(folded[0])
    return list(dict.fromkeys(out))


def held_out_queries(
    index: SimilarityIndex | str | os.PathLike, run_dir: str | os.PathLike | None = None
) -> np.ndarray:
    """Item ids of the index that the run held out for validation (its split.csv says 'valid').

    The run defaults to the one that built the index. Items the run never saw (added later, or
    from another catalogue) are not held-out items and are left out.
    """
    if not isinstance(index, SimilarityIndex):
        index = load_index(index)
    run_dir = Path(run_dir or index.manifest.get("run") or "")
    split_path = run_dir / "split.csv"
    if not split_path.is_file():
        raise DataError(
            f"{split_path} not found: held-out queries need the split.csv of the run that built "
            "the index; pass its run directory with --run RUN_DIR, or use --queries all"
        )
    saved = pd.read_csv(split_path, dtype=str, keep_default_na=False)
    if list(saved.columns[:2]) != ["key", "split"]:
        raise DataError(f"{split_path}: expected columns key,split; found {list(saved.columns)}")
    if "key" not in index.metadata.columns:
        raise DataError(f"{index.path}: its metadata has no key column to match {split_path}")
    valid = set(saved.loc[saved["split"] == "valid", "key"])
    ids = np.flatnonzero(index.metadata["key"].isin(valid).to_numpy())
    if len(ids) == 0:
        raise DataError(
            f"no item of {index.path} is a validation item of {split_path}: the index and the run "
            "hold different catalogues"
        )
    return ids


def evaluate_index(
    index: SimilarityIndex | str | os.PathLike,
    labels: Sequence[str] | None = None,
    k: int = 10,
    max_queries: int | None = DEFAULT_MAX_QUERIES,
    seed: int = 0,
    ef_search: int | None = None,
    nprobe: int | None = None,
    queries: Sequence[int] | None = None,
) -> dict[str, Any]:
    """Retrieval quality of an index, each query being an indexed item left out of its results.

    Args:
        index: an index folder or a loaded index.
        labels: label columns (or head names) to score; default: the columns of the run's heads.
        k: neighbours for label agreement and recall.
        max_queries: score a seeded sample of this many items (None: every item). All items stay
            references. MAP@R needs every query's R neighbours, so memory grows with
            queries x the largest class.
        seed: seed of the query sample.
        queries: item ids to use as queries (e.g. a held-out split) before any sampling;
            default: every item.

    Returns:
        ``labels`` (per column: precision_at_1, r_precision, mean_average_precision_at_r,
        top{k}_agreement and counts), ``recall_at_{k}`` (None for an exact index) and context.
    """
    if max_queries is not None and max_queries < 1:
        raise ConfigError(
            f"max_queries must be at least 1 (or None for every item), got {max_queries}"
        )
    if k < 1:
        raise ConfigError(f"k must be at least 1 (neighbours per query), got {k}")
    if not isinstance(index, SimilarityIndex):
        index = load_index(index)
    n = len(index)
    if n < 2:
        raise DataError(f"{index.path}: {n} item(s); evaluation needs at least 2")
    if k > n - 1:
        raise ConfigError(
            f"-k {k}: {index.path} holds {n} item(s), so a query has at most {n - 1} neighbours "
            f"besides itself; use -k {n - 1} or less"
        )
    columns = resolve_label_columns(index, labels)
    pool = np.arange(n) if queries is None else np.unique(np.asarray(queries, dtype=np.int64))
    if len(pool) == 0 or pool.min() < 0 or pool.max() >= n:
        raise DataError(f"queries must be item ids between 0 and {n - 1}, got {len(pool)} ids")
    queries = pool
    if max_queries is not None and len(pool) > max_queries:
        pick = np.random.default_rng(seed).choice(len(pool), max_queries, replace=False)
        queries = np.sort(pool[pick])
        logger.info("evaluating %d of %d items as queries (seed %d)", len(queries), len(pool), seed)
    vectors = np.asarray(index.vectors, dtype=np.float32)
    query_vectors = vectors[queries]
    exclude = [np.array([q]) for q in queries]
    hits = search_vectors(
        index, query_vectors, k, exclude=exclude, ef_search=ef_search, nprobe=nprobe
    )

    result: dict[str, Any] = {
        "index": str(index.path) if index.path else None,
        "items": n,
        "queries": int(len(queries)),
        "embedding": index.manifest.get("embedding"),
        "factory": index.manifest.get("factory_used"),
        "exact": index.exact,
        "k": k,
        "labels": {},
    }
    for column in columns:
        values = index.metadata[column].astype(object).where(index.metadata[column].notna(), None)
        codes, _ = pd.factorize(values, use_na_sentinel=True)
        stats = accuracy_metrics(vectors, codes, queries)
        raw = values.to_numpy()
        share, pairs = label_agreement(raw[queries], [raw[ids] for ids, _ in hits])
        stats[f"top{k}_agreement"] = share
        stats["pairs"] = pairs
        result["labels"][column] = stats

    result[f"recall_at_{k}"] = None
    if not index.exact:
        _, truth = exact_search(vectors, query_vectors, k + 1)
        truth_ids = [t[(t >= 0) & (t != q)][:k] for t, q in zip(truth, queries, strict=True)]
        result[f"recall_at_{k}"] = recall_at_k([ids for ids, _ in hits], truth_ids)
    return result


def evaluation_table(results: Sequence[dict[str, Any]]) -> str:
    """One line per (label, metric), one column per index evaluated, for the terminal."""
    rows: dict[tuple[str, str], list[Any]] = {}
    names = []
    for i, res in enumerate(results):
        names.append(f"{res.get('embedding')} {res.get('factory')} [{i + 1}]")
        k = res.get("k", 10)
        for column, stats in res["labels"].items():
            for metric in (*PML_METRICS, f"top{k}_agreement"):
                rows.setdefault((column, metric), [None] * len(results))[i] = stats.get(metric)
        rows.setdefault(("(index)", f"recall_at_{k}"), [None] * len(results))[i] = res.get(
            f"recall_at_{k}"
        )
        rows.setdefault(("(index)", "queries"), [None] * len(results))[i] = res.get("queries")
    frame = pd.DataFrame(
        [[label, metric, *map(_cell, vals)] for (label, metric), vals in rows.items()],
        columns=["label", "metric", *names],
    )
    return frame.to_string(index=False)


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "-"
    return f"{value:.4f}" if isinstance(value, float) else str(value)


__all__ = [
    "accuracy_metrics",
    "label_agreement",
    "recall_at_k",
    "evaluate_index",
    "evaluation_table",
]
