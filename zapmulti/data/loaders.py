"""Datasets over the preprocessed image cache, and the fastai DataLoaders built from them."""

from __future__ import annotations

import numpy as np
import torch
from fastai.data.core import DataLoaders
from fastai.data.load import DataLoader


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


def make_dataloaders(
    images: np.ndarray,
    targets: np.ndarray,
    train_rows: np.ndarray,
    valid_rows: np.ndarray,
    batch_size: int,
    flip: bool,
    device: torch.device,
    seed: int,
) -> DataLoaders:
    """fastai DataLoaders: shuffled training batches, ordered validation batches."""
    train_ds = CachedImages(images, train_rows, targets, flip=flip)
    valid_ds = CachedImages(images, valid_rows, targets, flip=False)
    drop_last = len(train_ds) > batch_size
    train = DataLoader(train_ds, bs=batch_size, shuffle=True, drop_last=drop_last, num_workers=0)
    valid = DataLoader(valid_ds, bs=batch_size * 2, shuffle=False, num_workers=0)
    train.rng.seed(seed)
    return DataLoaders(train, valid, device=device)
