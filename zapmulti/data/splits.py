"""Seeded train/validation splits grouped by product, saved and reloaded by image key."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from zapmulti.errors import DataError
from zapmulti.fileio import atomic_path

logger = logging.getLogger(__name__)


def grouped_split(groups: pd.Series, valid_pct: float, seed: int) -> np.ndarray:
    """Boolean mask of validation rows; every group lands wholly on one side.

    Groups are shuffled with `seed` and taken into validation until `valid_pct` of the rows
    is reached, so the split depends only on the group ids, the seed and the fraction.
    """
    if not 0.0 < valid_pct < 1.0:
        raise ValueError(f"valid_pct must be between 0 and 1, got {valid_pct}")
    codes, uniques = pd.factorize(groups.astype(str), sort=True)
    if len(uniques) < 2:
        raise DataError(
            f"cannot split {len(groups)} row(s) in {len(uniques)} product group(s): "
            "need at least two groups"
        )
    sizes = np.bincount(codes, minlength=len(uniques))
    order = np.random.default_rng(seed).permutation(len(uniques))
    target = valid_pct * len(groups)
    chosen = np.zeros(len(uniques), dtype=bool)
    taken = 0
    for g in order:
        if taken >= target:
            break
        chosen[g] = True
        taken += sizes[g]
    if chosen.all():
        chosen[order[-1]] = False
    return chosen[codes]


def save_split(keys: pd.Series, is_valid: np.ndarray, path: str | Path) -> None:
    frame = pd.DataFrame({"key": keys.to_numpy(), "split": np.where(is_valid, "valid", "train")})
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)


def load_split(path: str | Path, keys: pd.Series) -> np.ndarray:
    """Validation mask for `keys` from a saved split.csv; keys it does not list are an error."""
    path = Path(path)
    try:
        saved = pd.read_csv(path, dtype=str, keep_default_na=False)
    except FileNotFoundError:
        raise DataError(f"split file not found: {path}; fix split.file in the config") from None
    if list(saved.columns[:2]) != ["key", "split"]:
        raise DataError(f"{path}: expected columns key,split; found {list(saved.columns)}")
    bad = sorted(set(saved["split"]) - {"train", "valid"})
    if bad:
        raise DataError(f"{path}: split values must be train or valid, found {bad}")
    lookup = dict(zip(saved["key"], saved["split"] == "valid", strict=True))
    absent = [k for k in keys if k not in lookup]
    if absent:
        raise DataError(
            f"{path} does not list {len(absent)} image(s) of the catalogue, e.g. {absent[:3]}; "
            "the split belongs to another catalogue (drop split.file to make a new one)"
        )
    return np.array([lookup[k] for k in keys], dtype=bool)
