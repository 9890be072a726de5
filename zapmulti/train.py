"""Training: the fastai Learner, lr_find, frozen then unfrozen one-cycle, checkpoints and resume."""

from __future__ import annotations

import contextlib
import logging
import math
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fastai.callback.progress  # noqa: F401 - registers the progress bars and epoch table
import fastai.callback.schedule  # noqa: F401 - adds lr_find and fit_one_cycle to Learner
import numpy as np
import pandas as pd
import torch
from fastai.callback.core import Callback
from fastai.learner import Learner, Metric
from fastai.torch_core import set_seed

from zapmulti import artifacts
from zapmulti.config import Config
from zapmulti.data import image_cache, read_catalogue
from zapmulti.data.images import ImageCache
from zapmulti.data.labels import MISSING, build_targets, build_vocabs, class_weights
from zapmulti.data.loaders import make_dataloaders
from zapmulti.data.splits import grouped_split, load_split, save_split
from zapmulti.devices import resolve_device
from zapmulti.errors import DataError, RunDirError
from zapmulti.fileio import atomic_path, exclusive
from zapmulti.metrics import confusion_matrix, head_metrics, macro_f1
from zapmulti.model.heads import HeadSpec
from zapmulti.model.multitask import MultiTaskLoss, MultiTaskModel, build_model

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------- data


@dataclass
class PreparedData:
    """Everything training and evaluation need from the catalogue."""

    table: pd.DataFrame
    targets: np.ndarray  # [N, H], MISSING where a head has no label
    vocabs: dict[str, list[str]]
    specs: list[HeadSpec]
    is_valid: np.ndarray
    cache: ImageCache
    skipped: dict[int, str]

    def rows(self, valid: bool) -> np.ndarray:
        ok = np.ones(len(self.table), dtype=bool)
        ok[list(self.skipped)] = False
        return np.flatnonzero(ok & (self.is_valid == valid))


def prepare_data(
    config: Config,
    split_file: Path | None = None,
    vocabs: dict[str, list[str]] | None = None,
    show_progress: bool = True,
) -> PreparedData:
    """Read the catalogue, split it by product, build vocabularies, targets and the image cache."""
    table = read_catalogue(config.data, config.train.max_items, config.train.seed)
    if table.empty:
        raise DataError(f"the catalogue under {config.data.root} has no usable image")

    split_file = split_file or (Path(config.split.file) if config.split.file else None)
    if split_file is not None:
        is_valid = load_split(split_file, table["key"])
    else:
        is_valid = grouped_split(table["group"], config.split.valid_pct, config.split.seed)

    vocabs = vocabs or build_vocabs(table[~is_valid], config.heads)
    targets = build_targets(table, config.heads, vocabs)
    weights = {
        h.name: _as_list(class_weights(targets[~is_valid, i], vocabs[h.name], h.class_weights))
        for i, h in enumerate(config.heads)
    }
    specs = [
        HeadSpec(h.name, vocabs[h.name], h.type, h.weight, weights[h.name], dict(h.options))
        for h in config.heads
    ]

    cache = image_cache(config, table, show_progress)
    if cache.bad and config.train.bad_images == "stop":
        first = sorted(cache.bad.items())[:5]
        listing = "\n".join(f"  {table['path'].iloc[i]}: {why}" for i, why in first)
        raise DataError(
            f"{len(cache.bad)} image(s) cannot be decoded (train.bad_images is 'stop'):\n"
            f"{listing}\nfix or remove them, or set train.bad_images: skip"
        )
    if cache.bad:
        logger.warning("skipping %d undecodable image(s)", len(cache.bad))
    return PreparedData(table, targets, vocabs, specs, is_valid, cache, dict(cache.bad))


def _as_list(arr: np.ndarray | None) -> list[float] | None:
    return None if arr is None else [float(x) for x in arr]


# --------------------------------------------------------------------------- metrics


class HeadMetric(Metric):
    """Error rate or macro-F1 of one head over the rows labelled for it, shown each epoch."""

    def __init__(self, index: int, head: str, n_classes: int, kind: str = "err") -> None:
        self.index, self.head, self.n_classes, self.kind = index, head, n_classes, kind
        self.reset()

    def reset(self) -> None:
        self.cm = np.zeros((self.n_classes, self.n_classes), dtype=np.int64)

    def accumulate(self, learn: Learner) -> None:
        pred = learn.pred[self.index].argmax(-1).cpu().numpy()
        target = learn.y[:, self.index].cpu().numpy()
        self.cm += confusion_matrix(target, pred, self.n_classes)

    @property
    def value(self) -> float | None:
        total = self.cm.sum()
        if total == 0:
            return None
        if self.kind == "err":
            return 1.0 - np.trace(self.cm) / total
        return macro_f1(self.cm)

    @property
    def name(self) -> str:
        return f"{self.head}_{self.kind}"


