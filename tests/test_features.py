"""The cached-feature fast path: a new head in seconds, the rest of the model untouched."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from zapmulti.artifacts import load_run
from zapmulti.cli import main
from zapmulti.errors import ConfigError, RunDirError
from zapmulti.features import extract_features, fit_head
from zapmulti.model.heads import HeadSpec, create_head
from zapmulti.predict import predict


def test_fit_head_learns_separable_features():
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(400, 16)).astype(np.float32)
    target = (feats[:, 0] + feats[:, 1] > 0).astype(np.int64)
    target[::7] = -1  # missing labels are ignored
    head = create_head(HeadSpec("h", ["a", "b"]), 16, 0.0)
    losses = fit_head(head, feats, target, np.arange(300), epochs=20, lr=1e-2, batch_size=32)
    assert losses[-1] < losses[0] / 2
    with torch.no_grad():
        pred = head(torch.from_numpy(feats[300:])).argmax(1).numpy()
    labelled = target[300:] != -1
    assert (pred[labelled] == target[300:][labelled]).mean() > 0.9


def test_features_match_the_model(trained_run, utzap_root):
    run = load_run(trained_run)
    images = np.random.default_rng(0).integers(0, 255, (5, 32, 32, 3), dtype=np.uint8)
    feats = extract_features(run.model, images, batch_size=2, show_progress=False)
    with torch.no_grad():
        direct = run.model.features(torch.from_numpy(images).permute(0, 3, 1, 2)).numpy()
    np.testing.assert_allclose(feats, direct, rtol=1e-4, atol=1e-5)


def test_add_head_keeps_the_other_heads(trained_run, utzap_root, tmp_path, capsys):
    out = tmp_path / "plus"
    assert (
        main(
            [
                "add-head",
                str(trained_run),
                "--name",
                "subcategory",
                "--column",
                "SubCategory",
                "--out",
                str(out),
                "--epochs",
                "10",
            ]
        )
        == 0
    )
    assert "subcategory" in capsys.readouterr().out
    new = load_run(out)
    assert new.head_names == ["gender", "category", "brand", "subcategory"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["subcategory"]["trained_on"] == "cached features"
    assert 0 <= metrics["subcategory"]["error_rate"] <= 1

    images = [utzap_root / "ut-zap50k-images-square"]
    before = predict(trained_run, images, workers=0)
    after = predict(out, images, workers=0)
    for head in ("gender", "category", "brand"):
        assert after[head].tolist() == before[head].tolist()
        np.testing.assert_allclose(after[f"{head}_prob"], before[f"{head}_prob"], rtol=1e-6)
    assert after["subcategory"].notna().all()

    with pytest.raises(ConfigError, match="already has a head named 'gender'"):
        from zapmulti.config import HeadConfig
        from zapmulti.features import add_head

        add_head(trained_run, HeadConfig(name="gender", column="Gender"), tmp_path / "x")
    with pytest.raises(RunDirError, match="--overwrite"):
        add_head(trained_run, HeadConfig(name="sub2", column="SubCategory"), out)
