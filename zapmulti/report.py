"""Per-head error analysis and a colour-bias report: one self-contained HTML page plus PNGs.

`build_report` predicts a run's validation split (or another catalogue), then writes, for every
classification head, its metrics, per-class table, confusion heat map, most-confused pairs, a
grid of the top losses and a reliability diagram; and, for one head (gender by default), its
error per dominant-colour bucket with Wilson intervals, the worst bucket's gap to the overall
error and the direction its mistakes lean in. The colour figures also go to `colour_bias.json`
so that a later change can be checked against them.

Typical use::

    zapmulti report runs/sample-fashion                      # RUN_DIR/report/index.html
    zapmulti report runs/zap50k --data other.yaml --out /tmp/zap-report

or ``build_report("runs/sample-fashion")`` from Python.
"""

from __future__ import annotations

import csv
import html
import io
import json
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from PIL import Image

from zapmulti.artifacts import Run, load_run, write_json
from zapmulti.colour import (
    BUCKETS,
    SWATCH,
    colour_agreement,
    colour_buckets,
    find_colour_column,
    label_bucket,
)
from zapmulti.data.images import decode_image, resize_image
from zapmulti.errors import BadImageError, ConfigError, RunDirError
from zapmulti.evaluate import predict_catalogue
from zapmulti.fileio import atomic_dir
from zapmulti.metrics import (
    MISSING,
    confusion_matrix,
    head_metrics,
    most_confused,
    per_class_stats,
    reliability_bins,
    wilson_interval,
)

logger = logging.getLogger(__name__)

INDEX = "index.html"
SUMMARY = "report.json"
COLOUR_BIAS = "colour_bias.json"
COLOURS = "colours.csv"
MAX_HEATMAP_CLASSES = 25  # a bigger confusion matrix keeps only its best-supported classes


@dataclass
class HeadAnalysis:
    """Everything the report shows for one classification head."""

    name: str
    classes: list[str]
    rows: int  # rows scored
    metrics: dict[str, float]
    confusion: np.ndarray
    per_class: dict[str, np.ndarray]
    confused_pairs: list[tuple[str, str, int]]
    reliability: dict[str, Any]
    top_losses: list[dict[str, Any]]  # row, path, true, predicted, prob, true_prob, loss
    figures: dict[str, str] = field(default_factory=dict)  # kind -> PNG file name

    @property
    def missing(self) -> int:
        return self.rows - int(self.metrics["n"])


def analyse_head(
    name: str,
    classes: list[str],
    target: np.ndarray,
    probs: np.ndarray,
    paths: list[str],
    table_rows: np.ndarray,
    top_k: int = 16,
    n_bins: int = 10,
) -> HeadAnalysis:
    """Metrics, per-class table, confusions, calibration and top losses of one head.

    Args:
        target: class index per scored row, MISSING where the row has no label for the head.
        probs: [rows, classes] predicted probabilities.
        paths: image path per scored row (for the top-losses grid).
        table_rows: catalogue row of every scored row.
    """
    pred = probs.argmax(1)
    cm = confusion_matrix(target, pred, len(classes))
    pairs = [(classes[t], classes[p], c) for t, p, c in most_confused(cm, k=10)]

    labelled = np.flatnonzero(target != MISSING)
    true_prob = probs[labelled, target[labelled]]
    loss = -np.log(np.clip(true_prob, 1e-12, 1.0))
    order = np.argsort(-loss, kind="stable")[:top_k]
    top = [
        {
            "row": int(table_rows[i]),
            "path": paths[i],
            "true": classes[target[i]],
            "predicted": classes[pred[i]],
            "prob": float(probs[i, pred[i]]),
            "true_prob": float(probs[i, target[i]]),
            "loss": float(loss[k]),
        }
        for i, k in zip(labelled[order], order, strict=True)
    ]
    return HeadAnalysis(
        name=name,
        classes=list(classes),
        rows=len(target),
        metrics=head_metrics(target, probs),
        confusion=cm,
        per_class=per_class_stats(cm),
        confused_pairs=pairs,
        reliability=reliability_bins(target, probs, n_bins),
        top_losses=top,
    )


