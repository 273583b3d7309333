"""Figures shared by the notebooks and the reports (matplotlib, no display side effects: each returns a Figure)."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

INFORMATIVE, RELEVANCE, GOLD = "#1f77b4", "#d62728", "#2ca02c"


def score_timeline(record: dict, gold_spans: Sequence[Sequence[float]] = (), threshold: float | None = None,
                   title: str | None = None, ax=None) -> Figure:
    """Informative and relevance probability per frame of a prediction record, gold spans shaded, replies as
    markers on the time axis, the policy threshold as a dashed line."""
    if ax is None:
        fig, ax = plt.subplots(figsize=(9, 2.6))
    else:
        fig = ax.figure
    debug = record.get("debug_data", [])
    times = [d.get("time", d.get("video_time")) for d in debug]
    for span in gold_spans:
        ax.axvspan(span[0], span[1], color=GOLD, alpha=0.15, lw=0)
    ax.plot(times, [_positive(d["informative_score"]) for d in debug], color=INFORMATIVE, label="informative")
    ax.plot(times, [_positive(d["relevance_score"]) for d in debug], color=RELEVANCE, label="relevance")
    if threshold is not None and threshold <= 1:
        ax.axhline(threshold, color="grey", ls="--", lw=1, label=f"threshold {threshold:g}")
    replies = [t["time"] for t in record.get("model_response_list", []) if t.get("role") == "assistant"]
    if replies:
        ax.plot(replies, [1.03] * len(replies), "v", color="black", ms=5, label="reply", clip_on=False)
    if gold_spans:
        ax.plot([], [], color=GOLD, alpha=0.4, lw=8, label="gold span")
    ax.set(xlabel="video time (s)", ylabel="probability", ylim=(0, 1.08), title=title or str(record.get("question_id")))
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    fig.tight_layout()
    return fig


def _positive(value) -> float:
    return float(value[1] if isinstance(value, list | tuple) else value)


def sweep_heatmap(sweep: Sequence[dict], metric: str = "R@0.5", title: str | None = None) -> Figure:
    """Grounding sweep rows ({smooth_window_size, threshold, scores}) as a window x threshold heat map."""
    windows = sorted({r["smooth_window_size"] for r in sweep})
    thresholds = sorted({r["threshold"] for r in sweep})
    grid = np.full((len(windows), len(thresholds)), np.nan)
    for r in sweep:
        grid[windows.index(r["smooth_window_size"]), thresholds.index(r["threshold"])] = r["scores"][metric]
    fig, ax = plt.subplots(figsize=(9, 3.6))
    image = ax.imshow(grid, aspect="auto", origin="lower", cmap="viridis")
    ax.set_xticks(range(len(thresholds))[::2], [f"{t:.2f}" for t in thresholds][::2])
    ax.set_yticks(range(len(windows)), windows)
    ax.set(xlabel="relevance threshold", ylabel="smoothing window w", title=title or f"{metric} over the sweep")
    fig.colorbar(image, ax=ax, label=f"{metric} (%)")
    fig.tight_layout()
    return fig


def window_curve(rows: Sequence[tuple[int, float]], metric: str, paper: Sequence[tuple[int, float]] = (),
                 title: str | None = None) -> Figure:
    """A metric against the smoothing window, ours beside the paper's reported points."""
    fig, ax = plt.subplots(figsize=(5.5, 3.2))
    ax.plot([w for w, _ in rows], [v for _, v in rows], "o-", label="this run")
    if paper:
        ax.plot([w for w, _ in paper], [v for _, v in paper], "s--", color="grey", label="paper (7B)")
    ax.set(xlabel="smoothing window w", ylabel=f"{metric} (%)", title=title or metric)
    ax.legend(frameon=False)
    fig.tight_layout()
    return fig


def caption_timeline(record: dict, gold: Sequence[dict], title: str | None = None) -> Figure:
    """Gold segments (bars, with their captions) above the model's replies (markers, with their text)."""
    replies = [t for t in record.get("model_response_list", []) if t.get("role") == "assistant"]
    fig, ax = plt.subplots(figsize=(10, 1.2 + 0.32 * (len(gold) + min(len(replies), 12))))
    for i, g in enumerate(gold):
        s, e = g["time"]
        ax.barh(i, e - s, left=s, color=GOLD, alpha=0.35)
        ax.text(s, i, " " + g["content"], va="center", fontsize=8)
    shown = replies[:12]
    for j, r in enumerate(shown):
        y = len(gold) + j
        ax.plot([r["time"]], [y], "v", color=INFORMATIVE)
        ax.text(r["time"], y, "  " + r["content"], va="center", fontsize=8, color=INFORMATIVE)
    ax.set_yticks([])
    ax.invert_yaxis()
    ax.set(xlabel="video time (s)", title=title or f"{record.get('question_id')}: gold (green) and replies (blue)")
    fig.tight_layout()
    return fig


def saliency_bars(pred: Sequence[float], gold_rows: dict, title: str | None = None) -> Figure:
    """Predicted 2 s clip saliency beside the annotators' mean score per clip (QVHighlights)."""
    n = int(gold_rows["duration"] // 2)
    gold = np.zeros(n)
    for clip, scores in zip(gold_rows["relevant_clip_ids"], gold_rows["saliency_scores"], strict=True):
        if clip < n:
            gold[clip] = float(np.mean(scores))
    pred = np.asarray(pred[:n], dtype=float)
    fig, ax = plt.subplots(figsize=(9, 2.6))
    ax.bar(np.arange(n) * 2, gold, width=1.8, align="edge", color=GOLD, alpha=0.4, label="annotators (mean, 0-4)")
    ax2 = ax.twinx()
    ax2.plot(np.arange(len(pred)) * 2 + 1, pred, "o-", color=RELEVANCE, ms=3, label="predicted saliency")
    ax.set(xlabel="video time (s)", ylabel="gold score", title=title or str(gold_rows.get("qid")))
    ax2.set_ylabel("predicted")
    fig.legend(loc="upper right", fontsize=8, frameon=False)
    fig.tight_layout()
    return fig
