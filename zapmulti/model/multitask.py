"""One shared backbone with plug-in heads, and the masked multi-task loss."""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence

import torch
from torch import nn

from zapmulti.model.backbones import IMAGENET_MEAN, IMAGENET_STD, backbone_groups, create_backbone
from zapmulti.model.heads import Head, HeadSpec, create_head

logger = logging.getLogger(__name__)


class MultiTaskModel(nn.Module):
    """uint8 (or [0, 1] float) NCHW images -> a tuple with one output per head, in head order.

    Normalisation lives inside the model, so a saved model needs no separate transform.
    """

    def __init__(
        self, body: nn.Module, in_features: int, specs: Sequence[HeadSpec], dropout: float = 0.2
    ) -> None:
        super().__init__()
        self.body = body
        self.in_features = in_features
        self.specs = list(specs)
        self.heads = nn.ModuleDict({s.name: create_head(s, in_features, dropout) for s in specs})
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    @property
    def head_names(self) -> list[str]:
        return [s.name for s in self.specs]

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
        return (x - self.mean) / self.std

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled backbone features [B, F]."""
        return self.body(self.normalize(x))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        feats = self.features(x)
        return tuple(self.heads[name](feats) for name in self.head_names)

    def param_groups(self) -> list[list[nn.Parameter]]:
        """Early backbone, late backbone, heads: the groups that get discriminative rates."""
        return [*backbone_groups(self.body), list(self.heads.parameters())]


def for_inference(model: MultiTaskModel, device: torch.device | str = "cpu") -> MultiTaskModel:
    """An eval-mode copy of `model` made fast for inference on `device`; `model` is unchanged.

    Each BatchNorm is folded into the convolution before it (torch.fx), and the weights take the
    channels_last layout that oneDNN and cuDNN convolve fastest; a batch made from HWC images by
    ``permute(0, 3, 1, 2)`` already has that layout. On the 2-core development machine this made
    MobileNetV2 prediction at 96 px 1.8x to 2.0x faster end to end
    (benchmarks/predict_speed.py). The outputs are the model's up to float
    rounding (within 5.4e-5 in probability there). A backbone torch.fx cannot trace is used
    unfolded.
    """
    fast = copy.deepcopy(model).eval()
    try:
        from torch.fx.experimental.optimization import fuse

        fast.body = fuse(fast.body)
    except Exception as exc:  # noqa: BLE001 - any tracing failure only costs the speed-up
        logger.debug("BatchNorm folding skipped for %s: %s", type(model.body).__name__, exc)
    return fast.to(device=device, memory_format=torch.channels_last)


def build_model(
    backbone: str, weights: str, specs: Sequence[HeadSpec], dropout: float = 0.2
) -> MultiTaskModel:
    body, in_features = create_backbone(backbone, weights)
    return MultiTaskModel(body, in_features, specs, dropout)


class MultiTaskLoss(nn.Module):
    """Weighted sum of each head's loss; a head only sees the rows that carry its label."""

    def __init__(self, heads: nn.ModuleDict, specs: Sequence[HeadSpec]) -> None:
        super().__init__()
        self._heads = list(heads.values())
        self.weights = [s.weight for s in specs]
        self.kinds = [s.type for s in specs]

    def forward(self, preds: Sequence[torch.Tensor], target: torch.Tensor) -> torch.Tensor:
        if isinstance(preds, torch.Tensor):
            preds = (preds,)
        total = preds[0].new_zeros((), dtype=torch.float32)
        for i, (head, out, w) in enumerate(zip(self._heads, preds, self.weights, strict=True)):
            if w:
                total = total + w * head.loss(out, target[:, i])
        return total

    def activation(self, preds: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        """Turn raw outputs into probabilities (used by fastai's get_preds)."""
        if isinstance(preds, torch.Tensor):  # fastai unwraps a one-head tuple
            preds = (preds,)
        return tuple(
            torch.softmax(p.float(), dim=-1) if k == "classification" else p.float()
            for p, k in zip(preds, self.kinds, strict=True)
        )


def head_modules(model: MultiTaskModel) -> list[Head]:
    return [model.heads[n] for n in model.head_names]
