"""Dense video captioning (YouCook2) as upstream computes it (spec §6.1): replies -> timed captions, then the
Vid2Seq-style metrics: localisation precision / recall / F1 over tIoU 0.3/0.5/0.7/0.9, CIDEr-D and METEOR per
threshold with random-string fillers for unmatched predictions, SODA_c, and paragraph CIDEr / METEOR.

SODA_c by default as the paper computed it: PTB-tokenized captions on both sides, and the original METEOR
wrapper's pairing, which returns per-pair scores in the string order of their keys ("0", "1", "10", ...) and
places them as if in numeric order (scrambled for videos with more than 10 predictions). `soda_pairing="fixed"`
pairs each score with its own prediction; nothing else changes. Inputs: `dvc_data.py`; scorers: `scorers.py`
(one METEOR process per Python process, memoised).
"""

from __future__ import annotations

import random
import re
import string
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np

from ..errors import InputError
from .dvc_data import FirstCaption, captions_from_replies, gold_captions, load_dvc_gold, load_dvc_predictions
from .records import Coverage, duplicate_stats, match_ids, result_shape, sequence_mean
from .scorers import CaptionScorers, shared_scorers

__all__ = ["THRESHOLDS", "FirstCaption", "SodaPairing", "captions_from_replies", "gold_captions", "load_dvc_gold",
           "load_dvc_predictions", "tiou", "tiou_matrix", "localization", "soda_assignment", "paper_order",
           "soda_c", "caption_pairs", "evaluate_dvc"]

THRESHOLDS = (0.3, 0.5, 0.7, 0.9)
SodaPairing = Literal["paper", "fixed"]


# ---- metric pieces ------------------------------------------------------------------------------------------

def tiou(a: Sequence[float], b: Sequence[float]) -> float:
    """Vid2Seq's tIoU: overlap / (min(hull length, len a + len b) + 1e-8)."""
    inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    union = min(max(a[1], b[1]) - min(a[0], b[0]), (a[1] - a[0]) + (b[1] - b[0]))
    return inter / (union + 1e-8)


def tiou_matrix(preds: Sequence[Sequence[float]], gts: Sequence[Sequence[float]]) -> np.ndarray:
    """`tiou` of every (prediction, gold) pair, (P, G); the same floating-point operations, element-wise."""
    p, g = np.asarray(preds, dtype=float).reshape(-1, 2), np.asarray(gts, dtype=float).reshape(-1, 2)
    ps, pe, gs, ge = p[:, :1], p[:, 1:], g[:, 0], g[:, 1]
    inter = np.maximum(0.0, np.minimum(pe, ge) - np.maximum(ps, gs))
    union = np.minimum(np.maximum(pe, ge) - np.minimum(ps, gs), (pe - ps) + (ge - gs))
    return inter / (union + 1e-8)


def localization(preds: Sequence[Sequence[float]], gts: Sequence[Sequence[float]],
                 thresholds: Sequence[float] = THRESHOLDS) -> tuple[list[float], list[float]]:
    """Per-threshold precision and recall of one video (a pair counts when tIoU > t)."""
    ious = tiou_matrix(preds, gts)
    precision = [float((ious > t).any(1).sum()) / max(len(preds), 1) for t in thresholds]
    recall = [float((ious > t).any(0).sum()) / len(gts) if len(gts) else 0.0 for t in thresholds]
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


def paper_order(n: int) -> list[int]:
    """Column j of the paper's SODA matrix holds the METEOR score of prediction paper_order(n)[j]: the
    original wrapper sorts the prediction keys as strings and its caller reads them in numeric order."""
    return sorted(range(n), key=str)


def soda_c(scorers: CaptionScorers, tokens: dict[str, str], preds: list[dict], gold: dict,
           pairing: SodaPairing = "paper") -> float:
    """SODA_c of one video: METEOR(hypothesis = tokenized gold caption, reference = tokenized prediction; the
    Vid2Seq argument order) x tIoU, best ordered assignment, F-measure of (best / #preds, best / #gold)."""
    if not preds or not gold["timestamps"]:
        return 0.0
    pred_text = [tokens[p["sentence"]] for p in preds]
    gold_text = [tokens[g] for g in gold["sentences"]]
    flat = scorers.meteor.pair_scores([(g, p) for g in gold_text for p in pred_text])
    meteor = np.nan_to_num(np.asarray(flat).reshape(len(gold_text), len(pred_text)))
    if pairing == "paper":
        meteor = meteor[:, paper_order(len(preds))]
    ious = tiou_matrix([p["timestamp"] for p in preds], gold["timestamps"]).T
    best = soda_assignment(ious * meteor)
    p, r = best / len(preds), best / len(gold_text)
    return 2 * p * r / (p + r) if p + r > 0 else 0.0


def _letters_only(text: str) -> str:
    return " ".join(re.sub("[^a-zA-Z]", " ", text).strip().lower().split())


def _random_string(rng: random.Random) -> str:
    return "".join(rng.choices(string.ascii_lowercase, k=rng.randint(10, 20)))


def caption_pairs(preds: list[dict], gold: dict, thresholds: Sequence[float],
                  rng: random.Random) -> list[list[tuple[str, str]]]:
    """Per threshold, (prediction, gold caption) for every pair with tIoU >= threshold; an unmatched prediction
    is paired with a random string (score about 0)."""
    ious = tiou_matrix([p["timestamp"] for p in preds], gold["timestamps"])
    out = []
    for t in thresholds:
        pairs = []
        for p, row in zip(preds, ious >= t, strict=True):
            matched = [(p["sentence"], gold["sentences"][g]) for g in np.flatnonzero(row)]
            pairs += matched or [(p["sentence"], _random_string(rng))]
        out.append(pairs)
    return out


