"""Training stream datasets and the collator (upstream spec §3.4, §4.1-4.7).

Three datasets turn annotations into duet conversations with per-frame labels: dense captioning (Shot2Story,
COIN), MAGQA (Shot2Story-MAGQA) and grounding (DiDeMo, HiREST, QueryD). The collator emits the labels the model
reads (`informative_labels`, `relevance_labels`: upstream bug B1 fixed). Kept from upstream: the forced
position-0 targets of label-free batches (B11, in the model), DVC's unclipped reply positions are clipped here
(B12, documented choice), MAGQA's waiting frames (B13), `max_num_frames` 128 (B18). Bad examples (missing
video, empty conversation, reply after the end of the video) are skipped at construction and counted.
"""

from __future__ import annotations

import json
import math
import os
import random
import warnings
from collections import Counter, OrderedDict
from pathlib import Path

import torch
from torch.utils.data import ConcatDataset, Dataset

from ..data.prompts import DVC_INSTRUCTIONS, GROUNDING_TEMPLATES
from ..errors import InputError
from ..model import IGNORE_INDEX
from ..model.template import DEFAULT_SYSTEM_PROMPT, learn_ranges, render
from ..video import VideoError, build_metadata, read_video


def ceil_time(t: float, fps: float, lo: float = 0.0, hi: float = math.inf) -> float:
    """Round a time up to the frame grid, clamped to [lo, hi]."""
    return min(max(math.ceil(t * fps) / fps, lo), hi)


class FrameCache:
    """Decoded training videos, least recently used dropped first, bounded in bytes. One cache serves every
    dataset of a mixture (the DVC and MAGQA files of a corpus share their videos); each dataloader worker has
    its own copy."""

    def __init__(self, max_bytes: int):
        self.max_bytes, self.bytes = max_bytes, 0
        self._items: OrderedDict = OrderedDict()

    def get(self, key) -> torch.Tensor | None:
        frames = self._items.get(key)
        if frames is not None:
            self._items.move_to_end(key)
        return frames

    def put(self, key, frames: torch.Tensor) -> None:
        size = frames.numel() * frames.element_size()
        if size > self.max_bytes:
            return
        self._items[key] = frames
        self.bytes += size
        while self.bytes > self.max_bytes:
            _, old = self._items.popitem(last=False)
            self.bytes -= old.numel() * old.element_size()


# 2 GiB by default: all of the toy world, or about 36 clips of 128 frames at 384 px (7B training)
FRAME_CACHE = FrameCache(int(float(os.environ.get("MMDUET_FRAME_CACHE_GB", "2")) * 2**30))


