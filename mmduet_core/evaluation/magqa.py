"""Shot2Story-MAGQA in-span score and turn counts (spec §6.4), with any judge from `judges.py`.

Step 1 (pairs): per record with replies, identical texts are de-duplicated on both sides and a (gold, reply)
text pair is judged only when one of the reply's times lies inside one of that gold answer's spans; every
other cell of the score matrix stays 1 (upstream's compute-saving shortcut; those cells never enter the metric).
Upstream writes no judged line for a record without replies.
Step 2 (score): the first `num_examples` judged records, in prediction order. Per gold answer, the mean judge
score of the replies inside its span, or 1 when none; per example the mean over its answers. The in-span list
is padded with 1 and both turn lists (replies, distinct replies) with 0 up to `num_examples`, so examples with
no reply or no record count 1 and 0 turns, as upstream's analysis counts them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import InputError
from .judges import Judge, JudgeCache, make_judge
from .records import (
    Coverage,
    DataError,
    PredictionError,
    duplicate_stats,
    match_ids,
    objects,
    read_gold,
    read_jsonl,
    replies,
    result_shape,
    span,
    unique_by,
)


def _gold_row(path, k: int, row: dict) -> dict:
    where = f"{path} record {k} (question_id {row.get('question_id')!r})"
    if "answer" not in row:
        hint = " (this is highlight gold)" if "relevant_clip_ids" in row else \
            " (this is grounding gold)" if "timestamps" in row else ""
        raise DataError(f"{where}: no 'answer', the MAGQA gold field{hint}")
    conversation = row.get("conversation") or [{}]
    question = row.get("question") or (conversation[0].get("content") if isinstance(conversation[0], dict) else None)
    if not isinstance(question, str):
        raise DataError(f"{where}: no question (neither 'question' nor conversation[0].content)")
    answers = row["answer"]
    if not isinstance(answers, list) or not answers:
        raise DataError(f"{where}: answer is {answers!r}, not a non-empty list")
    out = []
    for j, a in enumerate(answers):
        if not isinstance(a, dict) or not isinstance(a.get("content"), str):
            raise DataError(f"{where}: answer[{j}] needs a text content")
        out.append((a["content"], span(a.get("time"), f"{where}: answer[{j}].time")))
    return {"question": question, "answers": out}


def load_magqa_gold(path: str | Path) -> dict:
    """{question_id: {"question", "answers": [(text, [s, e])]}}."""
    rows = objects(read_gold(path), path, DataError)
    parsed = [_gold_row(path, k, row) for k, row in enumerate(rows)]  # the schema first: its error says more
    ids = unique_by(rows, lambda r: r.get("question_id"), path, DataError)
    return dict(zip(ids, parsed, strict=True))


def _inside(t: float, span: Sequence[float]) -> bool:
    return t == -1 or span[0] <= t <= span[1]


def in_span_pairs(answers: list, preds: list[dict]) -> list[tuple[str, str]]:
    """Distinct (gold text, reply text) pairs with some reply time inside some span of that gold text."""
    todo = []
    for gt in dict.fromkeys(a for a, _ in answers):
        spans = [s for a, s in answers if a == gt]
        for pt in dict.fromkeys(p["content"] for p in preds):
            times = [p["time"] for p in preds if p["content"] == pt]
            if any(_inside(t, s) for t in times for s in spans):
                todo.append((gt, pt))
    return todo


def score_matrix(question: str, answers: list, preds: list[dict], judge: Judge, cache: JudgeCache) -> np.ndarray:
    """Upstream step 1: (#gold, #pred) scores, judged only where a reply falls inside the answer's span."""
    todo = in_span_pairs(answers, preds)
    scores = dict(zip(todo, cache.judge(judge, [(question, g, p) for g, p in todo]), strict=True))
    matrix = np.ones((len(answers), len(preds)))
    for i, (a, _) in enumerate(answers):
        for j, p in enumerate(preds):
            matrix[i, j] = scores.get((a, p["content"]), 1)
    return matrix


def in_span_score(answers: list, preds: list[dict], matrix: np.ndarray) -> float:
    """Upstream step 2 for one example."""
    per_answer = []
    for i, (_, span_) in enumerate(answers):
        inside = [j for j, p in enumerate(preds) if _inside(p["time"], span_)]
        per_answer.append(float(np.mean(matrix[i, inside])) if inside else 1.0)
    return float(np.mean(per_answer))


def _judged_records(pred: str | Path, gold: str | Path, gold_rows: dict, coverage: Coverage) -> tuple[list, int, dict]:
    """Matched records with replies in prediction order (upstream's judged file), the matched count, counts."""
    records = unique_by(read_jsonl(pred), lambda r: r.get("question_id"), pred, PredictionError)
    _, counts = match_ids(records, gold_rows, f"{pred} vs {gold}", coverage)
    matched = [r for q, r in records.items() if q in gold_rows]
    judged = [(r, turns) for r in matched if (turns := replies(r, str(pred)))]
    return judged, len(matched), counts


def pairs_to_judge(pred: str | Path, gold: str | Path) -> list[tuple[str, str, str]]:
    """Every distinct (question, gold, reply) triple step 1 would judge (e.g. for a batch request file)."""
    gold_rows = load_magqa_gold(gold)
    judged, _, _ = _judged_records(pred, gold, gold_rows, "predictions")
    items = []
    for record, turns in judged:
        g = gold_rows[record["question_id"]]
        items += [(g["question"], a, p) for a, p in in_span_pairs(g["answers"], turns)]
    return list(dict.fromkeys(items))


def evaluate_magqa(pred: str | Path, gold: str | Path, judge: Judge | str = "offline",
                   cache_path: str | Path | None = None, num_examples: int | None = None,
                   coverage: Coverage = "gold") -> dict:
    """In-span score (1-5), mean replies and mean distinct replies (2 decimals as upstream prints them, full
    under `unrounded`).

    num_examples: the example count the means are taken over (upstream: 2000, the test set's size); default
    the number of gold examples (coverage "gold") or of matched prediction records ("predictions").
    """
    if num_examples is not None and (isinstance(num_examples, bool) or not isinstance(num_examples, int)
                                     or num_examples < 1):
        raise InputError(f"num_examples {num_examples!r}: a positive whole number")
    judge = make_judge(judge) if isinstance(judge, str) else judge
    gold_rows = load_magqa_gold(gold)
    judged, matched, counts = _judged_records(pred, gold, gold_rows, coverage)
    counts.update({"records": matched, "with_replies": len(judged)})
    total = num_examples or (len(gold_rows) if coverage == "gold" else matched)
    judged = judged[:total]  # upstream analyses the first num_examples lines of its judged file
    cache = JudgeCache(cache_path, judge.name)
    per_example = []
    for record, turns in judged:
        g = gold_rows[record["question_id"]]
        per_example.append(in_span_score(g["answers"], turns, score_matrix(g["question"], g["answers"], turns,
                                                                           judge, cache)))
    stats = duplicate_stats([r for r, _ in judged], pad_to=total)
    exact = {"in_span_score": float(np.mean(per_example + [1.0] * (total - len(per_example)))),
             "turns": stats["turns"], "dedup_turns": stats["distinct_turns"]}
    counts.update({"analysed": len(judged), "padded_to": total, "judged_pairs": len(cache.scores)})
    return result_shape(exact, 2, coverage, counts, duplicate_rate=stats["duplicate_rate"], judge=judge.name,
                        comparable_to_paper=judge.comparable_to_paper)
