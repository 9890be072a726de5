"""Config loading, overrides and validation messages."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from zapmulti.config import config_from_dict, dump_config, load_config, load_data_config
from zapmulti.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
BASE = {
    "data": {"source": "folder", "root": "/tmp"},
    "heads": [{"name": "category", "column": "label"}],
}


def test_unknown_key_is_named():
    raw = {**BASE, "trian": {"batch_size": 3}}
    with pytest.raises(ConfigError, match=r"trian: unknown key"):
        config_from_dict(raw)


def test_wrong_type_and_literal_list_allowed_values():
    raw = {**BASE, "model": {"image_size": "big", "resize": "crop"}}
    with pytest.raises(ConfigError) as err:
        config_from_dict(raw)
    text = str(err.value)
    assert "model.image_size" in text
    assert "model.resize" in text and "'pad' or 'squish'" in text and "'crop'" in text


def test_csv_source_needs_exactly_one_path_setting():
    raw = {"data": {"source": "csv", "root": "/tmp", "csv": "a.csv"}, "heads": BASE["heads"]}
    with pytest.raises(ConfigError, match="exactly one of data.path_column or data.path_template"):
        config_from_dict(raw)


def test_duplicate_heads_and_bad_primary():
    raw = {**BASE, "heads": BASE["heads"] * 2}
    with pytest.raises(ConfigError, match="repeated"):
        config_from_dict(raw)
    with pytest.raises(ConfigError, match="primary_head 'gender' is not a head"):
        config_from_dict({**BASE, "primary_head": "gender"})


def test_overrides_and_relative_root(tmp_path):
    path = tmp_path / "c.yaml"
    raw = {**BASE, "data": {"source": "folder", "root": "imgs"}}
    path.write_text(yaml.safe_dump(raw))
    cfg = load_config(
        path, ["train.batch_size=7", "heads.category.weight=0.5", "model.weights=none"]
    )
    assert cfg.train.batch_size == 7 and cfg.heads[0].weight == 0.5
    assert cfg.model.weights == "none"
    assert cfg.data.root == str((tmp_path / "imgs").resolve())
    with pytest.raises(ConfigError, match="no list entry named 'colour'"):
        load_config(path, ["heads.colour.weight=1"])


def test_dump_round_trip(tmp_path):
    cfg = config_from_dict(BASE)
    dump_config(cfg, tmp_path / "out.yaml")
    again = config_from_dict(yaml.safe_load((tmp_path / "out.yaml").read_text()))
    assert again == cfg


@pytest.mark.parametrize("name", sorted(p.name for p in (REPO / "configs").glob("*.yaml")))
def test_shipped_configs_validate(name):
    cfg = load_config(REPO / "configs" / name)
    assert cfg.heads


def test_data_only_file_folder_and_list_index_errors(tmp_path):
    """A file with only a data section serves --data; a folder or a bad list index is named."""
    only = tmp_path / "more.yaml"
    only.write_text(yaml.safe_dump({"data": {"source": "folder", "root": "images"}}))
    data = load_data_config(only)
    assert data.source == "folder" and data.root == str((tmp_path / "images").resolve())
    with pytest.raises(ConfigError, match=r"more.yaml:\n  data.root: .*"):
        only.write_text(yaml.safe_dump({"data": {"source": "folder", "root": 3.5}}))
        load_data_config(only)
    only.write_text(yaml.safe_dump({"heads": []}))
    with pytest.raises(ConfigError, match="has no 'data' section"):
        load_data_config(only)
    with pytest.raises(ConfigError, match="is a folder; give a YAML config file"):
        load_config(tmp_path)
    full = tmp_path / "full.yaml"
    full.write_text(yaml.safe_dump(BASE))
    with pytest.raises(ConfigError, match=r"heads.5.weight: index 5 is past the end .*: category"):
        load_config(full, ["heads.5.weight=1"])
    with pytest.raises(
        ConfigError, match=r"no list entry named 'colour' \(entries: \['category'\]"
    ):
        load_config(full, ["heads.colour.weight=1"])
