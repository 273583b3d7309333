"""The policy explorer: how the grounding, highlight and dense-captioning numbers move with the smoothing window,
the threshold and the reply mode, recomputed from a predictions file's cached per-frame scores (and, for dense
captioning, cached replies) without calling the model.

Three layers, as the player: data loaded once (`load_grounding`, `load_highlight`, `load_reply_cache`) -> pure
functions that call the evaluators' own code (`explore_grounding`, `explore_highlight`, `explore_dvc`: each returns
what the matching `evaluate_*` returns for that setting) and pure renderers -> a thin widget, `PolicyExplorer`,
whose `to_static()` is the current state as HTML for exported reports.

    data = load_grounding("predictions.jsonl", "grounding.json")
    explore_grounding(data, window=6, threshold=0.5)     # the numbers of evaluate_grounding(pred, gold, 6, 0.5)
    display(PolicyExplorer(data))

Dense captioning from a reply cache: a run that replies at every frame with previous replies removed from the
context, `DuetSettings(mode="prob", reply_threshold=-1, remove_assistant_turns=True)`, holds the reply the model
gives at every frame. With replies removed, a reply depends on the frames and messages before it and never on
earlier replies, so any reply rule applied to the cached scores picks exactly the replies a run with that rule
would have given. This is exact when both the cache and the run remove previous replies, neither uses a
repetition penalty (it carries earlier replies' tokens), and both use the same model, frames, messages and
context mode. Records hold scores rounded to 3 decimals, so a frame whose score ties its threshold at 3 decimals
may be decided differently than in the live run: in prob mode a score within 0.0005 of the threshold, in sum mode
a running sum within its accumulated rounding, and in z mode mostly where the recent scores are all about 0 (their
std is then 0 and the live run compares probabilities like 1e-5 with 2e-5).
"""

from __future__ import annotations

import html
import json
import random
import shutil
import tempfile
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import ipywidgets as w
import numpy as np
from matplotlib.ticker import MaxNLocator

from ..evaluation import dvc as dvc_eval
from ..evaluation.dvc import captions_from_replies, evaluate_dvc, load_dvc_gold
from ..evaluation.grounding import (
    PAPER_WINDOW as GROUNDING_WINDOW,
)
from ..evaluation.grounding import (
    WINDOWS,
    _with_missing,
    frame_ious,
    gold_mask,
    load_grounding_gold,
    load_score_series,
    minmax,
    pad_series,
    smooth,
    summarise,
)
from ..evaluation.highlight import PAPER_WINDOW as HIGHLIGHT_WINDOW
from ..evaluation.highlight import (
    gt_clip_scores,
    highlight_metrics,
    load_highlight_gold,
    load_predictions,
    saliency_at,
)
from ..evaluation.records import (
    Coverage,
    PredictionError,
    match_ids,
    read_jsonl,
    result_shape,
    steps_from_record,
    unique_by,
)
from ..evaluation.scorers import shared_scorers
from ..plots import GOLD, INFORMATIVE, RELEVANCE
from ..run.benchmark import PRESETS
from ..run.outputs import settings_path
from ..stream import HEADS, MODES, DuetSettings, policy_trace
from .demo import mode_rule_html, threshold_control
from .svg import Canvas, Panel, colour_bar, heatmap_cells
from .widgets import ShowsErrors, range_threshold_slider

GROUNDING_KEYS = ("mIoU", "R@0.3", "R@0.5", "R@0.7")
HIGHLIGHT_KEYS = tuple(f"HL-min-{level}-{kind}" for level in ("Fair", "Good", "VeryGood") for kind in ("mAP", "Hit1"))
DVC_KEYS = ("CIDEr", "METEOR", "SODA_c", "Precision", "Recall", "F1")
SWEEP_THRESHOLDS = tuple(np.round(np.arange(0.0, 1.0001, 0.02), 2).tolist())  # the grounding slider's grid
REPLY_CACHE_SETTINGS = DuetSettings(mode="prob", reply_threshold=-1.0, remove_assistant_turns=True)
HEAD_CHOICES = {"informative": ("informative_score",), "relevance": ("relevance_score",),
                "informative + relevance": HEADS}


def _shown(path: Path) -> str:
    return Path(path).name  # file names only: folders on screen leak the machine's layout into reports


# ---- grounding ----------------------------------------------------------------------------------------------

@dataclass
class GroundingData:
    """A grounding predictions file and its gold, loaded once: every query's per-frame relevance, padded."""

    pred: Path
    gold: Path
    coverage: Coverage
    qids: list  # gold order; those without a prediction last (the evaluator's query axis)
    scored: list
    counts: dict
    times: np.ndarray  # (Q, N) NaN-padded
    lengths: np.ndarray  # (Q,)
    scores: np.ndarray  # (Q, N) NaN-padded
    gold_frames: np.ndarray  # (Q, N) frame inside a gold span
    spans: dict
    benchmark: str = "grounding"