class StreamDataset(Dataset):
    """Common base (upstream StreamMixIn): metadata, frame loading, clipping, labels, rendering."""

    def __init__(self, video_root: str | Path, anno_file: str | Path, tokenizer, frame_fps: float = 2.0,
                 frame_size: int = 384, max_num_frames: int = 128, system_prompt: str = DEFAULT_SYSTEM_PROMPT,
                 metadata_path: str | Path | None = None, frame_num_tokens: int = 49, seed: int = 0):
        self.video_root, self.tokenizer = Path(video_root), tokenizer
        self.fps, self.frame_size, self.max_num_frames = frame_fps, frame_size, max_num_frames
        self.system_prompt, self.frame_num_tokens = system_prompt, frame_num_tokens
        self.rng = random.Random(seed)
        self.metadata = build_metadata(self.video_root, metadata_path, progress=False)
        self.skipped: Counter = Counter()
        self.examples = self.build(json.loads(Path(anno_file).read_text()))
        if self.skipped:
            warnings.warn(f"{anno_file}: skipped {dict(self.skipped)}", stacklevel=2)

    # subclasses: annotations -> [(conversation, video_uid, load_range)]
    def build(self, annotations) -> list:
        raise NotImplementedError

    def duration(self, uid: str) -> float | None:
        meta = self.metadata.get(uid)
        if meta is None or meta.get("error") or meta["duration"] <= 0:
            self.skipped["missing or unreadable video"] += 1
            return None
        return meta["duration"]

    def load_frames(self, uid: str, load_range: range) -> torch.Tensor:
        key = (str(self.video_root / uid), self.fps, self.frame_size)
        frames = FRAME_CACHE.get(key)
        if frames is None:
            frames = read_video(self.video_root / uid, fps=self.fps, max_frames=None, resolution=self.frame_size,
                                rule="floor").frames
            FRAME_CACHE.put(key, frames)
        if load_range.stop > len(frames):
            raise VideoError(f"{uid}: frames {load_range.start}-{load_range.stop} asked, {len(frames)} decoded")
        return frames[load_range.start:load_range.stop]

    @staticmethod
    def max_frames_clip(conversation: list[dict], load_range: range, max_frames: int) -> tuple[list[dict], range]:
        """Cut the conversation at `max_frames` frames (upstream's rule, a trailing stream turn kept)."""
        total = 0
        for i, turn in enumerate(conversation):
            if turn["role"] != "stream":
                continue
            if total + turn["num_frames"] >= max_frames:
                if total < max_frames:
                    conversation = conversation[:i] + [{**turn, "num_frames": max_frames - total}]
                else:
                    conversation = conversation[:i]
                return conversation, range(load_range.start, load_range.start + max_frames)
            total += turn["num_frames"]
        return conversation, load_range

    # labels (generic rules, §4.1)
    @staticmethod
    def informative_labels(conversation: list[dict]) -> list[int]:
        labels = []
        for i, turn in enumerate(conversation):
            if turn["role"] != "stream" or turn["num_frames"] <= 0:
                continue
            n = turn["num_frames"]
            if not turn.get("learn"):
                labels += [IGNORE_INDEX] * n
                continue
            nxt = conversation[i + 1] if i + 1 < len(conversation) else None
            r = min(max(int(nxt.get("response_frame_num", 1)) if nxt else 1, 1), n)  # clipped (B12)
            positive = 1 if nxt is not None and nxt["role"] == "assistant" else 0
            labels += [0] * (n - r) + [positive] * r
        return labels

    @staticmethod
    def relevance_labels(conversation: list[dict]) -> list[int]:
        labels = []
        for turn in conversation:
            if turn["role"] != "stream" or turn["num_frames"] <= 0:
                continue
            if turn.get("learn") and "related" in turn:
                for run_frames, related in turn["related"]:
                    labels += [int(related)] * run_frames
            else:
                labels += [IGNORE_INDEX] * turn["num_frames"]
        return labels

    def prepare(self, conversation: list[dict]) -> list[dict]:
        return conversation

    def __len__(self) -> int:
        return len(self.examples)

    def frame_counts(self) -> list[int]:
        """Frames of each example after clipping, known without decoding (the key of length-grouped batches)."""
        return [min(sum(t["num_frames"] for t in conv if t["role"] == "stream"), self.max_num_frames)
                for conv, _, _ in self.examples]

    def __getitem__(self, index: int) -> dict:
        conversation, uid, load_range = self.examples[index]
        conversation, load_range = self.max_frames_clip(self.prepare(list(conversation)), load_range,
                                                        self.max_num_frames)
        frames = self.load_frames(uid, load_range)
        conversation = [{"role": "system", "content": self.system_prompt}] + conversation
        text = render(self.tokenizer, conversation)
        n_frames = sum(t["num_frames"] for t in conversation if t["role"] == "stream")
        if n_frames != len(frames):
            raise VideoError(f"{uid}: conversation has {n_frames} frames, {len(frames)} loaded")
        inf, rel = self.informative_labels(conversation), self.relevance_labels(conversation)
        return {"text": text, "frames": frames, "learn_ranges": learn_ranges(conversation, self.frame_num_tokens),
                "informative_labels": (inf + [IGNORE_INDEX] * n_frames)[:n_frames],
                "relevance_labels": (rel + [IGNORE_INDEX] * n_frames)[:n_frames], "index": index}


