"""The faiss index folder: building an inner-product index, saving and loading it atomically.

An index folder holds four files, written together or not at all:

- ``index.faiss``: the faiss index (always a CPU index), item ``i`` is row ``i`` of the metadata;
- ``metadata.csv``: one row per item, the image path plus every catalogue label column;
- ``vectors.npy``: the L2-normalised embeddings themselves, for exact re-ranking of filtered or
  short approximate searches, for ``index evaluate`` and for ``index add``;
- ``manifest.json``: the model run, embedding, dimension, metric, index type, item count and
  zapmulti version.
"""

from __future__ import annotations

import logging
import math
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import pandas as pd

from zapmulti import __version__
from zapmulti.artifacts import write_json
from zapmulti.errors import ConfigError, ZapmultiError
from zapmulti.fileio import atomic_dir, replaceable

logger = logging.getLogger(__name__)

INDEX_FILE = "index.faiss"
METADATA = "metadata.csv"
VECTORS = "vectors.npy"
MANIFEST = "manifest.json"
FORMAT_VERSION = 1
METRIC = "cosine"
RESERVED_COLUMNS = ("path", "key", "group")
DEFAULT_EF_SEARCH = 128
DEFAULT_NPROBE = 16
# faiss's k-means wants 39 training points per centroid; fewer gives poor (or no) clusters.
POINTS_PER_CENTROID = 39
MIN_PQ_BITS = 4


class IndexDirError(ZapmultiError, RuntimeError):
    """An index folder is missing, incomplete, from another version, or would be overwritten."""


# --------------------------------------------------------------------------- factory strings


@dataclass
class FactoryPlan:
    """A faiss factory string as asked for and as it will be built, with the reasons it changed."""

    requested: str
    used: str
    notes: list[str] = field(default_factory=list)
    built_on: str = "cpu"


def _largest_divisor(d: int, at_most: int) -> int:
    return max(m for m in range(1, max(1, min(d, at_most)) + 1) if d % m == 0)


