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

import json
import os
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from . import __version__
from .data.benchmarks import BENCHMARKS, check_examples, read_benchmark
from .errors import InputError
from .stream import DuetSession, DuetSettings
from .video import read_video


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
SPEED_FIELDS = frozenset({"chunk_frames", "max_prefill_tokens", "encode_chunk"})


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


def check_output(out_path: str | Path) -> Path:
    """Create the output's folder and prove it writable (a probe file), before any model is loaded: a bad
    output path costs nothing. Returns the path."""
    out = Path(out_path).expanduser()
    if out.is_dir():
        raise InputError(f"output {out}: is a folder; give a file such as {out / 'predictions.jsonl'}")
    blocking = next((p for p in out.parents if p.exists() and not p.is_dir()), None)
    if blocking is not None:
        raise InputError(f"output {out}: cannot create its folder, {blocking} is a file")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".probe", dir=out.parent)
        os.close(fd)
        os.unlink(probe)
        if out.exists():
            with out.open("ab"):
                pass
    except OSError as exc:
        raise InputError(f"output {out}: not writable ({exc.strerror or exc})") from None
    return out


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


# ---- output files -------------------------------------------------------------------------------------------

def settings_path(out_path: str | Path) -> Path:
    """The sidecar recording the settings a predictions file was written with."""
    out = Path(out_path)
    return out.with_name(out.stem + ".settings.json")


def default_errors_path(out_path: str | Path) -> Path:
    """Where the examples that failed are listed: `<out stem>.errors.jsonl` beside the output."""
    out = Path(out_path)
    return out.with_name(out.stem + ".errors.jsonl")


def shard_path(out_path: Path, rank: int, world: int) -> Path:
    """Process `rank`'s file in a run of `world` processes (the output itself for one process)."""
    out = Path(out_path)
    return out if world == 1 else out.with_name(f"{out.stem}.rank{rank}of{world}{out.suffix}")


def shard_files(out_path: Path) -> list[Path]:
    """Every process file next to `out_path`, of any number of processes (left by killed sharded runs too)."""
    out = Path(out_path)
    if not out.parent.is_dir():
        return []
    return sorted(p for p in out.parent.glob(f"{out.stem}.rank*of*{out.suffix}") if p.is_file())


@dataclass
class _Lines:
    """A JSONL file read whole-line by whole-line: (question_id, raw line) in file order, and the byte length of
    its whole lines (a longer file ends with a torn line)."""

    path: Path
    records: list[tuple[object, bytes]]
    whole_bytes: int
    size: int

    @property
    def ids(self) -> set:
        return {qid for qid, _ in self.records}


def _read_lines(path: Path, what: str = "record") -> _Lines:
    """Read a predictions (or errors) JSONL. A last line without a newline is what a kill mid-write leaves: it is
    left out. Any other line that is not a JSON object with a question_id is an `InputError` naming path:line."""
    if not path.exists():
        return _Lines(path, [], 0, 0)
    records, whole = [], 0
    with path.open("rb") as f:
        for line_no, line in enumerate(f, 1):
            if not line.endswith(b"\n"):
                break  # the torn last line
            whole += len(line)
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                reason = exc.msg if isinstance(exc, json.JSONDecodeError) else "not UTF-8"
                raise InputError(f"{path}:{line_no}: not a JSON {what} ({reason}); only a torn last line is "
                                 f"expected after a kill: fix or delete this line, or start over (--no-resume)") from None
            qid = obj.get("question_id") if isinstance(obj, dict) else None
            if isinstance(qid, bool) or not isinstance(qid, str | int):
                raise InputError(f"{path}:{line_no}: a {what} without a question_id (string or integer), got "
                                 f"{qid!r}; fix or delete this line, or start over (--no-resume)")
            records.append((qid, line))
    return _Lines(path, records, whole, path.stat().st_size)


def _cut_torn_line(lines: _Lines) -> None:
    if lines.size > lines.whole_bytes:
        with lines.path.open("r+b") as f:
            f.truncate(lines.whole_bytes)


