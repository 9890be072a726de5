"""Dominant-colour buckets from pixels, ignoring the plain catalogue background.

Every image gets one named bucket (`BUCKETS`). The background is the light, plain colour of
the image border, and whatever near it is connected to the border; the shoe is the rest. Each
shoe pixel is named by hue, saturation and brightness. A shoe is then:

- white, when almost nothing is left once the background is removed (white on white);
- multi, when no colour covers 30% of it and three colours (two of them chromatic) cover 20%;
- its commonest chromatic colour, when that covers a quarter of it: shading and outlines make
  every shoe partly black or grey, so a chromatic colour need not be the majority;
- otherwise black, grey or white by its median brightness, or silver/metallic when it is light
  and strongly contrasted.

Nothing here knows of models: it maps uint8 (H, W, 3) arrays to names, and colour labels such as
the fashion catalogue's ``baseColour`` to the same names.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage

logger = logging.getLogger(__name__)

BUCKETS: tuple[str, ...] = (
    "black",
    "white",
    "grey",
    "brown",
    "beige",
    "red",
    "pink",
    "purple",
    "blue",
    "green",
    "yellow",
    "orange",
    "silver/metallic",
    "multi",
)
PIXEL_BUCKETS = BUCKETS[:12]  # names a single pixel can get
ACHROMATIC = frozenset({"black", "white", "grey"})
CHROMATIC = tuple(b for b in PIXEL_BUCKETS if b not in ACHROMATIC)

# RGB to draw each bucket with in figures.
SWATCH: dict[str, tuple[int, int, int]] = {
    "black": (20, 20, 20),
    "white": (245, 245, 245),
    "grey": (140, 140, 140),
    "brown": (120, 75, 40),
    "beige": (225, 205, 165),
    "red": (200, 30, 35),
    "pink": (240, 120, 180),
    "purple": (120, 50, 160),
    "blue": (40, 80, 200),
    "green": (40, 150, 60),
    "yellow": (240, 210, 40),
    "orange": (245, 130, 30),
    "silver/metallic": (190, 195, 205),
    "multi": (160, 120, 200),
}

# Colour label -> bucket, for labels like the fashion catalogue's baseColour (matched
# case-insensitively, after the bucket names themselves). A label not here is not scored.
LABEL_BUCKETS: dict[str, str] = {
    "black": "black",
    "charcoal": "grey",
    "grey": "grey",
    "gray": "grey",
    "grey melange": "grey",
    "white": "white",
    "off white": "white",
    "cream": "beige",
    "beige": "beige",
    "khaki": "beige",
    "nude": "beige",
    "skin": "beige",
    "brown": "brown",
    "coffee brown": "brown",
    "mushroom brown": "brown",
    "tan": "brown",
    "taupe": "brown",
    "camel": "brown",
    "red": "red",
    "maroon": "red",
    "burgundy": "red",
    "rust": "orange",
    "orange": "orange",
    "peach": "pink",
    "pink": "pink",
    "magenta": "pink",
    "fuchsia": "pink",
    "purple": "purple",
    "lavender": "purple",
    "mauve": "purple",
    "violet": "purple",
    "blue": "blue",
    "navy": "blue",
    "navy blue": "blue",
    "turquoise blue": "blue",
    "teal": "blue",
    "green": "green",
    "olive": "green",
    "sea green": "green",
    "fluorescent green": "green",
    "lime green": "green",
    "yellow": "yellow",
    "mustard": "yellow",
    "silver": "silver/metallic",
    "gold": "silver/metallic",
    "bronze": "silver/metallic",
    "copper": "silver/metallic",
    "metallic": "silver/metallic",
    "steel": "silver/metallic",
    "gunmetal": "silver/metallic",
    "multi": "multi",
    "multicolour": "multi",
    "multicolor": "multi",
}

# Thresholds, on 0-1 scales; chroma is max(RGB) - min(RGB). Tuned by hand and by a small grid on
# the first half of fashion-footwear-sample against its baseColour labels at 64 px: the bucket
# agrees with the label on 0.58 and 0.60 of the halves, where the marginals alone give 0.16.
BACKGROUND_TOLERANCE = 0.09  # a pixel within this (max channel difference) of the border colour
PLAIN_BORDER = 0.7  # share of border pixels that must be near their median for a plain background
LIGHT_BORDER = 0.55  # a background is at least this bright
WHITE_SHOE_FOREGROUND = 0.04  # below this share of foreground pixels, the shoe is white
MIN_SATURATION = 0.18  # a pixel is chromatic with this saturation ...
MIN_CHROMA = 0.06  # ... and this chroma ...
MIN_VALUE = 0.15  # ... and this brightness
BLACK_BELOW = 0.45  # median brightness of an achromatic shoe: black below, white above WHITE_ABOVE
WHITE_ABOVE = 0.68
CHROMATIC_SHARE = 0.25  # a chromatic colour with this share of the shoe beats black and grey
MULTI_TOP_SHARE = 0.3  # "multi" when the top colour has less than this ...
MULTI_MIN_SHARE = 0.2  # ... and at least three colours have this share or more
METALLIC_SPREAD = 0.24  # brightness spread of a grey-white shoe that reads as metal ...
METALLIC_MAX_BLACK = 0.15  # ... with little black in it


def to_hsv(pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Hue (degrees), saturation, value and chroma (0-1) of uint8 RGB pixels (..., 3)."""
    rgb = pixels.astype(np.float32) / 255.0
    mx, mn = rgb.max(-1), rgb.min(-1)
    chroma = mx - mn
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    safe = np.where(chroma > 0, chroma, 1.0)
    hue = np.where(
        mx == r,
        ((g - b) / safe) % 6.0,
        np.where(mx == g, (b - r) / safe + 2.0, (r - g) / safe + 4.0),
    )
    hue = np.where(chroma > 0, hue * 60.0, 0.0)
    sat = np.where(mx > 0, chroma / np.where(mx > 0, mx, 1.0), 0.0)
    return hue, sat, mx, chroma


