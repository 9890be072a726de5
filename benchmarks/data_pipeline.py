"""Loader throughput from raw JPEGs and from the image cache, against the model's training speed.

All three figures come from one run on the same images, batch size and image size:
- raw:    a torch DataLoader that decodes and resizes each JPEG (what a naive loader does),
          with --workers processes;
- cache:  zapmulti's training loader over the memory-mapped uint8 cache (no decode);
- model:  training images/s of the config's model (forward, backward, optimizer step) on
          batches already in memory, so it measures only what the model consumes.

Usage:
    python benchmarks/data_pipeline.py [--config configs/sample-fashion.yaml] [--items 2000]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DEFAULT_CONFIG, Timer, save_result  # noqa: E402

from zapmulti.config import load_config  # noqa: E402
from zapmulti.data import read_catalogue  # noqa: E402
from zapmulti.data.images import build_cache  # noqa: E402
from zapmulti.data.labels import build_targets, build_vocabs  # noqa: E402
from zapmulti.data.loaders import make_dataloaders  # noqa: E402
from zapmulti.model.heads import HeadSpec  # noqa: E402
from zapmulti.model.multitask import MultiTaskLoss, build_model  # noqa: E402
from zapmulti.predict import _ImageFiles  # noqa: E402


def raw_throughput(paths, size, method, fill, batch_size, workers) -> float:
    loader = torch.utils.data.DataLoader(
        _ImageFiles(paths, size, method, fill),
        batch_size=batch_size,
        num_workers=workers,
        shuffle=True,
    )
    with Timer() as t:
        n = sum(len(x) for x, _ in loader)
    return n / t.seconds


def cache_throughput(array, targets, batch_size) -> float:
    rows = np.arange(len(array))
    dls = make_dataloaders(
        array, targets, rows, rows[:1], batch_size, True, torch.device("cpu"), seed=0
    )
    with Timer() as t:
        n = sum(len(x) for x, _ in dls.train)
    return n / t.seconds


def model_throughput(config, specs, array, targets, batch_size, steps) -> float:
    model = build_model(config.model.backbone, "none", specs, config.model.dropout).train()
    loss_fn = MultiTaskLoss(model.heads, specs)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.from_numpy(np.ascontiguousarray(array[:batch_size])).permute(0, 3, 1, 2)
    y = torch.from_numpy(targets[:batch_size])

    def step() -> None:
        loss = loss_fn(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    step()  # warm-up
    with Timer() as t:
        for _ in range(steps):
            step()
    return steps * batch_size / t.seconds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default=str(DEFAULT_CONFIG))
    p.add_argument("--set", action="append", default=[])
    p.add_argument("--items", type=int, default=2000)
    p.add_argument("--workers", type=int, default=2, help="decode processes for the raw loader")
    p.add_argument("--steps", type=int, default=10, help="timed training steps")
    p.add_argument("--out")
    args = p.parse_args()

    cfg = load_config(args.config, args.set)
    table = read_catalogue(cfg.data, args.items, cfg.train.seed)
    paths = table["path"].tolist()
    m, bs = cfg.model, cfg.train.batch_size
    with Timer() as build:
        cache = build_cache(
            paths, m.image_size, m.resize, m.pad_value, tempfile.mkdtemp(), workers=args.workers
        )
    vocabs = build_vocabs(table, cfg.heads)
    targets = build_targets(table, cfg.heads, vocabs)
    specs = [HeadSpec(h.name, vocabs[h.name], weight=h.weight) for h in cfg.heads]

    raw = raw_throughput(paths, m.image_size, m.resize, m.pad_value, bs, args.workers)
    cached = cache_throughput(cache.array, targets, bs)
    model = model_throughput(cfg, specs, cache.array, targets, bs, args.steps)
    save_result(
        "data_pipeline",
        {
            "config": args.config,
            "overrides": args.set,
            "items": len(paths),
            "image_size": m.image_size,
            "batch_size": bs,
            "backbone": m.backbone,
            "raw_workers": args.workers,
            "cache_build_seconds_incl_decode": build.seconds,
            "raw_jpeg_images_per_s": raw,
            "cache_images_per_s": cached,
            "model_train_images_per_s": model,
            "cache_over_model": cached / model,
            "raw_over_model": raw / model,
        },
        args.out,
    )
    print(
        f"raw JPEG loader {raw:.0f} img/s, cache loader {cached:.0f} img/s, "
        f"model trains {model:.1f} img/s: cache feeds {cached / model:.1f}x, raw {raw / model:.1f}x"
    )


if __name__ == "__main__":
    main()
