"""Dense video captioning (YouCook2) as upstream computes it (spec §6.1): replies -> timed captions, then the
Vid2Seq-style metrics: localisation precision / recall / F1 over tIoU 0.3/0.5/0.7/0.9, CIDEr-D and METEOR per
threshold with random-string fillers for unmatched predictions, SODA_c, and paragraph CIDEr / METEOR.

CIDEr-D, METEOR 1.5 and the PTB tokenizer are pycocoevalcap's (Java for the latter two). All captions are
tokenized in one PTB call (the tokenizer works line by line, so this equals upstream's per-call use) and one
METEOR process serves the whole evaluation.
"""

from __future__ import annotations

import random
import re
import string
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

import numpy as np

from ..data.benchmarks import read_records
from .records import PredictionError, duplicate_stats, match_ids, read_jsonl, replies

THRESHOLDS = (0.3, 0.5, 0.7, 0.9)
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


def load_dvc_predictions(path: str | Path, first_caption: FirstCaption = "drop") -> tuple[dict, list[dict]]:
    """{video id: captions} from inference records or a densevid `{"results": {...}}` file; also the records."""
    path = Path(path)
    text = path.read_text() if path.exists() else ""
    if text.lstrip().startswith("{") and '"results"' in text[:2000]:
        import json

        results = json.loads(text)["results"]
        return {_norm_id(k): list(v) for k, v in results.items()}, []
    records = read_jsonl(path)
    preds = {}
    for record in records:
        if "question_id" not in record:
            raise PredictionError(f"{path}: a record without question_id")
        preds[_norm_id(record["question_id"])] = captions_from_replies(replies(record), first_caption)
    return preds, records


def gold_captions(answers: Sequence[str]) -> list[str]:
    """Upstream's gold text path: '. ' -> ', ' in each answer, join with '. ', split on '. ', append '.'."""
    paragraph = ". ".join(a.replace(". ", ", ") for a in answers)
    return [c + "." for c in paragraph.split(". ")]


def load_dvc_gold(path: str | Path) -> dict[str, dict]:
    """{video id: {"timestamps", "sentences", "paragraph"}} from an MMDuet test file or a PDVC/densevid file."""
    out = {}
    for record in read_records(path):
        if "answer" in record:
            answers = [a["content"] for a in record["answer"]]
            spans = [list(a["time"]) for a in record["answer"]]
        else:
            answers, spans = record["sentences"], record["timestamps"]
        sentences = gold_captions(answers)
        if len(sentences) != len(spans):  # an answer containing '.. ' splits differently; keep upstream's text
            sentences = (sentences + [""] * len(spans))[: len(spans)]
        out[_norm_id(record["question_id"])] = {"timestamps": spans, "sentences": sentences,
                                                "paragraph": ". ".join(a.replace(". ", ", ") for a in answers)}
    return out


# ---- metric pieces ------------------------------------------------------------------------------------------

def tiou(a: Sequence[float], b: Sequence[float]) -> float:
    """Vid2Seq's tIoU: overlap / (min(hull length, len a + len b) + 1e-8)."""
    inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    union = min(max(a[1], b[1]) - min(a[0], b[0]), (a[1] - a[0]) + (b[1] - b[0]))
    return inter / (union + 1e-8)


def localization(preds: Sequence[Sequence[float]], gts: Sequence[Sequence[float]],
                 thresholds: Sequence[float] = THRESHOLDS) -> tuple[np.ndarray, np.ndarray]:
    """Per-threshold precision and recall of one video (a pair counts when tIoU > t)."""
    ious = np.array([[tiou(p, g) for g in gts] for p in preds]).reshape(len(preds), len(gts))
    precision = np.array([(ious > t).any(1).sum() / max(len(preds), 1) for t in thresholds])
    recall = np.array([(ious > t).any(0).sum() / len(gts) if len(gts) else 0.0 for t in thresholds])
    return precision, recall


