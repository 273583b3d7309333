"""The policy explorer: its numbers are the evaluators' numbers for the same setting, the widget driven from
Python follows its controls, and a reply cache replays the replies a live run gives."""

from __future__ import annotations

import html
import json
import shutil
import statistics
from dataclasses import asdict

import numpy as np
import pytest

from mmduet_core.evaluation.dvc import evaluate_dvc
from mmduet_core.evaluation.grounding import evaluate_grounding, load_grounding_gold
from mmduet_core.evaluation.highlight import evaluate_highlight
from mmduet_core.evaluation.records import PredictionError
from mmduet_core.interactive.explorer import (
    GROUNDING_KEYS,
    HIGHLIGHT_KEYS,
    REPLY_CACHE_SETTINGS,
    PolicyExplorer,
    exactness,
    explore_dvc,
    explore_grounding,
    explore_highlight,
    load_grounding,
    load_highlight,
    load_reply_cache,
    replies_at,
    rule_settings,
)
from mmduet_core.run.outputs import settings_path
from mmduet_core.stream import MODES, policy_trace

from .conftest import FIXTURES

GOLD = FIXTURES / "gold"
needs_java = pytest.mark.skipif(shutil.which("java") is None, reason="dense captioning needs Java (METEOR)")


def _write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def _frames(duration: float, fps: float, centre_of: list | None, rng) -> list[dict]:
    """Per-frame scores that rise inside the given spans, with noise (rounded to 3 decimals as records are)."""
    out = []
    for k in range(int(duration * fps)):
        t = k / fps
        inside = any(s <= t <= e for s, e in centre_of or [])
        rel = min(max((0.7 if inside else 0.2) + rng.normal(0, 0.15), 0.0), 1.0)
        out.append({"time": round(t, 3), "informative_score": round(float(rng.uniform()), 3),
                    "relevance_score": round(float(rel), 3)})
    return out


@pytest.fixture(scope="module")
def grounding_files(tmp_path_factory):
    """Charades-STA gold (a public subset) and made-up predictions for all its queries but one."""
    folder = tmp_path_factory.mktemp("grounding")
    gold_path = GOLD / "charades_test_subset.json"
    gold = load_grounding_gold(gold_path)
    rng = np.random.default_rng(0)
    durations = {video: row["duration"] for video, row in json.loads(gold_path.read_text()).items()}
    records = [{"question_id": qid, "model_response_list": [], "video_duration": durations[qid.rsplit("_", 1)[0]],
                "debug_data": _frames(durations[qid.rsplit("_", 1)[0]], 2.0, spans, rng)}
               for qid, spans in list(gold.items())[1:]]  # the first query has no prediction: it counts IoU 0
    return _write_jsonl(folder / "pred.jsonl", records), gold_path


@pytest.fixture(scope="module")
def highlight_files(tmp_path_factory):
    """QVHighlights gold (a public subset) and made-up per-frame predictions at 1 fps for all but one query."""
    folder = tmp_path_factory.mktemp("highlight")
    gold_path = GOLD / "qvh_val_subset.jsonl"
    rows = [json.loads(line) for line in gold_path.read_text().splitlines() if line.strip()]
    rng = np.random.default_rng(1)
    records = [{"question_id": r["qid"], "model_response_list": [], "video_duration": r["duration"],
                "debug_data": _frames(r["duration"], 1.0, r["relevant_windows"], rng)} for r in rows[1:]]
    return _write_jsonl(folder / "pred.jsonl", records), gold_path


# ---- grounding ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("window", "threshold"), [(6, 0.5), (0, 0.3), (3, 0.62), (14, 0.7), (2, 0.01)])
def test_explore_grounding_is_the_evaluator(grounding_files, window, threshold):
    pred, gold = grounding_files
    data = load_grounding(pred, gold)
    mine, theirs = explore_grounding(data, window, threshold), evaluate_grounding(pred, gold, window, threshold)
    assert mine["unrounded"] == theirs["unrounded"]
    assert {k: mine[k] for k in GROUNDING_KEYS} == {k: theirs[k] for k in GROUNDING_KEYS}
    assert mine["counts"] == theirs["counts"] and mine["counts"]["missing_predictions"] == 1


