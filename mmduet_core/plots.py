"""Figures shared by the notebooks and the reports (matplotlib, no display side effects: each returns a Figure,
built without pyplot except `speed_bars`; show one with `IPython.display.display(fig)`)."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from .evaluation.records import steps_from_record
from .stream import DuetSettings, StepRecord, policy_trace

INFORMATIVE, RELEVANCE, GOLD = "#1f77b4", "#d62728", "#2ca02c"


def score_timeline(steps: Sequence[StepRecord] | dict, settings: DuetSettings | None = None,
                   gold_spans: Sequence[Sequence[float]] = (), duration: float | None = None,
                   title: str | None = None, size: tuple[float, float] = (9, 2.8)) -> Figure:
    """Both heads' positive probability per frame, a marker at every reply, gold spans shaded, and with
    `settings` what the reply rule compared: the threshold (sum mode: the running sum against it; z mode: the
    moving bar; several heads: their summed score). `steps`: a session's steps or a prediction record.
    Built without pyplot, so any thread may draw it."""
    if isinstance(steps, dict):
        title = title or str(steps.get("question_id"))
        steps = steps_from_record(steps)
    fig = Figure(figsize=size, dpi=100)
    ax = fig.add_subplot()
    times = [s.time for s in steps]
    for span in gold_spans:
        ax.axvspan(span[0], span[1], color=GOLD, alpha=0.15, lw=0)
    if gold_spans:
        ax.plot([], [], color=GOLD, alpha=0.4, lw=8, label="gold span")
    ax.plot(times, [s.informative for s in steps], color=INFORMATIVE, lw=1.6, label="informative")
    ax.plot(times, [s.relevance for s in steps], color=RELEVANCE, lw=1.6, label="relevance")
    top = 1.0
    if settings is not None and settings.can_reply:
        top = _reply_rule(ax, settings, steps, times)
    replied = [s.time for s in steps if s.reply is not None]
    if replied:
        ax.plot(replied, [top * 1.06] * len(replied), "v", color="black", ms=6, label="reply", clip_on=False)
    ax.set_xlim(0, max(duration or 0.0, times[-1] if times else 0.0, 1.0))
    ax.set_ylim(0, top * 1.12)
    ax.set(xlabel="video time (s)", ylabel="score", title=title)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    ax.grid(alpha=0.25)
    fig.tight_layout()
    return fig


def _reply_rule(ax, settings: DuetSettings, steps: Sequence[StepRecord], times: list[float]) -> float:
    """Draw what the reply rule compared at each frame; returns the plot's top."""
    trace = policy_trace(settings, [(s.informative, s.relevance) for s in steps])
    top = 1.0
    if settings.mode == "sum" or len(settings.score_heads) > 1:
        name = "running sum" if settings.mode == "sum" else "summed score"
        ax.plot(times, [p.level for p in trace], color="#555555", lw=1, ls=":", label=name)
        top = max([top, settings.reply_threshold] + [p.level for p in trace])
    if settings.mode == "z":
        ax.plot(times, [p.threshold for p in trace], color="grey", ls="--", lw=1,
                label=f"mean + {settings.reply_threshold:g} sd")
    else:
        ax.axhline(settings.reply_threshold, color="grey", ls="--", lw=1, label=f"threshold {settings.reply_threshold:g}")
    return top


