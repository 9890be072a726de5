"""The cached-feature fast path: pooled backbone features extracted once, heads trained on them.

With the backbone frozen, a head only ever sees the pooled features of each image. Extracting
them once (cached beside the image cache) makes training a new head, or retraining one, a matter
of seconds instead of an epoch through the backbone.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from fastprogress.fastprogress import progress_bar

from zapmulti import artifacts
from zapmulti.artifacts import Run, check_run_out, load_run
from zapmulti.config import HeadConfig, config_from_dict, config_to_dict
from zapmulti.data.images import ImageCache, default_cache_dir
from zapmulti.data.labels import MISSING
from zapmulti.devices import resolve_device
from zapmulti.errors import ConfigError, RunDirError
from zapmulti.fileio import atomic_dir, atomic_path, atomic_write_text, exclusive
from zapmulti.metrics import head_metrics
from zapmulti.model.heads import Head, HeadSpec, create_head
from zapmulti.model.multitask import MultiTaskModel, for_inference

logger = logging.getLogger(__name__)


@torch.inference_mode()
def extract_features(
    model: MultiTaskModel,
    images: np.ndarray,
    rows: np.ndarray | None = None,
    batch_size: int = 256,
    device: str | torch.device | None = None,
    show_progress: bool = True,
) -> np.ndarray:
    """Pooled backbone features [len(rows), F] (float32) of rows of a uint8 image array."""
    device = resolve_device(device)
    rows = np.arange(len(images)) if rows is None else np.asarray(rows)
    model = for_inference(model, device)
    out = np.zeros((len(rows), model.in_features), dtype=np.float32)
    starts = range(0, len(rows), batch_size)
    for start in progress_bar(starts, leave=False) if show_progress else starts:
        idx = rows[start : start + batch_size]
        x = torch.from_numpy(np.ascontiguousarray(images[idx])).permute(0, 3, 1, 2).to(device)
        out[start : start + len(idx)] = model.features(x).float().cpu().numpy()
    return out


def weights_key(model: torch.nn.Module) -> str:
    """A short hash of the backbone weights, so features of other weights are never reused."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        if name.startswith("body."):
            h.update(name.encode())
            h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def cached_features(
    model: MultiTaskModel,
    cache: ImageCache,
    cache_dir: str | os.PathLike | None = None,
    batch_size: int = 256,
    device: str | torch.device | None = None,
    show_progress: bool = True,
) -> np.ndarray:
    """Features of every image of `cache`, memory-mapped, keyed by images and backbone weights."""
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    key = f"{cache.path.stem}-{weights_key(model)}"
    data_path, meta_path = cache_dir / f"features-{key}.f32", cache_dir / f"features-{key}.json"
    shape = (len(cache), model.in_features)
    fresh = data_path.exists() and meta_path.exists()
    if fresh and json.loads(meta_path.read_text()).get("shape") == list(shape):
        logger.info("feature cache hit: %s", data_path)
        return np.memmap(data_path, dtype=np.float32, mode="r", shape=shape)
    feats = extract_features(model, cache.array, None, batch_size, device, show_progress)
    with atomic_path(data_path) as tmp:
        feats.tofile(tmp)
    atomic_write_text(meta_path, json.dumps({"shape": list(shape)}))
    return np.memmap(data_path, dtype=np.float32, mode="r", shape=shape)


def fit_head(
    head: Head,
    features: np.ndarray,
    target: np.ndarray,
    rows: np.ndarray,
    epochs: int = 10,
    lr: float = 1e-2,
    batch_size: int = 256,
    weight_decay: float = 0.01,
    seed: int = 0,
    dropout: bool = False,
) -> list[float]:
    """Train one head on cached features; see `fit_heads`. Returns the mean loss of each epoch."""
    return fit_heads(
        [head], features, target[:, None], rows, epochs, lr, batch_size, weight_decay, seed, dropout
    )


