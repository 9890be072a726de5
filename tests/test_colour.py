"""Colour buckets on generated shoe images of known colour, and the colour-label mapping."""

from __future__ import annotations

import io

import numpy as np
import pytest
from conftest import FASHION, needs_shared
from PIL import Image
from sklearn.metrics import cohen_kappa_score

from zapmulti.colour import (
    BUCKETS,
    background_mask,
    colour_agreement,
    colour_buckets,
    dominant_colour,
    find_colour_column,
    label_bucket,
)


def shoe(
    colour: tuple[int, int, int],
    background: tuple[int, int, int] = (255, 255, 255),
    size: tuple[int, int] = (64, 64),
    outline: tuple[int, int, int] | None = None,
    seed: int = 0,
) -> np.ndarray:
    """A shaded ellipse of `colour` on a plain background, through a JPEG round trip."""
    h, w = size
    rng = np.random.default_rng(seed)
    img = np.empty((h, w, 3), dtype=np.float64)
    img[:] = background
    yy, xx = np.mgrid[0:h, 0:w]
    inside = ((xx - w / 2) / (w * 0.38)) ** 2 + ((yy - h * 0.55) / (h * 0.22)) ** 2 <= 1
    shade = 0.82 + 0.18 * (1 - yy / h)  # lit from above
    body = np.array(colour, dtype=np.float64) * shade[..., None]
    body += rng.normal(0, 4, body.shape)
    img[inside] = body[inside]
    if outline is not None:
        ring = inside & ~np.roll(inside, 1, 0) | inside & ~np.roll(inside, -1, 1)
        img[ring] = outline
    return _jpeg(img)