class DenseVideoCaptioningStreamDataset(StreamDataset):
    """{video_uid: {annotation_uid: [{"text", "time", "timespan", "learn"?}]}} (spec §4.2)."""

    def build(self, annotations):
        out = []
        for uid, per_annotator in annotations.items():
            duration = self.duration(uid)
            if duration is None:
                continue
            for narrations in per_annotator.values():
                if not narrations:
                    self.skipped["empty conversation"] += 1
                    continue
                conv, last_time, last_text = [], 0.0, None
                for n in narrations:
                    if last_time >= duration:
                        break
                    if n["time"] > duration:
                        self.skipped["reply after the end of the video"] += 1
                        continue
                    if n["text"] == last_text:
                        continue
                    time = ceil_time(n["time"], self.fps, 0, duration)
                    if time == last_time and conv:
                        conv[-1]["content"] = n["text"]
                    elif time > last_time:
                        rst = ceil_time(sum(n["timespan"]) / 2, self.fps, 0, duration)
                        conv.append({"role": "stream", "num_frames": int(round((time - last_time) * self.fps)), "learn": True})
                        conv.append({"role": "assistant", "content": n["text"], "learn": n.get("learn", True),
                                     "response_frame_num": int((time - rst) * self.fps) + 1})
                        last_time = time
                    last_text = n["text"]
                if not conv:
                    self.skipped["empty conversation"] += 1
                    continue
                out.append((conv, uid, range(0, int(round(last_time * self.fps)))))
        return out

    def prepare(self, conversation):
        # a random instruction per access, as upstream
        return [{"role": "user", "content": self.rng.choice(DVC_INSTRUCTIONS)}] + conversation


class MAGQAStreamDataset(StreamDataset):
    """[{"video_uid", "conversation": [...], "video_start_time"?}] (spec §4.3)."""

    def build(self, annotations):
        out = []
        for ann in annotations:
            uid, turns = ann["video_uid"], ann.get("conversation") or []
            duration = self.duration(uid)
            if duration is None:
                continue
            if not turns or turns[0]["role"] != "user" or not turns[0].get("content") \
                    or not 0 < turns[0]["time"] <= duration:
                self.skipped["empty conversation" if not turns else "bad first user turn"] += 1
                continue
            fps_time = ceil_time(turns[0]["time"], self.fps, 0, duration)
            start_bound = ann.get("video_start_time", 1e8)
            waiting = self.rng.randint(int((fps_time - start_bound) * self.fps), int(fps_time * self.fps))
            waiting = min(max(waiting, 0), 20)
            conv = []
            if waiting > 0:
                conv.append({"role": "stream", "num_frames": waiting, "learn": waiting - 1})
            conv.append({"role": "user", "content": turns[0]["content"]})
            start, prev = fps_time - waiting / self.fps, fps_time
            for turn in turns[1:]:
                if turn["time"] > duration:
                    self.skipped["reply after the end of the video"] += 1
                    break
                t = ceil_time(turn["time"], self.fps, prev, duration)
                if turn["role"] == "user":
                    if t > prev:
                        conv.append({"role": "stream", "num_frames": int(round((t - prev) * self.fps)), "learn": True})
                    conv.append({"role": "user", "content": turn["content"]})
                elif t > prev:
                    n = int(round((t - prev) * self.fps))
                    rst = ceil_time(sum(turn["timespan"]) / 2, self.fps, 0, duration)
                    conv.append({"role": "stream", "num_frames": n, "learn": True})
                    conv.append({"role": "assistant", "content": turn["content"], "learn": turn.get("learn", True),
                                 "response_frame_num": min(int((turn["time"] - rst) * self.fps) + 1, n)})
                prev = max(prev, t)
            if not any(t["role"] == "assistant" for t in conv):
                self.skipped["no reply inside the video"] += 1
                continue
            out.append((conv, uid, range(int(round(start * self.fps)), int(round(prev * self.fps)))))
        return out


class GroundingStreamDataset(StreamDataset):
    """[{"video_uid", "query", "timestamps": [[s, e], ...]}] (spec §4.4)."""

    def build(self, annotations):
        out = []
        for ann in annotations:
            uid = ann["video_uid"]
            duration = self.duration(uid)
            if duration is None:
                continue
            if not ann.get("query") or not ann.get("timestamps"):
                self.skipped["empty conversation"] += 1
                continue
            n = math.floor(duration * self.fps)
            runs, cur = [], 0
            for s, e in ann["timestamps"]:
                sf, ef = math.floor(s * self.fps), min(math.floor(e * self.fps), n)
                if sf > cur:
                    runs.append((sf - cur, False))
                if ef > sf:
                    runs.append((ef - sf, True))
                cur = max(cur, ef)
            if n > cur:
                runs.append((n - cur, False))
            prompt = self.rng.choice(GROUNDING_TEMPLATES) % ann["query"]
            conv = [{"role": "user", "content": prompt, "learn": False},
                    {"role": "stream", "num_frames": n, "learn": True, "related": runs}]
            out.append((conv, uid, range(0, n)))
        return out

    @staticmethod
    def informative_labels(conversation):
        return []  # upstream: no informative labels for grounding (all ignored)

    @staticmethod
    def max_frames_clip(conversation, load_range, max_frames):
        conversation, load_range = StreamDataset.max_frames_clip(conversation, load_range, max_frames)
        for turn in conversation:  # trim the related runs of a shortened stream turn
            if turn["role"] == "stream" and "related" in turn:
                runs, left = [], turn["num_frames"]
                for k, rel in turn["related"]:
                    if left > 0:
                        runs.append((min(k, left), rel))
                        left -= k
                turn["related"] = runs
        return conversation, load_range