def fit_heads(
    heads: Sequence[Head],
    features: np.ndarray,
    targets: np.ndarray,
    rows: np.ndarray,
    epochs: int = 10,
    lr: float = 1e-2,
    batch_size: int = 256,
    weight_decay: float = 0.01,
    seed: int = 0,
    dropout: bool = False,
) -> list[float]:
    """Train several heads at once on cached features, with AdamW and a one-cycle schedule.

    `targets` is [N, len(heads)] (MISSING where a row has no label for a head); as in full
    training, a missing label only silences its head for that row, and the summed loss is each
    head's loss times its spec weight. All heads share one pass over the rows: each step gathers
    one batch of features and every head reads it. Rows without any label are left out.
    Returns the mean summed loss of each epoch.

    The heads' dropout is off unless `dropout`: on a CPU, drawing a dropout mask over a batch of
    1,280 features costs several times the linear head itself (about 2.8 ms against 0.4 ms per
    head and step of 256 rows, measured on 2 cores), and on the fashion sample it changed no
    head's validation accuracy by more than noise (benchmarks/features_fastpath.py, --dropout).
    The defaults (10 epochs of one-cycle AdamW) reach the accuracy of 40 epochs within about a
    point there; the benchmark prints both.
    """
    targets = np.asarray(targets)
    if targets.ndim != 2 or targets.shape[1] != len(heads):
        raise ValueError(f"targets must be [rows, {len(heads)}], got {targets.shape}")
    rows = np.asarray(rows)
    for j, head in enumerate(heads):
        if not (targets[rows, j] != MISSING).any():
            raise ConfigError(f"head {head.spec.name!r} has no labelled training row")
    rows = rows[(targets[rows] != MISSING).any(axis=1)]
    gen = torch.Generator().manual_seed(seed)
    x_all = torch.from_numpy(np.ascontiguousarray(features[rows], dtype=np.float32))
    y_all = torch.from_numpy(np.ascontiguousarray(targets[rows]))
    weights = [float(h.spec.weight) for h in heads]
    params = [p for h in heads for p in h.parameters()]
    steps = max(1, (len(rows) + batch_size - 1) // batch_size)
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * steps)
    for head in heads:
        head.train(dropout)
    history: list[float] = []
    # Linear heads on a few thousand rows are tiny work: torch's thread pool costs more than it
    # saves there, and badly so when another process holds the other cores.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        n = len(x_all)
        for _ in range(epochs):
            order = torch.randperm(n, generator=gen)
            x_epoch, y_epoch = x_all[order], y_all[order]  # one gather per epoch, then slices
            total = 0.0
            for start in range(0, n, batch_size):
                x, y = x_epoch[start : start + batch_size], y_epoch[start : start + batch_size]
                pairs = enumerate(zip(heads, weights, strict=True))
                loss = sum(w * h.loss(h(x), y[:, j]) for j, (h, w) in pairs)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                total += float(loss.detach()) * len(x)
            if not math.isfinite(total):
                raise ConfigError(
                    f"training the heads diverged: the loss was {total:g} in epoch "
                    f"{len(history) + 1}; lower --lr (was {lr:g}) and try again"
                )
            history.append(total / n)
    finally:
        torch.set_num_threads(threads)
    for head in heads:
        head.eval()
    return history


@torch.inference_mode()
def head_probs(head: Head, features: np.ndarray, rows: np.ndarray) -> np.ndarray:
    head.eval()
    logits = head(torch.from_numpy(np.ascontiguousarray(features[rows])))
    return torch.softmax(logits.float(), dim=-1).numpy()


def replacement_head(
    run: Run | str | os.PathLike,
    name: str,
    column: str | None = None,
    min_count: int | None = None,
) -> HeadConfig:
    """The config of a run's head `name` with only the given settings changed, for --replace.

    Everything else of the head (type, classes, map, weight, class weights, options such as an
    embedding's dim and loss) is kept, so retraining a head does not quietly turn it into another.
    """
    run = run if isinstance(run, Run) else load_run(run)
    old = next((h for h in run.config.heads if h.name == name), None)
    if old is None:
        raise ConfigError(
            f"{run.path} has no head named {name!r} to replace (its heads are "
            f"{[h.name for h in run.config.heads]}); drop --replace to add it as a new head"
        )
    changes = {k: v for k, v in {"column": column, "min_count": min_count}.items() if v is not None}
    return old.model_copy(update=changes)


def add_head(
    run_dir: str | os.PathLike,
    head: HeadConfig,
    out: str | os.PathLike,
    epochs: int = 10,
    lr: float = 1e-2,
    overwrite: bool = False,
    show_progress: bool = True,
    replace: bool = False,
) -> Path:
    """A new run: `run_dir`'s model unchanged plus one head trained on cached features.

    The new head trains on the run's own training split and is scored on its validation split;
    the backbone and the other heads keep their weights exactly. With `replace`, the head of the
    same name is retrained from scratch on cached features, in its place among the heads, with
    the settings of `head` (see `replacement_head` to change only some of them).
    """
    try:
        with exclusive(out, "run directory"):  # the lock `train` takes on the same folder
            return _add_head(run_dir, head, out, epochs, lr, overwrite, show_progress, replace)
    except BlockingIOError as e:
        raise RunDirError(str(e)) from None