def _jpeg(img: np.ndarray) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(buf, "JPEG", quality=90)
    return np.array(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


KNOWN = {
    "black": [(25, 25, 28), (45, 42, 40)],
    "grey": [(140, 140, 140), (165, 165, 170)],
    "brown": [(110, 70, 35), (140, 90, 50)],
    "beige": [(230, 205, 165), (215, 190, 150)],
    "red": [(200, 30, 35), (150, 20, 30)],
    "pink": [(240, 130, 180), (230, 80, 150)],
    "purple": [(110, 50, 150), (130, 70, 180)],
    "blue": [(40, 70, 190), (25, 35, 90)],
    "green": [(40, 140, 60), (90, 160, 40)],
    "yellow": [(240, 210, 40), (250, 230, 80)],
    "orange": [(245, 130, 30), (230, 110, 20)],
}


@pytest.mark.parametrize(
    ("bucket", "rgb"), [(b, c) for b, cs in KNOWN.items() for c in cs], ids=lambda v: str(v)
)
@pytest.mark.parametrize("background", [(255, 255, 255), (236, 236, 236)], ids=["white", "grey"])
def test_known_colours_on_a_plain_background(bucket, rgb, background):
    assert dominant_colour(shoe(rgb, background)) == bucket


def test_white_shoe_on_white_background():
    # Outlined: the outline separates the shoe from the backdrop.
    assert dominant_colour(shoe((250, 250, 250), outline=(150, 150, 150))) == "white"
    # No outline at all: the shoe merges into the backdrop, and that is read as white too.
    assert dominant_colour(shoe((252, 252, 252))) == "white"
    # On a grey backdrop a white shoe stands out.
    assert dominant_colour(shoe((250, 250, 250), background=(205, 205, 210))) == "white"


def test_background_is_found_in_a_letterboxed_photo_with_its_own_backdrop():
    photo = shoe((200, 30, 35), background=(215, 215, 235), size=(64, 48))
    padded = np.full((64, 64, 3), 255, dtype=np.uint8)
    padded[:, 8:56] = photo
    mask = background_mask(padded)
    assert mask[:, :8].all() and mask[0, 10:54].all()  # padding and the photo's backdrop
    assert not mask[35, 32]  # the shoe itself
    assert dominant_colour(padded) == "red"


def test_busy_border_keeps_every_pixel():
    noise = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    assert not background_mask(noise).any()
    assert dominant_colour(noise) in BUCKETS


def test_multicoloured_and_metallic_shoes():
    stripes = np.full((64, 64, 3), 255, dtype=np.uint8)
    for i, c in enumerate([(200, 30, 35), (40, 140, 60), (40, 70, 190), (240, 210, 40)]):
        stripes[16:48, 8 + 12 * i : 20 + 12 * i] = c
    assert dominant_colour(stripes) == "multi"

    metal = np.full((64, 64, 3), 255, dtype=np.uint8)
    metal[16:48, 8:56] = 130  # mid grey with ...
    metal[17:47:2, 9:55] = 255  # ... mirror-bright highlights inside a darker rim
    assert dominant_colour(metal) == "silver/metallic"

    # A black shoe with bright highlights stays black.
    shiny = shoe((30, 30, 30))
    shiny[30:33, 20:40] = 250
    assert dominant_colour(shiny) == "black"


def test_colour_buckets_of_rows_and_bad_shapes():
    images = np.stack([shoe(KNOWN["red"][0]), shoe(KNOWN["blue"][0]), shoe(KNOWN["green"][0])])
    assert colour_buckets(images) == ["red", "blue", "green"]
    assert colour_buckets(images, [2, 0]) == ["green", "red"]
    with pytest.raises(ValueError, match="RGB image"):
        dominant_colour(images[0, :, :, 0])


@pytest.mark.parametrize(
    ("label", "bucket"),
    [
        ("Navy Blue", "blue"),
        ("navy blue ", "blue"),
        ("Off White", "white"),
        ("Charcoal", "grey"),
        ("Maroon", "red"),
        ("Gold", "silver/metallic"),
        ("Multi", "multi"),
        ("silver/metallic", "silver/metallic"),
        ("Fluorescent Green", "green"),
        ("Tan", "brown"),
        ("Cream", "beige"),
        ("Ultraviolet", None),
        ("", None),
        (None, None),
        (float("nan"), None),
    ],
)
def test_label_bucket(label, bucket):
    assert label_bucket(label) == bucket


def test_colour_agreement_against_sklearn_kappa():
    computed = ["black", "black", "white", "red", "blue", "blue", "grey", "black"]
    labels = ["Black", "Navy Blue", "White", "Red", "Blue", "Ultraviolet", None, "Charcoal"]
    result = colour_agreement(computed, labels)
    # Rows with a mappable label: 0, 1, 2, 3, 4, 7.
    assert result["n"] == 6
    assert result["unmapped"] == {"Ultraviolet": 1}
    assert result["agreement"] == pytest.approx(4 / 6)
    truth = ["black", "blue", "white", "red", "blue", "grey"]
    mine = ["black", "black", "white", "red", "blue", "black"]
    assert result["kappa"] == pytest.approx(cohen_kappa_score(truth, mine))
    assert result["per_bucket"]["blue"] == {"n": 2, "agree": 1, "recall": 0.5}
    assert result["confusion"]["grey"] == {"black": 1}
    assert result["majority"] == pytest.approx(2 / 6)

    empty = colour_agreement(["red"], [None])
    assert empty["n"] == 0 and np.isnan(empty["agreement"])
    with pytest.raises(ValueError, match="2 buckets but 1 labels"):
        colour_agreement(["red", "blue"], ["Red"])


def test_find_colour_column():
    assert find_colour_column(["path", "key", "gender", "baseColour"]) == "baseColour"
    assert find_colour_column(["Color", "baseColour"]) == "Color"
    assert find_colour_column(["path", "Gender", "Category"]) is None


@pytest.mark.slow
@needs_shared(FASHION)
def test_shared_data_colour_agrees_with_base_colour():
    import pandas as pd

    from zapmulti.data.images import load_array

    styles = pd.read_csv(FASHION / "styles.csv", usecols=["id", "baseColour"], dtype=str)
    sample = styles.sample(1000, random_state=0)
    images = np.stack([load_array(FASHION / "images" / f"{i}.jpg", 64) for i in sample["id"]])
    result = colour_agreement(colour_buckets(images), sample["baseColour"].tolist())
    assert result["n"] == 1000 and not result["unmapped"]
    # Measured on this sample: 0.58, with 0.16 expected from the marginals alone (kappa 0.50).
    # Silver and gold are the known misses: they read as white, grey, beige or brown.
    assert result["agreement"] > 0.5
    assert result["agreement"] > 3 * result["chance"]
    assert result["kappa"] > 0.4
    for bucket in ("black", "white", "red"):
        assert result["per_bucket"][bucket]["recall"] > 0.6, bucket