def load_grounding(pred: str | Path, gold: str | Path, coverage: Coverage = "gold") -> GroundingData:
    """Read a grounding predictions file (per-frame relevance) and its gold as `evaluate_grounding` does."""
    series = load_score_series(pred)
    spans = load_grounding_gold(gold)
    qids, counts = match_ids(series, spans, f"{pred} vs {gold}", coverage)
    scored = [q for q in qids if q in series]
    times, lengths = pad_series([series[q][0] for q in scored])
    scores, _ = pad_series([series[q][1] for q in scored])
    order = scored + [q for q in qids if q not in series]
    return GroundingData(Path(pred), Path(gold), coverage, order, scored, counts, times, lengths, scores,
                         gold_mask(times, [spans[q] for q in scored]), spans)


def grounding_ious(data: GroundingData, window: int, threshold: float) -> np.ndarray:
    """(Q,) frame-set IoU of every query (in `data.qids` order) at one setting; 0 for a query without a prediction."""
    ious = frame_ious(data.scores, data.lengths, data.gold_frames, (window,), (threshold,))
    return _with_missing(ious, len(data.qids))[0, 0]


def explore_grounding(data: GroundingData, window: int, threshold: float) -> dict:
    """mIoU and R@{0.3,0.5,0.7} at (window, threshold): the keys, rounding and `unrounded` values of
    `evaluate_grounding(pred, gold, window, threshold)`."""
    return result_shape(summarise(grounding_ious(data, window, threshold)), 2, data.coverage, data.counts,
                        window=window, threshold=threshold)


def grounding_sweep(data: GroundingData, windows: Sequence[int] = WINDOWS,
                    thresholds: Sequence[float] = SWEEP_THRESHOLDS) -> dict[str, np.ndarray]:
    """{metric: (W, T) table} over every window and threshold (one vectorised pass)."""
    ious = _with_missing(frame_ious(data.scores, data.lengths, data.gold_frames, windows, thresholds),
                         len(data.qids))
    rows = [[summarise(ious[wi, ti]) for ti in range(len(thresholds))] for wi in range(len(windows))]
    return {k: np.array([[cell[k] for cell in row] for row in rows]) for k in GROUNDING_KEYS}


# ---- highlights ---------------------------------------------------------------------------------------------

@dataclass
class HighlightData:
    """A highlight predictions file (per-frame relevance or clip saliency) and its QVHighlights gold."""

    pred: Path
    gold: Path
    coverage: Coverage
    series: dict
    submitted: dict
    gold_rows: dict
    qids: list
    counts: dict
    benchmark: str = "highlight"


def load_highlight(pred: str | Path, gold: str | Path, coverage: Coverage = "gold") -> HighlightData:
    """Read a highlight predictions file and its gold as `evaluate_highlight` does."""
    gold_rows = load_highlight_gold(gold)
    series, submitted = load_predictions(pred)
    qids, counts = match_ids({**submitted, **series}, gold_rows, f"{pred} vs {gold}", coverage)
    return HighlightData(Path(pred), Path(gold), coverage, series, submitted, gold_rows, qids, counts)


def explore_highlight(data: HighlightData, window: int) -> dict:
    """The six moment_detr keys at smoothing `window`: what `evaluate_highlight(pred, gold, window)` returns."""
    saliency = saliency_at(data.series, data.submitted, window)
    return result_shape(highlight_metrics(saliency, data.gold_rows, data.qids), 2, data.coverage, data.counts,
                        window=window)


def highlight_sweep(data: HighlightData, progress: bool = False) -> dict[int, dict]:
    """`explore_highlight` at every window 0-14."""
    from tqdm.auto import tqdm

    return {w_: explore_highlight(data, w_) for w_ in tqdm(WINDOWS, desc="highlight windows", disable=not progress)}


# ---- dense captioning from a reply cache --------------------------------------------------------------------

@dataclass
class ReplyCache:
    """A predictions file that holds a reply at every frame (previous replies removed from the context), its
    dense-captioning gold, and how the cache was made (from the run's settings file, when there is one)."""

    pred: Path
    gold: Path
    records: dict  # question_id -> record
    steps: dict  # question_id -> the record's steps, each frame with its reply
    settings: DuetSettings  # the cache run's settings (REPLY_CACHE_SETTINGS when no settings file says)
    known_settings: bool
    options: dict  # evaluate_dvc options: first_caption, seed, soda_pairing, coverage
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="mmduet-explorer-")))
    benchmark: str = "dvc"

    def __post_init__(self):
        weakref.finalize(self, shutil.rmtree, str(self.workdir), True)

    @property
    def coverage(self) -> Coverage:
        return self.options["coverage"]


def _cache_settings(pred: Path) -> tuple[DuetSettings, bool]:
    sidecar = settings_path(pred)
    try:
        saved = json.loads(sidecar.read_text())["settings"]
        saved["score_heads"] = tuple(saved.get("score_heads", ("informative_score",)))
        known = {k: v for k, v in saved.items() if k in DuetSettings.__dataclass_fields__}
        return DuetSettings(**known), True
    except (OSError, KeyError, TypeError, ValueError):
        return REPLY_CACHE_SETTINGS, False


