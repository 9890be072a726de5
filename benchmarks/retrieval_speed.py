"""Search speed on random unit vectors: exact latency at 50,000 x dim, HNSW at 1,000,000.

Side by side in one run:

- exact (flat inner-product) search latency per query over 50,000 vectors, for each dimension
  asked for (128 is the embedding head's default; 1280 is MobileNetV2's pooled features), both one
  query at a time and per query in a batch, plus the same through zapmulti's `search_vectors`;
- at 1,000,000 vectors of the first dimension: exact latency, then HNSW latency, speedup over
  exact and recall@10 against exact search, for each efSearch.

Random unit vectors have no cluster structure, which makes them the hard case for HNSW: neighbours
are barely closer than anything else, so the graph needs a large efConstruction (200 here, a
build of tens of minutes at 1M on two cores) and efSearch in the hundreds to reach recall@10 0.95.
Real embeddings reach a given recall at a much smaller efSearch. Speedups are quoted one query at
a time on one thread (latency); in a batch on every thread, exact search runs as a matrix product
and HNSW gains less.

With `--like INDEX_DIR`, the 1,000,000 vectors (and the queries) are instead drawn from a Gaussian
with the mean and covariance of that index's vectors, then L2-normalised: synthetic vectors shaped
like a real embedding, for comparison with the random case. Exact search is timed on the same
vectors.

Usage:
    python benchmarks/retrieval_speed.py [--dims 128 1280] [--hnsw-n 1000000] [--m 32]
        [--ef-construction 200] [--ef-search 64 128 256 512 1024] [--threads N] [--out FILE.json]
        [--keep-build FILE.faiss] [--like INDEX_DIR]

Memory: the 1M x 128 set is 512 MB of float32, held once (inside the HNSW index, whose flat
storage also serves as the exact baseline), plus about 300 MB of graph.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import faiss
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from zapmulti.retrieval.index import SimilarityIndex, new_manifest  # noqa: E402
from zapmulti.retrieval.search import search_vectors  # noqa: E402

GOAL_RECALL, GOAL_SPEEDUP = 0.95, 10.0


def unit_vectors(n: int, dim: int, seed: int, chunk: int = 100_000) -> np.ndarray:
    """n random unit vectors, drawn in chunks so the float64 draw never exceeds one chunk."""
    rng = np.random.default_rng(seed)
    out = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, chunk):
        x = rng.standard_normal((min(chunk, n - start), dim), dtype=np.float32)
        out[start : start + len(x)] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


class ShapedLike:
    """Gaussian vectors with the mean and covariance of real embeddings, L2-normalised."""

    def __init__(self, vectors: np.ndarray) -> None:
        vectors = np.asarray(vectors, dtype=np.float64)
        self.mean = vectors.mean(axis=0)
        values, basis = np.linalg.eigh(np.cov(vectors, rowvar=False))
        self.scale = (basis * np.sqrt(np.clip(values, 0, None))).T  # z @ scale has that covariance
        self.dim = vectors.shape[1]

    def __call__(self, n: int, dim: int, seed: int, chunk: int = 100_000) -> np.ndarray:
        if dim != self.dim:
            raise SystemExit(f"--like vectors have dimension {self.dim}; pass --dims {self.dim}")
        rng = np.random.default_rng(seed)
        out = np.empty((n, dim), dtype=np.float32)
        for start in range(0, n, chunk):
            z = rng.standard_normal((min(chunk, n - start), dim))
            x = self.mean + z @ self.scale
            out[start : start + len(x)] = x / np.linalg.norm(x, axis=1, keepdims=True)
        return out


def per_query_ms(search, queries: np.ndarray) -> float:
    """Median milliseconds of one-query searches, on one thread.

    A one-query search gains nothing from OpenMP, and waking a second thread on a busy machine
    costs more than the search itself (0.8 ms becomes 24 ms at 50,000 x 128 on two shared
    cores); a server answers concurrent queries one per thread anyway.
    """
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        times = []
        for q in queries:
            t0 = time.perf_counter()
            search(q[None, :])
            times.append(time.perf_counter() - t0)
    finally:
        faiss.omp_set_num_threads(threads)
    return 1000.0 * float(np.median(times))


def batched_ms(search, queries: np.ndarray) -> float:
    """Milliseconds per query when all queries go in one call."""
    t0 = time.perf_counter()
    search(queries)
    return 1000.0 * (time.perf_counter() - t0) / len(queries)


def exact_at(n: int, dim: int, n_queries: int, seed: int) -> dict:
    base = unit_vectors(n, dim, seed)
    queries = unit_vectors(n_queries, dim, seed + 1)
    flat = faiss.IndexFlatIP(dim)
    flat.add(base)
    flat.search(queries[:2], 10)  # warm up
    wrapped = SimilarityIndex(flat, _paths(n), base, new_manifest(dim=dim, items=n))
    return {
        "n": n,
        "dim": dim,
        "single_ms": per_query_ms(lambda q: flat.search(q, 10), queries),
        "batched_ms": batched_ms(lambda q: flat.search(q, 10), queries),
        "zapmulti_single_ms": per_query_ms(lambda q: search_vectors(wrapped, q, 10), queries),
    }


def _paths(n: int):
    import pandas as pd

    return pd.DataFrame({"path": np.arange(n).astype(str)})


def hnsw_at(
    n: int,
    dim: int,
    m: int,
    ef_construction: int,
    efs: list[int],
    n_queries: int,
    seed: int,
    keep: Path | None = None,
    draw=unit_vectors,
) -> dict:
    queries = draw(n_queries, dim, seed + 1)
    # The chunks are seeded by position, so a build kept in `keep` continues where it stopped.
    if keep is not None and keep.exists():
        index = faiss.read_index(str(keep))
        print(f"  continuing the build kept in {keep}: {index.ntotal:,} vectors", flush=True)
    else:
        index = faiss.IndexHNSWFlat(dim, m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = ef_construction
    built_before = json.loads(keep.with_suffix(".json").read_text())["s"] if index.ntotal else 0.0
    t0 = time.perf_counter()
    for start in range(int(index.ntotal), n, 100_000):  # chunks: the set is held only once
        index.add(draw(min(100_000, n - start), dim, seed * 1000 + start))
        elapsed = built_before + time.perf_counter() - t0
        print(f"  {index.ntotal:,} added, {elapsed:.0f} s", flush=True)
        if keep is not None:
            faiss.write_index(index, str(keep) + ".tmp")
            os.replace(str(keep) + ".tmp", keep)
            keep.with_suffix(".json").write_text(json.dumps({"s": elapsed}))
    build_s = built_before + time.perf_counter() - t0
    exact = faiss.downcast_index(index.storage)  # the same vectors, searched exhaustively

    t0 = time.perf_counter()
    _, truth = exact.search(queries, 10)
    truth_s = time.perf_counter() - t0
    latency_queries = queries[: min(200, n_queries)]
    exact_single = per_query_ms(lambda q: exact.search(q, 10), latency_queries[:50])
    exact_batched = 1000.0 * truth_s / n_queries
    rows = []
    for ef in efs:
        index.hnsw.efSearch = ef
        _, found = index.search(queries, 10)
        recall = float(
            np.mean([len(np.intersect1d(f, t)) / 10 for f, t in zip(found, truth, strict=True)])
        )
        single = per_query_ms(lambda q: index.search(q, 10), latency_queries)
        batched = batched_ms(lambda q: index.search(q, 10), queries)
        rows.append(
            {
                "ef_search": ef,
                "recall_at_10": recall,
                "single_ms": single,
                "speedup_single": exact_single / single,
                "batched_ms": batched,
                "speedup_batched": exact_batched / batched,
            }
        )
    return {
        "n": n,
        "dim": dim,
        "m": m,
        "ef_construction": ef_construction,
        "build_s": build_s,
        "exact_single_ms": exact_single,
        "exact_batched_ms": exact_batched,
        "hnsw": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dims", type=int, nargs="+", default=[128, 1280])
    parser.add_argument("--exact-n", type=int, default=50_000)
    parser.add_argument("--hnsw-n", type=int, default=1_000_000)
    parser.add_argument("--m", type=int, default=32, help="HNSW links per node")
    parser.add_argument("--ef-construction", type=int, default=200)
    parser.add_argument("--ef-search", type=int, nargs="+", default=[64, 128, 256, 512, 1024])
    parser.add_argument("--queries", type=int, default=1000, help="queries for recall@10")
    parser.add_argument("--threads", type=int, default=None, help="faiss threads (default: all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="also write the figures to this JSON file")
    parser.add_argument(
        "--keep-build",
        type=Path,
        help="save the HNSW index here after each 100,000 vectors and continue from it when it "
        "exists (the 1M build takes tens of minutes on two cores); delete it to start afresh",
    )
    parser.add_argument(
        "--like",
        help="an index folder: draw the 1M vectors shaped like its vectors instead of uniformly "
        "on the sphere (skips the 50,000-vector exact section)",
    )
    args = parser.parse_args()
    if args.threads:
        faiss.omp_set_num_threads(args.threads)

    info = {
        "faiss": faiss.__version__,
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "threads": faiss.omp_get_max_threads(),
    }
    print(f"faiss {info['faiss']}, {info['cores']} cores, {info['threads']} faiss threads")

    draw, exact = unit_vectors, []
    if args.like:
        from zapmulti.retrieval import load_index

        like = load_index(args.like)
        draw = ShapedLike(like.vectors)
        args.dims = [draw.dim]
        info["vectors"] = f"Gaussian shaped like the {len(like):,} vectors of {args.like}"
        print(info["vectors"])
    else:
        exact = [exact_at(args.exact_n, d, 200, args.seed) for d in args.dims]
        info["vectors"] = "uniform on the unit sphere"
        print(f"\nexact search, {args.exact_n:,} vectors, top-10, ms per query")
        print(f"{'dim':>6} {'one at a time':>14} {'in a batch':>11} {'zapmulti search':>16}")
        for r in exact:
            print(
                f"{r['dim']:>6} {r['single_ms']:>14.3f} {r['batched_ms']:>11.3f} "
                f"{r['zapmulti_single_ms']:>16.3f}"
            )

    dim = args.dims[0]
    efc = args.ef_construction
    print(f"\nbuilding HNSW{args.m} over {args.hnsw_n:,} x {dim}, efConstruction {efc}")
    hnsw = hnsw_at(
        args.hnsw_n,
        dim,
        args.m,
        args.ef_construction,
        args.ef_search,
        args.queries,
        args.seed,
        args.keep_build,
        draw,
    )
    print(f"built in {hnsw['build_s']:.0f} s")
    print(
        f"\n{args.hnsw_n:,} x {dim}: exact {hnsw['exact_single_ms']:.2f} ms per query one at a "
        f"time, {hnsw['exact_batched_ms']:.3f} ms in a batch of {args.queries}"
    )
    print(
        f"{'efSearch':>8} {'recall@10':>9} {'ms/query':>9} {'speedup':>8} "
        f"{'ms/q batch':>10} {'speedup':>8}"
    )
    for r in hnsw["hnsw"]:
        print(
            f"{r['ef_search']:>8} {r['recall_at_10']:>9.3f} {r['single_ms']:>9.3f} "
            f"{r['speedup_single']:>7.1f}x {r['batched_ms']:>10.3f} {r['speedup_batched']:>7.1f}x"
        )
    met = [
        r
        for r in hnsw["hnsw"]
        if r["recall_at_10"] >= GOAL_RECALL and r["speedup_single"] >= GOAL_SPEEDUP
    ]
    verdict = (
        f"goal met at efSearch {met[0]['ef_search']} (recall@10 {met[0]['recall_at_10']:.3f}, "
        f"{met[0]['speedup_single']:.1f}x one query at a time)"
        if met
        else "goal (recall@10 >= 0.95 at >= 10x, one query at a time) not met by any efSearch"
    )
    print(verdict)
    if args.out:
        Path(args.out).write_text(
            json.dumps({"info": info, "exact": exact, "hnsw": hnsw, "verdict": verdict}, indent=2)
        )


if __name__ == "__main__":
    main()
