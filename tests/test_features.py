"""The cached-feature fast path: a new head in seconds, the rest of the model untouched."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from zapmulti.artifacts import load_run
from zapmulti.cli import main
from zapmulti.errors import ConfigError, RunDirError
from zapmulti.features import extract_features, fit_head, fit_heads
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


def test_fit_heads_trains_heads_jointly_with_missing_labels():
    rng = np.random.default_rng(1)
    feats = rng.normal(size=(600, 16)).astype(np.float32)
    targets = np.stack([(feats[:, 0] > 0).astype(np.int64), feats[:, 1:4].argmax(1)], axis=1)
    targets[:200, 0] = -1  # head 0 unlabelled on these rows: head 1 still learns from them
    targets[300:450, 1] = -1
    targets[450:500] = -1  # rows with no label at all are left out
    heads = [
        create_head(HeadSpec("sign", ["neg", "pos"]), 16, 0.5),
        create_head(HeadSpec("bucket", ["lo", "mid", "hi"]), 16, 0.5),
    ]
    losses = fit_heads(heads, feats, targets, np.arange(500), 15, lr=5e-2, batch_size=64)
    assert len(losses) == 15 and losses[-1] < losses[0] / 2
    assert all(not h.training for h in heads)
    with torch.no_grad():
        x = torch.from_numpy(feats[500:])
        assert (heads[0](x).argmax(1).numpy() == targets[500:, 0]).mean() > 0.9
        assert (heads[1](x).argmax(1).numpy() == targets[500:, 1]).mean() > 0.85

    only_missing = targets.copy()
    only_missing[:500, 1] = -1
    with pytest.raises(ConfigError, match="'bucket' has no labelled training row"):
        fit_heads(heads, feats, only_missing, np.arange(500))
    with pytest.raises(ValueError, match=r"targets must be \[rows, 2\]"):
        fit_heads(heads, feats, targets[:, :1], np.arange(500))


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
    with pytest.raises(RunDirError, match="pass --overwrite to replace it or choose another --out"):
        add_head(trained_run, HeadConfig(name="sub2", column="SubCategory"), out)
    # The same command gives the same head: seeded initial weights and a seeded shuffle.
    from safetensors.torch import load_file

    again = tmp_path / "again"
    argv = ["add-head", str(trained_run), "--name", "subcategory", "--column", "SubCategory"]
    assert main([*argv, "--out", str(again), "--epochs", "10", "--quiet"]) == 0
    first, second = load_file(out / "model.safetensors"), load_file(again / "model.safetensors")
    assert torch.equal(
        first["heads.subcategory.net.1.weight"], second["heads.subcategory.net.1.weight"]
    )
    assert main([*argv, "--name", "bad name", "--out", str(tmp_path / "z")]) == 2
    assert "invalid config add-head options" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="no head named 'colour' to replace.*drop --replace"):
        add_head(
            trained_run, HeadConfig(name="colour", column="Color"), tmp_path / "y", replace=True
        )


def test_add_head_replace_retrains_one_head(trained_run, utzap_root, tmp_path, capsys):
    """--replace retrains an existing head (here on another column); the others stay exact."""
    out = tmp_path / "replaced"
    args = ["add-head", str(trained_run), "--name", "brand", "--column", "SubCategory"]
    args += ["--min-count", "1"]  # brand folds under 5; only the given settings change
    assert main([*args, "--out", str(out), "--replace"]) == 0
    before, after = load_run(trained_run), load_run(out)
    assert after.head_names == ["gender", "category", "brand"]
    assert after.vocabs["brand"] != before.vocabs["brand"]  # now the SubCategory classes
    assert after.config.heads[2].column == "SubCategory"
    images = [utzap_root / "ut-zap50k-images-square"]
    old, new = predict(trained_run, images, workers=0), predict(out, images, workers=0)
    for head in ("gender", "category"):
        np.testing.assert_allclose(new[f"{head}_prob"], old[f"{head}_prob"], rtol=1e-6)
    assert set(new["brand"]) <= set(after.vocabs["brand"])


def test_add_head_replace_keeps_settings_and_place(trained_run, tmp_path, capsys):
    """--replace without --column retrains the head as it was: same column, classes, place."""
    before = load_run(trained_run)
    out = tmp_path / "gender-again"
    argv = ["add-head", str(trained_run), "--name", "gender", "--replace", "--out", str(out)]
    assert main(argv) == 0
    after = load_run(out)
    assert after.head_names == before.head_names  # gender stays first: still the primary head
    old, new = before.config.heads[0], after.config.heads[0]
    assert new.model_dump() == old.model_dump()  # classes [Men, Women], weight, ... all kept
    assert after.vocabs["gender"] == before.vocabs["gender"]
    assert "gender" in capsys.readouterr().out
    assert main(["add-head", str(trained_run), "--name", "x", "--out", str(tmp_path / "z")]) == 2
    assert "--column is required" in capsys.readouterr().err