def grounding_timeline(record: dict, gold_spans: Sequence[Sequence[float]], window: int, threshold: float,
                       title: str | None = None, size: tuple[float, float] = (9, 3.2)) -> Figure:
    """What the grounding evaluator does with one prediction record, drawn: the raw relevance score per frame, the
    score it thresholds (centred moving average over [i - w, i + w], then min-max normalised: the evaluator's own
    `smooth` and `minmax`), the threshold, the frames above it and their longest run (the predicted span), and the
    gold span. The title gives the frame-set IoU the evaluator counts. The informative score plays no part."""
    from .evaluation.grounding import frame_iou_loop, longest_run_span, minmax, smooth
    from .evaluation.records import frame_scores

    times, raw = frame_scores(record, "relevance_score")
    normalised = minmax(smooth(raw[None, :], np.array([len(raw)]), window))[0]  # (N,), NaN when constant
    with np.errstate(invalid="ignore"):
        positive = normalised >= threshold
    interval = float(np.median(np.diff(times))) if len(times) > 1 else 0.5
    run = longest_run_span(times, positive, interval)
    iou = frame_iou_loop(times, raw, gold_spans, window, threshold)
    fig = Figure(figsize=size, dpi=100)
    ax = fig.add_subplot()
    for span in gold_spans:
        ax.axvspan(span[0], span[1], color=GOLD, alpha=0.18, lw=0)
    ax.plot([], [], color=GOLD, alpha=0.4, lw=8, label="gold span")
    ax.plot(times, raw, color=RELEVANCE, lw=1, alpha=0.45, label="relevance (raw)")
    ax.plot(times, normalised, color=RELEVANCE, lw=2, label=f"smoothed (w={window}), min-max normalised")
    ax.axhline(threshold, color="grey", ls="--", lw=1, label=f"threshold {threshold:g}")
    if positive.any():
        ax.plot(times[positive], np.full(int(positive.sum()), -0.07), "|", color="black", ms=9,
                label="predicted frames (>= threshold)", clip_on=False)
    if run:
        ax.plot(run, [1.1, 1.1], color="black", lw=4, solid_capstyle="butt", label="predicted span (longest run)",
                clip_on=False)
    if not np.isfinite(normalised).any():
        ax.text(0.5, 0.5, "constant score: no frame predicted", transform=ax.transAxes, ha="center")
    ax.set_xlim(0, max(float(times[-1]) + interval, float(max((e for _, e in gold_spans), default=0.0))))
    ax.set_ylim(-0.12, 1.18)
    name = title or str(record.get("question_id"))
    ax.set(xlabel="video time (s)", ylabel="score", title=f"{name}\nframe-set IoU {iou:.2f}")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    ax.grid(alpha=0.25)
    fig.tight_layout()
    return fig


def frame_strip(clip, count: int = 10, title: str | None = None, height: float = 1.7) -> Figure:
    """`count` frames spread evenly over a clip (`video.Clip`: frames (T, 3, R, R) uint8 and their times), each
    with its time: the video as the model sees it (resized and padded)."""
    frames = np.asarray(clip.frames)
    times = clip.times
    picks = sorted(set(np.linspace(0, len(frames) - 1, min(count, len(frames))).round().astype(int).tolist()))
    fig = Figure(figsize=(min(1.25 * len(picks) + 0.3, 16), height + (0.3 if title else 0)), dpi=100)
    axes = np.atleast_1d(fig.subplots(1, len(picks)))
    for ax, k in zip(axes, picks, strict=True):
        ax.imshow(frames[k].transpose(1, 2, 0))
        ax.set_title(f"{times[k]:.1f} s", fontsize=8)
        ax.set_axis_off()
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def sweep_heatmap(sweep: Sequence[dict], metric: str = "R@0.5", title: str | None = None) -> Figure:
    """Grounding sweep rows ({smooth_window_size, threshold, scores}) as a window x threshold heat map."""
    windows = sorted({r["smooth_window_size"] for r in sweep})
    thresholds = sorted({r["threshold"] for r in sweep})
    grid = np.full((len(windows), len(thresholds)), np.nan)
    for r in sweep:
        grid[windows.index(r["smooth_window_size"]), thresholds.index(r["threshold"])] = r["scores"][metric]
    fig = Figure(figsize=(9, 3.6), dpi=100)
    ax = fig.add_subplot()
    image = ax.imshow(grid, aspect="auto", origin="lower", cmap="viridis")
    ax.set_xticks(range(len(thresholds))[::2], [f"{t:.2f}" for t in thresholds][::2])
    ax.set_yticks(range(len(windows)), windows)
    ax.set(xlabel="relevance threshold", ylabel="smoothing window w", title=title or f"{metric} over the sweep")
    fig.colorbar(image, ax=ax, label=f"{metric} (%)")
    fig.tight_layout()
    return fig


