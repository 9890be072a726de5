"""From a trained run and a catalogue to an index folder, and adding items to one later."""

from __future__ import annotations

import logging
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from zapmulti.artifacts import Run, load_run
from zapmulti.config import DataConfig, load_data_config
from zapmulti.data import read_catalogue
from zapmulti.data.images import build_cache
from zapmulti.errors import DataError
from zapmulti.retrieval.embeddings import (
    embed_array,
    embedding_dim,
    embedding_fingerprint,
    resolve_embedding,
)
from zapmulti.retrieval.index import (
    DEFAULT_EF_SEARCH,
    DEFAULT_NPROBE,
    SimilarityIndex,
    check_factory,
    check_index_out,
    create_faiss_index,
    is_exact,
    load_index,
    new_manifest,
)
from zapmulti.retrieval.search import run_for_index

logger = logging.getLogger(__name__)


def resolve_data(run: Run, data: DataConfig | str | os.PathLike | None) -> DataConfig:
    """The catalogue to index: the run's own, another root read the run's way, or a config's."""
    if data is None:
        return run.config.data
    if isinstance(data, DataConfig):
        return data
    path = Path(data)
    if path.is_dir():
        other = run.config.data.model_copy(deep=True)
        other.root = str(path.resolve())
        return other
    if path.is_file():
        return load_data_config(path)
    raise DataError(f"--data {path}: neither a data folder nor a config file")


def embed_catalogue(
    run: Run,
    data: DataConfig | str | os.PathLike | None = None,
    embedding: str = "auto",
    batch_size: int = 128,
    device: str | None = None,
    show_progress: bool = True,
    skip_paths: set[str] | None = None,
) -> tuple[pd.DataFrame, np.ndarray, str]:
    """Embed every readable catalogue image, except those whose real path is in `skip_paths`.

    Returns:
        The catalogue rows that were embedded (path, key, group and label columns), their
        L2-normalised embeddings, and the embedding used (``backbone`` or a head name).
    """
    data_config = resolve_data(run, data)
    kind = resolve_embedding(run.model, embedding)
    table = read_catalogue(data_config)
    if table.empty:
        raise DataError(f"the catalogue under {data_config.root} has no usable image")
    if skip_paths:
        keep = np.array([os.path.realpath(p) not in skip_paths for p in table["path"]], dtype=bool)
        if (~keep).any():
            logger.info("%d item(s) are already in the index and are skipped", int((~keep).sum()))
        table = table[keep].reset_index(drop=True)
        if table.empty:
            return table, np.zeros((0, embedding_dim(run.model, kind)), np.float32), kind
    m = run.config.model
    cache = build_cache(
        table["path"].tolist(),
        m.image_size,
        m.resize,
        m.pad_value,
        run.config.cache_dir,
        workers=run.config.train.num_workers,
        show_progress=show_progress,
    )
    if cache.bad:
        first = [table["path"].iloc[i] for i in sorted(cache.bad)[:3]]
        logger.warning(
            "%d image(s) cannot be decoded and are not indexed, e.g. %s", len(cache.bad), first
        )
    rows = np.array([i for i in range(len(table)) if i not in cache.bad], dtype=np.int64)
    logger.info("embedding %d image(s) with %s", len(rows), kind)
    vectors = embed_array(run.model, cache.array, rows, kind, batch_size, device, show_progress)
    return table.iloc[rows].reset_index(drop=True), vectors, kind


def _metadata(table: pd.DataFrame) -> pd.DataFrame:
    """Every column as text (None where missing), path first."""
    cols = ["path"] + [c for c in table.columns if c != "path"]
    out = table[cols].astype(object)
    return out.where(out.notna(), None)


