"""Evaluation on another catalogue: unseen labels are counted, not silently dropped."""

from __future__ import annotations

import shutil

import pandas as pd
import pytest

from zapmulti.evaluate import evaluate


def test_unseen_labels_are_counted(trained_run, utzap_root, tmp_path):
    root = tmp_path / "z"
    shutil.copytree(utzap_root, root)
    meta_path = root / "ut-zap50k-data" / "meta-data.csv"
    meta = pd.read_csv(meta_path, dtype=str, keep_default_na=False)
    # Gender values the gender head never had: outside its classes, so missing, not unknown.
    meta.loc[:3, "Gender"] = "Unisex"
    meta.to_csv(meta_path, index=False)

    result = evaluate(trained_run, data=root, show_progress=False)
    assert result["_meta"]["split"] == "all"
    assert result["gender"]["unknown_labels"] == 0
    base = evaluate(trained_run, data=utzap_root, show_progress=False)
    assert result["gender"]["n"] == base["gender"]["n"] - 4

    # A category the model never saw cannot be scored: counted as unknown.
    shutil.copytree(
        root / "ut-zap50k-images-square" / "Boots", root / "ut-zap50k-images-square" / "Slippers"
    )
    import mat4py

    mat = root / "ut-zap50k-data" / "image-path.mat"
    paths = mat4py.loadmat(str(mat))["imagepath"]
    boots = [p for p in paths if p.startswith("Boots/") and "Pablosky" not in p]
    mat4py.savemat(
        str(mat), {"imagepath": paths + [p.replace("Boots/", "Slippers/", 1) for p in boots]}
    )
    extra = meta[meta["Category"] == "Boots"].copy()
    extra = extra[~extra["CID"].str.startswith("8029595")]
    extra["Category"] = "Slippers"
    pd.concat([meta, extra]).to_csv(meta_path, index=False)

    result = evaluate(trained_run, data=root, show_progress=False)
    assert result["category"]["unknown_labels"] == len(boots)
    assert result["category"]["n"] == base["category"]["n"]  # unknown rows are not scored
    assert result["_meta"]["rows"] == base["_meta"]["rows"] + len(boots)


def test_evaluate_missing_run_dir_is_named(tmp_path):
    from zapmulti.errors import RunDirError

    with pytest.raises(RunDirError, match="run directory not found"):
        evaluate(tmp_path / "nope")
