"""Search an index: cosine similarity, metadata filters inside the search, self-exclusion.

A filter becomes a faiss ID selector, so the index only ever scores the items that match: a
filtered search returns the k best matching items, not the matching part of an unfiltered top-k.
An approximate index (HNSW, IVF) can come back short under a narrow filter or a large k; those
queries are searched again exactly over the matching items, so a search never returns fewer items
than exist to return, and never a ``-1`` id.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np
import pandas as pd

from zapmulti.artifacts import Run, load_run
from zapmulti.errors import DataError, RunDirError
from zapmulti.predict import collect_images
from zapmulti.retrieval.embeddings import embed_files, embedding_fingerprint
from zapmulti.retrieval.index import SimilarityIndex, index_search, search_parameters

logger = logging.getLogger(__name__)

Hits = tuple[np.ndarray, np.ndarray]  # (ids int64, scores float32), best first
_EXACT_CHUNK = 65536  # rows of the vector table scored at a time in an exact search


# --------------------------------------------------------------------------- filters


@dataclass(frozen=True)
class Condition:
    """One metadata filter: `column` equal to one of `values` (or, with `negate`, none of them)."""

    column: str
    values: tuple[str, ...]
    negate: bool = False


def parse_where(where: Sequence[str] | Mapping[str, str | Sequence[str]] | None) -> list[Condition]:
    """Parse ``KEY=VALUE`` / ``KEY!=VALUE`` strings (or a mapping) into conditions.

    Conditions on different columns must all hold. ``=`` conditions repeated on one column are
    alternatives (``--where colour=Black --where colour=Brown`` keeps either colour).
    """
    if not where:
        return []
    pairs: list[tuple[str, str, bool]] = []
    if isinstance(where, Mapping):
        for key, value in where.items():
            values = [value] if isinstance(value, str) else list(value)
            pairs.extend((str(key), str(v), False) for v in values)
    else:
        for item in where:
            if "!=" in item:
                key, value = item.split("!=", 1)
                pairs.append((key.strip(), value.strip(), True))
            elif "=" in item:
                key, value = item.split("=", 1)
                pairs.append((key.strip(), value.strip(), False))
            else:
                raise DataError(
                    f"--where {item!r}: expected KEY=VALUE or KEY!=VALUE, e.g. gender=Women"
                )
    grouped: dict[tuple[str, bool], list[str]] = {}
    for key, value, negate in pairs:
        if value.startswith("="):
            raise DataError(
                f"--where {key}{'!=' if negate else '='}{value}: use one '=' (KEY=VALUE), "
                f"e.g. {key}={value.lstrip('=')}"
            )
        if not key:
            raise DataError(f"--where {key}={value}: the column name is empty")
        grouped.setdefault((key, negate), []).append(value)
    return [Condition(key, tuple(values), negate) for (key, negate), values in grouped.items()]


def _column(metadata: pd.DataFrame, name: str) -> str:
    """The metadata column `name` names, exactly or else ignoring case."""
    if name in metadata.columns:
        return name
    folded = [c for c in metadata.columns if c.lower() == name.lower()]
    if len(folded) == 1:
        return folded[0]
    labels = [c for c in metadata.columns if c not in ("path",)]
    raise DataError(f"--where {name}: no such column in the index metadata; columns: {labels}")


def filter_mask(metadata: pd.DataFrame, conditions: Sequence[Condition]) -> np.ndarray | None:
    """Boolean mask of the items every condition keeps; None when there is no condition."""
    if not conditions:
        return None
    # Merge conditions that name one column in different cases: they are alternatives too.
    merged: dict[tuple[str, bool], list[str]] = {}
    for cond in conditions:
        merged.setdefault((_column(metadata, cond.column), cond.negate), []).extend(cond.values)
    conditions = [Condition(c, tuple(v), negate) for (c, negate), v in merged.items()]
    keep = np.ones(len(metadata), dtype=bool)
    for cond in conditions:
        column = cond.column
        values = metadata[column].astype(object).where(metadata[column].notna(), None)
        hit = values.isin(list(cond.values)).to_numpy(dtype=bool)
        if not cond.negate and not hit.any():
            present = sorted({str(v) for v in values.dropna().unique()})
            logger.warning(
                "--where %s=%s matches no item; values of %s include %s "
                "(values match exactly; repeat --where %s=... for alternatives)",
                cond.column,
                " or ".join(cond.values),
                column,
                present[:12],
                cond.column,
            )
        keep &= ~hit if cond.negate else hit
    if not keep.any():
        logger.warning("the --where filters together match no item; nothing to return")
    return keep


# --------------------------------------------------------------------------- search


def exact_search(
    vectors: np.ndarray, queries: np.ndarray, k: int, candidates: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Exact inner-product top-k over `vectors` (or only its rows `candidates`), as faiss returns.

    Rows are padded with id -1 where fewer than k vectors exist.
    """
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    ids = np.arange(len(vectors)) if candidates is None else np.asarray(candidates)
    k = max(0, int(k))
    out_d = np.full((len(queries), k), -np.inf, dtype=np.float32)
    out_i = np.full((len(queries), k), -1, dtype=np.int64)
    if k == 0 or len(ids) == 0 or len(queries) == 0:
        return out_d, out_i
    index = faiss.IndexFlatIP(vectors.shape[1])
    # Score the table in chunks, keeping a running top-k, so a memory-mapped table stays on disk.
    for start in range(0, len(ids), _EXACT_CHUNK):
        chunk = ids[start : start + _EXACT_CHUNK]
        rows = vectors[start : start + len(chunk)] if candidates is None else vectors[chunk]
        index.reset()
        index.add(np.ascontiguousarray(rows, dtype=np.float32))
        d, i = index.search(queries, min(k, len(chunk)))
        i = np.where(i >= 0, chunk[np.clip(i, 0, None)], -1)
        both_d = np.concatenate([out_d, d], axis=1)
        both_i = np.concatenate([out_i, i], axis=1)
        order = np.argsort(-both_d, axis=1, kind="stable")[:, :k]
        out_d = np.take_along_axis(both_d, order, axis=1)
        out_i = np.take_along_axis(both_i, order, axis=1)
    out_i[~np.isfinite(out_d)] = -1
    return out_d, out_i


