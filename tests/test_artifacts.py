"""Weights round trip: export, load in a new process, identical predictions; version checks."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from zapmulti import artifacts
from zapmulti.artifacts import load_run
from zapmulti.errors import RunDirError
from zapmulti.predict import predict

SCRIPT = """
import json, sys
from zapmulti.predict import predict
frame = predict(sys.argv[1], [sys.argv[2]], batch_size=4, workers=0)
mods = sorted(m.split('.')[0] for m in sys.modules)
print(json.dumps({"rows": frame.to_dict(orient="list"), "fastai": "fastai" in mods}))
"""


def test_predictions_identical_in_a_new_process(trained_run, utzap_root):
    images = utzap_root / "ut-zap50k-images-square"
    here = predict(trained_run, [images], batch_size=4, workers=0)
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(trained_run), str(images)],
        capture_output=True,
        text=True,
        check=True,
    )
    there = json.loads(out.stdout.strip().splitlines()[-1])
    assert there["rows"]["path"] == here["path"].tolist()
    for head in ("gender", "category", "brand"):
        assert there["rows"][head] == here[head].tolist()
        np.testing.assert_allclose(there["rows"][f"{head}_prob"], here[f"{head}_prob"], rtol=1e-6)
    assert not there["fastai"]  # inference does not need the training stack


def test_weights_are_safetensors_not_pickle(trained_run):
    from safetensors.torch import load_file

    state = load_file(str(trained_run / artifacts.WEIGHTS))
    assert any(k.startswith("heads.gender") for k in state)


def test_version_mismatch_is_named(trained_run, tmp_path):
    import shutil

    copy = tmp_path / "old"
    shutil.copytree(trained_run, copy)
    manifest = json.loads((copy / artifacts.MANIFEST).read_text())
    manifest.update(format=0, zapmulti_version="0.0.1")
    (copy / artifacts.MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(RunDirError, match="zapmulti 0.0.1 in run format 0"):
        load_run(copy)


def test_heads_that_do_not_match_the_config_are_named(trained_run, tmp_path):
    import shutil

    copy = tmp_path / "edited"
    shutil.copytree(trained_run, copy)
    text = (copy / artifacts.CONFIG).read_text().replace("name: brand", "name: maker")
    (copy / artifacts.CONFIG).write_text(text)
    with pytest.raises(RunDirError, match=r"\['gender', 'category', 'brand'\] do not match"):
        load_run(copy)
