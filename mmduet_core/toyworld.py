"""The toy world: synthetic duet videos small enough to train MMDuet on a CPU, with annotations in every format
the package reads.

A video is a sequence of *visits*: a coloured shape (square, circle or triangle) enters from one side, crosses
the frame, sometimes changes colour halfway, and leaves on the other side; the next visit starts when it has
gone (occasionally after a short empty gap). Every annotation derives from the visits:

* dense captioning: one caption per visit ("a red square moves right"), gold span = the visit;
* MAGQA: "What is happening in the video?" with the visits' captions as timed answers;
* grounding: "a red square" -> the spans of its visits;
* highlights: the same query, 2 s clip saliency from 3 simulated annotators (how much of the clip shows it),
  for the objects on screen throughout at least one clip;
* training files (DVC, MAGQA, grounding) with reply times inside the spans as in upstream's
  "0.25_0.5_earlier" files (between 50 % and 75 % of the span, spec §4.5).

Splits use disjoint videos. Everything is a pure function of the seed.
"""

from __future__ import annotations

import json
import math
import random
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .data.prompts import DVC_INSTRUCTIONS, GROUNDING_TEMPLATES
from .video import write_video

COLOURS = {"red": (230, 40, 40), "green": (40, 200, 60), "blue": (50, 90, 240), "yellow": (235, 220, 40),
           "white": (240, 240, 240)}
SHAPES = ("square", "circle", "triangle")
DIRECTIONS = {"right": (-1, 0, 1, 0), "left": (1, 0, -1, 0), "down": (0, -1, 0, 1), "up": (0, 1, 0, -1)}
MAGQA_QUESTION = "What is happening in the video?"
SIZE = 64  # pixels per side of the written videos
NATIVE_FPS = 4
OBJECT = 22  # object size in pixels
REPLY_SPAN = (0.5, 0.75)  # reply time as a fraction of its span ("0.25_0.5_earlier")
VISIT_SECONDS = (2.5, 3.0, 3.5, 4.0, 5.0)  # how long a shape takes to cross; short visits give the relevance
# head many object-versus-query comparisons per second of video, which is what it learns binding from


@dataclass
class Visit:
    shape: str
    colour: str
    direction: str
    start: float
    end: float
    new_colour: str | None = None  # colour after the halfway point
    position: tuple[float, float] | None = None  # a flash: the shape stands still here (centre x, y in pixels)

    @property
    def caption(self) -> str:
        if self.new_colour:
            return f"a {self.colour} {self.shape} turns {self.new_colour} and moves {self.direction}"
        return f"a {self.colour} {self.shape} moves {self.direction}"

    def query_names(self) -> list[str]:
        names = [f"a {self.colour} {self.shape}"]
        if self.new_colour:
            names.append(f"a {self.new_colour} {self.shape}")
        return names

    def visible_fraction(self, t0: float, t1: float) -> float:
        return max(0.0, min(t1, self.end) - max(t0, self.start)) / (t1 - t0)


@dataclass
class ToyVideo:
    name: str
    duration: float
    visits: list[Visit]
    background: int  # grey level


# ---- generating -----------------------------------------------------------------------------------------------

def sample_video(name: str, rng: random.Random, n_visits: int) -> ToyVideo:
    t, visits, last = 0.0, [], None
    for _ in range(n_visits):
        if visits and rng.random() < 0.25:
            t += rng.choice((1.0, 1.5, 2.0))  # an empty gap
        while True:
            shape, colour = rng.choice(SHAPES), rng.choice(list(COLOURS))
            if (shape, colour) != last:
                break
        length = rng.choice(VISIT_SECONDS)
        new_colour = rng.choice([c for c in COLOURS if c != colour]) if rng.random() < 0.3 else None
        visits.append(Visit(shape, colour, rng.choice(list(DIRECTIONS)), t, t + length, new_colour))
        last = (shape, colour)
        t += length
    return ToyVideo(name, t + rng.choice((0.0, 0.5, 1.0)), visits, rng.randrange(20, 60))