def load_reply_cache(pred: str | Path, gold: str | Path, coverage: Coverage = "gold", first_caption: str = "drop",
                     seed: int = 0, soda_pairing: str = "paper", warm: bool = True) -> ReplyCache:
    """Read a reply cache (a reply at every frame) and its gold; refuse a file where some frame has no reply.
    With `warm`, the caption tokenizer learns every text an evaluation can meet now, so moving a control later
    does not wait for a Java start."""
    pred = Path(pred)
    records = unique_by(read_jsonl(pred), lambda r: r.get("question_id"), pred, PredictionError)
    steps = {}
    for qid, record in records.items():
        steps[qid] = steps_from_record(record, str(pred))
        silent = [s.time for s in steps[qid] if s.reply is None]
        if silent:
            raise PredictionError(
                f"{pred} question_id {qid!r}: no reply at {len(silent)} of {len(steps[qid])} frames (first at "
                f"{silent[0]:g} s): not a reply cache; stream with DuetSettings(mode='prob', reply_threshold=-1, "
                f"remove_assistant_turns=True) to make one")
    settings, known = _cache_settings(pred)
    cache = ReplyCache(pred, Path(gold), records, steps, settings, known,
                       {"first_caption": first_caption, "seed": seed, "soda_pairing": soda_pairing,
                        "coverage": coverage})
    if warm:
        _warm_tokens(cache)
    return cache


def _warm_tokens(cache: ReplyCache) -> None:
    """Tokenize every cached reply, gold caption and filler string in one call now. The evaluator pairs an
    unmatched caption with the next string of its seeded filler sequence, so the fillers any evaluation can use
    are the first (thresholds x frames) of that sequence."""
    gold = load_dvc_gold(cache.gold)
    texts = {s.reply for steps in cache.steps.values() for s in steps}
    texts |= {sentence for entry in gold.values() for sentence in entry["sentences"]}
    rng = random.Random(cache.options["seed"])
    frames = sum(len(steps) for steps in cache.steps.values())
    texts |= {dvc_eval._random_string(rng) for _ in range(min(len(dvc_eval.THRESHOLDS) * frames, 20000))}
    shared_scorers().tokenize(texts)


def exactness(cache: ReplyCache, settings: DuetSettings) -> list[str]:
    """Why the replies `replies_at` picks might differ from a live run with `settings` (empty: exact, up to
    the scores' 3-decimal rounding)."""
    reasons = []
    if not cache.known_settings:
        reasons.append("no settings file beside the cache says how it was made")
    for name, s in (("the cache", cache.settings), ("this rule", settings)):
        if not s.remove_assistant_turns:
            reasons.append(f"{name} keeps previous replies in the context")
        if s.repetition_penalty:
            reasons.append(f"{name} uses a repetition penalty")
    if settings.suppress_repeats:
        reasons.append("this rule drops repeated replies (not replayed here)")
    if cache.known_settings and cache.settings.context != settings.context:
        reasons.append(f"context {cache.settings.context} in the cache, {settings.context} here")
    return reasons


def rule_settings(cache: ReplyCache, mode: str, threshold: float,
                  score_heads: Sequence[str] = ("informative_score",)) -> DuetSettings:
    """The cache run's settings with another reply rule."""
    return cache.settings.replace(mode=mode, reply_threshold=float(threshold), score_heads=tuple(score_heads))


def replies_at(cache: ReplyCache, settings: DuetSettings) -> list[dict]:
    """The prediction records a run with `settings`' reply rule writes: the cache's records keeping only the
    replies at the frames where the rule fires on the cached scores."""
    out = []
    for qid, record in cache.records.items():
        steps = cache.steps[qid]
        trace = policy_trace(settings, [(s.informative, s.relevance) for s in steps])
        fired = {round(s.time, 3) for s, p in zip(steps, trace, strict=True) if p.fired}
        turns = [t for t in record.get("model_response_list", [])
                 if t.get("role") != "assistant" or round(float(t["time"]), 3) in fired]
        out.append({**record, "model_response_list": turns})
    return out


def explore_dvc(cache: ReplyCache, settings: DuetSettings) -> dict:
    """The dense-captioning numbers of the replies `settings` picks from the cache: what `evaluate_dvc` returns
    for the predictions file a run with that rule writes."""
    path = cache.workdir / "selected.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in replies_at(cache, settings)))
    return evaluate_dvc(path, cache.gold, **cache.options)


def replies_per_video(cache: ReplyCache, settings: DuetSettings, thresholds: Sequence[float]) -> np.ndarray:
    """Mean replies per video at each threshold (the rule only; no metric)."""
    traces = [[(s.informative, s.relevance) for s in steps] for steps in cache.steps.values()]
    return np.array([np.mean([sum(p.fired for p in policy_trace(settings.replace(reply_threshold=float(t)), pairs))
                              for pairs in traces]) for t in thresholds])


# ---- renderers (pure: data in, HTML / SVG out) -------------------------------------------------------------

