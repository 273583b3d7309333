"""Bad input never lies: every case below raises an `InputError` whose one-line message names the file, the
record and the field (table-driven; each case under a timeout). None of them needs Java: inputs are checked
before anything is scored."""

from __future__ import annotations

import json
import math

import pytest

from mmduet_core.cli import main
from mmduet_core.errors import InputError
from mmduet_core.evaluation import dvc, grounding, highlight, magqa
from mmduet_core.evaluation.records import DataError, PredictionError

pytestmark = pytest.mark.timeout(20)  # each case: a hang fails instead of blocking the run (pytest-timeout)


def _frames(qid, times, scores):
    return {"question_id": qid, "model_response_list": [], "video_duration": 10.0,
            "debug_data": [{"time": t, "informative_score": 0.1, "relevance_score": s} for t, s in zip(times, scores)]}


def _turns(*pairs):
    return [{"time": t, "content": c, "role": "assistant"} for t, c in pairs]


GROUNDING_GOLD = [{"question_id": "a", "duration": 10.0, "timestamps": [[1.0, 2.0]]},
                  {"question_id": "b", "duration": 10.0, "timestamps": [[3.0, 4.0]]}]
GROUNDING_PRED = [_frames("a", [0.0, 0.5, 1.0, 1.5], [0.1, 0.2, 0.9, 0.8]), _frames("b", [0.0, 0.5], [0.3, 0.4])]
HIGHLIGHT_GOLD = [{"qid": 7, "duration": 8, "relevant_clip_ids": [1, 2], "saliency_scores": [[4, 4, 2], [1, 3, 4]]}]
HIGHLIGHT_SUB = [{"qid": 7, "pred_saliency_scores": [0.1, 0.9, 0.5, 0.2]}]
DVC_GOLD = [{"question_id": "v1", "duration": 30.0, "answer": [{"content": "crack eggs", "time": [0.0, 10.0]},
                                                               {"content": "whisk", "time": [10.0, 20.0]}]}]
DVC_PRED = [{"question_id": "v1", "model_response_list": _turns((5.0, "a"), (12.0, "crack eggs"))}]
MAGQA_GOLD = [{"question_id": "m1", "conversation": [{"role": "user", "content": "What?", "time": 0.0}],
               "answer": [{"content": "A", "time": [0.0, 5.0]}]}]
MAGQA_PRED = [{"question_id": "m1", "model_response_list": _turns((3.0, "x"))}]
VALID = {"grounding": (GROUNDING_PRED, GROUNDING_GOLD), "highlight": (HIGHLIGHT_SUB, HIGHLIGHT_GOLD),
         "dvc": (DVC_PRED, DVC_GOLD), "magqa": (MAGQA_PRED, MAGQA_GOLD)}


def _edit(rows, index, **changes):
    """A deep copy of `rows` with fields of row `index` replaced (a value of `...` deletes the field)."""
    rows = json.loads(json.dumps(rows))
    for key, value in changes.items():
        if value is ...:
            rows[index].pop(key)
        else:
            rows[index][key] = value
    return rows


def _debug(rows, k, **changes):
    rows = json.loads(json.dumps(rows))
    rows[0]["debug_data"][k].update(changes)
    return rows


