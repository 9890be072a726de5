"""Catalogue data: sources, labels, splits, images and loaders."""

from __future__ import annotations

import numpy as np
import pandas as pd

from zapmulti.config import DataConfig
from zapmulti.data.labels import derive_columns
from zapmulti.data.sources import load_table


def read_catalogue(data: DataConfig, max_items: int | None = None, seed: int = 0) -> pd.DataFrame:
    """The catalogue table with derived label columns, optionally capped to a seeded sample."""
    table = derive_columns(load_table(data), data.derive)
    if max_items is not None and len(table) > max_items:
        keep = np.sort(np.random.default_rng(seed).choice(len(table), max_items, replace=False))
        table = table.iloc[keep].reset_index(drop=True)
    return table


__all__ = ["read_catalogue"]
