"""Classification metrics over labelled rows only; MISSING (-1) targets are ignored."""

from __future__ import annotations

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


def topk_accuracy(target: np.ndarray, probs: np.ndarray, k: int) -> float:
    keep = target != MISSING
    if not keep.any():
        return float("nan")
    topk = np.argsort(-probs[keep], axis=1)[:, :k]
    return float((topk == target[keep, None]).any(axis=1).mean())


def head_metrics(target: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    """Accuracy, error rate, macro-F1 (and top-5 accuracy above 5 classes) of one head."""
    n_classes = probs.shape[1]
    pred = probs.argmax(1)
    keep = target != MISSING
    n = int(keep.sum())
    out: dict[str, float] = {"n": n}
    if n == 0:
        out.update(accuracy=float("nan"), error_rate=float("nan"), macro_f1=float("nan"))
        return out
    acc = float((pred[keep] == target[keep]).mean())
    out.update(
        accuracy=acc,
        error_rate=1.0 - acc,
        macro_f1=macro_f1(confusion_matrix(target, pred, n_classes)),
    )
    if n_classes > 5:
        out["top5_accuracy"] = topk_accuracy(target, probs, 5)
    return out