def soda_assignment(scores: np.ndarray) -> float:
    """Best total score of an order-preserving assignment (SODA's DP): dp[i, j] = max(dp[i-1, j],
    dp[i, j-1], dp[i-1, j-1] + s[i, j])."""
    m, n = scores.shape
    dp = np.zeros((m + 1, n + 1))
    for i in range(1, m + 1):
        for j in range(1, n + 1):
            dp[i, j] = max(dp[i - 1, j], dp[i, j - 1], dp[i - 1, j - 1] + scores[i - 1, j - 1])
    return float(dp[m, n])


def _letters_only(text: str) -> str:
    return " ".join(re.sub(r"[^a-z]+", " ", text.lower()).split())


def _random_string(rng: random.Random) -> str:
    return "".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(10, 20)))


def _remove_nonascii(text: str) -> str:
    return "".join(c for c in text if ord(c) < 128)


@contextmanager
def caption_scorers():
    """pycocoevalcap's CIDEr-D, one METEOR process, and the PTB tokenizer (Java needed for the latter two)."""
    import shutil

    if shutil.which("java") is None:
        raise RuntimeError("METEOR and the PTB tokenizer need Java on PATH (see README: Java)")
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.meteor.meteor import Meteor
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    meteor = Meteor()
    try:
        yield Cider(), meteor, PTBTokenizer()
    finally:
        with meteor.lock:
            meteor.meteor_p.stdin.close()
            meteor.meteor_p.kill()
            meteor.meteor_p.wait()
        meteor.__class__ = type("ClosedMeteor", (), {})  # its __del__ would close the process a second time


def _score(scorer, gts: dict, res: dict) -> tuple[float, list]:
    if not res:
        return 0.0, []
    score, scores = scorer.compute_score(gts, res)
    return float(score), list(np.atleast_1d(scores))


# ---- the evaluation -----------------------------------------------------------------------------------------

def evaluate_dvc(pred: str | Path, gold: str | Path, first_caption: FirstCaption = "drop", seed: int = 0,
                 thresholds: Sequence[float] = THRESHOLDS) -> dict:
    """Upstream's dense-captioning numbers (percent, 1 decimal as printed) plus unrounded values and counts.

    Only gold videos with a prediction record are evaluated (upstream writes the gold file from the
    predicted ids); a video whose replies yield no caption scores 0.
    """
    predictions, records = load_dvc_predictions(pred, first_caption)
    gold_all = load_dvc_gold(gold)
    videos, counts = match_ids(predictions, gold_all, f"{pred} vs {gold}")
    rng = random.Random(seed)

    plan = []  # (video, threshold index, [(prediction text, gold or filler text)])
    for vid in videos:
        preds, gts = predictions[vid], gold_all[vid]
        for ti, t in enumerate(thresholds):
            pairs = []
            for p in preds:
                matched = [g for g, span in enumerate(gts["timestamps"]) if tiou(p["timestamp"], span) >= t]
                if matched:
                    pairs += [(p["sentence"], gts["sentences"][g]) for g in matched]
                else:
                    pairs.append((p["sentence"], _random_string(rng)))
            plan.append((vid, ti, pairs))
    texts = {t for _, _, pairs in plan for pair in pairs for t in pair}
    texts |= {p["sentence"] for vid in videos for p in predictions[vid]}

    with caption_scorers() as (cider, meteor, tokenizer):
        tokens = tokenize_all(tokenizer, texts)
        cap_scores = {"CIDEr": np.zeros((len(videos), len(thresholds))),
                      "METEOR": np.zeros((len(videos), len(thresholds)))}
        index = {vid: i for i, vid in enumerate(videos)}
        for vid, ti, pairs in plan:
            res = {str(k): [tokens[p]] for k, (p, _) in enumerate(pairs)}
            gts = {str(k): [tokens[g]] for k, (_, g) in enumerate(pairs)}
            cap_scores["CIDEr"][index[vid], ti] = _score(cider, gts, res)[0]
            cap_scores["METEOR"][index[vid], ti] = _score(meteor, gts, res)[0]

        soda = np.zeros(len(videos))
        precision = np.zeros((len(videos), len(thresholds)))
        recall = np.zeros((len(videos), len(thresholds)))
        for i, vid in enumerate(videos):
            preds = sorted(predictions[vid], key=lambda p: p["timestamp"][0])
            gts = gold_all[vid]
            precision[i], recall[i] = localization([p["timestamp"] for p in preds], gts["timestamps"], thresholds)
            soda[i] = _soda_c(meteor, tokens, preds, gts)

        para_res = {vid: [_letters_only(". ".join(p["sentence"] for p in
                                                   sorted(predictions[vid], key=lambda p: p["timestamp"][0])))]
                    for vid in videos}
        para_gts = {vid: [_letters_only(gold_all[vid]["paragraph"])] for vid in videos}
        para_cider = _score(cider, para_gts, para_res)[0]
        para_meteor = _score(meteor, para_gts, para_res)[0]

    p_video, r_video = precision.mean(1), recall.mean(1)
    f1_video = np.where(p_video + r_video > 0, 2 * p_video * r_video / np.maximum(p_video + r_video, 1e-12), 0.0)
    exact = {
        "CIDEr": cap_scores["CIDEr"].mean(), "METEOR": cap_scores["METEOR"].mean(), "SODA_c": soda.mean(),
        "Precision": p_video.mean(), "Recall": r_video.mean(), "F1": f1_video.mean(),
        "Para_CIDEr": para_cider, "Para_METEOR": para_meteor,
        **{f"Precision@{t}": precision[:, k].mean() for k, t in enumerate(thresholds)},
        **{f"Recall@{t}": recall[:, k].mean() for k, t in enumerate(thresholds)},
    }
    result = {k: round(100 * float(v), 1) for k, v in exact.items()}
    result["n_preds"] = float(np.mean([len(predictions[v]) for v in videos]))
    result["unrounded"] = {k: 100 * float(v) for k, v in exact.items()}
    result["counts"] = counts
    result["first_caption"] = first_caption
    if records:
        result["duplicates"] = duplicate_stats(records)
    return result


