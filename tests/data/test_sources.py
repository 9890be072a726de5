"""Each catalogue source returns one table: path, key, group and label columns."""

from __future__ import annotations

import logging

import mat4py
import pandas as pd
import pytest
from conftest import FASHION, MISSING_IMAGE, UTZAP_ROWS, ZAPPOS, make_utzap, needs_shared

from zapmulti.config import DataConfig
from zapmulti.data.sources import load_table, read_folder
from zapmulti.errors import DataError


def test_utzap_reads_mat_and_meta_by_row_order(utzap_root, caplog):
    with caplog.at_level(logging.WARNING):
        table = load_table(DataConfig(source="ut-zap50k", root=str(utzap_root)))

    assert len(table) == len(UTZAP_ROWS) - 1  # the listed-but-missing image is left out
    assert MISSING_IMAGE not in set(table["key"])
    assert "not on disk" in caplog.text and "8029595.574" in caplog.text

    first = table.iloc[0]
    assert first["key"] == "Shoes/Oxfords/Bostonian/100627.72.jpg"
    assert (first["Category"], first["SubCategory"], first["Brand"]) == (
        "Shoes",
        "Oxfords",
        "Bostonian",
    )
    assert first["CID"] == "100627-72" and first["group"] == "100627"
    assert first["Gender"] == "Men" and first["Material"] == "Leather"


def test_utzap_resolves_percent_2e_brand_folders(utzap_root):
    table = load_table(DataConfig(source="ut-zap50k", root=str(utzap_root)))
    nine = table[table["Brand"] == "Nine West."]
    assert len(nine) == sum(r[2] == "Nine West." for r in UTZAP_ROWS)
    assert all("Nine West%2E" in p for p in nine["path"])
    assert all(pd.io.common.file_exists(p) for p in nine["path"])


def test_utzap_keeps_raw_gender_values(utzap_root):
    table = load_table(DataConfig(source="ut-zap50k", root=str(utzap_root)))
    assert {"Men", "Women", "Boys", "Men;Women"} <= set(table["Gender"].dropna())
    assert table["Gender"].isna().sum() == 1  # the one empty Gender cell is missing, not ""


def test_utzap_row_count_mismatch_names_both_counts(tmp_path):
    root = make_utzap(tmp_path / "z")
    mat = root / "ut-zap50k-data" / "image-path.mat"
    paths = mat4py.loadmat(str(mat))["imagepath"]
    mat4py.savemat(str(mat), {"imagepath": paths[:-2]})
    with pytest.raises(DataError, match=rf"{len(paths) - 2} images but .* {len(paths)} rows"):
        load_table(DataConfig(source="ut-zap50k", root=str(root)))


def test_utzap_malformed_mat_names_the_file(tmp_path):
    root = make_utzap(tmp_path / "z")
    mat = root / "ut-zap50k-data" / "image-path.mat"
    mat.write_bytes(b"MATLAB 5.0 MAT-file" + b"\x00" * 50)
    with pytest.raises(DataError, match="image-path.mat"):
        load_table(DataConfig(source="ut-zap50k", root=str(root)))


def test_missing_layout_says_how_to_get_it(tmp_path):
    with pytest.raises(DataError, match="zapmulti download ut-zap50k"):
        load_table(DataConfig(source="ut-zap50k", root=str(tmp_path)))


def _csv(tmp_path, text: str, **kw) -> pd.DataFrame:
    (tmp_path / "images").mkdir(exist_ok=True)
    for i in range(1, 6):
        (tmp_path / "images" / f"{i}.jpg").write_bytes(b"x")
    (tmp_path / "cat.csv").write_text(text)
    cfg = DataConfig(
        source="csv", root=str(tmp_path), csv="cat.csv", path_template="images/{id}.jpg", **kw
    )
    return load_table(cfg)


