"""check-data: every bad file of a catalogue with its reason, as CSV."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
from conftest import MISSING_IMAGE
from PIL import Image

from zapmulti.cli import main


def test_check_data_lists_each_bad_file(utzap_root, tmp_path, capsys):
    root = tmp_path / "z"
    shutil.copytree(utzap_root, root)
    images = sorted((root / "ut-zap50k-images-square").rglob("*.jpg"))
    images[0].write_bytes(b"")  # zero bytes
    images[1].write_text("this is text, not a JPEG")
    images[2].write_bytes(images[3].read_bytes()[:200])  # truncated
    Image.fromarray(np.zeros((10, 5000, 3), np.uint8)).save(images[4])  # 5000 px wide: fine
    Image.new("CMYK", (30, 20), (0, 50, 50, 0)).save(images[5], format="JPEG")  # fine
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(
        f"data: {{source: ut-zap50k, root: '{root}'}}\nheads: [{{name: g, column: Gender}}]\n"
    )

    out = tmp_path / "bad.csv"
    assert main(["check-data", str(cfg), "--out", str(out), "--workers", "2"]) == 1
    report = pd.read_csv(out)
    reasons = dict(zip(report["key"], report["reason"], strict=True))
    rel = [str(p.relative_to(root / "ut-zap50k-images-square")) for p in images]
    assert len(report) == 4
    assert "empty file" in reasons[_key(rel[0])]
    assert "not an image" in reasons[_key(rel[1])]
    assert "cannot decode" in reasons[_key(rel[2])]
    assert "not on disk" in reasons[MISSING_IMAGE]
    printed = capsys.readouterr().out
    assert "4 bad file(s)" in printed and str(out) in printed


def _key(rel: str) -> str:
    # image-path.mat lists brand folders with their trailing "." (stored on disk as %2E)
    return rel.replace("%2E", ".")
