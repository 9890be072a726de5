"""The run directory: weights, resolved config, vocabularies, split, history, metrics, plots.

Nothing here unpickles: weights are safetensors, checkpoints load with `weights_only=True`,
and configs and manifests are plain YAML and JSON.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from zapmulti import __version__
from zapmulti.config import Config, config_from_dict, dump_config
from zapmulti.errors import RunDirError
from zapmulti.fileio import atomic_path, atomic_write_text, replaceable
from zapmulti.model.heads import HeadSpec
from zapmulti.model.multitask import MultiTaskModel, build_model

WEIGHTS = "model.safetensors"
CONFIG = "config.yaml"
VOCAB = "vocab.json"
MANIFEST = "run.json"
SPLIT = "split.csv"
HISTORY = "history.csv"
METRICS = "metrics.json"
LR_PLOT = "lr_find.png"
SKIPPED = "skipped_images.csv"
CHECKPOINT = "checkpoint.pt"
FORMAT_VERSION = 1


def prepare_run_dir(path: str | Path, overwrite: bool = False) -> Path:
    """Create an empty run directory; refuse to clobber an existing one unless asked."""
    with replacing_run(path, overwrite) as run_dir:
        return run_dir


@contextlib.contextmanager
def replacing_run(path: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """An empty run directory for the block (through a symlink, its target).

    An old run there (with `overwrite`) is set aside, not deleted, until the block succeeds; if
    the block fails, the new folder goes and the old run comes back untouched (a folder that
    was empty is left empty, one that was absent stays absent).
    """
    path = Path(path).resolve()
    existed = path.exists()
    old = None
    if check_run_out(path, overwrite):
        old = path.with_name(f".{path.name}.replaced")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(path, old)
    path.mkdir(parents=True, exist_ok=True)
    try:
        yield path
    except BaseException:
        shutil.rmtree(path, ignore_errors=True)
        if old is not None:
            os.replace(old, path)
        elif existed:
            path.mkdir(parents=True, exist_ok=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def check_run_out(path: str | Path, overwrite: bool, hint: str | None = None) -> bool:
    """Refuse to write a run into a non-empty folder unless it is a run and `overwrite` is set.

    Returns True when an old run is there to replace.
    """
    hint = hint or (
        "pass --overwrite to replace it, --resume to continue it, or choose another --out"
    )
    try:
        return replaceable(path, overwrite, (MANIFEST, CHECKPOINT), "run directory", hint)
    except ValueError as e:
        raise RunDirError(str(e)) from None


def state_dict_for_saving(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}


def save_weights(model: torch.nn.Module, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        save_file(state_dict_for_saving(model), str(tmp), metadata={"zapmulti": __version__})


def write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_jsonable) + "\n")


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


def write_manifest(run_dir: Path, config: Config, specs: list[HeadSpec], **extra: Any) -> None:
    write_json(
        run_dir / MANIFEST,
        {
            "zapmulti_version": __version__,
            "format": FORMAT_VERSION,
            "backbone": config.model.backbone,
            "image_size": config.model.image_size,
            "heads": [{"name": s.name, "type": s.type, "classes": len(s.classes)} for s in specs],
            **extra,
        },
    )


def save_run_metadata(run_dir: Path, config: Config, specs: list[HeadSpec]) -> None:
    """Config, vocabularies and manifest: everything needed to rebuild the model later."""
    dump_config(config, run_dir / CONFIG)
    write_json(run_dir / VOCAB, {s.name: s.classes for s in specs})
    write_manifest(run_dir, config, specs)


@dataclass
class Run:
    """A trained run loaded back from disk."""

    path: Path
    config: Config
    vocabs: dict[str, list[str]]
    model: MultiTaskModel
    manifest: dict[str, Any]

    @property
    def head_names(self) -> list[str]:
        return self.model.head_names


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RunDirError(
            f"{path.parent} is not a complete run directory: {path.name} is missing"
        ) from None
    except json.JSONDecodeError as exc:
        raise RunDirError(f"{path} is not valid JSON ({exc})") from None


def read_run_config(run_dir: Path) -> Config:
    import yaml

    path = run_dir / CONFIG
    if not path.is_file():
        raise RunDirError(f"{run_dir} is not a run directory: {CONFIG} is missing")
    return config_from_dict(yaml.safe_load(path.read_text(encoding="utf-8")), source=str(path))


def check_manifest(run_dir: Path) -> dict[str, Any]:
    manifest = _read_json(run_dir / MANIFEST)
    fmt = manifest.get("format")
    if fmt != FORMAT_VERSION:
        raise RunDirError(
            f"{run_dir} was written by zapmulti {manifest.get('zapmulti_version', '?')} in run "
            f"format {fmt}; this is zapmulti {__version__} (format {FORMAT_VERSION}). "
            "Retrain, or load it with the version that wrote it"
        )
    return manifest


def load_run(run_dir: str | Path, device: str | torch.device = "cpu") -> Run:
    """Rebuild the model of a run from its config and vocabularies and load its weights."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunDirError(f"run directory not found: {run_dir}")
    manifest = check_manifest(run_dir)
    config = read_run_config(run_dir)
    vocabs = _read_json(run_dir / VOCAB)
    config_heads = [h.name for h in config.heads]
    if list(vocabs) != config_heads:
        raise RunDirError(
            f"{run_dir}: heads in {VOCAB} {list(vocabs)} do not match heads in {CONFIG} "
            f"{config_heads}"
        )
    specs = [
        HeadSpec(
            name=h.name, classes=vocabs[h.name], type=h.type, weight=h.weight, options=h.options
        )
        for h in config.heads
    ]
    model = build_model(config.model.backbone, "none", specs, config.model.dropout)
    weights = run_dir / WEIGHTS
    if not weights.is_file():
        raise RunDirError(f"{run_dir}: {WEIGHTS} is missing; the run did not finish training")
    state = load_file(str(weights))
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise RunDirError(
            f"{weights} does not fit the model the config describes: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}; were heads added to {CONFIG} after training?"
        )
    model.eval().to(device)
    return Run(run_dir, config, vocabs, model, manifest)


def save_checkpoint(path: Path, model: torch.nn.Module, opt: Any, state: dict[str, Any]) -> None:
    """Model, optimizer and progress in one plain dict of tensors and numbers, atomically."""
    payload = {"model": state_dict_for_saving(model), "state": _plain(state)}
    if opt is not None:
        payload["opt"] = _plain(opt.state_dict())
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def _plain(obj: Any) -> Any:
    """fastai optimizer state holds fastcore `L` lists; keep only types weights_only accepts."""
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)) or type(obj).__name__ == "L":
        return [_plain(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if hasattr(obj, "item") and type(obj).__module__ == "numpy":  # numpy scalars
        return obj.item()
    return obj


def load_checkpoint(path: Path) -> dict[str, Any]:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise RunDirError(f"no checkpoint to resume from at {path}") from None
    except Exception as exc:
        raise RunDirError(f"{path} is not a loadable checkpoint ({exc})") from None


__all__ = ["Run", "load_run", "prepare_run_dir", "save_weights", "config_from_dict"]
