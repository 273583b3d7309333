"""The prediction file and what lives beside it: records appended one fsynced line at a time, a torn last line
cut off on resume, the settings sidecar a resumed run must match, the errors file, and the per-process files of
a sharded run merged back without losing a record."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from .. import __version__
from ..errors import InputError
from ..stream import DuetSettings

SPEED_FIELDS = frozenset({"chunk_frames", "max_prefill_tokens", "encode_chunk"})  # never change a result


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
class Lines:
    """A JSONL file read whole-line by whole-line: (question_id, raw line) in file order, and the byte length of
    its whole lines (a longer file ends with a torn line)."""

    path: Path
    records: list[tuple[object, bytes]]
    whole_bytes: int
    size: int

    @property
    def ids(self) -> set:
        return {qid for qid, _ in self.records}


def read_lines(path: Path, what: str = "record") -> Lines:
    """Read a predictions (or errors) JSONL. A last line without a newline is what a kill mid-write leaves: it is
    left out. Any other line that is not a JSON object with a question_id is an `InputError` naming path:line."""
    if not path.exists():
        return Lines(path, [], 0, 0)
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
    return Lines(path, records, whole, path.stat().st_size)


def cut_torn_line(lines: Lines) -> None:
    if lines.size > lines.whole_bytes:
        with lines.path.open("r+b") as f:
            f.truncate(lines.whole_bytes)


def finished_ids(path: Path) -> set:
    """question_ids already written; a torn last line (killed mid-write) is cut off the file, any other bad line
    raises `InputError` naming it."""
    lines = read_lines(Path(path))
    cut_torn_line(lines)
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
        for qid, line in read_lines(source).records:
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
        for qid, line in read_lines(source, "error entry").records:
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
        read_lines(source, "error entry")
    done: set = set()
    for source in outputs:
        done |= read_lines(source).ids
    return done


def write_settings(out_path: str | Path, identity: dict, data: str | None = None) -> Path:
    """Write the sidecar: the run identity plus provenance (not compared on resume)."""
    sidecar = settings_path(out_path)
    content = {"format": 1, "written_by": f"mmduet {__version__}", **identity, "data": data,
               "not_compared": sorted(SPEED_FIELDS)}
    _write_atomically(sidecar, (json.dumps(content, indent=1) + "\n").encode())
    return sidecar


