"""Catalogue data: sources, labels, splits, images and loaders."""

from __future__ import annotations

import numpy as np
import pandas as pd

from zapmulti.config import Config, DataConfig
from zapmulti.data.images import ImageCache, build_cache
from zapmulti.data.labels import derive_columns
from zapmulti.data.sources import load_table


def read_catalogue(data: DataConfig, max_items: int | None = None, seed: int = 0) -> pd.DataFrame:
    """The catalogue table with derived label columns, optionally capped to a seeded sample."""
    table = derive_columns(load_table(data), data.derive)
    if max_items is not None and len(table) > max_items:
        keep = np.sort(np.random.default_rng(seed).choice(len(table), max_items, replace=False))
        table = table.iloc[keep].reset_index(drop=True)
    return table


def image_cache(config: Config, table: pd.DataFrame, show_progress: bool = True) -> ImageCache:
    """The preprocessed image cache of `table`'s images with the config's model settings."""
    m = config.model
    return build_cache(
        table["path"].tolist(),
        m.image_size,
        m.resize,
        m.pad_value,
        config.cache_dir,
        workers=config.train.num_workers,
        show_progress=show_progress,
    )


__all__ = ["read_catalogue", "image_cache"]
