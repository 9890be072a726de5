"""The three catalogue sources. Each returns one table: `path` (absolute), `key`, `group`, labels.

`key` is the image path relative to the data root: it names a row in saved splits and reports.
`group` holds the product id, so that colour variants of one product never straddle the split.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import string
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from zapmulti.config import DataConfig
from zapmulti.errors import DataError

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
UTZAP_DATA_DIR = "ut-zap50k-data"
UTZAP_IMAGE_DIRS = ("ut-zap50k-images-square", "ut-zap50k-images")


def load_table(data: DataConfig) -> pd.DataFrame:
    """Read the catalogue that `data` describes into one table."""
    root = Path(data.root)
    if not root.is_dir():
        raise DataError(
            f"data root {root} does not exist; set data.root in the config "
            "(or fetch UT-Zap50K with `zapmulti download ut-zap50k --to DIR`)"
        )
    if data.source == "ut-zap50k":
        table = read_ut_zap50k(root)
    elif data.source == "csv":
        table = read_csv_catalogue(root, data)
    else:
        table = read_folder(root, data.label_column)
    if data.group_column:
        if data.group_column not in table.columns:
            raise DataError(_missing_column_message("data.group_column", data.group_column, table))
        table["group"] = table[data.group_column].astype(str)
    return table.reset_index(drop=True)


def _missing_column_message(what: str, column: str, table: pd.DataFrame) -> str:
    present = [c for c in table.columns if c not in ("path", "key", "group")]
    return f"{what}: column {column!r} is not in the catalogue; columns present: {present}"


# --------------------------------------------------------------------------- UT-Zap50K


def _load_mat_paths(mat_path: Path) -> list[str]:
    """Read the `imagepath` cell array of image-path.mat (MATLAB v5 via mat4py, v7.3 via h5py)."""
    with open(mat_path, "rb") as fh:
        head = fh.read(512)
    if head[:8] == b"\x89HDF\r\n\x1a\n" or b"MATLAB 7.3" in head[:128]:
        return _load_mat73_paths(mat_path)

    import mat4py

    try:
        content = mat4py.loadmat(str(mat_path))
    except Exception as exc:  # mat4py raises bare ParseError/ValueError/struct errors
        raise DataError(
            f"{mat_path} is not a readable MATLAB file ({type(exc).__name__}: {exc}); "
            "re-extract ut-zap50k-data.zip or re-save it in MATLAB with save(..., '-v7')"
        ) from None
    return _flatten_paths(content, mat_path)


def _load_mat73_paths(mat_path: Path) -> list[str]:
    try:
        import h5py
    except ImportError:  # pragma: no cover - h5py is a dependency
        raise DataError(
            f"{mat_path} is a MATLAB v7.3 (HDF5) file; install h5py, or re-save it in MATLAB "
            "with save('image-path.mat', 'imagepath', '-v7')"
        ) from None
    try:
        with h5py.File(mat_path, "r") as fh:
            names = [k for k in fh if not k.startswith("#")]
            if not names:
                raise DataError(f"{mat_path}: the HDF5 file holds no variable")
            ds = fh[names[0]]
            out = []
            for ref in ds[()].ravel():
                chars = fh[ref][()] if isinstance(ref, h5py.Reference) else ref
                out.append("".join(chr(int(c)) for c in chars.ravel()))
            return out
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"{mat_path}: cannot read the v7.3 file ({exc})") from None


def _flatten_paths(content: object, mat_path: Path) -> list[str]:
    if not isinstance(content, dict) or not content:
        raise DataError(f"{mat_path}: expected a variable 'imagepath' holding the image paths")
    value = content.get("imagepath", next(iter(content.values())))
    out: list[str] = []

    def walk(node: object) -> None:
        if isinstance(node, str):
            out.append(node)
        elif isinstance(node, list):
            for item in node:
                walk(item)
        else:
            raise DataError(f"{mat_path}: unexpected entry {node!r} in the path list")

    walk(value)
    return out


def resolve_utzap_path(image_root: Path, rel: str) -> Path | None:
    """Find `rel` on disk; folders ending in '.' are stored as '%2E' once extracted."""
    rel = rel.replace("\\", "/").removeprefix("./")
    direct = image_root / rel
    if direct.exists():
        return direct
    parts = rel.split("/")
    encoded = [p[:-1] + "%2E" if p.endswith(".") else p for p in parts[:-1]] + parts[-1:]
    candidate = image_root.joinpath(*encoded)
    if candidate.exists():
        return candidate
    decoded = [p[:-3] + "." if p.endswith("%2E") else p for p in parts[:-1]] + parts[-1:]
    candidate = image_root.joinpath(*decoded)
    return candidate if candidate.exists() else None


def read_ut_zap50k(root: Path) -> pd.DataFrame:
    """The official layout: image-path.mat and meta-data.csv, joined by row order."""
    data_dir = root / UTZAP_DATA_DIR
    image_root = next((root / d for d in UTZAP_IMAGE_DIRS if (root / d).is_dir()), None)
    if image_root is None or not data_dir.is_dir():
        raise DataError(
            f"{root} is not in the UT-Zap50K layout: expected {UTZAP_DATA_DIR}/ and one of "
            f"{'/ or '.join(UTZAP_IMAGE_DIRS)}/ inside it "
            "(run `zapmulti download ut-zap50k --to DIR`)"
        )
    mat_path, meta_path = data_dir / "image-path.mat", data_dir / "meta-data.csv"
    for f in (mat_path, meta_path):
        if not f.is_file():
            raise DataError(f"missing {f}; extract ut-zap50k-data.zip into {root}")

    paths = _load_mat_paths(mat_path)
    meta = pd.read_csv(meta_path, dtype=str, keep_default_na=False, na_values=[""])
    if len(paths) != len(meta):
        raise DataError(
            f"{mat_path.name} lists {len(paths)} images but {meta_path.name} has {len(meta)} rows; "
            "the two are joined by row order and must have the same length"
        )

    rows, missing = [], []
    for i, rel in enumerate(paths):
        rel = rel.replace("\\", "/")
        parts = rel.split("/")
        if len(parts) < 4:
            raise DataError(
                f"{mat_path}: entry {i + 1} {rel!r} is not Category/SubCategory/Brand/file.jpg"
            )
        found = resolve_utzap_path(image_root, rel)
        if found is None:
            missing.append(rel)
            continue
        cid = Path(parts[-1]).stem.replace(".", "-")
        rows.append(
            {
                "row": i,
                "path": str(found),
                "key": rel,
                "Category": parts[0],
                "SubCategory": parts[1],
                "Brand": parts[2],
                "CID": cid,
                "group": cid.split("-")[0],
            }
        )
    if missing:
        logger.warning(
            "%d image(s) listed in %s are not on disk and are left out, e.g. %s",
            len(missing),
            mat_path.name,
            missing[:3],
        )
    table = pd.DataFrame(rows)
    meta = meta.drop(columns=[c for c in ("Category", "SubCategory") if c in meta.columns])
    meta = meta.rename(columns={"CID": "meta_CID"}) if "CID" in meta.columns else meta
    table = table.join(meta, on="row").drop(columns="row")
    table.attrs["missing_files"] = missing
    if "meta_CID" in table.columns:
        mismatch = table["meta_CID"].notna() & (table["meta_CID"] != table["CID"])
        if mismatch.any():
            first = table[mismatch].iloc[0]
            logger.warning(
                "%d row(s) of meta-data.csv have a CID that differs from the image name, e.g. %s "
                "vs %s; rows are joined by order as the dataset documents",
                int(mismatch.sum()),
                first["meta_CID"],
                first["key"],
            )
        table = table.drop(columns="meta_CID")
    return table


# --------------------------------------------------------------------------- CSV


def _template_fields(template: str) -> list[str]:
    return [f for _, f, _, _ in string.Formatter().parse(template) if f]


def _read_raw_csv(csv_path: Path, extra_fields: str) -> tuple[list[str], list[list[str]]]:
    """Parse a catalogue CSV that may have unquoted commas in its last field."""
    try:
        # newline="" as the csv module asks: a quoted "\r" inside a field is kept as it is
        with open(csv_path, encoding="utf-8-sig", newline="") as fh:
            text = fh.read()
    except FileNotFoundError:
        raise DataError(
            f"catalogue CSV not found: {csv_path}; check data.root and data.csv"
        ) from None
    except UnicodeDecodeError as exc:
        raise DataError(f"{csv_path} is not UTF-8 text ({exc}); re-save it as UTF-8") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except StopIteration:
        raise DataError(f"{csv_path} is empty: expected a header line and rows") from None
    except csv.Error as exc:
        raise DataError(f"{csv_path}: cannot parse the header ({exc})") from None
    width = len(header)
    rows: list[list[str]] = []
    joined = skipped = 0
    try:
        for fields in reader:
            if not fields or all(f == "" for f in fields) and len(fields) <= 1:
                continue
            if len(fields) > width:
                line = reader.line_num
                if extra_fields == "error":
                    raise DataError(
                        f"{csv_path} line {line}: {len(fields)} fields, header has {width}; "
                        "quote the last field or set data.extra_fields to 'join' or 'skip'"
                    )
                if extra_fields == "skip":
                    skipped += 1
                    continue
                fields = fields[: width - 1] + [",".join(fields[width - 1 :])]
                joined += 1
            elif len(fields) < width:
                raise DataError(
                    f"{csv_path} line {reader.line_num}: {len(fields)} fields but the header has "
                    f"{width} ({header}); fix or remove that line"
                )
            rows.append(fields)
    except csv.Error as exc:
        raise DataError(f"{csv_path} line {reader.line_num}: {exc}") from None
    if joined:
        logger.info(
            "%s: %d line(s) had extra commas, rejoined into %r", csv_path, joined, header[-1]
        )
    if skipped:
        logger.warning("%s: skipped %d line(s) with too many fields", csv_path, skipped)
    return header, rows


def check_inside_root(root: Path, path: Path, where: str, allow: bool) -> Path:
    """Refuse a catalogue path that escapes the data root unless the config allows it."""
    resolved = (root / path).resolve() if not path.is_absolute() else path.resolve()
    if allow:
        return resolved
    try:
        resolved.relative_to(root.resolve())
    except ValueError:
        raise DataError(
            f"{where}: path {str(path)!r} points outside the data root {root}; "
            "set data.allow_outside_root: true if that is intended"
        ) from None
    return resolved


def read_csv_catalogue(root: Path, data: DataConfig) -> pd.DataFrame:
    """A catalogue CSV with a path column or a path template, and label columns."""
    csv_path = check_inside_root(root, Path(str(data.csv)), "data.csv", data.allow_outside_root)
    header, rows = _read_raw_csv(csv_path, data.extra_fields)
    if len(set(header)) != len(header):
        dupes = sorted({h for h in header if header.count(h) > 1})
        raise DataError(f"{csv_path}: repeated column name(s) {dupes} in the header")
    table = pd.DataFrame(rows, columns=header, dtype=object)
    na = set(data.na_values)
    if na:
        table = table.mask(table.isin(na))

    if data.path_column:
        if data.path_column not in table.columns:
            raise DataError(
                f"{csv_path}: data.path_column {data.path_column!r} is not a column; "
                f"columns present: {header}"
            )
        rel = table[data.path_column]
    else:
        template = str(data.path_template)
        fields = _template_fields(template)
        absent = [f for f in fields if f not in table.columns]
        if absent:
            raise DataError(
                f"{csv_path}: data.path_template {template!r} uses column(s) {absent} "
                f"that are not in the file; columns present: {header}"
            )
        rel = table[fields].apply(lambda r: template.format(**r.to_dict()), axis=1)
        if table.empty:
            rel = pd.Series([], dtype=object)
    empty_path = rel.isna()
    if empty_path.any():
        line = int(empty_path.to_numpy().nonzero()[0][0]) + 2
        raise DataError(f"{csv_path} line {line}: the image path is empty")

    paths = [
        str(check_inside_root(root, Path(p), f"{csv_path} line {i + 2}", data.allow_outside_root))
        for i, p in enumerate(rel)
    ]
    keys = [str(p).replace("\\", "/") for p in rel]
    table = _free_reserved_columns(table, data.path_column, csv_path)
    table.insert(0, "path", paths)
    table.insert(1, "key", keys)
    dup = table["key"].duplicated()
    if dup.any():
        logger.warning(
            "%s: %d row(s) repeat an image path already listed (e.g. %s); keeping the first",
            csv_path,
            int(dup.sum()),
            table.loc[dup, "key"].iloc[0],
        )
        table = table[~dup]
    table["group"] = table["key"]
    return _drop_missing_files(table, csv_path)


RESERVED = ("path", "key", "group")


def _free_reserved_columns(table: pd.DataFrame, path_column: str | None, source: Path):
    """Make room for zapmulti's own columns; a catalogue column of the same name is renamed."""
    for name in RESERVED:
        if name not in table.columns:
            continue
        if name == path_column == "path":
            table = table.drop(columns=name)  # its relative form lives on as `key`
            continue
        logger.info(
            "%s: column %r is renamed to 'csv_%s' (the name is reserved)", source, name, name
        )
        table = table.rename(columns={name: f"csv_{name}"})
    return table


def _drop_missing_files(table: pd.DataFrame, source: Path) -> pd.DataFrame:
    exists = table["path"].map(os.path.exists)
    if not exists.all():
        gone = table.loc[~exists, "key"].tolist()
        logger.warning(
            "%d image(s) listed in %s are not on disk and are left out, e.g. %s",
            len(gone),
            source,
            gone[:3],
        )
    kept = table[exists].reset_index(drop=True)
    kept.attrs["missing_files"] = table.loc[~exists, "key"].tolist()
    return kept


# --------------------------------------------------------------------------- folder


def iter_images(folder: Path) -> Iterable[Path]:
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith("."):
                yield Path(dirpath) / name


def read_folder(root: Path, label_column: str = "label") -> pd.DataFrame:
    """Images under root/<label>/...: the label is the name of the parent folder."""
    rows = []
    for path in iter_images(root):
        rel = path.relative_to(root)
        if len(rel.parts) < 2:
            continue
        rows.append({"path": str(path), "key": rel.as_posix(), label_column: path.parent.name})
    if not rows:
        raise DataError(f"{root}: no images found in sub-folders (expected root/<label>/<image>)")
    table = pd.DataFrame(rows)
    table["group"] = table["key"]
    return table
