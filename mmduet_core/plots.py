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