# --------------------------------------------------------------------------- colour bias


def colour_bias(
    buckets: list[str],
    target: np.ndarray,
    pred: np.ndarray,
    classes: list[str],
    min_count: int = 10,
) -> dict[str, Any]:
    """A head's error per colour bucket, with 95% Wilson intervals and the mistakes' direction.

    Args:
        buckets: colour bucket per scored row.
        target: class index per scored row, MISSING where unlabelled (those rows are left out).
        pred: predicted class index per scored row.
        min_count: buckets with fewer labelled rows are listed but cannot be the worst bucket.

    Returns:
        ``overall`` (n, errors, error_rate, ci), ``buckets`` (one dict per bucket present:
        images, n, errors, error_rate, ci, gap to the overall error, mistakes as
        "true→predicted" counts, the commonest mistake as ``lean`` with its share, and the true
        and predicted class shares), and ``worst`` (the bucket with the highest error among
        those with at least `min_count` labelled rows, its gap, and whether the overall error
        lies outside its interval), or None.
    """
    if not len(buckets) == len(target) == len(pred):
        raise ValueError(f"{len(buckets)} buckets, {len(target)} targets, {len(pred)} predictions")
    bucket_arr = np.array(buckets, dtype=object)
    keep = target != MISSING
    n = int(keep.sum())
    errors = int((pred[keep] != target[keep]).sum())
    overall_rate = errors / n if n else float("nan")
    overall = {"n": n, "errors": errors, "error_rate": overall_rate}
    overall["ci"] = list(wilson_interval(errors, n))

    rows = []
    for bucket in BUCKETS:
        in_bucket = bucket_arr == bucket
        images = int(in_bucket.sum())
        if not images:
            continue
        sel = in_bucket & keep
        t, p = target[sel], pred[sel]
        k = int(len(t))
        e = int((t != p).sum())
        mistakes: dict[str, int] = {}
        for ti, pi in zip(t[t != p], p[t != p], strict=True):
            key = f"{classes[ti]}→{classes[pi]}"
            mistakes[key] = mistakes.get(key, 0) + 1
        mistakes = dict(sorted(mistakes.items(), key=lambda kv: (-kv[1], kv[0])))
        lean = next(iter(mistakes), None)
        rate = e / k if k else float("nan")
        rows.append(
            {
                "bucket": bucket,
                "images": images,
                "n": k,
                "errors": e,
                "error_rate": rate,
                "ci": list(wilson_interval(e, k)),
                "gap": rate - overall_rate if k and n else float("nan"),
                "mistakes": mistakes,
                "lean": lean,
                "lean_share": mistakes[lean] / e if lean else float("nan"),
                "true_share": _shares(t, classes),
                "predicted_share": _shares(p, classes),
            }
        )
    eligible = [r for r in rows if r["n"] >= min_count]
    worst = None
    if eligible and n:
        top = max(eligible, key=lambda r: (r["error_rate"], r["n"]))
        worst = {
            "bucket": top["bucket"],
            "n": top["n"],
            "error_rate": top["error_rate"],
            "gap": top["error_rate"] - overall_rate,
            "ci": top["ci"],
            "outside_ci": not (top["ci"][0] <= overall_rate <= top["ci"][1]),
            "lean": top["lean"],
        }
    return {"min_count": min_count, "overall": overall, "buckets": rows, "worst": worst}


def _shares(idx: np.ndarray, classes: list[str]) -> dict[str, float]:
    if not len(idx):
        return {}
    counts = np.bincount(idx, minlength=len(classes)) / len(idx)
    return {c: float(v) for c, v in zip(classes, counts, strict=True)}


def pick_bias_head(names: list[str], columns: dict[str, str], primary: str) -> str:
    """The head to measure colour bias on: one named or labelled gender, else the primary head."""
    for name in names:
        if name.lower() == "gender":
            return name
    for name in names:
        if columns.get(name, "").lower() == "gender":
            return name
    return primary if primary in names else names[0]


# --------------------------------------------------------------------------- figures


def _save(fig: Figure, path: Path) -> None:
    fig.savefig(path, format="png", dpi=100, bbox_inches="tight")


