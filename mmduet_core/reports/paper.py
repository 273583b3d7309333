"""The numbers a reproduction is held against: MMDuet's paper (arXiv 2411.17991 v2; its Table 1 is v1's), as data,
with the setting of each. One home for them: notebooks, tables and figures read them from here, and the
sentence that compares a run with them is written here (`comparison_line`).

A number of the paper is only ever put beside a run on the same benchmark with a real checkpoint; a toy-world run
is labelled as such and its line says it is not comparable.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

SETTING = "zero-shot, 7B LLMs; MMDuet = LLaVA-OneVision-Qwen2-7B + LoRA + informative/relevance heads, one V100"

# The benchmark (and split) each of upstream's presets stands for.
BENCHMARKS = {"youcook2": "YouCook2 val", "magqa": "Shot2Story-MAGQA test", "charades": "Charades-STA test",
              "qvh": "QVHighlights val"}

# ---- Table 1 ------------------------------------------------------------------------------------------------

# Our metric key -> (benchmark, the paper's column name), in the paper's column order.
TABLE1_COLUMNS: dict[str, tuple[str, str]] = {
    "HL-min-VeryGood-mAP": ("QVHighlights val", "mAP"),
    "HL-min-VeryGood-Hit1": ("QVHighlights val", "HIT@1"),
    "R@0.5": ("Charades-STA test", "R@0.5"),
    "R@0.7": ("Charades-STA test", "R@0.7"),
    "SODA_c": ("YouCook2 val", "SODA_c"),
    "CIDEr": ("YouCook2 val", "CIDEr"),
    "F1": ("YouCook2 val", "F1"),
}


def _row(*values: float | None) -> dict[str, float | None]:
    return dict(zip(TABLE1_COLUMNS, values, strict=True))


# Every row of Table 1, in the paper's order; None where the paper has no number.
TABLE1: dict[str, dict[str, float | None]] = {
    "TimeChat": _row(14.5, 23.9, 32.2, 13.4, 1.2, 3.4, 12.6),
    "VTG-LLM": _row(16.5, 33.5, 33.8, 15.7, 1.5, 5.0, 17.5),
    "VideoLLM-online": _row(None, None, None, None, 0.4, 0.9, 5.8),
    "LLaVA-OV-TC (same data, TimeChat format)": _row(17.6, 32.9, 33.1, 12.4, 1.9, 3.3, 21.8),
    "LLaVA-OV-VT (same data, VTimeLLM format)": _row(19.0, 40.0, 36.5, 12.3, 2.5, 6.7, 14.0),
    "MMDuet": _row(31.3, 49.6, 42.4, 18.0, 2.4, 5.7, 19.2),
    "MMDuet + remove previous replies": _row(None, None, None, None, 2.9, 8.8, 21.7),
}
TABLE1_NOTES = (
    "QVHighlights: HL-min-VeryGood mAP / HIT@1 (moment_detr's convention), val split.",
    "Charades-STA R@x: MMDuet's evaluator counts the IoU of frame sets (2 fps frames above the threshold against "
    "the frames inside the gold span), not of time spans. The paper reports no mIoU or R@0.3.",
    "Smoothing windows: 6 (Charades-STA) and 2 (QVHighlights); the relevance threshold is not stated.",
)


@dataclass(frozen=True)
class Reference:
    """The Table 1 row a benchmark notebook's preset reproduces, the metrics compared, and how it was produced."""

    row: str
    metrics: tuple[str, ...]
    setting: str


REFERENCES: dict[str, Reference] = {
    "charades": Reference("MMDuet", ("R@0.5", "R@0.7"), "smoothing window 6, relevance threshold not stated"),
    "qvh": Reference("MMDuet", ("HL-min-VeryGood-mAP", "HL-min-VeryGood-Hit1"), "smoothing window 2"),
    "youcook2": Reference("MMDuet + remove previous replies", ("SODA_c", "CIDEr", "F1"),
                          "previous replies removed from the context, summed informative score threshold "
                          "(robust over 1-3)"),
}

# ---- MAGQA --------------------------------------------------------------------------------------------------