def metrics_html(result: dict, keys: Sequence[str], baseline: dict | None = None, baseline_label: str = "") -> str:
    """The metric values (as the evaluator rounds them), each with its change from `baseline`."""
    cells = []
    for k in keys:
        value = result[k]
        delta = ""
        if baseline is not None:
            d = value - baseline[k]
            colour = "#1a7f37" if d > 0 else "#b00020" if d < 0 else "#888"
            delta = f"<div style='font-size:11px;color:{colour}'>{d:+.2f}</div>"
        cells.append(f"<td style='padding:2px 10px;text-align:center'><div style='font-size:11px;color:#555'>"
                     f"{html.escape(k)}</div><div class='explorer-value' data-metric='{html.escape(k)}' "
                     f"style='font-size:16px;font-weight:bold'>{value:.2f}</div>{delta}</td>")
    since = (f"<div style='font-size:11px;color:#777'>below each value: its change from {html.escape(baseline_label)}"
             f"</div>" if baseline is not None and baseline_label else "")
    return f"<table class='explorer-metrics'><tr>{''.join(cells)}</tr></table>{since}"


def grounding_sweep_svg(table: np.ndarray, windows: Sequence[int], thresholds: Sequence[float], metric: str,
                        window: int, threshold: float) -> str:
    """A metric over every window x threshold as a heat map, upstream's thresholds outlined, the current setting
    ringed."""
    c = Canvas(560, 250, "explorer-sweep")
    finite = table[np.isfinite(table)]
    vmin, vmax = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    step = thresholds[1] - thresholds[0]
    p = c.panel(50, 24, 440, 180, (thresholds[0] - step / 2, thresholds[-1] + step / 2),
                (windows[0] - 0.5, windows[-1] + 0.5), "threshold on the normalised relevance", "smoothing window",
                f"{metric} over the sweep (dashed box: upstream's thresholds; ring: now)")
    c.parts.append(heatmap_cells(p, table, thresholds, windows, vmin, vmax))
    c.rect(p.px(0.29), p.y, p.px(0.71) - p.px(0.29), p.height, stroke="white", dash="5 3", stroke_width=1.5)
    c.points(p, [threshold], [window], "#ff2d2d", radius=7, hollow=True, width=2.5)
    c.text(p.px(threshold), p.py(window) - 10, f"{table[list(windows).index(window), _nearest(thresholds, threshold)]:.1f}",
           10, "middle", "#ff2d2d", "bold")
    colour_bar(c, 505, 24, 180, vmin, vmax, f"{metric} (%)")
    return c.svg()


def _nearest(values: Sequence[float], x: float) -> int:
    return int(np.argmin(np.abs(np.asarray(values) - x)))


def curve_svg(xs: Sequence[float], ys: Sequence[float], x: float, y: float | None, xlim: tuple[float, float],
              xlabel: str, ylabel: str, title: str,
              extra: tuple[Sequence[float], Sequence[float], str] | None = None, integer_x: bool = False) -> str:
    """A metric against one knob, the current setting ringed; `extra` (xs, ys, label) in grey on its own scale."""
    c = Canvas(560, 250, "explorer-sweep")
    values = [v for v in ys if v is not None] + ([y] if y is not None else [])
    top = max(values + [1.0]) * 1.1
    p = c.panel(50, 24, 440, 180, xlim, (0, top), xlabel, ylabel, title, integer_x=integer_x)
    if extra is not None and len(extra[0]):
        high = max(max(extra[1]), 1e-9) * 1.1
        q = Panel(p.x, p.y, p.width, p.height, p.xlim, (0, high))
        c.polyline(q, extra[0], extra[1], "#999999", 1.2)
        for t in MaxNLocator(nbins=4).tick_values(0, high):
            if t <= high:
                c.text(p.x + p.width + 5, q.py(t) + 3, f"{t:g}", 9, "start", "#888")
        c.text(p.x + p.width + 40, p.y + p.height / 2, extra[2], 9, "middle", "#888", rotate=-90)
    c.polyline(p, xs, ys, INFORMATIVE, 1.6)
    c.points(p, xs, ys, INFORMATIVE, 2.5)
    c.vline(p, x, "#ff2d2d", "3 3")
    if y is not None:
        c.points(p, [x], [y], "#ff2d2d", radius=7, hollow=True, width=2.5)
        c.text(p.px(x) + 9, p.py(y) - 8, f"{y:.2f}", 10, "start", "#ff2d2d", "bold")
    return c.svg()


ROW = 74  # pixel height of one timeline row


def _rows(qids: Sequence, what: str) -> tuple[Canvas, bool]:
    c = Canvas(560, 30 + ROW * max(len(qids), 1), "explorer-timelines")
    if not qids:
        c.text(280, 50, f"choose {what} to see their timelines", 11, "middle", "#777")
    return c, bool(qids)


