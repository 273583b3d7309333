"""Tables for the notebooks and reports, as pandas DataFrames: the paper's tables beside runs on the real
benchmarks, toy-world runs in a table of their own, and a benchmark notebook's evaluation rows with honest names.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd

from .paper import MAGQA_TABLE, TABLE1, TABLE1_COLUMNS
from .runs import RunReport

GROUNDING_KEYS = ("mIoU", "R@0.3", "R@0.5", "R@0.7")

# What each preset's notebook measures, named by task (a toy-world run never carries a benchmark's name alone).
TASKS: dict[str, tuple[str, dict[str, str]]] = {
    "charades": ("grounding", {"R@0.5": "R@0.5", "R@0.7": "R@0.7", "mIoU": "mIoU"}),
    "qvh": ("highlight detection", {"HL-min-VeryGood-mAP": "VeryGood mAP", "HL-min-VeryGood-Hit1": "VeryGood HIT@1"}),
    "youcook2": ("dense captioning", {"SODA_c": "SODA_c", "CIDEr": "CIDEr", "F1": "F1"}),
    "magqa": ("answers in time", {"in_span_score": "in-span score", "turns": "turns", "dedup_turns": "distinct turns"}),
}


def grounding_rows(result: dict) -> pd.DataFrame:
    """The rows of one grounding evaluation (`evaluate_grounding(..., sweep=True)`), each named for what it is:
    the reported row, span IoU, the held-out selections (window and threshold chosen on one half of the queries,
    scored on the other), and the oracles (a threshold per video picked with its gold), at the reported window
    and over all windows."""
    w, t = result["window"], result["threshold"]
    queries = result["counts"]["evaluated"]
    rows = {f"frame-set IoU, w={w}, threshold {t:g} (reported)": (result["unrounded"], queries),
            f"span IoU of the longest run above the threshold, w={w}, threshold {t:g}": (result["span_iou"], queries)}
    halves = {"0": "A", "1": "B"}
    for name, h in result.get("heldout", {}).items():
        _, _, chose, _, scored = name.split("_")
        label = (f"held out: w={h['smooth_window_size']}, threshold {h['threshold']:g} chosen on half {halves[chose]}, "
                 f"scored on half {halves[scored]}")
        rows[label] = (h["scores"], h["queries"])
    oracles = result.get("oracle", [])
    at_w = next((r for r in oracles if r["smooth_window_size"] == w), None)
    if at_w:
        rows[f"oracle at w={w}: each video's best threshold, picked with its gold"] = (at_w["scores"], queries)
    if oracles:
        best = max(oracles, key=lambda r: r["scores"]["R@0.5"])
        rows[f"oracle over all windows (best w={best['smooth_window_size']}): each video's best threshold, "
             "picked with its gold"] = (best["scores"], queries)
    frame = pd.DataFrame.from_dict({name: {k: s[k] for k in GROUNDING_KEYS} | {"queries": n}
                                    for name, (s, n) in rows.items()}, orient="index")
    frame["queries"] = frame["queries"].astype(int)
    return frame


def table1(runs: Mapping[str, RunReport | None]) -> pd.DataFrame:
    """The paper's Table 1, every row, then one row per run on the real benchmark with a real checkpoint
    (`RunInfo.comparable`), filling its own benchmark's columns. Toy-world runs are left out: `toy_runs`."""
    columns = pd.MultiIndex.from_tuples(list(TABLE1_COLUMNS.values()), names=["benchmark", "metric"])
    rows = {f"paper: {name}": [values[k] for k in TABLE1_COLUMNS] for name, values in TABLE1.items()}
    for report in runs.values():
        if report and report.run and report.run.comparable:
            rows[f"this run: {report.run.label}"] = [
                report.metrics.get(k) if TABLE1_COLUMNS[k][0] == report.run.benchmark else None for k in TABLE1_COLUMNS]
    return pd.DataFrame.from_dict(rows, orient="index", columns=columns).astype(float)


def magqa_table(report: RunReport | None) -> pd.DataFrame:
    """The paper's MAGQA table, every row, then the run when it is comparable (real benchmark, an LLM judge)."""
    columns = {"score_llama": "score (LLaMA-3.1-70B judge)", "score_gpt4o": "score (GPT-4o judge)", "turns": "turns",
               "dedup_turns": "distinct turns", "time": "time (relative)"}
    rows = {f"paper: {name}": {columns[k]: v for k, v in values.items()} for name, values in MAGQA_TABLE.items()}
    if report and report.run and report.run.comparable and report.metrics.get("comparable_to_paper"):
        m = report.metrics
        judge = str(m.get("judge", ""))
        key = columns["score_gpt4o"] if "gpt" in judge.lower() else columns["score_llama"]
        rows[f"this run: {report.run.label}, threshold {report.parameters.get('THRESHOLD')}, judge {judge}"] = {
            key: m["in_span_score"], "turns": m["turns"], "distinct turns": m["dedup_turns"]}
    return pd.DataFrame.from_dict(rows, orient="index").astype(float)