def plan_factory(factory: str, n: int, dim: int) -> FactoryPlan:
    """Clamp the parts of a factory string that need training data to what `n` vectors allow.

    IVF list counts drop to ``n // 39`` (at least 1); PQ sub-quantizer counts drop to a divisor of
    the dimension they split; PQ code bits drop so that ``2**bits <= n``; OPQ, which always trains
    256 centroids, is dropped under 256 vectors. Each change is logged.
    """
    factory = factory.strip() or "Flat"
    plan = FactoryPlan(factory, factory)
    parts = [p.strip() for p in factory.split(",")]
    out: list[str] = []
    pq_dim = dim
    for part in parts:
        ivf = re.fullmatch(r"IVF(\d+)(.*)", part)
        opq = re.fullmatch(r"OPQ(\d+)(?:_(\d+))?", part)
        pq = re.fullmatch(r"(IVF\d+(?:_\w+)?,)?PQ(\d+)(?:x(\d+))?(.*)", part)
        if ivf:
            nlist, rest = int(ivf.group(1)), ivf.group(2)
            cap = max(1, n // POINTS_PER_CENTROID)
            if nlist > cap:
                plan.notes.append(
                    f"IVF list count {nlist} -> {cap}: {n} vectors train at most "
                    f"{cap} lists ({POINTS_PER_CENTROID} per list)"
                )
                nlist = cap
            out.append(f"IVF{nlist}{rest}")
        elif opq:
            if n < 256:
                plan.notes.append(f"{part} dropped: OPQ trains 256 centroids, {n} vectors here")
                continue
            m = int(opq.group(1))
            d_out = int(opq.group(2)) if opq.group(2) else dim
            pq_dim = d_out
            fit = _largest_divisor(d_out, m)
            if fit != m:
                plan.notes.append(f"OPQ sub-quantizers {m} -> {fit} to divide dimension {d_out}")
            out.append(f"OPQ{fit}_{d_out}" if opq.group(2) else f"OPQ{fit}")
        elif pq and not pq.group(1):
            m, bits, rest = int(pq.group(2)), pq.group(3), pq.group(4)
            fit = _largest_divisor(pq_dim, m)
            if fit != m:
                plan.notes.append(f"PQ sub-quantizers {m} -> {fit} to divide dimension {pq_dim}")
            nbits = int(bits) if bits else 8
            # Below 4 bits some of faiss's SIMD distance tables refuse to search.
            cap = max(MIN_PQ_BITS, int(math.floor(math.log2(max(n / POINTS_PER_CENTROID, 2)))))
            if "fs" not in rest and nbits > cap:
                plan.notes.append(
                    f"PQ code bits {nbits} -> {cap}: {2**nbits} centroids per sub-quantizer "
                    f"need {POINTS_PER_CENTROID * 2**nbits} vectors, there are {n}"
                )
                nbits = cap
            suffix = f"x{nbits}" if bits or nbits != 8 else ""
            out.append(f"PQ{fit}{suffix}{rest}")
        else:
            out.append(part)
    plan.used = ",".join(out)
    for note in plan.notes:
        logger.info("index factory %r: %s", factory, note)
    return plan


# --------------------------------------------------------------------------- building


def _to_gpu(index: faiss.Index) -> tuple[faiss.Index, Any]:
    """Move an index to GPU 0 when faiss can; otherwise keep it on the CPU with a warning."""
    if not hasattr(faiss, "StandardGpuResources") or faiss.get_num_gpus() == 0:
        warnings.warn(
            "a GPU index was asked for, but this faiss has no GPU support (faiss-cpu) or sees no "
            "GPU; building on the CPU. Install faiss-gpu to build on a GPU.",
            stacklevel=3,
        )
        return index, None
    resources = faiss.StandardGpuResources()
    try:
        return faiss.index_cpu_to_gpu(resources, 0, index), resources
    except RuntimeError as exc:  # e.g. HNSW has no GPU implementation
        logger.info("%s has no GPU version (%s); building on the CPU", type(index).__name__, exc)
        return index, None


def to_cpu(index: faiss.Index) -> faiss.Index:
    """A CPU copy of a GPU index (a CPU index is returned as it is)."""
    if "Gpu" in type(index).__name__:
        return faiss.index_gpu_to_cpu(index)
    return index


def _new_index(factory: str, dim: int) -> faiss.Index:
    try:
        return faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[-1] if str(exc).strip() else ""
        first = first.rsplit(": ", 1)[-1]  # faiss prefixes the C++ function and source line
        raise ConfigError(
            f"index factory {factory!r} is not a faiss factory string ({first}); use e.g. "
            "'Flat' (exact), 'HNSW32', 'IVF256,Flat' or 'IVF256,PQ16'"
        ) from None


def check_factory(factory: str, dim: int) -> None:
    """Raise a ConfigError now, before any embedding, if `factory` is not a faiss factory string."""
    _new_index(plan_factory(factory, 1_000_000, dim).used, dim)


def create_faiss_index(
    vectors: np.ndarray, factory: str = "Flat", gpu: bool = False
) -> tuple[faiss.Index, FactoryPlan]:
    """Build and fill an inner-product index over `vectors`; the result is always on the CPU.

    A factory whose training fails on these vectors even after clamping falls back to the exact
    ``Flat`` index with a warning, rather than failing the build.
    """
    n, dim = vectors.shape
    plan = plan_factory(factory, n, dim)
    index = _new_index(plan.used, dim)
    resources = None
    if gpu:
        index, resources = _to_gpu(index)
        if resources is None:
            plan.notes.append("built on the CPU: no GPU index was available")
    plan.built_on = "gpu" if resources is not None else "cpu"
    try:
        if not index.is_trained:
            index.train(vectors)
        index.add(vectors)
        index.search(vectors[:1], 1)  # some settings only fail once searched
    except RuntimeError as exc:
        message = str(exc).strip().splitlines()[-1] if str(exc).strip() else repr(exc)
        warnings.warn(
            f"index factory {plan.used!r} could not be trained on {n} vectors ({message}); "
            "building the exact 'Flat' index instead. Use 'Flat' for a catalogue this small.",
            stacklevel=2,
        )
        plan.notes.append(f"{plan.used} failed to train ({message}); fell back to Flat")
        plan.used = "Flat"
        plan.built_on = "cpu"
        index = faiss.IndexFlatIP(dim)
        index.add(vectors)
    cpu = to_cpu(index)
    del resources
    return cpu, plan


def is_exact(index: faiss.Index) -> bool:
    """Whether the index scores every vector exactly (a flat index)."""
    return isinstance(faiss.downcast_index(index), faiss.IndexFlat)


def _ivf(index: faiss.Index) -> Any:
    try:
        return faiss.extract_index_ivf(index)
    except RuntimeError:
        return None


def search_parameters(
    index: faiss.Index,
    selector: Any = None,
    ef_search: int | None = None,
    nprobe: int | None = None,
) -> faiss.SearchParameters | None:
    """Per-call search parameters: the ID selector plus HNSW efSearch or IVF nprobe."""
    inner = faiss.downcast_index(index)
    if isinstance(inner, faiss.IndexPreTransform):
        params = search_parameters(inner.index, selector, ef_search, nprobe)
        return faiss.SearchParametersPreTransform(index_params=params) if params else None
    if isinstance(inner, faiss.IndexHNSW):
        params = faiss.SearchParametersHNSW()
        params.efSearch = int(ef_search or inner.hnsw.efSearch)
    elif isinstance(inner, faiss.IndexIVF):
        params = faiss.SearchParametersIVF()
        params.nprobe = int(min(nprobe or inner.nprobe, inner.nlist))
    elif selector is not None:
        params = faiss.SearchParameters()
    else:
        return None
    if selector is not None:
        params.sel = selector
    return params


def index_search(
    index: faiss.Index, queries: np.ndarray, k: int, params: faiss.SearchParameters | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """`index.search` with search parameters, whether or not faiss's torch shim is loaded.

    pytorch-metric-learning imports ``faiss.contrib.torch_utils``, which replaces ``search`` on
    every index class by a version without ``params`` and keeps the original as ``search_numpy``.
    """
    search = getattr(index, "search_numpy", None) or index.search
    return search(queries, k, params=params)


# --------------------------------------------------------------------------- the folder


@dataclass
class SimilarityIndex:
    """An index folder loaded back (or built and not yet saved)."""

    index: faiss.Index
    metadata: pd.DataFrame
    vectors: np.ndarray
    manifest: dict[str, Any]
    path: Path | None = None

    def __len__(self) -> int:
        return int(self.index.ntotal)

    @property
    def dim(self) -> int:
        return int(self.index.d)

    @property
    def exact(self) -> bool:
        return is_exact(self.index)

    @property
    def label_columns(self) -> list[str]:
        """Catalogue label columns carried by every result."""
        return [c for c in self.metadata.columns if c not in RESERVED_COLUMNS]

    def save(self, path: str | Path, overwrite: bool = True) -> Path:
        """Write the folder atomically: an interrupted save leaves the old folder (or none)."""
        path = Path(path).resolve()  # through a symlink, replace its target
        check_index_out(path, overwrite)
        self.manifest["items"] = len(self)
        with atomic_dir(path) as tmp:
            faiss.write_index(to_cpu(self.index), str(tmp / INDEX_FILE))
            self.metadata.to_csv(tmp / METADATA, index=False)
            np.save(tmp / VECTORS, np.ascontiguousarray(self.vectors, dtype=np.float32))
            write_json(tmp / MANIFEST, self.manifest)
        self.path = path
        logger.info("index of %d item(s) written to %s", len(self), path)
        return path


def check_index_out(path: str | Path, overwrite: bool) -> None:
    """Refuse a non-empty --out unless it is an index folder and `overwrite` is set."""
    hint = (
        "pass --overwrite to replace it, `zapmulti index add` to extend it, or choose another --out"
    )
    try:
        replaceable(path, overwrite, (MANIFEST,), "index folder", hint)
    except ValueError as e:
        raise IndexDirError(str(e)) from None


def new_manifest(**fields: Any) -> dict[str, Any]:
    return {"zapmulti_version": __version__, "format": FORMAT_VERSION, "metric": METRIC, **fields}


def read_metadata(path: Path) -> pd.DataFrame:
    """The metadata table with every cell a string; empty cells are missing, 'NA' stays a label."""
    frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""]).astype(object)
    return frame.where(frame.notna(), None)


