"""`zapmulti predict` over a folder of images against fastai's `learn.predict` per image.

Same trained run, same machine, same images, same preprocessing (zapmulti's decode and pad):
- zapmulti: `zapmulti.predict.predict` (decode in worker processes, batched inference on the
            inference copy: BatchNorm folded, channels_last);
- zapmulti with a plain eval-mode copy of the model instead, to show what the folding buys;
- fastai:   the usual loop, `learn.predict(path)` for each image, with a Learner built on the
            run's own model (its primary head) and a DataBlock whose item transform is
            zapmulti's resize, so both see identical pixels.

Usage:
    python benchmarks/predict_speed.py RUN_DIR [--images N] [--folder DIR]
"""

from __future__ import annotations

import argparse
import copy
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from fastai.vision.all import (
    CategoryBlock,
    CrossEntropyLossFlat,
    DataBlock,
    ImageBlock,
    Learner,
    PILImage,
    Transform,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Timer, save_result  # noqa: E402

import zapmulti.predict  # noqa: E402
from zapmulti.artifacts import load_run  # noqa: E402
from zapmulti.data.images import resize_image  # noqa: E402
from zapmulti.predict import predict  # noqa: E402


class ZapResize(Transform):
    """zapmulti's decode (RGB, alpha on white) and pad-resize, as a fastai item transform."""

    order = 1  # before ToTensor (order 5), like fastai's own Resize

    def __init__(self, size: int, method: str, fill: int) -> None:
        self.size, self.method, self.fill = size, method, fill

    def encodes(self, img: PILImage) -> PILImage:
        return PILImage(resize_image(img.convert("RGB"), self.size, self.method, self.fill))


class PrimaryHead(torch.nn.Module):
    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)[0]


def fastai_learner(run, files: list[str]) -> Learner:
    head = run.model.specs[0]
    m = run.config.model
    block = DataBlock(
        blocks=(ImageBlock, CategoryBlock(vocab=head.classes)),
        get_y=lambda _: head.classes[0],
        item_tfms=ZapResize(m.image_size, m.resize, m.pad_value),
    )
    dls = block.dataloaders(files[:8], bs=8, num_workers=0, device=torch.device("cpu"))
    return Learner(dls, PrimaryHead(run.model), loss_func=CrossEntropyLossFlat())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dir")
    p.add_argument("--folder", default=None, help="images to predict (default: the run's data)")
    p.add_argument("--images", type=int, default=1000)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1))
    p.add_argument("--out")
    args = p.parse_args()

    run = load_run(args.run_dir)
    source = Path(args.folder or Path(run.config.data.root))
    files = sorted(str(f) for f in source.rglob("*.jpg"))[: args.images]
    folder = Path(tempfile.mkdtemp())  # a plain folder of exactly N images, as a user has
    for f in files:
        shutil.copy2(f, folder / Path(f).name)
    files = sorted(str(f) for f in folder.iterdir())
    head = run.model.specs[0].name

    with Timer() as zap:
        frame = predict(run, [folder], batch_size=args.batch_size, workers=args.workers)
    folded = zapmulti.predict.for_inference
    zapmulti.predict.for_inference = lambda model, device: copy.deepcopy(model).eval().to(device)
    try:
        with Timer() as plain:
            unfolded = predict(run, [folder], batch_size=args.batch_size, workers=args.workers)
    finally:
        zapmulti.predict.for_inference = folded
    head_name = run.model.specs[0].name
    same_plain = int((unfolded[head_name] == frame[head_name]).sum())
    learn = fastai_learner(run, files)
    with Timer() as fa, learn.no_bar():
        slow = [learn.predict(f) for f in files]

    fa_labels = [str(r[0]) for r in slow]
    fa_probs = np.array([float(r[2].max()) for r in slow])
    same = np.array(fa_labels) == frame[head].to_numpy()
    prob_gap = float(np.abs(fa_probs - frame[f"{head}_prob"].to_numpy()).max())

    save_result(
        "predict_speed",
        {
            "run": args.run_dir,
            "images": len(files),
            "batch_size": args.batch_size,
            "workers": args.workers,
            "zapmulti_seconds": zap.seconds,
            "fastai_predict_loop_seconds": fa.seconds,
            "speedup": fa.seconds / zap.seconds,
            "zapmulti_plain_model_seconds": plain.seconds,
            "inference_copy_speedup": plain.seconds / zap.seconds,
            "identical_labels_plain_model": f"{same_plain}/{len(files)}",
            "identical_labels": f"{int(same.sum())}/{len(files)}",
            "max_probability_difference": prob_gap,
        },
        args.out,
    )
    print(
        f"zapmulti predict {zap.seconds:.1f}s, learn.predict loop {fa.seconds:.1f}s for "
        f"{len(files)} images: {fa.seconds / zap.seconds:.1f}x; identical {head} labels "
        f"{int(same.sum())}/{len(files)}, max probability gap {prob_gap:.2e}"
    )
    print(
        f"inference copy (BatchNorm folded, channels_last) {zap.seconds:.1f}s against a plain "
        f"eval-mode model {plain.seconds:.1f}s: {plain.seconds / zap.seconds:.1f}x; identical "
        f"labels {same_plain}/{len(files)}"
    )
    shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
