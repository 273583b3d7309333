"""Notebooks executed by papermill with small parameters on the toy world; recorded metrics read back."""

from __future__ import annotations

import json

import papermill
import pytest

from .conftest import ROOT


def _run(name: str, tmp_path, **parameters) -> dict:
    out = tmp_path / "out"
    papermill.execute_notebook(str(ROOT / "notebooks" / name), str(tmp_path / name),
                               parameters={"OUTPUT_DIR": str(out), **parameters}, kernel_name="mmduet",
                               cwd=str(ROOT / "notebooks"), progress_bar=False)
    return json.loads((out / "metrics.json").read_text())


def test_setup_notebook_records_its_checks(tmp_path):
    record = _run("00_setup.ipynb", tmp_path)
    assert record["metrics"]["torch"] is True and "git_commit" in record and record["versions"]["torch"]


@pytest.mark.slow
def test_charades_notebook_on_the_toy_world(tmp_path):
    """The shipped toy model on the first 8 test queries of the toy world (seed 0): the notebook's recorded
    numbers are the evaluator's, pinned as a regression check of model + engine + evaluator."""
    record = _run("04_charades.ipynb", tmp_path, DATA_ROOT=str(tmp_path / "world"), LIMIT=8)
    m = record["metrics"]
    assert m["evaluated"] == 8 and (m["window"], m["threshold"]) == (6, 0.5)
    assert (m["mIoU"], m["R@0.3"], m["R@0.5"]) == pytest.approx(EXPECTED_CHARADES, abs=0.5)
    assert record["parameters"]["LIMIT"] == 8
    assert (tmp_path / "out" / "sweep_R0.5.png").exists() and (tmp_path / "out" / "predictions.jsonl").exists()


EXPECTED_CHARADES = (20.68, 12.5, 12.5)  # mIoU, R@0.3, R@0.5 measured with the shipped toy model


@pytest.mark.slow
@pytest.mark.parametrize(("name", "keys"), [
    ("02_youcook2.ipynb", ("CIDEr", "METEOR", "SODA_c", "Precision", "Recall", "F1")),
    ("03_magqa.ipynb", ("in_span_score", "turns", "dedup_turns")),
    ("05_qvhighlights.ipynb", ("HL-min-VeryGood-mAP", "HL-min-VeryGood-Hit1")),
])
def test_benchmark_notebooks_on_the_toy_world(tmp_path, name, keys):
    """Each benchmark notebook runs the shipped toy model on the first 4 toy test examples; the recorded metrics
    equal the pinned values (a regression check of model, engine, evaluator and notebook together)."""
    record = _run(name, tmp_path, DATA_ROOT=str(tmp_path / "world"), LIMIT=4)
    metrics = record["metrics"]
    assert metrics["evaluated"] == 4
    assert tuple(metrics[k] for k in keys) == pytest.approx(EXPECTED[name], abs=0.5)


EXPECTED = {  # measured with the shipped toy model on the first 4 test examples of the toy world (seed 0)
    "02_youcook2.ipynb": (89.8, 14.0, 11.4, 16.7, 24.5, 19.7),
    "03_magqa.ipynb": (3.72, 30.5, 13.0),
    "05_qvhighlights.ipynb": (34.75, 25.0),
}
