"""Benchmark inference over a dataset -> prediction records (upstream's JSONL schema), built to survive a week
on shared GPUs and never to lose or mix finished work:

* every finished example is one atomically appended, fsynced line; `resume` skips finished `question_id`s (a torn
  last line from a killed run is cut off; any other unreadable line is an error naming it);
* the settings of a run go to a sidecar `<out stem>.settings.json`; resuming with other settings is refused, naming
  the fields that differ (`resume=False` starts over);
* examples whose video fails go to `<out stem>.errors.jsonl` (one entry per question_id, the last error) and the
  run goes on;
* queries are grouped by video: one decode and one frame encoding per video, shared by its queries, while the
  next video is decoded in a worker thread;
* under `accelerate launch` / torchrun each process takes a share of the unfinished videos
  (`PartialState.split_between_processes`) and writes its own file; rank 0 merges them into the output, which
  keeps every record it already had. A single process picks up what a sharded run left, and the other way round.

Bad input (options, files, folders, devices) raises `InputError` before any compute.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from ..data.benchmarks import BENCHMARKS, check_examples, read_benchmark
from ..errors import InputError
from ..stream import DuetSession, DuetSettings
from ..video import read_video
from .launch import launch_state
from .outputs import (
    append_line,
    check_output,
    check_resume,
    cut_torn_line,
    default_errors_path,
    merge_shards,
    model_identity,
    read_lines,
    run_identity,
    shard_files,
    shard_path,
    write_settings,
)


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

# DuetSettings fields that only change speed: a run may be resumed with other values of these


def get_preset(name: str) -> BenchmarkPreset:
    """The preset called `name`, or an `InputError` listing the known ones."""
    if name not in PRESETS:
        raise InputError(f"unknown benchmark preset {name!r}; known: {', '.join(PRESETS)}")
    return PRESETS[name]


def InferenceConfig(policy: DuetSettings | None = None, **fields) -> DuetSettings:  # noqa: N802
    """Old name: benchmark runs take `DuetSettings` now; `policy` (a `ResponsePolicy`) supplies its reply fields."""
    reply = {k: getattr(policy, k) for k in ("mode", "reply_threshold", "score_heads", "remove_assistant_turns",
                                             "z_warmup_frames", "z_window", "suppress_repeats")} if policy else {}
    return DuetSettings(**reply, **fields)


# ---- one example --------------------------------------------------------------------------------------------

def infer_example(model, tokenizer, example: dict, clip, settings: DuetSettings, frames=None) -> dict:
    """Stream one decoded clip with the example's user turns; returns its prediction record. `frames`: the clip's
    frame embeddings (F, n, D) when already encoded (the queries of one video share them), else its pixels."""
    session = DuetSession(model, tokenizer, settings, fps=clip.fps)
    for turn in example["conversation"]:
        if turn["role"] == "user":
            session.add_user_message(turn["content"], turn.get("time", 0.0))
    for _ in session.push_frames(clip.frames if frames is None else frames):
        pass
    return session.to_record(example["question_id"], clip.duration)


def group_by_video(examples: list[dict]) -> list[list[dict]]:
    """Examples grouped by `video`, groups in order of first appearance, each in dataset order: a dataset whose
    queries of a video are contiguous (Charades, QVHighlights) keeps its order."""
    groups: dict[str, list[dict]] = {}
    for example in examples:
        groups.setdefault(example["video"], []).append(example)
    return list(groups.values())


# ---- checks before any compute ------------------------------------------------------------------------------

def check_video_root(video_root: str | Path) -> Path:
    """The video folder, or an `InputError` when it is missing or not a folder."""
    root = Path(video_root).expanduser()
    if not root.exists():
        raise InputError(f"video root {root}: no such folder")
    if not root.is_dir():
        raise InputError(f"video root {root}: is a file, not a folder")
    return root


def load_examples(examples: list[dict] | str | Path, benchmark: str = "grounding",
                  limit: int | None = None) -> list[dict]:
    """A test file (read and validated) or a list of examples (checked for what inference reads), cut to the
    first `limit`."""
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise InputError(f"limit must be a whole number >= 1 (or None for all), not {limit!r}")
    if benchmark not in BENCHMARKS:
        raise InputError(f"unknown benchmark {benchmark!r}; one of {', '.join(BENCHMARKS)}")
    if isinstance(examples, str | Path):
        examples, _ = read_benchmark(examples, benchmark, strict=False)
    else:
        examples = check_examples(examples, benchmark)
    return examples[:limit] if limit else examples


# ---- processes ----------------------------------------------------------------------------------------------

def _contiguous_share(items: list, rank: int, world: int) -> list:
    """The same contiguous share `split_between_processes` gives, for a slice run by hand (`shard=`)."""
    per, extra = divmod(len(items), world)
    start = rank * per + min(rank, extra)
    return items[start:start + per + (1 if rank < extra else 0)]


# ---- the run ------------------------------------------------------------------------------------------------

@dataclass
class RunSummary:
    """What a run did. `status`: ok (no example failed), some failed, or all failed (every example tried failed;
    nothing was written by this run)."""

    out: str
    examples: int = 0  # in the dataset (after `limit`)
    written: int = 0
    skipped_finished: int = 0
    failed: int = 0  # examples whose video failed (listed in the errors file)
    videos: int = 0  # distinct videos streamed
    videos_decoded: int = 0  # decodes done: one per video when queries are grouped by video
    seconds: float = 0.0
    decode_seconds: float = 0.0
    decode_wait_seconds: float = 0.0  # decoding not hidden behind inference
    encode_seconds: float = 0.0  # the vision encoder, on the main thread
    frames: int = 0
    processes: int = 1
    errors_file: str | None = None

    @property
    def decode_hidden_share(self) -> float:
        return max(0.0, 1.0 - self.decode_wait_seconds / self.decode_seconds) if self.decode_seconds else 0.0

    @property
    def decodes_per_video(self) -> float:
        return self.videos_decoded / self.videos if self.videos else 0.0

    @property
    def status(self) -> str:
        if not self.failed:
            return "ok"
        return "all failed" if not self.written else "some failed"


def _combine(summaries: list[RunSummary]) -> RunSummary:
    total = RunSummary(out=summaries[0].out, examples=summaries[0].examples, errors_file=summaries[0].errors_file,
                       processes=len(summaries))
    for s in summaries:
        for name in ("written", "skipped_finished", "failed", "videos", "videos_decoded", "decode_seconds",
                     "decode_wait_seconds", "encode_seconds", "frames"):
            setattr(total, name, getattr(total, name) + getattr(s, name))
        total.seconds = max(total.seconds, s.seconds)
    return total


def run_benchmark(model, tokenizer, examples: list[dict] | str | Path, video_root: str | Path,
                  out_path: str | Path, settings: DuetSettings | str = "charades", resume: bool = True,
                  errors_path: str | Path | None = None, limit: int | None = None, progress: bool = True,
                  shard: tuple[int, int] | None = None, benchmark: str | None = None,
                  group_videos: bool = True) -> RunSummary:
    """Stream every example's video and write its record to `out_path` (JSONL, upstream's schema).

    settings: a `DuetSettings` or a preset name (`PRESETS`). resume: skip question_ids already written with the
    same settings (the sidecar `<out stem>.settings.json` says which); False starts over. group_videos: decode
    and encode each video once for all its queries (False: once per query, as upstream; same records).
    shard=(rank, n): run one contiguous share of the dataset's videos by hand into its own file, with no
    synchronisation (call `merge_shards` when all are done); under `accelerate launch` sharding is automatic.
    Bad input raises `InputError` before any compute; a failed video is listed in the errors file and the run
    goes on.
    """
    from tqdm.auto import tqdm

    if isinstance(settings, str):
        preset = get_preset(settings)
        settings, benchmark = preset.settings, benchmark or preset.benchmark
    elif not isinstance(settings, DuetSettings):
        raise InputError(f"settings must be a DuetSettings or a preset name ({', '.join(PRESETS)}), "
                         f"not {type(settings).__name__}")
    benchmark = benchmark or "grounding"
    data = str(examples) if isinstance(examples, str | Path) else None
    examples = load_examples(examples, benchmark, limit)
    video_root = check_video_root(video_root)
    out = check_output(out_path)
    errors_path = check_output(errors_path) if errors_path else default_errors_path(out)
    identity = run_identity(settings, benchmark, **model_identity(model))

    state = None
    if shard is not None:
        rank, world = shard
        if not (isinstance(rank, int) and isinstance(world, int) and 0 <= rank < world):
            raise InputError(f"shard must be (rank, processes) with 0 <= rank < processes, not {shard!r}")
    else:
        state = launch_state(cpu=getattr(model, "device", None) is None or model.device.type == "cpu")
        rank, world = (state.process_index, state.num_processes) if state else (0, 1)
    part = shard_path(out, rank, world)
    errors_part = shard_path(errors_path, rank, world)
    leader = rank == 0 and shard is None  # the process that may rewrite the shared files

    # 1. every process reads (and checks) what is there before anyone changes it
    done = check_resume(out, identity, errors_path) if resume else set()
    _wait(state)
    # 2. one process sets the files up: start over, or cut a torn last line and fold what killed sharded runs left
    order = [e["question_id"] for e in examples]
    if leader and not resume:
        for stale in [out, errors_path, *shard_files(out), *shard_files(errors_path)]:
            stale.unlink(missing_ok=True)
    elif leader:
        cut_torn_line(read_lines(out))
        if shard_files(out) or shard_files(errors_path):
            merge_shards(out, order, errors_path)
    elif shard is not None and not resume:  # a share run by hand clears its own files; rank 0 the shared ones
        stale = [part, errors_part]
        if rank == 0:
            stale += [out, errors_path, *(p for p in shard_files(out) + shard_files(errors_path)
                                          if not p.stem.endswith(f"of{world}"))]
        for path in stale:
            path.unlink(missing_ok=True)
    elif shard is not None:
        cut_torn_line(read_lines(part))
    if state is None or leader:
        write_settings(out, identity, data)
    _wait(state)

    todo = [e for e in examples if e["question_id"] not in done]
    summary = RunSummary(out=str(out), examples=len(examples), skipped_finished=len(examples) - len(todo),
                         errors_file=str(errors_path))
    if shard is not None:  # a share run by hand must not depend on what the others finished already
        everything = group_by_video(examples) if group_videos else [[e] for e in examples]
        share = _contiguous_share(everything, rank, world)
        mine = [g for g in ([e for e in group if e["question_id"] not in done] for group in share) if g]
        summary.skipped_finished = sum(len(g) for g in share) - sum(len(g) for g in mine)
    else:
        mine = group_by_video(todo) if group_videos else [[e] for e in todo]
        if state is not None:
            with state.split_between_processes(mine) as share:
                mine = list(share)
            summary.skipped_finished = 0 if rank else summary.skipped_finished  # counted once when combined
    started = time.perf_counter()
    resolution = settings.resolution or model.config.vision_config.image_size

    def decode(example: dict):
        t0 = time.perf_counter()
        clip = read_video(video_root / example["video"], fps=settings.fps, max_frames=settings.max_frames,
                          resolution=resolution, rule=settings.frame_rule)
        return clip, time.perf_counter() - t0

    bar = tqdm(total=sum(len(g) for g in mine), disable=not progress,
               desc=f"infer rank {rank}" if world > 1 else "infer")
    videos: set = set()
    with ThreadPoolExecutor(max_workers=1) as pool:
        for group, clip_future in _prefetch(pool, decode, mine):
            wait_start = time.perf_counter()
            try:
                clip, decode_s = clip_future.result()
            except (InputError, OSError) as exc:
                for example in group:
                    _record_error(errors_part, example, exc)
                summary.failed += len(group)
                bar.update(len(group))
                continue
            summary.decode_wait_seconds += time.perf_counter() - wait_start
            summary.decode_seconds += decode_s
            summary.videos_decoded += 1
            videos.add(group[0]["video"])
            t0 = time.perf_counter()
            embeds = model.frame_embeddings(clip.frames, settings.encode_chunk)  # (F, n, D), shared by the group
            summary.encode_seconds += time.perf_counter() - t0
            for example in group:
                try:
                    record = infer_example(model, tokenizer, example, clip, settings, frames=embeds)
                except InputError as exc:
                    _record_error(errors_part, example, exc)
                    summary.failed += 1
                else:
                    append_line(part, record)
                    summary.written += 1
                    summary.frames += len(clip)
                bar.update(1)
            del clip, embeds  # hold a video's frames only while its queries run
    bar.close()
    summary.videos = len(videos)
    summary.seconds = time.perf_counter() - started

    if state is not None:
        from accelerate.utils import gather_object

        summary = _combine(gather_object([summary]))
        if leader:
            merge_shards(out, order, errors_path)
    elif shard is None:  # records a resume added after others back in dataset order, errors compacted
        merge_shards(out, order, errors_path)
    if not Path(summary.errors_file).exists() and not shard_files(errors_path):
        summary.errors_file = None
    return summary


def _wait(state) -> None:
    if state is not None:
        state.wait_for_everyone()


def _prefetch(pool: ThreadPoolExecutor, decode, groups: list[list[dict]]) -> Iterator[tuple[list[dict], Future]]:
    """(group, future of its decoded clip), the next group's video decoding while the caller works on this one."""
    upcoming = pool.submit(decode, groups[0][0]) if groups else None
    for index, group in enumerate(groups):
        current, upcoming = upcoming, pool.submit(decode, groups[index + 1][0]) if index + 1 < len(groups) else None
        yield group, current
        current = None  # the decoded clip is dropped with the group


def _record_error(path: Path, example: dict, exc: Exception) -> None:
    append_line(path, {"question_id": example["question_id"], "video": example["video"], "error": str(exc)})


def summary_dict(summary: RunSummary) -> dict:
    """The summary as JSON, with status, decode_hidden_share and decodes_per_video."""
    return {"status": summary.status, **asdict(summary),
            "decode_hidden_share": round(summary.decode_hidden_share, 3),
            "decodes_per_video": round(summary.decodes_per_video, 3)}