def _add_head(
    run_dir: str | os.PathLike,
    head: HeadConfig,
    out: str | os.PathLike,
    epochs: int,
    lr: float,
    overwrite: bool,
    show_progress: bool,
    replace: bool,
) -> Path:
    from zapmulti.train import prepare_data

    out = Path(out).resolve()
    check_run_out(out, overwrite, "pass --overwrite to replace it or choose another --out")
    run = load_run(run_dir)
    if head.name in run.vocabs and not replace:
        raise ConfigError(
            f"{run_dir} already has a head named {head.name!r}: choose another name, or pass "
            "--replace to retrain it on cached features"
        )
    if replace and head.name not in run.vocabs:
        replacement_head(run, head.name)  # raises, naming the run's heads
    raw = config_to_dict(run.config)
    names = [h["name"] for h in raw["heads"]]
    entry = head.model_dump(mode="json")
    if replace:
        raw["heads"][names.index(head.name)] = entry
    else:
        raw["heads"].append(entry)
    action = "retrained head" if replace else "new head"
    config = config_from_dict(raw, source=f"{run_dir}/config.yaml + {action} {head.name!r}")

    prepared = prepare_data(config, run.path / artifacts.SPLIT, show_progress=show_progress)
    # existing heads keep their stored classes; the new one takes this data's
    vocabs = {**prepared.vocabs, **{n: v for n, v in run.vocabs.items() if n != head.name}}
    column = [h.name for h in config.heads].index(head.name)
    new_spec = prepared.specs[column]
    features = cached_features(
        run.model, prepared.cache, config.cache_dir, show_progress=show_progress
    )
    # Seeded initial weights as well as a seeded shuffle: the same command gives the same head.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.train.seed)
        new_head = create_head(new_spec, run.model.in_features, config.model.dropout)
    target = prepared.targets[:, column]
    losses = fit_head(
        new_head, features, target, prepared.rows(valid=False), epochs, lr, seed=config.train.seed
    )

    old_specs = {s.name: s for s in run.model.specs}
    specs = [new_spec if h.name == head.name else old_specs[h.name] for h in config.heads]
    model = MultiTaskModel(run.model.body, run.model.in_features, specs, config.model.dropout)
    for spec in specs:
        source = new_head if spec.name == head.name else run.model.heads[spec.name]
        model.heads[spec.name].load_state_dict(source.state_dict())

    valid = prepared.rows(valid=True)
    metrics = json.loads((run.path / artifacts.METRICS).read_text())
    if new_spec.type == "classification":
        metrics[head.name] = head_metrics(target[valid], head_probs(new_head, features, valid))
    else:  # an embedding has no accuracy: score it with `zapmulti index evaluate`
        metrics[head.name] = {"final_training_loss": losses[-1]}
    metrics[head.name]["trained_on"] = "cached features"

    with atomic_dir(out) as tmp:
        shutil.copy2(run.path / artifacts.SPLIT, tmp / artifacts.SPLIT)
        for name in (artifacts.HISTORY, artifacts.LR_PLOT, artifacts.SKIPPED):
            if (run.path / name).exists():
                shutil.copy2(run.path / name, tmp / name)
        artifacts.save_run_metadata(tmp, config, [_with_vocab(s, vocabs) for s in specs])
        artifacts.save_weights(model, tmp / artifacts.WEIGHTS)
        artifacts.write_json(tmp / artifacts.METRICS, metrics)
        artifacts.write_json(tmp / f"head_{head.name}_losses.json", losses)
    logger.info("%s %s of %s written as %s", action, head.name, run.path, out)
    return out


def _with_vocab(spec: HeadSpec, vocabs: dict[str, list[str]]) -> HeadSpec:
    return HeadSpec(
        spec.name, vocabs[spec.name], spec.type, spec.weight, spec.class_weights, spec.options
    )


__all__ = [
    "extract_features",
    "cached_features",
    "fit_head",
    "fit_heads",
    "add_head",
    "replacement_head",
    "Run",
]