DATASET_CLASSES = {c.__name__: c for c in (DenseVideoCaptioningStreamDataset, MAGQAStreamDataset, GroundingStreamDataset)}


def build_mixture(config: list[dict] | str | Path, tokenizer, root: str | Path = ".", **defaults) -> ConcatDataset:
    """Upstream's dataset-mixture config (spec §4.6): a list of {"class", "video_root", "anno_file",
    "metadata_path"?, "frame_fps"?, "max_num_frames"?}; relative paths are taken from `root` (default: the
    working directory, as upstream's configs/datasets/mmduetit.json expects)."""
    if not isinstance(config, list):
        config = json.loads(Path(config).read_text())
    root = Path(root)
    parts = []
    for entry in config:
        entry = dict(entry)
        cls = DATASET_CLASSES.get(entry.pop("class"))
        if cls is None:
            raise InputError(f"unknown dataset class; one of {', '.join(DATASET_CLASSES)}")
        for key in ("video_root", "anno_file", "metadata_path"):
            if key in entry and entry[key] is not None:
                entry[key] = root / entry[key]
        parts.append(cls(tokenizer=tokenizer, **{**defaults, **entry}))
    return ConcatDataset(parts)


def example_lengths(dataset) -> list[int] | None:
    """Frames per example of a stream dataset or a mixture of them; None for any other dataset."""
    if isinstance(dataset, StreamDataset):
        return dataset.frame_counts()
    if isinstance(dataset, ConcatDataset):
        parts = [example_lengths(d) for d in dataset.datasets]
        return None if any(p is None for p in parts) else [n for p in parts for n in p]
    return None


class DuetCollator:
    """Tokenise with offsets; LM labels from learn ranges (already shifted, §3.4); head labels on each frame's
    last placeholder. Emits the keys the model reads: informative_labels / relevance_labels."""

    def __init__(self, tokenizer, frame_num_tokens: int = 49):
        self.tokenizer, self.frame_num_tokens = tokenizer, frame_num_tokens
        self.image_id = tokenizer.convert_tokens_to_ids("<image>")

    def __call__(self, batch: list[dict]) -> dict:
        enc = self.tokenizer([b["text"] for b in batch], return_offsets_mapping=True, add_special_tokens=False,
                             padding=True, return_tensors="pt")
        ids, mask = enc.input_ids, enc.attention_mask
        labels = torch.full_like(ids, IGNORE_INDEX)
        inf = torch.full_like(ids, IGNORE_INDEX)
        rel = torch.full_like(ids, IGNORE_INDEX)
        for b, item in enumerate(batch):
            starts = {int(s): t for t, (s, e) in enumerate(enc.offset_mapping[b].tolist()) if mask[b, t] and e > s}
            length = int(mask[b].sum())
            first = ids.shape[1] - length  # left padding
            for r in item["learn_ranges"]:
                a = starts.get(r.start)
                z = starts.get(r.stop, ids.shape[1] if r.stop >= len(item["text"]) else None)
                if a is None or z is None:
                    raise ValueError(f"example {item['index']}: a learn range does not start on a token boundary")
                labels[b, a - 1:z - 1] = ids[b, a:z]
            frame_ends = (ids[b] == self.image_id).nonzero().flatten()[self.frame_num_tokens - 1::self.frame_num_tokens]
            n = len(frame_ends)
            inf[b, frame_ends] = torch.tensor(item["informative_labels"][:n], dtype=torch.long)
            rel[b, frame_ends] = torch.tensor(item["relevance_labels"][:n], dtype=torch.long)
            labels[b, :first] = IGNORE_INDEX
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        return {"input_ids": ids, "attention_mask": mask, "position_ids": positions, "labels": labels,
                "informative_labels": inf, "relevance_labels": rel,
                "frames": torch.cat([b["frames"] for b in batch])}
