"""Derived labels, per-head vocabularies with rare-class folding, and missing-label masks."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import pandas as pd

from zapmulti.config import DeriveRule, HeadConfig
from zapmulti.errors import DataError

logger = logging.getLogger(__name__)

MISSING = -1  # encoded target of a row that has no label for a head


def derive_columns(table: pd.DataFrame, derive: dict[str, DeriveRule]) -> pd.DataFrame:
    """Add the columns that `data.derive` declares, e.g. brand as the first word of a name."""
    table = table.copy()
    for column, rule in derive.items():
        if rule.source not in table.columns:
            raise DataError(
                f"data.derive.{column}: source column {rule.source!r} is not in the catalogue; "
                f"columns present: {[c for c in table.columns if c not in ('path', 'key')]}"
            )
        values = table[rule.source].tolist()
        if rule.rule == "first_word":
            derived = [_first_word(v) for v in values]
        elif rule.rule == "lower":
            derived = [v.lower() if isinstance(v, str) else None for v in values]
        else:
            derived = values
        table[column] = pd.Series(derived, index=table.index, dtype=object)
    return table


def _first_word(value: object) -> object:
    if not isinstance(value, str):
        return None
    words = value.split()
    return words[0] if words else None


def head_values(table: pd.DataFrame, head: HeadConfig) -> pd.Series:
    """The raw label of every row for `head`, after its map; None where the head has no label."""
    if head.column not in table.columns:
        present = [c for c in table.columns if c not in ("path", "key", "group")]
        raise DataError(
            f"head {head.name!r}: column {head.column!r} is not in the catalogue; "
            f"columns present: {present}"
        )
    # Plain Python lists: pandas 3 string columns would turn None back into NaN.
    values = [None if _is_missing(v) else str(v) for v in table[head.column].tolist()]
    if head.map:
        values = [head.map.get(v, v) if v is not None else None for v in values]
    if head.classes is not None:
        allowed = set(head.classes)
        values = [v if v in allowed else None for v in values]
    return pd.Series(values, index=table.index, dtype=object)


def _is_missing(value: object) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value))


def build_vocab(train_values: pd.Series, head: HeadConfig) -> list[str]:
    """Classes of one head from its training labels; those under `min_count` fold into other."""
    if head.classes is not None:
        return list(head.classes)
    counts = train_values.dropna().value_counts()
    if counts.empty:
        raise DataError(
            f"head {head.name!r}: no training row has a label in column {head.column!r}"
        )
    keep = sorted(str(c) for c, n in counts.items() if n >= head.min_count)
    folded = [str(c) for c, n in counts.items() if n < head.min_count]
    if folded:
        logger.info(
            "head %s: %d class(es) under %d examples fold into %r",
            head.name,
            len(folded),
            head.min_count,
            head.other_label,
        )
        if head.other_label in keep:
            keep.remove(head.other_label)
        keep.append(head.other_label)
    if len(keep) < 2:
        raise DataError(
            f"head {head.name!r}: only {keep} left after folding classes under "
            f"min_count={head.min_count}; lower min_count or drop the head"
        )
    return keep


def encode(values: pd.Series, vocab: Sequence[str], other_label: str | None) -> np.ndarray:
    """Class indices of `values`; unknown labels map to `other` if present, else MISSING."""
    index = {c: i for i, c in enumerate(vocab)}
    fallback = index.get(other_label, MISSING) if other_label is not None else MISSING
    return np.array(
        [MISSING if v is None else index.get(v, fallback) for v in values], dtype=np.int64
    )


def unknown_count(values: pd.Series, vocab: Sequence[str]) -> int:
    """Labelled rows whose label is outside `vocab` (only possible without folding)."""
    known = set(vocab)
    return int(sum(v is not None and v not in known for v in values))


def class_weights(
    targets: np.ndarray, vocab: Sequence[str], spec: str | dict[str, float]
) -> np.ndarray | None:
    """Per-class loss weights: none, 'balanced' (n / (k * count)) or an explicit mapping."""
    if spec == "none":
        return None
    if isinstance(spec, dict):
        unknown = sorted(set(spec) - set(vocab))
        if unknown:
            raise DataError(
                f"class_weights names unknown class(es) {unknown}; classes: {list(vocab)}"
            )
        return np.array([float(spec.get(c, 1.0)) for c in vocab], dtype=np.float32)
    labelled = targets[targets != MISSING]
    counts = np.bincount(labelled, minlength=len(vocab)).astype(np.float64)
    weights = np.where(counts > 0, len(labelled) / (len(vocab) * np.maximum(counts, 1)), 0.0)
    return weights.astype(np.float32)


def build_targets(
    table: pd.DataFrame, heads: Sequence[HeadConfig], vocabs: dict[str, list[str]]
) -> np.ndarray:
    """An [N, H] int64 matrix of class indices with MISSING where a head has no label."""
    columns = []
    for head in heads:
        vocab = vocabs[head.name]
        other = head.other_label if head.other_label in vocab else None
        columns.append(encode(head_values(table, head), vocab, other))
    return np.stack(columns, axis=1) if columns else np.zeros((len(table), 0), dtype=np.int64)


def build_vocabs(train_table: pd.DataFrame, heads: Sequence[HeadConfig]) -> dict[str, list[str]]:
    return {h.name: build_vocab(head_values(train_table, h), h) for h in heads}