def grounding_timelines_svg(data: GroundingData, qids: Sequence, window: int, threshold: float) -> str:
    """Per chosen query: the smoothed, normalised relevance, the threshold, the frames it selects and the gold."""
    c, any_rows = _rows(qids, "queries")
    if not any_rows:
        return c.svg()
    norm = minmax(smooth(data.scores, data.lengths, window))
    ious = grounding_ious(data, window, threshold)
    for row, qid in enumerate(qids):
        top = 16 + row * ROW
        if qid not in data.scored:
            c.text(50, top + 20, f"{qid}: no prediction (IoU 0)", 10)
            continue
        q = data.scored.index(qid)
        n = int(data.lengths[q])
        times, values = data.times[q, :n], norm[q, :n]
        end = float(max(times[-1], max(e for _, e in data.spans[qid])))
        last = row == len(qids) - 1
        p = c.panel(50, top, 490, ROW - 34, (0, end), (0, 1.05), "video time (s)" if last else "",
                    title=f"{qid}: IoU {ious[data.qids.index(qid)]:.2f} (green: gold; pink: frames above the "
                          f"threshold)", xticks=last)
        for s, e in data.spans[qid]:
            c.span(p, s, e, GOLD, 0.25)
        half = (times[1] - times[0]) / 2 if n > 1 else 0.25
        with np.errstate(invalid="ignore"):
            chosen = values >= threshold
        for t, on in zip(times, chosen, strict=True):
            if on:
                c.span(p, t - half, t + half, RELEVANCE, 0.18)
        c.polyline(p, times, values, RELEVANCE, 1.5)
        c.hline(p, threshold)
    return c.svg()


def highlight_timelines_svg(data: HighlightData, qids: Sequence, window: int) -> str:
    """Per chosen query: the annotators' mean score per 2 s clip (bars) and the predicted clip saliency at
    `window` (line, on its own scale)."""
    c, any_rows = _rows(qids, "queries")
    if not any_rows:
        return c.svg()
    saliency = saliency_at({q: data.series[q] for q in qids if q in data.series},
                           {q: data.submitted[q] for q in qids if q in data.submitted}, window)
    for row, qid in enumerate(qids):
        gold = gt_clip_scores(data.gold_rows[qid]).mean(1)
        pred = saliency.get(qid, np.zeros(0))
        end = 2.0 * max(len(gold), len(pred), 1)
        last = row == len(qids) - 1
        p = c.panel(50, 16 + row * ROW, 490, ROW - 34, (0, end), (0, 4.2), "video time (s)" if last else "",
                    title=f"{qid}: green bars gold (mean of 3 annotators, 0-4); red: predicted saliency",
                    xticks=last)
        for k, v in enumerate(gold):
            c.span(p, 2 * k + 0.1, 2 * k + 1.9, GOLD, 0.45, 0, float(v))
        if len(pred):
            q = Panel(p.x, p.y, p.width, p.height, p.xlim, (0, max(float(np.max(pred)), 1e-9) * 1.1))
            c.polyline(q, np.arange(len(pred)) * 2 + 1, pred, RELEVANCE, 1.5)
            c.points(q, np.arange(len(pred)) * 2 + 1, pred, RELEVANCE, 2)
    return c.svg()


def dvc_timelines_svg(cache: ReplyCache, qids: Sequence, settings: DuetSettings) -> str:
    """Per chosen video: the score the rule reads (sum mode: the running sum), the threshold, where it fires, the
    gold segments and the captions those replies become (the evaluator's rule, first caption dropped as upstream)."""
    c = Canvas(560, 30 + 116 * max(len(qids), 1), "explorer-timelines")
    if not qids:
        c.text(280, 50, "choose videos to see their timelines", 11, "middle", "#777")
        return c.svg()
    gold = load_dvc_gold(cache.gold)
    records = {r["question_id"]: r for r in replies_at(cache, settings) if r["question_id"] in qids}
    for row, qid in enumerate(qids):
        steps = cache.steps[qid]
        trace = policy_trace(settings, [(s.informative, s.relevance) for s in steps])
        times = [s.time for s in steps]
        end = times[-1] + (times[1] - times[0] if len(times) > 1 else 1.0)
        top = max([1.0, settings.reply_threshold] + [p.level for p in trace]) * 1.15
        fired = [t for t, p in zip(times, trace, strict=True) if p.fired]
        last = row == len(qids) - 1
        y0 = 16 + row * 116
        p = c.panel(50, y0, 490, 46, (0, end), (0, top), title=f"{qid}: {len(fired)} replies (triangles); "
                    "dashed: threshold", xticks=False)
        c.polyline(p, times, [pt.level for pt in trace], INFORMATIVE, 1.4)
        if settings.mode == "z":
            c.polyline(p, times, [pt.threshold for pt in trace], "#222", 1.0, "4 3")
        else:
            c.hline(p, settings.reply_threshold)
        c.triangles(p, fired, top * 0.93, "#222", 3.5)
        lanes = c.panel(50, y0 + 50, 490, 36, (0, end), (0, 3), "video time (s)" if last else "", xticks=last,
                        yticks=False)
        entry = gold.get(str(qid).removeprefix("v_"), {"timestamps": [], "sentences": []})
        for (s, e), text in zip(entry["timestamps"], entry["sentences"], strict=True):
            left, width = c.span(lanes, s, e, GOLD, 0.45, 2.05, 2.95, tooltip=text)
            c.label(left + 2, lanes.py(2.5) + 3, text, width - 4, 8, "#1d4d1d")
        replies = [t for t in records[qid]["model_response_list"] if t.get("role") == "assistant"]
        for k, caption in enumerate(captions_from_replies(replies, cache.options["first_caption"])):
            s, e = caption["timestamp"]
            low = 0.05 if k % 2 else 1.05  # neighbouring captions on alternate rows: they often overlap in time
            left, width = c.span(lanes, s, max(e, s + 0.05), INFORMATIVE, 0.4, low, low + 0.9,
                                 tooltip=caption["sentence"])
            c.label(left + 2, lanes.py(low + 0.45) + 3, caption["sentence"], width - 4, 8, "#173a5e")
        c.text(46, lanes.py(2.5) + 3, "gold", 8, "end", "#555")
        c.text(46, lanes.py(1.0) + 3, "captions", 8, "end", "#555")
    return c.svg()


