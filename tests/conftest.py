"""Shared fixtures: a tiny UT-Zap50K catalogue in the real layout, generated at test time."""

from __future__ import annotations

import csv
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
FASHION = SHARED_DATA / "fashion-footwear-sample"
ZAPPOS = SHARED_DATA / "zappos-shoe-sandal-boot-sample"

# (category, subcategory, brand, product, colour, gender). Brand "Nine West." is stored on disk
# as "Nine West%2E", as the real archive extracts on Linux.
UTZAP_ROWS = [
    ("Shoes", "Oxfords", "Bostonian", 100627, 72, "Men"),
    ("Shoes", "Oxfords", "Bostonian", 100627, 73, "Men"),
    ("Shoes", "Oxfords", "Clarks", 100700, 1, "Men"),
    ("Shoes", "Oxfords", "Clarks", 100701, 2, "Men"),
    ("Shoes", "Heels", "Nine West.", 200100, 5, "Women"),
    ("Shoes", "Heels", "Nine West.", 200100, 6, "Women"),
    ("Shoes", "Heels", "Nine West.", 200101, 7, "Women"),
    ("Shoes", "Heels", "Aravon", 200200, 8, "Women"),
    ("Shoes", "Sneakers and Athletic Shoes", "Puma Kids", 300100, 9, "Boys"),
    ("Shoes", "Sneakers and Athletic Shoes", "Puma", 300200, 10, "Men;Women"),
    ("Shoes", "Sneakers and Athletic Shoes", "Puma", 300201, 11, "Men"),
    ("Shoes", "Sneakers and Athletic Shoes", "Puma", 300202, 12, "Women"),
    ("Boots", "Ankle", "Clarks", 400100, 13, "Women"),
    ("Boots", "Ankle", "Clarks", 400101, 14, "Men"),
    ("Boots", "Ankle", "Nine West.", 400102, 15, "Women"),
    ("Boots", "Mid-Calf", "Pablosky Kids", 8029595, 574, "Girls"),  # listed, not on disk
    ("Boots", "Mid-Calf", "Bostonian", 400200, 16, "Men"),
    ("Boots", "Mid-Calf", "Bostonian", 400201, 17, "Men"),
    ("Boots", "Knee High", "Aravon", 400300, 18, "Women"),
    ("Boots", "Knee High", "Aravon", 400301, 19, "Women"),
    ("Sandals", "Flat", "Teva", 500100, 20, "Women"),
    ("Sandals", "Flat", "Teva", 500101, 21, "Men"),
    ("Sandals", "Flat", "Teva", 500102, 22, "Women"),
    ("Sandals", "Heel", "Nine West.", 500200, 23, "Women"),
    ("Sandals", "Heel", "Nine West.", 500201, 24, "Women"),
    ("Sandals", "Athletic", "Teva", 500300, 25, "Men"),
    ("Sandals", "Athletic", "Teva", 500301, 26, "Men"),
    ("Sandals", "Athletic", "Teva", 500302, 27, ""),
    ("Shoes", "Loafers", "Clarks", 600100, 28, "Men"),
    ("Shoes", "Loafers", "Clarks", 600101, 29, "Men"),
    ("Shoes", "Loafers", "Bostonian", 600102, 30, "Men"),
    ("Shoes", "Flats", "Aravon", 600200, 31, "Women"),
    ("Shoes", "Flats", "Aravon", 600201, 32, "Women"),
    ("Shoes", "Flats", "Nine West.", 600202, 33, "Women"),
    ("Boots", "Ankle", "Teva", 400400, 34, "Men"),
    ("Boots", "Ankle", "Teva", 400401, 35, "Women"),
]
MISSING_IMAGE = "Boots/Mid-Calf/Pablosky Kids/8029595.574.jpg"
GENDER_COLOUR = {"Men": (40, 60, 160), "Women": (220, 90, 160)}
CATEGORY_SHAPE = {"Shoes": (0.55, 0.35), "Boots": (0.45, 0.75), "Sandals": (0.7, 0.2)}


