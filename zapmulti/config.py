"""Typed run configuration: YAML in, validated objects out, YAML back beside every artefact."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from zapmulti.errors import ConfigError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DeriveRule(_Strict):
    """A label column computed from another column."""

    source: str = Field(description="column to derive from")
    rule: Literal["first_word", "lower", "copy"] = "first_word"


class DataConfig(_Strict):
    """Where the catalogue is and how to read it into one table of path plus labels."""

    source: Literal["ut-zap50k", "csv", "folder"]
    root: str = Field(
        description="folder the catalogue lives in; relative paths resolve from the config"
    )
    csv: str | None = Field(None, description="csv source: the catalogue file, relative to root")
    path_column: str | None = Field(None, description="csv source: column holding image paths")
    path_template: str | None = Field(
        None, description="csv source: image path built from columns, e.g. 'images/{id}.jpg'"
    )
    group_column: str | None = Field(
        None, description="column whose equal values must stay on one side of the split"
    )
    na_values: list[str] = Field(
        default_factory=lambda: [""],
        description="csv cells read as missing; a literal 'NA' stays a label unless listed",
    )
    extra_fields: Literal["join", "skip", "error"] = Field(
        "join", description="csv lines with more fields than the header: join into the last field"
    )
    label_column: str = Field("label", description="folder source: name of the label column")
    allow_outside_root: bool = Field(
        False, description="let paths in the catalogue point outside root (absolute or '..')"
    )
    derive: dict[str, DeriveRule] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _csv_needs_paths(self) -> DataConfig:
        if self.source == "csv":
            if not self.csv:
                raise ValueError("data.csv is required when data.source is 'csv'")
            if bool(self.path_column) == bool(self.path_template):
                raise ValueError(
                    "set exactly one of data.path_column or data.path_template for a csv source"
                )
        return self


class HeadConfig(_Strict):
    """One plug-in head: which column it learns and how its classes are formed."""

    name: str
    column: str
    type: str = Field("classification", description="a registered head type")
    classes: list[str] | None = Field(
        None, description="fixed class list; values outside it are missing for this head only"
    )
    map: dict[str, str] = Field(
        default_factory=dict, description="raw value -> class, applied before 'classes'"
    )
    min_count: int = Field(1, ge=1, description="classes rarer than this fold into other_label")
    other_label: str = "other"
    weight: float = Field(1.0, ge=0.0, description="loss weight")
    class_weights: Literal["none", "balanced"] | dict[str, float] = "none"
    options: dict[str, Any] = Field(
        default_factory=dict, description="settings of the head type (e.g. embedding dim, loss)"
    )

    @field_validator("name")
    @classmethod
    def _identifier(cls, value: str) -> str:
        if not value.replace("_", "").isalnum():
            raise ValueError(f"head name {value!r} must be letters, digits and underscores")
        return value


class ModelConfig(_Strict):
    backbone: str = "resnet50"
    weights: str = Field(
        "imagenet",
        description="'imagenet', 'none', 'offline-mobilenet_v2', or a path to a state_dict file",
    )
    image_size: int = Field(224, ge=16, le=1024)
    resize: Literal["pad", "squish"] = "pad"
    pad_value: int = Field(255, ge=0, le=255, description="fill for padding; catalogue is white")
    dropout: float = Field(0.2, ge=0.0, lt=1.0)
    channels_last: bool = True


class TrainConfig(_Strict):
    batch_size: int = Field(64, ge=1)
    frozen_epochs: int = Field(1, ge=0)
    unfrozen_epochs: int = Field(3, ge=0)
    lr: float | None = Field(
        None, gt=0, allow_inf_nan=False, description="null: use the learning-rate finder"
    )
    lr_find: bool = True
    lr_find_iters: int = Field(100, ge=20)
    lr_suggest: Literal["valley", "minimum", "steep", "slide"] = Field(
        "minimum", description="which lr_find suggestion to train with (minimum is loss-min / 10)"
    )
    lr_fallback: float = Field(1e-3, gt=0)
    lr_mult: float = Field(100.0, ge=1.0, description="head lr / first backbone group lr")
    weight_decay: float = Field(0.01, ge=0.0)
    flip: bool = Field(True, description="random horizontal flips while training")
    seed: int = Field(42, ge=0)
    num_workers: int = Field(0, ge=0, description="decode workers for the image cache build")
    bad_images: Literal["skip", "stop"] = "skip"
    mixed_precision: bool = Field(True, description="CUDA only; CPU always trains in fp32")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    max_items: int | None = Field(None, ge=1, description="cap the catalogue, for smoke runs")
    sampler: Literal["random", "m_per_class"] = Field(
        "random",
        description="training batches: random rows, or m_per_class rows of each of batch_size/m "
        "labels of sampler_head (pytorch-metric-learning's MPerClassSampler), so that pair "
        "losses of an embedding head see positives even for labels of many small classes",
    )
    m_per_class: int = Field(4, ge=1, description="rows per label in a batch (m_per_class)")
    sampler_head: str | None = Field(
        None,
        description="head whose labels m_per_class balances; default: the first embedding head",
    )


class SplitConfig(_Strict):
    valid_pct: float = Field(0.2, gt=0.0, lt=1.0)
    seed: int = Field(42, ge=0)
    file: str | None = Field(None, description="reuse a saved split.csv")


class Config(_Strict):
    data: DataConfig
    heads: list[HeadConfig]
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    split: SplitConfig = Field(default_factory=SplitConfig)
    primary_head: str | None = None
    cache_dir: str | None = Field(None, description="image cache; default $ZAPMULTI_CACHE")

    @model_validator(mode="after")
    def _heads_unique(self) -> Config:
        if not self.heads:
            raise ValueError("declare at least one head under 'heads'")
        names = [h.name for h in self.heads]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"head names must be unique, repeated: {dupes}")
        if self.primary_head is not None and self.primary_head not in names:
            raise ValueError(f"primary_head {self.primary_head!r} is not a head; heads: {names}")
        if self.train.sampler == "m_per_class":
            head = self.sampler_head
            if head is None:
                raise ValueError(
                    "train.sampler m_per_class needs a head to balance: set train.sampler_head or "
                    "add a head of type embedding"
                )
            if head not in names:
                raise ValueError(f"train.sampler_head {head!r} is not a head; heads: {names}")
            if self.train.batch_size % self.train.m_per_class:
                raise ValueError(
                    f"train.m_per_class ({self.train.m_per_class}) must divide train.batch_size "
                    f"({self.train.batch_size})"
                )
        return self

    @property
    def sampler_head(self) -> str | None:
        """The head whose labels an m_per_class sampler balances (None: no such head)."""
        if self.train.sampler_head is not None:
            return self.train.sampler_head
        return next((h.name for h in self.heads if h.type == "embedding"), None)

    @property
    def primary(self) -> str:
        return self.primary_head or self.heads[0].name


def format_errors(err: ValidationError, source: str, prefix: tuple[str, ...] = ()) -> str:
    lines = [f"invalid config {source}:"]
    for item in err.errors():
        key = ".".join(str(p) for p in (*prefix, *item["loc"])) or "<top level>"
        msg = item["msg"]
        if item["type"] == "value_error":
            msg = msg.removeprefix("Value error, ")
            if key == "<top level>":
                lines.append(f"  {msg}")
                continue
        if item["type"] == "extra_forbidden":
            msg = "unknown key"
        elif item["type"] == "literal_error":
            msg = f"{msg} (got {item.get('input')!r})"
        lines.append(f"  {key}: {msg}")
    return "\n".join(lines)


def _parse_value(text: str) -> Any:
    return yaml.safe_load(text) if text != "" else ""


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `key.sub=value` overrides (values parsed as YAML) to a raw config dict."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key=value, e.g. train.batch_size=32")
        key, value = item.split("=", 1)
        node: Any = raw
        parts = key.strip().split(".")
        for part in parts[:-1]:
            if isinstance(node, list):
                node = node[_list_index(node, part, key)]
            else:
                node = node.setdefault(part, {})
        last = parts[-1]
        if isinstance(node, list):
            node[_list_index(node, last, key)] = _parse_value(value)
        else:
            node[last] = _parse_value(value)
    return raw


def _list_index(node: list, part: str, key: str) -> int:
    # Heads are a list: allow both heads.0.weight and heads.gender.weight.
    if part.isdigit():
        if int(part) >= len(node):
            names = [item.get("name") for item in node if isinstance(item, dict)]
            listed = f": {', '.join(map(str, names))}" if names else ""
            raise ConfigError(
                f"--set {key}: index {part} is past the end of a list of {len(node)} "
                f"(entries 0 to {len(node) - 1}{listed})"
            )
        return int(part)
    for i, item in enumerate(node):
        if isinstance(item, dict) and item.get("name") == part:
            return i
    names = [item.get("name") for item in node if isinstance(item, dict)]
    raise ConfigError(f"--set {key}: no list entry named {part!r} (entries: {names})")


def load_config(path: str | os.PathLike, overrides: list[str] | None = None) -> Config:
    """Read a YAML config, apply overrides and validate it.

    Relative `data.root`, `split.file` and `cache_dir` resolve against the config's folder.
    """
    path = Path(path)
    raw = apply_overrides(read_yaml(path), overrides or [])
    base = path.resolve().parent
    _resolve_root(raw.get("data"), base)
    split = raw.get("split")
    if isinstance(split, dict) and isinstance(split.get("file"), str):
        split["file"] = str((base / split["file"]).resolve())
    source = f"{path} with --set {' '.join(overrides)}" if overrides else str(path)
    return config_from_dict(raw, source=source)


def load_data_config(path: str | os.PathLike) -> DataConfig:
    """The `data` section of a YAML file: a full config, or a file holding only ``data:``."""
    path = Path(path)
    raw = read_yaml(path)
    if "data" not in raw:
        raise ConfigError(f"{path} has no 'data' section; see configs/ for examples")
    _resolve_root(raw["data"], path.resolve().parent)
    try:
        return DataConfig.model_validate(raw["data"])
    except ValidationError as err:
        # Name the keys as they appear in the file: data.root, not root.
        raise ConfigError(format_errors(err, str(path), ("data",))) from None


def read_yaml(path: Path) -> dict[str, Any]:
    if path.is_dir():
        raise ConfigError(f"{path} is a folder; give a YAML config file (see configs/)")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config {path}: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping with 'data' and 'heads' at the top")
    return raw


def _resolve_root(data: Any, base: Path) -> None:
    """A relative data.root is relative to the config file's folder."""
    if isinstance(data, dict) and isinstance(data.get("root"), str):
        data["root"] = str((base / os.path.expanduser(data["root"])).resolve())


def config_from_dict(raw: dict[str, Any], source: str = "<dict>") -> Config:
    try:
        return Config.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(format_errors(err, source)) from None


def config_to_dict(config: Config) -> dict[str, Any]:
    return config.model_dump(mode="json")


def dump_config(config: Config, path: str | os.PathLike) -> None:
    from zapmulti.fileio import atomic_write_text

    text = yaml.safe_dump(config_to_dict(config), sort_keys=False, allow_unicode=True)
    atomic_write_text(path, text)
