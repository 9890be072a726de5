"""End to end on the generated catalogue: a run with an embedding head, then every command."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from zapmulti.cli import main
from zapmulti.retrieval import load_index


@pytest.fixture(scope="module")
def embedding_run(utzap_config_dict, tmp_path_factory):
    """A category head plus an embedding head on the category, trained for one short epoch
    with class-balanced batches."""
    from zapmulti.config import config_from_dict
    from zapmulti.train import train

    raw = json.loads(json.dumps(utzap_config_dict))
    raw["heads"] = [
        {"name": "category", "column": "Category"},
        {
            "name": "similar",
            "column": "Category",
            "type": "embedding",
            "weight": 0.5,
            "options": {"dim": 16, "loss": "multi_similarity", "miner": "multi_similarity"},
        },
    ]
    raw["train"].update(lr_find=False, lr=1e-3, frozen_epochs=1, unfrozen_epochs=0)
    raw["train"].update(sampler="m_per_class", m_per_class=4)  # batches of 2 x 4 same-category
    out = tmp_path_factory.mktemp("runs") / "embedding-run"
    return train(config_from_dict(raw), out, show_progress=False)


def _new_catalogue(root) -> str:
    """Four new shoes in a folder catalogue (root/<Category>/<image>) and its config."""
    for i in range(4):
        folder = root / "images" / ("Slippers" if i < 2 else "Boots")
        folder.mkdir(parents=True, exist_ok=True)
        arr = np.full((102, 136, 3), 255, dtype=np.uint8)
        arr[30:70, 20 + 10 * i : 110] = (90 + 30 * i, 60, 40)
        Image.fromarray(arr).save(folder / f"new{i}.jpg")
    config = root / "more.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "data": {"source": "folder", "root": "images", "label_column": "Category"},
                "heads": [{"name": "category", "column": "Category"}],
            }
        )
    )
    return str(config)


def test_index_search_evaluate_add(embedding_run, utzap_root, tmp_path, capsys):
    head_dir, backbone_dir = tmp_path / "by-head", tmp_path / "by-backbone"
    assert main(["index", "build", str(embedding_run), "--out", str(head_dir), "--quiet"]) == 0
    assert "embedding, dim 16" in capsys.readouterr().out
    args = ["index", "build", str(embedding_run), "--data", str(utzap_root), "--quiet"]
    assert main([*args, "--out", str(backbone_dir), "--embedding", "backbone"]) == 0
    assert main([*args, "--out", str(backbone_dir)]) == 2
    assert "--overwrite" in capsys.readouterr().err

    index = load_index(head_dir)
    assert index.manifest["embedding"] == "similar" and index.manifest["dim"] == 16
    assert load_index(backbone_dir).manifest["dim"] == 512  # resnet18's pooled features
    assert len(index) == 35 and {"Category", "Gender", "Brand"} <= set(index.label_columns)

    boots = index.metadata.loc[index.metadata["Category"] == "Boots", "path"].tolist()
    query = boots[0]
    out_csv = tmp_path / "hits.csv"
    grid = tmp_path / "hits.png"
    argv = ["search", str(head_dir), query, "-k", "50", "--where", "Gender=Women"]
    assert main([*argv, "--exclude-self", "--out", str(out_csv), "--grid", str(grid)]) == 0
    hits = pd.read_csv(out_csv, keep_default_na=False)
    women = int((index.metadata["Gender"] == "Women").sum())
    query_is_women = index.metadata.loc[index.metadata["path"] == query, "Gender"].item() == "Women"
    assert len(hits) == women - int(query_is_women)  # k > matches: all of them, self left out
    assert set(hits["Gender"]) == {"Women"} and query not in set(hits["path"])
    assert hits["rank"].tolist() == list(range(1, len(hits) + 1))
    assert hits["score"].is_monotonic_decreasing and (hits["query"] == query).all()
    assert grid.stat().st_size > 0 and grid.read_bytes()[:4] == b"\x89PNG"
    assert "grid written" in capsys.readouterr().out

    assert main(["search", str(head_dir), query, "-k", "3"]) == 0
    printed = pd.read_csv(io.StringIO(capsys.readouterr().out))
    assert printed["path"].iloc[0] == query and printed["score"].iloc[0] == pytest.approx(1, 1e-4)

    assert main(["index", "evaluate", str(head_dir), str(backbone_dir), "--label", "category"]) == 0
    table = capsys.readouterr().out
    assert "mean_average_precision_at_r" in table and "top10_agreement" in table
    result = json.loads((head_dir / "evaluation.json").read_text())
    assert set(result["labels"]["Category"]) >= {"precision_at_1", "r_precision", "top10_agreement"}

    more = _new_catalogue(tmp_path / "more")
    assert main(["index", "add", str(head_dir), "--data", more, "--quiet"]) == 0
    assert "4 item(s) added" in capsys.readouterr().out
    assert len(load_index(head_dir)) == 39
    assert main(["index", "add", str(head_dir), "--data", more, "--quiet"]) == 0
    assert "0 item(s) added" in capsys.readouterr().out
    assert main(["search", str(head_dir), query, "--where", "Category=Slippers"]) == 0
    found = pd.read_csv(io.StringIO(capsys.readouterr().out))
    assert len(found) == 2 and set(found["Category"]) == {"Slippers"}
    assert {p.rsplit("/", 1)[-1] for p in found["path"]} == {"new0.jpg", "new1.jpg"}

    # Held-out queries: only the run's validation items ask; the added items never do.
    split = pd.read_csv(embedding_run / "split.csv", keep_default_na=False)
    held_out = set(split.loc[split["split"] == "valid", "key"])
    scores = tmp_path / "valid.json"
    argv = ["index", "evaluate", str(head_dir), "--queries", "valid", "--out", str(scores)]
    assert main(argv) == 0
    result = json.loads(scores.read_text())
    assert result["query_set"] == "valid" and result["items"] == 39
    assert result["queries"] == len(held_out) == result["labels"]["Category"]["queries"]
    (tmp_path / "elsewhere").mkdir()
    assert main([*argv, "--run", str(tmp_path / "elsewhere")]) == 2
    assert "split.csv not found" in capsys.readouterr().err


def test_add_head_replace_keeps_an_embedding_head(embedding_run, tmp_path, capsys):
    """Retraining an embedding head on cached features keeps it an embedding head."""
    out = tmp_path / "retrained"
    argv = ["add-head", str(embedding_run), "--name", "similar", "--replace", "--out", str(out)]
    assert main(argv) == 0
    assert "similar: final training loss" in capsys.readouterr().out
    from zapmulti.artifacts import load_run

    before, after = load_run(embedding_run), load_run(out)
    assert after.head_names == before.head_names == ["category", "similar"]
    assert after.config.heads[1].model_dump() == before.config.heads[1].model_dump()
    assert after.model.specs[1].type == "embedding" and after.model.specs[1].options["dim"] == 16
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["similar"]["trained_on"] == "cached features"
    assert main(["index", "build", str(out), "--out", str(tmp_path / "idx"), "--quiet"]) == 0
    assert "similar embedding, dim 16" in capsys.readouterr().out


def test_cheap_mistakes_fail_before_any_embedding(embedding_run, utzap_root, tmp_path, monkeypatch):
    """A bad factory fails before the catalogue is embedded; `index add` embeds only new items."""
    import zapmulti.retrieval.build as build
    from zapmulti.errors import ConfigError
    from zapmulti.retrieval import add_to_index, build_index

    embedded: list[int] = []
    real = build.embed_array

    def counting(model, images, rows, *args, **kwargs):
        embedded.append(len(rows))
        return real(model, images, rows, *args, **kwargs)

    monkeypatch.setattr(build, "embed_array", counting)
    with pytest.raises(ConfigError, match=r"'Fat' is not a faiss factory string \(could not parse"):
        build_index(embedding_run, tmp_path / "bad", factory="Fat", show_progress=False)
    assert embedded == [] and not (tmp_path / "bad").exists()

    build_index(embedding_run, tmp_path / "idx", show_progress=False)
    assert embedded == [35]
    more = _new_catalogue(tmp_path / "more")
    _, added = add_to_index(tmp_path / "idx", more, show_progress=False)
    _, again = add_to_index(tmp_path / "idx", more, show_progress=False)
    assert (added, again) == (4, 0) and embedded == [35, 4]  # the re-add embeds nothing


def test_search_and_evaluate_argument_errors(embedding_run, tmp_path, capsys):
    idx = tmp_path / "idx"
    assert main(["index", "build", str(embedding_run), "--out", str(idx), "--quiet"]) == 0
    query = load_index(idx).metadata["path"].iloc[0]
    with pytest.raises(SystemExit) as stop:
        main(["search", str(idx), query, "-k", "0"])
    assert stop.value.code == 2 and "must be at least 1, got 0" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["index", "evaluate", str(idx), "--max-queries", "-1"])
    assert "--max-queries: must be at least 0, got -1" in capsys.readouterr().err
    assert main(["index", "evaluate", str(idx), "-k", "35"]) == 2  # 35 items: 34 neighbours
    assert "use -k 34 or less" in capsys.readouterr().err
    assert main(["index", "evaluate", str(idx), str(tmp_path / "nowhere")]) == 2
    assert "index folder not found" in capsys.readouterr().err
    assert not (idx / "evaluation.json").exists()  # no folder is scored before all are checked
    assert main(["search", str(idx), query, "--grid", str(tmp_path / "g.gif")]) == 2
    assert "unknown picture format '.gif'" in capsys.readouterr().err
    assert main(["search", str(idx / "manifest.json"), query]) == 2
    assert "is a file, not an index folder" in capsys.readouterr().err
    assert main(["index", "evaluate", str(idx), "--queries", "valid"]) == 0
    assert (idx / "evaluation-valid.json").is_file() and not (idx / "evaluation.json").exists()
    assert main(["index", "evaluate", str(idx)]) == 0
    assert json.loads((idx / "evaluation-valid.json").read_text())["query_set"] == "valid"
    assert json.loads((idx / "evaluation.json").read_text())["query_set"] == "all"
    (tmp_path / "moved").mkdir()
    assert (
        main(
            ["index", "evaluate", str(idx), "--queries", "valid", "--run", str(tmp_path / "moved")]
        )
        == 2
    )
    assert "--run RUN_DIR, or use --queries all" in capsys.readouterr().err


def test_overwrite_replaces_only_an_index(embedding_run, tmp_path, capsys):
    """--overwrite never deletes a folder that zapmulti did not write as an index."""
    papers = tmp_path / "papers"
    papers.mkdir()
    (papers / "thesis.txt").write_text("years of work")
    build = ["index", "build", str(embedding_run), "--quiet", "--overwrite", "--out"]
    assert main([*build, str(papers)]) == 2
    assert "is a non-empty folder that is not an index folder" in capsys.readouterr().err
    assert (papers / "thesis.txt").read_text() == "years of work"
    assert main([*build, str(embedding_run)]) == 2  # a run is not an index either
    assert (embedding_run / "model.safetensors").is_file()
    capsys.readouterr()
    idx = tmp_path / "idx"
    assert main([*build, str(idx)]) == 0 and main([*build, str(idx)]) == 0  # an index: replaced


def test_a_changed_model_cannot_search_an_old_index(embedding_run, tmp_path, capsys):
    """The manifest's fingerprint of the embedding weights catches a retrained or replaced head;
    a change to another head leaves the index usable."""
    import shutil

    from safetensors.torch import load_file, save_file

    idx = tmp_path / "idx"
    assert main(["index", "build", str(embedding_run), "--out", str(idx), "--quiet"]) == 0
    query = load_index(idx).metadata["path"].iloc[0]
    capsys.readouterr()

    def altered(prefix: str) -> str:
        copy = tmp_path / f"run-{prefix.strip('.').replace('.', '-')}"
        shutil.copytree(embedding_run, copy)
        weights = load_file(copy / "model.safetensors")
        name = next(k for k in weights if k.startswith(prefix) and k.endswith("weight"))
        weights[name] = weights[name] + 0.05
        save_file(weights, copy / "model.safetensors")
        return str(copy)

    assert main(["search", str(idx), query, "-k", "3", "--run", altered("heads.category.")]) == 0
    assert float(pd.read_csv(io.StringIO(capsys.readouterr().out))["score"][0]) == pytest.approx(1)
    assert main(["search", str(idx), query, "--run", altered("heads.similar.")]) == 2
    assert "embeds differently from the model that built" in capsys.readouterr().err
    assert main(["index", "add", str(idx), "--data", str(tmp_path), "--run", altered("body.")]) == 2
    assert "rebuild the index" in capsys.readouterr().err


def test_add_from_a_data_only_yaml_keys_items_by_absolute_path(embedding_run, tmp_path, capsys):
    """`index add --data` takes a file with only a data section; items from another catalogue
    are keyed by their absolute path, so they can never pass for the run's split items."""
    idx = tmp_path / "idx"
    assert main(["index", "build", str(embedding_run), "--out", str(idx), "--quiet"]) == 0
    more = Path(_new_catalogue(tmp_path / "more"))
    raw = yaml.safe_load(more.read_text())
    more.write_text(yaml.safe_dump({"data": raw["data"]}))
    assert main(["index", "add", str(idx), "--data", str(more), "--quiet"]) == 0
    assert "4 item(s) added" in capsys.readouterr().out
    added = load_index(idx).metadata.iloc[35:]
    assert len(added) == 4
    assert all(Path(k).is_absolute() and Path(k).is_file() for k in added["key"])
    assert list(added["key"]) == [str(Path(p).resolve()) for p in added["path"]]
    assert load_index(idx).metadata["key"].is_unique