# (id, benchmark, predictions or None for the valid ones, gold or None, error type, message fragments);
# "{pred}" / "{gold}" stand for the file names
CASES = [
    ("grounding gold without timestamps", "grounding", None, _edit(GROUNDING_GOLD, 0, timestamps=..., spans=[[1, 2]]),
     DataError, ["{gold} record 0 (question_id 'a')", "no 'timestamps'"]),
    ("grounding against highlight gold", "grounding", None, HIGHLIGHT_GOLD,
     DataError, ["{gold} record 0", "this is highlight gold"]),
    ("highlight against grounding gold", "highlight", GROUNDING_PRED, GROUNDING_GOLD,
     DataError, ["{gold} record 0 (qid 'a')", "this is grounding gold"]),
    ("dvc against grounding gold", "dvc", None, GROUNDING_GOLD,
     DataError, ["{gold} record 0 (question_id 'a')", "no 'answer'", "grounding gold"]),
    ("magqa against highlight gold", "magqa", None, HIGHLIGHT_GOLD,
     DataError, ["{gold} record 0", "no 'answer'", "highlight gold"]),
    ("zero frame interval", "highlight", [_frames(7, [0.0, 0.0, 1.0], [0.1, 0.2, 0.3])], None,
     PredictionError, ["{pred} question_id 7", "debug_data[1].time 0.0 does not increase"]),
    ("string frame time", "grounding", _debug(GROUNDING_PRED, 1, time="0.5"), None,
     PredictionError, ["{pred} question_id 'a'", "debug_data[1].time is '0.5', not a number"]),
    ("string score", "grounding", _debug(GROUNDING_PRED, 0, relevance_score="high"), None,
     PredictionError, ["{pred} question_id 'a'", "debug_data[0].relevance_score is 'high', not a number"]),
    ("NaN frame time", "grounding", _debug(GROUNDING_PRED, 2, time=math.nan), None,
     PredictionError, ["{pred} question_id 'a'", "debug_data[2].time is nan"]),
    ("negative frame time", "highlight", [_frames(7, [-0.5, 0.5], [0.1, 0.2])], None,
     PredictionError, ["{pred} question_id 7", "debug_data[0].time is -0.5, below 0"]),
    ("NaN in a saliency submission", "highlight", [{"qid": 7, "pred_saliency_scores": [0.1, math.nan]}], None,
     PredictionError, ["{pred} qid 7", "pred_saliency_scores[1] is nan"]),
    ("empty saliency list", "highlight", [{"qid": 7, "pred_saliency_scores": []}], None,
     PredictionError, ["{pred} qid 7", "pred_saliency_scores is [], not a non-empty list"]),
    ("string saliency score", "highlight", [{"qid": 7, "pred_saliency_scores": [0.1, "0.9"]}], None,
     PredictionError, ["{pred} qid 7", "pred_saliency_scores[1] is '0.9', not a number"]),
    ("duplicate prediction ids", "grounding", GROUNDING_PRED + GROUNDING_PRED[:1], None,
     PredictionError, ["{pred} question_id 'a'", "appears twice"]),
    ("duplicate gold ids", "highlight", None, HIGHLIGHT_GOLD * 2,
     DataError, ["{gold} qid 7", "appears twice"]),
    ("duplicate dvc gold ids", "dvc", None, DVC_GOLD * 2, DataError, ["{gold} question_id 'v1'", "appears twice"]),
    ("duplicate magqa prediction ids", "magqa", MAGQA_PRED * 2, None,
     PredictionError, ["{pred} question_id 'm1'", "appears twice"]),
    ("gold span ending before it starts", "dvc", None,
     _edit(DVC_GOLD, 0, answer=[{"content": "crack eggs", "time": [5.0, 2.0]}]),
     DataError, ["{gold} record 0 (question_id 'v1')", "answer[0].time [5.0, 2.0] ends before it starts"]),
    ("negative gold span", "grounding", None, _edit(GROUNDING_GOLD, 1, timestamps=[[-2.0, 4.0]]),
     DataError, ["{gold} record 1 (question_id 'b')", "timestamps[0] is -2.0, below 0"]),
    ("empty gold span", "magqa", None, _edit(MAGQA_GOLD, 0, answer=[{"content": "A", "time": [4.0, 4.0]}]),
     DataError, ["{gold} record 0 (question_id 'm1')", "answer[0].time [4.0, 4.0] is empty"]),
    ("empty gold span list", "grounding", None, _edit(GROUNDING_GOLD, 0, timestamps=[]),
     DataError, ["{gold} record 0 (question_id 'a')", "timestamps is [], not a non-empty list"]),
    ("string gold span", "grounding", None, _edit(GROUNDING_GOLD, 0, timestamps=[["1", "2"]]),
     DataError, ["{gold} record 0 (question_id 'a')", "timestamps[0] is '1', not a number"]),
    ("highlight clip past the video", "highlight", None,
     _edit(HIGHLIGHT_GOLD, 0, relevant_clip_ids=[1, 4]), DataError,
     ["{gold} record 0 (qid 7)", "relevant_clip_ids[1] = 4 is not a clip of its 8 s"]),
    ("highlight gold without duration", "highlight", None, _edit(HIGHLIGHT_GOLD, 0, duration=...), DataError,
     ["{gold} record 0 (qid 7)", "duration is None, not a number"]),
    ("string reply time", "dvc", _edit(DVC_PRED, 0, model_response_list=_turns(("5", "a"))), None,
     PredictionError, ["{pred} question_id 'v1'", "model_response_list[0].time is '5', not a number"]),
    ("reply without text", "magqa",
     _edit(MAGQA_PRED, 0, model_response_list=[{"time": 3.0, "role": "assistant", "content": None}]), None,
     PredictionError, ["{pred} question_id 'm1'", "model_response_list[0].content is None"]),
    ("dvc result span ending before it starts", "dvc",
     {"results": {"v1": [{"timestamp": [9.0, 3.0], "sentence": "crack eggs"}]}}, None,
     PredictionError, ["{pred} results['v1'][0].timestamp [9.0, 3.0] ends before it starts"]),
    ("a prediction that is not an object", "grounding", [GROUNDING_PRED[0], [1, 2]], None,
     PredictionError, ["{pred} record 1", "expected an object, got list"]),
]


