"""The four MMDuet benchmark test formats: reading, validation, and the gold each evaluator needs.

An example (one JSON object of a list file, or one line of a .jsonl file):

    {"question_id": ..., "video": "rel/path.mp4", "duration": 30.0,
     "conversation": [{"role": "user", "content": "...", "time": 0.0}], ...gold fields}

Gold fields by benchmark: dvc (YouCook2) and magqa (Shot2Story-MAGQA): `answer` = [{"content", "time": [s, e]}];
grounding (Charades-STA): `timestamps` = [[s, e], ...]; highlight (QVHighlights): `relevant_clip_ids`,
`saliency_scores` (3 annotators per clip), optional `relevant_windows`, `qid`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

from ..errors import InputError, is_finite_number

Benchmark = Literal["dvc", "magqa", "grounding", "highlight"]
BENCHMARKS: tuple[str, ...] = ("dvc", "magqa", "grounding", "highlight")

_COMMON = {"question_id", "video", "conversation", "duration", "video_duration", "query", "vid", "source"}
_GOLD = {
    "dvc": {"answer"},
    "magqa": {"answer", "question"},
    "grounding": {"timestamps", "sentence"},
    "highlight": {"qid", "relevant_clip_ids", "saliency_scores", "relevant_windows"},
}
_REQUIRED = {"dvc": ("answer",), "magqa": ("answer",), "grounding": ("timestamps",),
             "highlight": ("relevant_clip_ids", "saliency_scores")}
TIME_SLACK = 0.5  # seconds past the stated duration tolerated (container durations are rounded)


class DataError(InputError):
    """Bad annotation; the message names the file and the example in one line."""


def read_records(path: str | Path, error: type[ValueError] = DataError, what: str = "file") -> list[dict]:
    """A JSON list, a JSON object of objects ({id: example}), or JSON lines; bad input raises `error` with a
    one-line message naming the file (and the line for JSON lines)."""
    path = Path(path)
    if not path.exists():
        raise error(f"{path}: no such file")
    text = path.read_text()
    if not text.strip():
        raise error(f"{path}: empty {what}")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        if exc.msg != "Extra data":
            raise error(f"{path}: not JSON ({exc.msg} at line {exc.lineno})") from exc
        data = []  # several JSON values: JSON lines
        for line_no, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    data.append(json.loads(line))
                except json.JSONDecodeError as line_exc:
                    raise error(f"{path}:{line_no}: not JSON ({line_exc.msg})") from line_exc
    if isinstance(data, dict):  # {id: record} (Charades, YouCook2 gold) or a one-line JSON lines file
        if data and all(isinstance(v, dict) for v in data.values()):
            return [{"question_id": k, **v} for k, v in data.items()]
        return [data]
    if not isinstance(data, list):
        raise error(f"{path}: expected a list of records, got {type(data).__name__}")
    return data


def record_lines(path: str | Path) -> list[int]:
    """The line where each record of `path` starts (JSON lines, or the items of a JSON list; [] for other forms).
    Only called to locate an error, so the file is parsed again here rather than on every read."""
    text = Path(path).read_text()
    start = len(text) - len(text.lstrip())
    if text[start:start + 1] != "[":
        try:
            json.loads(text)
            return []  # one object: {id: record} or a single record
        except json.JSONDecodeError:
            return [n for n, line in enumerate(text.splitlines(), 1) if line.strip()]
    decoder, separators, lines = json.JSONDecoder(), re.compile(r"[\s,]*"), []
    i, line, counted = start + 1, 1, 0
    try:
        while True:
            i = separators.match(text, i).end()
            if i >= len(text) or text[i] == "]":
                return lines
            line += text.count("\n", counted, i)
            counted = i
            lines.append(line)
            _, i = decoder.raw_decode(text, i)
    except json.JSONDecodeError:
        return lines


def _located(path: Path, index: int, qid, reason: str, lines: list[int]) -> str:
    where = f" (line {lines[index]})" if index < len(lines) else ""
    return f"{path} example {index} (question_id {qid!r}): {reason}{where}"


def _check_time(t, duration: float | None, what: str) -> None:
    if not is_finite_number(t):
        raise ValueError(f"{what} is not a number: {t!r}")
    if t < 0 or (duration is not None and t > duration + TIME_SLACK):
        raise ValueError(f"{what} {t} is outside the video (0 to {duration})")


def _check_span(span, duration: float | None, what: str) -> None:
    if not (isinstance(span, list | tuple) and len(span) == 2):
        raise ValueError(f"{what} must be [start, end], got {span!r}")
    _check_time(span[0], duration, f"{what} start")
    _check_time(span[1], duration, f"{what} end")
    if span[1] < span[0]:
        raise ValueError(f"{what} ends before it starts: {span!r}")


def validate_example(example: dict, benchmark: Benchmark, strict: bool = True, gold: bool = True) -> None:
    """Raise ValueError (a short reason naming the field) when `example` is not a valid `benchmark` test example.
    gold=False checks only what inference reads (question_id, video, duration, the conversation)."""
    if not isinstance(example, dict):
        raise ValueError(f"an example must be an object, got {type(example).__name__}")
    for key in ("question_id", "video", "conversation"):
        if key not in example:
            raise ValueError(f"missing field {key!r}")
    if not isinstance(example["question_id"], str | int) or isinstance(example["question_id"], bool):
        raise ValueError(f"question_id must be a string or integer, got {example['question_id']!r}")
    if not isinstance(example["video"], str) or not example["video"]:
        raise ValueError(f"video must be a relative path, got {example['video']!r}")
    duration = example.get("duration", example.get("video_duration"))
    if duration is not None and (not is_finite_number(duration) or duration <= 0):
        raise ValueError(f"duration must be a positive number, got {duration!r}")
    conv = example["conversation"]
    if not isinstance(conv, list) or not conv:
        raise ValueError("conversation must be a non-empty list of turns")
    for k, turn in enumerate(conv):
        if not isinstance(turn, dict) or turn.get("role") not in ("user", "assistant", "system"):
            raise ValueError(f"turn {k}: role must be user, assistant or system")
        if not isinstance(turn.get("content"), str):
            raise ValueError(f"turn {k}: content must be a string")
        if turn["role"] != "system":
            _check_time(turn.get("time"), duration, f"turn {k} time")
    if not any(t["role"] == "user" for t in conv):
        raise ValueError("conversation has no user turn")
    if not gold:
        return
    for key in _REQUIRED[benchmark]:
        if key not in example:
            raise ValueError(f"missing gold field {key!r} for {benchmark}")
    if strict:
        unknown = set(example) - _COMMON - _GOLD[benchmark]
        if unknown:
            raise ValueError(f"unknown fields {sorted(unknown)} for {benchmark} (strict=False ignores them)")
    if benchmark in ("dvc", "magqa"):
        if not isinstance(example["answer"], list) or not example["answer"]:
            raise ValueError("answer must be a non-empty list")
        for k, ans in enumerate(example["answer"]):
            if not isinstance(ans, dict) or not isinstance(ans.get("content"), str):
                raise ValueError(f"answer {k}: content must be a string")
            _check_span(ans.get("time"), duration, f"answer {k} time")
    elif benchmark == "grounding":
        spans = example["timestamps"]
        if not isinstance(spans, list) or not spans:
            raise ValueError("timestamps must be a non-empty list of [start, end]")
        for k, span in enumerate(spans):
            _check_span(span, duration, f"timestamps[{k}]")
    else:
        ids, scores = example["relevant_clip_ids"], example["saliency_scores"]
        if not isinstance(ids, list) or not isinstance(scores, list) or len(ids) != len(scores):
            raise ValueError("relevant_clip_ids and saliency_scores must be lists of the same length")
        if not all(isinstance(i, int) and i >= 0 for i in ids):
            raise ValueError("relevant_clip_ids must be non-negative integers")
        if not all(isinstance(s, list) and all(is_finite_number(v) for v in s) for s in scores):
            raise ValueError("saliency_scores must be lists of numbers (one per annotator)")


def read_benchmark(path: str | Path, benchmark: Benchmark, strict: bool = True,
                   on_error: Literal["raise", "skip"] = "raise") -> tuple[list[dict], list[str]]:
    """Read and validate a test file. Returns (examples, errors); with on_error="skip" bad examples are left
    out and each is described in `errors` instead of raising."""
    if benchmark not in BENCHMARKS:
        raise DataError(f"unknown benchmark {benchmark!r}; one of {', '.join(BENCHMARKS)}")
    path = Path(path)
    examples, errors, seen = [], [], {}
    lines: list[int] | None = None  # where each record starts, found on the first error
    for index, example in enumerate(read_records(path)):
        qid = example.get("question_id") if isinstance(example, dict) else None
        try:
            validate_example(example, benchmark, strict)
            if qid in seen:
                raise ValueError(f"duplicate question_id (also example {seen[qid]})")
            seen[qid] = index
        except ValueError as exc:
            lines = record_lines(path) if lines is None else lines
            message = _located(path, index, qid, str(exc), lines)
            if on_error == "raise":
                raise DataError(message) from None
            errors.append(message)
            continue
        examples.append(example)
    return examples, errors


def check_examples(examples: list, benchmark: Benchmark = "grounding", gold: bool = False,
                   source: str = "examples") -> list[dict]:
    """Validate examples given as Python objects (what `read_benchmark` does for a file); by default only the
    fields inference reads. Raises `DataError` naming the example index, its question_id and the field."""
    if not isinstance(examples, list | tuple):
        raise DataError(f"{source}: expected a list of examples, got {type(examples).__name__}")
    seen: dict = {}
    for index, example in enumerate(examples):
        qid = example.get("question_id") if isinstance(example, dict) else None
        try:
            validate_example(example, benchmark, strict=False, gold=gold)
            if qid in seen:
                raise ValueError(f"duplicate question_id (also example {seen[qid]})")
        except ValueError as exc:
            raise DataError(f"{source} example {index} (question_id {qid!r}): {exc}") from None
        seen[qid] = index
    return list(examples)


def write_examples(examples: Iterable[dict], path: str | Path) -> Path:
    """Write a test file as a JSON list (the upstream test-file form)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(list(examples), indent=1, ensure_ascii=False) + "\n")
    tmp.replace(path)
    return path
