"""Fetch, verify and extract the official UT-Zap50K archives, resuming interrupted downloads."""

from __future__ import annotations

import http.client
import logging
import os
import shutil
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from fastprogress.fastprogress import progress_bar

from zapmulti.errors import DownloadError
from zapmulti.fileio import atomic_dir

logger = logging.getLogger(__name__)

UTZAP_BASE = "https://vision.cs.utexas.edu/projects/finegrained/utzap50k/"


@dataclass(frozen=True)
class Archive:
    name: str  # file name of the zip
    folder: str  # top-level folder it extracts to

    @property
    def url(self) -> str:
        return UTZAP_BASE + self.name


UTZAP_ARCHIVES = (
    Archive("ut-zap50k-images-square.zip", "ut-zap50k-images-square"),
    Archive("ut-zap50k-data.zip", "ut-zap50k-data"),
)
CHUNK = 1 << 20


def manual_instructions(dest: Path) -> str:
    lines = [
        "Fetch these files by hand (from a machine that is online) and place them in "
        f"{dest}/, then run this command again (or pass them with --archive):",
    ]
    lines += [f"  {a.url}  ->  {dest / a.name}" for a in UTZAP_ARCHIVES]
    lines += [
        "They extract to this layout, which `data.source: ut-zap50k` reads:",
        f"  {dest}/ut-zap50k-images-square/<Category>/<SubCategory>/<Brand>/<CID>.jpg",
        f"  {dest}/ut-zap50k-data/image-path.mat",
        f"  {dest}/ut-zap50k-data/meta-data.csv",
    ]
    return "\n".join(lines)


def _fetch(url: str, target: Path, timeout: float, show_progress: bool) -> None:
    """Download `url` to `target`, resuming from `target.part` when a previous try was cut."""
    part = target.with_name(target.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "zapmulti"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    with urllib.request.urlopen(request, timeout=timeout) as resp:
        status = getattr(resp, "status", 200)
        if have and status != 206:  # server ignored the range: start over
            have = 0
        length = resp.headers.get("Content-Length")
        total = have + int(length) if length is not None else None
        bar = progress_bar(range(total), leave=False) if (show_progress and total) else None
        done = have
        with open(part, "ab" if have else "wb") as fh:
            while chunk := resp.read(CHUNK):
                fh.write(chunk)
                done += len(chunk)
                if bar is not None:
                    bar.update(min(done, total))
    size = part.stat().st_size
    if total is not None and size != total:
        raise DownloadError(
            f"{url}: got {size} of {total} bytes; run the command again to resume from {part}"
        )
    os.replace(part, target)


def verify_zip(path: Path) -> None:
    try:
        with zipfile.ZipFile(path) as zf:
            bad = zf.testzip()
    except zipfile.BadZipFile as exc:
        raise DownloadError(
            f"{path} is not a valid zip ({exc}); delete it and download again"
        ) from None
    if bad is not None:
        raise DownloadError(
            f"{path}: member {bad} fails its CRC check; delete it and download again"
        )


def extract(path: Path, dest: Path, folder: str) -> Path:
    """Extract an archive so that `dest/folder` appears whole or not at all."""
    final = dest / folder
    with atomic_dir(dest / f".{folder}.extract") as tmp, zipfile.ZipFile(path) as zf:
        for member in zf.namelist():
            target = (tmp / member).resolve()
            if not str(target).startswith(str(tmp.resolve())):
                raise DownloadError(f"{path}: member {member!r} would extract outside {dest}")
        zf.extractall(tmp)
        inner = tmp / folder
        src = inner if inner.is_dir() else tmp
        if final.exists():
            shutil.rmtree(final)
        shutil.move(str(src), final)
    shutil.rmtree(dest / f".{folder}.extract", ignore_errors=True)
    return final


def download_ut_zap50k(
    dest: str | os.PathLike,
    archives: list[str | os.PathLike] | None = None,
    timeout: float = 30.0,
    show_progress: bool = True,
) -> Path:
    """Fetch (or take local copies of) the UT-Zap50K archives, verify and extract them into dest."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    local = {Path(a).name: Path(a) for a in archives or []}
    for name, p in local.items():
        if not p.is_file():
            raise DownloadError(f"--archive {p}: no such file")
        if name not in {a.name for a in UTZAP_ARCHIVES}:
            raise DownloadError(
                f"--archive {p}: expected one of {[a.name for a in UTZAP_ARCHIVES]}"
            )
        verify_zip(p)  # before any download, so a bad local copy fails fast
    for archive in UTZAP_ARCHIVES:
        if (dest / archive.folder).is_dir() and any((dest / archive.folder).iterdir()):
            logger.info("%s already extracted in %s", archive.folder, dest)
            continue
        zpath = local.get(archive.name, dest / archive.name)
        if not zpath.is_file():
            try:
                logger.info("downloading %s", archive.url)
                _fetch(archive.url, zpath, timeout, show_progress)
            except http.client.HTTPException as exc:  # e.g. IncompleteRead: the link dropped
                raise DownloadError(
                    f"{archive.url}: interrupted ({type(exc).__name__}); run the command again "
                    f"to resume from {zpath}.part"
                ) from None
            except (urllib.error.URLError, OSError, TimeoutError) as exc:
                raise DownloadError(
                    f"cannot download {archive.url} ({getattr(exc, 'reason', exc)}).\n"
                    + manual_instructions(dest)
                ) from None
        verify_zip(zpath)
        extract(zpath, dest, archive.folder)
        logger.info("extracted %s into %s", zpath.name, dest)
    return dest