def finished_ids(path: Path) -> set:
    """question_ids already written; a torn last line (killed mid-write) is cut off the file, any other bad line
    raises `InputError` naming it."""
    lines = _read_lines(Path(path))
    _cut_torn_line(lines)
    return lines.ids


def append_line(path: Path, obj: dict) -> None:
    """One JSON line appended on an O_APPEND descriptor (one write), then fsync: a record is whole, or a torn last
    line that resume cuts off."""
    data = (json.dumps(obj, ensure_ascii=False) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        written = 0
        while written < len(data):  # a short write leaves at worst a torn last line, which resume cuts
            written += os.write(fd, data[written:])
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def merge_shards(out_path: str | Path, order: list, errors_path: str | Path | None = None) -> int:
    """Fold every process file (and errors file) next to `out_path` into it; returns the number of records.

    Records already in the output are kept; a question_id in several files keeps its last version (process files
    are newer than the output). Records follow `order` (dataset order); ids not in `order` keep their place after
    them. Process files are deleted once the output is replaced, so a kill in between loses nothing and the next
    merge drops the duplicates."""
    out = Path(out_path)
    parts = shard_files(out)
    merged: dict = {}
    for source in [out, *parts]:
        for qid, line in _read_lines(source).records:
            merged.pop(qid, None)
            merged[qid] = line
    position = {qid: k for k, qid in enumerate(order)}
    ordered = sorted(merged, key=lambda q: (0, position[q]) if q in position else (1, 0))
    size = out.stat().st_size if out.exists() else 0
    if parts or ordered != list(merged) or size != sum(len(x) for x in merged.values()):
        _write_atomically(out, b"".join(merged[q] for q in ordered))
        for part in parts:
            part.unlink()
    _compact_errors(Path(errors_path) if errors_path else default_errors_path(out), set(merged))
    return len(merged)


def _compact_errors(errors_path: Path, finished: set) -> None:
    """One entry per question_id (its last error), none for examples that have a record by now; process error
    files folded in; the file removed when nothing failed."""
    parts = shard_files(errors_path)
    entries: dict = {}
    for source in [errors_path, *parts]:
        for qid, line in _read_lines(source, "error entry").records:
            entries.pop(qid, None)
            entries[qid] = line
    for qid in finished:
        entries.pop(qid, None)
    if entries:
        _write_atomically(errors_path, b"".join(entries.values()))
    elif errors_path.exists():
        errors_path.unlink()
    for part in parts:
        part.unlink()


# ---- the settings sidecar -----------------------------------------------------------------------------------

def _source_name(name) -> str | None:
    """A model or adapter as given; local folders as absolute paths, so `./m` and `/abs/m` compare equal."""
    if name is None:
        return None
    path = Path(str(name)).expanduser()
    return str(path.resolve()) if path.exists() else str(name)


def run_identity(settings: DuetSettings, benchmark: str, model: str | None = None, adapter: str | None = None,
                 dtype: str | None = None) -> dict:
    """What a predictions file depends on: the benchmark, the model, adapter and dtype, and every streaming
    setting. Written to the sidecar; a resumed run must match it (speed settings excepted)."""
    return {"benchmark": benchmark, "model": _source_name(model), "adapter": _source_name(adapter), "dtype": dtype,
            "settings": json.loads(json.dumps(asdict(settings)))}


def model_identity(model) -> dict:
    """model / adapter / dtype of a loaded model, from its load report (None where unknown)."""
    report = getattr(model, "load_report", None)
    dtype = str(getattr(model, "dtype", "")).removeprefix("torch.") or None
    return {"model": getattr(report, "base", None), "adapter": getattr(report, "adapter", None), "dtype": dtype}


def _show(value) -> str:
    return json.dumps(value) if isinstance(value, list | dict | str) or value is None else str(value)


def settings_differences(saved: dict, identity: dict) -> list[str]:
    """'field: saved -> now' for each difference that changes results (speed settings are ignored; a setting the
    sidecar predates counts as its default)."""
    diffs = [f"{key}: {_show(saved.get(key))} -> {_show(identity[key])}"
             for key in ("benchmark", "model", "adapter", "dtype") if saved.get(key) != identity[key]]
    saved_settings = saved.get("settings") or {}
    defaults = json.loads(json.dumps(asdict(DuetSettings())))
    for f in fields(DuetSettings):
        if f.name in SPEED_FIELDS:
            continue
        before = saved_settings.get(f.name, defaults[f.name])
        if before != identity["settings"][f.name]:
            diffs.append(f"{f.name}: {_show(before)} -> {_show(identity['settings'][f.name])}")
    return diffs


def check_resume(out_path: str | Path, identity: dict, errors_path: str | Path | None = None) -> set:
    """Refuse to add records made with other settings to a predictions file (an `InputError` naming the fields
    that differ), or to one whose records have no sidecar (an older or foreign file: nothing says how they were
    made). Reads every record and error line, so a corrupt one is an error naming it. Returns the finished
    question_ids (in the output and in files left by sharded runs)."""
    out = Path(out_path)
    sidecar = settings_path(out)
    outputs = [out, *shard_files(out)]
    if sidecar.exists():
        try:
            saved = json.loads(sidecar.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise InputError(f"{sidecar}: not JSON; delete it with {out.name}, or start over (--no-resume)") from None
        if not isinstance(saved, dict):
            raise InputError(f"{sidecar}: not a settings file; start over (--no-resume)")
        diffs = settings_differences(saved, identity)
        if diffs:
            raise InputError(f"{out} was written with other settings ({'; '.join(diffs)}); resume with the same "
                             f"ones, start over (--no-resume) or write elsewhere (--out)")
    else:
        written = [p for p in outputs if p.exists() and p.stat().st_size > 0]
        if written:
            raise InputError(f"{written[0]} has records but no {sidecar.name} saying which settings made them; "
                             f"start over (--no-resume) or write elsewhere (--out)")
    errors = Path(errors_path) if errors_path else default_errors_path(out)
    for source in [errors, *shard_files(errors)]:
        _read_lines(source, "error entry")
    done: set = set()
    for source in outputs:
        done |= _read_lines(source).ids
    return done


def write_settings(out_path: str | Path, identity: dict, data: str | None = None) -> Path:
    """Write the sidecar: the run identity plus provenance (not compared on resume)."""
    sidecar = settings_path(out_path)
    content = {"format": 1, "written_by": f"mmduet {__version__}", **identity, "data": data,
               "not_compared": sorted(SPEED_FIELDS)}
    _write_atomically(sidecar, (json.dumps(content, indent=1) + "\n").encode())
    return sidecar


# ---- processes ----------------------------------------------------------------------------------------------

_LAUNCHER_VARIABLES = ("LOCAL_RANK", "WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")


def launch_state(cpu: bool = False):
    """accelerate's `PartialState` when this process was started by `accelerate launch`, torchrun or mpirun with
    several processes (gloo on CPUs when `cpu`), else None. Call it before moving a model to "cuda": it selects
    this process's GPU. A launch that asked for several processes but started one is an `InputError`."""
    if not any(v in os.environ for v in _LAUNCHER_VARIABLES):
        if os.environ.get("ACCELERATE_USE_CPU", "").lower() == "true" and "MASTER_ADDR" in os.environ:
            # `accelerate launch --cpu --num_processes N` (N > 1) sets MASTER_ADDR but starts one process
            raise InputError("`accelerate launch --cpu --num_processes N` starts a single process (several CPU "
                             "processes need mpirun); use `accelerate launch --multi_gpu --num_processes N` (on a "
                             "machine without GPUs it runs N CPU processes) or torchrun")
        return None
    from accelerate import PartialState

    state = PartialState(cpu=cpu)
    asked = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if asked > 1 and state.num_processes != asked:
        raise InputError(f"launched as {asked} processes but accelerate sees {state.num_processes} "
                         f"({state.distributed_type}); on a machine without GPUs run with --device cpu")
    return state if state.num_processes > 1 else None


def process_shard(cpu: bool = False) -> tuple[int, int]:
    """(rank, number of processes) of this process under `accelerate launch` / torchrun, (0, 1) otherwise."""
    state = launch_state(cpu)
    return (state.process_index, state.num_processes) if state else (0, 1)


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
        _cut_torn_line(_read_lines(out))
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
        _cut_torn_line(_read_lines(part))
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
