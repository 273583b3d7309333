"""Dense-captioning scores that need Java (METEOR 1.5, the PTB tokenizer): SODA_c as the paper computed it and
with the fixed pairing, memoised METEOR, and end-to-end evaluations. One METEOR process serves the session."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from mmduet_core.cli import main
from mmduet_core.data.benchmarks import write_examples
from mmduet_core.data.convert import convert
from mmduet_core.evaluation import dvc
from mmduet_core.evaluation.scorers import CaptionScorers, Meteor, ScoreCache, shared_scorers

from .conftest import FIXTURES, shared_path
from .test_evaluation import _turns, _write_jsonl

GOLD = FIXTURES / "gold"


@pytest.fixture(scope="module")
def scorers() -> CaptionScorers:
    return shared_scorers()  # the process's scorers: METEOR starts once for every test and evaluation


def _gold(tmp_path, captions, span=10.0, name="gold.json"):
    """One video `v1` whose k-th gold caption spans [k * span, (k + 1) * span]."""
    rows = [{"question_id": "v1", "video": "v1.mp4", "duration": span * len(captions),
             "conversation": [{"role": "user", "content": "Narrate.", "time": 0.0}],
             "answer": [{"content": c, "time": [k * span, (k + 1) * span]} for k, c in enumerate(captions)]}]
    return write_examples(rows, tmp_path / name)


def _results(tmp_path, captions, span=10.0, pick=None):
    """A densevid result file whose predictions copy gold captions `pick` word for word, on their gold spans."""
    pick = range(len(captions)) if pick is None else pick
    results = {"v1": [{"timestamp": [k * span, (k + 1) * span], "sentence": captions[k]} for k in pick]}
    path = tmp_path / "results.json"
    path.write_text(json.dumps({"results": results}))
    return path


def _made_up_words(n: int, seed: int = 0) -> list[str]:
    """Distinct invented words: no stem, synonym or paraphrase of one another, so METEOR matches them only
    exactly."""
    rng = np.random.default_rng(seed)
    words: list[str] = []
    while len(words) < n:
        w = "".join(rng.choice(list(c)) for c in ("bfgkmnprtvz", "aeiou", "bfgklmnprtvz", "aeiou", "kmpt"))
        if w not in words:
            words.append(w)
    return words


def test_single_pair_cider_is_zero_and_meteor_is_not(scorers):
    assert scorers.cider_score({"0": ["a man cuts onions"]}, {"0": ["a man cuts onions"]}) == 0.0
    assert scorers.meteor.compute_score({"0": ["a man cuts onions"]}, {"0": ["a man cuts onions"]})[0] == 1.0


def test_soda_c_of_copied_captions_by_hand(tmp_path, scorers):
    captions = ["crack the eggs into a bowl", "whisk the eggs with salt", "heat oil in a pan", "pour the eggs in"]
    gold = _gold(tmp_path, captions)
    out = dvc.evaluate_dvc(_results(tmp_path, captions, pick=[0, 2, 3]), gold)
    # tokenized gold vs tokenized copy: METEOR 1 per copied caption; the spans coincide (tIoU 1 - 1e-9) and do
    # not overlap any other caption's. best = 3, p = 3 / 3, r = 3 / 4, F = 2pr / (p + r) = 6 / 7
    assert out["unrounded"]["SODA_c"] == pytest.approx(100 * 6 / 7, rel=1e-6)
    assert out["SODA_c"] == 85.7
    assert dvc.evaluate_dvc(_results(tmp_path, captions, pick=[0, 2, 3]), gold, soda_pairing="fixed") == \
        {**out, "soda_pairing": "fixed"}  # up to 10 predictions the pairing changes nothing


def test_soda_c_paper_pairing_beyond_ten_predictions(tmp_path, scorers):
    words = _made_up_words(24)
    captions = [f"{words[2 * k]} {words[2 * k + 1]}" for k in range(12)]
    gold, results = _gold(tmp_path, captions), _results(tmp_path, captions)
    fixed = dvc.evaluate_dvc(results, gold, soda_pairing="fixed")
    paper = dvc.evaluate_dvc(results, gold)
    # fixed: every copy scores METEOR 1 on its own span -> best 12, p = r = 1
    assert fixed["unrounded"]["SODA_c"] == pytest.approx(100, rel=1e-6)
    # paper: column j holds prediction paper_order[j] = 0, 1, 10, 11, 2, ..., 9; its score survives the tIoU
    # matrix only where that is prediction j itself (j = 0, 1) -> best 2, p = r = 2 / 12
    assert paper["unrounded"]["SODA_c"] == pytest.approx(100 * 2 / 12, rel=1e-6)
    assert paper["SODA_c"] == 16.7
    # nothing else differs
    drop = {"SODA_c", "unrounded", "soda_pairing"}
    assert {k: v for k, v in paper.items() if k not in drop} == {k: v for k, v in fixed.items() if k not in drop}
    assert {k: v for k, v in paper["unrounded"].items() if k != "SODA_c"} == \
        {k: v for k, v in fixed["unrounded"].items() if k != "SODA_c"}


def test_dvc_end_to_end_small(tmp_path, scorers):
    gold = _gold(tmp_path, ["crack the eggs into a bowl", "whisk the eggs", "pour into the pan"])
    # the first reply is dropped; the next two land exactly on gold segments 2 and 3
    rec = {"question_id": "v1", "video_duration": 30.0, "model_response_list": _turns(
        (10.0, "crack the eggs into a bowl"), (20.0, "whisk the eggs"), (30.0, "pour into the pan"))}
    _write_jsonl(tmp_path / "pred.jsonl", [rec])
    out = dvc.evaluate_dvc(tmp_path / "pred.jsonl", gold)
    assert out["Precision"] == 100.0  # both predictions have tIoU 1 > every threshold
    assert out["Recall"] == 66.7  # 2 of 3 gold segments covered (the first was dropped)
    assert out["F1"] == 80.0  # 2 P R / (P + R) with P = 1, R = 2/3
    assert out["METEOR"] > 50 and out["n_preds"] == 2
    assert out["SODA_c"] == 80.0  # two exact copies: p = 2 / 2, r = 2 / 3
    for key, value in out["unrounded"].items():  # the shape: 1 decimal as the original prints, full precision
        assert out[key] == round(value, 1)
    kept = dvc.evaluate_dvc(tmp_path / "pred.jsonl", gold, first_caption="keep")
    assert kept["Recall"] > out["Recall"]
    # the densevid result form gives the same numbers
    (tmp_path / "res.json").write_text(json.dumps({"results": {"v1": dvc.captions_from_replies(rec["model_response_list"])}}))
    again = dvc.evaluate_dvc(tmp_path / "res.json", gold)
    assert {k: again[k] for k in ("Precision", "Recall", "F1", "METEOR", "SODA_c")} == \
        {k: out[k] for k in ("Precision", "Recall", "F1", "METEOR", "SODA_c")}


def test_dvc_video_with_one_distinct_caption_scores_zero(tmp_path, scorers):
    gold = _gold(tmp_path, ["stir"])
    _write_jsonl(tmp_path / "pred.jsonl", [{"question_id": "v1", "model_response_list": _turns((5, "stir"), (9, "stir"))}])
    out = dvc.evaluate_dvc(tmp_path / "pred.jsonl", gold)
    assert (out["F1"], out["CIDEr"], out["METEOR"], out["SODA_c"]) == (0, 0, 0, 0)


def test_dvc_missing_video_counts_zero_unless_scoring_the_intersection(tmp_path, scorers):
    rows = [{"question_id": v, "video": f"{v}.mp4", "duration": 20.0,
             "conversation": [{"role": "user", "content": "N.", "time": 0.0}],
             "answer": [{"content": "chop the onion", "time": [0.0, 10.0]}, {"content": "fry it", "time": [10.0, 20.0]}]}
            for v in ("v1", "v2")]
    gold = write_examples(rows, tmp_path / "gold.json")
    path = tmp_path / "res.json"
    path.write_text(json.dumps({"results": {"v1": [{"timestamp": [0.0, 10.0], "sentence": "chop the onion"}]}}))
    out = dvc.evaluate_dvc(path, gold)
    inter = dvc.evaluate_dvc(path, gold, coverage="predictions")
    assert (out["Precision"], out["coverage"], out["counts"]["missing_predictions"]) == (50.0, "gold", 1)
    assert (inter["Precision"], inter["coverage"], inter["counts"]["evaluated"]) == (100.0, "predictions", 1)
    assert out["unrounded"]["SODA_c"] == pytest.approx(inter["unrounded"]["SODA_c"] / 2)


def test_memoised_meteor_gives_identical_metrics(tmp_path, scorers, monkeypatch):
    words = _made_up_words(8, seed=1)  # texts no other test scores, so the first call really goes to Java
    pairs = [(f"{words[0]} cuts the {words[1]}", f"a {words[0]} cuts {words[1]}"),
             (f"{words[2]} {words[3]} boils", f"{words[2]} {words[3]} boils"),
             (f"{words[4]} and {words[5]}", f"{words[6]} and {words[7]} and {words[4]}"),
             (f"{words[0]} cuts the {words[1]}", f"a {words[0]} cuts {words[1]}")]  # a repeated pair
    res = {str(k): [h] for k, (h, _) in enumerate(pairs)}
    gts = {str(k): [r] for k, (_, r) in enumerate(pairs)}
    calls = scorers.meteor.java_calls
    first = scorers.meteor.compute_score(gts, res)
    assert scorers.meteor.java_calls == calls + 2  # one batch of SCORE lines, one EVAL
    assert scorers.meteor.compute_score(gts, res) == first and scorers.meteor.java_calls == calls + 2
    assert scorers.meteor.pair_scores(pairs) == first[1]
    assert first[1][0] == first[1][3]
    # the aggregate comes from summed statistics, not from the pair scores
    assert abs(first[0] - float(np.mean(first[1]))) > 1e-3
    # a cache file restores the same numbers with no Java at all
    fresh = ScoreCache()
    fresh.load(scorers.cache.save(tmp_path / "scores.jsonl"))
    offline = Meteor(fresh)
    monkeypatch.setattr(offline, "_process", lambda: pytest.fail("Java was started for memoised pairs"))
    assert offline.compute_score(gts, res) == first


def test_dvc_reevaluation_and_cache_file_need_no_java(tmp_path, scorers, monkeypatch):
    examples, _ = convert("youcook2", GOLD / "yc2_val_subset.json")
    examples = examples[:4]
    write_examples(examples, tmp_path / "yc2.json")
    _write_jsonl(tmp_path / "pred.jsonl", _replies(examples, np.random.default_rng(3)))
    cache = tmp_path / "caption_scores.jsonl"
    first = dvc.evaluate_dvc(tmp_path / "pred.jsonl", tmp_path / "yc2.json", cache_path=cache)
    calls = scorers.meteor.java_calls
    assert dvc.evaluate_dvc(tmp_path / "pred.jsonl", tmp_path / "yc2.json") == first
    assert scorers.meteor.java_calls == calls
    # another process: scorers read from the cache file only
    other = CaptionScorers()
    other.use_cache_file(cache)
    monkeypatch.setattr(other.meteor, "_process", lambda: pytest.fail("Java was started for cached pairs"))
    monkeypatch.setattr(dvc, "shared_scorers", lambda cache_path=None: other)
    assert dvc.evaluate_dvc(tmp_path / "pred.jsonl", tmp_path / "yc2.json") == first


def _replies(examples, rng):
    """Replies every 5-40 s drawing words from the video's gold captions, some copying a caption."""
    out = []
    for e in examples:
        captions = [a["content"] for a in e["answer"]]
        words = [w for c in captions for w in c.split()]
        turns, t = [], 0.0
        while (t := t + float(rng.uniform(5, 40))) < e["duration"]:
            text = captions[rng.integers(len(captions))] if rng.random() < 0.3 else " ".join(rng.choice(words, 4))
            turns.append({"time": round(t, 3), "content": text, "role": "assistant"})
        out.append({"question_id": e["question_id"], "model_response_list": turns, "video_duration": e["duration"]})
    return out