def _write(path, rows):
    if isinstance(rows, dict):
        path.write_text(json.dumps(rows))
    else:
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _run(benchmark, pred, gold):
    if benchmark == "grounding":
        return grounding.evaluate_grounding(pred, gold)
    if benchmark == "highlight":
        return highlight.evaluate_highlight(pred, gold)
    if benchmark == "dvc":
        return dvc.evaluate_dvc(pred, gold)
    return magqa.evaluate_magqa(pred, gold)


@pytest.mark.parametrize("benchmark, pred_rows, gold_rows, error, fragments",
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_gives_one_line_naming_file_record_and_field(tmp_path, benchmark, pred_rows, gold_rows, error,
                                                                fragments):
    valid_pred, valid_gold = VALID[benchmark]
    pred = _write(tmp_path / "pred.jsonl", valid_pred if pred_rows is None else pred_rows)
    gold = _write(tmp_path / "gold.jsonl", valid_gold if gold_rows is None else gold_rows)
    with pytest.raises(error) as info:
        _run(benchmark, pred, gold)
    message = str(info.value)
    assert isinstance(info.value, InputError) and "\n" not in message
    for fragment in fragments:
        assert fragment.format(pred=pred, gold=gold) in message


@pytest.mark.parametrize("benchmark", sorted(VALID))
def test_the_valid_inputs_of_the_table_evaluate(tmp_path, benchmark, monkeypatch):
    """The table's base files are valid: each case fails through its one change only."""
    pred = _write(tmp_path / "pred.jsonl", VALID[benchmark][0])
    gold = _write(tmp_path / "gold.jsonl", VALID[benchmark][1])
    if benchmark == "dvc":  # check the inputs without scoring (no Java here)
        preds, _ = dvc.load_dvc_predictions(pred)
        assert preds["v1"] and dvc.load_dvc_gold(gold)["v1"]["timestamps"] == [[0.0, 10.0], [10.0, 20.0]]
        return
    assert _run(benchmark, pred, gold)["counts"]["evaluated"] >= 1


def test_the_cli_prints_one_line_and_exits_2(tmp_path, capsys):
    pred = _write(tmp_path / "pred.jsonl", [{"qid": 7, "pred_saliency_scores": [0.1, math.nan]}])
    gold = _write(tmp_path / "gold.jsonl", HIGHLIGHT_GOLD)
    assert main(["evaluate", "highlight", "--pred", str(pred), "--gold", str(gold)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and f"{pred} qid 7: pred_saliency_scores[1] is nan" in err


def test_coverage_and_num_examples_options_are_checked(tmp_path):
    pred = _write(tmp_path / "pred.jsonl", GROUNDING_PRED)
    gold = _write(tmp_path / "gold.jsonl", GROUNDING_GOLD)
    with pytest.raises(InputError, match="coverage 'all'"):
        grounding.evaluate_grounding(pred, gold, coverage="all")
    mpred = _write(tmp_path / "mpred.jsonl", MAGQA_PRED)
    mgold = _write(tmp_path / "mgold.jsonl", MAGQA_GOLD)
    with pytest.raises(InputError, match="num_examples -5"):
        magqa.evaluate_magqa(mpred, mgold, num_examples=-5)
