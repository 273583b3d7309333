"""Temporal grounding (Charades-STA) as upstream computes it (spec §6.2), vectorised over queries.

Per query: per-frame relevance -> centred moving average over [i - w, i + w] -> min-max normalisation (a
constant series has no positive frame) -> frames with score >= threshold -> IoU of that frame set with the
frames inside the gold spans. mIoU and R@{0.3, 0.5, 0.7} are percentages over queries.

Upstream reports every window 0-14 and threshold 0.30-0.70 and a per-video "best among all thresholds" row:
that row picks the threshold after seeing the gold, so it is labelled as an oracle here. `heldout_selection`
chooses window and threshold on one half of the queries and reports the other half; `span_iou` scores the
longest positive run as an ordinary span, the usual grounding metric.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .records import (
    Coverage,
    DataError,
    PredictionError,
    frame_scores,
    match_ids,
    read_gold,
    read_jsonl,
    result_shape,
    span,
    spans,
    unique_by,
)

WINDOWS = tuple(range(15))
THRESHOLDS = tuple(np.round(np.arange(0.30, 0.7001, 0.02), 2).tolist())
RECALL_AT = (0.3, 0.5, 0.7)
PAPER_WINDOW = 6  # the window behind the paper's Charades row


# ---- inputs -------------------------------------------------------------------------------------------------

def _gold_spans(path, k: int, record: dict, out: dict) -> None:
    qid = record.get("question_id")
    where = f"{path} record {k} (question_id {qid!r})"
    if "timestamps" not in record:
        hint = (" (this is highlight gold: use `evaluate highlight`)" if "relevant_clip_ids" in record else
                " (this is dense-captioning or MAGQA gold)" if "answer" in record else "")
        raise DataError(f"{where}: no 'timestamps', the grounding gold field{hint}")
    if "sentences" in record:  # raw Charades-STA: one query per sentence, ids as `mmduet convert` makes them
        for j, one in enumerate(record["timestamps"]):
            out[f"{qid}_{j}"] = [span(one, f"{where}: timestamps[{j}]")]
    else:
        if qid in out:
            raise DataError(f"{path} question_id {qid!r}: appears twice (records must be unique)")
        out[qid] = spans(record["timestamps"], f"{where}: timestamps")


def load_grounding_gold(path: str | Path) -> dict[str, list[list[float]]]:
    """{question_id: gold spans} from an MMDuet test file or a raw Charades-STA {video: {timestamps, sentences}}."""
    gold: dict = {}
    for k, record in enumerate(read_gold(path)):
        if not isinstance(record, dict):
            raise DataError(f"{path} record {k}: expected an object, got {type(record).__name__}")
        _gold_spans(path, k, record, gold)
    return gold


def load_score_series(path: str | Path, key: str = "relevance_score") -> dict:
    """{question_id: (frame times, scores)} from inference records (ids unique)."""
    records = unique_by(read_jsonl(path), lambda r: r.get("question_id"), path, PredictionError)
    return {q: frame_scores(r, key, str(path)) for q, r in records.items()}


# ---- vectorised core ----------------------------------------------------------------------------------------

def pad_series(series: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Ragged 1-D arrays -> (Q, N) float array (NaN padded) and lengths (Q,)."""
    lengths = np.array([len(s) for s in series])
    out = np.full((len(series), max(lengths.max(initial=1), 1)), np.nan)
    for q, s in enumerate(series):
        out[q, : len(s)] = s
    return out, lengths


def smooth(scores: np.ndarray, lengths: np.ndarray, window: int) -> np.ndarray:
    """Centred moving average over [i - w, i + w], clipped to each row's length. (Q, N) -> (Q, N).

    Sums are accumulated left to right from 0.0, as a per-frame Python `sum` does, so the results are
    bit-identical to the straightforward loop (thresholds compare exactly)."""
    if window == 0:
        return scores.copy()
    q, n = scores.shape
    valid = np.arange(n)[None, :] < lengths[:, None]  # (Q, N)
    values = np.where(valid, scores, 0.0)
    total = np.zeros((q, n))
    count = np.zeros((q, n))
    reach = min(window, n - 1)  # offsets beyond the longest series add nothing (and would misalign slices)
    for offset in range(-reach, reach + 1):
        src = slice(max(offset, 0), n + min(offset, 0))  # j = i + offset
        dst = slice(max(-offset, 0), n - max(offset, 0))
        total[:, dst] += values[:, src]
        count[:, dst] += valid[:, src]
    out = total / np.maximum(count, 1)
    out[~valid] = np.nan
    return out


