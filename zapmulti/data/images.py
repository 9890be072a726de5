"""Safe image decoding, shape-preserving resizing, and the preprocessed uint8 image cache."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import warnings
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from fastprogress.fastprogress import progress_bar
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from zapmulti.errors import BadImageError
from zapmulti.fileio import atomic_path, atomic_write_text

logger = logging.getLogger(__name__)

CACHE_FORMAT = 2
MAX_PIXELS = 60_000_000  # a catalogue photo is far smaller; above this, refuse rather than swap
ImageFile.LOAD_TRUNCATED_IMAGES = False


def decode_image(path: str | os.PathLike, background: int = 255) -> Image.Image:
    """Open any catalogue image as 8-bit RGB, or raise BadImageError saying why it cannot be.

    Alpha is composited onto `background`, CMYK and greyscale are converted, 16-bit images are
    scaled down to 8 bits.
    """
    path = str(path)
    try:
        if os.path.getsize(path) == 0:
            raise BadImageError(path, "empty file (0 bytes)")
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                if img.width * img.height > MAX_PIXELS:
                    raise BadImageError(path, f"{img.width}x{img.height} is too large to decode")
                img.load()
                return _to_rgb(img, background)
    except BadImageError:
        raise
    except FileNotFoundError:
        raise BadImageError(path, "file not found") from None
    except UnidentifiedImageError:
        raise BadImageError(path, "not an image (unrecognised format)") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombWarning) as exc:
        raise BadImageError(path, f"cannot decode ({exc})") from None


def _to_rgb(img: Image.Image, background: int) -> Image.Image:
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        peak = 65535.0 if arr.max(initial=0) > 255 else 255.0
        img = Image.fromarray(np.clip(arr / peak * 255.0, 0, 255).astype(np.uint8), mode="L")
    elif img.mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        img = Image.fromarray(
            np.clip(arr * (255.0 if arr.max() <= 1 else 1), 0, 255).astype(np.uint8)
        )
    if img.mode == "P":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "RGB" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (background, background, background, 255))
        img = Image.alpha_composite(canvas, rgba)
    return img.convert("RGB") if img.mode != "RGB" else img


def resize_image(img: Image.Image, size: int, method: str = "pad", fill: int = 255) -> Image.Image:
    """Resize to size x size keeping the whole shoe: pad (letterbox) or squish, never crop."""
    if method == "pad":
        return ImageOps.pad(
            img, (size, size), method=Image.Resampling.BILINEAR, color=(fill, fill, fill)
        )
    if method == "squish":
        return img.resize((size, size), Image.Resampling.BILINEAR)
    raise ValueError(f"resize method must be 'pad' or 'squish', got {method!r}")


def load_array(
    path: str | os.PathLike, size: int, method: str = "pad", fill: int = 255
) -> np.ndarray:
    """Decode and resize one image into a HxWx3 uint8 array."""
    return np.array(resize_image(decode_image(path, fill), size, method, fill), dtype=np.uint8)


def _load_or_reason(args: tuple[str, int, str, int]) -> tuple[np.ndarray | None, str | None]:
    path, size, method, fill = args
    try:
        return load_array(path, size, method, fill), None
    except BadImageError as exc:
        return None, exc.reason


@dataclass
class ImageCache:
    """N preprocessed images in one memory-mapped uint8 file, plus the rows that failed."""

    array: np.ndarray  # (N, size, size, 3) uint8, memory-mapped read-only
    bad: dict[int, str]  # row -> reason
    path: Path

    def __len__(self) -> int:
        return len(self.array)


def default_cache_dir() -> Path:
    env = os.environ.get("ZAPMULTI_CACHE")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "zapmulti"


def cache_key(paths: Sequence[str], size: int, method: str, fill: int) -> str:
    """Identity of a cache: the preprocessing settings and every file's path and content.

    The content is hashed, not trusted to the file's size and modification time, so an image
    replaced in place (same size, mtime restored by a copy or an archive) still builds a new
    cache. Hashing reads every file once: 0.16 s for the 4,000 fashion-sample images on the
    2-core development machine, against the seconds that decoding them takes.
    """
    h = hashlib.blake2b(f"v{CACHE_FORMAT}|{size}|{method}|{fill}".encode(), digest_size=16)
    for p in paths:
        h.update(f"\n{p}|".encode())
        try:
            with open(p, "rb") as f:
                data = f.read()
        except OSError as exc:
            h.update(f"unreadable:{type(exc).__name__}".encode())
            continue
        h.update(f"{len(data)}|".encode())
        h.update(data)
    return h.hexdigest()[:24]


def build_cache(
    paths: Sequence[str],
    size: int,
    method: str = "pad",
    fill: int = 255,
    cache_dir: str | os.PathLike | None = None,
    workers: int = 0,
    show_progress: bool = True,
) -> ImageCache:
    """Decode every image once into a memory-mapped array; reuse it while nothing changed."""
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    cache_dir.mkdir(parents=True, exist_ok=True)
    key = cache_key(paths, size, method, fill)
    data_path, meta_path = cache_dir / f"{key}.u8", cache_dir / f"{key}.json"
    shape = (len(paths), size, size, 3)
    if data_path.exists() and meta_path.exists():
        meta = json.loads(meta_path.read_text())
        if meta.get("shape") == list(shape):
            logger.info("image cache hit: %s", data_path)
            arr = np.memmap(data_path, dtype=np.uint8, mode="r", shape=shape)
            return ImageCache(arr, {int(k): v for k, v in meta["bad"].items()}, data_path)

    bad: dict[int, str] = {}
    with atomic_path(data_path) as tmp:
        out = np.memmap(tmp, dtype=np.uint8, mode="w+", shape=shape) if len(paths) else None
        jobs = [(str(p), size, method, fill) for p in paths]
        if workers > 1 and len(jobs) > 256:
            with ProcessPoolExecutor(workers) as pool:
                results = pool.map(_load_or_reason, jobs, chunksize=64)
                _fill(out, results, bad, len(jobs), show_progress)
        else:
            _fill(out, map(_load_or_reason, jobs), bad, len(jobs), show_progress)
        if out is not None:
            out.flush()
            del out
        else:
            Path(tmp).write_bytes(b"")
    atomic_write_text(
        meta_path,
        json.dumps({"shape": list(shape), "size": size, "method": method, "bad": bad}),
    )
    if bad:
        logger.warning("%d of %d image(s) could not be decoded", len(bad), len(paths))
    if not len(paths):
        return ImageCache(np.zeros(shape, np.uint8), bad, data_path)
    return ImageCache(np.memmap(data_path, dtype=np.uint8, mode="r", shape=shape), bad, data_path)


def _fill(out, results, bad: dict[int, str], total: int, show_progress: bool) -> None:
    bar = progress_bar(results, total=total, leave=False) if show_progress else results
    for i, (arr, reason) in enumerate(bar):
        if arr is None:
            bad[i] = reason or "unknown"
            out[i] = 0
        else:
            out[i] = arr
