"""A MATLAB v7.3 (HDF5) image-path.mat is read through h5py."""

from __future__ import annotations

import h5py
import numpy as np

from zapmulti.config import DataConfig
from zapmulti.data.sources import _load_mat_paths, load_table


def write_mat73(path, strings):
    """A cell array of char rows, stored the way MATLAB -v7.3 does (references into #refs#)."""
    with h5py.File(path, "w", userblock_size=512) as fh:
        refs = fh.create_group("#refs#")
        ref_dtype = h5py.special_dtype(ref=h5py.Reference)
        cell = fh.create_dataset("imagepath", (len(strings), 1), dtype=ref_dtype)
        for i, s in enumerate(strings):
            chars = refs.create_dataset(f"r{i}", data=np.array([[ord(c)] for c in s], np.uint16))
            cell[i, 0] = chars.ref
    with open(path, "r+b") as fh:
        fh.write(b"MATLAB 7.3 MAT-file, Platform: GLNXA64".ljust(116, b" "))


def test_v73_mat_matches_v5(utzap_root, tmp_path):
    import shutil

    root = tmp_path / "z"
    shutil.copytree(utzap_root, root)
    mat = root / "ut-zap50k-data" / "image-path.mat"
    v5 = _load_mat_paths(mat)
    write_mat73(mat, v5)
    assert _load_mat_paths(mat) == v5
    table = load_table(DataConfig(source="ut-zap50k", root=str(root)))
    assert table["key"].iloc[0] == v5[0]