def _caption_scores(scorers: CaptionScorers, tokens: dict, pairs: list[tuple[str, str]]) -> tuple[float, float]:
    """(CIDEr, METEOR) of one video's pairs at one threshold; 0 without pairs."""
    if not pairs:
        return 0.0, 0.0
    res = {str(k): [tokens[p]] for k, (p, _) in enumerate(pairs)}
    gts = {str(k): [tokens[g]] for k, (_, g) in enumerate(pairs)}
    meteor = float(np.nan_to_num(scorers.meteor.compute_score(gts, res)[0]))
    return float(np.nan_to_num(scorers.cider_score(gts, res))), meteor


def _video_scores(scorers: CaptionScorers, tokens: dict, preds: list[dict], gold: dict, plan: list,
                  thresholds: Sequence[float], pairing: SodaPairing) -> dict[str, float]:
    """Every per-video number the original averages over videos (fractions, not percent)."""
    captions = [_caption_scores(scorers, tokens, pairs) for pairs in plan]
    precision, recall = localization([p["timestamp"] for p in preds], gold["timestamps"], thresholds)
    p, r = sequence_mean(precision), sequence_mean(recall)
    return {"CIDEr": float(np.mean([c for c, _ in captions])), "METEOR": float(np.mean([m for _, m in captions])),
            "SODA_c": soda_c(scorers, tokens, preds, gold, pairing), "Precision": p, "Recall": r,
            "F1": 2 * r * p / (r + p) if r + p > 0 else 0.0,
            **{f"Precision@{t}": v for t, v in zip(thresholds, precision, strict=True)},
            **{f"Recall@{t}": v for t, v in zip(thresholds, recall, strict=True)}}


def _paragraph_scores(scorers: CaptionScorers, preds: dict, gold: dict) -> dict[str, float]:
    """Corpus CIDEr-D and METEOR of each video's joined predictions vs its gold paragraph, letters only."""
    res = {v: [_letters_only(". ".join(p["sentence"] for p in preds[v]))] for v in preds}
    gts = {v: [_letters_only(gold[v]["paragraph"])] for v in preds}
    return {"Para_CIDEr": float(np.nan_to_num(scorers.cider_score(gts, res))),
            "Para_METEOR": float(np.nan_to_num(scorers.meteor.compute_score(gts, res)[0]))}


def _prefetch_meteor(scorers: CaptionScorers, tokens: dict, preds: dict, gold: dict, plan: dict) -> None:
    """Every METEOR call the evaluation makes, computed in two exchanges with Java (the per-video loops then read
    memoised results): the caption pairs of each video and threshold, SODA's pairs, the paragraphs."""
    calls = [[(tokens[p], [tokens[g]]) for p, g in pairs] for v in plan for pairs in plan[v] if pairs]
    calls.append([(_letters_only(". ".join(p["sentence"] for p in preds[v])), [_letters_only(gold[v]["paragraph"])])
                  for v in preds])
    soda = [(tokens[g], tokens[p["sentence"]]) for v in preds if preds[v] and gold[v]["timestamps"]
            for g in gold[v]["sentences"] for p in preds[v]]
    scorers.meteor.prefetch(calls, soda)


# ---- the evaluation -----------------------------------------------------------------------------------------

def evaluate_dvc(pred: str | Path, gold: str | Path, first_caption: FirstCaption = "drop", seed: int = 0,
                 thresholds: Sequence[float] = THRESHOLDS, soda_pairing: SodaPairing = "paper",
                 coverage: Coverage = "gold", cache_path: str | Path | None = None) -> dict:
    """Upstream's dense-captioning numbers (percent; rounded to 1 decimal as printed, full under `unrounded`).

    coverage "gold": a gold video without a prediction record scores 0 ("predictions": only videos in both;
    upstream evaluates the predicted ids). cache_path: a file memoising tokens and METEOR results across runs.
    """
    if soda_pairing not in ("paper", "fixed"):
        raise InputError(f"soda_pairing {soda_pairing!r}: use 'paper' or 'fixed'")
    predictions, records = load_dvc_predictions(pred, first_caption)
    gold_all = load_dvc_gold(gold)
    videos, counts = match_ids(predictions, gold_all, f"{pred} vs {gold}", coverage)
    preds = {v: predictions.get(v, []) for v in videos}
    rng = random.Random(seed)
    plan = {v: caption_pairs(preds[v], gold_all[v], thresholds, rng) for v in videos}

    scorers = shared_scorers(cache_path)
    texts = {t for v in videos for pairs in plan[v] for pair in pairs for t in pair}
    texts |= {p["sentence"] for v in videos for p in preds[v]} | {s for v in videos for s in gold_all[v]["sentences"]}
    tokens = scorers.tokenize(texts)
    _prefetch_meteor(scorers, tokens, preds, gold_all, plan)
    per_video = [_video_scores(scorers, tokens, preds[v], gold_all[v], plan[v], thresholds, soda_pairing)
                 for v in videos]
    exact = {k: sequence_mean([scores[k] for scores in per_video]) * 100 for k in per_video[0]}
    exact.update({k: v * 100 for k, v in _paragraph_scores(scorers, preds, gold_all).items()})
    exact["n_preds"] = sequence_mean([len(preds[v]) for v in videos])
    scorers.cache.flush()
    extra = {"first_caption": first_caption, "soda_pairing": soda_pairing}
    if records:
        extra["duplicates"] = duplicate_stats(records)
    return result_shape(exact, 1, coverage, counts, **extra)