def head_metric_list(specs: list[HeadSpec]) -> list[Metric]:
    out: list[Metric] = []
    for i, s in enumerate(specs):
        if s.type == "classification":
            out += [
                HeadMetric(i, s.name, len(s.classes), "err"),
                HeadMetric(i, s.name, len(s.classes), "f1"),
            ]
    return out


# --------------------------------------------------------------------------- checkpoints


class StopOnNonFiniteLoss(Callback):
    """Stop training, with a message, after an epoch whose training loss is NaN or infinite.

    Checked once per epoch from the recorder's loss, so the training step gains no device sync.
    It runs before EpochCheckpoint, so the checkpoint stays at the last good epoch and no
    finished run is written from a diverged one.
    """

    order = 60  # after Recorder (50) has the epoch's losses, before EpochCheckpoint (70)

    def after_epoch(self) -> None:
        names = list(self.recorder.metric_names)
        if "train_loss" not in names:
            return
        loss = self.recorder.log[names.index("train_loss")]
        if isinstance(loss, float) and not math.isfinite(loss):
            lrs = sorted({float(h["lr"]) for h in self.opt.hypers})
            raise DataError(
                f"training diverged: the loss was {loss:g} in epoch {self.epoch + 1} (learning "
                f"rate up to {lrs[-1]:.3g}); lower train.lr (or set it to null for the "
                "learning-rate finder) and train again"
            )


class EpochCheckpoint(Callback):
    """After every epoch: append to history.csv and write a resumable checkpoint, atomically."""

    order = 70  # after Recorder has the epoch's losses and metrics

    def __init__(
        self, run_dir: Path, stage: str, history: list[dict], base: dict[str, Any], start: int = 0
    ) -> None:
        self.run_dir, self.stage, self.history, self.base = run_dir, stage, history, base
        self.start = start

    def after_epoch(self) -> None:
        if self.epoch < self.start:  # fastai's SkipToEpoch still fires after_epoch on a resume
            return
        names = list(self.recorder.metric_names)[1:-1]  # drop 'epoch' and 'time'
        values = list(self.recorder.log)[1 : 1 + len(names)]
        row = {"stage": self.stage, "epoch": self.epoch}
        row.update({n: _num(v) for n, v in zip(names, values, strict=False)})
        self.history.append(row)
        state = {**self.base, "stage": self.stage, "stage_epochs_done": self.epoch + 1}
        state["history"] = list(self.history)
        artifacts.save_checkpoint(self.run_dir / artifacts.CHECKPOINT, self.model, self.opt, state)
        write_history(self.run_dir, self.history)


def _num(value: Any) -> Any:
    try:
        return float(value)
    except (TypeError, ValueError):
        return value


def write_history(run_dir: Path, history: list[dict]) -> None:
    with atomic_path(run_dir / artifacts.HISTORY) as tmp:
        frame = pd.DataFrame(history)
        frame.insert(0, "global_epoch", range(len(frame)))
        frame.to_csv(tmp, index=False)


# --------------------------------------------------------------------------- learner


def make_learner(config: Config, prepared: PreparedData, model: MultiTaskModel, run_dir: Path):
    device = resolve_device(config.train.device)
    balance, head = None, config.sampler_head
    if config.train.sampler == "m_per_class" and head is not None:
        column = [h.name for h in config.heads].index(head)
        balance = (column, config.train.m_per_class)
    dls = make_dataloaders(
        prepared.cache.array,
        prepared.targets,
        prepared.rows(valid=False),
        prepared.rows(valid=True),
        config.train.batch_size,
        config.train.flip,
        device,
        config.train.seed,
        balance,
        f"head {head!r}",
    )
    learn = Learner(
        dls,
        model,
        loss_func=MultiTaskLoss(model.heads, prepared.specs),
        metrics=head_metric_list(prepared.specs),
        splitter=lambda m: m.param_groups(),
        wd=config.train.weight_decay,
        path=run_dir,
        model_dir=".",
        cbs=[StopOnNonFiniteLoss()],
    )
    if device.type == "cuda":
        if config.model.channels_last:
            learn.to_channelslast(use_amp=config.train.mixed_precision)
        elif config.train.mixed_precision:
            learn.to_fp16()
    # On CPU: fp32 only. Half precision crashes or crawls there, and bf16 is slower than fp32 on
    # the CPUs this was measured on.
    return learn


