"""Highlight detection (QVHighlights) as upstream computes it (spec §6.3): per-frame relevance -> moving
average (no normalisation) -> 2-second clip saliency = sum over the clip's frames -> moment_detr's highlight
metrics (HL-min-{Fair,Good,VeryGood} mAP and HIT@1, computed as its `standalone_eval` does)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from sklearn.metrics import precision_recall_curve

from .grounding import smooth
from .records import (
    Coverage,
    DataError,
    PredictionError,
    frame_scores,
    match_ids,
    number,
    read_gold,
    read_jsonl,
    result_shape,
)

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
    scores[np.asarray(gold["relevant_clip_ids"], dtype=int)] = np.asarray(gold["saliency_scores"], dtype=float)
    return scores


def _check_gold_row(path, k: int, row: dict) -> None:
    """Fields moment_detr reads: duration, relevant clip ids inside it, three annotator scores per clip."""
    where = f"{path} record {k} (qid {row.get('qid', row.get('question_id'))!r})"
    if "relevant_clip_ids" not in row or "saliency_scores" not in row:
        hint = " (this is grounding gold: use `evaluate grounding`)" if "timestamps" in row else ""
        raise DataError(f"{where}: no 'relevant_clip_ids' / 'saliency_scores', the highlight gold fields{hint}")
    duration = number(row.get("duration"), f"{where}: duration", DataError, minimum=0)
    ids, values = row["relevant_clip_ids"], row["saliency_scores"]
    if not isinstance(ids, list) or not ids or not isinstance(values, list) or len(ids) != len(values):
        raise DataError(f"{where}: relevant_clip_ids and saliency_scores must be non-empty lists of equal length")
    for j, (clip, triple) in enumerate(zip(ids, values, strict=True)):
        if isinstance(clip, bool) or not isinstance(clip, int) or not 0 <= clip < int(duration / CLIP_SECONDS):
            raise DataError(f"{where}: relevant_clip_ids[{j}] = {clip!r} is not a clip of its {duration:g} s")
        if not isinstance(triple, list) or len(triple) != 3:
            raise DataError(f"{where}: saliency_scores[{j}] is {triple!r}, not 3 annotator scores")
        for a, v in enumerate(triple):
            number(v, f"{where}: saliency_scores[{j}][{a}]", DataError, minimum=0)


def average_precision(y_true: np.ndarray, y_score: np.ndarray) -> float:
    """moment_detr's get_ap: all-zero truth 0, all-one 1; else interpolated precision (running max over
    sklearn's curve) averaged at the points where the (float32) recall changes."""
    if len(set(y_true.tolist())) == 1:
        return 0.0 if y_true[0] == 0 else 1.0
    precision, recall, _ = precision_recall_curve(y_true, y_score)
    recall = recall.astype(np.float32)
    precision = np.maximum.accumulate(precision)
    return float(np.mean(precision[np.where(np.diff(recall))]))


def highlight_metrics(pred_saliency: dict, gold: dict, qids: list | None = None) -> dict[str, float]:
    """moment_detr highlight metrics (percent, full precision) over `qids` (default: those of `pred_saliency`);
    a qid without a prediction scores 0 (no hit, AP 0)."""
    qids = list(pred_saliency) if qids is None else qids
    out = {}
    gt_full = {q: gt_clip_scores(gold[q]) for q in qids}
    for name, minimum in MIN_SCORES.items():
        hits, aps = [], []
        for q in qids:
            if q not in pred_saliency:
                hits.append(np.zeros(3))
                aps.append([0.0, 0.0, 0.0])
                continue
            binary = (gt_full[q] >= minimum).astype(float)  # (clips, 3)
            pred = np.asarray(pred_saliency[q], dtype=float)
            top = int(np.argmax(pred))
            hits.append(binary[top] if top < len(binary) else np.zeros(3))
            fitted = np.zeros(len(binary))
            fitted[: min(len(pred), len(binary))] = pred[: len(binary)]
            aps.append([average_precision(binary[:, a], fitted) for a in range(3)])
        out[f"HL-min-{name}-mAP"] = 100 * float(np.mean(aps))
        out[f"HL-min-{name}-Hit1"] = 100 * float(np.mean(np.max(np.asarray(hits), 1)))
    return out


def load_highlight_gold(path: str | Path) -> dict:
    """{qid: gold row} from the QVHighlights jsonl (or an MMDuet-format file carrying the same fields)."""
    out = {}
    for k, row in enumerate(read_gold(path)):
        if not isinstance(row, dict):
            raise DataError(f"{path} record {k}: expected an object, got {type(row).__name__}")
        _check_gold_row(path, k, row)
        qid = row.get("qid", row.get("question_id"))
        if qid in out:
            raise DataError(f"{path} qid {qid!r}: appears twice (records must be unique)")
        out[qid] = row
    return out


def _submission(path, k: int, record: dict) -> np.ndarray:
    where = f"{path} qid {record.get('qid')!r}"
    values = record["pred_saliency_scores"]
    if not isinstance(values, list) or not values:
        raise PredictionError(f"{where}: pred_saliency_scores is {values!r}, not a non-empty list")
    return np.asarray([number(v, f"{where}: pred_saliency_scores[{j}]") for j, v in enumerate(values)])


def load_predictions(path: str | Path, key: str = "relevance_score") -> tuple[dict, dict]:
    """Inference records -> {qid: (frame times, scores)}; moment_detr submissions -> {qid: clip saliency}."""
    series, submitted = {}, {}
    for k, record in enumerate(read_jsonl(path)):
        if not isinstance(record, dict):
            raise PredictionError(f"{path} record {k}: expected an object, got {type(record).__name__}")
        if "pred_saliency_scores" in record:
            qid, value = record.get("qid"), _submission(path, k, record)
        elif "question_id" in record:
            qid, value = record["question_id"], None
        else:
            raise PredictionError(f"{path} record {k}: neither qid + pred_saliency_scores nor question_id")
        if qid in series or qid in submitted:
            raise PredictionError(f"{path} qid {qid!r}: appears twice (records must be unique)")
        if value is None:
            series[qid] = frame_scores(record, key, str(path))
        else:
            submitted[qid] = value
    return series, submitted


def saliency_at(series: dict, submitted: dict, window: int) -> dict:
    """Clip saliency of every query at smoothing `window` (submissions are used as they are)."""
    out = dict(submitted)
    for qid, (times, scores) in series.items():
        interval = float(times[1] - times[0]) if len(times) > 1 else 1.0  # > 0: frame_scores checks times increase
        out[qid] = clip_saliency(scores, interval, window)
    return out


def evaluate_highlight(pred: str | Path, gold: str | Path, window: int = PAPER_WINDOW, sweep: bool = False,
                       coverage: Coverage = "gold") -> dict:
    """The six moment_detr keys (percent; 2 decimals as moment_detr rounds them, full under `unrounded`) at
    `window`; with `sweep`, the same for windows 0-14. coverage "gold": a query without a prediction scores 0."""
    gold_rows = load_highlight_gold(gold)
    series, submitted = load_predictions(pred)
    saliency = saliency_at(series, submitted, window)
    qids, counts = match_ids(saliency, gold_rows, f"{pred} vs {gold}", coverage)
    result = result_shape(highlight_metrics(saliency, gold_rows, qids), 2, coverage, counts, window=window)
    if sweep:
        # rounded as in upstream's output file (moment_detr rounds its results)
        result["sweep"] = [{"smooth_window_size": w, "results": {
            k: round(v, 2) for k, v in highlight_metrics(saliency_at(series, submitted, w), gold_rows, qids).items()}}
            for w in range(15)]
    return result
