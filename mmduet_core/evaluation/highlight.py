"""Highlight detection (QVHighlights) as upstream computes it (spec §6.3): per-frame relevance -> moving
average (no normalisation) -> 2-second clip saliency = sum over the clip's frames -> moment_detr's highlight
metrics (HL-min-{Fair,Good,VeryGood} mAP and HIT@1, computed as its `standalone_eval` does)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from sklearn.metrics import precision_recall_curve

from ..data.benchmarks import read_records
from .grounding import smooth
from .records import PredictionError, frame_scores, match_ids, read_jsonl

CLIP_SECONDS = 2
MIN_SCORES = {"Fair": 2, "Good": 3, "VeryGood": 4}
PAPER_WINDOW = 2


def clip_saliency(scores: np.ndarray, frame_interval: float, window: int = 0) -> np.ndarray:
    """Frame scores -> 2 s clip scores: smooth, then sum each run of int(2 / interval) frames."""
    smoothed = smooth(scores[None, :], np.array([len(scores)]), window)[0]
    per_clip = max(int(CLIP_SECONDS / frame_interval), 1)
    n_clips = math.ceil(len(smoothed) / per_clip)
    padded = np.zeros(n_clips * per_clip)
    padded[: len(smoothed)] = smoothed
    return padded.reshape(n_clips, per_clip).sum(1)


def gt_clip_scores(gold: dict) -> np.ndarray:
    """(int(duration / 2), 3) annotator scores, zero outside the relevant clips (moment_detr's layout)."""
    scores = np.zeros((int(gold["duration"] / CLIP_SECONDS), 3))
    ids, values = gold.get("relevant_clip_ids") or [], gold.get("saliency_scores") or []
    if not ids or len(ids) != len(values) or max(ids) >= len(scores):
        raise ValueError(f"gold qid {gold.get('qid')!r}: needs relevant_clip_ids inside its {gold['duration']} s "
                         f"and one score row per id (got {len(ids)} ids, {len(values)} score rows)")
    scores[np.asarray(ids, dtype=int)] = np.asarray(values, dtype=float)
    return scores


def average_precision(y_true: np.ndarray, y_score: np.ndarray) -> float:
    """moment_detr's get_ap: all-zero truth 0, all-one 1; else interpolated precision (running max over
    sklearn's curve) averaged at the points where the (float32) recall changes."""
    if len(set(y_true.tolist())) == 1:
        return 0.0 if y_true[0] == 0 else 1.0
    precision, recall, _ = precision_recall_curve(y_true, y_score)
    recall = recall.astype(np.float32)
    precision = np.maximum.accumulate(precision)
    return float(np.mean(precision[np.where(np.diff(recall))]))


def highlight_metrics(pred_saliency: dict, gold: dict) -> dict[str, float]:
    """moment_detr highlight metrics over the qids of `pred_saliency` (all must be in `gold`)."""
    out = {}
    gt_full = {q: gt_clip_scores(gold[q]) for q in pred_saliency}
    for name, minimum in MIN_SCORES.items():
        hits, aps = [], []
        for q, pred in pred_saliency.items():
            binary = (gt_full[q] >= minimum).astype(float)  # (clips, 3)
            top = int(np.argmax(pred))
            hits.append(binary[top] if top < len(binary) else np.zeros(3))
            pred = np.asarray(pred, dtype=float)
            fitted = np.zeros(len(binary))
            fitted[: min(len(pred), len(binary))] = pred[: len(binary)]
            aps.append([average_precision(binary[:, a], fitted) for a in range(3)])
        out[f"HL-min-{name}-mAP"] = float(f"{100 * np.mean(aps):.2f}")
        out[f"HL-min-{name}-Hit1"] = float(f"{100 * np.mean(np.max(np.asarray(hits), 1)):.2f}")
    return out


def load_highlight_gold(path: str | Path) -> dict:
    """{qid: gold row} from the QVHighlights jsonl (or an MMDuet-format file carrying the same fields)."""
    out = {}
    for row in read_records(path):
        qid = row.get("qid", row.get("question_id"))
        out[qid] = row
    return out


def load_predictions(path: str | Path, key: str = "relevance_score") -> tuple[dict, dict]:
    """Inference records -> {qid: (frame times, scores)}; moment_detr submissions -> {qid: clip saliency}."""
    series, submitted = {}, {}
    for record in read_jsonl(path):
        if "pred_saliency_scores" in record:
            submitted[record["qid"]] = np.asarray(record["pred_saliency_scores"], dtype=float)
        elif "question_id" in record:
            series[record["question_id"]] = frame_scores(record, key, str(path))
        else:
            raise PredictionError(f"{path}: a line with neither qid/pred_saliency_scores nor question_id")
    return series, submitted


def saliency_at(series: dict, submitted: dict, window: int) -> dict:
    """Clip saliency of every query at smoothing `window` (submissions are used as they are)."""
    out = dict(submitted)
    for qid, (times, scores) in series.items():
        interval = float(times[1] - times[0]) if len(times) > 1 else 1.0
        out[qid] = clip_saliency(scores, interval, window)
    return out


def evaluate_highlight(pred: str | Path, gold: str | Path, window: int = PAPER_WINDOW, sweep: bool = False) -> dict:
    """The six moment_detr keys (percent) at `window`; with `sweep`, the same for windows 0-14."""
    gold_rows = load_highlight_gold(gold)
    series, submitted = load_predictions(pred)
    saliency = saliency_at(series, submitted, window)
    qids, counts = match_ids(saliency, gold_rows, f"{pred} vs {gold}")
    result = highlight_metrics({q: saliency[q] for q in qids}, gold_rows)
    result.update({"window": window, "counts": counts})
    if sweep:
        result["sweep"] = []
        for w in range(15):
            s = saliency_at(series, submitted, w)
            result["sweep"].append({"smooth_window_size": w,
                                    "results": highlight_metrics({q: s[q] for q in qids}, gold_rows)})
    return result
