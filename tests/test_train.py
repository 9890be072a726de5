"""Training on the generated UT-Zap50K fixture writes a complete, reloadable run directory."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from zapmulti import artifacts
from zapmulti.config import config_from_dict
from zapmulti.data.labels import MISSING
from zapmulti.errors import ConfigError, DataError, RunDirError
from zapmulti.train import prepare_data, train


def test_run_directory_is_complete(trained_run):
    for name in [
        artifacts.WEIGHTS,
        artifacts.CONFIG,
        artifacts.VOCAB,
        artifacts.SPLIT,
        artifacts.HISTORY,
        artifacts.METRICS,
        artifacts.LR_PLOT,
        artifacts.MANIFEST,
    ]:
        assert (trained_run / name).is_file(), name
    assert not (trained_run / artifacts.CHECKPOINT).exists()
    assert (trained_run / artifacts.LR_PLOT).read_bytes()[:4] == b"\x89PNG"

    vocab = json.loads((trained_run / artifacts.VOCAB).read_text())
    assert vocab["gender"] == ["Men", "Women"]
    assert set(vocab["category"]) == {"Boots", "Sandals", "Shoes"}
    assert "other" in vocab["brand"]  # brands under min_count=5 fold

    history = pd.read_csv(trained_run / artifacts.HISTORY)
    assert history["stage"].tolist() == ["frozen", "unfrozen"]
    assert {"train_loss", "valid_loss", "gender_err", "category_f1"} <= set(history.columns)

    metrics = json.loads((trained_run / artifacts.METRICS).read_text())
    for head in ("gender", "category", "brand"):
        assert 0.0 <= metrics[head]["error_rate"] <= 1.0
        assert metrics[head]["accuracy"] == pytest.approx(1 - metrics[head]["error_rate"])
    assert np.isfinite(metrics["_meta"]["lr"]) and metrics["_meta"]["lr"] > 0


def test_split_is_grouped_by_product(trained_run):
    split = pd.read_csv(trained_run / artifacts.SPLIT)
    product = split["key"].str.split("/").str[-1].str.split(".").str[0]
    assert (split.groupby(product)["split"].nunique() == 1).all()
    assert set(split["split"]) == {"train", "valid"}


def test_missing_labels_are_masked_per_head(utzap_config_dict):
    prepared = prepare_data(config_from_dict(utzap_config_dict), show_progress=False)
    gender = prepared.table["Gender"]
    targets = prepared.targets[:, 0]
    for raw in ("Boys", "Men;Women"):
        rows = (gender == raw).to_numpy()
        assert rows.any() and (targets[rows] == MISSING).all()
        assert (prepared.targets[rows, 1] != MISSING).all()  # category still trains
    assert (targets[(gender == "Women").to_numpy()] == 1).all()


def test_existing_run_dir_is_not_overwritten(trained_run, utzap_config_dict):
    before = (trained_run / artifacts.WEIGHTS).read_bytes()
    with pytest.raises(RunDirError, match="--overwrite"):
        train(config_from_dict(utzap_config_dict), trained_run, show_progress=False)
    assert (trained_run / artifacts.WEIGHTS).read_bytes() == before


def test_failed_setup_leaves_no_run_to_overwrite(utzap_config_dict, tmp_path):
    """A config error found while building the loaders does not block the corrected rerun."""
    raw = json.loads(json.dumps(utzap_config_dict))
    raw["train"].update(sampler="m_per_class", sampler_head="category", m_per_class=2)
    out = tmp_path / "run"
    with pytest.raises(ConfigError, match="m_per_class"):
        train(config_from_dict(raw), out, show_progress=False)
    assert not out.exists()

    kept = tmp_path / "mine"  # a folder the user made stays, emptied of what train wrote
    kept.mkdir()
    with pytest.raises(ConfigError, match="m_per_class"):
        train(config_from_dict(raw), kept, show_progress=False)
    assert kept.is_dir() and not any(kept.iterdir())

    raw["train"].update(m_per_class=4, batch_size=12, frozen_epochs=0)
    run = train(config_from_dict(raw), out, show_progress=False)
    assert (run / artifacts.WEIGHTS).is_file()


def test_bad_images_skip_or_stop(utzap_root, utzap_config_dict, tmp_path):
    import shutil

    root = tmp_path / "z"
    shutil.copytree(utzap_root, root)
    victim = next((root / "ut-zap50k-images-square" / "Shoes" / "Loafers").rglob("*.jpg"))
    victim.write_bytes(b"not a jpeg at all")
    raw = json.loads(json.dumps(utzap_config_dict))
    raw["data"]["root"] = str(root)
    raw["train"].update(frozen_epochs=0, unfrozen_epochs=1)

    run = train(config_from_dict(raw), tmp_path / "run", show_progress=False)
    skipped = pd.read_csv(run / artifacts.SKIPPED)
    assert skipped["path"].tolist() == [str(victim)]
    assert "not an image" in skipped["reason"].iloc[0]
    assert json.loads((run / artifacts.METRICS).read_text())["_meta"]["skipped_images"] == 1

    raw["train"]["bad_images"] = "stop"
    with pytest.raises(DataError, match=str(victim.name)):
        train(config_from_dict(raw), tmp_path / "run2", show_progress=False)


def test_saved_split_is_reused(trained_run, utzap_config_dict, tmp_path):
    raw = json.loads(json.dumps(utzap_config_dict))
    raw["split"] = {"valid_pct": 0.5, "seed": 99, "file": str(trained_run / artifacts.SPLIT)}
    raw["train"].update(frozen_epochs=0, unfrozen_epochs=1)
    run = train(config_from_dict(raw), tmp_path / "again", show_progress=False)
    first = pd.read_csv(trained_run / artifacts.SPLIT)
    second = pd.read_csv(run / artifacts.SPLIT)
    pd.testing.assert_frame_equal(first, second)  # valid_pct and seed are ignored


def test_a_diverging_loss_stops_training_with_a_message(utzap_config_dict, tmp_path):
    """A learning rate that blows the loss up ends training with an error, not a saved run."""
    raw = json.loads(json.dumps(utzap_config_dict))
    raw["train"].update(lr=1e37, frozen_epochs=3, unfrozen_epochs=0)
    out = tmp_path / "run"
    with pytest.raises(DataError, match="training diverged: the loss was .* lower train.lr"):
        train(config_from_dict(raw), out, show_progress=False)
    assert not (out / artifacts.WEIGHTS).exists() and not (out / artifacts.METRICS).exists()


def test_diverging_heads_on_cached_features_stop(trained_run, tmp_path):
    from zapmulti.config import HeadConfig
    from zapmulti.features import add_head

    head = HeadConfig(name="sub", column="SubCategory")
    with pytest.raises(ConfigError, match="training the heads diverged.*lower --lr"):
        add_head(trained_run, head, tmp_path / "plus", lr=1e30, show_progress=False)
    assert not (tmp_path / "plus" / artifacts.WEIGHTS).exists()
