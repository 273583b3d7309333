"""Notebooks executed by papermill with small parameters; the metrics they record read back and checked.

Every notebook writes into tmp_path only (OUTPUT_DIR, the toy world, the run folders), never into the checkout.
The long ones are marked slow; the default run executes 00 (the environment check) and 07 (the paper tables and
figures, fed with run folders built here in a second)."""

from __future__ import annotations

import json

import pandas as pd
import papermill
import pytest

from .conftest import ROOT


def _run(name: str, tmp_path, **parameters) -> dict:
    out = tmp_path / "out"
    papermill.execute_notebook(str(ROOT / "notebooks" / name), str(tmp_path / name),
                               parameters={"OUTPUT_DIR": str(out), **parameters}, kernel_name="mmduet",
                               cwd=str(ROOT / "notebooks"), progress_bar=False)
    return json.loads((out / "metrics.json").read_text())


@pytest.fixture(scope="module")
def toy_world(tmp_path_factory):
    """The toy world's test split (seed 0, 40 videos), made once for this module's benchmark notebooks."""
    from mmduet_core.toyworld import prepare_toy_benchmark

    world = tmp_path_factory.mktemp("toyworld")
    prepare_toy_benchmark(world, "annotations/test/grounding.json", seed=0, progress=False)
    return world


def test_setup_notebook_records_its_checks(tmp_path):
    record = _run("00_setup.ipynb", tmp_path)
    assert record["metrics"]["torch"] is True and "git_commit" in record and record["versions"]["torch"]
    assert record["parameters"] == {"ADAPTER": "../outputs/mmduet", "DATA_ROOT": "../datasets",
                                    "OUTPUT_DIR": str(tmp_path / "out"), "DOWNLOAD": False}


@pytest.mark.slow
def test_charades_notebook_on_the_toy_world(tmp_path, toy_world):
    """The shipped toy model on the first 8 test queries of the toy world (seed 0): the recorded numbers are the
    evaluator's, pinned as a regression check of model + engine + evaluator; with LIMIT only those 8 are scored."""
    record = _run("04_charades.ipynb", tmp_path, DATA_ROOT=str(toy_world), LIMIT=8)
    m = record["metrics"]
    assert m["evaluated"] == 8 and (m["window"], m["threshold"]) == (6, 0.5)
    assert (m["mIoU"], m["R@0.3"], m["R@0.5"]) == pytest.approx(EXPECTED_CHARADES, abs=0.5)
    # every parameter as papermill ran the notebook, the injected ones and the defaults alike
    assert record["parameters"] | {"OUTPUT_DIR": None} == {
        "MODEL": "toy", "ADAPTER": "", "DATA_ROOT": str(toy_world), "TEST_FILE": "annotations/test/grounding.json",
        "VIDEO_ROOT": "videos/test", "OUTPUT_DIR": None, "LIMIT": 8, "FPS": 2.0, "WINDOW": 6, "THRESHOLD": 0.5,
        "DEVICE": "auto", "SEED": 0}
    assert record["run"]["label"] == "toy world (synthetic), toy model, first 8 examples, w=6, threshold 0.5"
    assert record["run"]["coverage"] == "predictions" and record["run"]["comparable"] is False
    rows = pd.read_csv(tmp_path / "out" / "evaluation.csv", index_col=0)
    assert rows.loc["frame-set IoU, w=6, threshold 0.5 (reported)", "R@0.5"] == pytest.approx(m["R@0.5"], abs=0.01)
    assert any(name.startswith("oracle at w=6") for name in rows.index)
    assert {"sweep_R0.5.png", "window_curve.png", "example_grounding.png", "predictions.jsonl"} <= {
        p.name for p in (tmp_path / "out").iterdir()}


EXPECTED_CHARADES = (73.96, 100.0, 62.5)  # mIoU, R@0.3, R@0.5 measured with the shipped toy model