def window_curve(rows: Sequence[tuple[int, float]], metric: str, run_label: str, paper=None,
                 note: str | None = None, title: str | None = None) -> Figure:
    """A metric against the smoothing window w for one run (a line: every w was measured), labelled `run_label`.

    paper: the paper's stated values (`reports.paper.PaperPoints`: `.points`, `.table_point`, `.source`), drawn
    as markers only, since the paper states no value between them; pass it only for a run on the same benchmark.
    note: a sentence written under the plot, in the figure (e.g. why the paper's values are not drawn)."""
    fig = Figure(figsize=(8, 4.2), dpi=100)
    ax = fig.add_subplot()
    ax.plot([w for w, _ in rows], [v for _, v in rows], "o-", color=INFORMATIVE, ms=4, label=run_label)
    footer = []
    if paper is not None:
        ax.plot([w for w, _ in paper.points], [v for _, v in paper.points], "s", color="black", ms=6, ls="none",
                label="paper, 7B: values it states (approximate)")
        if paper.table_point:
            ax.plot(*paper.table_point, "*", color=RELEVANCE, ms=12, ls="none",
                    label=f"paper, 7B: Table 1 (w={paper.table_point[0]})")
        footer.append(f"Paper values: {paper.source}; nothing is drawn between them.")
    if note:
        footer.append(note)
    ax.set(xlabel="smoothing window w", ylabel=f"{metric} (%)", title=title or metric)
    ax.set_xticks(range(0, 15))
    ax.grid(alpha=0.25)
    ax.legend(loc="best", fontsize=8, framealpha=0.9)
    text = "\n".join(textwrap.fill(line, 120) for line in footer)
    if text:
        fig.text(0.01, 0.01, text, fontsize=8, va="bottom",
                 bbox={"boxstyle": "round", "facecolor": "#fff4d6" if note else "#f2f2f2", "edgecolor": "#bbbbbb"})
    fig.tight_layout(rect=(0, 0.045 * (text.count("\n") + 1) + 0.02 if text else 0, 1, 1))
    return fig


def caption_timeline(record: dict, gold: Sequence[dict], title: str | None = None) -> Figure:
    """Gold segments (bars, with their captions) above the model's replies (markers, with their text)."""
    replies = [t for t in record.get("model_response_list", []) if t.get("role") == "assistant"]
    fig = Figure(figsize=(10, 1.2 + 0.32 * (len(gold) + min(len(replies), 12))), dpi=100)
    ax = fig.add_subplot()
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
    more = f" (first 12 of {len(replies)} replies)" if len(replies) > 12 else ""
    ax.set(xlabel="video time (s)",
           title=(title or str(record.get("question_id"))) + f": gold (green) and replies (blue){more}")
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
    fig = Figure(figsize=(10, 2.6), dpi=100)
    ax = fig.add_subplot()
    ax.bar(np.arange(n) * 2, gold, width=1.8, align="edge", color=GOLD, alpha=0.4, label="annotators (mean, 0-4)")
    ax2 = ax.twinx()
    ax2.plot(np.arange(len(pred)) * 2 + 1, pred, "o-", color=RELEVANCE, ms=3, label="predicted clip saliency")
    ax.set(xlabel="video time (s)", ylabel="gold score", title=title or str(gold_rows.get("qid")))
    ax2.set_ylabel("predicted")
    handles = ax.get_legend_handles_labels()[0] + ax2.get_legend_handles_labels()[0]
    ax.legend(handles, [h.get_label() for h in handles], loc="upper left", bbox_to_anchor=(1.08, 1.0), fontsize=8,
              frameon=False)
    fig.tight_layout()
    return fig


def loss_curves(rows: Sequence[dict], title: str | None = None, reference: Sequence[dict] = (),
                reference_label: str = "shipped toy model") -> Figure:
    """LM loss and head (video) loss against the optimiser step, from a training log (`loss_history.json` rows);
    an optional second log drawn dashed for comparison."""
    fig = Figure(figsize=(8, 3.2), dpi=100)
    ax = fig.add_subplot()
    for log, style, suffix in ((rows, "-", ""), (reference, "--", f" ({reference_label})")):
        for key, colour, name in (("lm_loss", INFORMATIVE, "LM loss"), ("video_loss", RELEVANCE, "head loss")):
            points = [(r["step"], r[key]) for r in log if key in r]
            if points:
                ax.plot(*zip(*points, strict=True), style, color=colour, lw=1.4, alpha=1 if not suffix else 0.5,
                        label=name + suffix)
    ax.set(xlabel="optimiser step", ylabel="loss", title=title or "training losses")
    ax.set_yscale("log")
    ax.grid(alpha=0.25)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    fig.tight_layout()
    return fig


