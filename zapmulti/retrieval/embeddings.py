"""Embeddings of catalogue images: pooled backbone features or a trained embedding head.

Every vector leaves here L2-normalised (float32), so an inner product is a cosine similarity.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from fastprogress.fastprogress import progress_bar

from zapmulti.artifacts import Run
from zapmulti.data.images import load_array
from zapmulti.devices import resolve_device
from zapmulti.errors import BadImageError, ConfigError
from zapmulti.model.multitask import MultiTaskModel, for_inference

logger = logging.getLogger(__name__)

BACKBONE = "backbone"
EMBEDDING_HEAD_TYPE = "embedding"


def embedding_heads(model: MultiTaskModel) -> list[str]:
    """Names of the model's embedding heads, in head order."""
    return [s.name for s in model.specs if s.type == EMBEDDING_HEAD_TYPE]


def resolve_embedding(model: MultiTaskModel, choice: str = "auto") -> str:
    """Turn a user's choice into `"backbone"` or the name of an embedding head.

    Args:
        model: the run's model.
        choice: ``auto`` (the first embedding head, else the backbone), ``backbone``, ``head``
            (the first embedding head) or the name of an embedding head.
    """
    heads = embedding_heads(model)
    if choice == "auto":
        return heads[0] if heads else BACKBONE
    if choice == BACKBONE:
        return BACKBONE
    if choice == "head" and heads:
        return heads[0]
    if choice in heads:
        return choice
    raise ConfigError(
        f"embedding {choice!r}: the run has no such embedding head (its embedding heads: "
        f"{heads or 'none'}); choose 'auto', 'backbone'"
        + (", 'head' or one of those names" if heads else ", or train a head with type: embedding")
    )


def embedding_fingerprint(model: MultiTaskModel, kind: str) -> str:
    """A hash of every weight that makes the embedding `kind`: the backbone, plus the head.

    The index manifest keeps it, so a search with a model whose embedding changed since the
    build (retrained, head replaced) is refused instead of returning meaningless neighbours.
    Other heads do not count: adding or retraining a classification head keeps the index valid.
    """
    import hashlib

    prefixes = ("body.",) if kind == BACKBONE else ("body.", f"heads.{kind}.")
    digest = hashlib.blake2b(digest_size=16)
    for name, tensor in sorted(model.state_dict().items()):
        if name.startswith(prefixes):
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def embedding_dim(model: MultiTaskModel, kind: str) -> int:
    if kind == BACKBONE:
        return int(model.in_features)
    return int(model.heads[kind].dim)


@torch.inference_mode()
def embed_batches(
    model: MultiTaskModel,
    batches: Iterable[torch.Tensor],
    kind: str = BACKBONE,
    device: str | torch.device | None = None,
    total: int | None = None,
) -> np.ndarray:
    """L2-normalised embeddings [N, D] (float32) of uint8 NCHW image batches."""
    dev = resolve_device(device)
    model = for_inference(model, dev)
    head = None if kind == BACKBONE else model.heads[kind]
    chunks: list[np.ndarray] = []
    bar = progress_bar(batches, total=total, leave=False) if total else batches
    for x in bar:
        x = x.to(dev, non_blocking=True)
        if dev.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast("cuda", dtype=torch.bfloat16):
                out = model.features(x)
                out = head(out) if head is not None else out
        else:
            out = model.features(x)
            out = head(out) if head is not None else out
        chunks.append(F.normalize(out.float(), dim=1).cpu().numpy())
    if not chunks:
        return np.zeros((0, embedding_dim(model, kind)), dtype=np.float32)
    return np.ascontiguousarray(np.concatenate(chunks), dtype=np.float32)


def embed_array(
    model: MultiTaskModel,
    images: np.ndarray,
    rows: np.ndarray,
    kind: str = BACKBONE,
    batch_size: int = 128,
    device: str | torch.device | None = None,
    show_progress: bool = True,
) -> np.ndarray:
    """Embeddings of rows of a preprocessed (N, H, W, 3) uint8 array, such as the image cache."""

    def batches() -> Iterable[torch.Tensor]:
        for start in range(0, len(rows), batch_size):
            idx = rows[start : start + batch_size]
            yield torch.from_numpy(np.ascontiguousarray(images[idx])).permute(0, 3, 1, 2)

    total = (len(rows) + batch_size - 1) // batch_size if show_progress else None
    return embed_batches(model, batches(), kind, device, total)


def embed_files(
    run: Run,
    paths: Sequence[str | os.PathLike],
    kind: str = BACKBONE,
    batch_size: int = 64,
    device: str | torch.device | None = None,
) -> tuple[np.ndarray, list[str], dict[str, str]]:
    """Embed image files preprocessed as the run was trained.

    Returns:
        The embeddings of the files that could be read, those files, and the others with the
        reason each could not be read.
    """
    m = run.config.model
    arrays, ok, failed = [], [], {}
    for p in paths:
        try:
            arrays.append(load_array(p, m.image_size, m.resize, m.pad_value))
            ok.append(str(p))
        except BadImageError as exc:
            failed[str(p)] = exc.reason
    for path, why in failed.items():
        logger.warning("query %s cannot be read (%s); it is left out", path, why)
    if not arrays:
        return np.zeros((0, embedding_dim(run.model, kind)), dtype=np.float32), ok, failed
    stack = np.stack(arrays)
    vectors = embed_array(
        run.model, stack, np.arange(len(stack)), kind, batch_size, device, show_progress=False
    )
    return vectors, ok, failed