# ---- the widget ---------------------------------------------------------------------------------------------

Data = GroundingData | HighlightData | ReplyCache


class PolicyExplorer(ShowsErrors, w.VBox):
    """Window, threshold and reply mode over a predictions file's cached scores: the metrics, the sweep position
    and the timelines of chosen queries follow each change at once, computed by the evaluators' code.

    queries: the ones whose timelines are drawn first (default: the first two). precompute: highlights only,
    evaluate every window at load (each then shows at once; otherwise a window is evaluated when first chosen).
    progress: a progress bar over that."""

    def __init__(self, data: Data, window: int | None = None, threshold: float | None = None,
                 mode: str | None = None, score_heads: Sequence[str] | None = None, queries: Sequence = (),
                 metric: str | None = None, title: str | None = None, precompute: bool = True,
                 progress: bool = False):
        self.data = data
        self.benchmark = data.benchmark
        self.result: dict = {}
        self.baseline: dict | None = None
        self._baseline_label = ""
        self.last_update_s = 0.0
        self.update_times: list[float] = []  # seconds each change took (compute and draw), for measurements
        self._adjusting = False
        self._thresholds: dict[str, float] = {}  # dense captioning: each mode keeps its own threshold
        self._results: dict = {}  # dense captioning: evaluated settings -> result (a revisit costs nothing)
        self._visits: dict = {}  # dense captioning: (mode, heads) -> {threshold: metric value}
        self._replies: dict = {}  # dense captioning: (mode, heads) -> (thresholds, replies per video)
        preset = PRESETS["youcook2"].settings
        self._keys = {"grounding": GROUNDING_KEYS, "highlight": HIGHLIGHT_KEYS, "dvc": DVC_KEYS}[self.benchmark]
        self._build(title, metric or {"grounding": "R@0.5", "highlight": "HL-min-VeryGood-mAP",
                                      "dvc": "F1"}[self.benchmark], queries)
        if self.benchmark == "grounding":
            self.window.value = GROUNDING_WINDOW if window is None else window
            self.threshold.value = 0.5 if threshold is None else threshold
            self._sweep = grounding_sweep(data)
        elif self.benchmark == "highlight":
            self.window.value = HIGHLIGHT_WINDOW if window is None else window
            self._sweep = highlight_sweep(data, progress) if precompute else {}
        else:
            self.heads.value = next(k for k, v in HEAD_CHOICES.items()
                                    if v == tuple(score_heads or preset.score_heads))
            self._thresholds[mode or preset.mode] = preset.reply_threshold if threshold is None else threshold
            self.mode.value = mode or preset.mode
            self._range_threshold()
            self.threshold.continuous_update = False  # an evaluation takes METEOR calls: one per release, not per pixel
        self._ready = True
        self.refresh()
        self.baseline, self._baseline_label = self.result, f"the starting setting ({self.describe()})"
        self.metrics_view.value = metrics_html(self.result, self._keys, self.baseline, self._baseline_label)

    # ---- layout -------------------------------------------------------------------------------------------

    def _build(self, title: str | None, metric: str, queries: Sequence) -> None:
        d, style = self.data, {"description_width": "80px"}
        self._ready = False
        names = {"grounding": "temporal grounding", "highlight": "highlight detection",
                 "dvc": "dense captioning (reply cache)"}
        queries_all = list(d.qids if self.benchmark != "dvc" else d.records)
        head = title or f"Policy explorer: {names[self.benchmark]}"
        self.header = w.HTML(
            f"<h4 style='margin:4px 0'>{html.escape(head)}</h4><span style='font-size:12px;color:#555'>"
            f"{html.escape(_shown(d.pred))} against {html.escape(_shown(d.gold))}, {len(queries_all)} "
            f"{'videos' if self.benchmark == 'dvc' else 'queries'}; every number is the evaluator's, recomputed "
            f"from the cached scores (no model calls)</span>")
        self.window = w.IntSlider(min=min(WINDOWS), max=max(WINDOWS), description="Window", style=style,
                                  layout=w.Layout(width="340px"))
        self.threshold = w.FloatSlider(min=0.0, max=1.0, step=0.01, description="Threshold", style=style,
                                       readout_format=".2f", layout=w.Layout(width="340px"))
        self.mode = w.ToggleButtons(options=[(MODES[m].label, m) for m in ("prob", "sum", "z")],
                                    description="Reply mode", style={**style, "button_width": "120px"})
        self.rule_line = w.HTML(layout=w.Layout(width="420px"))
        self.heads = w.Dropdown(options=list(HEAD_CHOICES), description="Heads", style=style,
                                layout=w.Layout(width="340px"))
        self.metric = w.Dropdown(options=list(self._keys), value=metric, description="Sweep of", style=style,
                                 layout=w.Layout(width="340px"))
        self.queries = w.SelectMultiple(options=queries_all, value=tuple(queries or queries_all[:2])[:3],
                                        description="Timelines", rows=5, style=style, layout=w.Layout(width="340px"))
        self.metrics_view = w.HTML()
        self.note = w.HTML()
        self.timing = w.HTML()
        self.sweep_view = w.HTML(layout=w.Layout(width="100%", max_width="580px"))
        self.timeline_view = w.HTML(layout=w.Layout(width="100%", max_width="580px"))
        self.error = w.HTML()
        relevant = {"grounding": (self.window, self.threshold), "highlight": (self.window,),
                    "dvc": (self.mode, self.rule_line, self.heads, self.threshold)}[self.benchmark]
        controls = [*relevant, self.metric, self.queries, self.timing, self.error]
        super().__init__([self.header, self.metrics_view, self.note,
                          w.HBox([w.VBox(controls, layout=w.Layout(width="440px")),
                                  w.VBox([self.sweep_view, self.timeline_view], layout=w.Layout(flex="1"))])],
                         layout=w.Layout(width="100%"))
        self.add_class("policy-explorer")  # a handle for styling and for the browser test
        self.window.observe(self._guard(self._on_window), names=["value"])
        self.threshold.observe(self._guard(self._on_threshold), names=["value"])
        self.mode.observe(self._guard(self._on_mode), names=["value"])
        self.heads.observe(self._guard(self._on_heads), names=["value"])
        self.metric.observe(self._guard(self._on_metric), names=["value"])
        self.queries.observe(self._guard(self._on_queries), names=["value"])

    # ---- one update method per observed trait ----------------------------------------------------------------

    def _on_window(self, change) -> None:
        self.refresh()

    def _on_threshold(self, change) -> None:
        if not self._adjusting:
            self._thresholds[self.mode.value] = float(change["new"])
            self.refresh()

    def _on_mode(self, change) -> None:
        self._range_threshold()
        self.refresh()

    def _on_heads(self, change) -> None:
        if self.mode.value == "prob":
            self._range_threshold()
        self.refresh()

    def _on_metric(self, change) -> None:
        self.refresh(metrics=False, timelines=False)

    def _on_queries(self, change) -> None:
        self.refresh(metrics=False, sweep=False)

    def _range_threshold(self) -> None:
        """Dense captioning: the threshold slider takes the reply mode's range and step, and the threshold last
        used in that mode (at first its default)."""
        self._adjusting = True
        try:
            control = range_threshold_slider(self.threshold, self.mode.value, len(HEAD_CHOICES[self.heads.value]),
                                             self._thresholds)
        finally:
            self._adjusting = False
        self.threshold.description = "Threshold"
        self.threshold.tooltip = control.unit
        self.rule_line.value = mode_rule_html(control.mode)

    # ---- state ---------------------------------------------------------------------------------------------

    def setting(self) -> dict:
        """The current knobs, as the evaluators take them."""
        t = round(float(self.threshold.value), 4)  # a slider's float is the step's multiple up to rounding noise
        if self.benchmark == "grounding":
            return {"window": int(self.window.value), "threshold": t}
        if self.benchmark == "highlight":
            return {"window": int(self.window.value)}
        return {"mode": self.mode.value, "threshold": t, "score_heads": HEAD_CHOICES[self.heads.value]}

    def describe(self) -> str:
        """The current setting in words."""
        s = self.setting()
        if self.benchmark == "grounding":
            return f"window {s['window']}, threshold {s['threshold']:.2f}"
        if self.benchmark == "highlight":
            return f"window {s['window']}"
        heads = " + ".join(h.removesuffix("_score") for h in s["score_heads"])
        return f"{MODES[s['mode']].label} > {s['threshold']:g} on {heads}"

    def rule(self) -> DuetSettings:
        """Dense captioning: the reply rule of the current setting, as `DuetSettings`."""
        s = self.setting()
        return rule_settings(self.data, s["mode"], s["threshold"], s["score_heads"])

    def compute(self) -> dict:
        """The evaluator's numbers at the current setting."""
        s = self.setting()
        if self.benchmark == "grounding":
            return explore_grounding(self.data, s["window"], s["threshold"])
        if self.benchmark == "highlight":
            if s["window"] not in self._sweep:
                self._sweep[s["window"]] = explore_highlight(self.data, s["window"])
            return self._sweep[s["window"]]
        key = (s["mode"], s["score_heads"], s["threshold"])
        if key not in self._results:
            self._results[key] = explore_dvc(self.data, self.rule())
        self._visits.setdefault(key[:2], {})[s["threshold"]] = self._results[key]
        return self._results[key]

    def refresh(self, metrics: bool = True, sweep: bool = True, timelines: bool = True) -> None:
        """Recompute what a change affects and redraw it."""
        if not self._ready:
            return
        started = time.perf_counter()
        self._clear_error()
        if metrics:
            self.result = self.compute()
            self.metrics_view.value = metrics_html(self.result, self._keys, self.baseline, self._baseline_label)
            self.note.value = self._note_html()
        if sweep:
            self.sweep_view.value = self.sweep_svg()
        if timelines:
            self.timeline_view.value = self.timelines_svg()
        self.last_update_s = time.perf_counter() - started
        self.update_times.append(self.last_update_s)
        self.timing.value = f"<span style='font-size:11px;color:#777'>updated in {self.last_update_s:.2f} s</span>"

    def _note_html(self) -> str:
        s = self.setting()
        counts = self.result["counts"]
        scored = (f"{counts['evaluated']} queries" + (f", {counts['missing_predictions']} without a prediction "
                                                       "(scored 0)" if self.data.coverage == "gold" and
                                                       counts["missing_predictions"] else "")
                  + ("; only the queries with a prediction are scored" if self.data.coverage == "predictions" else ""))
        if self.benchmark == "grounding":
            text = f"window {s['window']}, threshold {s['threshold']:.2f}: {scored}"
        elif self.benchmark == "highlight":
            text = f"window {s['window']}: {scored}"
        else:
            dup = self.result.get("duplicates", {})
            reasons = exactness(self.data, self.rule())
            text = (f"{MODES[s['mode']].label} > {s['threshold']:g}: {dup.get('turns', 0):.1f} replies per video, "
                    f"{100 * dup.get('duplicate_rate', 0):.0f} % repeating an earlier one; "
                    f"{self.result['n_preds']:.1f} captions per video. "
                    + ("Exact: the replies a run with this rule gives." if not reasons else
                       "Not exact: " + "; ".join(reasons) + "."))
        return f"<div class='explorer-note' style='font-size:12px;color:#444'>{html.escape(text)}</div>"

    # ---- figures -------------------------------------------------------------------------------------------

    def sweep_svg(self) -> str:
        """Where the current setting sits among the others."""
        s, metric = self.setting(), self.metric.value
        if self.benchmark == "grounding":
            return grounding_sweep_svg(self._sweep[metric], WINDOWS, SWEEP_THRESHOLDS, metric, s["window"],
                                       s["threshold"])
        if self.benchmark == "highlight":
            known = sorted(self._sweep)
            return curve_svg(known, [self._sweep[w_][metric] for w_ in known], s["window"], self.result[metric],
                             (min(WINDOWS) - 0.5, max(WINDOWS) + 0.5), "smoothing window", f"{metric} (%)",
                             f"{metric} against the smoothing window (ring: now)", integer_x=True)
        key = (s["mode"], s["score_heads"])
        control = threshold_control(s["mode"], len(s["score_heads"]))
        if key not in self._replies:
            grid = np.linspace(control.low, control.high, 21)
            self._replies[key] = (grid, replies_per_video(self.data, self.rule(), grid))
        visited = sorted(self._visits.get(key, {}).items())
        return curve_svg([t for t, _ in visited], [r[metric] for _, r in visited], s["threshold"],
                         self.result[metric], (control.low, control.high), f"threshold ({control.unit})",
                         f"{metric} (%)", f"{metric} at the thresholds tried (ring: now); grey: replies per video",
                         extra=(*self._replies[key], "replies per video"))

    def timelines_svg(self) -> str:
        """The chosen queries (at most three) at the current setting."""
        chosen, s = list(self.queries.value)[:3], self.setting()
        if self.benchmark == "grounding":
            return grounding_timelines_svg(self.data, chosen, s["window"], s["threshold"])
        if self.benchmark == "highlight":
            return highlight_timelines_svg(self.data, chosen, s["window"])
        return dvc_timelines_svg(self.data, chosen, self.rule())

    def to_static(self) -> str:
        """The current state as self-contained HTML (exported reports have no kernel for the widgets)."""
        return ("<div class='policy-explorer-static' style='font-family:sans-serif'>"
                f"{self.header.value}{self.metrics_view.value}{self.note.value}"
                f"<div>{self.sweep_svg()}</div><div>{self.timelines_svg()}</div></div>")


__all__ = ["GroundingData", "HighlightData", "PolicyExplorer", "ReplyCache", "exactness", "explore_dvc",
           "explore_grounding", "explore_highlight", "grounding_sweep", "highlight_sweep", "load_grounding", "load_highlight",
           "load_reply_cache", "replies_at", "rule_settings"]
