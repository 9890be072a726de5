"""Datasets over the preprocessed image cache, and the fastai DataLoaders built from them."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from fastai.data.core import DataLoaders
from fastai.data.load import DataLoader
from pytorch_metric_learning.samplers import MPerClassSampler

from zapmulti.errors import ConfigError


class CachedImages(torch.utils.data.Dataset):
    """Rows of a uint8 (N, H, W, 3) image array with their [N, H] target matrix.

    Returns (uint8 CHW image, int64 targets); the model normalises on the device.
    """

    def __init__(
        self, images: np.ndarray, rows: np.ndarray, targets: np.ndarray, flip: bool = False
    ) -> None:
        self.images, self.rows, self.targets, self.flip = images, np.asarray(rows), targets, flip

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        row = self.rows[i]
        img = torch.from_numpy(np.array(self.images[row])).permute(2, 0, 1)
        if self.flip and torch.rand(()) < 0.5:
            img = img.flip(-1)
        return img, torch.from_numpy(self.targets[row])


def m_per_class_order(
    labels: np.ndarray, m: int, batch_size: int, head: str = "the sampler head"
) -> Callable[[], list[int]]:
    """A fresh epoch order of dataset positions in which each batch holds m rows of each of
    batch_size / m labels (pytorch-metric-learning's MPerClassSampler, drawn with numpy's seeded
    global generator). Rows without a label (MISSING) form one more group, so they still train
    the other heads. Labels with fewer than m rows are drawn with replacement.
    """
    labels = np.asarray(labels)
    groups = len(np.unique(labels))
    if m * groups < batch_size:
        fits = [
            d for d in range(m, batch_size + 1) if not batch_size % d and d * groups >= batch_size
        ]
        raise ConfigError(
            f"train.sampler m_per_class: {head} has {groups} label group(s), so m_per_class={m} "
            f"fills only {m * groups} rows of a batch of {batch_size}; set train.m_per_class="
            f"{fits[0]} (the smallest that divides the batch and fills it), or lower "
            "train.batch_size"
        )
    length = max(batch_size, len(labels) - len(labels) % batch_size)
    sampler = MPerClassSampler(labels, m, batch_size=batch_size, length_before_new_iter=length)
    return lambda: list(iter(sampler))


def make_dataloaders(
    images: np.ndarray,
    targets: np.ndarray,
    train_rows: np.ndarray,
    valid_rows: np.ndarray,
    batch_size: int,
    flip: bool,
    device: torch.device,
    seed: int,
    balance: tuple[int, int] | None = None,
    balance_name: str = "the sampler head",
) -> DataLoaders:
    """fastai DataLoaders: shuffled training batches, ordered validation batches.

    With `balance=(column, m)`, training batches come from `m_per_class_order` over that target
    column instead of a plain shuffle.
    """
    train_ds = CachedImages(images, train_rows, targets, flip=flip)
    valid_ds = CachedImages(images, valid_rows, targets, flip=False)
    drop_last = len(train_ds) > batch_size
    if balance is None:
        train = DataLoader(
            train_ds, bs=batch_size, shuffle=True, drop_last=drop_last, num_workers=0
        )
    else:
        column, m = balance
        labels = targets[np.asarray(train_rows), column]
        order = m_per_class_order(labels, m, batch_size, balance_name)
        train = DataLoader(
            train_ds, bs=batch_size, shuffle=False, drop_last=True, num_workers=0, get_idxs=order
        )
    valid = DataLoader(valid_ds, bs=batch_size * 2, shuffle=False, num_workers=0)
    train.rng.seed(seed)
    return DataLoaders(train, valid, device=device)