def plot_confusion(cm: np.ndarray, classes: list[str], title: str) -> Figure:
    """Row-normalised confusion heat map (recall on the diagonal), counts written in small ones."""
    keep = np.arange(len(classes))
    note = ""
    if len(classes) > MAX_HEATMAP_CLASSES:
        keep = np.sort(np.argsort(-cm.sum(1), kind="stable")[:MAX_HEATMAP_CLASSES])
        note = f" (the {MAX_HEATMAP_CLASSES} best-supported of {len(classes)} classes)"
    sub = cm[np.ix_(keep, keep)]
    names = [_short(classes[i]) for i in keep]
    support = sub.sum(1, keepdims=True)
    norm = np.divide(sub, support, out=np.zeros(sub.shape), where=support > 0)

    size = max(3.5, 0.45 * len(keep) + 2)
    fig = Figure(figsize=(size + 1, size))
    ax = fig.add_subplot()
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    ax.set_xticks(range(len(keep)), names, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(keep)), names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title + note, fontsize=10)
    if len(keep) <= 15:
        for i in range(len(keep)):
            for j in range(len(keep)):
                if sub[i, j]:
                    colour = "white" if norm[i, j] > 0.5 else "black"
                    ax.text(j, i, str(sub[i, j]), ha="center", va="center", fontsize=7, c=colour)
    return fig


def plot_reliability(bins: dict[str, Any], title: str) -> Figure:
    """Accuracy against confidence per bin, with the diagonal and the bin counts beneath."""
    edges = bins["edges"]
    centres = (edges[:-1] + edges[1:]) / 2
    width = edges[1] - edges[0]
    fig = Figure(figsize=(4.5, 5))
    ax, hist = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    filled = bins["count"] > 0
    x, acc, conf = centres[filled], bins["accuracy"][filled], bins["confidence"][filled]
    ax.bar(x, acc, width=width * 0.9, color="#4a7fc1", edgecolor="white", label="accuracy")
    ax.bar(
        x,
        conf - acc,
        bottom=acc,
        width=width * 0.9,
        color="#e07b7b",
        alpha=0.5,
        label="gap to mean confidence",
    )
    ax.plot([0, 1], [0, 1], "k--", lw=1)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title(f"{title}: ECE {bins['ece']:.3f}", fontsize=10)
    hist.bar(centres, bins["count"], width=width * 0.9, color="grey")
    hist.set_xlabel("confidence (top probability)")
    hist.set_ylabel("rows")
    return fig


def plot_top_losses(
    items: list[dict[str, Any]], images: list[np.ndarray], title: str, cols: int = 4
) -> Figure:
    """A grid of the worst-predicted images, each captioned with its true and predicted label.

    The tiles are pasted into one picture on one set of axes: a grid of subplots takes seconds
    to lay out.
    """
    tile, caption, pad = 128, 34, 6
    cols = max(1, min(cols, len(items)))
    nrows = math.ceil(len(items) / cols)
    cell_w, cell_h = tile + 2 * pad, tile + caption + pad
    canvas = np.full((nrows * cell_h + pad, cols * cell_w, 3), 255, dtype=np.uint8)
    for k, image in enumerate(images):
        r, c = divmod(k, cols)
        thumb = np.asarray(resize_image(Image.fromarray(np.asarray(image)), tile))
        y, x = r * cell_h + caption + pad, c * cell_w + pad
        canvas[y : y + tile, x : x + tile] = thumb

    dpi = 100
    fig = Figure(figsize=(canvas.shape[1] / dpi, canvas.shape[0] / dpi + 0.3), dpi=dpi)
    ax = fig.add_axes((0, 0, 1, canvas.shape[0] / (canvas.shape[0] + 0.3 * dpi)))
    ax.imshow(canvas, interpolation="nearest")
    ax.set_axis_off()
    for k, item in enumerate(items):
        r, c = divmod(k, cols)
        x, y = c * cell_w + cell_w / 2, r * cell_h + pad + caption - 4
        wrong = item["true"] != item["predicted"]
        ax.text(x, y - 14, f"true {_short(item['true'])}", ha="center", va="bottom", fontsize=8)
        ax.text(
            x,
            y,
            f"pred {_short(item['predicted'])} {item['prob']:.2f}",
            ha="center",
            va="bottom",
            fontsize=8,
            color="#b00020" if wrong else "black",
        )
    fig.suptitle(title, fontsize=10, y=0.995, va="top")
    return fig