def pixel_buckets(pixels: np.ndarray) -> np.ndarray:
    """Index into PIXEL_BUCKETS of every uint8 RGB pixel (..., 3).

    Achromatic pixels are named black, grey or white by brightness alone; `dominant_colour`
    decides between those three for a whole shoe by its median brightness instead.
    """
    h, s, v, c = to_hsv(pixels)
    idx = {name: i for i, name in enumerate(PIXEL_BUCKETS)}
    out = np.full(h.shape, idx["grey"], dtype=np.int8)
    chromatic = (s >= MIN_SATURATION) & (c >= MIN_CHROMA) & (v >= MIN_VALUE)
    reds = (h < 12) | (h >= 345)
    hue_rules = [
        ("red", reds),
        ("orange", (h >= 12) & (h < 40)),
        ("yellow", (h >= 40) & (h < 70)),
        ("green", (h >= 70) & (h < 165)),
        ("blue", (h >= 165) & (h < 255)),
        ("purple", (h >= 255) & (h < 290)),
        ("pink", (h >= 290) & (h < 345)),
        # Dark oranges and yellows are brown; pale ones are beige; pale reds are pink, dark
        # magentas purple. Later rules overwrite earlier ones.
        ("brown", (h >= 10) & (h < 70) & (v < 0.6)),
        ("brown", (h >= 12) & (h < 40) & (s < 0.5) & (v < 0.75)),
        ("beige", (h >= 12) & (h < 70) & (s < 0.4) & (v >= 0.7)),
        ("pink", reds & (s < 0.45) & (v >= 0.7)),
        ("purple", (h >= 290) & (h < 345) & (v < 0.45)),
    ]
    for name, mask in hue_rules:
        out[chromatic & mask] = idx[name]
    grey = ~chromatic
    out[grey & (v < BLACK_BELOW)] = idx["black"]
    out[grey & (v > WHITE_ABOVE)] = idx["white"]
    return out


