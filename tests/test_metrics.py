"""zapmulti.metrics against scikit-learn (and a brute-force ECE) on fixed predictions."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy.stats import binomtest
from sklearn import metrics as skm

from zapmulti.metrics import (
    MISSING,
    balanced_accuracy,
    confusion_matrix,
    expected_calibration_error,
    head_metrics,
    macro_f1,
    most_confused,
    per_class_stats,
    reliability_bins,
    topk_accuracy,
    wilson_interval,
)


def _fixed(n: int = 300, classes: int = 7, seed: int = 0):
    """Probabilities that are right more often than chance, a few missing targets, one class
    never true and one never predicted."""
    rng = np.random.default_rng(seed)
    target = rng.integers(0, classes - 1, n)  # the last class is never a target
    logits = rng.normal(size=(n, classes))
    logits[np.arange(n), target] += 1.5
    logits[:, 0] -= 10  # class 0 is never predicted
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    target[rng.choice(n, 25, replace=False)] = MISSING
    return target, probs


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_head_metrics_match_sklearn(seed):
    target, probs = _fixed(seed=seed)
    keep = target != MISSING
    y, p = target[keep], probs[keep].argmax(1)
    labels = np.arange(probs.shape[1])

    cm = confusion_matrix(target, probs.argmax(1), probs.shape[1])
    np.testing.assert_array_equal(cm, skm.confusion_matrix(y, p, labels=labels))

    stats = head_metrics(target, probs)
    assert stats["n"] == keep.sum()
    assert stats["accuracy"] == pytest.approx(skm.accuracy_score(y, p))
    assert stats["error_rate"] == pytest.approx(1 - skm.accuracy_score(y, p))
    assert stats["macro_f1"] == pytest.approx(skm.f1_score(y, p, average="macro"))
    assert macro_f1(cm) == pytest.approx(skm.f1_score(y, p, average="macro"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn warns that class 6 is never a target
        expected = skm.balanced_accuracy_score(y, p)
    assert stats["balanced_accuracy"] == pytest.approx(expected)
    assert balanced_accuracy(cm) == pytest.approx(expected)
    assert stats["top5_accuracy"] == pytest.approx(
        skm.top_k_accuracy_score(y, probs[keep], k=5, labels=labels)
    )
    assert topk_accuracy(target, probs, 2) == pytest.approx(
        skm.top_k_accuracy_score(y, probs[keep], k=2, labels=labels)
    )


def test_per_class_stats_match_sklearn():
    target, probs = _fixed(seed=3)
    keep = target != MISSING
    y, p = target[keep], probs[keep].argmax(1)
    labels = np.arange(probs.shape[1])
    stats = per_class_stats(confusion_matrix(target, probs.argmax(1), len(labels)))
    precision, recall, f1, support = skm.precision_recall_fscore_support(
        y, p, labels=labels, zero_division=0
    )
    np.testing.assert_allclose(stats["precision"], precision)
    np.testing.assert_allclose(stats["recall"], recall)
    np.testing.assert_allclose(stats["f1"], f1)
    np.testing.assert_array_equal(stats["support"], support)
    np.testing.assert_array_equal(stats["predicted"], np.bincount(p, minlength=len(labels)))
    assert stats["precision"][0] == 0 and stats["recall"][-1] == 0  # 0, not NaN, without rows


def test_two_class_head_has_no_top5_and_nan_without_labels():
    target = np.array([0, 1, 1, MISSING])
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.5, 0.5]])
    stats = head_metrics(target, probs)
    assert "top5_accuracy" not in stats
    assert stats["balanced_accuracy"] == pytest.approx(
        skm.balanced_accuracy_score([0, 1, 1], [0, 1, 0])
    )
    empty = head_metrics(np.full(3, MISSING), probs[:3])
    assert empty["n"] == 0 and np.isnan(empty["balanced_accuracy"])


def _ece_brute_force(target, probs, n_bins):
    total, n = 0.0, int((target != MISSING).sum())
    for b in range(n_bins):
        lo, hi = b / n_bins, (b + 1) / n_bins
        members = [
            (row.max(), row.argmax() == t)
            for t, row in zip(target, probs, strict=True)
            if t != MISSING and (lo < row.max() <= hi or (b == 0 and row.max() == 0))
        ]
        if members:
            conf = np.mean([c for c, _ in members])
            acc = np.mean([a for _, a in members])
            total += len(members) / n * abs(acc - conf)
    return total


@pytest.mark.parametrize("n_bins", [5, 10, 15])
def test_ece_and_reliability_bins_match_a_brute_force_loop(n_bins):
    target, probs = _fixed(seed=4)
    assert expected_calibration_error(target, probs, n_bins) == pytest.approx(
        _ece_brute_force(target, probs, n_bins)
    )
    bins = reliability_bins(target, probs, n_bins)
    keep = target != MISSING
    assert bins["count"].sum() == keep.sum()
    conf = probs[keep].max(1)
    for b in range(n_bins):
        inside = (conf > bins["edges"][b]) & (conf <= bins["edges"][b + 1])
        assert bins["count"][b] == inside.sum()
        if inside.any():
            assert bins["confidence"][b] == pytest.approx(conf[inside].mean())
        else:
            assert np.isnan(bins["accuracy"][b])


def test_ece_of_a_calibrated_and_an_overconfident_model():
    # Always 0.75 confident and right 3 times in 4: perfectly calibrated.
    probs = np.tile([0.75, 0.25], (8, 1))
    target = np.array([0, 0, 0, 1] * 2)
    assert expected_calibration_error(target, probs) == pytest.approx(0.0)
    # Always 0.95 confident and right half the time: ECE 0.45.
    probs = np.tile([0.95, 0.05], (8, 1))
    target = np.array([0, 1] * 4)
    assert expected_calibration_error(target, probs) == pytest.approx(0.45)


def test_most_confused_lists_off_diagonal_cells_largest_first():
    cm = np.array([[5, 3, 0], [1, 4, 3], [2, 0, 9]])
    assert most_confused(cm, k=3) == [(0, 1, 3), (1, 2, 3), (2, 0, 2)]
    assert most_confused(cm, k=10, min_count=2) == [(0, 1, 3), (1, 2, 3), (2, 0, 2)]
    assert most_confused(np.diag([3, 4]), k=5) == []


@pytest.mark.parametrize(("k", "n"), [(0, 10), (3, 10), (10, 10), (7, 250), (1, 1)])
def test_wilson_interval_matches_scipy(k, n):
    expected = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    low, high = wilson_interval(k, n)
    assert low == pytest.approx(expected.low, abs=1e-6)
    assert high == pytest.approx(expected.high, abs=1e-6)
    assert np.isnan(wilson_interval(0, 0)[0])
