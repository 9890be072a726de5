"""Safe decoding, shape-keeping resizing and the image cache."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from zapmulti.data.images import build_cache, decode_image, load_array, resize_image
from zapmulti.errors import BadImageError


def _save(tmp_path, name, img, **kw):
    path = tmp_path / name
    img.save(path, **kw)
    return path


def test_pad_keeps_the_whole_shoe():
    # a 136x102 image whose left and right edge columns are black: padding must keep both
    arr = np.full((102, 136, 3), 255, np.uint8)
    arr[:, :4] = 0
    arr[:, -4:] = 0
    out = np.asarray(resize_image(Image.fromarray(arr), 64, "pad"))
    assert out.shape == (64, 64, 3)
    assert out[32, 0].max() < 60 and out[32, -1].max() < 60  # toe and heel still there
    assert (out[0] == 255).all() and (out[-1] == 255).all()  # white padding above and below
    squished = np.asarray(resize_image(Image.fromarray(arr), 64, "squish"))
    assert squished[32, 0].max() < 60 and squished[32, -1].max() < 60


@pytest.mark.parametrize(
    ("mode", "kw"),
    [("CMYK", {"format": "JPEG"}), ("L", {"format": "JPEG"}), ("I;16", {"format": "PNG"})],
)
def test_modes_decode_to_rgb(tmp_path, mode, kw):
    img = Image.new("RGB", (20, 10), (200, 30, 30)).convert(mode if mode != "I;16" else "L")
    if mode == "I;16":
        img = Image.fromarray((np.full((10, 20), 40000)).astype(np.uint16))
    path = _save(tmp_path, f"x.{kw['format'].lower()}", img, **kw)
    out = decode_image(path)
    assert out.mode == "RGB" and out.size == (20, 10)


def test_alpha_is_composited_on_white(tmp_path):
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[:4, :, :] = (255, 0, 0, 255)
    path = _save(tmp_path, "a.png", Image.fromarray(rgba, "RGBA"))
    out = np.asarray(decode_image(path))
    assert tuple(out[0, 0]) == (255, 0, 0) and tuple(out[7, 7]) == (255, 255, 255)


def test_bad_files_raise_with_reason(tmp_path):
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    text = tmp_path / "text.jpg"
    text.write_text("hello, not a jpeg")
    good = _save(tmp_path, "g.jpg", Image.new("RGB", (64, 64), (10, 200, 10)), quality=95)
    truncated = tmp_path / "trunc.jpg"
    truncated.write_bytes(good.read_bytes()[:300])
    for path, reason in [
        (empty, "empty file"),
        (text, "not an image"),
        (truncated, "cannot decode"),
    ]:
        with pytest.raises(BadImageError, match=reason) as err:
            decode_image(path)
        assert str(path) in str(err.value)


def test_cache_marks_bad_rows_and_is_reused(tmp_path):
    paths = []
    for i in range(5):
        paths.append(_save(tmp_path, f"{i}.jpg", Image.new("RGB", (30, 20), (i * 40, 0, 0))))
    (tmp_path / "bad.jpg").write_bytes(b"junk")
    paths.insert(2, tmp_path / "bad.jpg")
    paths = [str(p) for p in paths]

    cache = build_cache(paths, 16, cache_dir=tmp_path / "c", show_progress=False)
    assert cache.array.shape == (6, 16, 16, 3)
    assert set(cache.bad) == {2}
    np.testing.assert_array_equal(cache.array[3], load_array(paths[3], 16))

    again = build_cache(paths, 16, cache_dir=tmp_path / "c", show_progress=False)
    assert again.path == cache.path
    # a changed file (size and mtime) is a new cache
    _save(tmp_path, "0.jpg", Image.new("RGB", (31, 20), (250, 250, 0)))
    changed = build_cache(paths, 16, cache_dir=tmp_path / "c", show_progress=False)
    assert changed.path != cache.path
    assert changed.array[0, 8, 8, 1] > 200

    # the key is the content: a file replaced with the same size and mtime is a new cache too
    before = os.stat(paths[1])
    data = bytearray(Path(paths[1]).read_bytes())
    data[-3] ^= 0xFF  # one byte of the compressed data, same length
    Path(paths[1]).write_bytes(bytes(data))
    os.utime(paths[1], ns=(before.st_atime_ns, before.st_mtime_ns))
    assert os.stat(paths[1]).st_mtime_ns == before.st_mtime_ns
    assert os.stat(paths[1]).st_size == before.st_size
    replaced = build_cache(paths, 16, cache_dir=tmp_path / "c", show_progress=False)
    assert replaced.path != changed.path