# Shot2Story-MAGQA-39k test (2,000 examples, previous replies removed from the context): in-span score with the
# LLaMA-3.1-70B / GPT-4o judge (1-5), mean replies without / with de-duplication, wall time relative to LLaVA-OV-TC.
MAGQA_TABLE: dict[str, dict[str, float]] = {
    "LLaVA-OV-TC": {"score_llama": 2.77, "score_gpt4o": 2.64, "turns": 4.1, "dedup_turns": 2.2, "time": 1.00},
    "VideoLLM-online": {"score_llama": 1.33, "score_gpt4o": 1.26, "turns": 1.3, "dedup_turns": 1.1, "time": 0.44},
    "MMDuet t=0.6": {"score_llama": 2.46, "score_gpt4o": 2.33, "turns": 13.7, "dedup_turns": 4.0, "time": 1.90},
    "MMDuet t=0.5": {"score_llama": 2.77, "score_gpt4o": 2.61, "turns": 18.4, "dedup_turns": 5.3, "time": 2.36},
    "MMDuet t=0.4": {"score_llama": 3.00, "score_gpt4o": 2.81, "turns": 23.0, "dedup_turns": 6.6, "time": 2.75},
    "MMDuet t=0.3": {"score_llama": 3.13, "score_gpt4o": 2.93, "turns": 27.0, "dedup_turns": 7.6, "time": 2.90},
}
MAGQA = {float(name.split("=")[1]): v for name, v in MAGQA_TABLE.items() if name.startswith("MMDuet t=")}

# ---- the smoothing-window figure ----------------------------------------------------------------------------


@dataclass(frozen=True)
class PaperPoints:
    """Values the paper states for one metric against the smoothing window w: only these points, nothing between."""

    benchmark: str
    metric: str  # our metric key
    label: str  # the paper's name for it
    points: tuple[tuple[int, float], ...]  # (w, value) as stated (approximate: read off a figure)
    source: str
    table_point: tuple[int, float] | None = None  # the Table 1 number and the window behind it


WINDOW_POINTS: dict[str, PaperPoints] = {
    "charades": PaperPoints(
        "Charades-STA test", "R@0.5", "R@0.5", ((0, 27.5), (7, 43.0), (8, 43.0), (9, 43.0)),
        "the paper's smoothing-window figure, read off it: about 27.5 at w=0, a plateau near 43 at w=7-9",
        table_point=(6, 42.4)),
    "qvh": PaperPoints(
        "QVHighlights val", "HL-min-VeryGood-Hit1", "HIT@1", ((0, 46.5), (2, 49.8), (14, 40.0)),
        "the paper's smoothing-window figure, read off it: about 46.5 at w=0, 49.8 at w=2, about 40 at w=14",
        table_point=(2, 49.6)),
}

# Later work's measurement of MMDuet's duplicate replies (ProactiveVideoQA), as a fraction.
DUPLICATE_RATE_RANGE = (0.81, 0.99)
DUPLICATE_RATE_SOURCE = "later work on ProactiveVideoQA (MMDuet 7B)"


# ---- the comparison sentence --------------------------------------------------------------------------------

def _numbers(values: Mapping[str, float | None], keys: tuple[str, ...], digits: int = 1) -> str:
    names = {k: TABLE1_COLUMNS.get(k, (None, k))[1] for k in keys}
    return ", ".join(f"{names[k]} {values[k]:.{digits}f}" for k in keys if values.get(k) is not None)


def comparison_line(preset: str, metrics: Mapping, run_label: str, comparable: bool,
                    threshold: float | None = None) -> str:
    """One sentence for a benchmark notebook's summary: this run's numbers with what produced them, and the paper's
    for the same benchmark. `comparable`: the run used a real checkpoint on the real benchmark; otherwise the
    sentence says the two are different experiments. `threshold`: MAGQA's reply threshold (picks the paper's row)."""
    benchmark = BENCHMARKS[preset]
    if preset == "magqa":
        ours = f"in-span score {metrics['in_span_score']:.2f} ({metrics.get('judge')} judge), {metrics['turns']:.1f} " \
               f"turns / {metrics['dedup_turns']:.1f} distinct"
        row = MAGQA.get(threshold) if threshold is not None else None
        theirs = (f"the paper's MMDuet at threshold {threshold:g}: {row['score_llama']:.2f} (LLaMA-3.1-70B judge) / "
                  f"{row['score_gpt4o']:.2f} (GPT-4o judge), {row['turns']} turns / {row['dedup_turns']} distinct"
                  if row else f"the paper reports thresholds {', '.join(f'{t:g}' for t in sorted(MAGQA))} only")
        if not metrics.get("comparable_to_paper"):
            comparable = False
    else:
        ref = REFERENCES[preset]
        ours = _numbers(metrics, ref.metrics)
        theirs = f"the paper's {ref.row} (7B, {ref.setting}): {_numbers(TABLE1[ref.row], ref.metrics)}"
    if comparable:
        return f"This run ({run_label}): {ours}; {theirs} on {benchmark}."
    return (f"This run ({run_label}): {ours}. For reference, {theirs} on {benchmark}: a different experiment "
            f"(other data, other model{', another judge' if preset == 'magqa' else ''}), not comparable with this "
            "run; rerun the notebook on the real benchmark with the released checkpoint to compare (README).")