def toy_runs(runs: Mapping[str, RunReport | None]) -> pd.DataFrame | None:
    """Runs that are not comparable with the paper (toy world or toy model) in their own table: columns named by
    task, never by benchmark; each row says what ran. None when there is none."""
    rows = {}
    for preset, report in runs.items():
        if not (report and report.run) or report.run.comparable:
            continue
        task, metrics = TASKS[preset]
        row = {(task, label): report.metrics.get(key) for key, label in metrics.items()}
        if preset == "magqa":
            row[(task, "judge")] = report.metrics.get("judge")
        rows[f"{task}: {report.run.label}"] = row
    if not rows:
        return None
    frame = pd.DataFrame.from_dict(rows, orient="index")
    frame.columns = pd.MultiIndex.from_tuples(frame.columns, names=["task (toy world)", "metric"])
    return frame


def runs_read(runs: Mapping[str, RunReport | None], folders: Mapping[str, str]) -> pd.DataFrame:
    """Which run folder each preset came from and what the run is (data, model, examples; comparable or not)."""
    rows = {}
    for preset, report in runs.items():
        what = report.run.label if report and report.run else ("no metrics.json" if report is None else "unlabelled")
        rows[TASKS[preset][0]] = {"run folder": str(folders[preset]), "what ran": what,
                                  "compared with the paper": bool(report and report.run and report.run.comparable)}
    return pd.DataFrame.from_dict(rows, orient="index")


def table1_caption(runs: Mapping[str, RunReport | None]) -> str:
    """What Table 1 below holds: the paper's rows, and which runs (if any) stand beside them."""
    real = [r.run.label for r in runs.values() if r and r.run and r.run.comparable]
    if real:
        return "The paper's Table 1 with this repository's runs on the real benchmarks: " + "; ".join(real) + "."
    return ("The paper's Table 1 alone: none of the run folders holds a run on a real benchmark with a real "
            "checkpoint, so no number of this repository stands beside the paper's. The toy-world runs follow in a "
            "table of their own.")


def run_numbers(runs: Mapping[str, RunReport | None]) -> dict[str, float | None]:
    """Each run's headline numbers, keyed by what the data was and the task: e.g. "toy world (synthetic) grounding
    R@0.5" or "Charades-STA test grounding R@0.5" (for metrics.json)."""
    out = {}
    for preset, report in runs.items():
        if report and report.run:
            task, metrics = TASKS[preset]
            out |= {f"{report.run.data} {task} {label}": report.metrics.get(key) for key, label in metrics.items()}
    return out


def reply_duplicates(runs: Mapping[str, RunReport | None]) -> tuple[dict[str, float], bool]:
    """The duplicate-reply rate of each run that replies (dense captioning, MAGQA) with a prediction file:
    ({"<task>: <run label>": share}, whether every one of them is comparable with the paper)."""
    from ..evaluation.records import duplicate_stats, read_jsonl

    shown = {p: r for p, r in runs.items() if p in ("youcook2", "magqa") and r and r.run and r.predictions.exists()}
    rates = {f"{TASKS[p][0]}: {r.run.label}": duplicate_stats(read_jsonl(r.predictions))["duplicate_rate"]
             for p, r in shown.items()}
    return rates, bool(shown) and all(r.run.comparable for r in shown.values())


def run_infos(runs: Mapping[str, RunReport | None]) -> dict[str, dict | None]:
    """{preset: what the run was (`RunInfo.to_dict()`), or None}, for metrics.json."""
    return {p: r.run.to_dict() if r and r.run else None for p, r in runs.items()}


def styled(frame: pd.DataFrame, digits: int = 1):
    """A DataFrame for display: numbers to `digits` decimals, missing values as a dash."""
    return frame.style.format(precision=digits, na_rep="–")


def loss_endpoints(history: Sequence[dict]) -> dict[str, float | None]:
    """First and last logged LM loss and head loss of a training log (`train(...)["history"]` rows)."""
    out = {}
    for key, name in (("lm_loss", "lm_loss"), ("video_loss", "head_loss")):
        values = [r[key] for r in history if key in r]
        out[f"{name}_first"], out[f"{name}_last"] = (values[0], values[-1]) if values else (None, None)
    return out
