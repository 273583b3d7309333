"""What every evaluator shares: reading prediction records, checking values (a bad one raises an `InputError`
naming the file, the record and the field), the coverage rule, and the result shape.

A record: {"question_id", "model_response_list": [{"time", "content", "role"}], "video_duration",
"debug_data": [{"time", "informative_score", "relevance_score"}]}. The older upstream form writes
`video_time` and two-element probability lists; both are accepted.

Coverage: by default every gold query is scored and one without a prediction scores zero (what moment_detr's
`match_number` check intends); `coverage="predictions"` scores only the queries present in both files.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Literal

import numpy as np

from ..data.benchmarks import DataError, read_records
from ..errors import InputError
from ..stream.record import StepRecord

Coverage = Literal["gold", "predictions"]
COVERAGES: tuple[str, ...] = ("gold", "predictions")


class PredictionError(InputError):
    """Bad prediction input; the message names the file and the record."""


def read_jsonl(path: str | Path) -> list[dict]:
    """Prediction records: JSON lines (blank lines skipped) or a JSON list."""
    return read_records(path, PredictionError, "prediction file")


def read_gold(path: str | Path) -> list[dict]:
    """Gold records (same container forms as predictions)."""
    return read_records(path, DataError, "gold file")


# ---- values -------------------------------------------------------------------------------------------------

def number(value, where: str, error: type[InputError] = PredictionError, minimum: float | None = None) -> float:
    """A finite number (not a bool, not a string), at least `minimum`; else `error` naming `where`."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise error(f"{where} is {value!r}, not a number")
    if not math.isfinite(value):
        raise error(f"{where} is {value}")
    if minimum is not None and value < minimum:
        raise error(f"{where} is {value}, below {minimum:g}")
    return float(value)


def span(value, where: str, error: type[InputError] = DataError, allow_empty: bool = False) -> list[float]:
    """A [start, end] pair of non-negative numbers with end > start (end >= start with `allow_empty`)."""
    if not isinstance(value, list | tuple) or len(value) != 2:
        raise error(f"{where} is {value!r}, not a [start, end] pair")
    start, end = (number(v, where, error, minimum=0) for v in value)
    if end < start:
        raise error(f"{where} {list(value)} ends before it starts")
    if end == start and not allow_empty:
        raise error(f"{where} {list(value)} is empty (zero length)")
    return [start, end]


def spans(values, where: str, error: type[InputError] = DataError) -> list[list[float]]:
    """A non-empty list of non-empty spans (gold)."""
    if not isinstance(values, list | tuple) or not values:
        raise error(f"{where} is {values!r}, not a non-empty list of [start, end] spans")
    return [span(v, f"{where}[{k}]", error) for k, v in enumerate(values)]


def _positive(value, where: str = "score") -> float:
    """A scalar positive-class probability from a scalar or a [p_negative, p_positive] list."""
    if isinstance(value, list | tuple):
        if len(value) != 2:
            raise PredictionError(f"{where} is {value!r}: a list must be [p_negative, p_positive]")
        value = value[1]
    return number(value, where)


def objects(rows: list, path, error: type[InputError]) -> list[dict]:
    """The rows, each checked to be a JSON object."""
    for k, row in enumerate(rows):
        if not isinstance(row, dict):
            raise error(f"{path} record {k}: expected an object, got {type(row).__name__}")
    return rows


def unique_by(rows: Iterable[dict], key: Callable[[dict], object], path, error: type[InputError],
              field: str = "question_id") -> dict:
    """{id: row}; a repeated id is an error (silently keeping the last would score a different set)."""
    out = {}
    for k, row in enumerate(rows):
        if not isinstance(row, dict):
            raise error(f"{path} record {k}: expected an object, got {type(row).__name__}")
        qid = key(row)
        if qid is None:
            raise error(f"{path} record {k}: no {field}")
        if qid in out:
            raise error(f"{path} {field} {qid!r}: appears twice (records must be unique)")
        out[qid] = row
    return out


# ---- records ------------------------------------------------------------------------------------------------

def frame_scores(record: dict, key: str = "relevance_score", source: str = "") -> tuple[np.ndarray, np.ndarray]:
    """(times, scores) of a record's per-frame `debug_data`. Times must be finite, non-negative and increasing,
    scores finite numbers (scalar or [p0, p1])."""
    debug = record.get("debug_data")
    where = f"{source} question_id {record.get('question_id')!r}"
    if not debug or not isinstance(debug, list):
        raise PredictionError(f"{where}: no per-frame debug_data")
    times, scores = [], []
    for k, entry in enumerate(debug):
        t = entry.get("time", entry.get("video_time")) if isinstance(entry, dict) else None
        if t is None or key not in entry:
            raise PredictionError(f"{where}: debug_data[{k}] lacks time or {key}")
        times.append(number(t, f"{where}: debug_data[{k}].time", minimum=0))
        if len(times) > 1 and times[-1] <= times[-2]:
            raise PredictionError(f"{where}: debug_data[{k}].time {times[-1]} does not increase "
                                  f"(previous {times[-2]})")
        scores.append(_positive(entry[key], f"{where}: debug_data[{k}].{key}"))
    return np.asarray(times), np.asarray(scores)