def search_vectors(
    index: SimilarityIndex,
    queries: np.ndarray,
    k: int = 10,
    where: Sequence[str] | Mapping[str, str | Sequence[str]] | None = None,
    exclude: Sequence[Sequence[int]] | None = None,
    ef_search: int | None = None,
    nprobe: int | None = None,
) -> list[Hits]:
    """The `k` nearest items to each L2-normalised query vector, by cosine similarity.

    Args:
        index: the loaded index.
        queries: [Q, D] float32 query embeddings, L2-normalised.
        k: neighbours per query; more than there are returns all there are.
        where: metadata filters, e.g. ``["gender=Women"]``; applied inside the search.
        exclude: per query, item ids to leave out (the query itself, for example).
        ef_search: HNSW search depth (default: the manifest's, at least ``k``).
        nprobe: IVF lists visited (default: the manifest's).

    Returns:
        Per query, (ids, scores) best first; fewer than `k` only when fewer items match.
    """
    queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
    if queries.shape[1] != index.dim:
        raise DataError(
            f"query vectors have dimension {queries.shape[1]}, the index at {index.path} has "
            f"{index.dim}; embed the queries with the index's run and embedding"
        )
    nq = len(queries)
    excluded = [np.asarray(e, dtype=np.int64) for e in exclude] if exclude else [None] * nq
    if len(excluded) != nq:
        raise ValueError(f"exclude has {len(excluded)} entries for {nq} queries")
    mask = filter_mask(index.metadata, parse_where(where))
    candidates = None if mask is None or mask.all() else np.flatnonzero(mask)
    allowed = mask if candidates is not None else None
    n_cand = len(index) if candidates is None else len(candidates)

    # What each query can get at most: the matching items minus its own excluded ones.
    dropped = [_excluded_matches(e, allowed, len(index)) for e in excluded]
    reachable = [max(0, n_cand - d) for d in dropped]
    want = [min(k, r) for r in reachable]
    k_search = min(n_cand, k + max(dropped, default=0))
    if nq == 0 or k <= 0 or k_search == 0:
        return [(np.zeros(0, np.int64), np.zeros(0, np.float32)) for _ in range(nq)]

    search = index.manifest.get("search", {})
    selector = faiss.IDSelectorBatch(candidates) if candidates is not None else None
    ef = max(int(ef_search or search.get("ef_search") or 0), k_search) or None
    params = search_parameters(index.index, selector, ef, nprobe or search.get("nprobe"))
    try:
        scores, ids = index_search(index.index, queries, k_search, params)
    except RuntimeError as exc:  # this index type takes no search parameters (e.g. plain PQ)
        if params is None:
            raise
        logger.info(
            "%s cannot filter inside its search (%s); searching the matching items exactly",
            type(faiss.downcast_index(index.index)).__name__,
            str(exc).strip().splitlines()[-1],
        )
        scores, ids = exact_search(index.vectors, queries, k_search, candidates)

    hits = [_keep(ids[q], scores[q], excluded[q], want[q]) for q in range(nq)]
    short = [q for q in range(nq) if len(hits[q][0]) < want[q]]
    if short:
        # HNSW under a narrow filter or a large k, IVF with few lists probed: redo exactly.
        logger.debug("%d query(ies) came back short from the index; searching exactly", len(short))
        d, i = exact_search(index.vectors, queries[short], k_search, candidates)
        for row, q in enumerate(short):
            hits[q] = _keep(i[row], d[row], excluded[q], want[q])
    return hits


def _excluded_matches(excluded: np.ndarray | None, allowed: np.ndarray | None, n: int) -> int:
    """How many of a query's excluded ids are items the filter would otherwise return."""
    if excluded is None:
        return 0
    ids = np.unique(excluded[(excluded >= 0) & (excluded < n)])
    return int(len(ids) if allowed is None else allowed[ids].sum())


