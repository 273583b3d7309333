"""The numbers a reproduction is held against: MMDuet's paper (arXiv 2411.17991 v2, identical to v1's Table 1),
as data, with the setting of each. One home for them: notebooks and figures read them from here."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

SETTING = "zero-shot, 7B LLMs; MMDuet = LLaVA-OneVision-Qwen2-7B + LoRA + informative/relevance heads, one V100"


@dataclass(frozen=True)
class PaperNumber:
    """One reported number and where it comes from."""

    benchmark: str  # e.g. "QVHighlights val"
    metric: str  # our metric key, e.g. "HL-min-VeryGood-mAP"
    label: str  # the paper's column name
    value: float
    setting: str  # what produced it (model variant, window, threshold)


# Table 1 rows of MMDuet (and the "remove previous replies" row for YouCook2), with the metric keys our
# evaluators print.
TABLE1 = (
    PaperNumber("QVHighlights val", "HL-min-VeryGood-mAP", "mAP", 31.3, "MMDuet, smoothing window 2"),
    PaperNumber("QVHighlights val", "HL-min-VeryGood-Hit1", "HIT@1", 49.6, "MMDuet, smoothing window 2"),
    PaperNumber("Charades-STA test", "R@0.5", "R@0.5", 42.4, "MMDuet, window 6, threshold not stated"),
    PaperNumber("Charades-STA test", "R@0.7", "R@0.7", 18.0, "MMDuet, window 6, threshold not stated"),
    PaperNumber("YouCook2 val", "SODA_c", "SODA_c", 2.9, "MMDuet + remove previous replies, sum threshold 2"),
    PaperNumber("YouCook2 val", "CIDEr", "CIDEr", 8.8, "MMDuet + remove previous replies, sum threshold 2"),
    PaperNumber("YouCook2 val", "F1", "F1", 21.7, "MMDuet + remove previous replies, sum threshold 2"),
)

# Table 1's other rows, for context (same columns; "-" where the paper has none).
BASELINES = {
    "TimeChat": {"HL-min-VeryGood-mAP": 14.5, "HL-min-VeryGood-Hit1": 23.9, "R@0.5": 32.2, "R@0.7": 13.4,
                 "SODA_c": 1.2, "CIDEr": 3.4, "F1": 12.6},
    "VTG-LLM": {"HL-min-VeryGood-mAP": 16.5, "HL-min-VeryGood-Hit1": 33.5, "R@0.5": 33.8, "R@0.7": 15.7,
                "SODA_c": 1.5, "CIDEr": 5.0, "F1": 17.5},
    "LLaVA-OV-VT": {"HL-min-VeryGood-mAP": 19.0, "HL-min-VeryGood-Hit1": 40.0, "R@0.5": 36.5, "R@0.7": 12.3,
                    "SODA_c": 2.5, "CIDEr": 6.7, "F1": 14.0},
    "MMDuet (previous replies kept)": {"HL-min-VeryGood-mAP": 31.3, "HL-min-VeryGood-Hit1": 49.6, "R@0.5": 42.4,
                                       "R@0.7": 18.0, "SODA_c": 2.4, "CIDEr": 5.7, "F1": 19.2},
}

# MAGQA (Shot2Story-MAGQA-39k test, 2,000 examples, replies removed from the context): threshold ->
# in-span score with the LLaMA-3.1-70B / GPT-4o judge, turns without / with de-duplication.
MAGQA = {
    0.6: {"score_llama": 2.46, "score_gpt4o": 2.33, "turns": 13.7, "dedup_turns": 4.0},
    0.5: {"score_llama": 2.77, "score_gpt4o": 2.61, "turns": 18.4, "dedup_turns": 5.3},
    0.4: {"score_llama": 3.00, "score_gpt4o": 2.81, "turns": 23.0, "dedup_turns": 6.6},
    0.3: {"score_llama": 3.13, "score_gpt4o": 2.93, "turns": 27.0, "dedup_turns": 7.6},
}

# Points read off the paper's smoothing-window figures (approximate).
WINDOW_CURVES = {
    "charades_R@0.5": ((0, 27.5), (8, 43.0)),
    "qvh_HIT@1": ((0, 46.5), (2, 49.8), (14, 40.0)),
}

# Later work's measurement of MMDuet's duplicate replies (ProactiveVideoQA), as a fraction.
DUPLICATE_RATE_RANGE = (0.81, 0.99)


BENCHMARK_REPORTS = {  # paper benchmark -> the notebook report folder whose metrics.json answers it
    "QVHighlights val": "05_qvhighlights",
    "Charades-STA test": "04_charades",
    "YouCook2 val": "02_youcook2",
}


def table1_rows(reports: dict[str, dict]) -> list[dict]:
    """Table 1 beside this run: one row per reported number, with ours from the notebook reports
    (`reports[folder]` = that folder's metrics.json) and the setting each comes from."""
    rows = []
    for number in TABLE1:
        report = reports.get(BENCHMARK_REPORTS[number.benchmark])
        ours = report["metrics"].get(number.metric) if report else None
        rows.append({"benchmark": number.benchmark, "metric": number.label, "paper": number.value,
                     "paper setting": number.setting, "this run": ours,
                     "this run setting": run_setting(report) if report else "not run"})
    return rows


def run_setting(report: dict) -> str:
    """A one-line description of what produced a notebook's metrics (model, data, examples)."""
    p, m = report.get("parameters", {}), report.get("metrics", {})
    model = "toy model" if p.get("MODEL") == "toy" else f"{p.get('MODEL')} + {p.get('ADAPTER') or 'no adapter'}"
    data = "toy world" if "toyworld" in str(p.get("DATA_ROOT", "")) else str(p.get("TEST_FILE", "?"))
    extra = ", ".join(f"{k.lower()} {p[k]}" for k in ("WINDOW", "THRESHOLD", "FPS") if k in p)
    return f"{model} on {data}, {m.get('evaluated', '?')} examples" + (f", {extra}" if extra else "")


def gold_file(report: dict, key: str = "TEST_FILE") -> Path:
    """The gold file a benchmark notebook was scored against: its DATA_ROOT / `key` (a path; nothing is made)."""
    p = report["parameters"]
    return Path(p["DATA_ROOT"]) / p[key]


def markdown_table(rows: list[dict], digits: int = 1) -> str:
    """Rows of equal keys as a Markdown table (numbers rounded, missing values as '-')."""
    if not rows:
        return ""
    keys = list(rows[0])

    def cell(value) -> str:
        if value is None:
            return "-"
        return f"{value:.{digits}f}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(cell(r.get(k)) for k in keys) + " |" for r in rows]
    return "\n".join(lines)