def test_grounding_explorer_follows_its_sliders(grounding_files):
    """Moving window and threshold gives exactly `evaluate_grounding` at that setting, redraws the sweep marker
    and the timelines, and each change is timed."""
    pred, gold = grounding_files
    explorer = PolicyExplorer(load_grounding(pred, gold))
    assert (explorer.window.value, explorer.threshold.value) == (6, 0.5)
    start = explorer.result["R@0.5"]
    assert start == evaluate_grounding(pred, gold, 6, 0.5)["R@0.5"]
    sweep, timelines = explorer.sweep_view.value, explorer.timeline_view.value
    values = set()
    for window, threshold in [(6, 0.38), (6, 0.62), (2, 0.62), (10, 0.44)]:
        explorer.window.value, explorer.threshold.value = window, threshold
        expected = evaluate_grounding(pred, gold, window, threshold)
        assert explorer.result["unrounded"] == expected["unrounded"], (window, threshold)
        assert f"data-metric='R@0.5' style='font-size:16px;font-weight:bold'>{expected['R@0.5']:.2f}<" \
            in explorer.metrics_view.value
        values.add(explorer.result["mIoU"])
    assert len(values) > 1  # the controls move the numbers
    assert explorer.sweep_view.value != sweep and explorer.timeline_view.value != timelines
    assert explorer.timeline_view.value.count("IoU") == 2  # the first two queries by default
    explorer.queries.value = tuple(explorer.queries.options[1:4])
    assert explorer.timeline_view.value.count("IoU") == 3 and explorer.last_error is None
    assert "1 without a prediction (scored 0)" in explorer.note.value
    static = explorer.to_static()
    assert "<svg" in static and f"{explorer.result['mIoU']:.2f}" in static and str(pred.parent) not in static
    print(f"grounding explorer: {statistics.median(explorer.update_times):.3f} s per change (median)")
    assert statistics.median(explorer.update_times) < 1.0  # goal 0.2 s; a loose bound on a shared machine


def test_grounding_timeline_shows_a_query_without_prediction(grounding_files):
    pred, gold = grounding_files
    data = load_grounding(pred, gold)
    explorer = PolicyExplorer(data, queries=[data.qids[-1]])
    assert "no prediction (IoU 0)" in explorer.timeline_view.value


# ---- highlights ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("window", [0, 2, 9])
def test_explore_highlight_is_the_evaluator(highlight_files, window):
    pred, gold = highlight_files
    assert explore_highlight(load_highlight(pred, gold), window) == evaluate_highlight(pred, gold, window)


@pytest.mark.parametrize("precompute", [pytest.param(True, marks=pytest.mark.slow), False])
def test_highlight_explorer_follows_its_window(highlight_files, precompute):
    pred, gold = highlight_files
    explorer = PolicyExplorer(load_highlight(pred, gold), precompute=precompute)
    assert explorer.threshold not in explorer.children[-1].children[0].children  # shown only where it applies
    for window in (5, 0, 5):
        explorer.window.value = window
        assert explorer.result == evaluate_highlight(pred, gold, window)
        assert f"{explorer.result['HL-min-VeryGood-mAP']:.2f}" in explorer.metrics_view.value
    assert set(HIGHLIGHT_KEYS) <= set(explorer.result)
    print(f"highlight explorer (precompute={precompute}): {statistics.median(explorer.update_times[1:]):.3f} s "
          "per change (median)")


# ---- dense captioning from a reply cache --------------------------------------------------------------------

CACHE_TEXTS = ["the cook chops onions", "the cook chops onions", "oil goes into the pan", "oil goes into the pan",
               "the onions fry", "salt is added", "the onions fry", "the dish is served"]
CACHE_SCORES = [0.9, 0.3, 0.8, 0.1, 0.95, 0.6, 0.2, 0.7]  # informative score per frame, both videos