def minmax(scores: np.ndarray) -> np.ndarray:
    """Per-row (x - min) / (max - min); a constant row becomes NaN (no positive frame), as upstream."""
    lo, hi = np.nanmin(scores, 1, keepdims=True), np.nanmax(scores, 1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (scores - lo) / (hi - lo)


def gold_mask(times: np.ndarray, spans: Sequence[Sequence[Sequence[float]]]) -> np.ndarray:
    """(Q, N) frame inside any gold span (inclusive ends); times (Q, N) NaN-padded."""
    mask = np.zeros(times.shape, dtype=bool)
    for q, query_spans in enumerate(spans):
        for s, e in query_spans:
            mask[q] |= (times[q] >= s) & (times[q] <= e)
    return mask


def frame_ious(scores: np.ndarray, lengths: np.ndarray, gold: np.ndarray, windows: Sequence[int] = WINDOWS,
               thresholds: Sequence[float] = THRESHOLDS) -> np.ndarray:
    """Frame-set IoU for every window, threshold and query: (W, T, Q)."""
    thr = np.asarray(thresholds)[None, :, None]  # (1, T, 1)
    out = np.zeros((len(windows), len(thresholds), scores.shape[0]))
    gold_b = gold[:, None, :]  # (Q, 1, N)
    for wi, w in enumerate(windows):
        norm = minmax(smooth(scores, lengths, w))  # (Q, N)
        with np.errstate(invalid="ignore"):
            pred = norm[:, None, :] >= thr  # (Q, T, N); NaN compares False
        inter = (pred & gold_b).sum(-1)
        union = (pred | gold_b).sum(-1)
        out[wi] = np.where(union > 0, inter / np.maximum(union, 1), 0.0).T
    return out


def summarise(ious: np.ndarray) -> dict[str, float]:
    """mIoU and R@x (percent) of IoUs over queries (last axis)."""
    out = {"mIoU": 100 * float(np.mean(ious))}
    for x in RECALL_AT:
        out[f"R@{x}"] = 100 * float(np.mean(ious >= x))
    return out


def frame_iou_loop(times: np.ndarray, scores: np.ndarray, spans, window: int, threshold: float) -> float:
    """The straightforward per-query computation (upstream's loop), kept as the reference for checks."""
    n = len(scores)
    smoothed = [sum(scores[max(0, i - window): min(n, i + window + 1)]) / (min(n, i + window + 1) - max(0, i - window))
                for i in range(n)]
    lo, hi = min(smoothed), max(smoothed)
    pred = set()
    if hi > lo:
        pred = {i for i, v in enumerate(smoothed) if (v - lo) / (hi - lo) >= threshold}
    gold = {i for i, t in enumerate(times) if any(s <= t <= e for s, e in spans)}
    union = pred | gold
    return len(pred & gold) / len(union) if union else 0.0


def longest_run_span(times: np.ndarray, positive: np.ndarray, frame_interval: float) -> tuple[float, float] | None:
    """[start, end) of the longest run of positive frames (the first when tied), or None."""
    best, start, best_span = 0, None, None
    for i, p in enumerate(list(positive) + [False]):
        if p and start is None:
            start = i
        elif not p and start is not None:
            if i - start > best:
                best, best_span = i - start, (float(times[start]), float(times[i - 1]) + frame_interval)
            start = None
    return best_span


def span_iou(a: Sequence[float], b: Sequence[float]) -> float:
    inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    union = max(a[1], b[1]) - min(a[0], b[0])
    return inter / union if union > 0 else 0.0


def split_of(question_id) -> int:
    """A stable 0/1 split of queries (by a hash of the id) for held-out threshold selection."""
    return hashlib.sha1(str(question_id).encode()).digest()[0] % 2


# ---- the evaluation -----------------------------------------------------------------------------------------

def evaluate_grounding(pred: str | Path, gold: str | Path, window: int = PAPER_WINDOW, threshold: float = 0.5,
                       sweep: bool = False, select_by: str = "R@0.5", coverage: Coverage = "gold") -> dict:
    """Frame-set IoU metrics at (window, threshold) (percent; 2 decimals as upstream prints them, full under
    `unrounded`); with `sweep`, every window x threshold, the oracle rows, a held-out selection and the span
    IoU of the longest positive run. coverage "gold": a query without a prediction has IoU 0."""
    series = load_score_series(pred)
    gold_spans = load_grounding_gold(gold)
    qids, counts = match_ids(series, gold_spans, f"{pred} vs {gold}", coverage)
    scored = [q for q in qids if q in series]
    order = scored + [q for q in qids if q not in series]  # the query axis below: missing ones last
    times, lengths = pad_series([series[q][0] for q in scored])
    scores, _ = pad_series([series[q][1] for q in scored])
    gmask = gold_mask(times, [gold_spans[q] for q in scored])

    windows = WINDOWS if sweep else (window,)
    thresholds = THRESHOLDS if sweep else (threshold,)
    if sweep and window not in WINDOWS:
        windows = (*WINDOWS, window)
    if sweep and threshold not in THRESHOLDS:
        thresholds = (*THRESHOLDS, threshold)
    ious = _with_missing(frame_ious(scores, lengths, gmask, windows, thresholds), len(qids))  # (W, T, Q)
    chosen = ious[windows.index(window), thresholds.index(threshold)]
    result = result_shape(summarise(chosen), 2, coverage, counts, window=window, threshold=threshold,
                          metric="frame-set IoU (upstream)")
    if not sweep:
        return result

    result["sweep"] = [{"smooth_window_size": w, "threshold": t, "scores": summarise(ious[wi, ti])}
                       for wi, w in enumerate(windows) for ti, t in enumerate(thresholds)]
    result["oracle"] = [{"smooth_window_size": w, "label": "oracle: best threshold per video, chosen with the gold",
                         "scores": summarise(ious[wi].max(0))} for wi, w in enumerate(windows)]
    result["heldout"] = heldout_selection(ious, [split_of(q) for q in order], windows, thresholds, select_by)
    interval = float(np.nanmedian(np.diff(times, axis=1))) if times.shape[1] > 1 else 0.5
    span_ious = _with_missing(_span_ious(scores, lengths, times, [gold_spans[q] for q in scored], window,
                                         threshold, interval), len(qids))
    result["span_iou"] = {"smooth_window_size": window, "threshold": threshold,
                          "label": "span IoU of the longest positive run", **summarise(span_ious)}
    return result


def _with_missing(ious: np.ndarray, total: int) -> np.ndarray:
    """Append IoU 0 for the queries without a prediction (they come last in the query list)."""
    pad = [(0, 0)] * (ious.ndim - 1) + [(0, total - ious.shape[-1])]
    return np.pad(ious, pad)


def heldout_selection(ious: np.ndarray, splits: Sequence[int], windows, thresholds, select_by: str = "R@0.5") -> dict:
    """Choose (window, threshold) on split 0 by `select_by`, report split 1 (and the reverse)."""
    splits = np.asarray(splits)
    out = {}
    for select, report in ((0, 1), (1, 0)):
        sel, rep = ious[:, :, splits == select], ious[:, :, splits == report]
        if sel.shape[-1] == 0 or rep.shape[-1] == 0:
            continue
        table = np.array([[summarise(sel[wi, ti])[select_by] for ti in range(len(thresholds))]
                          for wi in range(len(windows))])
        wi, ti = np.unravel_index(np.argmax(table), table.shape)
        out[f"select_on_{select}_report_{report}"] = {
            "smooth_window_size": windows[wi], "threshold": thresholds[ti], "selected_by": select_by,
            "queries": int(rep.shape[-1]), "scores": summarise(rep[wi, ti])}
    return out


def _span_ious(scores, lengths, times, spans, window, threshold, interval) -> np.ndarray:
    norm = minmax(smooth(scores, lengths, window))
    ious = []
    for q in range(scores.shape[0]):
        with np.errstate(invalid="ignore"):
            positive = norm[q, : lengths[q]] >= threshold
        run = longest_run_span(times[q, : lengths[q]], positive, interval)
        ious.append(max((span_iou(run, s) for s in spans[q]), default=0.0) if run else 0.0)
    return np.asarray(ious)


def best_per_window(sweep: Sequence[dict], metric: str = "R@0.5") -> list[tuple[int, float]]:
    """[(window, best `metric` over the thresholds at that window)] by window, from the `sweep` rows of
    `evaluate_grounding(..., sweep=True)`. The threshold is picked after seeing the scores of the same queries:
    an upper bound, as the curve upstream's sweep draws."""
    best: dict[int, float] = {}
    for row in sweep:
        w, value = row["smooth_window_size"], row["scores"][metric]
        best[w] = max(best.get(w, value), value)
    return sorted(best.items())