FLASH_SECONDS = 0.5  # one flash per frame at the toy world's 2 frames per second


def sample_flash_video(name: str, rng: random.Random, n_flashes: int = 32) -> ToyVideo:
    """Flash cards for the relevance head: every half second a still shape at a random place (or nothing);
    about a third of the flashes show one target shape and a third a near miss, the target's colour on
    another shape: colour alone is an easy cue, and without near misses the head learns nothing else.
    Training only (see `train_annotations`)."""
    target = (rng.choice(SHAPES), rng.choice(list(COLOURS)))
    others = [(s, c) for s in SHAPES for c in COLOURS if (s, c) != target]
    near_misses = [(s, target[1]) for s in SHAPES if s != target[0]]
    visits, margin = [], OBJECT / 2
    for k in range(n_flashes):
        r = rng.random()
        if r < 0.15:
            continue
        shape, colour = target if r < 0.45 else rng.choice(near_misses) if r < 0.75 else rng.choice(others)
        where = (rng.uniform(margin, SIZE - margin), rng.uniform(margin, SIZE - margin))
        visits.append(Visit(shape, colour, "right", k * FLASH_SECONDS, (k + 1) * FLASH_SECONDS, position=where))
    return ToyVideo(name, n_flashes * FLASH_SECONDS, visits, rng.randrange(20, 60))


def _mask(shape: str, size: int) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    c = (size - 1) / 2
    if shape == "square":
        return np.ones((size, size), bool)
    if shape == "circle":
        return (yy - c) ** 2 + (xx - c) ** 2 <= (size / 2) ** 2
    return (yy >= size - 1 - 2 * np.abs(xx - c)) & (yy <= size - 1)  # triangle, apex up


OBJECT_AREA = {shape: int(_mask(shape, OBJECT).sum()) for shape in SHAPES}


def on_screen(video: ToyVideo, t: float) -> list[tuple[Visit, str, slice, slice, np.ndarray]]:
    """The objects drawn at time t: (visit, its colour then, frame rows, frame columns, mask of those pixels)."""
    out = []
    for v in video.visits:
        if not v.start <= t < v.end:
            continue
        progress = (t - v.start) / (v.end - v.start)
        x0, y0, x1, y1 = DIRECTIONS[v.direction]
        travel = SIZE + OBJECT
        cx = SIZE / 2 + (x0 + (x1 - x0) * progress) * travel / 2
        cy = SIZE / 2 + (y0 + (y1 - y0) * progress) * travel / 2
        if v.position is not None:
            cx, cy = v.position
        colour = v.new_colour if v.new_colour and progress >= 0.5 else v.colour
        top, left = int(round(cy - OBJECT / 2)), int(round(cx - OBJECT / 2))
        ys, xs = slice(max(top, 0), min(top + OBJECT, SIZE)), slice(max(left, 0), min(left + OBJECT, SIZE))
        if ys.stop > ys.start and xs.stop > xs.start:
            out.append((v, colour, ys, xs, _mask(v.shape, OBJECT)[ys.start - top:ys.stop - top, xs.start - left:xs.stop - left]))
    return out


def render_frame(video: ToyVideo, t: float, rng: np.random.Generator) -> np.ndarray:
    """The frame at time t: (SIZE, SIZE, 3) uint8."""
    frame = np.full((SIZE, SIZE, 3), video.background, np.uint8)
    frame += rng.integers(0, 6, frame.shape, dtype=np.uint8)
    for _, colour, ys, xs, mask in on_screen(video, t):
        frame[ys, xs][mask] = COLOURS[colour]
    return frame