def test_csv_rejoins_commas_in_last_field_and_keeps_literal_na(tmp_path):
    table = _csv(
        tmp_path,
        "id,gender,usage,name\n"
        "1,Men,NA,Plain name\n"
        "2,Women,,Liv,Laugh,Love Heels\n"
        "3,Men,Casual,A, B\n",
    )
    assert list(table["name"]) == ["Plain name", "Liv,Laugh,Love Heels", "A, B"]
    assert table.loc[0, "usage"] == "NA"
    assert pd.isna(table.loc[1, "usage"])
    assert list(table["key"]) == ["images/1.jpg", "images/2.jpg", "images/3.jpg"]


def test_csv_can_skip_or_refuse_overlong_lines(tmp_path):
    text = "id,gender,name\n1,Men,ok\n2,Women,a,b\n"
    assert list(_csv(tmp_path, text, extra_fields="skip")["id"]) == ["1"]
    with pytest.raises(DataError, match="line 3: 4 fields"):
        _csv(tmp_path, text, extra_fields="error")


def test_csv_missing_template_column_lists_columns(tmp_path):
    (tmp_path / "cat.csv").write_text("sku,gender\n1,Men\n")
    cfg = DataConfig(
        source="csv", root=str(tmp_path), csv="cat.csv", path_template="images/{id}.jpg"
    )
    with pytest.raises(DataError, match=r"\['id'\].*columns present: \['sku', 'gender'\]"):
        load_table(cfg)


def test_csv_empty_file(tmp_path):
    (tmp_path / "cat.csv").write_text("")
    cfg = DataConfig(source="csv", root=str(tmp_path), csv="cat.csv", path_column="p")
    with pytest.raises(DataError, match="cat.csv is empty"):
        load_table(cfg)


def test_csv_paths_cannot_escape_root(tmp_path):
    (tmp_path / "cat.csv").write_text("p,label\n../secret.jpg,a\n")
    cfg = DataConfig(source="csv", root=str(tmp_path), csv="cat.csv", path_column="p")
    with pytest.raises(DataError, match="outside the data root"):
        load_table(cfg)


def test_config_csv_path_cannot_escape_root(tmp_path):
    (tmp_path / "root").mkdir()
    (tmp_path / "outside.csv").write_text("p,label\n")
    cfg = DataConfig(
        source="csv", root=str(tmp_path / "root"), csv="../outside.csv", path_column="p"
    )
    with pytest.raises(DataError, match="data.csv: path '../outside.csv' points outside"):
        load_table(cfg)


def test_csv_duplicate_ids_keep_the_first_row(tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        table = _csv(tmp_path, "id,gender,name\n1,Men,a\n2,Women,b\n1,Women,c\n")
    assert table["id"].tolist() == ["1", "2"] and table["gender"].tolist() == ["Men", "Women"]
    assert "repeat an image path" in caplog.text and "images/1.jpg" in caplog.text


def test_folder_source_labels_by_parent(tmp_path):
    for label in ("Boot", "Shoe"):
        (tmp_path / label).mkdir()
        for i in range(2):
            (tmp_path / label / f"{label} ({i}).jpg").write_bytes(b"x")
    table = read_folder(tmp_path, "Category")
    assert sorted(table["Category"]) == ["Boot", "Boot", "Shoe", "Shoe"]
    assert "Boot/Boot (0).jpg" in set(table["key"])


@needs_shared(FASHION)
def test_shared_data_fashion_csv_loads_all_rows():
    cfg = DataConfig(
        source="csv", root=str(FASHION), csv="styles.csv", path_template="images/{id}.jpg"
    )
    table = load_table(cfg)
    assert len(table) == 4000
    assert table["gender"].value_counts().to_dict() == {
        "Men": 1700,
        "Women": 1700,
        "Unisex": 486,
        "Girls": 60,
        "Boys": 54,
    }


@needs_shared(ZAPPOS)
def test_shared_data_zappos_folder_source():
    table = read_folder(ZAPPOS / "images", "Category")
    assert table["Category"].value_counts().to_dict() == {
        "Boot": 1004,
        "Sandal": 1000,
        "Shoe": 1000,
    }