def _keep(ids: np.ndarray, scores: np.ndarray, excluded: np.ndarray | None, want: int) -> Hits:
    ok = ids >= 0
    if excluded is not None and len(excluded):
        ok &= ~np.isin(ids, excluded)
    return ids[ok][:want].astype(np.int64), scores[ok][:want].astype(np.float32)


# --------------------------------------------------------------------------- images in, rows out


def _real(path: str | os.PathLike) -> str:
    return os.path.realpath(os.fspath(path))


def self_ids(index: SimilarityIndex, paths: Sequence[str]) -> list[np.ndarray]:
    """For each query file, the ids of the index items that are that same file."""
    by_path: dict[str, list[int]] = {}
    for i, p in enumerate(index.metadata["path"].tolist()):
        by_path.setdefault(_real(p), []).append(i)
    return [np.array(by_path.get(_real(p), []), dtype=np.int64) for p in paths]


def run_for_index(index: SimilarityIndex, run: Run | str | os.PathLike | None = None) -> Run:
    """The run whose model embedded the index (or the one given), checked to fit it."""
    if run is None:
        recorded = index.manifest.get("run")
        if not recorded or not Path(recorded).is_dir():
            raise RunDirError(
                f"the run that built {index.path} ({recorded}) is not there any more; "
                "pass the run directory with --run"
            )
        run = recorded
    if not isinstance(run, Run):
        run = load_run(run)
    kind = index.manifest.get("embedding", "backbone")
    if kind != "backbone" and kind not in run.model.heads:
        raise RunDirError(
            f"{index.path} was built with the embedding head {kind!r}, which run {run.path} "
            f"does not have; pass the run that built it with --run"
        )
    recorded_print = index.manifest.get("model_fingerprint")
    if recorded_print and recorded_print != embedding_fingerprint(run.model, kind):
        raise RunDirError(
            f"run {run.path} embeds differently from the model that built {index.path}: its "
            f"{'backbone' if kind == 'backbone' else 'backbone or ' + repr(kind) + ' head'} "
            "weights changed since (retrained, --overwrite, or the head replaced). Its vectors "
            "would not be comparable with the index's; rebuild the index with `zapmulti index "
            "build RUN --out INDEX_DIR --overwrite`, or pass the run that built it with --run"
        )
    return run


def results_frame(
    index: SimilarityIndex, query_paths: Sequence[str], hits: Sequence[Hits]
) -> pd.DataFrame:
    """One row per (query, neighbour): query, rank, score, path and every metadata column."""
    columns = ["query", "rank", "score", "path"] + [
        c for c in index.metadata.columns if c != "path"
    ]
    parts = []
    for query, (ids, scores) in zip(query_paths, hits, strict=True):
        if not len(ids):
            continue
        rows = index.metadata.iloc[ids].reset_index(drop=True)
        rows.insert(0, "query", str(query))
        rows.insert(1, "rank", np.arange(1, len(ids) + 1))
        rows.insert(2, "score", scores.astype(float))
        parts.append(rows)
    if not parts:
        return pd.DataFrame(columns=columns)
    return pd.concat(parts, ignore_index=True)[columns]


def search(
    index: SimilarityIndex | str | os.PathLike,
    queries: Sequence[str | os.PathLike],
    k: int = 10,
    where: Sequence[str] | Mapping[str, str | Sequence[str]] | None = None,
    exclude_self: bool = False,
    run: Run | str | os.PathLike | None = None,
    ef_search: int | None = None,
    nprobe: int | None = None,
    batch_size: int = 64,
    device: str | None = None,
) -> pd.DataFrame:
    """Find the items most similar to each query image (files or folders of images).

    Args:
        index: an index folder or a loaded index.
        queries: image files or folders.
        k: neighbours per query.
        where: metadata filters such as ``["gender=Women"]``, applied inside the search.
        exclude_self: leave out index items that are the query file itself.
        run: the run to embed queries with (default: the one recorded in the manifest).

    Returns:
        One row per neighbour: query, rank (1 = closest), score (cosine similarity), path and
        the item's labels. A query that cannot be read is logged and has no row.
    """
    from zapmulti.retrieval.index import load_index

    if not isinstance(index, SimilarityIndex):
        index = load_index(index)
    files = collect_images(queries)
    if not files:
        raise DataError(f"no query image found in {list(map(str, queries))}")
    run = run_for_index(index, run)
    kind = index.manifest.get("embedding", "backbone")
    vectors, ok, failed = embed_files(run, files, kind, batch_size, device)
    if not ok:
        raise DataError(f"none of the {len(files)} query image(s) can be read: {failed}")
    exclude = self_ids(index, ok) if exclude_self else None
    hits = search_vectors(index, vectors, k, where, exclude, ef_search, nprobe)
    return results_frame(index, ok, hits)