def _reply_cache(folder, silent_frame: int | None = None):
    """Two videos of 8 frames at 1 fps, a reply at every frame (as a run with reply threshold -1 writes)."""
    records = []
    for video in ("v1", "v2"):
        turns = [{"time": 0.0, "content": "Narrate the cooking.", "role": "user"}]
        debug = []
        for k, (text, score) in enumerate(zip(CACHE_TEXTS, CACHE_SCORES, strict=True)):
            debug.append({"time": float(k), "informative_score": score, "relevance_score": 0.5})
            if k != silent_frame:
                turns.append({"time": float(k), "content": f"{text} ({video})" if k > 5 else text,
                              "role": "assistant"})
        records.append({"question_id": video, "model_response_list": turns, "video_duration": 8.0,
                        "debug_data": debug})
    return _write_jsonl(folder / "cache.jsonl", records)


def _dvc_gold(folder):
    rows = [{"question_id": v, "video": f"{v}.mp4", "duration": 8.0,
             "conversation": [{"role": "user", "content": "Narrate the cooking.", "time": 0.0}],
             "answer": [{"content": "chop the onions", "time": [0.0, 2.0]},
                        {"content": "heat oil in the pan", "time": [2.0, 4.5]},
                        {"content": "fry the onions and salt them", "time": [4.5, 8.0]}]} for v in ("v1", "v2")]
    path = folder / "gold.json"
    path.write_text(json.dumps(rows))
    return path


def test_reply_cache_picks_the_replies_of_each_rule(tmp_path):
    """The rule over the cached scores keeps the replies at the frames where it fires, worked out by hand."""
    cache = load_reply_cache(_reply_cache(tmp_path), _dvc_gold(tmp_path), warm=False)
    def kept(settings):
        record = replies_at(cache, settings)[0]
        return [t["time"] for t in record["model_response_list"] if t["role"] == "assistant"]

    assert kept(rule_settings(cache, "prob", 0.75)) == [0.0, 2.0, 4.0]
    # running sums 0.9, 1.2 > 1 fire (reset); 0.8, 0.9, 1.85 fire; 0.6, 0.8, 1.5 fire
    assert kept(rule_settings(cache, "sum", 1.0)) == [1.0, 4.0, 7.0]
    assert kept(rule_settings(cache, "prob", 1.0)) == []
    record = replies_at(cache, rule_settings(cache, "sum", 1.0))[0]
    assert record["model_response_list"][0]["role"] == "user" and record["debug_data"] == cache.records["v1"]["debug_data"]


def test_a_file_with_a_silent_frame_is_not_a_reply_cache(tmp_path):
    with pytest.raises(PredictionError, match="no reply at 1 of 8 frames .* reply_threshold=-1"):
        load_reply_cache(_reply_cache(tmp_path, silent_frame=3), _dvc_gold(tmp_path), warm=False)


def test_exactness_reads_how_the_cache_was_made(tmp_path):
    pred, gold = _reply_cache(tmp_path), _dvc_gold(tmp_path)
    unknown = load_reply_cache(pred, gold, warm=False)
    assert exactness(unknown, rule_settings(unknown, "sum", 2.0)) == ["no settings file beside the cache says how "
                                                                      "it was made"]
    settings_path(pred).write_text(json.dumps({"settings": {**asdict(REPLY_CACHE_SETTINGS), "fps": 1.0}}))
    known = load_reply_cache(pred, gold, warm=False)
    assert known.known_settings and known.settings.fps == 1.0
    assert exactness(known, rule_settings(known, "sum", 2.0)) == []
    kept = rule_settings(known, "sum", 2.0).replace(remove_assistant_turns=False)
    assert exactness(known, kept) == ["this rule keeps previous replies in the context"]
    settings_path(pred).write_text(json.dumps({"settings": {"mode": "prob", "reply_threshold": -1.0,
                                                            "remove_assistant_turns": False}}))
    assert "the cache keeps previous replies in the context" in exactness(
        load_reply_cache(pred, gold, warm=False), rule_settings(known, "sum", 2.0))