def find_lr(learn: Learner, config: Config, run_dir: Path) -> float:
    """Run fastai's lr_find, save its plot and return a finite suggestion (or the fallback)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from fastai.callback.schedule import minimum, slide, steep, valley

    learn.freeze()
    funcs = {"valley": valley, "minimum": minimum, "steep": steep, "slide": slide}
    try:
        suggestion = learn.lr_find(
            num_it=config.train.lr_find_iters,
            suggest_funcs=(funcs[config.train.lr_suggest],),
            show_plot=True,
        )
        lr = float(getattr(suggestion, config.train.lr_suggest))
    except (IndexError, RuntimeError, ValueError) as exc:
        # fastai's suggestion functions fail on short or diverging curves
        logger.warning("lr_find could not suggest a rate (%s)", exc)
        lr = float("nan")
    fig = plt.gcf()
    with atomic_path(run_dir / artifacts.LR_PLOT) as tmp:
        fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    if not math.isfinite(lr) or lr <= 0:
        warnings.warn(
            f"lr_find gave no finite {config.train.lr_suggest} suggestion; training with "
            f"train.lr_fallback={config.train.lr_fallback:g}. Look at {artifacts.LR_PLOT} and set "
            "train.lr to choose a rate yourself.",
            stacklevel=2,
        )
        lr = config.train.lr_fallback
    logger.info("learning rate (lr_find %s): %.3g", config.train.lr_suggest, lr)
    return lr


# --------------------------------------------------------------------------- train


def train(
    config: Config,
    out: str | Path,
    overwrite: bool = False,
    show_progress: bool = True,
) -> Path:
    """Train every head the config declares; write a complete run directory and return its path."""
    with _locked(out):
        return _train(config, out, overwrite, show_progress)


@contextlib.contextmanager
def _locked(run_dir: str | Path) -> Iterator[None]:
    """One training process per run directory: a second one fails at once instead of mixing."""
    try:
        with exclusive(run_dir, "run directory"):
            yield
    except BlockingIOError as e:
        raise RunDirError(str(e)) from None


def _train(config: Config, out: str | Path, overwrite: bool, show_progress: bool) -> Path:
    # Until setup succeeds, a failure leaves the folder as it was (an old run comes back), so
    # fixing the config and running the same command again works without --overwrite.
    with artifacts.replacing_run(out, overwrite) as run_dir:
        set_seed(config.train.seed, reproducible=False)
        prepared = prepare_data(config, show_progress=show_progress)

        save_split(prepared.table["key"], prepared.is_valid, run_dir / artifacts.SPLIT)
        artifacts.save_run_metadata(run_dir, config, prepared.specs)
        _write_skipped(run_dir, prepared)

        model = build_model(
            config.model.backbone, config.model.weights, prepared.specs, config.model.dropout
        )
        learn = make_learner(config, prepared, model, run_dir)
        if not show_progress:
            _quiet(learn)
        lr = config.train.lr
        if lr is None and config.train.lr_find:
            lr = find_lr(learn, config, run_dir)
        elif lr is None:
            lr = config.train.lr_fallback
    state = {"lr": lr}
    return _fit_stages(learn, config, prepared, run_dir, state, history=[])


def resume(run_dir: str | Path, show_progress: bool = True) -> Path:
    """Continue an interrupted training from its last completed epoch."""
    with _locked(run_dir):
        return _resume(Path(run_dir), show_progress)


def _resume(run_dir: Path, show_progress: bool) -> Path:
    config = artifacts.read_run_config(run_dir)
    ckpt = artifacts.load_checkpoint(run_dir / artifacts.CHECKPOINT)
    vocabs = artifacts._read_json(run_dir / artifacts.VOCAB)
    set_seed(config.train.seed + len(ckpt["state"]["history"]), reproducible=False)
    prepared = prepare_data(config, run_dir / artifacts.SPLIT, vocabs, show_progress)
    model = build_model(config.model.backbone, "none", prepared.specs, config.model.dropout)
    model.load_state_dict(ckpt["model"])
    learn = make_learner(config, prepared, model, run_dir)
    if not show_progress:
        _quiet(learn)
    state = dict(ckpt["state"])
    history = list(state.pop("history"))
    stage, done = _next_step(config, state.pop("stage"), state.pop("stage_epochs_done"))
    learn.create_opt()
    if stage == "frozen":
        learn.freeze()
    else:
        learn.unfreeze()
    if "opt" in ckpt and done > 0:  # mid-stage: the optimizer's moments carry on
        from fastcore.foundation import L

        opt_state = ckpt["opt"]
        learn.opt.load_state_dict({"state": opt_state["state"], "hypers": L(opt_state["hypers"])})
    logger.info("resuming %s: %s stage, %d epoch(s) done", run_dir, stage, done)
    return _fit_stages(learn, config, prepared, run_dir, state, history, stage, done)


def _next_step(config: Config, stage: str, done: int) -> tuple[str, int]:
    if stage == "frozen" and done >= config.train.frozen_epochs:
        return "unfrozen", 0
    return stage, done


def _fit_stages(
    learn: Learner,
    config: Config,
    prepared: PreparedData,
    run_dir: Path,
    state: dict[str, Any],
    history: list[dict],
    stage: str = "frozen",
    done: int = 0,
) -> Path:
    """Frozen then unfrozen one-cycle, starting at (stage, epochs already done in it)."""
    lr = float(state["lr"])
    t0 = time.time()
    stage, done = _next_step(config, stage, done)
    if stage == "frozen":
        learn.freeze()
        cb = EpochCheckpoint(run_dir, "frozen", history, state, start=done)
        learn.fit_one_cycle(config.train.frozen_epochs, lr, start_epoch=done, cbs=[cb])
        stage, done = "unfrozen", 0
    if done < config.train.unfrozen_epochs:
        learn.unfreeze()
        # fastai's fine_tune recipe: halve the rate, spread it over the groups by lr_mult.
        base = lr / 2
        cb = EpochCheckpoint(run_dir, "unfrozen", history, state, start=done)
        learn.fit_one_cycle(
            config.train.unfrozen_epochs,
            slice(base / config.train.lr_mult, base),
            start_epoch=done,
            cbs=[cb],
        )
    logger.info("training took %.1fs", time.time() - t0)

    artifacts.save_weights(learn.model, run_dir / artifacts.WEIGHTS)
    metrics = evaluate_learner(learn, prepared)
    metrics["_meta"] = {
        "lr": lr,
        "train_rows": int(len(prepared.rows(False))),
        "valid_rows": int(len(prepared.rows(True))),
        "skipped_images": len(prepared.skipped),
        "device": str(learn.dls.device),
    }
    artifacts.write_json(run_dir / artifacts.METRICS, metrics)
    write_history(run_dir, history)
    # The finished weights supersede the resume checkpoint (model plus optimizer, 3x the size).
    (run_dir / artifacts.CHECKPOINT).unlink(missing_ok=True)
    return run_dir


def evaluate_learner(learn: Learner, prepared: PreparedData) -> dict[str, Any]:
    """Per-head metrics on the validation rows with the learner's current weights."""
    probs, targets = learn.get_preds(ds_idx=1)
    if isinstance(probs, torch.Tensor):  # fastai unwraps a one-head tuple
        probs = (probs,)
    targets = targets.numpy()
    out: dict[str, Any] = {}
    for i, spec in enumerate(prepared.specs):
        if spec.type != "classification":
            continue
        out[spec.name] = head_metrics(targets[:, i], probs[i].float().numpy())
    return out