def plot_colour_bias(bias: dict[str, Any], head: str) -> Figure:
    """The head's error per colour bucket with 95% intervals against the overall error."""
    rows = [r for r in bias["buckets"] if r["n"]]
    fig = Figure(figsize=(6, 0.4 * max(len(rows), 3) + 1.2))
    ax = fig.add_subplot()
    y = np.arange(len(rows))
    rates = [r["error_rate"] for r in rows]
    lo = [r["error_rate"] - r["ci"][0] for r in rows]
    hi = [r["ci"][1] - r["error_rate"] for r in rows]
    colours = [np.array(SWATCH[r["bucket"]]) / 255 for r in rows]
    ax.barh(y, rates, color=colours, edgecolor="black", linewidth=0.5)
    ax.errorbar(rates, y, xerr=[lo, hi], fmt="none", ecolor="black", capsize=3, lw=1)
    overall = bias["overall"]["error_rate"]
    if not math.isnan(overall):
        ax.axvline(overall, color="crimson", ls="--", lw=1, label=f"overall {overall:.3f}")
        ax.legend(loc="lower right", fontsize=8)
    ax.set_yticks(y, [f"{r['bucket']} (n={r['n']})" for r in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel(f"{head} error (95% Wilson interval)")
    ax.set_title(f"{head} error by dominant colour", fontsize=10)
    return fig


def _short(text: str, limit: int = 18) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _thumbnail(path: str, fallback: np.ndarray) -> np.ndarray:
    """The original image, or the cached one when it will not decode."""
    try:
        return np.asarray(decode_image(path))
    except BadImageError:
        return np.asarray(fallback)


# --------------------------------------------------------------------------- report


def build_report(
    run: Run | str | os.PathLike,
    data: str | os.PathLike | None = None,
    out: str | os.PathLike | None = None,
    batch_size: int = 128,
    device: str | None = None,
    bias_head: str | None = None,
    colour_column: str | None = None,
    top_losses: int = 16,
    min_bucket: int = 10,
    show_progress: bool = True,
) -> Path:
    """Write the HTML report of a run, with its figures and colour-bias JSON, and return its folder.

    Args:
        run: a run directory or a loaded Run.
        data: None for the run's validation split; a folder or a config YAML for another
            catalogue (as in `zapmulti.evaluate.evaluate`).
        out: the report folder (default: RUN_DIR/report). It is written whole or not at all;
            an existing report there is replaced, any other non-empty folder is refused.
        bias_head: the head whose error is broken down by colour (default: gender, else the
            primary head).
        colour_column: a catalogue column of colour labels to compare the computed colour with
            (default: the first column whose name contains colour or color, if any).
        top_losses: images in each head's top-losses grid.
        min_bucket: labelled rows a colour bucket needs to be called the worst.
    """
    if not isinstance(run, Run):
        run = load_run(run)
    out = Path(out) if out is not None else run.path / "report"
    _check_out(out)
    classifiers = [s.name for s in run.model.specs if s.type == "classification"]
    if bias_head is not None and bias_head not in classifiers:
        raise ConfigError(
            f"bias head {bias_head!r} is not a classification head of {run.path}; "
            f"choose one of {classifiers}"
        )
    pred = predict_catalogue(run, data, batch_size, device, show_progress)
    table = pred.table.iloc[pred.rows]
    paths = table["path"].astype(str).tolist()

    heads = [
        analyse_head(
            h.name,
            run.vocabs[h.name],
            pred.targets[:, j],
            pred.probs[h.name],
            paths,
            pred.rows,
            top_k=top_losses,
        )
        for j, h in enumerate(pred.heads)
    ]
    names = [h.name for h in pred.heads]
    if bias_head is None:
        bias_head = pick_bias_head(
            names, {h.name: h.column for h in pred.heads}, run.config.primary
        )
    elif bias_head not in names:
        raise ConfigError(
            f"bias head {bias_head!r} has no label column in this catalogue; choose one of {names}"
        )
    if colour_column is None:
        colour_column = find_colour_column(pred.table.columns)
    elif colour_column not in pred.table.columns:
        present = [c for c in pred.table.columns if c not in ("path", "key", "group")]
        raise ConfigError(f"colour column {colour_column!r} is not in the catalogue: {present}")

    logger.info("computing dominant colours of %d image(s)", len(pred.rows))
    buckets = colour_buckets(pred.images, pred.rows)
    j = names.index(bias_head)
    bias = colour_bias(
        buckets,
        pred.targets[:, j],
        pred.probs[bias_head].argmax(1),
        run.vocabs[bias_head],
        min_bucket,
    )
    bias["head"] = bias_head
    bias["classes"] = run.vocabs[bias_head]
    bias["colour_column"] = colour_column
    labels = table[colour_column].tolist() if colour_column else None
    bias["agreement"] = colour_agreement(buckets, labels) if labels is not None else None
    meta = {
        "run": str(run.path),
        "data_root": pred.config.data.root,
        "split": "valid" if pred.own else "all",
        "rows": int(len(pred.rows)),
        "unreadable_images": pred.unreadable,
        "heads_without_column": pred.absent,
    }
    bias["meta"] = meta

    with atomic_dir(out) as tmp:
        for head in heads:
            _write_head_figures(tmp, head, pred.images)
        _save(plot_colour_bias(bias, bias_head), tmp / "colour_bias.png")
        figures = {"colour_bias": "colour_bias.png"}
        if bias["agreement"] and bias["agreement"]["n"]:
            _save(_plot_agreement(bias["agreement"], colour_column), tmp / "colour_agreement.png")
            figures["colour_agreement"] = "colour_agreement.png"
        bias["figures"] = figures
        _write_colours(tmp / COLOURS, table, buckets, colour_column)
        write_json(tmp / COLOUR_BIAS, _no_nan(bias))
        write_json(tmp / SUMMARY, _no_nan(_summary(heads, meta)))
        (tmp / INDEX).write_text(render_html(heads, bias, meta), encoding="utf-8")
    logger.info("report written to %s", out / INDEX)
    return out


def _check_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise RunDirError(f"--out {out} is a file; give a folder for the report")
    if out.is_dir() and any(out.iterdir()) and not (out / SUMMARY).is_file():
        raise RunDirError(
            f"--out {out} is a non-empty folder that is not a zapmulti report; a report replaces "
            "its folder whole, so choose an empty or new one"
        )


def _write_head_figures(folder: Path, head: HeadAnalysis, images: np.ndarray) -> None:
    if head.metrics["n"] == 0:
        return  # no labelled row: nothing to plot
    name = head.name
    _save(
        plot_confusion(head.confusion, head.classes, f"{name}: confusion"),
        folder / f"{name}_confusion.png",
    )
    _save(plot_reliability(head.reliability, name), folder / f"{name}_reliability.png")
    head.figures["confusion"] = f"{name}_confusion.png"
    head.figures["reliability"] = f"{name}_reliability.png"
    if head.top_losses:
        thumbs = [_thumbnail(t["path"], images[t["row"]]) for t in head.top_losses]
        fig = plot_top_losses(head.top_losses, thumbs, f"{name}: top losses")
        fig.savefig(folder / f"{name}_top_losses.png", format="png")
        head.figures["top_losses"] = f"{name}_top_losses.png"


def _plot_agreement(agreement: dict[str, Any], column: str) -> Figure:
    labels = [b for b in BUCKETS if b in agreement["confusion"]]
    computed = sorted(
        {c for row in agreement["confusion"].values() for c in row}, key=BUCKETS.index
    )
    order = [b for b in BUCKETS if b in set(labels) | set(computed)]
    idx = {b: i for i, b in enumerate(order)}
    cm = np.zeros((len(order), len(order)), dtype=np.int64)
    for truth, row in agreement["confusion"].items():
        for c, count in row.items():
            cm[idx[truth], idx[c]] = count
    fig = plot_confusion(cm, order, f"{column} bucket (rows) vs computed colour (columns)")
    return fig


def _write_colours(path: Path, table: pd.DataFrame, buckets: list[str], column: str | None) -> None:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["key", "path", "colour", *([column, "label_bucket"] if column else [])])
        labels = table[column].tolist() if column else [None] * len(buckets)
        for key, p, bucket, label in zip(table["key"], table["path"], buckets, labels, strict=True):
            extra = [label if label is not None else "", label_bucket(label) or ""]
            writer.writerow([key, p, bucket, *(extra if column else [])])


def _no_nan(obj: Any) -> Any:
    """NaN as null, so that the JSON parses outside Python too."""
    if isinstance(obj, dict):
        return {k: _no_nan(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_no_nan(v) for v in obj]
    if isinstance(obj, float) and math.isnan(obj):
        return None
    return obj


def _summary(heads: list[HeadAnalysis], meta: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"_meta": meta}
    for h in heads:
        out[h.name] = {
            "metrics": {**h.metrics, "ece": h.reliability["ece"], "rows": h.rows},
            "per_class": {
                c: {k: v[i].item() for k, v in h.per_class.items()} for i, c in enumerate(h.classes)
            },
            "most_confused": [list(p) for p in h.confused_pairs],
            "top_losses": h.top_losses,
            "figures": h.figures,
        }
    return out


def report_summary(folder: str | os.PathLike) -> str:
    """A plain-text digest of a written report: one line per head, then the colour bias."""
    folder = Path(folder)
    summary = json.loads((folder / SUMMARY).read_text(encoding="utf-8"))
    bias = json.loads((folder / COLOUR_BIAS).read_text(encoding="utf-8"))
    rows = []
    for name, head in summary.items():
        if name.startswith("_"):
            continue
        m = head["metrics"]
        rows.append(
            {
                "head": name,
                "n": m["n"],
                "accuracy": m["accuracy"],
                "error": m["error_rate"],
                "macro_f1": m["macro_f1"],
                "bal_acc": m["balanced_accuracy"],
                "top5": m.get("top5_accuracy", float("nan")),
                "ece": m["ece"],
            }
        )
    frame = pd.DataFrame(rows).astype({"n": int}).fillna(float("nan"))
    lines = [frame.to_string(index=False, float_format=lambda v: f"{v:.4f}", na_rep="-"), ""]
    overall = bias["overall"]
    lines.append(
        f"{bias['head']} error by colour (overall {_fmt(overall['error_rate'])}, n={overall['n']}):"
    )
    for r in bias["buckets"]:
        if not r["n"]:
            continue
        lean = f"  {r['lean']} {r['mistakes'][r['lean']]}" if r["lean"] else ""
        lines.append(
            f"  {r['bucket']:<16} n={r['n']:<5} error {_fmt(r['error_rate'])} "
            f"[{_fmt(r['ci'][0])}, {_fmt(r['ci'][1])}]{lean}"
        )
    worst = bias["worst"]
    if worst:
        lines.append(
            f"worst bucket of at least {bias['min_count']} rows: {worst['bucket']} "
            f"({worst['gap']:+.3f} against overall"
            f"{', outside its interval' if worst['outside_ci'] else ', inside its interval'})"
        )
    elif bias["buckets"]:
        lines.append(f"no bucket has the {bias['min_count']} labelled rows to be called the worst")
    agreement = bias.get("agreement")
    if agreement and agreement["n"]:
        lines.append(
            f"colour vs {bias['colour_column']}: agreement {agreement['agreement']:.3f} "
            f"(chance {agreement['chance']:.3f}, kappa {agreement['kappa']:.3f}, "
            f"n={agreement['n']})"
        )
    return "\n".join(lines)


# --------------------------------------------------------------------------- HTML

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; }
table { border-collapse: collapse; margin: .6em 0 1.2em; font-size: .9em; }
th, td { border: 1px solid #ddd; padding: .25em .6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { background: #f3f3f3; }
img { max-width: 100%; border: 1px solid #eee; margin: .3em 0; }
.figs { display: flex; flex-wrap: wrap; gap: 1em; align-items: flex-start; }
.note { color: #666; font-size: .9em; }
.warn { color: #a33; }
details { margin: .5em 0 1em; }
"""


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return "–" if math.isnan(value) else f"{value:.{digits}f}"
    return html.escape(str(value))


def _table(header: list[str], rows: list[list[Any]]) -> str:
    buf = io.StringIO()
    buf.write("<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>\n")
    for row in rows:
        buf.write("<tr>" + "".join(f"<td>{_fmt(v)}</td>" for v in row) + "</tr>\n")
    buf.write("</table>\n")
    return buf.getvalue()


def _img(name: str, alt: str) -> str:
    return f'<img src="{html.escape(name)}" alt="{html.escape(alt)}">'


def render_html(heads: list[HeadAnalysis], bias: dict[str, Any], meta: dict[str, Any]) -> str:
    """The report page; figures are referenced by file name, relative to the page."""
    e = html.escape
    parts = [
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>",
        f"<title>zapmulti report: {e(Path(meta['run']).name)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>zapmulti report: {e(Path(meta['run']).name)}</h1>",
        f"<p class='note'>run {e(meta['run'])}<br>data {e(str(meta['data_root']))} "
        f"({'validation split' if meta['split'] == 'valid' else 'whole catalogue'}), "
        f"{meta['rows']} image(s) scored",
    ]
    if meta["unreadable_images"]:
        parts.append(f", {meta['unreadable_images']} unreadable image(s) left out")
    if meta["heads_without_column"]:
        parts.append(
            f"; heads without a label column: {e(', '.join(meta['heads_without_column']))}"
        )
    parts.append("</p>")

    parts.append("<h2>Summary</h2>")
    rows = []
    for h in heads:
        m = h.metrics
        rows.append(
            [
                h.name,
                m["n"],
                h.missing,
                m["accuracy"],
                m["error_rate"],
                m["macro_f1"],
                m["balanced_accuracy"],
                m.get("top5_accuracy"),
                h.reliability["ece"],
            ]
        )
    parts.append(
        _table(
            [
                "head",
                "labelled",
                "no label",
                "accuracy",
                "error",
                "macro-F1",
                "balanced acc.",
                "top-5",
                "ECE",
            ],
            rows,
        )
    )
    parts.append(
        "<p class='note'>Top-5 accuracy is given for heads with more than 5 classes. Rows "
        "without a label for a head are left out of its figures.</p>"
    )
    parts.append(
        "<p><a href='#colour'>Colour bias</a> · "
        + " · ".join(f"<a href='#head-{e(h.name)}'>{e(h.name)}</a>" for h in heads)
        + "</p>"
    )
    for h in heads:
        parts.append(_head_html(h))
    parts.append(_colour_html(bias))
    parts.append("</body></html>\n")
    return "\n".join(parts)


def _head_html(h: HeadAnalysis) -> str:
    e = html.escape
    out = [f"<h2 id='head-{e(h.name)}'>{e(h.name)}</h2>"]
    n = h.metrics["n"]
    out.append(
        f"<p>{n} labelled row(s) of {h.rows}"
        + (f"; {h.missing} without a label are not scored" if h.missing else "")
        + f"; {len(h.classes)} classes.</p>"
    )
    if n == 0:
        out.append("<p class='warn'>No scored row has a label for this head: nothing to show.</p>")
        return "\n".join(out)
    figs = h.figures
    out.append("<div class='figs'>")
    if "confusion" in figs:
        out.append(_img(figs["confusion"], f"{h.name} confusion matrix"))
    if "reliability" in figs:
        out.append(_img(figs["reliability"], f"{h.name} reliability diagram"))
    out.append("</div>")

    out.append("<h3>Most confused pairs</h3>")
    if h.confused_pairs:
        out.append(_table(["true", "predicted", "rows"], [list(p) for p in h.confused_pairs]))
    else:
        out.append("<p class='note'>No mistakes.</p>")

    out.append("<details open><summary>Per-class precision, recall and support</summary>")
    pc = h.per_class
    order = np.argsort(-pc["support"], kind="stable")
    out.append(
        _table(
            ["class", "precision", "recall", "F1", "support", "predicted"],
            [
                [
                    h.classes[i],
                    float(pc["precision"][i]),
                    float(pc["recall"][i]),
                    float(pc["f1"][i]),
                    int(pc["support"][i]),
                    int(pc["predicted"][i]),
                ]
                for i in order
            ],
        )
    )
    out.append("</details>")
    if "top_losses" in figs:
        out.append("<h3>Top losses</h3>")
        out.append(
            "<p class='note'>The labelled images the model got most wrong (highest "
            "cross-entropy), with the predicted class's probability.</p>"
        )
        out.append(_img(figs["top_losses"], f"{h.name} top losses"))
    return "\n".join(out)


def _colour_html(bias: dict[str, Any]) -> str:
    e = html.escape
    head = bias["head"]
    out = ["<h2 id='colour'>Colour bias</h2>"]
    out.append(
        "<p class='note'>Each image's dominant colour is computed from its pixels, leaving out the "
        "plain catalogue background. Intervals are 95% Wilson score intervals. The figures are "
        f"also in {COLOUR_BIAS}, and every image's colour in {COLOURS}.</p>"
    )
    agreement = bias["agreement"]
    if agreement is not None and agreement["n"]:
        out.append(
            f"<p>Agreement of the computed colour with <b>{e(bias['colour_column'])}</b>: "
            f"<b>{agreement['agreement']:.3f}</b> over {agreement['n']} image(s) "
            f"(chance from the marginals {agreement['chance']:.3f}, commonest label alone "
            f"{agreement['majority']:.3f}, Cohen's kappa {agreement['kappa']:.3f}).</p>"
        )
        if agreement["unmapped"]:
            listing = ", ".join(f"{k} ({v})" for k, v in agreement["unmapped"].items())
            out.append(f"<p class='note'>Labels not mapped to a bucket: {e(listing)}.</p>")
    elif bias["colour_column"] is None:
        out.append("<p class='note'>The catalogue has no colour label column to compare with.</p>")

    overall = bias["overall"]
    out.append(
        f"<p><b>{e(head)}</b> error over {overall['n']} labelled image(s): "
        f"{_fmt(overall['error_rate'])} [{_fmt(overall['ci'][0])}, {_fmt(overall['ci'][1])}].</p>"
    )
    worst = bias["worst"]
    if worst is not None:
        lean = f"; its commonest mistake is {e(worst['lean'])}" if worst["lean"] else ""
        verdict = (
            "the overall error lies outside its interval"
            if worst["outside_ci"]
            else "the overall error lies inside its interval, so the gap may be chance"
        )
        out.append(
            f"<p>Worst bucket with at least {bias['min_count']} labelled images: "
            f"<b>{e(worst['bucket'])}</b>, error {worst['error_rate']:.3f} "
            f"({worst['gap']:+.3f} against overall, n={worst['n']}); {verdict}{lean}.</p>"
        )
    else:
        out.append(
            f"<p class='note'>No bucket has {bias['min_count']} labelled images: no worst "
            "bucket is named.</p>"
        )
    figs = bias.get("figures", {})
    out.append("<div class='figs'>")
    for key, alt in (("colour_bias", "error by colour"), ("colour_agreement", "colour agreement")):
        if key in figs:
            out.append(_img(figs[key], alt))
    out.append("</div>")
    rows = []
    for r in bias["buckets"]:
        mistakes = ", ".join(f"{k} {v}" for k, v in list(r["mistakes"].items())[:3])
        rows.append(
            [
                r["bucket"],
                r["images"],
                r["n"],
                r["errors"],
                r["error_rate"],
                r["ci"][0],
                r["ci"][1],
                r["gap"],
                mistakes or "–",
            ]
        )
    out.append(
        _table(
            [
                "colour",
                "images",
                "labelled",
                "errors",
                "error",
                "CI low",
                "CI high",
                "gap to overall",
                "mistakes (true→predicted)",
            ],
            rows,
        )
    )
    return "\n".join(out)
