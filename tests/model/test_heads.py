"""The masked multi-task loss and the head registry."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from zapmulti.errors import ConfigError
from zapmulti.model.heads import HEAD_TYPES, HeadSpec, create_head, masked_cross_entropy
from zapmulti.model.multitask import MultiTaskLoss, MultiTaskModel


def test_missing_rows_contribute_nothing():
    torch.manual_seed(0)
    logits = torch.randn(6, 3)
    target = torch.tensor([0, -1, 2, -1, 1, 1])
    expected = F.cross_entropy(logits[[0, 2, 4, 5]], target[[0, 2, 4, 5]])
    assert torch.allclose(masked_cross_entropy(logits, target), expected)

    # Changing the logits of unlabelled rows changes neither the loss nor its gradient there.
    other = logits.clone()
    other[[1, 3]] += 100.0
    assert torch.allclose(masked_cross_entropy(other, target), expected)
    other.requires_grad_(True)
    masked_cross_entropy(other, target).backward()
    assert other.grad[[1, 3]].abs().sum() == 0


def test_all_missing_gives_zero_loss_with_a_graph():
    logits = torch.randn(4, 2, requires_grad=True)
    loss = masked_cross_entropy(logits, torch.full((4,), -1))
    assert loss.item() == 0.0
    loss.backward()
    assert logits.grad is not None and logits.grad.abs().sum() == 0


def test_multitask_loss_is_weighted_sum():
    specs = [HeadSpec("a", ["x", "y"], weight=1.0), HeadSpec("b", ["p", "q", "r"], weight=0.5)]
    model = MultiTaskModel(nn.Flatten(), 12, specs)
    loss_fn = MultiTaskLoss(model.heads, specs)
    preds = (torch.randn(4, 2), torch.randn(4, 3))
    target = torch.tensor([[0, -1], [1, 2], [-1, 0], [0, -1]])
    want = F.cross_entropy(preds[0][[0, 1, 3]], target[[0, 1, 3], 0]) + 0.5 * F.cross_entropy(
        preds[1][[1, 2]], target[[1, 2], 1]
    )
    assert torch.allclose(loss_fn(preds, target), want)


def test_class_weights_reach_the_loss():
    spec = HeadSpec("a", ["x", "y"], class_weights=[1.0, 3.0])
    head = create_head(spec, 4, 0.0)
    logits, target = torch.randn(5, 2), torch.tensor([0, 1, 1, -1, 0])
    keep = target != -1
    want = F.cross_entropy(logits[keep], target[keep], weight=torch.tensor([1.0, 3.0]))
    assert torch.allclose(head.loss(logits, target), want)


def test_unknown_head_type_lists_registered():
    with pytest.raises(ConfigError, match=r"registered: \['classification'"):
        create_head(HeadSpec("a", ["x", "y"], type="regression"), 4, 0.0)
    assert "classification" in HEAD_TYPES
