"""A training process killed by Ctrl-C, SIGTERM or SIGKILL resumes from its last epoch."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
import torch
import yaml

from zapmulti import artifacts
from zapmulti.cli import main


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT])
def test_killed_training_resumes_from_last_epoch(sig, utzap_config_dict, tmp_path):
    raw = json.loads(json.dumps(utzap_config_dict))
    raw["model"]["image_size"] = 64
    raw["train"].update(frozen_epochs=1, unfrozen_epochs=8)
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    run = tmp_path / "run"
    ckpt = run / artifacts.CHECKPOINT

    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "zapmulti.cli", "train", str(cfg), "--out", str(run), "--quiet"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.time() + 180
    while time.time() < deadline and proc.poll() is None:
        if ckpt.exists():
            state = torch.load(ckpt, weights_only=True)["state"]
            if len(state["history"]) >= 2:
                break
        time.sleep(0.05)
    assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
    proc.send_signal(sig)
    proc.wait()
    err = proc.stderr.read().decode()
    proc.stderr.close()
    if sig != signal.SIGKILL:  # Ctrl-C and SIGTERM end with a message that says how to go on
        assert proc.returncode == 130, err[-2000:]
        assert "zapmulti train --resume" in err

    saved = torch.load(ckpt, weights_only=True)["state"]
    done = len(saved["history"])
    assert 2 <= done < 9
    assert not (run / artifacts.METRICS).exists()
    before = pd.read_csv(run / artifacts.HISTORY)

    assert main(["train", "--resume", str(run), "--quiet"]) == 0

    history = pd.read_csv(run / artifacts.HISTORY)
    assert history["global_epoch"].tolist() == list(range(9))
    assert history["stage"].tolist() == ["frozen"] + ["unfrozen"] * 8
    assert history["epoch"].tolist() == [0] + list(range(8))
    # the epochs finished before the kill are kept as they were, not re-run
    pd.testing.assert_frame_equal(history.iloc[: len(before)], before)
    assert (run / artifacts.METRICS).exists() and not ckpt.exists()