def _write_skipped(run_dir: Path, prepared: PreparedData) -> None:
    rows = [
        {"path": prepared.table["path"].iloc[i], "reason": why}
        for i, why in sorted(prepared.skipped.items())
    ]
    with atomic_path(run_dir / artifacts.SKIPPED) as tmp:
        pd.DataFrame(rows, columns=["path", "reason"]).to_csv(tmp, index=False)


def _quiet(learn: Learner) -> None:
    from fastai.callback.progress import ProgressCallback

    learn.remove_cb(ProgressCallback)

    def log_epoch(values: list) -> None:
        # Without the progress table each epoch is still one log line, e.g. for a log file.
        names = list(learn.recorder.metric_names)
        pairs = [f"{n}={_fmt(v)}" for n, v in zip(names, values, strict=False) if n != "epoch"]
        checkpoint = next((cb for cb in learn.cbs if isinstance(cb, EpochCheckpoint)), None)
        if checkpoint is not None and learn.epoch < checkpoint.start:
            return  # an epoch a resume skipped: it was logged before the interruption
        stage = checkpoint.stage if checkpoint is not None else ""
        logger.info("%s epoch %d/%d: %s", stage, learn.epoch + 1, learn.n_epoch, " ".join(pairs))

    learn.logger = log_epoch


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


__all__ = ["train", "resume", "prepare_data", "MISSING"]
