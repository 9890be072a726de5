"""Batched inference with a trained run: image files or folders in, one row per image out."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from fastprogress.fastprogress import progress_bar

from zapmulti.artifacts import Run, load_run
from zapmulti.data.images import load_array
from zapmulti.data.sources import IMAGE_EXTENSIONS, iter_images
from zapmulti.devices import resolve_device
from zapmulti.errors import BadImageError, DataError
from zapmulti.fileio import atomic_path
from zapmulti.model.multitask import for_inference

logger = logging.getLogger(__name__)


def collect_images(paths: Sequence[str | os.PathLike]) -> list[str]:
    """Expand folders (recursively) into image files; a path that does not exist is an error."""
    out: list[str] = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            found = [str(f) for f in iter_images(p)]
            if not found:
                logger.warning("no images found under %s", p)
            out.extend(found)
        elif p.exists():
            out.append(str(p))
        else:
            raise DataError(f"no such file or folder: {p}")
    return out


class _ImageFiles(torch.utils.data.Dataset):
    """Decodes files for inference; a bad file yields a blank image and its error message."""

    def __init__(self, paths: Sequence[str], size: int, method: str, fill: int) -> None:
        self.paths, self.size, self.method, self.fill = list(paths), size, method, fill

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, str]:
        try:
            arr = load_array(self.paths[i], self.size, self.method, self.fill)
            return torch.from_numpy(arr).permute(2, 0, 1), ""
        except BadImageError as exc:
            return torch.zeros(3, self.size, self.size, dtype=torch.uint8), exc.reason


@torch.inference_mode()
def infer_batches(
    model: torch.nn.Module, batches, device: torch.device, total: int | None = None
) -> list[np.ndarray]:
    """Run uint8 image batches through the model; one array per head, in head order.

    Classification heads give probabilities (softmax); other head types their raw output.
    """
    kinds = [s.type for s in model.specs]
    model = for_inference(model, device)
    chunks: list[list[np.ndarray]] | None = None
    bar = progress_bar(batches, total=total, leave=False) if total else batches
    for x in bar:
        x = x.to(device, non_blocking=True)
        if device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast("cuda", dtype=torch.bfloat16):
                outs = model(x)
        else:
            outs = model(x)
        probs = [
            (torch.softmax(o.float(), dim=-1) if k == "classification" else o.float()).cpu().numpy()
            for o, k in zip(outs, kinds, strict=True)
        ]
        if chunks is None:
            chunks = [[] for _ in probs]
        for store, p in zip(chunks, probs, strict=True):
            store.append(p)
    if chunks is None:
        return []
    return [np.concatenate(c) for c in chunks]


def predict_array(
    model: torch.nn.Module,
    images: np.ndarray,
    rows: np.ndarray,
    batch_size: int = 128,
    device: str | torch.device | None = None,
    show_progress: bool = True,
) -> list[np.ndarray]:
    """Probabilities for rows of a preprocessed (N, H, W, 3) uint8 array (e.g. the image cache)."""
    dev = resolve_device(device)

    def batches():
        for start in range(0, len(rows), batch_size):
            idx = rows[start : start + batch_size]
            yield torch.from_numpy(np.ascontiguousarray(images[idx])).permute(0, 3, 1, 2)

    n_batches = (len(rows) + batch_size - 1) // batch_size
    return infer_batches(model, batches(), dev, total=n_batches if show_progress else None)


def predict(
    run: Run | str | os.PathLike,
    paths: Sequence[str | os.PathLike],
    batch_size: int = 64,
    device: str | torch.device | None = None,
    workers: int | None = None,
    show_progress: bool = True,
) -> pd.DataFrame:
    """Predict every head for images or folders of images.

    Returns:
        One row per image: ``path``, then ``<head>`` and ``<head>_prob`` for each head, and
        ``error`` (empty, or why the file could not be read; its predictions are then empty).
    """
    if not isinstance(run, Run):
        run = load_run(run)
    files = collect_images(paths)
    if not files:
        raise DataError(
            f"no image found in {', '.join(map(str, paths))}; give image files or folders that "
            f"hold them ({', '.join(IMAGE_EXTENSIONS)})"
        )
    dev = resolve_device(device)
    m = run.config.model
    dataset = _ImageFiles(files, m.image_size, m.resize, m.pad_value)
    workers = min(4, os.cpu_count() or 1) if workers is None else workers
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        num_workers=workers if len(files) > batch_size else 0,
        pin_memory=dev.type == "cuda",
    )
    errors: list[str] = []

    def batches():
        for x, err in loader:
            errors.extend(err)
            yield x

    probs = infer_batches(run.model, batches(), dev, total=len(loader) if show_progress else None)
    frame = pd.DataFrame({"path": files})
    failed = np.array([bool(e) for e in errors], dtype=bool)
    for spec, p in zip(run.model.specs, probs, strict=True):
        if spec.type != "classification":
            continue
        name = spec.name
        classes = np.array(run.vocabs[name], dtype=object)
        labels = classes[p.argmax(1)] if len(p) else np.array([], dtype=object)
        conf = p.max(1) if len(p) else np.array([])
        frame[name] = np.where(failed, None, labels)
        frame[f"{name}_prob"] = np.where(failed, np.nan, conf)
    frame["error"] = errors if errors else [""] * len(files)
    if failed.any():
        logger.warning(
            "%d of %d image(s) could not be read; see the error column", failed.sum(), len(files)
        )
    return frame


def write_predictions(frame: pd.DataFrame, out: str | os.PathLike) -> None:
    """Write predictions as CSV or JSON (by extension), atomically."""
    out = Path(out)
    with atomic_path(out) as tmp:
        if out.suffix.lower() == ".json":
            records = json.loads(frame.to_json(orient="records"))
            tmp.write_text(json.dumps(records, indent=1, ensure_ascii=False), encoding="utf-8")
        elif out.suffix.lower() == ".csv":
            frame.to_csv(tmp, index=False)
        else:
            raise DataError(f"--out {out}: use a .csv or .json file name")
