"""Classification metrics over labelled rows only; MISSING (-1) targets are ignored."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

MISSING = -1


def confusion_matrix(target: np.ndarray, pred: np.ndarray, n_classes: int) -> np.ndarray:
    """[true, predicted] counts over the rows whose target is not MISSING."""
    keep = target != MISSING
    idx = target[keep] * n_classes + pred[keep]
    return np.bincount(idx, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def macro_f1(cm: np.ndarray) -> float:
    """Mean F1 over the classes that occur in the targets or the predictions."""
    tp = np.diag(cm).astype(np.float64)
    support, predicted = cm.sum(1), cm.sum(0)
    present = (support + predicted) > 0
    if not present.any():
        return float("nan")
    denom = support + predicted
    f1 = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
    return float(f1[present].mean())


def balanced_accuracy(cm: np.ndarray) -> float:
    """Mean recall over the classes that occur in the targets (scikit-learn's definition)."""
    support = cm.sum(1)
    present = support > 0
    if not present.any():
        return float("nan")
    return float((np.diag(cm)[present] / support[present]).mean())


def per_class_stats(cm: np.ndarray) -> dict[str, np.ndarray]:
    """Precision, recall, F1 and support of every class; 0 where a ratio has no denominator."""
    tp = np.diag(cm).astype(np.float64)
    support, predicted = cm.sum(1), cm.sum(0)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    denom = support + predicted
    f1 = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
    return {
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "support": support.astype(np.int64),
        "predicted": predicted.astype(np.int64),
    }


def most_confused(cm: np.ndarray, k: int = 10, min_count: int = 1) -> list[tuple[int, int, int]]:
    """The k largest off-diagonal cells as (true, predicted, count), largest first."""
    off = cm.copy()
    np.fill_diagonal(off, 0)
    true, pred = np.nonzero(off >= max(min_count, 1))
    counts = off[true, pred]
    # Ties go to the lower (true, predicted) index so that the order is stable.
    order = np.lexsort((pred, true, -counts))[:k]
    return [(int(true[i]), int(pred[i]), int(counts[i])) for i in order]


def reliability_bins(target: np.ndarray, probs: np.ndarray, n_bins: int = 10) -> dict[str, Any]:
    """Confidence (top probability) against accuracy in equal-width bins over [0, 1].

    A prediction with confidence c falls in bin i where i / n_bins < c <= (i + 1) / n_bins
    (a confidence of exactly 0 goes to the first bin). Empty bins have NaN confidence and
    accuracy.

    Returns:
        ``edges`` (n_bins + 1), and per bin ``count``, ``confidence`` (mean top probability)
        and ``accuracy``; ``ece`` is the expected calibration error, the count-weighted mean of
        |accuracy - confidence|.
    """
    keep = target != MISSING
    conf = probs[keep].max(1) if keep.any() else np.zeros(0)
    correct = (probs[keep].argmax(1) == target[keep]) if keep.any() else np.zeros(0, bool)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    which = np.clip(np.ceil(conf * n_bins).astype(np.int64) - 1, 0, n_bins - 1)
    count = np.bincount(which, minlength=n_bins)
    conf_sum = np.bincount(which, weights=conf, minlength=n_bins)
    hit_sum = np.bincount(which, weights=correct.astype(np.float64), minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.where(count > 0, conf_sum / count, np.nan)
        accuracy = np.where(count > 0, hit_sum / count, np.nan)
    n = int(count.sum())
    ece = float(np.abs(hit_sum - conf_sum).sum() / n) if n else float("nan")
    return {
        "edges": edges,
        "count": count,
        "confidence": mean_conf,
        "accuracy": accuracy,
        "ece": ece,
    }


def expected_calibration_error(target: np.ndarray, probs: np.ndarray, n_bins: int = 10) -> float:
    """Count-weighted mean |accuracy - confidence| over equal-width confidence bins."""
    return reliability_bins(target, probs, n_bins)["ece"]


def wilson_interval(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score interval of a proportion (95% by default); (nan, nan) when n is 0."""
    if n <= 0:
        return float("nan"), float("nan")
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def topk_accuracy(target: np.ndarray, probs: np.ndarray, k: int) -> float:
    keep = target != MISSING
    if not keep.any():
        return float("nan")
    topk = np.argsort(-probs[keep], axis=1)[:, :k]
    return float((topk == target[keep, None]).any(axis=1).mean())


def head_metrics(target: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    """Accuracy, error rate, macro-F1, balanced accuracy (and top-5 above 5 classes) of a head."""
    n_classes = probs.shape[1]
    pred = probs.argmax(1)
    keep = target != MISSING
    n = int(keep.sum())
    out: dict[str, float] = {"n": n}
    if n == 0:
        out.update(
            accuracy=float("nan"),
            error_rate=float("nan"),
            macro_f1=float("nan"),
            balanced_accuracy=float("nan"),
        )
        return out
    acc = float((pred[keep] == target[keep]).mean())
    cm = confusion_matrix(target, pred, n_classes)
    out.update(
        accuracy=acc,
        error_rate=1.0 - acc,
        macro_f1=macro_f1(cm),
        balanced_accuracy=balanced_accuracy(cm),
    )
    if n_classes > 5:
        out["top5_accuracy"] = topk_accuracy(target, probs, 5)
    return out
