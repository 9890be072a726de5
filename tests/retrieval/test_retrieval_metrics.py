"""Retrieval metrics against a toy example worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest
from retrieval_toys import make_index, toy, unit_vectors

from zapmulti.errors import DataError
from zapmulti.retrieval.metrics import (
    accuracy_metrics,
    evaluate_index,
    label_agreement,
    recall_at_k,
)

# Six points on the unit circle; cosine order is angular order. Each label has R = 2 others.
#   A0 at 0, A1 at 25, B0 at 40, A2 at 70, B1 at 85, B2 at 130 degrees.
# Neighbours (self left out), nearest first, and their labels:
#   A0: A1 B0 A2 B1 B2  -> A B ...  P@1 1  R-prec 1/2  AP@R (1/1)/2     = 1/2
#   A1: B0 A0 A2 B1 B2  -> B A ...  P@1 0  R-prec 1/2  AP@R (1/2)/2     = 1/4
#   B0: A1 A2 A0 B1 B2  -> A A ...  P@1 0  R-prec 0    AP@R 0
#   A2: B1 B0 A1 B2 A0  -> B B ...  P@1 0  R-prec 0    AP@R 0
#   B1: A2 B0|B2 A1 A0  -> A B ...  P@1 0  R-prec 1/2  AP@R (1/2)/2     = 1/4
#   B2: B1 A2 B0 A1 A0  -> B A ...  P@1 1  R-prec 1/2  AP@R (1/1)/2     = 1/2
# Means: P@1 = 2/6, R-precision = 2/6, MAP@R = 1.5/6. Top-2 agreement: 4 of 12 pairs.
ANGLES = np.radians([0, 25, 40, 70, 85, 130])
TOY = np.stack([np.cos(ANGLES), np.sin(ANGLES)], axis=1).astype(np.float32)
TOY_LABELS = ["A", "A", "B", "A", "B", "B"]


def test_accuracy_metrics_match_the_hand_computation():
    codes = np.array([0 if x == "A" else 1 for x in TOY_LABELS])
    got = accuracy_metrics(TOY, codes)
    assert got["queries"] == 6
    assert got["precision_at_1"] == pytest.approx(2 / 6)
    assert got["r_precision"] == pytest.approx(2 / 6)
    assert got["mean_average_precision_at_r"] == pytest.approx(1.5 / 6)


def test_unlabelled_items_are_neither_queries_nor_references():
    # A seventh point right on top of A1, without a label, must change nothing.
    vectors = np.concatenate([TOY, TOY[1:2]])
    codes = np.array([0, 0, 1, 0, 1, 1, -1])
    got = accuracy_metrics(vectors, codes)
    assert got["queries"] == 6 and got["mean_average_precision_at_r"] == pytest.approx(0.25)


def test_label_agreement_and_recall_by_hand():
    share, pairs = label_agreement(["A", "B", None], [["A", "B", None], ["B", "B"], ["A"]])
    assert (share, pairs) == (pytest.approx(3 / 4), 4)
    found = [np.array([1, 2, 3]), np.array([4, 5, 9])]
    truth = [np.array([1, 2, 4]), np.array([4, 5, 6])]
    assert recall_at_k(found, truth) == pytest.approx(2 / 3)


def test_evaluate_index_on_the_toy():
    index = make_index(TOY, colour=TOY_LABELS)
    result = evaluate_index(index, labels=["colour"], k=2)
    stats = result["labels"]["colour"]
    assert stats["precision_at_1"] == pytest.approx(2 / 6)
    assert stats["r_precision"] == pytest.approx(2 / 6)
    assert stats["mean_average_precision_at_r"] == pytest.approx(1.5 / 6)
    assert stats["top2_agreement"] == pytest.approx(4 / 12) and stats["pairs"] == 12
    assert result["recall_at_2"] is None and result["queries"] == 6


def test_approximate_index_reports_recall_against_exact_search():
    vectors = unit_vectors(400, 16, seed=11)
    labels = ["x", "y"] * 200
    exact = evaluate_index(make_index(vectors, colour=labels), k=10)
    approx = evaluate_index(make_index(vectors, "IVF8,Flat", colour=labels), k=10)
    assert 0.0 < approx["recall_at_10"] < 1.0
    # The embedding metrics use exact search of the same vectors, so they do not change.
    for metric in ("precision_at_1", "r_precision", "mean_average_precision_at_r"):
        assert approx["labels"]["colour"][metric] == exact["labels"]["colour"][metric]
    assert exact["labels"]["colour"]["queries"] == 400


def test_query_sample_and_label_errors(toy):
    result = evaluate_index(toy, max_queries=10)
    assert result["queries"] == 10 and list(result["labels"]) == ["colour"]
    held_out = evaluate_index(toy, queries=[1, 5, 7], max_queries=None)
    assert held_out["queries"] == 3 and held_out["labels"]["colour"]["pairs"] == 30
    with pytest.raises(DataError, match="--label size"):
        evaluate_index(toy, labels=["size"])