@contextmanager
def _quiet_java_stderr():
    """The PTB tokenizer's Java process prints a progress line on the inherited stderr; send it to /dev/null."""
    import os
    import sys

    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def tokenize_all(tokenizer, texts) -> dict[str, str]:
    """{text: PTB tokens} for every text, in one Java call."""
    texts = sorted(texts)
    if not texts:
        return {}
    with _quiet_java_stderr():
        out = tokenizer.tokenize({str(k): [{"caption": _remove_nonascii(t)}] for k, t in enumerate(texts)})
    return {t: out[str(k)][0] for k, t in enumerate(texts)}


def _soda_c(meteor, tokens: dict[str, str], preds: list[dict], gts: dict) -> float:
    """SODA_c of one video: METEOR(hypothesis = gold caption, reference = tokenized prediction) x tIoU,
    best ordered assignment, F-measure of (best / #preds, best / #gold). Argument order as in Vid2Seq."""
    if not preds or not gts["timestamps"]:
        return 0.0
    order = np.argsort([s[0] for s in gts["timestamps"]], kind="stable")
    gold_spans = [gts["timestamps"][k] for k in order]
    gold_text = [_remove_nonascii(gts["sentences"][k]) for k in order]
    pairs = [(i, j) for i in range(len(gold_spans)) for j in range(len(preds))]
    _, per_pair = meteor.compute_score({str(k): [tokens[preds[j]["sentence"]]] for k, (_, j) in enumerate(pairs)},
                                       {str(k): [gold_text[i]] for k, (i, _) in enumerate(pairs)})
    scores = np.zeros((len(gold_spans), len(preds)))
    for (i, j), s in zip(pairs, per_pair, strict=True):
        scores[i, j] = s * tiou(preds[j]["timestamp"], gold_spans[i])
    best = soda_assignment(scores)
    p, r = best / len(preds), best / len(gold_spans)
    return 2 * p * r / (p + r) if p + r > 0 else 0.0