@pytest.mark.slow
@pytest.mark.parametrize(("name", "keys"), [
    ("02_youcook2.ipynb", ("CIDEr", "METEOR", "SODA_c", "Precision", "Recall", "F1")),
    ("03_magqa.ipynb", ("in_span_score", "turns", "dedup_turns")),
    ("05_qvhighlights.ipynb", ("HL-min-VeryGood-mAP", "HL-min-VeryGood-Hit1")),
])
def test_benchmark_notebooks_on_the_toy_world(tmp_path, toy_world, name, keys):
    """Each benchmark notebook runs the shipped toy model on the first 4 toy test examples; the recorded metrics
    equal the pinned values (a regression check of model, engine, evaluator and notebook together)."""
    record = _run(name, tmp_path, DATA_ROOT=str(toy_world), LIMIT=4)
    metrics = record["metrics"]
    assert metrics["evaluated"] == 4 and record["parameters"]["LIMIT"] == 4 and "VIDEO_ROOT" in record["parameters"]
    assert tuple(metrics[k] for k in keys) == pytest.approx(EXPECTED[name], abs=0.5)
    assert record["run"]["toy_world"] is True and record["run"]["label"].startswith("toy world (synthetic)")


EXPECTED = {  # measured with the shipped toy model on the first 4 test examples of the toy world (seed 0)
    "02_youcook2.ipynb": (93.9, 11.9, 12.8, 19.7, 25.5, 22.2),  # SODA_c 13.4 before the evaluator paired as the paper
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
    make_toyworld(world, seed=1, sizes={"train": 6, "test": 1, "flash": 6}, progress=False)
    record = _run("06_training.ipynb", tmp_path, WORLD=str(world), MAX_STEPS=4)
    m = record["metrics"]
    assert m["steps"] == 4 and m["heads_loaded"] is True and m["examples"] > 20
    assert m["lm_loss_first"] > 0 and m["head_loss_first"] > 0
    assert record["parameters"]["MAX_STEPS"] == 4 and record["parameters"]["LEARNING_RATE"] == 0.0
    assert (tmp_path / "out" / "run" / "final" / "model.safetensors").exists()
    assert (tmp_path / "out" / "loss_curves.png").exists() and (tmp_path / "out" / "example_0.png").exists()


@pytest.mark.slow
def test_performance_notebook_ratios(tmp_path):
    """Small sizes: the two paths of every benchmark agree (same replies, same tokens, same frames) and every ratio
    is recorded. Which side is faster is for the report to show, not for a timed assertion on a noisy machine."""
    record = _run("08_performance.ipynb", tmp_path, FRAMES=20, FRAME_COUNTS="4,8", CONTEXT_FRAMES="4", NEW_TOKENS=8,
                  VIDEO_LENGTHS_S="3", EVAL_VIDEOS=1, REPEAT=1)
    m = record["metrics"]
    assert m["stream_same_replies"] is True and m["stream_max_prob_diff"] < 1e-4
    assert m["video_same_frames"] is True and m["generate_identical_tokens"] is True
    assert m["eval_ratio"] > 0 and m["stream_ratio grounding (never replies)"] > 0
    assert {"stream.png", "stream_scaling.png", "video_memory.png", "bench_eval.json"} <= {
        p.name for p in (tmp_path / "out").iterdir()}


# ---- 07: the paper's tables beside run folders given as parameters ------------------------------------------

def _run_folder(folder, world, data_root, kind: str, preset: str, real: bool):
    """A run folder as a benchmark notebook leaves it: the toy world's oracle predictions (perfect relevance)
    scored against the gold under `data_root`; `real` labels it a run of a real checkpoint on the real benchmark."""
    from mmduet_core.evaluation.grounding import evaluate_grounding
    from mmduet_core.evaluation.highlight import evaluate_highlight
    from mmduet_core.reports.notebooks import save_metrics
    from mmduet_core.reports.runs import RunInfo
    from mmduet_core.run.toyeval import oracle_records

    folder.mkdir(parents=True)
    records = oracle_records(world, "test", kind)
    (folder / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    ann = "annotations/test"
    if kind == "grounding":
        metrics = evaluate_grounding(folder / "predictions.jsonl", data_root / ann / "grounding.json", window=6)
        gold = {"TEST_FILE": f"{ann}/grounding.json"}
    else:
        metrics = evaluate_highlight(folder / "predictions.jsonl", data_root / ann / "highlight_gold.jsonl", window=2)
        gold = {"TEST_FILE": f"{ann}/highlight.json", "GOLD_FILE": f"{ann}/highlight_gold.jsonl"}
    metrics["evaluated"] = metrics["counts"]["evaluated"]
    model = "llava-hf/llava-onevision-qwen2-7b-ov-hf" if real else "toy"
    params = {"MODEL": model, "ADAPTER": "../outputs/mmduet" if real else "", "DATA_ROOT": str(data_root), "LIMIT": 0, **gold}
    info = RunInfo(preset, not real, "llava-onevision-qwen2-7b-ov-hf + mmduet" if real else "toy model",
                   metrics["evaluated"])
    save_metrics(folder, metrics, params, run=info.to_dict())
    return metrics


def test_paper_figures_notebook_shows_the_runs_it_is_given(tmp_path):
    """07 fed with run folders as parameters: a toy-world grounding run goes to the toy table only (named by task,
    labelled toy world), a run marked as the real benchmark with the 7B checkpoint joins Table 1 with exactly the
    recorded numbers, and folders without a run are said to be missing."""
    import shutil

    from mmduet_core.reports import paper
    from mmduet_core.toyworld import make_toyworld

    world = tmp_path / "world"
    make_toyworld(world, seed=0, sizes={"test": 2}, progress=False)
    bench = tmp_path / "bench"  # the same files without world.json: not a toy world
    shutil.copytree(world / "annotations", bench / "annotations")
    toy = _run_folder(tmp_path / "runs" / "grounding", world, world, "grounding", "charades", real=False)
    real = _run_folder(tmp_path / "runs" / "highlight", world, bench, "highlight", "qvh", real=True)
    record = _run("07_paper_figures.ipynb", tmp_path, CHARADES_RUN=str(tmp_path / "runs" / "grounding"),
                  QVH_RUN=str(tmp_path / "runs" / "highlight"), YOUCOOK2_RUN=str(tmp_path / "none"),
                  MAGQA_RUN=str(tmp_path / "none"))
    out = tmp_path / "out"
    table1 = pd.read_csv(out / "table1.csv", header=[0, 1], index_col=0)
    assert [name.removeprefix("paper: ") for name in table1.index[:len(paper.TABLE1)]] == list(paper.TABLE1)
    ours = [name for name in table1.index if name.startswith("this run")]
    assert ours == [f"this run: QVHighlights val, llava-onevision-qwen2-7b-ov-hf + mmduet, {real['evaluated']} examples"]
    assert table1.loc[ours[0], ("QVHighlights val", "mAP")] == real["HL-min-VeryGood-mAP"]
    assert table1.loc[ours[0], ("QVHighlights val", "HIT@1")] == real["HL-min-VeryGood-Hit1"]
    assert pd.isna(table1.loc[ours[0], ("Charades-STA test", "R@0.5")])  # the toy run is not in Table 1
    assert table1.loc["paper: LLaVA-OV-TC (same data, TimeChat format)", ("YouCook2 val", "F1")] == 21.8
    toy_rows = pd.read_csv(out / "toy_runs.csv", header=[0, 1], index_col=0)
    label = f"grounding: toy world (synthetic), toy model, {toy['evaluated']} examples"
    assert list(toy_rows.index) == [label]
    assert toy_rows.loc[label, ("grounding", "R@0.5")] == toy["R@0.5"]
    assert not any("Charades" in str(c) for c in toy_rows.columns.to_flat_index())
    m = record["metrics"]
    assert m["toy world (synthetic) grounding R@0.5"] == toy["R@0.5"]
    assert m["QVHighlights val highlight detection VeryGood mAP"] == real["HL-min-VeryGood-mAP"]
    assert m["runs"]["youcook2"] is None and m["runs"]["qvh"]["comparable"] is True
    assert {"charades_sweep.png", "charades_window.png", "qvh_window.png", "magqa.csv"} <= {p.name for p in out.iterdir()}
