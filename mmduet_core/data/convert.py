"""Build MMDuet-format test files from the public gold files (`mmduet convert {qvh,charades,youcook2}`).

One example per query (QVHighlights, Charades-STA) or per video (YouCook2); the user prompt is drawn with a
fixed seed from upstream's instruction lists and asked at time 0, as upstream's benchmark files do. Every
example keeps the gold its evaluator reads, and `question_id` has the type the evaluators match on (QVH:
the integer `qid` of the moment_detr gold file). A malformed entry is a `DataError` naming the file, the entry
(line or video id) and the field.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable
from pathlib import Path

from .benchmarks import DataError, read_records, record_lines, validate_example
from .prompts import DVC_INSTRUCTIONS, GROUNDING_TEMPLATES

SEED = 42


def _user(content: str) -> list[dict]:
    return [{"role": "user", "content": content, "time": 0.0}]


class _EntryError(ValueError):
    """A bad field of one gold entry (located by the caller)."""


def _field(entry, name: str):
    if not isinstance(entry, dict):
        raise _EntryError(f"expected an object, got {type(entry).__name__}")
    if name not in entry:
        raise _EntryError(f"missing field {name!r}")
    return entry[name]


def _seconds(entry, name: str) -> float:
    value = _field(entry, name)
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise _EntryError(f"{name} must be a number of seconds, got {value!r}")
    try:
        seconds = float(value)
    except ValueError:
        raise _EntryError(f"{name} must be a number of seconds, got {value!r}") from None
    if not math.isfinite(seconds):
        raise _EntryError(f"{name} must be finite, got {value!r}")
    return seconds


def _text(entry, name: str) -> str:
    value = _field(entry, name)
    if not isinstance(value, str) or not value.strip():
        raise _EntryError(f"{name} must be non-empty text, got {value!r}")
    return value


def _spans_and_sentences(entry) -> list[tuple[list[float], str]]:
    spans, sentences = _field(entry, "timestamps"), _field(entry, "sentences")
    if not isinstance(spans, list) or not isinstance(sentences, list):
        raise _EntryError("timestamps and sentences must be lists")
    if len(spans) != len(sentences):
        raise _EntryError(f"{len(spans)} timestamps but {len(sentences)} sentences")
    out = []
    for k, (span, sentence) in enumerate(zip(spans, sentences, strict=True)):
        if not isinstance(span, list | tuple) or len(span) != 2:
            raise _EntryError(f"timestamps[{k}] must be [start, end], got {span!r}")
        pair = {"start": span[0], "end": span[1]}
        times = [_seconds(pair, "start"), _seconds(pair, "end")]
        if not isinstance(sentence, str):
            raise _EntryError(f"sentences[{k}] must be text, got {sentence!r}")
        out.append((times, sentence))
    return out


def convert_qvh(src: str | Path, seed: int = SEED) -> list[dict]:
    """moment_detr jsonl (`qid`, `query`, `duration`, `vid`, `relevant_clip_ids`, `saliency_scores`, ...)."""
    rng = random.Random(seed)
    rows = read_records(src)

    def one(row) -> dict:
        query = _text(row, "query")
        return {
            "question_id": _field(row, "qid"), "video": f"{_text(row, 'vid')}.mp4",
            "duration": _seconds(row, "duration"), "conversation": _user(rng.choice(GROUNDING_TEMPLATES) % query),
            "query": query, "qid": row["qid"], "relevant_clip_ids": _field(row, "relevant_clip_ids"),
            "saliency_scores": _field(row, "saliency_scores"), "relevant_windows": row.get("relevant_windows", []),
        }

    lines: list[int] | None = None
    out = []
    for index, row in enumerate(rows):
        try:
            out.append(one(row))
        except _EntryError as exc:
            lines = record_lines(src) if lines is None else lines
            where = f"{src}:{lines[index]}" if index < len(lines) else f"{src} entry {index}"
            raise DataError(f"{where}: {exc}") from None
    return out


def _load_object(src: str | Path) -> dict:
    path = Path(src)
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if path.is_dir():
        raise DataError(f"{path}: is a folder, not a gold file")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not JSON ({exc.msg} at line {exc.lineno})") from exc
    except UnicodeDecodeError:
        raise DataError(f"{path}: not a text file") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected an object {{video: {{duration, timestamps, sentences}}}}")
    return data


def _per_video(src: str | Path, make: Callable[[str, dict], list[dict]]) -> list[dict]:
    out = []
    for key, entry in _load_object(src).items():
        try:
            out.extend(make(key, entry))
        except _EntryError as exc:
            raise DataError(f"{src}: video {key!r}: {exc}") from None
    return out


def convert_charades(src: str | Path, seed: int = SEED) -> list[dict]:
    """Charades-STA `{video_id: {duration, timestamps: [[s, e], ...], sentences: [...]}}`: one example per
    sentence, question_id `<video_id>_<k>`, gold `timestamps` = that sentence's span."""
    rng = random.Random(seed)

    def make(vid: str, entry: dict) -> list[dict]:
        duration, out = _seconds(entry, "duration"), []
        for k, (span, sentence) in enumerate(_spans_and_sentences(entry)):
            query = sentence.strip().rstrip(".")
            out.append({
                "question_id": f"{vid}_{k}", "video": f"{vid}.mp4", "duration": duration,
                "conversation": _user(rng.choice(GROUNDING_TEMPLATES) % query), "query": query,
                "timestamps": [span],
            })
        return out

    return _per_video(src, make)


def convert_youcook2(src: str | Path, seed: int = SEED) -> list[dict]:
    """PDVC/densevid `{"v_<id>": {duration, timestamps, sentences}}`: one example per video."""
    rng = random.Random(seed)

    def make(key: str, entry: dict) -> list[dict]:
        vid = key.removeprefix("v_")
        duration = _seconds(entry, "duration")
        answer = [{"content": s.strip(), "time": span} for span, s in _spans_and_sentences(entry)]
        return [{"question_id": vid, "video": f"{vid}.mp4", "duration": duration,
                 "conversation": _user(rng.choice(DVC_INSTRUCTIONS)), "answer": answer}]

    return _per_video(src, make)


CONVERTERS = {"qvh": (convert_qvh, "highlight"), "charades": (convert_charades, "grounding"),
              "youcook2": (convert_youcook2, "dvc")}


def convert(kind: str, src: str | Path, seed: int = SEED) -> tuple[list[dict], str]:
    """Convert and validate; returns (examples, benchmark name). Bad input raises `DataError` in one line."""
    if kind not in CONVERTERS:
        raise DataError(f"unknown source {kind!r}; one of {', '.join(CONVERTERS)}")
    fn, benchmark = CONVERTERS[kind]
    examples = fn(src, seed)
    for index, example in enumerate(examples):
        try:
            validate_example(example, benchmark)
        except ValueError as exc:
            raise DataError(f"{src} entry {index} ({example.get('question_id')!r}): {exc}") from None
    return examples, benchmark