def background_mask(image: np.ndarray) -> np.ndarray:
    """True where a pixel belongs to the plain, light background around the shoe.

    Each side of the border whose pixels are mostly near their median colour, a light one,
    gives a background colour (a letterboxed photo has two: the padding and the photo's own
    backdrop). Background pixels are those near one of these colours and connected to the
    border. A busy or dark border (a photo without a plain backdrop) gives an empty mask.
    """
    rgb = image.astype(np.float32) / 255.0
    colours = []
    for side in (rgb[0], rgb[-1], rgb[:, 0], rgb[:, -1]):
        colour = np.median(side, axis=0)
        plain = (np.abs(side - colour).max(-1) <= BACKGROUND_TOLERANCE).mean() >= PLAIN_BORDER
        if plain and colour.max() >= LIGHT_BORDER:
            colours.append(colour)
    if not colours:
        return np.zeros(image.shape[:2], dtype=bool)
    near = np.zeros(image.shape[:2], dtype=bool)
    for colour in np.unique(np.round(np.array(colours), 2), axis=0):
        near |= np.abs(rgb - colour).max(-1) <= BACKGROUND_TOLERANCE
    labels, _ = ndimage.label(near)
    edge = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    return np.isin(labels, edge[edge > 0])


@dataclass
class ShoeColours:
    """What the bucket of one image is decided from."""

    shares: dict[str, float]  # share of the shoe's pixels in each pixel bucket
    brightness: float  # median brightness (HSV value) of the shoe's pixels
    spread: float  # standard deviation of that brightness
    foreground: float  # the shoe's share of the image


def shoe_colours(image: np.ndarray) -> ShoeColours:
    """Pixel-bucket shares and brightness of the shoe in a uint8 RGB (H, W, 3) image."""
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"expected an (H, W, 3) RGB image, got shape {image.shape}")
    fg = ~background_mask(image)
    if not fg.any():
        return ShoeColours({}, 1.0, 0.0, 0.0)
    pixels = image[fg]
    names = pixel_buckets(pixels).astype(np.int64)
    counts = np.bincount(names, minlength=len(PIXEL_BUCKETS)) / len(names)
    shares = {PIXEL_BUCKETS[i]: float(p) for i, p in enumerate(counts) if p > 0}
    v = pixels.max(-1).astype(np.float32) / 255.0
    return ShoeColours(shares, float(np.median(v)), float(v.std()), float(fg.mean()))


def decide_bucket(shoe: ShoeColours) -> str:
    """The bucket of a shoe from its pixel-bucket shares and brightness."""
    if shoe.foreground < WHITE_SHOE_FOREGROUND:
        # Almost everything matched the background: a white shoe on white, or an empty image.
        return "white"
    shares = shoe.shares
    strong = [b for b, p in shares.items() if p >= MULTI_MIN_SHARE]
    if (
        max(shares.values()) < MULTI_TOP_SHARE
        and len(strong) >= 3
        and sum(b not in ACHROMATIC for b in strong) >= 2
    ):
        return "multi"
    chroma = max(((p, b) for b, p in shares.items() if b not in ACHROMATIC), default=(0.0, "grey"))
    if chroma[0] >= CHROMATIC_SHARE:
        return chroma[1]

    # Mostly achromatic: black, grey or white by the shoe's median brightness, since shading
    # and highlights spread every shoe over all three.
    if shoe.brightness < BLACK_BELOW:
        return "black"
    # FIXME: silver and gold are hard to tell from white, grey and beige at catalogue
    # resolution; only a strongly contrasted light shoe is called metallic, so most are missed.
    if shoe.spread >= METALLIC_SPREAD and shares.get("black", 0.0) < METALLIC_MAX_BLACK:
        return "silver/metallic"
    return "white" if shoe.brightness > WHITE_ABOVE else "grey"