def shoe_image(category: str, gender: str, seed: int, size=(136, 102)) -> Image.Image:
    """A white catalogue-style image with one coloured blob whose shape follows the category."""
    rng = np.random.default_rng(seed)
    w, h = size
    arr = np.full((h, w, 3), 255, dtype=np.uint8)
    colour = np.array(GENDER_COLOUR.get(gender, (120, 120, 120)), dtype=np.int16)
    colour = np.clip(colour + rng.integers(-20, 20, 3), 0, 255).astype(np.uint8)
    fw, fh = CATEGORY_SHAPE[category]
    x0, y0 = int(w * (1 - fw) / 2), int(h * (1 - fh) / 2)
    arr[y0 : y0 + int(h * fh), x0 : x0 + int(w * fw)] = colour
    return Image.fromarray(arr)


def make_utzap(root: Path) -> Path:
    """Write the generated catalogue: image tree, image-path.mat (mat4py) and meta-data.csv."""
    import mat4py

    images = root / "ut-zap50k-images-square"
    data = root / "ut-zap50k-data"
    data.mkdir(parents=True)
    paths = []
    with open(data / "meta-data.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(
            [
                "CID",
                "Category",
                "SubCategory",
                "HeelHeight",
                "Insole",
                "Closure",
                "Gender",
                "Material",
                "ToeStyle",
            ]
        )
        for i, (cat, sub, brand, product, colour, gender) in enumerate(UTZAP_ROWS):
            rel = f"{cat}/{sub}/{brand}/{product}.{colour}.jpg"
            paths.append(rel)
            writer.writerow(
                [
                    f"{product}-{colour}",
                    cat,
                    sub,
                    "",
                    "",
                    "Lace up" if i % 2 else "",
                    gender,
                    "Leather",
                    "",
                ]
            )
            if rel == MISSING_IMAGE:
                continue
            disk_brand = brand[:-1] + "%2E" if brand.endswith(".") else brand
            target = images / cat / sub / disk_brand / f"{product}.{colour}.jpg"
            target.parent.mkdir(parents=True, exist_ok=True)
            shoe_image(cat, gender, i).save(target, quality=90)
    mat4py.savemat(str(data / "image-path.mat"), {"imagepath": paths})
    return root


@pytest.fixture(scope="session")
def utzap_root(tmp_path_factory) -> Path:
    return make_utzap(tmp_path_factory.mktemp("utzap"))


@pytest.fixture(scope="session")
def utzap_config_dict(utzap_root) -> dict:
    return {
        "data": {"source": "ut-zap50k", "root": str(utzap_root)},
        "heads": [
            {"name": "gender", "column": "Gender", "classes": ["Men", "Women"]},
            {"name": "category", "column": "Category"},
            {"name": "brand", "column": "Brand", "min_count": 5},
        ],
        "model": {"backbone": "resnet18", "weights": "none", "image_size": 32},
        "train": {
            "batch_size": 8,
            "frozen_epochs": 1,
            "unfrozen_epochs": 1,
            "lr": 1e-3,
            "seed": 0,
        },
        "split": {"valid_pct": 0.3, "seed": 0},
    }


@pytest.fixture(scope="session")
def trained_run(utzap_config_dict, tmp_path_factory):
    """A small three-head run trained once on the fixture (lr from lr_find)."""
    import json

    from zapmulti.config import config_from_dict
    from zapmulti.train import train

    raw = json.loads(json.dumps(utzap_config_dict))
    raw["train"].update(lr=None, lr_find_iters=20)
    out = tmp_path_factory.mktemp("runs") / "fixture-run"
    return train(config_from_dict(raw), out, show_progress=False)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Image caches go to a temporary folder, never to the user's home."""
    monkeypatch.setenv("ZAPMULTI_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


def _repo_state() -> str:
    out = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=all", "--ignored=no"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    return out.stdout if out.returncode == 0 else ""


@pytest.fixture(autouse=True)
def _no_files_left_in_repo():
    """Fail a test that writes files into the repository."""
    before = _repo_state()
    yield
    after = _repo_state()
    if after != before:
        new = sorted(set(after.splitlines()) - set(before.splitlines()))
        if new:
            pytest.fail(f"test left files in the repository: {new}")


def needs_shared(path: Path):
    """Skip a shared-data test where ../shared is absent, except in CI, where it must exist."""
    if not path.is_dir() and os.environ.get("CI"):
        raise RuntimeError(f"CI must have the real samples at {path}")
    return pytest.mark.skipif(
        not path.is_dir(), reason=f"{path} is not present (the ../shared data checkout)"
    )


os.environ.setdefault("MPLBACKEND", "Agg")
