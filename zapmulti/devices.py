"""One place that turns a user's device choice into a torch device, or a clear error."""

from __future__ import annotations

import torch

from zapmulti.errors import ConfigError


def resolve_device(choice: str | torch.device | None = "auto") -> torch.device:
    """``None``/``auto``: CUDA when available, else the CPU; ``cpu``; ``cuda`` or ``cuda:N``.

    Raises ConfigError for an unknown name or a CUDA device this machine does not have.
    """
    if choice is None or choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(choice)
    except (RuntimeError, ValueError):
        raise ConfigError(
            f"device {choice!r} is not a device name; use auto, cpu, cuda or cuda:N"
        ) from None
    if device.type == "cpu":
        return device
    if device.type != "cuda":
        raise ConfigError(f"device {choice!r}: zapmulti runs on cpu or cuda; use auto, cpu or cuda")
    if not torch.cuda.is_available():
        raise ConfigError(
            f"device {choice!r} asked for, but this machine has no CUDA GPU that torch can use; "
            "pass --device cpu (or auto)"
        )
    if device.index is not None and device.index >= torch.cuda.device_count():
        raise ConfigError(
            f"device {choice!r}: this machine has {torch.cuda.device_count()} CUDA device(s), "
            f"numbered from 0"
        )
    return device
