"""Training batches: the plain shuffle, and the m-per-class sampler for embedding heads."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from zapmulti.config import config_from_dict
from zapmulti.data.loaders import m_per_class_order, make_dataloaders
from zapmulti.errors import ConfigError

MISSING = -1


def _labels(n: int = 203, classes: int = 12, seed: int = 0) -> np.ndarray:
    labels = np.random.default_rng(seed).integers(0, classes, n)
    labels[::10] = MISSING  # rows without this head's label
    return labels


def _check_batches(batches: list[np.ndarray], m: int, batch_size: int) -> None:
    for batch in batches:
        assert len(batch) == batch_size
        _, counts = np.unique(batch, return_counts=True)
        assert (counts % m == 0).all(), counts  # m rows of each label group drawn
        assert len(counts) <= batch_size // m


def test_m_per_class_order_groups_each_batch():
    labels = _labels()
    np.random.seed(0)
    order = m_per_class_order(labels, m=4, batch_size=16)()
    assert len(order) == 192  # whole batches only: 203 rows -> 12 batches of 16
    assert min(order) >= 0 and max(order) < len(labels)
    batches = [labels[order[i : i + 16]] for i in range(0, len(order), 16)]
    _check_batches(batches, 4, 16)
    # each batch of a plain shuffle would hold ~1.3 rows per label; here every label drawn has 4
    assert np.mean([len(np.unique(b)) for b in batches]) == 4


def test_m_per_class_order_refuses_too_few_labels():
    with pytest.raises(ConfigError, match=r"3 label group\(s\).*set train.m_per_class=32 "):
        m_per_class_order(np.array([0, 1, 2] * 30), m=4, batch_size=64, head="head 'cat'")


def test_fastai_loader_uses_the_sampler():
    labels = _labels(n=130, classes=6)
    images = np.zeros((130, 8, 8, 3), dtype=np.uint8)
    targets = np.stack([labels, np.arange(130) % 2], axis=1).astype(np.int64)
    rows = np.arange(130)
    np.random.seed(1)
    dls = make_dataloaders(
        images, targets, rows[:120], rows[120:], 12, False, torch.device("cpu"), 0, (0, 3)
    )
    batches = [y[:, 0].numpy() for _, y in dls.train]
    assert len(batches) == len(dls.train) == 10
    _check_batches(batches, 3, 12)
    assert sum(len(y) for _, y in dls.valid) == 10  # validation order untouched

    plain = make_dataloaders(images, targets, rows[:120], rows[120:], 12, False, "cpu", 0)
    counts = [np.unique(y[:, 0].numpy(), return_counts=True)[1] for _, y in plain.train]
    assert any((c % 3).any() for c in counts)  # a plain shuffle does not group rows


def _config(**train) -> dict:
    return {
        "data": {"source": "folder", "root": "."},
        "heads": [
            {"name": "category", "column": "label"},
            {"name": "similar", "column": "label", "type": "embedding"},
        ],
        "train": {"sampler": "m_per_class", **train},
    }


def test_sampler_config():
    assert config_from_dict(_config()).sampler_head == "similar"
    assert config_from_dict(_config(sampler_head="category")).sampler_head == "category"
    raw = _config()
    raw["heads"] = raw["heads"][:1]
    with pytest.raises(ConfigError) as err:
        config_from_dict(raw, source="my.yaml with --set train.sampler=m_per_class")
    assert str(err.value).splitlines() == [
        "invalid config my.yaml with --set train.sampler=m_per_class:",
        "  train.sampler m_per_class needs a head to balance: set train.sampler_head or add a head "
        "of type embedding",
    ]
    with pytest.raises(ConfigError, match="sampler_head 'colour' is not a head"):
        config_from_dict(_config(sampler_head="colour"))
    with pytest.raises(ConfigError, match=r"m_per_class \(5\) must divide train.batch_size \(64\)"):
        config_from_dict(_config(m_per_class=5))
