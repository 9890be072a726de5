"""Gender error of the zapmulti multi-task model against a plain single-task fastai model.

Both train side by side in one run, on the same split, with the same backbone and weights, the
same image size, batch size, epochs and learning-rate rule (lr_find's loss-minimum / 10):

- zapmulti: every head of the config, trained by `zapmulti.train.train`;
- fastai:   `vision_learner` + `fine_tune` on the gender rows only (Men/Women), fastai's own
            DataBlock pipeline, its default head and its Resize(method='pad').

Usage:
    python benchmarks/multitask_vs_single.py [--config configs/sample-fashion.yaml]
        [--set key=value ...] [--out runs/bench-multitask]

Prints both gender errors on the identical validation rows, and writes them to OUT/comparison.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torchvision
from fastai.callback.schedule import minimum
from fastai.vision.all import (
    CategoryBlock,
    ColReader,
    DataBlock,
    ImageBlock,
    IndexSplitter,
    Normalize,
    Resize,
    error_rate,
    imagenet_stats,
    set_seed,
    vision_learner,
)

from zapmulti.artifacts import write_json
from zapmulti.config import load_config
from zapmulti.model.backbones import OFFLINE_MOBILENET, load_offline_mobilenet
from zapmulti.train import train

REPO = Path(__file__).resolve().parents[1]


def _arch(backbone: str, weights: str):
    """A fastai `arch` callable giving the same torchvision model and weights zapmulti uses."""

    def make(pretrained: bool = True) -> torch.nn.Module:
        model = torchvision.models.get_model(backbone, weights=None)
        if weights == OFFLINE_MOBILENET:
            load_offline_mobilenet(model.features)
        elif weights == "imagenet":
            model = torchvision.models.get_model(backbone, weights="DEFAULT")
        if hasattr(model, "features") and hasattr(model, "classifier"):
            # fastai 2.8 drops vision_learner's `cut`; with an explicit pooling child its own
            # create_body cuts right after `features`, as it does for its known models.
            model = torch.nn.Sequential(
                model.features, torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), model.classifier
            )
        return model

    return make


def single_task_fastai(config, split: pd.DataFrame, table: pd.DataFrame, head, out: Path) -> dict:
    """Plain fastai: one categorical target, the stock vision_learner and fine_tune."""
    frame = table.merge(split, on="key")
    frame = frame[frame[head.column].isin(head.classes)].reset_index(drop=True)
    valid_idx = np.flatnonzero(frame["split"] == "valid")
    block = DataBlock(
        blocks=(ImageBlock, CategoryBlock(vocab=list(head.classes))),
        get_x=ColReader("path"),
        get_y=ColReader(head.column),
        splitter=IndexSplitter(valid_idx),
        item_tfms=Resize(config.model.image_size, method="pad", pad_mode="border"),
        batch_tfms=Normalize.from_stats(*imagenet_stats),
    )
    dls = block.dataloaders(frame, bs=config.train.batch_size, num_workers=0)
    learn = vision_learner(
        dls,
        _arch(config.model.backbone, config.model.weights),
        metrics=error_rate,
        path=out,
        model_dir=".",
    )
    t0 = time.time()
    lr = float(
        learn.lr_find(
            num_it=config.train.lr_find_iters, suggest_funcs=(minimum,), show_plot=False
        ).minimum
    )
    learn.fine_tune(
        config.train.unfrozen_epochs, base_lr=lr, freeze_epochs=config.train.frozen_epochs
    )
    seconds = time.time() - t0
    preds, targs = learn.get_preds(ds_idx=1)
    err = float((preds.argmax(1) != targs).float().mean())
    return {"gender_error": err, "valid_rows": int(len(targs)), "lr": lr, "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(REPO / "configs" / "sample-fashion.yaml"))
    parser.add_argument("--set", action="append", default=[])
    parser.add_argument("--out", default=str(REPO / "runs" / "bench-multitask"))
    parser.add_argument(
        "--reuse-multitask",
        metavar="RUN_DIR",
        help="take the multi-task side from a run this script trained before (its split too)",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    config = load_config(args.config, args.set)
    out = Path(args.out)
    head = next(h for h in config.heads if h.name == config.primary)

    set_seed(config.train.seed)
    t0 = time.time()
    if args.reuse_multitask:
        run = Path(args.reuse_multitask)
    else:
        run = train(config, out / "multitask", overwrite=True)
    multi_seconds = time.time() - t0 if not args.reuse_multitask else float("nan")
    multi = json.loads((run / "metrics.json").read_text())[head.name]

    from zapmulti.data import read_catalogue

    table = read_catalogue(config.data, config.train.max_items, config.train.seed)
    split = pd.read_csv(run / "split.csv", dtype=str)
    set_seed(config.train.seed)
    single = single_task_fastai(config, split, table, head, out / "single")

    result = {
        "config": args.config,
        "overrides": args.set,
        "backbone": config.model.backbone,
        "image_size": config.model.image_size,
        "epochs": [config.train.frozen_epochs, config.train.unfrozen_epochs],
        "multitask": {
            "heads": [h.name for h in config.heads],
            "gender_error": multi["error_rate"],
            "valid_rows": multi["n"],
            "seconds": multi_seconds,
        },
        "single_task_fastai": single,
        "machine": f"{platform.machine()} {torch.get_num_threads()} threads, "
        f"{'cuda' if torch.cuda.is_available() else 'cpu'}",
        "date": time.strftime("%Y-%m-%d"),
    }
    write_json(out / "comparison.json", result)
    m, s = result["multitask"], single
    print(
        f"multi-task ({', '.join(m['heads'])}): gender error {m['gender_error']:.4f} "
        f"on {m['valid_rows']} validation images ({m['seconds']:.0f}s)"
    )
    print(
        f"single-task fastai (gender only):      gender error {s['gender_error']:.4f} "
        f"on {s['valid_rows']} validation images ({s['seconds']:.0f}s)"
    )
    verdict = "no worse" if m["gender_error"] <= s["gender_error"] else "WORSE"
    print(f"multi-task is {verdict}: {m['gender_error']:.4f} vs {s['gender_error']:.4f}")


if __name__ == "__main__":
    main()
