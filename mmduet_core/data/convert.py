"""Build MMDuet-format test files from the public gold files (`mmduet convert {qvh,charades,youcook2}`).

One example per query (QVHighlights, Charades-STA) or per video (YouCook2); the user prompt is drawn with a
fixed seed from upstream's instruction lists and asked at time 0, as upstream's benchmark files do. Every
example keeps the gold its evaluator reads, and `question_id` has the type the evaluators match on (QVH:
the integer `qid` of the moment_detr gold file).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from .benchmarks import DataError, read_records, validate_example
from .prompts import DVC_INSTRUCTIONS, GROUNDING_TEMPLATES

SEED = 42


def _user(content: str) -> list[dict]:
    return [{"role": "user", "content": content, "time": 0.0}]


def convert_qvh(src: str | Path, seed: int = SEED) -> list[dict]:
    """moment_detr jsonl (`qid`, `query`, `duration`, `vid`, `relevant_clip_ids`, `saliency_scores`, ...)."""
    rng = random.Random(seed)
    out = []
    for row in read_records(src):
        out.append({
            "question_id": row["qid"], "video": f"{row['vid']}.mp4", "duration": float(row["duration"]),
            "conversation": _user(rng.choice(GROUNDING_TEMPLATES) % row["query"]), "query": row["query"],
            "qid": row["qid"], "relevant_clip_ids": row["relevant_clip_ids"],
            "saliency_scores": row["saliency_scores"], "relevant_windows": row.get("relevant_windows", []),
        })
    return out


def _load_object(src: str | Path) -> dict:
    path = Path(src)
    if not path.exists():
        raise DataError(f"{path}: no such file")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not JSON ({exc.msg})") from exc
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected an object {{video: {{duration, timestamps, sentences}}}}")
    return data


def convert_charades(src: str | Path, seed: int = SEED) -> list[dict]:
    """Charades-STA `{video_id: {duration, timestamps: [[s, e], ...], sentences: [...]}}`: one example per
    sentence, question_id `<video_id>_<k>`, gold `timestamps` = that sentence's span."""
    rng = random.Random(seed)
    out = []
    for vid, entry in _load_object(src).items():
        for k, (span, sentence) in enumerate(zip(entry["timestamps"], entry["sentences"], strict=True)):
            query = sentence.strip().rstrip(".")
            out.append({
                "question_id": f"{vid}_{k}", "video": f"{vid}.mp4", "duration": float(entry["duration"]),
                "conversation": _user(rng.choice(GROUNDING_TEMPLATES) % query), "query": query,
                "timestamps": [[float(span[0]), float(span[1])]],
            })
    return out


def convert_youcook2(src: str | Path, seed: int = SEED) -> list[dict]:
    """PDVC/densevid `{"v_<id>": {duration, timestamps, sentences}}`: one example per video."""
    rng = random.Random(seed)
    out = []
    for key, entry in _load_object(src).items():
        vid = key.removeprefix("v_")
        out.append({
            "question_id": vid, "video": f"{vid}.mp4", "duration": float(entry["duration"]),
            "conversation": _user(rng.choice(DVC_INSTRUCTIONS)),
            "answer": [{"content": s.strip(), "time": [float(a), float(b)]}
                       for (a, b), s in zip(entry["timestamps"], entry["sentences"], strict=True)],
        })
    return out


CONVERTERS = {"qvh": (convert_qvh, "highlight"), "charades": (convert_charades, "grounding"),
              "youcook2": (convert_youcook2, "dvc")}


def convert(kind: str, src: str | Path, seed: int = SEED) -> tuple[list[dict], str]:
    """Convert and validate; returns (examples, benchmark name)."""
    if kind not in CONVERTERS:
        raise DataError(f"unknown source {kind!r}; one of {', '.join(CONVERTERS)}")
    fn, benchmark = CONVERTERS[kind]
    try:
        examples = fn(src, seed)
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, DataError):
            raise
        raise DataError(f"{src}: not a {kind} gold file ({type(exc).__name__}: {exc})") from exc
    for index, example in enumerate(examples):
        try:
            validate_example(example, benchmark)
        except ValueError as exc:
            raise DataError(f"{src} entry {index} ({example.get('question_id')!r}): {exc}") from None
    return examples, benchmark