def load_index(path: str | Path) -> SimilarityIndex:
    """Load an index folder, checking that its four files agree with each other."""
    import json

    path = Path(path)
    if path.exists() and not path.is_dir():
        raise IndexDirError(
            f"{path} is a file, not an index folder; give the folder that `zapmulti index build "
            "--out` wrote (it holds manifest.json)"
        )
    if not path.is_dir():
        raise IndexDirError(
            f"index folder not found: {path} (build one with `zapmulti index build`)"
        )
    missing = [f for f in (MANIFEST, INDEX_FILE, METADATA, VECTORS) if not (path / f).is_file()]
    if missing:
        raise IndexDirError(
            f"{path} is not a complete index folder: {missing} missing; rebuild it with "
            "`zapmulti index build`"
        )
    try:
        manifest = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise IndexDirError(f"{path / MANIFEST} is not valid JSON ({exc})") from None
    if manifest.get("format") != FORMAT_VERSION:
        raise IndexDirError(
            f"{path} was written by zapmulti {manifest.get('zapmulti_version', '?')} in index "
            f"format {manifest.get('format')}; this is zapmulti {__version__} (format "
            f"{FORMAT_VERSION}). Rebuild it with `zapmulti index build`"
        )
    try:
        index = faiss.read_index(str(path / INDEX_FILE))
    except RuntimeError as exc:
        raise IndexDirError(f"{path / INDEX_FILE} is not a readable faiss index ({exc})") from None
    metadata = read_metadata(path / METADATA)
    vectors = np.load(path / VECTORS, mmap_mode="r")
    counts = {
        INDEX_FILE: int(index.ntotal),
        METADATA: len(metadata),
        VECTORS: len(vectors),
        MANIFEST: manifest.get("items"),
    }
    if len(set(counts.values())) != 1:
        raise IndexDirError(f"{path}: item counts disagree between files {counts}; rebuild it")
    if vectors.ndim != 2 or vectors.shape[1] != index.d or manifest.get("dim") != index.d:
        raise IndexDirError(
            f"{path}: dimension mismatch (index {index.d}, {VECTORS} {vectors.shape}, manifest "
            f"{manifest.get('dim')}); rebuild it"
        )
    return SimilarityIndex(index, metadata, vectors, manifest, path)


__all__ = [
    "SimilarityIndex",
    "IndexDirError",
    "FactoryPlan",
    "plan_factory",
    "create_faiss_index",
    "load_index",
    "search_parameters",
    "index_search",
    "is_exact",
    "to_cpu",
]
