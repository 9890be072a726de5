"""Heads trained on cached features against one frozen epoch through the backbone.

Side by side in one run, same split, same heads, same starting weights:
- frozen epoch: zapmulti's fastai Learner with the backbone frozen, one one-cycle epoch at the
  config's learning rate (train.lr, or lr_fallback), every image through the backbone;
- fast path:    pooled features extracted once (timed separately: it is paid once per backbone),
                then all heads trained together on them (`zapmulti.features.fit_heads`, the
                defaults of `zapmulti add-head`).

Prints both times, their ratio, and the validation accuracy of each head under both. To show
that the fast path's default epochs train the heads to convergence, it also trains the same heads
for --reference-epochs (40) with dropout on, untimed, and prints how far apart the two are.

Usage:
    python benchmarks/features_fastpath.py [--config configs/sample-fashion.yaml] [--epochs 10]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DEFAULT_CONFIG, Timer, save_result  # noqa: E402
from fastai.torch_core import set_seed  # noqa: E402

from zapmulti.config import load_config  # noqa: E402
from zapmulti.features import extract_features, fit_heads, head_probs  # noqa: E402
from zapmulti.metrics import head_metrics  # noqa: E402
from zapmulti.model.heads import create_head  # noqa: E402
from zapmulti.model.multitask import build_model  # noqa: E402
from zapmulti.train import evaluate_learner, make_learner, prepare_data  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default=str(DEFAULT_CONFIG))
    p.add_argument("--set", action="append", default=[])
    p.add_argument("--epochs", type=int, default=10, help="head epochs on cached features")
    p.add_argument("--head-lr", type=float, default=1e-2)
    p.add_argument("--dropout", action="store_true", help="heads' dropout on in the fast path")
    p.add_argument("--reference-epochs", type=int, default=40)
    p.add_argument("--out")
    args = p.parse_args()

    cfg = load_config(args.config, args.set)
    lr = cfg.train.lr or cfg.train.lr_fallback
    prepared = prepare_data(cfg)
    train_rows, valid_rows = prepared.rows(False), prepared.rows(True)

    # 1. One frozen epoch through the backbone (fastai, BN in training mode as fastai does).
    set_seed(cfg.train.seed)
    model = build_model(cfg.model.backbone, cfg.model.weights, prepared.specs, cfg.model.dropout)
    learn = make_learner(cfg, prepared, model, Path(tempfile.mkdtemp()))
    learn.freeze()
    with Timer() as frozen:
        learn.fit_one_cycle(1, lr)
    frozen_metrics = evaluate_learner(learn, prepared)

    # 2. Features once, then every head trained on them.
    set_seed(cfg.train.seed)
    model = build_model(cfg.model.backbone, cfg.model.weights, prepared.specs, cfg.model.dropout)
    with Timer() as extract:
        feats = extract_features(model, prepared.cache.array, None, 256)
    targets = prepared.targets

    def train_heads(epochs: int, dropout: bool) -> tuple[float, dict]:
        set_seed(cfg.train.seed)
        heads = [create_head(s, model.in_features, cfg.model.dropout) for s in prepared.specs]
        with Timer() as t:
            fit_heads(
                heads,
                feats,
                targets,
                train_rows,
                epochs,
                args.head_lr,
                seed=cfg.train.seed,
                dropout=dropout,
            )
        return t.seconds, {
            s.name: head_metrics(targets[valid_rows, i], head_probs(h, feats, valid_rows))
            for i, (s, h) in enumerate(zip(prepared.specs, heads, strict=True))
        }

    head_seconds, fast_metrics = train_heads(args.epochs, args.dropout)
    _, reference_metrics = train_heads(args.reference_epochs, True)

    heads = {
        s.name: {
            "frozen_epoch_accuracy": frozen_metrics[s.name]["accuracy"],
            "fast_path_accuracy": fast_metrics[s.name]["accuracy"],
            "difference_points": 100
            * (fast_metrics[s.name]["accuracy"] - frozen_metrics[s.name]["accuracy"]),
            "reference_accuracy": reference_metrics[s.name]["accuracy"],
            "fast_minus_reference_points": 100
            * (fast_metrics[s.name]["accuracy"] - reference_metrics[s.name]["accuracy"]),
        }
        for s in prepared.specs
    }
    save_result(
        "features_fastpath",
        {
            "config": args.config,
            "overrides": args.set,
            "train_rows": int(len(train_rows)),
            "valid_rows": int(len(valid_rows)),
            "frozen_epoch_seconds": frozen.seconds,
            "feature_extraction_seconds_once": extract.seconds,
            "head_training_seconds": head_seconds,
            "head_epochs": args.epochs,
            "head_dropout": args.dropout,
            "reference_epochs": args.reference_epochs,
            "speedup_heads_vs_frozen_epoch": frozen.seconds / head_seconds,
            "heads": heads,
        },
        args.out,
    )
    print(
        f"one frozen epoch {frozen.seconds:.1f}s; heads on cached features {head_seconds:.2f}s "
        f"({frozen.seconds / head_seconds:.0f}x faster; features extracted once in "
        f"{extract.seconds:.1f}s)"
    )
    for name, h in heads.items():
        print(
            f"  {name}: frozen epoch {h['frozen_epoch_accuracy']:.4f}, "
            f"fast path {h['fast_path_accuracy']:.4f} ({h['difference_points']:+.1f} points); "
            f"{args.reference_epochs}-epoch reference {h['reference_accuracy']:.4f} "
            f"(fast path {h['fast_minus_reference_points']:+.1f})"
        )


if __name__ == "__main__":
    main()
