"""benchmarks/gpu_train.py runs its tiny CPU version (the real one needs CUDA)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_train.py"


def _load():
    spec = importlib.util.spec_from_file_location("gpu_train", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gpu_train_tiny_on_cpu(tmp_path, capsys):
    result = _load().main(["--tiny", "--json", str(tmp_path / "r.json")])
    assert result["steps"] == 2 and result["batch_size"] == 4
    assert result["images_per_s"] > 0 and result["tflops_per_s"] > 0
    assert result["final_loss"] == result["final_loss"]  # not NaN
    assert not result["bf16_autocast"]  # fp32 on CPU
    assert "images/s" in capsys.readouterr().out
    assert (tmp_path / "r.json").is_file()
