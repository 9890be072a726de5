"""Per-head metrics of a trained run on its validation split or on another catalogue."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from zapmulti.artifacts import Run, load_run, write_json
from zapmulti.config import Config, HeadConfig, load_config, load_data_config, read_yaml
from zapmulti.data import image_cache, read_catalogue
from zapmulti.data.labels import build_targets, head_values, unknown_count
from zapmulti.data.splits import load_split
from zapmulti.errors import ConfigError
from zapmulti.metrics import head_metrics
from zapmulti.predict import predict_array

logger = logging.getLogger(__name__)


def _data_config(run: Run, data: str | os.PathLike | None) -> tuple[Config, bool]:
    """The config whose data to evaluate on, and whether that is the run's own catalogue."""
    if data is None:
        return run.config, True
    path = Path(data)
    if path.is_dir():
        cfg = run.config.model_copy(deep=True)
        cfg.data.root = str(path.resolve())
        return cfg, False
    cfg = run.config.model_copy(deep=True)
    cfg.data = load_data_config(path)
    if "heads" not in read_yaml(path):
        return cfg, False  # a data-only file: the run's heads, read from its columns
    other = load_config(path)
    by_name = {h.name: h for h in other.heads}
    missing = [h.name for h in run.config.heads if h.name not in by_name]
    if missing:
        logger.info("heads %s are not in %s; they are left out of the evaluation", missing, path)
    cfg.heads = [by_name.get(h.name, h) for h in run.config.heads]
    return cfg, False


@dataclass
class CataloguePredictions:
    """A run's predictions for the scored rows of a catalogue, with their targets and images."""

    config: Config  # the run's config, with the data section evaluated on
    table: pd.DataFrame  # the whole catalogue table
    rows: np.ndarray  # table rows scored: the split's (or all) rows whose image decodes
    heads: list[HeadConfig]  # classification heads whose column is in the catalogue
    targets: np.ndarray  # [len(rows), len(heads)], MISSING where a head has no label
    probs: dict[str, np.ndarray]  # head name -> [len(rows), classes] probabilities
    images: np.ndarray  # the preprocessed (N, H, W, 3) uint8 cache, indexed by table row
    own: bool  # True: the run's validation split; False: a whole other catalogue
    absent: list[str]  # heads whose column is not in the catalogue
    unreadable: int  # images in the catalogue that could not be decoded


def predict_catalogue(
    run: Run | str | os.PathLike,
    data: str | os.PathLike | None = None,
    batch_size: int = 128,
    device: str | None = None,
    show_progress: bool = True,
) -> CataloguePredictions:
    """Predict every classification head for the rows `evaluate` scores (see there for `data`)."""
    if not isinstance(run, Run):
        run = load_run(run)
    cfg, own = _data_config(run, data)
    table = read_catalogue(cfg.data, cfg.train.max_items if own else None, cfg.train.seed)
    rows = np.arange(len(table))
    if own:
        rows = np.flatnonzero(load_split(run.path / "split.csv", table["key"]))

    heads = [h for h in cfg.heads if h.column in table.columns and h.type == "classification"]
    absent = [h.name for h in cfg.heads if h.column not in table.columns]
    if not heads:
        raise ConfigError(
            f"none of the run's head columns {[h.column for h in cfg.heads]} is in the catalogue"
        )
    targets = build_targets(table, heads, run.vocabs)
    cache = image_cache(cfg, table, show_progress)
    rows = np.array([r for r in rows if r not in cache.bad], dtype=np.int64)
    probs = predict_array(run.model, cache.array, rows, batch_size, device, show_progress)
    order = {n: i for i, n in enumerate(run.head_names)}
    return CataloguePredictions(
        config=cfg,
        table=table,
        rows=rows,
        heads=heads,
        targets=targets[rows],
        probs={h.name: probs[order[h.name]] for h in heads},
        images=cache.array,
        own=own,
        absent=absent,
        unreadable=len(cache.bad),
    )


def evaluate(
    run: Run | str | os.PathLike,
    data: str | os.PathLike | None = None,
    batch_size: int = 128,
    device: str | None = None,
    show_progress: bool = True,
) -> dict[str, Any]:
    """Accuracy, error rate, macro-F1, balanced and top-5 accuracy (above 5 classes) per head.

    Args:
        run: a run directory or a loaded Run.
        data: None for the run's validation split; a folder (the run's data settings with
            another root) or a config YAML for a whole other catalogue.
    """
    if not isinstance(run, Run):
        run = load_run(run)
    pred = predict_catalogue(run, data, batch_size, device, show_progress)

    result: dict[str, Any] = {}
    for j, head in enumerate(pred.heads):
        values = head_values(pred.table.iloc[pred.rows], head)
        vocab = run.vocabs[head.name]
        stats = head_metrics(pred.targets[:, j], pred.probs[head.name])
        # Labels outside the stored vocabulary are scored as "other" where the head folds rare
        # classes; otherwise they cannot be scored, and are counted here instead.
        stats["unknown_labels"] = (
            0 if head.other_label in vocab and not head.classes else unknown_count(values, vocab)
        )
        result[head.name] = stats
    result["_meta"] = {
        "rows": int(len(pred.rows)),
        "unreadable_images": pred.unreadable,
        "data_root": pred.config.data.root,
        "split": "valid" if pred.own else "all",
        "heads_without_column": pred.absent,
    }
    return result


def metrics_table(result: dict[str, Any]) -> str:
    """A plain-text table, one line per head."""
    rows = []
    for name, stats in result.items():
        if name.startswith("_"):
            continue
        rows.append(
            {
                "head": name,
                "n": stats.get("n"),
                "accuracy": stats.get("accuracy"),
                "error": stats.get("error_rate"),
                "macro_f1": stats.get("macro_f1"),
                "top5": stats.get("top5_accuracy"),
                "unknown": stats.get("unknown_labels", 0),
            }
        )
    frame = pd.DataFrame(rows)
    return frame.to_string(index=False, float_format=lambda v: f"{v:.4f}", na_rep="-")


def save_evaluation(result: dict[str, Any], out: str | os.PathLike) -> None:
    write_json(out, result)
