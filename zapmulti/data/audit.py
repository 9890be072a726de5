"""Audit every image of a catalogue in parallel: which files are missing or cannot be decoded."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pandas as pd
from fastprogress.fastprogress import progress_bar

from zapmulti.config import Config, DataConfig
from zapmulti.data.images import decode_image
from zapmulti.data.sources import load_table
from zapmulti.errors import BadImageError
from zapmulti.fileio import atomic_path

logger = logging.getLogger(__name__)


def _check(path: str) -> str:
    try:
        decode_image(path)
        return ""
    except BadImageError as exc:
        return exc.reason


def audit_images(
    paths: Sequence[str], workers: int | None = None, show_progress: bool = True
) -> list[str]:
    """The decode error of every path ('' where it decodes), checked in worker processes."""
    workers = workers if workers is not None else (os.cpu_count() or 1)
    if workers > 1 and len(paths) > 64:
        with ProcessPoolExecutor(workers) as pool:
            results = pool.map(_check, paths, chunksize=64)
            bar = progress_bar(results, total=len(paths)) if show_progress else results
            return list(bar)
    bar = progress_bar(paths) if show_progress else paths
    return [_check(p) for p in bar]


def check_data(
    config: Config | DataConfig,
    out: str | os.PathLike | None = None,
    workers: int | None = None,
    show_progress: bool = True,
) -> pd.DataFrame:
    """List every bad file of the catalogue with its reason; optionally write the list as CSV.

    Returns:
        A table with columns ``path``, ``key`` and ``reason``, one row per bad file (files the
        catalogue lists but that are not on disk are included).
    """
    data = config.data if isinstance(config, Config) else config
    table = load_table(data)
    reasons = audit_images(table["path"].tolist(), workers, show_progress)
    bad = table.loc[[bool(r) for r in reasons], ["path", "key"]].copy()
    bad["reason"] = [r for r in reasons if r]
    root = Path(data.root)
    missing = pd.DataFrame(
        {
            "path": [str(root / k) for k in table.attrs.get("missing_files", [])],
            "key": table.attrs.get("missing_files", []),
            "reason": "listed in the catalogue but not on disk",
        }
    )
    report = pd.concat([missing, bad], ignore_index=True)
    logger.info("%d of %d listed image(s) are bad", len(report), len(table) + len(missing))
    if out is not None:
        with atomic_path(out) as tmp:
            report.to_csv(tmp, index=False)
    return report
