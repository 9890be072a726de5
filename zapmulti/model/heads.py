"""The head registry: a head type is a module that maps pooled features to outputs, with a loss.

A new head type is a subclass of `Head` decorated with `@register_head("name")`; a config entry
with `type: name` then builds it. A row whose target is MISSING (-1) adds nothing to a head's loss.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from zapmulti.errors import ConfigError

MISSING = -1
HEAD_TYPES: dict[str, type[Head]] = {}


@dataclass
class HeadSpec:
    """What the model needs to know of a head: its classes and its share of the loss."""

    name: str
    classes: list[str]
    type: str = "classification"
    weight: float = 1.0
    class_weights: list[float] | None = None
    options: dict = field(default_factory=dict)


def register_head(name: str) -> Callable[[type[Head]], type[Head]]:
    def wrap(cls: type[Head]) -> type[Head]:
        HEAD_TYPES[name] = cls
        return cls

    return wrap


def create_head(spec: HeadSpec, in_features: int, dropout: float) -> Head:
    try:
        cls = HEAD_TYPES[spec.type]
    except KeyError:
        raise ConfigError(
            f"head {spec.name!r}: unknown type {spec.type!r}; registered: {sorted(HEAD_TYPES)}"
        ) from None
    return cls(spec, in_features, dropout)


class Head(nn.Module):
    """Base class: pooled features [B, F] -> head output."""

    def __init__(self, spec: HeadSpec, in_features: int, dropout: float) -> None:
        super().__init__()
        self.spec = spec

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


@register_head("classification")
class ClassificationHead(Head):
    """Dropout and a linear layer; cross-entropy over the rows that have a label."""

    def __init__(self, spec: HeadSpec, in_features: int, dropout: float) -> None:
        super().__init__(spec, in_features, dropout)
        if len(spec.classes) < 2:
            raise ConfigError(f"head {spec.name!r} needs at least 2 classes, has {spec.classes}")
        self.net = nn.Sequential(nn.Dropout(dropout), nn.Linear(in_features, len(spec.classes)))
        weights = spec.class_weights
        self.register_buffer(
            "class_weight",
            torch.tensor(weights, dtype=torch.float32) if weights is not None else None,
            persistent=False,
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net(features)

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return masked_cross_entropy(output, target, self.class_weight)


def masked_cross_entropy(
    logits: torch.Tensor, target: torch.Tensor, class_weight: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean cross-entropy over labelled rows; exactly 0 (still in the graph) when none are."""
    labelled = target != MISSING
    if not bool(labelled.any()):
        return logits.sum() * 0.0
    weight = class_weight.to(logits.dtype) if class_weight is not None else None
    return F.cross_entropy(logits[labelled].float(), target[labelled], weight=weight)


def specs_from_vocabs(
    heads: Sequence, vocabs: dict[str, list[str]], class_weights: dict[str, list[float] | None]
) -> list[HeadSpec]:
    """HeadSpecs from head configs plus their vocabularies and optional class weights."""
    return [
        HeadSpec(
            name=h.name,
            classes=list(vocabs[h.name]),
            type=h.type,
            weight=h.weight,
            class_weights=class_weights.get(h.name),
        )
        for h in heads
    ]
