"""Grouped, seeded, saved splits."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from zapmulti.data.splits import grouped_split, load_split, save_split
from zapmulti.errors import DataError


def test_groups_never_straddle_and_fraction_is_close():
    rng = np.random.default_rng(0)
    groups = pd.Series(rng.integers(0, 300, 2000).astype(str))
    valid = grouped_split(groups, 0.2, seed=1)
    for _, idx in groups.groupby(groups).groups.items():
        assert len(set(valid[idx])) == 1
    assert 0.18 < valid.mean() < 0.25


def test_split_is_seeded():
    groups = pd.Series([str(i // 3) for i in range(300)])
    a, b = grouped_split(groups, 0.25, 7), grouped_split(groups, 0.25, 7)
    c = grouped_split(groups, 0.25, 8)
    assert (a == b).all() and not (a == c).all()


def test_save_and_reload(tmp_path):
    keys = pd.Series([f"img{i}.jpg" for i in range(50)])
    valid = grouped_split(keys, 0.3, 0)
    save_split(keys, valid, tmp_path / "split.csv")
    shuffled = keys.sample(frac=1, random_state=0)
    reloaded = load_split(tmp_path / "split.csv", shuffled)
    assert (reloaded == valid[shuffled.index]).all()


def test_reload_for_other_catalogue_fails(tmp_path):
    save_split(pd.Series(["a", "b"]), np.array([True, False]), tmp_path / "s.csv")
    with pytest.raises(DataError, match="does not list 1 image"):
        load_split(tmp_path / "s.csv", pd.Series(["a", "c"]))
