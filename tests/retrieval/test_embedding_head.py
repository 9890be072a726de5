"""The embedding head: a metric-learning loss over labelled rows only, chosen by options."""

from __future__ import annotations

import pytest
import torch
from pytorch_metric_learning import losses, miners

from zapmulti.errors import ConfigError
from zapmulti.model.heads import EmbeddingHead, HeadSpec, create_head
from zapmulti.model.multitask import MultiTaskLoss, MultiTaskModel

CLASSES = ["a", "b", "c"]


def head(**options) -> EmbeddingHead:
    spec = HeadSpec("emb", CLASSES, type="embedding", options={"dim": 8, **options})
    return create_head(spec, in_features=12, dropout=0.0)


def test_missing_labels_are_left_out_of_the_loss():
    torch.manual_seed(0)
    emb = head(miner=None)
    out = torch.randn(8, 8, requires_grad=True)
    target = torch.tensor([0, 0, -1, 1, 1, -1, 2, 2])
    keep = target != -1
    want = losses.MultiSimilarityLoss()(out[keep], target[keep])
    assert torch.allclose(emb.loss(out, target), want)

    # Moving the unlabelled rows changes neither the loss nor gives them a gradient.
    moved = out.detach().clone()
    moved[~keep] += 5.0
    moved.requires_grad_(True)
    loss = emb.loss(moved, target)
    assert torch.allclose(loss, want)
    loss.backward()
    assert moved.grad[~keep].abs().sum() == 0 and moved.grad[keep].abs().sum() > 0


def test_the_miner_sees_only_labelled_rows():
    torch.manual_seed(1)
    emb = head()
    out = torch.randn(6, 8)
    target = torch.tensor([0, -1, 0, 1, -1, 1])
    keep = target != -1
    pairs = miners.MultiSimilarityMiner()(out[keep], target[keep])
    want = losses.MultiSimilarityLoss()(out[keep], target[keep], pairs)
    assert torch.allclose(emb.loss(out, target), want)


def test_under_two_labelled_rows_gives_zero_in_the_graph():
    emb = head()
    out = torch.randn(4, 8, requires_grad=True)
    for target in (torch.full((4,), -1), torch.tensor([-1, 2, -1, -1])):
        loss = emb.loss(out, target)
        assert loss.item() == 0.0
        loss.backward()
        assert out.grad is not None and out.grad.abs().sum() == 0


def test_ignored_classes_count_as_missing():
    torch.manual_seed(2)
    emb = head(miner=None, ignore=["c", "not-a-label"])
    out = torch.randn(6, 8)
    target = torch.tensor([0, 0, 1, 1, 2, 2])
    want = losses.MultiSimilarityLoss()(out[:4], target[:4])
    assert torch.allclose(emb.loss(out, target), want)


def test_arcface_weights_belong_to_the_head():
    emb = head(loss="arcface", miner="none")
    assert isinstance(emb.loss_fn, losses.ArcFaceLoss)
    assert emb.loss_fn.W.shape == (8, 3)
    assert any(name.startswith("loss_fn.") for name, _ in emb.named_parameters())
    loss = emb.loss(torch.randn(5, 8), torch.tensor([0, 1, 2, -1, 0]))
    assert torch.isfinite(loss) and loss.requires_grad


def test_options_are_checked_and_choices_listed():
    with pytest.raises(ConfigError, match="unknown embedding option.*'dims'"):
        head(dims=3)
    with pytest.raises(ConfigError, match="not a pytorch-metric-learning loss.*multisimilarity"):
        head(loss="wobbly")
    with pytest.raises(ConfigError, match="not a pytorch-metric-learning miner"):
        head(miner="wobbly")


def test_embedding_head_trains_inside_the_multitask_loss():
    specs = [
        HeadSpec("category", ["x", "y"]),
        HeadSpec("emb", CLASSES, type="embedding", weight=0.5, options={"dim": 4}),
    ]
    model = MultiTaskModel(torch.nn.Flatten(), 12, specs)
    preds = model(torch.rand(6, 3, 2, 2))
    assert [p.shape[1] for p in preds] == [2, 4]
    target = torch.tensor([[0, 0], [1, 0], [0, 1], [1, 1], [-1, 2], [0, -1]])
    loss = MultiTaskLoss(model.heads, specs)(preds, target)
    loss.backward()
    assert model.heads["emb"].net[1].weight.grad.abs().sum() > 0
