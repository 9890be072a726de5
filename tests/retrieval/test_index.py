"""The index folder: save/load round trip, atomic writes, factory clamping, CPU copies."""

from __future__ import annotations

import json

import faiss
import numpy as np
import pytest
from retrieval_toys import make_index, toy, unit_vectors

from zapmulti.errors import ConfigError
from zapmulti.retrieval import index as index_module
from zapmulti.retrieval.index import (
    MANIFEST,
    IndexDirError,
    create_faiss_index,
    load_index,
    plan_factory,
    to_cpu,
)
from zapmulti.retrieval.search import search_vectors


@pytest.mark.parametrize("factory", ["Flat", "HNSW8"])
def test_save_load_round_trip(toy, tmp_path, factory):
    index = make_index(
        np.asarray(toy.vectors), factory, **{c: toy.metadata[c].tolist() for c in toy.label_columns}
    )
    queries = unit_vectors(4, 16, seed=9)
    before = search_vectors(index, queries, k=7, where=["gender=Women"])
    index.save(tmp_path / "idx")

    loaded = load_index(tmp_path / "idx")
    assert (tmp_path / "idx").stat().st_mode & 0o055  # not the 0700 of a temporary folder
    assert len(loaded) == len(index) and loaded.dim == 16
    assert loaded.manifest["items"] == len(index) and loaded.manifest["metric"] == "cosine"
    assert loaded.metadata["path"].tolist() == index.metadata["path"].tolist()
    # Missing labels stay missing; every other cell comes back as the same text.
    assert loaded.metadata["gender"].tolist() == index.metadata["gender"].tolist()
    np.testing.assert_array_equal(loaded.vectors, index.vectors)
    after = search_vectors(loaded, queries, k=7, where=["gender=Women"])
    for (a, sa), (b, sb) in zip(before, after, strict=True):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(sa, sb)


def test_interrupted_save_leaves_no_index(toy, tmp_path, monkeypatch):
    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(index_module, "write_json", crash)
    with pytest.raises(KeyboardInterrupt):
        toy.save(tmp_path / "idx")
    assert not (tmp_path / "idx").exists()
    assert list(tmp_path.iterdir()) == []  # no temporary folder left behind either


def test_interrupted_resave_keeps_the_old_index(toy, tmp_path, monkeypatch):
    toy.save(tmp_path / "idx")
    monkeypatch.setattr(index_module, "write_json", lambda *a, **k: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        toy.save(tmp_path / "idx")
    assert len(load_index(tmp_path / "idx")) == len(toy)


def test_refuses_to_overwrite_and_names_broken_folders(toy, tmp_path):
    toy.save(tmp_path / "idx")
    with pytest.raises(IndexDirError, match="--overwrite"):
        toy.save(tmp_path / "idx", overwrite=False)
    with pytest.raises(IndexDirError, match="not found"):
        load_index(tmp_path / "nothing")

    manifest = tmp_path / "idx" / MANIFEST
    raw = json.loads(manifest.read_text())
    manifest.write_text(json.dumps({**raw, "items": 3}))
    with pytest.raises(IndexDirError, match="item counts disagree"):
        load_index(tmp_path / "idx")
    manifest.write_text(json.dumps({**raw, "format": 99}))
    with pytest.raises(IndexDirError, match="format 99"):
        load_index(tmp_path / "idx")
    (tmp_path / "idx" / "vectors.npy").unlink()
    with pytest.raises(IndexDirError, match="vectors.npy"):
        load_index(tmp_path / "idx")


def test_factory_parameters_are_clamped_for_small_catalogues(caplog):
    caplog.set_level("INFO")
    plan = plan_factory("IVF1024,PQ64", n=36, dim=32)
    assert plan.used == "IVF1,PQ32x4"
    assert len(plan.notes) == 3 and "IVF list count 1024 -> 1" in caplog.text
    assert plan_factory("IVF4096,Flat", n=3004, dim=8).used == "IVF77,Flat"
    assert plan_factory("HNSW32", n=10, dim=8).used == "HNSW32"
    assert plan_factory("OPQ16,IVF64,PQ16", n=100, dim=32).used == "IVF2,PQ16x4"


@pytest.mark.parametrize(
    "factory", ["IVF1024,PQ64", "IVF4096,Flat", "OPQ8,IVF256,PQ8", "PQ16", "HNSW16,PQ8"]
)
def test_clamped_factories_build_and_search_on_a_tiny_catalogue(factory):
    vectors = unit_vectors(36, 32, seed=7)
    index = make_index(vectors, factory)
    assert len(index) == 36 and index.manifest["factory_used"] != ""
    hits = search_vectors(index, vectors[:2], k=50)
    assert all(len(ids) == 36 and (ids >= 0).all() for ids, _ in hits)


def test_untrainable_factory_falls_back_to_flat():
    with pytest.warns(UserWarning, match="could not be trained on 10 vectors"):
        index, plan = create_faiss_index(unit_vectors(10, 32), "PQ8")
    assert plan.used == "Flat" and index.ntotal == 10


def test_unknown_factory_names_examples():
    with pytest.raises(ConfigError, match="not a faiss factory string.*HNSW32"):
        create_faiss_index(unit_vectors(10, 4), "Bogus12")


def test_gpu_request_without_gpu_builds_on_cpu():
    with pytest.warns(UserWarning, match="building on the CPU"):
        index, plan = create_faiss_index(unit_vectors(20, 8), "Flat", gpu=True)
    assert isinstance(index, faiss.IndexFlat) and index.metric_type == faiss.METRIC_INNER_PRODUCT
    assert plan.built_on == "cpu" and "no GPU index was available" in plan.notes[0]


def test_gpu_index_is_copied_to_cpu_before_saving(monkeypatch):
    cpu = faiss.IndexFlatIP(4)

    class GpuIndexFlatIP:  # stands in for faiss's GPU class, which faiss-cpu does not have
        pass

    calls = []
    monkeypatch.setattr(
        faiss, "index_gpu_to_cpu", lambda index: calls.append(index) or cpu, raising=False
    )
    fake = GpuIndexFlatIP()
    assert to_cpu(fake) is cpu and calls == [fake]
    assert to_cpu(cpu) is cpu and len(calls) == 1
