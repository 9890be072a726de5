"""Training throughput of the zapmulti model on CUDA: images/s and achieved TFLOP/s.

ResNet50 at 224 px, batch size 256, bf16 autocast, channels_last, optionally torch.compile, fed
from a uint8 image cache that lives on the GPU (no host decode or copy in the loop). On a machine
without CUDA it refuses unless --tiny is given, which runs a few CPU steps of a small setting as
a smoke test (the test suite does that).

Usage:
    python benchmarks/gpu_train.py [--compile] [--steps 50] [--batch-size 256]
        [--cache-config configs/zap50k-multitask.yaml] [--json out.json]
    python benchmarks/gpu_train.py --tiny          # CPU smoke test
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections.abc import Sequence

import torch
from torch.utils.flop_counter import FlopCounterMode

from zapmulti.model.heads import HeadSpec
from zapmulti.model.multitask import MultiTaskLoss, build_model

HEADS = [
    HeadSpec("gender", ["Men", "Women"]),
    HeadSpec("category", [f"c{i}" for i in range(4)], weight=0.5),
    HeadSpec("subcategory", [f"s{i}" for i in range(21)], weight=0.5),
    HeadSpec("brand", [f"b{i}" for i in range(200)], weight=0.3),
]


def gpu_images(args: argparse.Namespace, device: torch.device) -> torch.Tensor:
    """The image cache as one uint8 NHWC tensor on the device."""
    if args.cache_config:
        from zapmulti.config import load_config
        from zapmulti.data import read_catalogue
        from zapmulti.data.images import build_cache

        cfg = load_config(args.cache_config, [f"model.image_size={args.image_size}"])
        table = read_catalogue(cfg.data, args.cache_items, cfg.train.seed)
        cache = build_cache(
            table["path"].tolist(),
            args.image_size,
            cfg.model.resize,
            cfg.model.pad_value,
            cfg.cache_dir,
            workers=cfg.train.num_workers,
        )
        return torch.from_numpy(cache.array[:]).to(device)
    gen = torch.Generator(device="cpu").manual_seed(0)
    shape = (args.cache_items, args.image_size, args.image_size, 3)
    return torch.randint(0, 256, shape, dtype=torch.uint8, generator=gen).to(device)


def run(args: argparse.Namespace) -> dict:
    cuda = torch.cuda.is_available() and not args.tiny
    if not cuda and not args.tiny:
        raise SystemExit("no CUDA device: run with --tiny for the CPU smoke test")
    device = torch.device("cuda" if cuda else "cpu")
    if cuda:
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    model = build_model(args.backbone, "none", HEADS).to(device)
    memory_format = torch.channels_last if cuda else torch.contiguous_format
    model = model.to(memory_format=memory_format).train()
    loss_fn = MultiTaskLoss(model.heads, HEADS)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=cuda)
    images = gpu_images(args, device)
    n = len(images)
    targets = torch.stack(
        [torch.randint(0, len(s.classes), (n,), device=device) for s in HEADS], dim=1
    )
    step_model = torch.compile(model) if args.compile else model
    amp = torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda)

    def batch(i: int) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.randint(0, n, (args.batch_size,), device=device)
        x = images[idx].permute(0, 3, 1, 2).contiguous(memory_format=memory_format)
        if i % 2:
            x = x.flip(-1)
        return x, targets[idx]

    def step(i: int) -> torch.Tensor:
        x, y = batch(i)
        with amp:
            loss = loss_fn(step_model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    # Forward FLOPs of one batch, counted once in eager mode; a training step is ~3x that.
    x, _ = batch(0)
    with FlopCounterMode(display=False) as counter, amp, torch.no_grad():
        model(x)
    step_flops = 3 * counter.get_total_flops()

    for i in range(args.warmup):
        step(i)
    if cuda:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for i in range(args.steps):
        loss = step(i)
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0

    images_per_s = args.steps * args.batch_size / seconds
    result = {
        "device": torch.cuda.get_device_name() if cuda else f"cpu ({platform.processor()})",
        "backbone": args.backbone,
        "image_size": args.image_size,
        "batch_size": args.batch_size,
        "heads": len(HEADS),
        "bf16_autocast": cuda,
        "channels_last": cuda,
        "compile": args.compile,
        "steps": args.steps,
        "seconds": seconds,
        "images_per_s": images_per_s,
        "tflops_per_s": step_flops * args.steps / seconds / 1e12,
        "final_loss": float(loss.detach()),
        "torch": torch.__version__,
    }
    if cuda:
        result["max_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
    return result


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backbone", default="resnet50")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--cache-config", help="build the image cache from this config's data")
    p.add_argument("--cache-items", type=int, default=4096, help="images held on the device")
    p.add_argument("--json", help="also write the result here")
    p.add_argument("--tiny", action="store_true", help="CPU smoke test: small, few steps")
    args = p.parse_args(argv)
    if args.tiny:
        args.backbone, args.image_size, args.batch_size = "resnet18", 32, 4
        args.steps, args.warmup, args.cache_items = 2, 1, 16
    return args


def main(argv: Sequence[str] | None = None) -> dict:
    args = parse_args(argv)
    result = run(args)
    print(
        f"{result['device']}: {result['backbone']} {result['image_size']}px batch "
        f"{result['batch_size']}: {result['images_per_s']:.1f} images/s, "
        f"{result['tflops_per_s']:.3f} TFLOP/s"
    )
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=2)
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