def steps_from_record(record: dict, source: str = "") -> list[StepRecord]:
    """A prediction record as the session's steps: one per `debug_data` frame (its index and time), each reply
    on the frame stamped with its time, each message on the first frame at or after its time (where it is read)."""
    times, informative = frame_scores(record, "informative_score", source)
    _, relevance = frame_scores(record, "relevance_score", source)
    steps = [StepRecord(k, float(t), float(i), float(r)) for k, (t, i, r) in enumerate(zip(times, informative, relevance))]
    for turn in record.get("model_response_list") or []:
        if not isinstance(turn, dict) or not steps:
            continue
        when = float(turn.get("time", -1))
        k = int(np.searchsorted(times, when - 1e-3))  # records round times to 3 decimals
        if k < len(steps) and turn.get("role") == "assistant" and abs(times[k] - when) <= 1e-3:
            steps[k].reply = turn.get("content")
        elif k < len(steps) and turn.get("role") == "user":
            steps[k].user_message = turn.get("content")
    return steps


def replies(record: dict, source: str = "") -> list[dict]:
    """The assistant turns of a record, in time order (a time must be a number; -1 marks an untimed reply)."""
    turns = record.get("model_response_list") or []
    where = f"{source} question_id {record.get('question_id')!r}"
    out = []
    for k, turn in enumerate(turns):
        if isinstance(turn, dict) and turn.get("role") == "assistant":
            number(turn.get("time"), f"{where}: model_response_list[{k}].time")
            if not isinstance(turn.get("content"), str):
                raise PredictionError(f"{where}: model_response_list[{k}].content is {turn.get('content')!r}")
            out.append(turn)
    return sorted(out, key=lambda t: t["time"])


def duplicate_stats(records: list[dict], pad_to: int | None = None) -> dict:
    """Mean replies per record, mean distinct replies, and the share of replies repeating an earlier one.

    pad_to: average over this many examples, the first `pad_to` records counted and the rest counting 0 turns
    (upstream's MAGQA analysis)."""
    turns = [len(replies(r)) for r in records]
    distinct = [len({t["content"] for t in replies(r)}) for r in records]
    if pad_to is not None:
        turns = turns[:pad_to] + [0] * max(0, pad_to - len(turns))
        distinct = distinct[:pad_to] + [0] * max(0, pad_to - len(distinct))
    if not turns:
        return {"turns": 0.0, "distinct_turns": 0.0, "duplicate_rate": 0.0}
    total = sum(turns)
    return {"turns": float(np.mean(turns)), "distinct_turns": float(np.mean(distinct)),
            "duplicate_rate": float(1 - sum(distinct) / total) if total else 0.0}


# ---- coverage and the result --------------------------------------------------------------------------------

def match_ids(predictions: dict, gold: dict, what: str, coverage: Coverage = "gold") -> tuple[list, dict]:
    """The ids to score (gold order) and what was left out; no id in common is an error.

    coverage "gold": every gold id (the caller scores a missing prediction as zero); "predictions": the ids
    present in both."""
    if coverage not in COVERAGES:
        raise InputError(f"coverage {coverage!r}: use 'gold' or 'predictions'")
    common = [q for q in gold if q in predictions]
    missing = [q for q in gold if q not in predictions]
    counts = {"gold": len(gold), "predictions": len(predictions), "evaluated": len(gold) if coverage == "gold"
              else len(common), "missing_predictions": len(missing),
              "predictions_without_gold": sum(1 for q in predictions if q not in gold),
              "missing_examples": [str(q) for q in missing[:5]]}
    if not common:
        raise PredictionError(f"{what}: no question_id in common between predictions {list(predictions)[:3]} and "
                              f"gold {list(gold)[:3]} (types must match too)")
    return (list(gold) if coverage == "gold" else common), counts


def result_shape(exact: dict[str, float], digits: int, coverage: Coverage, counts: dict, **extra) -> dict:
    """The shape every evaluator returns: the metric keys rounded as the original prints them, the same keys at
    full precision under `unrounded`, then the coverage rule, the counts and anything benchmark-specific."""
    result = {k: round(float(v), digits) for k, v in exact.items()}
    result["unrounded"] = {k: float(v) for k, v in exact.items()}
    result["coverage"] = coverage
    result["counts"] = counts
    result.update(extra)
    return result


def sequence_mean(values: Sequence[float]) -> float:
    """sum / len in list order, as the original's printing code averages (0 for an empty list)."""
    return sum(values) / len(values) if values else 0.0
