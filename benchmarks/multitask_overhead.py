"""Training images/s with four heads against one head, same backbone, same batches.

The two models share the backbone architecture, weights and input batches (from the image
cache); they differ only in their heads. Steps alternate between the two models in rounds, so a
change in machine load affects both alike.

Usage:
    python benchmarks/multitask_overhead.py [--config configs/sample-fashion.yaml] [--rounds 5]
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DEFAULT_CONFIG, Timer, save_result  # noqa: E402

from zapmulti.config import load_config  # noqa: E402
from zapmulti.data import read_catalogue  # noqa: E402
from zapmulti.data.images import build_cache  # noqa: E402
from zapmulti.data.labels import build_targets, build_vocabs  # noqa: E402
from zapmulti.model.heads import HeadSpec  # noqa: E402
from zapmulti.model.multitask import MultiTaskLoss, MultiTaskModel, build_model  # noqa: E402


def trainer(model: MultiTaskModel, specs: list[HeadSpec], device: torch.device):
    loss_fn = MultiTaskLoss(model.heads, specs)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model.to(device).train()

    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        loss = loss_fn(model(x), y[:, : len(specs)])
        opt.zero_grad()
        loss.backward()
        opt.step()

    return step


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default=str(DEFAULT_CONFIG))
    p.add_argument("--set", action="append", default=[])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=4, help="steps per model per round")
    p.add_argument("--out")
    args = p.parse_args()

    cfg = load_config(args.config, args.set)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    bs = cfg.train.batch_size
    table = read_catalogue(cfg.data, bs * args.steps, cfg.train.seed)
    m = cfg.model
    cache = build_cache(table["path"].tolist(), m.image_size, m.resize, m.pad_value, cfg.cache_dir)
    vocabs = build_vocabs(table, cfg.heads)
    targets = torch.from_numpy(build_targets(table, cfg.heads, vocabs))
    specs = [HeadSpec(h.name, vocabs[h.name], weight=h.weight) for h in cfg.heads]
    if len(specs) < 2:
        raise SystemExit(f"{args.config} declares one head; use a config with several")

    multi = build_model(m.backbone, "none", specs, m.dropout)
    single = MultiTaskModel(copy.deepcopy(multi.body), multi.in_features, specs[:1], m.dropout)
    steps = {"multi": trainer(multi, specs, device), "single": trainer(single, specs[:1], device)}
    images = torch.from_numpy(np.ascontiguousarray(cache.array[:])).permute(0, 3, 1, 2)
    batches = [
        (images[i : i + bs].to(device), targets[i : i + bs].to(device))
        for i in range(0, len(images) - bs + 1, bs)
    ]
    for name in steps:  # warm-up
        steps[name](*batches[0])

    seconds = {"multi": 0.0, "single": 0.0}
    for _ in range(args.rounds):
        for name in ("single", "multi"):
            with Timer() as t:
                for x, y in batches:
                    steps[name](x, y)
            seconds[name] += t.seconds
    n = args.rounds * len(batches) * bs
    ips = {k: n / v for k, v in seconds.items()}
    save_result(
        "multitask_overhead",
        {
            "config": args.config,
            "overrides": args.set,
            "backbone": m.backbone,
            "image_size": m.image_size,
            "batch_size": bs,
            "heads_multi": [s.name for s in specs],
            "images_per_s_one_head": ips["single"],
            "images_per_s_all_heads": ips["multi"],
            "ratio_all_over_one": ips["multi"] / ips["single"],
        },
        args.out,
    )
    print(
        f"{len(specs)} heads {ips['multi']:.1f} img/s, 1 head {ips['single']:.1f} img/s: "
        f"ratio {ips['multi'] / ips['single']:.3f}"
    )


if __name__ == "__main__":
    main()