@needs_java
def test_explore_dvc_is_the_evaluator_on_the_replies_a_run_writes(tmp_path):
    """The numbers equal `evaluate_dvc` on a predictions file holding exactly the replies the rule picks (written
    here by hand, not by the explorer's own selection)."""
    pred, gold = _reply_cache(tmp_path), _dvc_gold(tmp_path)
    cache = load_reply_cache(pred, gold)
    records = [json.loads(line) for line in pred.read_text().splitlines()]
    for record in records:  # sum > 1.0 fires at frames 1, 4 and 7
        record["model_response_list"] = [t for t in record["model_response_list"]
                                         if t["role"] == "user" or t["time"] in (1.0, 4.0, 7.0)]
    by_hand = _write_jsonl(tmp_path / "run.jsonl", records)
    assert explore_dvc(cache, rule_settings(cache, "sum", 1.0)) == evaluate_dvc(by_hand, gold)


@needs_java
def test_dvc_explorer_modes_and_thresholds(tmp_path):
    """Each reply mode brings its own threshold range and default; every setting's numbers are explore_dvc's."""
    pred, gold = _reply_cache(tmp_path), _dvc_gold(tmp_path)
    cache = load_reply_cache(pred, gold)
    explorer = PolicyExplorer(cache, mode="sum", threshold=1.0)
    assert explorer.window not in explorer.children[-1].children[0].children  # no window in dense captioning
    assert (explorer.threshold.max, explorer.threshold.value) == (MODES["sum"].threshold_range[1], 1.0)
    assert explorer.result["unrounded"] == explore_dvc(cache, rule_settings(cache, "sum", 1.0))["unrounded"]
    assert "Not exact: no settings file" in explorer.note.value
    assert html.escape(MODES["sum"].rule) in explorer.rule_line.value
    explorer.mode.value = "prob"
    assert (explorer.threshold.min, explorer.threshold.max, explorer.threshold.value) == (0.0, 1.0, 0.5)
    assert html.escape(MODES["prob"].rule) in explorer.rule_line.value
    explorer.threshold.value = 0.75
    assert explorer.result["unrounded"] == explore_dvc(cache, rule_settings(cache, "prob", 0.75))["unrounded"]
    assert explorer.result["duplicates"]["turns"] == 3.0  # frames 0, 2 and 4 of each video
    explorer.heads.value = "informative + relevance"
    assert explorer.threshold.max == 2.0
    explorer.mode.value = "z"
    assert (explorer.threshold.max, explorer.threshold.value) == (4.0, 1.0)
    explorer.mode.value = "sum"
    assert explorer.threshold.value == 1.0  # each mode keeps the threshold last used in it
    explorer.heads.value = "informative"
    evaluated = len(explorer._results)
    explorer.mode.value = "prob"
    explorer.threshold.value = 0.75
    assert len(explorer._results) == evaluated and explorer.last_error is None  # revisits are memoised
    assert explorer.result["unrounded"] == explore_dvc(cache, rule_settings(cache, "prob", 0.75))["unrounded"]
    assert "<svg" in explorer.to_static() and "replies per video" in explorer.sweep_view.value


# ---- the toy model: a reply cache against live runs ---------------------------------------------------------

