"""Every CLI command, on the generated fixture."""

from __future__ import annotations

import io
import json
import zipfile

import pandas as pd
import pytest
import yaml

from zapmulti import download
from zapmulti.cli import main
from zapmulti.config import DataConfig
from zapmulti.data.sources import load_table


def _write_config(tmp_path, raw) -> str:
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def test_train_evaluate_predict(utzap_config_dict, utzap_root, tmp_path, capsys, caplog):
    caplog.set_level("INFO", logger="zapmulti")
    cfg = _write_config(tmp_path, utzap_config_dict)
    run = tmp_path / "run"
    assert (
        main(
            [
                "train",
                cfg,
                "--out",
                str(run),
                "--quiet",
                "--set",
                "train.unfrozen_epochs=2",
                "--set",
                "heads.brand.weight=0.2",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "gender" in out and "run directory" in out
    # without progress bars, each epoch (1 frozen + 2 unfrozen) is still one log line
    epochs = [r.getMessage() for r in caplog.records if "epoch " in r.getMessage()]
    stages = ["frozen epoch 1/1", "unfrozen epoch 1/2", "unfrozen epoch 2/2"]
    assert [line.split(":")[0] for line in epochs] == stages
    assert all("valid_loss=" in line and "gender_err=" in line for line in epochs)
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["train"]["unfrozen_epochs"] == 2 and saved["heads"][2]["weight"] == 0.2

    assert main(["train", cfg, "--out", str(run), "--quiet"]) == 2
    assert "already exists" in capsys.readouterr().err

    assert main(["evaluate", str(run)]) == 0
    out = capsys.readouterr().out
    result = json.loads((run / "evaluation.json").read_text())
    assert set(result) >= {"gender", "category", "brand", "_meta"}
    assert result["_meta"]["split"] == "valid"
    assert "macro_f1" in out and "category" in out
    # the evaluation of the validation split matches what training recorded
    trained = json.loads((run / "metrics.json").read_text())
    assert result["gender"]["accuracy"] == pytest.approx(trained["gender"]["accuracy"], abs=1e-6)

    assert (
        main(["evaluate", str(run), "--data", str(utzap_root), "--out", str(tmp_path / "all.json")])
        == 0
    )
    whole = json.loads((tmp_path / "all.json").read_text())
    assert whole["_meta"]["split"] == "all" and whole["category"]["n"] == 35

    images = utzap_root / "ut-zap50k-images-square"
    one = next(images.rglob("*.jpg"))
    bad = tmp_path / "broken.jpg"
    bad.write_text("nope")
    for suffix in ("csv", "json"):
        target = tmp_path / f"pred.{suffix}"
        assert (
            main(
                [
                    "predict",
                    str(run),
                    str(images),
                    str(one),
                    str(bad),
                    "--out",
                    str(target),
                    "--batch-size",
                    "4",
                ]
            )
            == 0
        )
    frame = pd.read_csv(tmp_path / "pred.csv", keep_default_na=False)
    assert list(frame.columns) == [
        "path",
        "gender",
        "gender_prob",
        "category",
        "category_prob",
        "brand",
        "brand_prob",
        "error",
    ]
    assert len(frame) == 35 + 2
    assert set(frame["category"][:-1]) <= {"Boots", "Sandals", "Shoes"}
    assert frame["gender_prob"][:-1].astype(float).between(0.5, 1.0).all()
    assert frame["error"].iloc[-1] != "" and frame["gender"].iloc[-1] == ""
    records = json.loads((tmp_path / "pred.json").read_text())
    assert records[0]["path"] == frame["path"][0]


def test_predict_to_stdout_is_clean_csv(trained_run, utzap_root, capsys):
    """Without --out the CSV is the output: no progress bar may be mixed into it."""
    assert main(["predict", str(trained_run), str(utzap_root / "ut-zap50k-images-square")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("path,gender,gender_prob,")
    frame = pd.read_csv(io.StringIO(out), keep_default_na=False)
    assert len(frame) == 35 and (frame["error"] == "").all()


def test_predict_missing_path_is_an_error(trained_run, capsys):
    assert main(["predict", str(trained_run), "/no/such/image.jpg"]) == 2
    assert "no such file or folder: /no/such/image.jpg" in capsys.readouterr().err


def test_predict_input_errors_are_messages(trained_run, tmp_path, capsys):
    """An empty folder, a zero batch and a device this machine lacks: a message, no traceback."""
    import torch

    (tmp_path / "empty").mkdir()
    assert main(["predict", str(trained_run), str(tmp_path / "empty")]) == 2
    assert "no image found in" in capsys.readouterr().err
    with pytest.raises(SystemExit) as stop:
        main(["predict", str(trained_run), str(tmp_path), "--batch-size", "0"])
    assert stop.value.code == 2
    assert "--batch-size: must be at least 1, got 0" in capsys.readouterr().err
    shoe = _any_image(tmp_path)
    assert main(["predict", str(trained_run), str(shoe), "--device", "tpu"]) == 2
    assert "'tpu' is not a device name" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert main(["predict", str(trained_run), str(shoe), "--device", "cuda"]) == 2
        assert "no CUDA GPU" in capsys.readouterr().err


def _any_image(folder):
    from PIL import Image

    path = folder / "shoe.png"
    Image.new("RGB", (20, 20)).save(path)
    return path


def test_download_offline_says_what_to_fetch(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(download, "UTZAP_BASE", "http://127.0.0.1:9/")
    assert main(["download", "ut-zap50k", "--to", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err
    assert "cannot download http://127.0.0.1:9/ut-zap50k-images-square.zip" in err
    assert str(tmp_path / "d" / "ut-zap50k-data.zip") in err
    assert "ut-zap50k-data/image-path.mat" in err


def test_download_accepts_local_archives(utzap_root, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(download, "UTZAP_BASE", "http://127.0.0.1:9/")
    archives = []
    for folder in ("ut-zap50k-images-square", "ut-zap50k-data"):
        zpath = tmp_path / f"{folder}.zip"
        with zipfile.ZipFile(zpath, "w") as zf:
            for f in (utzap_root / folder).rglob("*"):
                zf.write(f, f.relative_to(utzap_root))
        archives += ["--archive", str(zpath)]
    dest = tmp_path / "dest"
    assert main(["download", "ut-zap50k", "--to", str(dest), *archives]) == 0
    table = load_table(DataConfig(source="ut-zap50k", root=str(dest)))
    assert len(table) == 35

    corrupt = tmp_path / "ut-zap50k-data.zip"
    corrupt.write_bytes(b"PK\x03\x04 broken")
    assert (
        main(["download", "ut-zap50k", "--to", str(tmp_path / "d2"), "--archive", str(corrupt)])
        == 2
    )
    assert "not a valid zip" in capsys.readouterr().err
