"""The toy world, generated: synthetic duet videos small enough to train MMDuet on a CPU, with annotations in every format
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

import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..data.prompts import DVC_INSTRUCTIONS, GROUNDING_TEMPLATES
from ..model.template import DEFAULT_SYSTEM_PROMPT
from ..video import write_video

COLOURS = {"red": (230, 40, 40), "green": (40, 200, 60), "blue": (50, 90, 240), "yellow": (235, 220, 40),
           "white": (240, 240, 240)}
SHAPES = ("square", "circle", "triangle")
DIRECTIONS = {"right": (-1, 0, 1, 0), "left": (1, 0, -1, 0), "down": (0, -1, 0, 1), "up": (0, 1, 0, -1)}
MAGQA_QUESTION = "What is happening in the video?"
SIZE = 64  # pixels per side of the written videos
NATIVE_FPS = 4
OBJECT = 22  # object size in pixels
REPLY_SPAN = (0.5, 0.75)  # reply time as a fraction of its span ("0.25_0.5_earlier")
TOY_FPS = 2.0  # the toy model is trained and evaluated at 2 frames per second
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


def flash_annotations(videos: list[ToyVideo], rng: random.Random) -> list[dict]:
    """Grounding training rows for flash-card videos: the target shape and one other shape shown."""
    rows = []
    for video in videos:
        spans = queries_of(video)
        target = max(spans, key=lambda name: len(spans[name]))
        other = rng.choice(sorted(name for name in spans if name != target))
        rows += [{"video_uid": f"{video.name}.mp4", "query": name, "timestamps": spans[name]} for name in (target, other)]
    return rows


def toy_vocabulary() -> list[str]:
    """Every text the toy model may read or write (its tokenizer is trained on these)."""
    names = [f"a {c} {s}" for c in COLOURS for s in SHAPES]
    captions = [f"a {c} {s} moves {d}" for c in COLOURS for s in SHAPES for d in DIRECTIONS]
    captions += [f"a {c} {s} turns {n} and moves {d}" for c in COLOURS for n in COLOURS if n != c for s in SHAPES
                 for d in DIRECTIONS]
    prompts = [t % n for t in GROUNDING_TEMPLATES for n in names] + list(DVC_INSTRUCTIONS)
    return [DEFAULT_SYSTEM_PROMPT, MAGQA_QUESTION, *names, *captions, *prompts]
