"""The head registry: a head type is a module that maps pooled features to outputs, with a loss.

A new head type is a subclass of `Head` decorated with `@register_head("name")`; a config entry
with `type: name` then builds it. A row whose target is MISSING (-1) adds nothing to a head's loss.
"""

from __future__ import annotations

import inspect
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


EMBEDDING_OPTIONS = {
    "dim": "embedding size (default 128)",
    "loss": "a pytorch-metric-learning loss, e.g. multi_similarity, arcface, triplet_margin",
    "loss_args": "keyword arguments of the loss",
    "miner": "a pytorch-metric-learning miner, e.g. multi_similarity, or null for none",
    "miner_args": "keyword arguments of the miner",
    "ignore": "class names whose rows stay out of the loss, e.g. [other] after min_count folding",
}


def _pml_class(module: object, kind: str, name: str, head: str) -> type:
    """Find a pytorch-metric-learning class by a loose name: 'multi_similarity' or 'ArcFaceLoss'."""
    suffix = kind.capitalize()
    classes = {
        n.lower().removesuffix(kind): getattr(module, n)
        for n in dir(module)
        if n.endswith(suffix) and not n.startswith(("Base", "Generic"))
    }
    key = name.replace("_", "").replace("-", "").lower().removesuffix(kind)
    if key not in classes:
        raise ConfigError(
            f"head {head!r}: options.{kind} {name!r} is not a pytorch-metric-learning {kind}; "
            f"choose one of {sorted(classes)}"
        )
    return classes[key]


def _takes(cls: type, parameter: str) -> bool:
    """Whether `cls` or one of its bases accepts `parameter` in __init__ (some pass *args up)."""
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is not None and parameter in inspect.signature(init).parameters:
            return True
    return False


@register_head("embedding")
class EmbeddingHead(Head):
    """Dropout and a linear projection to `dim`, trained with a metric-learning loss and miner.

    Rows whose label is MISSING (or named in `options.ignore`) are left out before mining, so they
    are neither anchors, positives nor negatives. Losses with learned class weights (ArcFace,
    CosFace, proxy losses) are sub-modules, so they train with the head and save with the run.
    """

    def __init__(self, spec: HeadSpec, in_features: int, dropout: float) -> None:
        super().__init__(spec, in_features, dropout)
        from pytorch_metric_learning import losses, miners

        options = dict(spec.options)
        unknown = sorted(set(options) - set(EMBEDDING_OPTIONS))
        if unknown:
            raise ConfigError(
                f"head {spec.name!r}: unknown embedding option(s) {unknown}; "
                f"valid: {sorted(EMBEDDING_OPTIONS)}"
            )
        if len(spec.classes) < 2:
            raise ConfigError(f"head {spec.name!r} needs at least 2 labels, has {spec.classes}")
        self.dim = int(options.get("dim", 128))
        if self.dim < 2:
            raise ConfigError(f"head {spec.name!r}: options.dim must be 2 or more, got {self.dim}")
        self.net = nn.Sequential(nn.Dropout(dropout), nn.Linear(in_features, self.dim))

        loss_cls = _pml_class(
            losses, "loss", str(options.get("loss", "multi_similarity")), spec.name
        )
        loss_args = dict(options.get("loss_args") or {})
        if _takes(loss_cls, "num_classes"):
            loss_args.setdefault("num_classes", len(spec.classes))
        if _takes(loss_cls, "embedding_size"):
            loss_args.setdefault("embedding_size", self.dim)
        self.loss_fn = loss_cls(**loss_args)
        miner_name = options.get("miner", "multi_similarity")
        miner_name = None if str(miner_name).lower() in ("none", "") else miner_name
        self.miner = (
            _pml_class(miners, "miner", str(miner_name), spec.name)(
                **dict(options.get("miner_args") or {})
            )
            if miner_name
            else None
        )
        # A name that is not a label of this run (no class was folded) is simply not there.
        ignored = set(options.get("ignore") or [])
        self.register_buffer(
            "ignored",
            torch.tensor([i for i, c in enumerate(spec.classes) if c in ignored], dtype=torch.long),
            persistent=False,
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net(features)

    # With random batches and a label of many small classes (a product id), a batch rarely
    # holds two rows of one class and pair losses see few positives: set train.sampler:
    # m_per_class (data/loaders.py). Proxy losses (arcface, proxy_anchor) do not need pairs.
    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Metric-learning loss over the labelled rows; 0 (still in the graph) under two rows."""
        labelled = target != MISSING
        if len(self.ignored):
            labelled &= ~torch.isin(target, self.ignored)
        anchor = output.sum() * 0.0  # keeps the graph when nothing can be mined
        if int(labelled.sum()) < 2:
            return anchor
        embeddings, labels = output[labelled].float(), target[labelled]
        pairs = self.miner(embeddings, labels) if self.miner is not None else None
        return self.loss_fn(embeddings, labels, pairs) + anchor


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
            options=dict(h.options),
        )
        for h in heads
    ]
