"""Guards on where zapmulti writes: --overwrite replaces only its own folders, one trainer per run,
and device names are checked before any work."""

from __future__ import annotations

import json

import pytest
import torch

from zapmulti.artifacts import prepare_run_dir
from zapmulti.config import config_from_dict
from zapmulti.devices import resolve_device
from zapmulti.errors import ConfigError, RunDirError
from zapmulti.fileio import exclusive, replaceable


def test_replaceable_only_replaces_its_own_kind(tmp_path):
    kind = dict(markers=("manifest.json",), what="index folder", hint="pass --overwrite")
    assert replaceable(tmp_path / "new", False, **kind) is False  # absent
    (tmp_path / "empty").mkdir()
    assert replaceable(tmp_path / "empty", False, **kind) is False
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "manifest.json").write_text('{"zapmulti_version": "0.1.0", "format": 1}')
    with pytest.raises(ValueError, match="already exists and is not empty; pass --overwrite"):
        replaceable(mine, False, **kind)
    assert replaceable(mine, True, **kind) is True
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "notes.txt").write_text("keep")
    with pytest.raises(ValueError, match="not an index folder \\(it has no manifest.json\\)"):
        replaceable(theirs, True, **kind)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="is a file, not a folder"):
        replaceable(tmp_path / "file", True, **kind)


def test_train_overwrite_never_deletes_a_foreign_folder(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "shoe.jpg").write_bytes(b"not mine to delete")
    with pytest.raises(RunDirError, match="not a run directory \\(it has no run.json"):
        prepare_run_dir(folder, overwrite=True)
    assert (folder / "shoe.jpg").read_bytes() == b"not mine to delete"
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text('{"zapmulti_version": "0.1.0", "format": 1}')
    assert prepare_run_dir(run, overwrite=True) == run and not any(run.iterdir())
    # A file named like a marker is not enough: another tool's run.json or checkpoint.pt.
    other = tmp_path / "other-project"
    other.mkdir()
    (other / "run.json").write_text('{"epochs": 3}')
    (other / "checkpoint.pt").write_bytes(b"someone else's weights")
    with pytest.raises(RunDirError, match="not a run directory"):
        prepare_run_dir(other, overwrite=True)
    assert (other / "checkpoint.pt").read_bytes() == b"someone else's weights"


def test_one_trainer_per_run_directory(utzap_config_dict, tmp_path):
    """A second training into a run that is in use fails at once and touches nothing."""
    from zapmulti.train import resume, train

    run = tmp_path / "run"
    config = config_from_dict(json.loads(json.dumps(utzap_config_dict)))
    with exclusive(run, "run directory"):
        holder = (tmp_path / ".run.lock").read_text()
        with pytest.raises(RunDirError, match=f"run directory .*run is in use by {holder}"):
            train(config, run, show_progress=False)
        with pytest.raises(RunDirError, match="is in use by process"):
            resume(run, show_progress=False)
    assert not run.exists() and not (tmp_path / ".run.lock").exists()  # released, cleaned up
    with exclusive(run, "run directory"):  # free again
        pass
    link = tmp_path / "link"
    link.symlink_to(run, target_is_directory=False)
    # a symlink to the run shares its lock
    with exclusive(run, "run directory"), pytest.raises(BlockingIOError):  # noqa: SIM117
        with exclusive(link, "run directory"):
            pass


def test_failed_setup_keeps_the_run_it_would_replace(trained_run, utzap_config_dict, tmp_path):
    """train --overwrite sets the old run aside until the new one's setup succeeds."""
    import shutil

    from zapmulti.train import train

    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    before = sorted(p.name for p in run.iterdir())
    raw = json.loads(json.dumps(utzap_config_dict))
    raw["data"]["root"] = str(tmp_path / "no-such-catalogue")
    with pytest.raises(Exception, match="no-such-catalogue"):
        train(config_from_dict(raw), run, overwrite=True, show_progress=False)
    assert sorted(p.name for p in run.iterdir()) == before
    weights = (run / "model.safetensors").read_bytes()
    assert weights == (trained_run / "model.safetensors").read_bytes()
    assert not list(tmp_path.glob(".run.*"))  # nothing set aside is left behind


def test_bad_numbers_in_config_are_refused():
    from zapmulti.config import config_from_dict as make

    base = {"data": {"source": "folder", "root": "/tmp"}, "heads": [{"name": "a", "column": "b"}]}
    for train in ({"lr": float("inf")}, {"lr": float("nan")}, {"seed": -1}):
        with pytest.raises(ConfigError, match=f"train.{next(iter(train))}"):
            make({**base, "train": train})


def test_device_names_are_checked():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(None) == resolve_device("auto")
    with pytest.raises(ConfigError, match="'tpu' is not a device name; use auto, cpu, cuda"):
        resolve_device("tpu")
    with pytest.raises(ConfigError, match="zapmulti runs on cpu or cuda"):
        resolve_device("meta")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA GPU .* pass --device cpu"):
            resolve_device("cuda")
    else:
        with pytest.raises(ConfigError, match="CUDA device\\(s\\), numbered from 0"):
            resolve_device(f"cuda:{torch.cuda.device_count()}")
