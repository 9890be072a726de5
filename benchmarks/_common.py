"""Helpers shared by the benchmark scripts: config loading, machine description, result files."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = REPO / "configs" / "sample-fashion.yaml"


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    return f"{os.cpu_count()} CPU cores ({cpu}), torch {torch.__version__}, {gpu}"


def save_result(name: str, result: dict, out: str | None) -> Path:
    """Write `result` with the date and machine to OUT (default runs/benchmarks/NAME.json)."""
    from zapmulti.artifacts import write_json

    result = {"benchmark": name, "date": time.strftime("%Y-%m-%d"), "machine": machine(), **result}
    path = Path(out) if out else REPO / "runs" / "benchmarks" / f"{name}.json"
    write_json(path, result)
    print(json.dumps(result, indent=2, default=str))
    print(f"written to {path}")
    return path


class Timer:
    """Wall-clock seconds of a block (with CUDA synchronised at both ends)."""

    def __enter__(self) -> Timer:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.seconds = time.perf_counter() - self.start