def build_index(
    run: Run | str | os.PathLike,
    out: str | os.PathLike | None,
    data: DataConfig | str | os.PathLike | None = None,
    factory: str = "Flat",
    embedding: str = "auto",
    batch_size: int = 128,
    device: str | None = None,
    gpu: bool = False,
    overwrite: bool = False,
    ef_search: int = DEFAULT_EF_SEARCH,
    nprobe: int = DEFAULT_NPROBE,
    show_progress: bool = True,
) -> SimilarityIndex:
    """Embed a catalogue with a run and write an index folder (atomically) to `out`.

    Args:
        run: a run directory or a loaded run.
        out: the index folder; None builds in memory only.
        data: the catalogue (a DataConfig, a data root read the run's way, or a config YAML);
            default: the run's own catalogue, every row.
        factory: a faiss factory string: ``Flat`` (exact, the default), ``HNSW32``,
            ``IVF256,Flat``, ``IVF256,PQ16``... IVF and PQ sizes are clamped for small catalogues.
        embedding: ``auto`` (the run's embedding head, else the backbone), ``backbone``, ``head``
            or an embedding head's name.
        gpu: build on a GPU when faiss has one; the index is moved to the CPU before saving.
        overwrite: replace an existing index folder.
        ef_search, nprobe: default search depth of HNSW and IVF indexes, kept in the manifest.
    """
    if out is not None:
        out = Path(out).resolve()
        check_index_out(out, overwrite)
    if not isinstance(run, Run):
        run = load_run(run)
    # A bad factory string is an error before the catalogue is embedded, not after.
    check_factory(factory, embedding_dim(run.model, resolve_embedding(run.model, embedding)))
    table, vectors, kind = embed_catalogue(run, data, embedding, batch_size, device, show_progress)
    if len(vectors) == 0:
        raise DataError("no catalogue image could be read; nothing to index")
    index, plan = create_faiss_index(vectors, factory, gpu)
    head_columns = {h.name: h.column for h in run.config.heads if h.column in table.columns}
    manifest = new_manifest(
        run=str(Path(run.path).resolve()),
        backbone=run.config.model.backbone,
        image_size=run.config.model.image_size,
        embedding=kind,
        embedding_source="pooled backbone features" if kind == "backbone" else "embedding head",
        dim=embedding_dim(run.model, kind),
        model_fingerprint=embedding_fingerprint(run.model, kind),
        factory=plan.requested,
        factory_used=plan.used,
        factory_notes=plan.notes,
        index_type=type(_inner(index)).__name__,
        exact=is_exact(index),
        items=int(index.ntotal),
        data_root=resolve_data(run, data).root,
        head_columns=head_columns,
        search={"ef_search": ef_search, "nprobe": nprobe},
        built_on=plan.built_on,
        created=_now(),
        additions=[],
    )
    result = SimilarityIndex(index, _metadata(table), vectors, manifest)
    if out is not None:
        result.save(out, overwrite=True)
    return result


def add_to_index(
    index_dir: str | os.PathLike,
    data: DataConfig | str | os.PathLike,
    run: Run | str | os.PathLike | None = None,
    batch_size: int = 128,
    device: str | None = None,
    show_progress: bool = True,
) -> tuple[SimilarityIndex, int]:
    """Embed a catalogue's new items and add them to an index folder, without a rebuild.

    Items whose image path is already in the index are skipped. The folder is rewritten
    atomically. A trained index (IVF, PQ) keeps its trained quantizers; if many items are added,
    rebuild it so the lists fit the new data.

    Returns:
        The updated index and how many items were added.
    """
    index = load_index(index_dir)
    run = run_for_index(index, run)
    kind = index.manifest.get("embedding", "backbone")
    known = {os.path.realpath(p) for p in index.metadata["path"]}
    # Items already indexed are left out before embedding, not after.
    table, vectors, _ = embed_catalogue(run, data, kind, batch_size, device, show_progress, known)
    added = len(table)
    if added == 0:
        logger.info("nothing to add to %s", index_dir)
        return index, 0

    root = resolve_data(run, data).root
    if "key" in table.columns and os.path.realpath(root) != os.path.realpath(
        index.manifest.get("data_root") or ""
    ):
        # A key is a path relative to its catalogue's root, so another catalogue's keys can
        # repeat the index's own (and be taken for the run's split items): key them by their
        # absolute path instead.
        table = table.assign(key=table["path"].map(os.path.realpath))
    faiss_index = index.index
    faiss_index.add(np.ascontiguousarray(vectors))
    metadata = pd.concat([index.metadata, _metadata(table)], ignore_index=True)
    metadata = metadata.astype(object).where(metadata.notna(), None)
    all_vectors = np.concatenate([np.asarray(index.vectors, dtype=np.float32), vectors])
    manifest: dict[str, Any] = dict(index.manifest)
    manifest["additions"] = [
        *manifest.get("additions", []),
        {"data_root": root, "items": added, "time": _now()},
    ]
    updated = SimilarityIndex(faiss_index, metadata, all_vectors, manifest)
    updated.save(index_dir, overwrite=True)
    return updated, added


def _inner(index: Any) -> Any:
    import faiss

    return faiss.downcast_index(index)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
