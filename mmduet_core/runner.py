"""Benchmark inference over a dataset -> prediction records (upstream's JSONL schema), built to survive a week
on shared GPUs: every finished example is one atomically appended, flushed line; `resume` skips finished
`question_id`s (a torn last line from a killed run is cut off); examples whose video fails to load go to an
errors file and the run goes on; the next video is decoded while the current one is inferred; under
`accelerate launch` each process takes its slice and rank 0 merges the slices in dataset order.
"""

from __future__ import annotations

import json
import os
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from .data.benchmarks import DataError, read_benchmark
from .stream import DuetSession, DuetSettings
from .video import VideoError, read_video


@dataclass(frozen=True)
class BenchmarkPreset:
    """One of upstream's `scripts/inference/*.sh` settings: the evaluator it feeds and how videos are streamed."""

    name: str
    benchmark: str  # the evaluator: dvc | magqa | grounding | highlight
    settings: DuetSettings

    @property
    def config(self) -> DuetSettings:
        """Old name of `settings`."""
        return self.settings


PRESETS: dict[str, BenchmarkPreset] = {
    "youcook2": BenchmarkPreset("youcook2", "dvc", DuetSettings(
        fps=0.5, max_frames=200, mode="sum", reply_threshold=2.0, remove_assistant_turns=True)),
    "magqa": BenchmarkPreset("magqa", "magqa", DuetSettings(
        fps=2.0, max_frames=400, mode="prob", reply_threshold=0.5, score_heads=("informative_score", "relevance_score"),
        remove_assistant_turns=True)),
    # upstream's grounding scripts pass a probability threshold of 1, which no score exceeds: never reply
    "charades": BenchmarkPreset("charades", "grounding", DuetSettings(fps=2.0, max_frames=400, mode="never")),
    "qvh": BenchmarkPreset("qvh", "highlight", DuetSettings(fps=1.0, max_frames=400, mode="never")),
}


def InferenceConfig(policy: DuetSettings | None = None, **fields) -> DuetSettings:  # noqa: N802
    """Old name: benchmark runs take `DuetSettings` now; `policy` (a `ResponsePolicy`) supplies its reply fields."""
    reply = {k: getattr(policy, k) for k in ("mode", "reply_threshold", "score_heads", "remove_assistant_turns",
                                             "z_warmup_frames", "z_window", "suppress_repeats")} if policy else {}
    return DuetSettings(**reply, **fields)


# ---- one example --------------------------------------------------------------------------------------------

def infer_example(model, tokenizer, example: dict, clip, settings: DuetSettings) -> dict:
    """Stream one decoded clip with the example's user turns; returns its prediction record."""
    session = DuetSession(model, tokenizer, settings, fps=clip.fps)
    for turn in example["conversation"]:
        if turn["role"] == "user":
            session.add_user_message(turn["content"], turn.get("time", 0.0))
    for _ in session.push_frames(clip.frames):
        pass
    return session.to_record(example["question_id"], clip.duration)


# ---- output files -------------------------------------------------------------------------------------------

def finished_ids(path: Path) -> set:
    """question_ids already written; a torn last line (killed mid-write) is cut off the file."""
    if not path.exists():
        return set()
    data = path.read_bytes()
    cut = data.rfind(b"\n") + 1
    if cut < len(data):
        with path.open("r+b") as f:
            f.truncate(cut)
    done = set()
    for line in data[:cut].splitlines():
        if line.strip():
            done.add(json.loads(line)["question_id"])
    return done


