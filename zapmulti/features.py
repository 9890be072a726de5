"""The cached-feature fast path: pooled backbone features extracted once, heads trained on them.

With the backbone frozen, a head only ever sees the pooled features of each image. Extracting
them once (cached beside the image cache) makes training a new head, or retraining one, a matter
of seconds instead of an epoch through the backbone.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import torch
from fastprogress.fastprogress import progress_bar

from zapmulti import artifacts
from zapmulti.artifacts import Run, load_run
from zapmulti.config import HeadConfig, config_from_dict, config_to_dict
from zapmulti.data.images import ImageCache, default_cache_dir
from zapmulti.data.labels import MISSING
from zapmulti.errors import ConfigError
from zapmulti.fileio import atomic_dir, atomic_path, atomic_write_text
from zapmulti.metrics import head_metrics
from zapmulti.model.heads import Head, HeadSpec, create_head
from zapmulti.model.multitask import MultiTaskModel

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
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    rows = np.arange(len(images)) if rows is None else np.asarray(rows)
    model.eval().to(device)
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
    epochs: int = 40,
    lr: float = 1e-2,
    batch_size: int = 1024,
    weight_decay: float = 0.01,
    seed: int = 0,
) -> list[float]:
    """Train one head on cached features with AdamW and a one-cycle schedule.

    Only `rows` whose target is not MISSING are used. Returns the mean loss of each epoch.
    """
    rows = np.asarray(rows)
    rows = rows[target[rows] != MISSING]
    if len(rows) == 0:
        raise ConfigError(f"head {head.spec.name!r} has no labelled training row")
    gen = torch.Generator().manual_seed(seed)
    x_all = torch.from_numpy(np.ascontiguousarray(features[rows]))
    y_all = torch.from_numpy(target[rows])
    steps = max(1, (len(rows) + batch_size - 1) // batch_size)
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * steps)
    head.train()
    history = []
    # A linear head on a few thousand rows is tiny work: torch's thread pool costs more than it
    # saves there, and badly so when another process holds the other cores.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _epochs(head, x_all, y_all, gen, epochs, batch_size, opt, sched, history)
    finally:
        torch.set_num_threads(threads)
    head.eval()
    return history


def _epochs(head, x_all, y_all, gen, epochs, batch_size, opt, sched, history) -> None:
    n = len(x_all)
    for _ in range(epochs):
        order = torch.randperm(n, generator=gen)
        total = torch.zeros(())
        for start in range(0, n, batch_size):
            idx = order[start : start + batch_size]
            loss = head.loss(head(x_all[idx]), y_all[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += loss.detach() * len(idx)
        history.append(float(total) / n)


@torch.inference_mode()
def head_probs(head: Head, features: np.ndarray, rows: np.ndarray) -> np.ndarray:
    head.eval()
    logits = head(torch.from_numpy(np.ascontiguousarray(features[rows])))
    return torch.softmax(logits.float(), dim=-1).numpy()


def add_head(
    run_dir: str | os.PathLike,
    head: HeadConfig,
    out: str | os.PathLike,
    epochs: int = 40,
    lr: float = 1e-2,
    overwrite: bool = False,
    show_progress: bool = True,
) -> Path:
    """A new run: `run_dir`'s model unchanged plus one head trained on cached features.

    The new head trains on the run's own training split and is scored on its validation split;
    the backbone and the other heads keep their weights exactly.
    """
    from zapmulti.train import prepare_data

    run = load_run(run_dir)
    if head.name in run.vocabs:
        raise ConfigError(f"{run_dir} already has a head named {head.name!r}: choose another name")
    raw = config_to_dict(run.config)
    raw["heads"].append(head.model_dump(mode="json"))
    config = config_from_dict(raw, source=f"{run_dir}/config.yaml + new head {head.name!r}")

    prepared = prepare_data(config, run.path / artifacts.SPLIT, show_progress=show_progress)
    vocabs = {**prepared.vocabs, **run.vocabs}  # existing heads keep their stored classes
    new_spec = next(s for s in prepared.specs if s.name == head.name)
    features = cached_features(
        run.model, prepared.cache, config.cache_dir, show_progress=show_progress
    )
    new_head = create_head(new_spec, run.model.in_features, config.model.dropout)
    column = len(config.heads) - 1
    target = prepared.targets[:, column]
    losses = fit_head(
        new_head, features, target, prepared.rows(valid=False), epochs, lr, seed=config.train.seed
    )

    specs = [*run.model.specs, new_spec]
    model = MultiTaskModel(run.model.body, run.model.in_features, specs, config.model.dropout)
    for spec in run.model.specs:
        model.heads[spec.name].load_state_dict(run.model.heads[spec.name].state_dict())
    model.heads[head.name].load_state_dict(new_head.state_dict())

    valid = prepared.rows(valid=True)
    metrics = json.loads((run.path / artifacts.METRICS).read_text())
    metrics[head.name] = head_metrics(target[valid], head_probs(new_head, features, valid))
    metrics[head.name]["trained_on"] = "cached features"

    out = Path(out)
    if out.exists() and not overwrite:
        artifacts.prepare_run_dir(out, overwrite=False)  # raises with the usual message
    with atomic_dir(out) as tmp:
        shutil.copy2(run.path / artifacts.SPLIT, tmp / artifacts.SPLIT)
        for name in (artifacts.HISTORY, artifacts.LR_PLOT, artifacts.SKIPPED):
            if (run.path / name).exists():
                shutil.copy2(run.path / name, tmp / name)
        artifacts.save_run_metadata(tmp, config, [_with_vocab(s, vocabs) for s in specs])
        artifacts.save_weights(model, tmp / artifacts.WEIGHTS)
        artifacts.write_json(tmp / artifacts.METRICS, metrics)
        artifacts.write_json(tmp / f"head_{head.name}_losses.json", losses)
    logger.info("added head %s to %s as %s", head.name, run.path, out)
    return out


def _with_vocab(spec: HeadSpec, vocabs: dict[str, list[str]]) -> HeadSpec:
    return HeadSpec(
        spec.name, vocabs[spec.name], spec.type, spec.weight, spec.class_weights, spec.options
    )


__all__ = ["extract_features", "cached_features", "fit_head", "add_head", "Run"]
