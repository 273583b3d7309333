"""The toy world on disk: writing its splits, bringing an old one up to date, and where its files are.

    out/videos/<split>/<name>.mp4, out/annotations/<split>/{dvc,magqa,grounding,highlight}.json,
    out/annotations/<split>/highlight_gold.jsonl, out/annotations/train/{dvc,magqa,grounding}_train.json,
    out/annotations/flash/grounding_train.json, out/datasets.json (the training mixture), out/world.json (visits)
"""

from __future__ import annotations

import json
import random
import shutil
from dataclasses import asdict
from pathlib import Path

from tqdm.auto import tqdm

from .world import (
    TOY_FPS,
    ToyVideo,
    Visit,
    flash_annotations,
    sample_flash_video,
    sample_video,
    test_annotations,
    train_annotations,
    write_toy_video,
)

WORLD_FORMAT = 2  # bumped when a seed's world changes (2: near-miss flash cards, highlight queries fill a clip)
SPLITS = {"train": 320, "val": 24, "test": 40, "flash": 480}
SPLIT_SEEDS = {"train": 0, "val": 1, "test": 2, "flash": 3}  # so any subset of splits comes out the same


def _n_visits(rng: random.Random, split: str, index: int) -> int:
    if split != "train" and index % 10 == 9:
        return rng.randint(12, 16)  # a few long videos (about a minute)
    return rng.randint(3, 8)


def make_toyworld(out: str | Path, seed: int = 0, sizes: dict[str, int] | None = None,
                  progress: bool = True) -> dict:
    """Write videos and annotations under `out` (with `progress`, a progress bar per split: the full world takes
    about half a minute on two cores):

        videos/<split>/<name>.mp4, annotations/<split>/{dvc,magqa,grounding,highlight}.json,
        annotations/<split>/highlight_gold.jsonl, annotations/train/{dvc,magqa,grounding}_train.json,
        annotations/flash/grounding_train.json (flash cards), datasets.json (the training mixture),
        world.json (the visits, for teaching and plots)
    """
    out = Path(out)
    sizes = sizes or SPLITS
    world, counts = {}, {}
    for split, n in sizes.items():
        s_index = SPLIT_SEEDS.get(split, len(SPLIT_SEEDS))
        rng = random.Random(seed * 1000 + s_index)
        if split == "flash":
            videos = [sample_flash_video(f"flash{i:03d}", rng) for i in range(n)]
        else:
            videos = [sample_video(f"{split}{i:03d}", rng, _n_visits(rng, split, i)) for i in range(n)]
        bar = tqdm(videos, desc=f"toy world: {split} videos", unit="video", disable=not progress)
        for i, v in enumerate(bar):
            write_toy_video(v, out / "videos" / split / f"{v.name}.mp4", seed * 100000 + s_index * 1000 + i)
        world[split] = [{**asdict(v), "visits": [asdict(x) for x in v.visits]} for v in videos]
        ann = out / "annotations" / split
        ann.mkdir(parents=True, exist_ok=True)
        counts[split] = {"videos": n, "seconds": round(sum(v.duration for v in videos), 1)}
        if split == "flash":
            rows = flash_annotations(videos, rng)
            (ann / "grounding_train.json").write_text(json.dumps(rows, indent=1))
            counts[split]["grounding_queries"] = len(rows)
            continue
        tests = test_annotations(videos, rng)
        for kind in ("dvc", "magqa", "grounding", "highlight"):
            (ann / f"{kind}.json").write_text(json.dumps(tests[kind], indent=1))
        (ann / "highlight_gold.jsonl").write_text("".join(json.dumps(r) + "\n" for r in tests["qvh_gold"]))
        if split == "train":
            train = train_annotations(videos, rng)
            for kind, data in train.items():
                (ann / f"{kind}_train.json").write_text(json.dumps(data, indent=1))
        counts[split]["grounding_queries"] = len(tests["grounding"])
    if (out / "world.json").exists():  # a subset of splits keeps the others' visits
        world = {**json.loads((out / "world.json").read_text()), **world}
    (out / "world.json").write_text(json.dumps({**world, "format": WORLD_FORMAT}))
    (out / "datasets.json").write_text(json.dumps(toy_mixture(out), indent=1))
    return counts


def ensure_splits(out: str | Path, seed: int = 0, sizes: dict[str, int] | None = None, progress: bool = True) -> dict:
    """Make the splits of `sizes` (default: all) that `out` lacks or holds fewer videos of; keep the rest."""
    out, sizes = Path(out), sizes or SPLITS
    known = json.loads((out / "world.json").read_text()) if (out / "world.json").exists() else {}
    if known and known.get("format") != WORLD_FORMAT:  # an older version's world: remake every split it has
        sizes = {**{split: len(known[split]) for split in SPLITS if split in known}, **sizes}
        (out / "world.json").unlink()
        known = {}
    missing = {split: n for split, n in sizes.items() if len(known.get(split, [])) < n}
    return make_toyworld(out, seed, missing, progress) if missing else {}


def prepare_toy_benchmark(root: str | Path, test_file: str | Path, seed: int = 0, progress: bool = True) -> dict:
    """The benchmark notebooks' toy default: make the toy test split under `root` when `test_file` is missing,
    and bring a toy world written by an older version up to date; a folder holding other data is left alone."""
    root = Path(root)
    if (root / test_file).exists() and not (root / "world.json").exists():
        return {}
    return ensure_splits(root, seed, {"test": SPLITS["test"]}, progress)


def toy_mixture(root: Path | str, fps: float = TOY_FPS, max_num_frames: int = 128) -> list[dict]:
    """The training mixture in upstream's dataset-config form (spec §4.6), paths relative to `root`; the flash
    cards join it when they exist."""
    common = {"video_root": "videos/train", "frame_fps": fps, "max_num_frames": max_num_frames}
    mixture = [
        {"class": "DenseVideoCaptioningStreamDataset", "anno_file": "annotations/train/dvc_train.json", **common},
        {"class": "MAGQAStreamDataset", "anno_file": "annotations/train/magqa_train.json", **common},
        {"class": "GroundingStreamDataset", "anno_file": "annotations/train/grounding_train.json", **common},
    ]
    if (Path(root) / "annotations" / "flash" / "grounding_train.json").exists():
        mixture.append({"class": "GroundingStreamDataset", "anno_file": "annotations/flash/grounding_train.json",
                        **common, "video_root": "videos/flash"})
    return mixture


def install_samples(world: str | Path, assets: str | Path, seed: int = 0) -> list[Path]:
    """Copy the toy world's first test video (`sample_toy`) and its first long one (`demo_toy`, the demo's
    default), each with its visits as JSON, into the package assets."""
    world, assets = Path(world), Path(assets)
    tests = json.loads((world / "world.json").read_text())["test"]
    long_one = next(v for v in tests if len(v["visits"]) >= 10)
    written = []
    for stem, video in (("sample_toy", tests[0]), ("demo_toy", long_one)):
        shutil.copyfile(world / "videos" / "test" / f"{video['name']}.mp4", assets / f"{stem}.mp4")
        meta = {"video": f"{stem}.mp4", "split": "test", "seed": seed, **video}
        (assets / f"{stem}.json").write_text(json.dumps(meta, indent=1))
        written.append(assets / f"{stem}.mp4")
    return written


def load_split(world: str | Path, split: str) -> list[ToyVideo]:
    """The split's videos, visits included, from the world's `world.json`."""
    rows = json.loads((Path(world) / "world.json").read_text())[split]
    return [ToyVideo(r["name"], r["duration"], [Visit(**v) for v in r["visits"]], r["background"]) for r in rows]
