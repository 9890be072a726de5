"""zapmulti's own exceptions: each message names the file, row or key and the way out."""


class ZapmultiError(Exception):
    """Base class for every error zapmulti raises on purpose."""


class ConfigError(ZapmultiError, ValueError):
    """A config file or override is invalid."""


class DataError(ZapmultiError, ValueError):
    """A catalogue file, row or column is missing or malformed."""


class BadImageError(ZapmultiError, OSError):
    """An image file cannot be decoded."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


class WeightsUnavailableError(ZapmultiError, RuntimeError):
    """Pretrained weights cannot be fetched or found."""


class RunDirError(ZapmultiError, RuntimeError):
    """A run directory is missing, incomplete, from another version, or would be overwritten."""


class DownloadError(ZapmultiError, RuntimeError):
    """A dataset archive cannot be fetched, verified or extracted."""