def dominant_colour(image: np.ndarray) -> str:
    """The colour bucket of one uint8 RGB (H, W, 3) image of a shoe."""
    return decide_bucket(shoe_colours(image))


def bucket_shares(image: np.ndarray) -> dict[str, float]:
    """Share of the shoe's pixels (background left out) in every pixel bucket."""
    return shoe_colours(image).shares


def colour_buckets(images: np.ndarray, rows: Iterable[int] | None = None) -> list[str]:
    """The bucket of every image in an (N, H, W, 3) uint8 array (or of the given rows)."""
    index = range(len(images)) if rows is None else rows
    return [dominant_colour(np.asarray(images[int(i)])) for i in index]


def label_bucket(label: object, mapping: dict[str, str] | None = None) -> str | None:
    """The bucket a colour label such as ``"Navy Blue"`` names, or None if it names none."""
    if not isinstance(label, str) or not label.strip():
        return None
    key = label.strip().lower()
    if key in BUCKETS:
        return key
    return (mapping or LABEL_BUCKETS).get(key)


def colour_agreement(
    buckets: Sequence[str], labels: Sequence[object], mapping: dict[str, str] | None = None
) -> dict[str, Any]:
    """How often the computed bucket matches the bucket a colour label maps to.

    Returns:
        ``n`` (rows whose label maps to a bucket), ``unmapped`` (labelled rows whose label maps
        to none, with their labels), ``agreement``, ``chance`` (the agreement expected from the
        two marginal distributions alone), ``majority`` (always answering the commonest label),
        Cohen's ``kappa``, ``per_bucket`` recall and counts, and the ``confusion`` counts
        (label bucket -> computed bucket -> count).
    """
    if len(buckets) != len(labels):
        raise ValueError(f"{len(buckets)} buckets but {len(labels)} labels")
    pairs: list[tuple[str, str]] = []
    unmapped: dict[str, int] = {}
    for computed, label in zip(buckets, labels, strict=True):
        mapped = label_bucket(label, mapping)
        if mapped is None:
            if isinstance(label, str) and label.strip():
                unmapped[label] = unmapped.get(label, 0) + 1
            continue
        pairs.append((mapped, computed))
    n = len(pairs)
    out: dict[str, Any] = {"n": n, "unmapped": unmapped}
    if n == 0:
        out.update(agreement=float("nan"), chance=float("nan"), majority=float("nan"))
        out.update(kappa=float("nan"), per_bucket={}, confusion={})
        return out
    idx = {b: i for i, b in enumerate(BUCKETS)}
    cm = np.zeros((len(BUCKETS), len(BUCKETS)), dtype=np.int64)
    for truth, computed in pairs:
        cm[idx[truth], idx[computed]] += 1
    agree = float(np.trace(cm) / n)
    chance = float((cm.sum(1) / n) @ (cm.sum(0) / n))
    out["agreement"] = agree
    out["chance"] = chance
    out["majority"] = float(cm.sum(1).max() / n)
    out["kappa"] = float((agree - chance) / (1 - chance)) if chance < 1 else float("nan")
    out["per_bucket"] = {
        b: {"n": int(cm[i].sum()), "agree": int(cm[i, i]), "recall": float(cm[i, i] / cm[i].sum())}
        for b, i in idx.items()
        if cm[i].sum()
    }
    out["confusion"] = {
        b: {c: int(cm[i, j]) for c, j in idx.items() if cm[i, j]}
        for b, i in idx.items()
        if cm[i].sum()
    }
    return out


def find_colour_column(columns: Iterable[str]) -> str | None:
    """The first column whose name says it holds a colour label (baseColour, color, ...)."""
    for column in columns:
        name = str(column).lower()
        if column not in ("path", "key", "group") and ("colour" in name or "color" in name):
            return str(column)
    return None