def test_dvc_cli_on_the_gold_subset(tmp_path, capsys, scorers):
    examples, _ = convert("youcook2", GOLD / "yc2_val_subset.json")
    write_examples(examples, tmp_path / "yc2.json")
    _write_jsonl(tmp_path / "pred.jsonl", _replies(examples, np.random.default_rng(0)))
    args = ["evaluate", "dvc", "--pred", str(tmp_path / "pred.jsonl"), "--gold", str(tmp_path / "yc2.json")]
    assert main(args) == 0
    paper = json.loads(capsys.readouterr().out)
    assert paper["counts"]["evaluated"] == 12 and paper["F1"] > 0 and paper["soda_pairing"] == "paper"
    assert main([*args, "--soda-pairing", "fixed"]) == 0
    fixed = json.loads(capsys.readouterr().out)
    assert fixed["soda_pairing"] == "fixed" and fixed["METEOR"] == paper["METEOR"]


@pytest.mark.slow
def test_meteor_matches_pycocoevalcap(scorers):
    from pycocoevalcap.meteor.meteor import Meteor as Reference

    rng = np.random.default_rng(5)
    vocab = ["the", "a", "man", "woman", "cuts", "chops", "onion", "onions", "pan", "oil", "salt", "stir", "stirs",
             "add", "adds", "bowl", "eggs", "whisk"]
    pairs = [(" ".join(rng.choice(vocab, rng.integers(2, 9))), " ".join(rng.choice(vocab, rng.integers(2, 9))))
             for _ in range(60)]
    res = {str(k): [h] for k, (h, _) in enumerate(pairs)}
    gts = {str(k): [r] for k, (_, r) in enumerate(pairs)}
    reference = Reference()
    try:
        expected = reference.compute_score(gts, res)
    finally:
        reference.__del__()
        reference.__class__ = type("Closed", (), {})  # its __del__ would close the process a second time
    assert scorers.meteor.compute_score(gts, res) == (expected[0], list(expected[1]))
    assert scorers.meteor.compute_score(gts, res) == (expected[0], list(expected[1]))  # memoised


@pytest.mark.slow
def test_dvc_cli_on_real_youcook2_gold(tmp_path):
    yc2 = shared_path("data/youcook2/yc2_val.json")
    examples, _ = convert("youcook2", yc2)
    write_examples(examples, tmp_path / "yc2.json")
    _write_jsonl(tmp_path / "pred.jsonl", _replies(examples, np.random.default_rng(0)))
    result = subprocess.run([sys.executable, "-m", "mmduet_core", "evaluate", "dvc", "--pred",
                             str(tmp_path / "pred.jsonl"), "--gold", str(tmp_path / "yc2.json")],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert {"CIDEr", "METEOR", "SODA_c", "Precision", "Recall", "F1"} <= set(out["unrounded"])
    assert out["counts"]["evaluated"] == 457 and 0 < out["F1"] < 60
