"""Dense-captioning inputs (spec §6.1): assistant replies -> timed captions (upstream's rule, first caption
dropped), densevid result files, and the gold in upstream's text path (MMDuet test files or PDVC/densevid gold).
Every value is checked; a bad one raises an `InputError` naming the file, the record and the field."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from .records import (
    DataError,
    PredictionError,
    objects,
    read_gold,
    read_jsonl,
    replies,
    span,
    spans,
    unique_by,
)

FirstCaption = Literal["drop", "keep"]


# ---- replies -> captions ------------------------------------------------------------------------------------

def captions_from_replies(turns: Sequence[dict], first_caption: FirstCaption = "drop") -> list[dict]:
    """Assistant replies (time order) -> [{"timestamp": [s, e], "sentence"}].

    Identical consecutive replies extend the current caption; a new text starts a caption spanning from the
    previous caption's last reply time to its own. Upstream never emits the first distinct caption
    (`first_caption="drop"`, default, as in the paper); "keep" gives it the span [0, its last reply time].
    """
    out, text, start, end = [], None, None, None
    for turn in turns:
        if text is not None and turn["content"] == text:
            end = turn["time"]
            continue
        if text is not None and start is not None:
            out.append({"timestamp": [start, end], "sentence": text})
        if text is None:
            start = 0.0 if first_caption == "keep" else None
        else:
            start = end
        text, end = turn["content"], turn["time"]
    if text is not None and start is not None:
        out.append({"timestamp": [start, end], "sentence": text})
    return out


# ---- reading inputs -----------------------------------------------------------------------------------------

def _norm_id(qid) -> str:
    return str(qid).removeprefix("v_")


def _result_captions(path: Path, vid: str, captions) -> list[dict]:
    if not isinstance(captions, list):
        raise PredictionError(f"{path} results[{vid!r}] is not a list of captions")
    out = []
    for k, c in enumerate(captions):
        text = c.get("sentence", c.get("caption")) if isinstance(c, dict) else None
        if not isinstance(text, str):
            raise PredictionError(f"{path} results[{vid!r}][{k}]: no sentence")
        out.append({"timestamp": span(c.get("timestamp"), f"{path} results[{vid!r}][{k}].timestamp",
                                      PredictionError, allow_empty=True), "sentence": text})
    return out


def load_dvc_predictions(path: str | Path, first_caption: FirstCaption = "drop") -> tuple[dict, list[dict]]:
    """{video id: captions} from inference records or a densevid `{"results": {...}}` file; also the records."""
    path = Path(path)
    text = path.read_text() if path.exists() else ""
    if text.lstrip().startswith("{") and '"results"' in text[:2000]:
        try:
            results = json.loads(text)["results"]
        except (json.JSONDecodeError, KeyError) as exc:
            raise PredictionError(f"{path}: not a densevid result file ({exc})") from None
        if not isinstance(results, dict):
            raise PredictionError(f"{path}: 'results' is not an object of videos")
        return {_norm_id(k): _result_captions(path, k, v) for k, v in results.items()}, []
    records = list(unique_by(read_jsonl(path), lambda r: r.get("question_id"), path, PredictionError).values())
    preds = {_norm_id(r["question_id"]): captions_from_replies(replies(r, str(path)), first_caption) for r in records}
    if len(preds) != len(records):
        raise PredictionError(f"{path}: two question_ids name the same video once 'v_' is removed")
    return preds, records


def gold_captions(answers: Sequence[str]) -> list[str]:
    """Upstream's gold text path: '. ' -> ', ' in each answer, join with '. ', split on '. ', append '.'."""
    paragraph = ". ".join(a.replace(". ", ", ") for a in answers)
    return [c + "." for c in paragraph.split(". ")]


def _gold_entry(path, k: int, record: dict) -> tuple[list[str], list[list[float]]]:
    where = f"{path} record {k} (question_id {record.get('question_id')!r})"
    if "answer" in record:
        answers = record["answer"]
        if not isinstance(answers, list) or not answers:
            raise DataError(f"{where}: answer is {answers!r}, not a non-empty list")
        for j, a in enumerate(answers):
            if not isinstance(a, dict) or not isinstance(a.get("content"), str):
                raise DataError(f"{where}: answer[{j}] needs a text content")
        return [a["content"] for a in answers], [span(a.get("time"), f"{where}: answer[{j}].time")
                                                  for j, a in enumerate(answers)]
    if "sentences" in record and "timestamps" in record:
        if len(record["sentences"]) != len(record["timestamps"]):
            raise DataError(f"{where}: {len(record['sentences'])} sentences but {len(record['timestamps'])} timestamps")
        if not all(isinstance(x, str) for x in record["sentences"]):
            raise DataError(f"{where}: sentences must all be text")
        return list(record["sentences"]), spans(record["timestamps"], f"{where}: timestamps")
    hint = " (this is highlight gold)" if "relevant_clip_ids" in record else \
        " (this is grounding gold)" if "timestamps" in record else ""
    raise DataError(f"{where}: no 'answer' or 'sentences' + 'timestamps', the dense-captioning gold fields{hint}")


def load_dvc_gold(path: str | Path) -> dict[str, dict]:
    """{video id: {"timestamps", "sentences", "paragraph"}} from an MMDuet test file or a PDVC/densevid file."""
    rows = objects(read_gold(path), path, DataError)
    entries = [_gold_entry(path, k, record) for k, record in enumerate(rows)]  # the schema first: its error says more
    ids = unique_by(rows, lambda r: _norm_id(r["question_id"]) if "question_id" in r else None, path, DataError)
    out = {}
    for vid, (answers, stamps) in zip(ids, entries, strict=True):
        sentences = gold_captions(answers)
        if len(sentences) != len(stamps):  # an answer containing '.. ' splits differently; keep upstream's text
            sentences = (sentences + [""] * len(stamps))[: len(stamps)]
        out[vid] = {"timestamps": stamps, "sentences": sentences,
                    "paragraph": ". ".join(a.replace(". ", ", ") for a in answers)}
    return out
