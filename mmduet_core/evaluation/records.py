"""Prediction records: reading them and normalising upstream's two `debug_data` forms (spec §5.7, §6.5).

A record: {"question_id", "model_response_list": [{"time", "content", "role"}], "video_duration",
"debug_data": [{"time", "informative_score", "relevance_score"}]}. The older upstream form writes
`video_time` and two-element probability lists; both are accepted.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..data.benchmarks import read_records


class PredictionError(ValueError):
    """Bad prediction input; the message names the file and the record."""


def read_jsonl(path: str | Path) -> list[dict]:
    """Prediction records: JSON lines (blank lines skipped) or a JSON list."""
    return read_records(path, PredictionError, "prediction file")


def _positive(value) -> float:
    """A scalar positive-class probability from a scalar or a [p_negative, p_positive] list."""
    if isinstance(value, list | tuple):
        value = value[1]
    return float(value)


def frame_scores(record: dict, key: str = "relevance_score", source: str = "") -> tuple[np.ndarray, np.ndarray]:
    """(times, scores) of a record's per-frame `debug_data`; NaN or missing scores are an error."""
    debug = record.get("debug_data")
    qid = record.get("question_id")
    if not debug:
        raise PredictionError(f"{source} question_id {qid!r}: no per-frame debug_data")
    times, scores = [], []
    for k, entry in enumerate(debug):
        t = entry.get("time", entry.get("video_time"))
        if t is None or key not in entry:
            raise PredictionError(f"{source} question_id {qid!r}: debug_data[{k}] lacks time or {key}")
        score = _positive(entry[key])
        if not math.isfinite(score):
            raise PredictionError(f"{source} question_id {qid!r}: debug_data[{k}] {key} is {score}")
        times.append(float(t))
        scores.append(score)
    return np.asarray(times), np.asarray(scores)


def replies(record: dict) -> list[dict]:
    """The assistant turns of a record, in time order."""
    turns = [t for t in record.get("model_response_list", []) if t.get("role") == "assistant"]
    return sorted(turns, key=lambda t: t["time"])


def duplicate_stats(records: list[dict]) -> dict:
    """Mean replies per record, mean distinct replies, and the share of replies repeating an earlier one."""
    if not records:
        return {"turns": 0.0, "distinct_turns": 0.0, "duplicate_rate": 0.0}
    turns = [len(replies(r)) for r in records]
    distinct = [len({t["content"] for t in replies(r)}) for r in records]
    total = sum(turns)
    return {"turns": float(np.mean(turns)), "distinct_turns": float(np.mean(distinct)),
            "duplicate_rate": float(1 - sum(distinct) / total) if total else 0.0}


def match_ids(predictions: dict, gold: dict, what: str) -> tuple[list, dict]:
    """Ids present in both, and counts of what was left out (an empty intersection is an error)."""
    common = [q for q in gold if q in predictions]
    counts = {"evaluated": len(common), "gold_without_prediction": len(gold) - len(common),
              "predictions_without_gold": sum(1 for q in predictions if q not in gold)}
    if not common:
        sample_pred = list(predictions)[:3]
        sample_gold = list(gold)[:3]
        raise PredictionError(f"{what}: no question_id in common between predictions {sample_pred} and gold "
                              f"{sample_gold} (types must match too)")
    return common, counts
