"""Evaluators on hand-computed cases (quirks included) and end to end on the real gold files."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from mmduet_core.data.benchmarks import write_examples
from mmduet_core.data.convert import convert
from mmduet_core.evaluation import dvc, grounding, highlight, magqa
from mmduet_core.evaluation.records import PredictionError

from .conftest import FIXTURES, shared_path

GOLD = FIXTURES / "gold"


def _record(qid, scores, fps=2.0, old_format=False, turns=()):
    debug = []
    for i, s in enumerate(scores):
        if old_format:
            debug.append({"video_time": round(i / fps, 3), "informative_score": [0.9, 0.1], "relevance_score": [1 - s, s]})
        else:
            debug.append({"time": round(i / fps, 3), "informative_score": 0.1, "relevance_score": s})
    return {"question_id": qid, "model_response_list": list(turns), "video_duration": len(scores) / fps,
            "debug_data": debug}


def _write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


# ---- dense captioning ---------------------------------------------------------------------------------------

def _turns(*pairs):
    return [{"time": t, "content": c, "role": "assistant"} for t, c in pairs]


def test_replies_to_captions_drops_the_first_caption():
    assert dvc.captions_from_replies(_turns((4, "a"), (10, "b"), (16, "c"))) == [
        {"timestamp": [4, 10], "sentence": "b"}, {"timestamp": [10, 16], "sentence": "c"}]
    # identical consecutive replies extend the caption
    assert dvc.captions_from_replies(_turns((2, "a"), (4, "a"), (6, "b"), (8, "b"), (9, "c"))) == [
        {"timestamp": [4, 8], "sentence": "b"}, {"timestamp": [8, 9], "sentence": "c"}]
    # a video with one distinct caption yields nothing
    assert dvc.captions_from_replies(_turns((2, "a"), (5, "a"))) == []
    assert dvc.captions_from_replies(_turns((2, "a"), (5, "a")), first_caption="keep") == [
        {"timestamp": [0.0, 5], "sentence": "a"}]


def test_tiou_and_localization_by_hand():
    assert dvc.tiou([0, 10], [5, 15]) == pytest.approx(5 / 15)
    # disjoint: the union is capped at the summed lengths
    assert dvc.tiou([0, 2], [10, 12]) == 0.0
    # preds [0,10] (tIoU with gt [0,8] = 0.8) and [20,30] (no match); gts [0,8], [40,50]
    precision, recall = dvc.localization([[0, 10], [20, 30]], [[0, 8], [40, 50]])
    np.testing.assert_allclose(precision, [0.5, 0.5, 0.5, 0.0])
    np.testing.assert_allclose(recall, [0.5, 0.5, 0.5, 0.0])
    # strict '>': a pair at exactly the threshold does not count
    precision, _ = dvc.localization([[0, 10]], [[0, 5]], thresholds=(0.5,))
    assert precision[0] == 0.0


def test_soda_assignment_is_order_preserving():
    scores = np.array([[0.0, 1.0], [1.0, 0.0]])  # crossing matches: only one can be kept
    assert dvc.soda_assignment(scores) == 1.0
    assert dvc.soda_assignment(np.array([[0.9, 0.1], [0.2, 0.8]])) == pytest.approx(1.7)


def test_gold_caption_text_path():
    assert dvc.gold_captions(["add salt. stir", "serve"]) == ["add salt, stir.", "serve."]


@pytest.fixture(scope="module")
def scorers():
    with dvc.caption_scorers() as s:
        yield s


def test_single_pair_cider_is_zero_and_meteor_is_not(scorers):
    cider, meteor, _ = scorers
    assert cider.compute_score({"0": ["a man cuts onions"]}, {"0": ["a man cuts onions"]})[0] == 0.0
    assert meteor.compute_score({"0": ["a man cuts onions"]}, {"0": ["a man cuts onions"]})[0] > 0.9


def test_dvc_end_to_end_small(tmp_path, scorers):
    gold = [{"question_id": "v1", "video": "v1.mp4", "duration": 40.0,
             "conversation": [{"role": "user", "content": "Narrate.", "time": 0.0}],
             "answer": [{"content": "crack the eggs into a bowl", "time": [0.0, 10.0]},
                        {"content": "whisk the eggs", "time": [10.0, 20.0]},
                        {"content": "pour into the pan", "time": [20.0, 30.0]}]}]
    write_examples(gold, tmp_path / "gold.json")
    # the first reply is dropped; the next two land exactly on gold segments 2 and 3
    rec = {"question_id": "v1", "video_duration": 40.0, "model_response_list": _turns(
        (10.0, "crack the eggs into a bowl"), (20.0, "whisk the eggs"), (30.0, "pour into the pan"))}
    _write_jsonl(tmp_path / "pred.jsonl", [rec])
    out = dvc.evaluate_dvc(tmp_path / "pred.jsonl", tmp_path / "gold.json")
    assert out["Precision"] == 100.0  # both predictions have tIoU 1 > every threshold
    assert out["Recall"] == pytest.approx(66.7)  # 2 of 3 gold segments covered (the first was dropped)
    assert out["F1"] == pytest.approx(80.0)  # 2 P R / (P + R) with P = 1, R = 2/3
    assert out["METEOR"] > 50 and out["n_preds"] == 2
    # SODA_c scores METEOR(hypothesis = the raw gold caption with its appended '.', reference = the tokenized
    # prediction): the '.' costs about half the score of a short caption (the Vid2Seq argument order, kept)
    _, (m1, m2) = scorers[1].compute_score({"0": ["whisk the eggs"], "1": ["pour into the pan"]},
                                           {"0": ["whisk the eggs."], "1": ["pour into the pan."]})
    best = m1 + m2
    p_soda, r_soda = best / 2, best / 3
    assert out["SODA_c"] == pytest.approx(round(100 * 2 * p_soda * r_soda / (p_soda + r_soda), 1))
    kept = dvc.evaluate_dvc(tmp_path / "pred.jsonl", tmp_path / "gold.json", first_caption="keep")
    assert kept["Recall"] > out["Recall"]
    # the densevid result form gives the same numbers
    (tmp_path / "res.json").write_text(json.dumps({"results": {"v1": dvc.captions_from_replies(rec["model_response_list"])}}))
    again = dvc.evaluate_dvc(tmp_path / "res.json", tmp_path / "gold.json")
    assert {k: again[k] for k in ("Precision", "Recall", "F1", "METEOR", "SODA_c")} == \
        {k: out[k] for k in ("Precision", "Recall", "F1", "METEOR", "SODA_c")}


def test_dvc_video_with_one_distinct_caption_scores_zero(tmp_path):
    gold = [{"question_id": "v1", "video": "v1.mp4", "duration": 20.0,
             "conversation": [{"role": "user", "content": "N.", "time": 0.0}],
             "answer": [{"content": "stir", "time": [0.0, 10.0]}]}]
    write_examples(gold, tmp_path / "gold.json")
    _write_jsonl(tmp_path / "pred.jsonl", [{"question_id": "v1", "model_response_list": _turns((5, "stir"), (9, "stir"))}])
    out = dvc.evaluate_dvc(tmp_path / "pred.jsonl", tmp_path / "gold.json")
    assert (out["F1"], out["CIDEr"], out["METEOR"], out["SODA_c"]) == (0, 0, 0, 0)


# ---- grounding ----------------------------------------------------------------------------------------------

def _grounding_gold(tmp_path, spans_by_qid, duration=10.0):
    rows = [{"question_id": q, "video": "v.mp4", "duration": duration, "timestamps": spans,
             "conversation": [{"role": "user", "content": "q", "time": 0.0}]} for q, spans in spans_by_qid.items()]
    return write_examples(rows, tmp_path / "gold.json")


def test_grounding_by_hand(tmp_path):
    gold = _grounding_gold(tmp_path, {"a": [[1.0, 1.5]], "b": [[0.0, 0.5]], "c": [[0.5, 1.0]]})
    preds = _write_jsonl(tmp_path / "pred.jsonl", [
        _record("a", [0, 0.2, 1, 1, 0.2, 0]),  # frames 2, 3 (1.0 s, 1.5 s) -> IoU 1
        _record("b", [0.5] * 6),  # constant -> no positive frame -> IoU 0
        _record("c", [0, 1, 1, 1, 0, 0]),  # pred frames 1-3, gold frames 1-2 -> 2/3
    ])
    out = grounding.evaluate_grounding(preds, gold, window=0, threshold=0.5)
    assert out["mIoU"] == pytest.approx(100 * (1 + 0 + 2 / 3) / 3, abs=0.01)
    assert (out["R@0.3"], out["R@0.5"], out["R@0.7"]) == pytest.approx((66.67, 66.67, 33.33), abs=0.01)


def test_smoothing_window_clips_at_the_edges():
    smoothed = grounding.smooth(np.array([[1.0, 2.0, 3.0, 4.0, np.nan]]), np.array([4]), 1)
    np.testing.assert_allclose(smoothed[0, :4], [1.5, 2.0, 3.0, 3.5])
    assert np.isnan(smoothed[0, 4])


def test_vectorised_sweep_equals_the_loop():
    rng = np.random.default_rng(0)
    lengths = rng.integers(5, 40, 30)
    times = [np.arange(n) / 2 for n in lengths]
    scores = [rng.random(n).round(3) for n in lengths]
    scores[3] = np.full(lengths[3], 0.4)  # a constant series
    spans = [[[float(t[len(t) // 3]), float(t[len(t) // 2])]] for t in times]
    t_pad, lens = grounding.pad_series(times)
    s_pad, _ = grounding.pad_series(scores)
    ious = grounding.frame_ious(s_pad, lens, grounding.gold_mask(t_pad, spans))
    for wi, w in enumerate(grounding.WINDOWS):
        for ti, th in enumerate(grounding.THRESHOLDS):
            expected = [grounding.frame_iou_loop(t, s, sp, w, th) for t, s, sp in zip(times, scores, spans, strict=True)]
            np.testing.assert_allclose(ious[wi, ti], expected, atol=1e-12)


def test_sweep_oracle_heldout_and_span_iou(tmp_path):
    rng = np.random.default_rng(1)
    spans = {f"q{i}": [[2.0, 5.0]] for i in range(40)}
    gold = _grounding_gold(tmp_path, spans, duration=10.0)
    recs = []
    for i in range(40):
        s = rng.random(20) * 0.3
        s[4:11] += 0.7  # relevant frames 2.0-5.0 s
        recs.append(_record(f"q{i}", s.round(3)))
    preds = _write_jsonl(tmp_path / "pred.jsonl", recs)
    out = grounding.evaluate_grounding(preds, gold, window=0, threshold=0.5, sweep=True)
    assert len(out["sweep"]) == 15 * 21
    best_row = max(r["scores"]["mIoU"] for r in out["sweep"] if r["smooth_window_size"] == 0)
    oracle = next(r for r in out["oracle"] if r["smooth_window_size"] == 0)
    assert "oracle" in oracle["label"] and oracle["scores"]["mIoU"] >= best_row
    assert out["span_iou"]["mIoU"] > 80 and out["mIoU"] > 80
    assert set(out["heldout"]) == {"select_on_0_report_1", "select_on_1_report_0"}


def test_grounding_accepts_old_debug_format_and_raw_charades_gold(tmp_path):
    raw = {"VID": {"duration": 3.0, "timestamps": [[1.0, 2.0], [0.0, 1.0]], "sentences": ["x.", "y."]}}
    (tmp_path / "raw.json").write_text(json.dumps(raw))
    scores = [0.1, 0.2, 0.9, 0.8, 0.9, 0.1]
    new = _write_jsonl(tmp_path / "new.jsonl", [_record("VID_0", scores), _record("VID_1", scores)])
    old = _write_jsonl(tmp_path / "old.jsonl", [_record("VID_0", scores, old_format=True),
                                                _record("VID_1", scores, old_format=True)])
    a = grounding.evaluate_grounding(new, tmp_path / "raw.json", window=0)
    b = grounding.evaluate_grounding(old, tmp_path / "raw.json", window=0)
    assert a["mIoU"] == b["mIoU"] and a["counts"]["evaluated"] == 2


def test_bad_predictions_are_named(tmp_path):
    gold = _grounding_gold(tmp_path, {"a": [[1.0, 2.0]]})
    nan = _write_jsonl(tmp_path / "nan.jsonl", [_record("a", [0.1, float("nan"), 0.3])])
    with pytest.raises(PredictionError, match=r"nan\.jsonl question_id 'a': debug_data\[1\] relevance_score is nan"):
        grounding.evaluate_grounding(nan, gold)
    other = _write_jsonl(tmp_path / "other.jsonl", [_record(1, [0.1, 0.3])])
    with pytest.raises(PredictionError, match="no question_id in common"):
        grounding.evaluate_grounding(other, gold)
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(PredictionError, match="empty prediction file"):
        grounding.evaluate_grounding(tmp_path / "empty.jsonl", gold)


# ---- highlight ----------------------------------------------------------------------------------------------

def test_average_precision_by_hand():
    assert highlight.average_precision(np.array([1, 0, 1, 0]), np.array([0.9, 0.8, 0.7, 0.1])) == pytest.approx(5 / 6)
    assert highlight.average_precision(np.zeros(4), np.arange(4.0)) == 0.0
    assert highlight.average_precision(np.ones(4), np.arange(4.0)) == 1.0


def test_clip_saliency_sums_frames_per_two_seconds():
    np.testing.assert_allclose(highlight.clip_saliency(np.array([1.0, 2, 3, 4, 5]), 1.0), [3, 7, 5])
    np.testing.assert_allclose(highlight.clip_saliency(np.arange(8.0), 0.5), [6, 22])


def test_highlight_by_hand(tmp_path):
    gold = [{"qid": 7, "duration": 8, "relevant_clip_ids": [1, 2], "saliency_scores": [[4, 4, 2], [1, 3, 4]]},
            {"qid": 8, "duration": 4, "relevant_clip_ids": [0], "saliency_scores": [[4, 4, 4]]}]
    _write_jsonl(tmp_path / "gold.jsonl", gold)
    # qid 7: argmax at clip 1 -> VeryGood hit for annotators 1, 2; qid 8: argmax at clip 3, beyond 2 gt clips
    subs = [{"qid": 7, "pred_saliency_scores": [0.1, 0.9, 0.5, 0.2]}, {"qid": 8, "pred_saliency_scores": [0.1, 0.2, 0.3, 0.9]}]
    _write_jsonl(tmp_path / "sub.jsonl", subs)
    out = highlight.evaluate_highlight(tmp_path / "sub.jsonl", tmp_path / "gold.jsonl")
    assert out["HL-min-VeryGood-Hit1"] == 50.0
    # VeryGood APs, qid 7 clip truths: a1 [0,1,0,0] -> 1, a2 [0,1,0,0] -> 1, a3 [0,0,1,0] -> 1/2;
    # qid 8 (2 clips, prediction truncated to [0.1, 0.2]): all three [1, 0] -> 1/2
    assert out["HL-min-VeryGood-mAP"] == pytest.approx(100 * (1 + 1 + 0.5 + 0.5 * 3) / 6, abs=0.01)


# ---- MAGQA --------------------------------------------------------------------------------------------------

class _FixedJudge:
    name = "fixed"
    comparable_to_paper = False

    def __init__(self, table):
        self.table, self.calls = table, 0

    def score_many(self, items):
        self.calls += len(items)
        return [self.table[(g, p)] for _, g, p in items]


def test_magqa_in_span_score_by_hand(tmp_path):
    gold = [{"question_id": "m1", "video": "v.mp4", "duration": 20.0,
             "conversation": [{"role": "user", "content": "What happens?", "time": 0.0}],
             "answer": [{"content": "A", "time": [0.0, 5.0]}, {"content": "B", "time": [5.0, 10.0]}]},
            {"question_id": "m2", "video": "w.mp4", "duration": 20.0,
             "conversation": [{"role": "user", "content": "And?", "time": 0.0}],
             "answer": [{"content": "C", "time": [0.0, 5.0]}]}]
    write_examples(gold, tmp_path / "gold.json")
    _write_jsonl(tmp_path / "pred.jsonl", [
        {"question_id": "m1", "model_response_list": _turns((3.0, "x"), (7.0, "y"), (8.0, "y"))},
        {"question_id": "m2", "model_response_list": []}])
    judge = _FixedJudge({("A", "x"): 4, ("B", "y"): 2})
    cache = tmp_path / "judged.jsonl"
    out = magqa.evaluate_magqa(tmp_path / "pred.jsonl", tmp_path / "gold.json", judge, cache_path=cache)
    # m1: A <- x (4), B <- y, y (2, 2) -> 3; m2: no reply -> 1; mean 2
    assert out["in_span_score"] == 2.0 and out["turns"] == 3.0 and out["dedup_turns"] == 2.0
    assert judge.calls == 2  # (A, y) and (B, x) are out of span: never judged
    again = _FixedJudge({})
    assert magqa.evaluate_magqa(tmp_path / "pred.jsonl", tmp_path / "gold.json", again, cache_path=cache)["in_span_score"] == 2.0
    assert again.calls == 0


def test_offline_judge_and_score_parsing():
    j = magqa.OfflineJudge()
    assert j.score_many([("q", "a red car drives away", "a red car drives away"), ("q", "a red car", "blue sky")]) == [5, 1]
    assert not j.comparable_to_paper
    assert magqa.parse_score("4 - mostly") == 4 and magqa.parse_score("The score is 5") == 1


def test_openai_judge_sends_nothing_without_a_key(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(RuntimeError, match="nothing was sent"):
        magqa.OpenAIJudge().score_many([("q", "a", "b")])


def test_openai_batch_file(tmp_path):
    path = magqa.OpenAIJudge().build_batch_file([("12*0*1", ("q", "gold", "pred"))], tmp_path / "batch.jsonl")
    row = json.loads(path.read_text())
    assert row["custom_id"] == "12*0*1" and row["body"]["model"] == "gpt-4o-2024-08-06"
    assert row["body"]["messages"][0]["content"].endswith("Only reply with a number from 1 to 5, and nothing else.")


# ---- end to end on the real gold files ----------------------------------------------------------------------

def _random_records(examples, fps, rng, with_replies=False):
    out = []
    for e in examples:
        n = int(np.ceil(e["duration"] * fps))
        turns = []
        if with_replies:
            words = [w for a in e["answer"] for w in a["content"].split()]
            t = 0.0
            while True:
                t += float(rng.uniform(5, 40))
                if t >= e["duration"]:
                    break
                turns.append({"time": round(t, 3), "content": " ".join(rng.choice(words, 4)), "role": "assistant"})
        out.append({"question_id": e["question_id"], "model_response_list": turns, "video_duration": e["duration"],
                    "debug_data": [{"time": round(i / fps, 3), "informative_score": 0.0,
                                    "relevance_score": round(float(rng.random()), 3)} for i in range(n)]})
    return out


def _cli(*args):
    result = subprocess.run([sys.executable, "-m", "mmduet_core", *map(str, args)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_grounding_and_highlight_cli_on_real_gold(tmp_path):
    rng = np.random.default_rng(0)
    charades = shared_path("data/charades_sta/charades_test.json")
    examples, _ = convert("charades", charades)
    write_examples(examples, tmp_path / "ch.json")
    _write_jsonl(tmp_path / "ch_pred.jsonl", _random_records(examples, 2, rng))
    out = _cli("evaluate", "grounding", "--pred", tmp_path / "ch_pred.jsonl", "--gold", tmp_path / "ch.json", "--sweep")
    assert {"mIoU", "R@0.3", "R@0.5", "R@0.7"} <= set(out) and out["counts"]["evaluated"] == 3720
    assert 0 < out["R@0.5"] < 30  # random scores are far below the paper's 42.4
    qvh = shared_path("data/qvhighlights/highlight_val_release.jsonl")
    qexamples, _ = convert("qvh", qvh)
    _write_jsonl(tmp_path / "qvh_pred.jsonl", _random_records(qexamples, 1, rng))
    out = _cli("evaluate", "highlight", "--pred", tmp_path / "qvh_pred.jsonl", "--gold", qvh)
    assert {f"HL-min-{n}-{m}" for n in ("Fair", "Good", "VeryGood") for m in ("mAP", "Hit1")} <= set(out)
    assert out["counts"]["evaluated"] == 1550 and 5 < out["HL-min-VeryGood-mAP"] < 25


@pytest.mark.slow
def test_dvc_cli_on_real_youcook2_gold(tmp_path):
    yc2 = shared_path("data/youcook2/yc2_val.json")
    examples, _ = convert("youcook2", yc2)
    write_examples(examples, tmp_path / "yc2.json")
    _write_jsonl(tmp_path / "pred.jsonl", _random_records(examples, 0.5, np.random.default_rng(0), with_replies=True))
    out = _cli("evaluate", "dvc", "--pred", tmp_path / "pred.jsonl", "--gold", tmp_path / "yc2.json")
    assert {"CIDEr", "METEOR", "SODA_c", "Precision", "Recall", "F1"} <= set(out)
    assert out["counts"]["evaluated"] == 457 and 0 < out["F1"] < 40


def test_dvc_cli_on_the_gold_subset(tmp_path):
    examples, _ = convert("youcook2", GOLD / "yc2_val_subset.json")
    write_examples(examples, tmp_path / "yc2.json")
    _write_jsonl(tmp_path / "pred.jsonl", _random_records(examples, 0.5, np.random.default_rng(0), with_replies=True))
    out = _cli("evaluate", "dvc", "--pred", tmp_path / "pred.jsonl", "--gold", tmp_path / "yc2.json")
    assert out["counts"]["evaluated"] == 12 and out["F1"] > 0