def training_labels(frames, informative: Sequence[int], relevance: Sequence[int], fps: float,
                    title: str | None = None, max_frames: int = 40) -> Figure:
    """One training example as the heads see it: frame thumbnails with their informative and relevance labels
    (1 positive, 0 negative, blank ignored)."""
    n = min(len(frames), max_frames)
    fig = Figure(figsize=(min(1 + 0.42 * n, 17), 2.4), dpi=100)
    axes = fig.subplots(2, 1, height_ratios=(1.4, 1))
    strip = np.concatenate([np.asarray(frames[k]).transpose(1, 2, 0) for k in range(n)], axis=1)
    axes[0].imshow(strip)
    axes[0].set_axis_off()
    axes[0].set_title(title or "a training example", fontsize=10)
    grid = np.full((2, n), np.nan)
    for row, labels in enumerate((informative, relevance)):
        for k, value in enumerate(list(labels)[:n]):
            if value in (0, 1):
                grid[row, k] = value
    axes[1].imshow(grid, aspect="auto", cmap="Greens", vmin=-0.2, vmax=1.2, interpolation="nearest")
    axes[1].set_yticks([0, 1], ["informative", "relevance"], fontsize=8)
    ticks = list(range(0, n, max(1, n // 10)))
    axes[1].set_xticks(ticks, [f"{k / fps:.1f}" for k in ticks], fontsize=8)
    axes[1].set_xlabel("frame time (s); dark = positive label, light = negative, white = not labelled", fontsize=8)
    fig.tight_layout()
    return fig


def duplicate_rates(rates: dict[str, float], band: tuple[float, float] | None = None, band_label: str = "",
                    title: str | None = None) -> Figure:
    """Share of replies that repeat an earlier reply of the same video, per run; an optional shaded band for
    a published range (`band_label` says whose)."""
    fig = Figure(figsize=(7.5, 0.9 + 0.45 * max(len(rates), 1)), dpi=100)
    ax = fig.add_subplot()
    names = list(rates)
    ax.barh(names, [100 * rates[n] for n in names], color=INFORMATIVE, alpha=0.8)
    for y, n in enumerate(names):
        ax.text(100 * rates[n] + 1, y, f"{100 * rates[n]:.0f} %", va="center", fontsize=8)
    if band:
        ax.axvspan(100 * band[0], 100 * band[1], color="grey", alpha=0.15, lw=0,
                   label=f"{band_label}: {100 * band[0]:.0f}-{100 * band[1]:.0f} %".lstrip(": "))
        ax.legend(loc="lower right", fontsize=8, frameon=False)
    ax.set(xlim=(0, 105), xlabel="duplicate replies (%)", title=title or "duplicate-reply rate")
    ax.invert_yaxis()
    fig.tight_layout()
    return fig


def speed_bars(rows: Sequence[dict], label: str, slow: tuple[str, str], fast: tuple[str, str],
               unit: str = "frames / s", title: str | None = None) -> Figure:
    """Two approaches timed in the same run, side by side per row, with their ratio written above.
    `slow` / `fast` are (row key, legend name)."""
    fig, ax = plt.subplots(figsize=(max(5.0, 2.2 * len(rows)), 3.2))
    x = np.arange(len(rows))
    a = [r[slow[0]] for r in rows]
    b = [r[fast[0]] for r in rows]
    ax.bar(x - 0.2, a, 0.4, color="#999999", label=slow[1])
    ax.bar(x + 0.2, b, 0.4, color=INFORMATIVE, label=fast[1])
    for i, (s, f) in enumerate(zip(a, b, strict=True)):
        ax.text(i, max(s, f) * 1.04, f"x{f / s:.1f}" if s else "", ha="center", fontsize=9)
    ax.set_xticks(x, [str(r[label]) for r in rows], fontsize=8)
    ax.set_ylim(0, max(a + b) * 1.2)
    ax.set(ylabel=unit, title=title)
    ax.legend(fontsize=8, frameon=False)
    fig.tight_layout()
    return fig