def write_toy_video(video: ToyVideo, path: Path, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    n = int(round(video.duration * NATIVE_FPS))
    return write_video(path, (render_frame(video, i / NATIVE_FPS, rng) for i in range(n)), NATIVE_FPS, crf=12)


# ---- annotations --------------------------------------------------------------------------------------------

def _r(x: float) -> float:
    return round(x, 2)


def _reply_time(v: Visit, rng: random.Random) -> float:
    return _r(v.start + rng.uniform(*REPLY_SPAN) * (v.end - v.start))


def queries_of(video: ToyVideo) -> dict[str, list[list[float]]]:
    """Object description -> the spans in which it is on screen (a colour change splits a visit)."""
    out: dict[str, list[list[float]]] = {}
    for v in video.visits:
        mid = (v.start + v.end) / 2
        parts = [(v.colour, v.start, mid), (v.new_colour, mid, v.end)] if v.new_colour else [(v.colour, v.start, v.end)]
        for colour, s, e in parts:
            out.setdefault(f"a {colour} {v.shape}", []).append([_r(s), _r(e)])
    return out


def test_annotations(videos: list[ToyVideo], rng: random.Random) -> dict[str, list[dict]]:
    """The four benchmark test files' examples, plus QVHighlights-style gold rows."""
    dvc, magqa, grounding, highlight, qvh_gold = [], [], [], [], []
    qid = 0
    for video in videos:
        rel = f"{video.name}.mp4"
        answers = [{"content": v.caption, "time": [_r(v.start), _r(v.end)]} for v in video.visits]
        dvc.append({"question_id": video.name, "video": rel, "duration": _r(video.duration),
                    "conversation": [{"role": "user", "content": rng.choice(DVC_INSTRUCTIONS), "time": 0.0}],
                    "answer": answers})
        magqa.append({"question_id": video.name, "video": rel, "duration": _r(video.duration),
                      "conversation": [{"role": "user", "content": MAGQA_QUESTION, "time": 0.0}], "answer": answers})
        for k, (name, spans) in enumerate(sorted(queries_of(video).items())):
            prompt = rng.choice(GROUNDING_TEMPLATES) % name
            grounding.append({"question_id": f"{video.name}_{k}", "video": rel, "duration": _r(video.duration),
                              "conversation": [{"role": "user", "content": prompt, "time": 0.0}], "query": name,
                              "timestamps": spans})
            row = _highlight_row(video, name, spans, qid, rng)
            if row is None:
                continue
            qvh_gold.append(row)
            highlight.append({"question_id": qid, "video": rel, "duration": row["duration"],
                              "conversation": [{"role": "user", "content": prompt, "time": 0.0}], "query": name,
                              **{k2: row[k2] for k2 in ("qid", "relevant_clip_ids", "saliency_scores", "relevant_windows")}})
            qid += 1
    return {"dvc": dvc, "magqa": magqa, "grounding": grounding, "highlight": highlight, "qvh_gold": qvh_gold}


def _clip_shown(spans, clip: int) -> float:
    """Fraction of 2 s clip `clip` inside the spans."""
    return sum(max(0.0, min(2 * clip + 2, e) - max(2 * clip, s)) for s, e in spans) / 2


def _highlight_row(video: ToyVideo, name: str, spans, qid: int, rng: random.Random) -> dict | None:
    """2 s clips; each annotator scores 0-4 from how much of the clip shows the object, +-1 noise. None when no
    clip shows the object throughout (QVHighlights' moments are whole clips); its scores are drawn all the same,
    so the random stream, and every annotation after it, does not depend on that choice."""
    n_clips = int(video.duration // 2)
    ids, scores, fills_a_clip = [], [], False
    for c in range(n_clips):
        shown = _clip_shown(spans, c)
        if shown <= 0:
            continue
        fills_a_clip |= shown >= 1 - 1e-6
        base = 4 * shown
        ids.append(c)
        scores.append([int(min(4, max(0, round(base + rng.choice((-1, 0, 0, 0, 1)))))) for _ in range(3)])
    if not fills_a_clip:
        return None
    return {"qid": qid, "query": name, "duration": float(2 * n_clips), "vid": video.name,
            "relevant_windows": [[s, e] for s, e in spans], "relevant_clip_ids": ids, "saliency_scores": scores}


def train_annotations(videos: list[ToyVideo], rng: random.Random) -> dict:
    """Upstream's three training formats (spec §4.2-4.4)."""
    dvc, magqa, grounding = {}, [], []
    for video in videos:
        uid = f"{video.name}.mp4"  # upstream: video_uid is the path relative to video_root
        dvc[uid] = {"0": [{"text": v.caption, "time": _reply_time(v, rng), "timespan": [_r(v.start), _r(v.end)]}
                                 for v in video.visits]}
        ask = _r(rng.choice((0.5, 1.0)))
        magqa.append({"video_uid": uid, "conversation": [{"role": "user", "content": MAGQA_QUESTION, "time": ask}] + [
            {"role": "assistant", "content": v.caption, "time": max(_reply_time(v, rng), ask + 0.5),
             "timespan": [_r(v.start), _r(v.end)]} for v in video.visits]})
        for name, spans in sorted(queries_of(video).items()):
            grounding.append({"video_uid": uid, "query": name, "timestamps": spans})
    return {"dvc": dvc, "magqa": magqa, "grounding": grounding}


# ---- the world on disk --------------------------------------------------------------------------------------

WORLD_FORMAT = 2  # bumped when a seed's world changes (2: near-miss flash cards, highlight queries fill a clip)
SPLITS = {"train": 320, "val": 24, "test": 40, "flash": 480}
SPLIT_SEEDS = {"train": 0, "val": 1, "test": 2, "flash": 3}  # so any subset of splits comes out the same


def _n_visits(rng: random.Random, split: str, index: int) -> int:
    if split != "train" and index % 10 == 9:
        return rng.randint(12, 16)  # a few long videos (about a minute)
    return rng.randint(3, 8)


def flash_annotations(videos: list[ToyVideo], rng: random.Random) -> list[dict]:
    """Grounding training rows for flash-card videos: the target shape and one other shape shown."""
    rows = []
    for video in videos:
        spans = queries_of(video)
        target = max(spans, key=lambda name: len(spans[name]))
        other = rng.choice(sorted(name for name in spans if name != target))
        rows += [{"video_uid": f"{video.name}.mp4", "query": name, "timestamps": spans[name]} for name in (target, other)]
    return rows


def make_toyworld(out: str | Path, seed: int = 0, sizes: dict[str, int] | None = None) -> dict:
    """Write videos and annotations under `out`:

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
        for i, v in enumerate(videos):
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


def ensure_splits(out: str | Path, seed: int = 0, sizes: dict[str, int] | None = None) -> dict:
    """Make the splits of `sizes` (default: all) that `out` lacks or holds fewer videos of; keep the rest."""
    out, sizes = Path(out), sizes or SPLITS
    known = json.loads((out / "world.json").read_text()) if (out / "world.json").exists() else {}
    if known and known.get("format") != WORLD_FORMAT:  # an older version's world: remake every split it has
        sizes = {**{split: len(known[split]) for split in SPLITS if split in known}, **sizes}
        (out / "world.json").unlink()
        known = {}
    missing = {split: n for split, n in sizes.items() if len(known.get(split, [])) < n}
    return make_toyworld(out, seed, missing) if missing else {}


def prepare_toy_benchmark(root: str | Path, test_file: str | Path, seed: int = 0) -> dict:
    """The benchmark notebooks' toy default: make the toy test split under `root` when `test_file` is missing,
    and bring a toy world written by an older version up to date; a folder holding other data is left alone."""
    root = Path(root)
    if (root / test_file).exists() and not (root / "world.json").exists():
        return {}
    return ensure_splits(root, seed, {"test": SPLITS["test"]})


def toy_mixture(root: Path | str, fps: float = 2.0, max_num_frames: int = 128) -> list[dict]:
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


def toy_vocabulary() -> list[str]:
    """Every text the toy model may read or write (its tokenizer is trained on these)."""
    from .template import DEFAULT_SYSTEM_PROMPT

    names = [f"a {c} {s}" for c in COLOURS for s in SHAPES]
    captions = [f"a {c} {s} moves {d}" for c in COLOURS for s in SHAPES for d in DIRECTIONS]
    captions += [f"a {c} {s} turns {n} and moves {d}" for c in COLOURS for n in COLOURS if n != c for s in SHAPES
                 for d in DIRECTIONS]
    prompts = [t % n for t in GROUNDING_TEMPLATES for n in names] + list(DVC_INSTRUCTIONS)
    return [DEFAULT_SYSTEM_PROMPT, MAGQA_QUESTION, *names, *captions, *prompts]


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


# ---- evaluating a model on the toy world --------------------------------------------------------------------

TOY_FPS = 2.0  # the toy model is trained and evaluated at 2 frames per second
TOY_GROUNDING = {"window": 2, "threshold": 0.5}  # the toy table's grounding setting (upstream's Charades script)
TOY_HIGHLIGHT_WINDOW = 2


def toy_presets() -> dict:
    """Upstream's four benchmark settings at the toy world's frame rate."""
    from dataclasses import replace

    from .runner import PRESETS

    return {name: replace(p.config, fps=TOY_FPS) for name, p in PRESETS.items()}


ORACLE_MATCHES = ("exact", "colour", "shape")


def load_split(world: str | Path, split: str) -> list[ToyVideo]:
    """The split's videos, visits included, from the world's `world.json`."""
    rows = json.loads((Path(world) / "world.json").read_text())[split]
    return [ToyVideo(r["name"], r["duration"], [Visit(**v) for v in r["visits"]], r["background"]) for r in rows]


def oracle_records(world: str | Path, split: str, kind: str, match: str = "exact") -> list[dict]:
    """Inference records for the `kind` ("grounding" or "highlight") test file whose relevance score is what
    a perfect eye reports: the fraction of the queried object's pixels on screen in each frame. With `match`
    "colour" (or "shape") any object of the query's colour (or shape) counts, which shows what a model
    that ignores the other attribute can score."""
    if match not in ORACLE_MATCHES:
        raise ValueError(f"oracle match {match!r}: expected one of {ORACLE_MATCHES}")
    videos = {v.name: v for v in load_split(world, split)}
    records = []
    for example in json.loads((Path(world) / "annotations" / split / f"{kind}.json").read_text()):
        video = videos[Path(example["video"]).stem]
        _, colour, shape = example["query"].split(" ")
        wanted = {"exact": (colour, shape), "colour": (colour, None), "shape": (None, shape)}[match]
        debug = []
        for k in range(math.ceil(example["duration"] * TOY_FPS)):
            t = k / TOY_FPS
            score = max((mask.sum() / OBJECT_AREA[v.shape] for v, c, _, _, mask in on_screen(video, t)
                         if wanted[0] in (None, c) and wanted[1] in (None, v.shape)), default=0.0)
            debug.append({"time": t, "informative_score": 0.0, "relevance_score": round(float(score), 4)})
        records.append({"question_id": example["question_id"], "video_duration": example["duration"],
                        "model_response_list": example["conversation"], "debug_data": debug})
    return records


def evaluate_oracle(world: str | Path, split: str = "test", match: str = "exact") -> dict:
    """Grounding and highlight numbers of `oracle_records`, with the settings `evaluate_on_toyworld` uses:
    the ceiling a model can reach on this world's gold, and what ignoring colour or shape costs."""
    import tempfile

    from .evaluation.grounding import evaluate_grounding
    from .evaluation.highlight import evaluate_highlight

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
    """Stream the split's videos with the four benchmark settings and score them; returns the metric table."""
    import tempfile

    from .evaluation.dvc import evaluate_dvc
    from .evaluation.grounding import evaluate_grounding
    from .evaluation.highlight import evaluate_highlight
    from .evaluation.magqa import evaluate_magqa
    from .runner import run_benchmark

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
    dvc = evaluate_dvc(preds["dvc"], ann / "dvc.json")
    grounding = evaluate_grounding(preds["grounding"], ann / "grounding.json", sweep=True, **TOY_GROUNDING)
    highlight = evaluate_highlight(preds["highlight"], ann / "highlight_gold.jsonl", window=TOY_HIGHLIGHT_WINDOW)
    magqa = evaluate_magqa(preds["magqa"], ann / "magqa.json", judge="offline")
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
