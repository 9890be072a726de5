"""Atomic writes: a crash leaves either the old file or the new one, never half of one."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

_UMASK = os.umask(0)
os.umask(_UMASK)


def replaceable(
    path: str | os.PathLike, overwrite: bool, markers: tuple[str, ...], what: str, hint: str
) -> bool:
    """Whether `path` may be written: absent, empty, or (with `overwrite`) a folder of the kind.

    A non-empty folder is replaced only when `overwrite` is set and it holds one of `markers`,
    the files that make it a `what`; anything else (someone's data, another kind of output) is
    refused, so ``--overwrite`` never deletes what zapmulti did not write. Returns True when
    something is there to replace. Raises ValueError with the message for the user.
    """
    path = Path(path)
    if not path.exists():
        return False
    if not path.is_dir():
        raise ValueError(f"{path} is a file, not a folder; choose another --out for the {what}")
    if not any(path.iterdir()):
        return False
    if not overwrite:
        raise ValueError(f"{what} {path} already exists and is not empty; {hint}")
    if not any(_written_by_zapmulti(path / m) for m in markers):
        a = "an" if what[0] in "aeiou" else "a"
        raise ValueError(
            f"{path} is a non-empty folder that is not {a} {what} (it has no "
            f"{' or '.join(markers)}); --overwrite only replaces {a} {what}: choose another --out "
            "or empty the folder yourself"
        )
    return True


def _written_by_zapmulti(marker: Path) -> bool:
    """A marker counts when it is what zapmulti writes: a JSON manifest naming zapmulti's
    version, or a checkpoint beside the run's config.yaml and vocab.json."""
    if not marker.is_file():
        return False
    if marker.suffix == ".json":
        import json

        try:
            data = json.loads(marker.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False
        return isinstance(data, dict) and "zapmulti_version" in data and "format" in data
    return (marker.parent / "config.yaml").is_file() and (marker.parent / "vocab.json").is_file()


@contextlib.contextmanager
def exclusive(path: str | os.PathLike, what: str) -> Iterator[None]:
    """Hold an exclusive lock on folder `path` for this process, or raise BlockingIOError.

    The lock file sits beside the folder (``.<name>.lock``), so replacing the folder whole does
    not drop it. The operating system releases it when the process ends, however it ends.
    Where there is no ``fcntl`` (Windows), nothing is locked.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    path = Path(path).resolve()  # a symlink and its target share one lock
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = path.parent / f".{path.name}.lock"
    with open(lock, "a+") as fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            raise BlockingIOError(
                f"{what} {path} is in use by {holder}; wait for it to finish or stop it"
            ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"process {os.getpid()}")
        fh.flush()
        try:
            yield
        finally:
            lock.unlink(missing_ok=True)
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp_path, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the usual file mode
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder beside `path`; it replaces `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    os.chmod(tmp, 0o777 & ~_UMASK)  # mkdtemp makes 0700; the result gets the usual folder mode
    try:
        yield tmp
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
