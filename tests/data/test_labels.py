"""Derived labels, rare-class folding, and the missing-label encoding."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from zapmulti.config import DeriveRule, HeadConfig
from zapmulti.data.labels import (
    MISSING,
    build_targets,
    build_vocab,
    class_weights,
    derive_columns,
    head_values,
)
from zapmulti.errors import DataError


def test_first_word_derivation():
    table = pd.DataFrame({"name": ["Puma Men Black", "ADIDAS  Run", None, "  "]})
    out = derive_columns(table, {"brand": DeriveRule(source="name", rule="first_word")})
    assert out["brand"].tolist()[:2] == ["Puma", "ADIDAS"]
    assert out["brand"].isna().tolist()[2:] == [True, True]


def test_derive_from_unknown_column_names_it():
    with pytest.raises(DataError, match="data.derive.brand: source column 'nme'"):
        derive_columns(pd.DataFrame({"name": ["a"]}), {"brand": DeriveRule(source="nme")})


def test_rare_classes_fold_into_other():
    head = HeadConfig(name="brand", column="b", min_count=3)
    values = pd.Series(["a"] * 5 + ["b"] * 3 + ["c"] * 2 + ["d"] + [None])
    vocab = build_vocab(values, head)
    assert vocab == ["a", "b", "other"]
    targets = build_targets(
        pd.DataFrame({"b": values.tolist() + ["zzz"]}), [head], {"brand": vocab}
    )
    assert targets[:, 0].tolist() == [0] * 5 + [1] * 3 + [2] * 3 + [MISSING, 2]


def test_fixed_classes_mask_other_values_for_that_head_only():
    table = pd.DataFrame({"g": ["Men", "Boys", "Women", "Men;Women", None], "c": list("aabab")})
    heads = [
        HeadConfig(name="gender", column="g", classes=["Men", "Women"]),
        HeadConfig(name="cat", column="c"),
    ]
    targets = build_targets(table, heads, {"gender": ["Men", "Women"], "cat": ["a", "b"]})
    assert targets[:, 0].tolist() == [0, MISSING, 1, MISSING, MISSING]
    assert targets[:, 1].tolist() == [0, 0, 1, 0, 1]


def test_map_applies_before_classes():
    head = HeadConfig(name="g", column="g", classes=["Men", "Women"], map={"Boys": "Men"})
    assert head_values(pd.DataFrame({"g": ["Boys", "Girls"]}), head).tolist() == ["Men", None]


def test_folding_to_a_single_class_is_an_error():
    with pytest.raises(DataError, match="min_count=10"):
        build_vocab(pd.Series(["a"] * 3 + ["b"]), HeadConfig(name="h", column="c", min_count=10))


def test_balanced_class_weights():
    w = class_weights(np.array([0, 0, 0, 1, MISSING]), ["a", "b"], "balanced")
    np.testing.assert_allclose(w, [4 / 6, 4 / 2])
