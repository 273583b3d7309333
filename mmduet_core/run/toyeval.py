"""Scoring models on the toy world: the four benchmarks streamed with upstream's settings at the toy world's frame
rate, and oracles that read relevance straight from the world's geometry (the ceiling a model can reach)."""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

from ..errors import InputError
from ..evaluation.dvc import evaluate_dvc
from ..evaluation.grounding import evaluate_grounding
from ..evaluation.highlight import evaluate_highlight
from ..evaluation.magqa import evaluate_magqa
from ..toyworld.store import load_split
from ..toyworld.world import OBJECT_AREA, TOY_FPS, on_screen
from ..video import FrameClock
from .benchmark import PRESETS, run_benchmark

TOY_GROUNDING = {"window": 2, "threshold": 0.5}  # the toy table's grounding setting (upstream's Charades script)
TOY_HIGHLIGHT_WINDOW = 2


def toy_presets() -> dict:
    """Upstream's four benchmark settings at the toy world's frame rate."""
    return {name: p.settings.replace(fps=TOY_FPS) for name, p in PRESETS.items()}


ORACLE_MATCHES = ("exact", "colour", "shape")


def oracle_records(world: str | Path, split: str, kind: str, match: str = "exact") -> list[dict]:
    """Inference records for the `kind` ("grounding" or "highlight") test file whose relevance score is what
    a perfect eye reports: the fraction of the queried object's pixels on screen in each frame. With `match`
    "colour" (or "shape") any object of the query's colour (or shape) counts, which shows what a model
    that ignores the other attribute can score."""
    if match not in ORACLE_MATCHES:
        raise InputError(f"oracle match {match!r}: expected one of {ORACLE_MATCHES}")
    videos = {v.name: v for v in load_split(world, split)}
    records = []
    for example in json.loads((Path(world) / "annotations" / split / f"{kind}.json").read_text()):
        video = videos[Path(example["video"]).stem]
        _, colour, shape = example["query"].split(" ")
        wanted = {"exact": (colour, shape), "colour": (colour, None), "shape": (None, shape)}[match]
        debug = []
        for t in FrameClock(TOY_FPS).times(math.ceil(example["duration"] * TOY_FPS)).tolist():
            score = max((mask.sum() / OBJECT_AREA[v.shape] for v, c, _, _, mask in on_screen(video, t)
                         if wanted[0] in (None, c) and wanted[1] in (None, v.shape)), default=0.0)
            debug.append({"time": t, "informative_score": 0.0, "relevance_score": round(float(score), 4)})
        records.append({"question_id": example["question_id"], "video_duration": example["duration"],
                        "model_response_list": example["conversation"], "debug_data": debug})
    return records


def evaluate_oracle(world: str | Path, split: str = "test", match: str = "exact") -> dict:
    """Grounding and highlight numbers of `oracle_records`, with the settings `evaluate_on_toyworld` uses:
    the ceiling a model can reach on this world's gold, and what ignoring colour or shape costs."""
    ann = Path(world) / "annotations" / split
    with tempfile.TemporaryDirectory() as tmp:
        files = {}
        for kind in ("grounding", "highlight"):
            files[kind] = Path(tmp) / f"{kind}_oracle.jsonl"
            files[kind].write_text("".join(json.dumps(r) + "\n" for r in oracle_records(world, split, kind, match)))
        grounding = evaluate_grounding(files["grounding"], ann / "grounding.json", **TOY_GROUNDING)
        highlight = evaluate_highlight(files["highlight"], ann / "highlight_gold.jsonl", window=TOY_HIGHLIGHT_WINDOW)
    return {"grounding_R@0.5": grounding["R@0.5"], "grounding_mIoU": grounding["mIoU"],
            "highlight_VeryGood_mAP": highlight["HL-min-VeryGood-mAP"],
            "highlight_VeryGood_Hit1": highlight["HL-min-VeryGood-Hit1"]}


def evaluate_on_toyworld(model, tokenizer, world: str | Path, split: str = "test", out_dir: str | Path | None = None,
                         limit: int | None = None, progress: bool = False) -> dict:
    """Stream the split's videos with the four benchmark settings and score them; returns the metric table.
    With `limit`, only the examples run are scored (the rest of the gold is left out, not counted as zero)."""
    world = Path(world)
    ann, videos = world / "annotations" / split, world / "videos" / split
    tmp = tempfile.TemporaryDirectory() if out_dir is None else None
    out = Path(out_dir or tmp.name)
    presets = toy_presets()
    runs = {"youcook2": "dvc", "magqa": "magqa", "charades": "grounding", "qvh": "highlight"}
    preds = {}
    for preset, kind in runs.items():
        preds[kind] = out / f"{kind}_pred.jsonl"
        run_benchmark(model, tokenizer, ann / f"{kind}.json", videos, preds[kind], presets[preset], resume=False,
                      limit=limit, progress=progress, benchmark=kind)
    coverage = "predictions" if limit else "gold"
    dvc = evaluate_dvc(preds["dvc"], ann / "dvc.json", coverage=coverage)
    grounding = evaluate_grounding(preds["grounding"], ann / "grounding.json", sweep=True, coverage=coverage,
                                   **TOY_GROUNDING)
    highlight = evaluate_highlight(preds["highlight"], ann / "highlight_gold.jsonl", window=TOY_HIGHLIGHT_WINDOW,
                                   coverage=coverage)
    magqa = evaluate_magqa(preds["magqa"], ann / "magqa.json", judge="offline", coverage=coverage)
    table = {"dvc_F1": dvc["F1"], "dvc_CIDEr": dvc["CIDEr"], "dvc_SODA_c": dvc["SODA_c"],
             "grounding_R@0.5": grounding["R@0.5"], "grounding_mIoU": grounding["mIoU"],
             "grounding_span_R@0.5": round(grounding["span_iou"]["R@0.5"], 2),
             "highlight_VeryGood_mAP": highlight["HL-min-VeryGood-mAP"],
             "highlight_VeryGood_Hit1": highlight["HL-min-VeryGood-Hit1"],
             "magqa_offline_score": magqa["in_span_score"], "magqa_turns": magqa["turns"],
             "magqa_dedup_turns": magqa["dedup_turns"]}
    if tmp is not None:
        tmp.cleanup()
    return {"table": table, "dvc": dvc, "grounding": {k: v for k, v in grounding.items() if k != "sweep"},
            "highlight": highlight, "magqa": magqa}
