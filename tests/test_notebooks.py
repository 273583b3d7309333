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


EXPECTED_CHARADES = (73.96, 100.0, 62.5)  # mIoU, R@0.3, R@0.5 measured with the shipped toy model


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
    "02_youcook2.ipynb": (93.9, 11.9, 13.4, 19.7, 25.5, 22.2),
    "03_magqa.ipynb": (3.98, 17.75, 9.75),
    "05_qvhighlights.ipynb": (91.67, 100.0),
}


@pytest.mark.slow
def test_demo_notebook_records_a_scripted_session(tmp_path):
    """The demo's scripted session on the shipped sample: every frame fed, the model speaks, the static record
    (figure and chat page) written; the player is built but not displayed (INTERACTIVE False)."""
    from mmduet_core.model.checkpoint import ASSETS
    from mmduet_core.video import read_video

    sample = ASSETS / "sample_toy.mp4"
    record = _run("01_demo.ipynb", tmp_path, VIDEO=str(sample), INTERACTIVE=False)
    m = record["metrics"]
    assert m["frames"] == len(read_video(sample, fps=2.0, resolution=64, rule="floor"))
    assert 1 <= m["distinct_replies"] <= m["replies"] and 0 <= m["duplicate_rate"] < 1
    assert 0 < m["first_reply_time"] < m["frames"] / 2
    page = (tmp_path / "out" / "session.html").read_text()
    assert "[time=0.0s]" in page and page.count("<img") >= 2
    assert (tmp_path / "out" / "scores.png").stat().st_size > 10_000


@pytest.mark.slow
def test_training_notebook_trains_saves_and_reloads(tmp_path):
    from mmduet_core.toyworld import make_toyworld

    world = tmp_path / "world"
    make_toyworld(world, seed=1, sizes={"train": 6, "test": 1, "flash": 6})
    record = _run("06_training.ipynb", tmp_path, WORLD=str(world), MAX_STEPS=4)
    m = record["metrics"]
    assert m["steps"] == 4 and m["heads_loaded"] is True and m["examples"] > 20
    assert m["lm_loss_first"] > 0 and m["head_loss_first"] > 0
    assert (tmp_path / "out" / "run" / "final" / "model.safetensors").exists()
    assert (tmp_path / "out" / "loss_curves.png").exists() and (tmp_path / "out" / "example_0.png").exists()


def test_paper_figures_notebook_puts_ours_beside_the_paper(tmp_path):
    """Read back the committed reports of notebooks 02-05: every Table 1 row carries the paper's number and this
    run's number exactly as the benchmark notebook recorded it."""
    from mmduet_core.reports import paper

    reports = ROOT / "reports"
    record = _run("07_paper_figures.ipynb", tmp_path, REPORTS_DIR=str(reports))
    m = record["metrics"]
    for number in paper.TABLE1:
        folder = paper.BENCHMARK_REPORTS[number.benchmark]
        recorded = json.loads((reports / folder / "metrics.json").read_text())["metrics"][number.metric]
        assert m[f"{number.benchmark} {number.label}"] == recorded
    table = (tmp_path / "out" / "table1.md").read_text()
    assert "| QVHighlights val | mAP | 31.3 |" in table and "toy model on toy world" in table
    assert {"charades_sweep.png", "qvh_window.png", "duplicate_rates.png"} <= {p.name for p in (tmp_path / "out").iterdir()}


@pytest.mark.slow
def test_performance_notebook_ratios(tmp_path):
    """Small sizes: the two paths of every benchmark agree (same replies, same frames) and every ratio is
    recorded. Which side is faster is for the report to show, not for a timed assertion on a noisy machine."""
    record = _run("08_performance.ipynb", tmp_path, FRAMES=40, VIDEO_SECONDS=3.0, REPEAT=1)
    m = record["metrics"]
    assert m["stream_same_replies"] is True and m["stream_max_prob_diff"] < 1e-4
    assert m["video_same_frames"] is True
    assert m["eval_ratio"] > 0 and m["stream_ratio grounding (prob 1.0, never fires)"] > 0
    assert {"stream.png", "video.png", "bench_eval.json"} <= {p.name for p in (tmp_path / "out").iterdir()}