@pytest.mark.slow
@needs_java
def test_toy_model_reply_cache_replays_live_runs(tmp_path):
    """The shipped toy model on the toy world. A reply cache (a reply at every frame, replies removed from the
    context) replayed under three rules gives the replies and the dense-captioning numbers of live runs with
    those rules; grounding and highlight explorers on the model's predictions equal their evaluators. Prints the
    time per change of each explorer."""
    from mmduet_core.model.checkpoint import load_model
    from mmduet_core.run.benchmark import run_benchmark
    from mmduet_core.run.toyeval import toy_presets
    from mmduet_core.toyworld.store import prepare_toy_benchmark

    model, tokenizer = load_model("toy", device="cpu")
    world = tmp_path / "world"
    prepare_toy_benchmark(world, "annotations/test/dvc.json", progress=False)
    ann, videos = world / "annotations" / "test", world / "videos" / "test"
    presets = toy_presets()

    def run(kind: str, settings, name: str, limit: int):
        out = tmp_path / f"{name}.jsonl"
        run_benchmark(model, tokenizer, ann / f"{kind}.json", videos, out, settings, resume=False, limit=limit,
                      progress=False, benchmark=kind)
        return out

    dvc_preset = presets["youcook2"]
    cache = load_reply_cache(run("dvc", dvc_preset.replace(mode="prob", reply_threshold=-1.0), "cache", 4),
                             ann / "dvc.json", coverage="predictions")
    assert cache.known_settings and cache.settings.remove_assistant_turns
    timings = {}
    for mode, threshold in (("sum", 2.0), ("prob", 0.5), ("z", 1.0)):
        live = run("dvc", dvc_preset.replace(mode=mode, reply_threshold=threshold), f"live_{mode}", 4)
        rule = rule_settings(cache, mode, threshold)
        assert exactness(cache, rule) == []
        live_records = [json.loads(line) for line in live.read_text().splitlines()]
        if mode != "z":
            assert [r["model_response_list"] for r in replies_at(cache, rule)] == \
                [r["model_response_list"] for r in live_records], mode
            assert explore_dvc(cache, rule) == evaluate_dvc(live, ann / "dvc.json", coverage="predictions"), mode
            continue
        # z mode compares a score with mean + z x std of the last scores: where they are all about 0 (std 0), the
        # live run compares unrounded probabilities like 1e-5 and 2e-5, the cache their rounded 0.000 and 0.000.
        # Every frame decided differently must be such a tie at 3 decimals, and only those.
        for record, live_record in zip(replies_at(cache, rule), live_records, strict=True):
            def fired(r):
                return {t["time"] for t in r["model_response_list"] if t["role"] == "assistant"}

            steps = cache.steps[record["question_id"]]
            trace = {s.time: p for s, p in zip(steps, policy_trace(rule, [(s.informative, s.relevance)
                                                                          for s in steps]), strict=True)}
            for t in fired(record) ^ fired(live_record):
                assert abs(trace[t].score - trace[t].threshold) < 1e-3, (record["question_id"], t)
    explorer = PolicyExplorer(cache)
    for threshold in (1.0, 2.5, 3.5, 1.5):
        explorer.threshold.value = threshold
    timings["dvc (4 videos)"] = explorer.update_times[1:]

    grounding = run("grounding", presets["charades"], "grounding", 24)
    explorer = PolicyExplorer(load_grounding(grounding, ann / "grounding.json", coverage="predictions"))
    for window, threshold in ((6, 0.4), (2, 0.56), (0, 0.3), (9, 0.7)):
        explorer.window.value, explorer.threshold.value = window, threshold
        expected = evaluate_grounding(grounding, ann / "grounding.json", window, threshold, coverage="predictions")
        assert explorer.result["unrounded"] == expected["unrounded"]
    timings["grounding (24 queries)"] = explorer.update_times[1:]

    highlight = run("highlight", presets["qvh"], "highlight", 24)
    gold = ann / "highlight_gold.jsonl"
    explorer = PolicyExplorer(load_highlight(highlight, gold, coverage="predictions"))
    for window in (0, 4, 8, 2):
        explorer.window.value = window
        assert explorer.result == evaluate_highlight(highlight, gold, window, coverage="predictions")
    timings["highlight (24 queries, windows precomputed)"] = explorer.update_times[1:]
    explorer = PolicyExplorer(load_highlight(highlight, gold, coverage="predictions"), precompute=False)
    for window in (0, 4, 8):
        explorer.window.value = window
    timings["highlight (24 queries, each window computed when chosen)"] = explorer.update_times[1:]
    for name, values in timings.items():
        print(f"explorer time per change, {name}: median {statistics.median(values):.3f} s, max {max(values):.3f} s")