def append_line(path: Path, obj: dict) -> None:
    """One JSON line in a single write on an O_APPEND descriptor, then fsync: a record is whole or absent."""
    data = (json.dumps(obj, ensure_ascii=False) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


# ---- sharding -----------------------------------------------------------------------------------------------

def process_shard() -> tuple[int, int]:
    """(rank, world size) from `accelerate launch` / torchrun, (0, 1) otherwise."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def _wait_for_everyone(world: int) -> None:
    if world > 1:
        from accelerate import PartialState

        PartialState().wait_for_everyone()


def merge_shards(out_path: Path, world: int, order: list) -> int:
    """Rank files -> one file in dataset order (rank 0's job); returns the number of records."""
    records = {}
    for rank in range(world):
        part = shard_path(out_path, rank, world)
        if part.exists():
            for line in part.read_text().splitlines():
                if line.strip():
                    rec = json.loads(line)
                    records[rec["question_id"]] = line
    tmp = out_path.with_name(out_path.name + ".tmp")
    tmp.write_text("".join(records[q] + "\n" for q in order if q in records))
    os.replace(tmp, out_path)
    return len(records)


def shard_path(out_path: Path, rank: int, world: int) -> Path:
    return out_path if world == 1 else out_path.with_name(f"{out_path.stem}.rank{rank}of{world}{out_path.suffix}")


# ---- the run ------------------------------------------------------------------------------------------------

@dataclass
class RunSummary:
    out: str
    written: int = 0
    skipped_finished: int = 0
    failed: int = 0
    seconds: float = 0.0
    decode_seconds: float = 0.0
    decode_wait_seconds: float = 0.0  # decoding not hidden behind inference
    frames: int = 0

    @property
    def decode_hidden_share(self) -> float:
        return 1.0 - self.decode_wait_seconds / self.decode_seconds if self.decode_seconds else 0.0


def run_benchmark(model, tokenizer, examples: list[dict] | str | Path, video_root: str | Path,
                  out_path: str | Path, settings: DuetSettings | str = "charades", resume: bool = True,
                  errors_path: str | Path | None = None, limit: int | None = None, progress: bool = True,
                  shard: tuple[int, int] | None = None, benchmark: str | None = None) -> RunSummary:
    """Stream every example's video and write its record. `settings`: a `DuetSettings` or a preset name."""
    from tqdm.auto import tqdm

    if isinstance(settings, str):
        preset = PRESETS[settings]
        settings, benchmark = preset.settings, benchmark or preset.benchmark
    if isinstance(examples, str | Path):
        examples, _ = read_benchmark(examples, benchmark or "grounding", strict=False)
    examples = examples[:limit] if limit else examples
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    rank, world = shard or process_shard()
    mine = examples[rank::world]
    part = shard_path(out_path, rank, world)
    if not resume and part.exists():
        part.unlink()
    done = finished_ids(part)
    todo = [e for e in mine if e["question_id"] not in done]
    errors_path = Path(errors_path) if errors_path else out_path.with_name(out_path.stem + ".errors.jsonl")
    summary = RunSummary(out=str(out_path), skipped_finished=len(mine) - len(todo))
    video_root = Path(video_root)
    started = time.perf_counter()

    resolution = settings.resolution or model.config.vision_config.image_size

    def decode(example):
        t0 = time.perf_counter()
        clip = read_video(video_root / example["video"], fps=settings.fps, max_frames=settings.max_frames,
                          resolution=resolution, rule=settings.frame_rule)
        return clip, time.perf_counter() - t0

    with ThreadPoolExecutor(max_workers=1) as pool:
        upcoming: Future | None = pool.submit(decode, todo[0]) if todo else None
        for index, example in enumerate(tqdm(todo, disable=not progress, desc=f"infer rank {rank}" if world > 1 else "infer")):
            current = upcoming
            upcoming = pool.submit(decode, todo[index + 1]) if index + 1 < len(todo) else None
            wait_start = time.perf_counter()
            try:
                clip, decode_s = current.result()
            except (VideoError, DataError, OSError) as exc:
                append_line(errors_path, {"question_id": example["question_id"], "video": example["video"],
                                          "error": str(exc)})
                summary.failed += 1
                continue
            summary.decode_wait_seconds += time.perf_counter() - wait_start
            summary.decode_seconds += decode_s
            record = infer_example(model, tokenizer, example, clip, settings)
            append_line(part, record)
            summary.written += 1
            summary.frames += len(clip)
    summary.seconds = time.perf_counter() - started
    if world > 1:
        _wait_for_everyone(world)
        if rank == 0:
            merge_shards(out_path, world, [e["question_id"] for e in examples])
    return summary


def summary_dict(summary: RunSummary) -> dict:
    return {**asdict(summary), "decode_hidden_share": round(summary.decode_hidden_share, 3)}
