"""Reading videos as MMDuet sees them: frame sampling, resize-and-pad, metadata cache (upstream spec §4.1, §5.1).

Upstream decodes every frame with OpenCV and keeps a frame when a clock, advanced by 1 / video_fps per decoded
frame, reaches the next target time i / fps. `source_indices` computes exactly which source frames that rule
keeps (float accumulation included); `read_video` decodes the video in order with PyAV, converts and resizes
only those frames, and writes them into one pre-allocated tensor, so memory is the selected frames plus a
few decoded frames, whatever the video's length. (decord is an explicit alternative, `backend="decord"`: the same
frames, but its reader's buffers grow with the length of the video: about 130 MB above the frames for a
2-minute 360p clip, against 15 MB for PyAV.)

The clock never invents time: above the video's own frame rate, the video's frames are used at their own times
(see `source_indices`).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from .errors import InputError, is_finite_number

FrameCountRule = Literal["ceil", "floor"]
VIDEO_SUFFIXES = (".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v")


class VideoError(InputError):
    """A video that cannot be used; the message names the file and the reason in one line."""


@dataclass
class VideoInfo:
    """What the container says: frames per second, frame count, duration = frame_count / fps (as upstream)."""

    path: str
    fps: float
    frame_count: int
    width: int = 0
    height: int = 0

    @property
    def duration(self) -> float:
        return self.frame_count / self.fps if self.fps > 0 else 0.0


class FrameClock:
    """The time of frame k as upstream's loop computes it: 1 / fps added k times (float accumulation, so at
    3 fps frame 3 is at 1.0000000000000002 s, not 1.0; it decides which frame a message at 1.0 s precedes)."""

    def __init__(self, fps: float):
        if not (math.isfinite(fps) and fps > 0):
            raise InputError(f"fps must be a finite number > 0, not {fps!r}")
        self.fps, self.step = fps, 1.0 / fps
        self._times = [0.0]

    def time(self, k: int) -> float:
        while len(self._times) <= k:
            self._times.append(self._times[-1] + self.step)
        return self._times[k]

    def times(self, n: int) -> np.ndarray:
        self.time(n)
        return np.asarray(self._times[:n])

    def first_frame_at(self, t: float, start: int, stop: int) -> int | None:
        """The first frame index in [start, stop) whose time is >= t, or None (scans at most stop - start)."""
        for k in range(start, stop):
            if self.time(k) >= t:
                return k
        return None


@dataclass
class Clip:
    """Frames ready for the model. frames: uint8 (T, 3, R, R) RGB; frame k is at `FrameClock(fps).time(k)`."""

    frames: torch.Tensor
    fps: float  # sampling rate used
    duration: float  # the whole video's duration, seconds
    source_indices: np.ndarray  # (T,) index of each frame in the decoded stream
    path: str = ""
    original: list[np.ndarray] | None = field(default=None, repr=False)  # (H, W, 3) uint8 per frame, for display

    def __len__(self) -> int:
        return int(self.frames.shape[0])

    @property
    def times(self) -> np.ndarray:
        """(T,) seconds of each frame, as the session stamps them."""
        return FrameClock(self.fps).times(len(self))


# ---- which frames -------------------------------------------------------------------------------------------

def check_fps(fps, where: str = "") -> None:
    """A requested frame rate: a finite number > 0, or 0 to spread max_frames over the video; else an
    `InputError` prefixed with `where` (e.g. the file)."""
    if not is_finite_number(fps) or fps < 0:
        raise InputError(f"{where}fps must be a finite number > 0, or 0 to spread max_frames over the video; "
                         f"got {fps!r}")


def source_indices(frame_count: int, video_fps: float, fps: float, max_frames: int | None = None,
                   rule: FrameCountRule = "ceil") -> tuple[np.ndarray, float]:
    """Indices of the decoded frames to keep, and the frame rate they are at (frame k is at k / that rate).

    fps: the requested rate; 0 spreads `max_frames` over the whole video (the rate max_frames / duration).

    * Rate <= the video's: upstream's rule, exactly. duration = frame_count / video_fps; N = ceil (test time) or
      floor (demo, training) of duration * fps targets at i / fps; a decoded frame is taken for the next target
      when the clock (sum of 1 / video_fps over earlier frames) is >= the target; at most `max_frames` kept.
    * Rate above the video's: upstream keeps every frame but labels them at the requested rate, so a 1 fps video
      read at 2 fps would put its 2 s frame at 1 s. Here every frame is kept at its own time: the indices are
      the same, the returned rate is the video's.
    """
    check_fps(fps)
    if video_fps <= 0 or frame_count <= 0:
        return np.zeros(0, dtype=np.int64), float(fps)
    duration = frame_count / video_fps
    if fps == 0:
        if not max_frames:
            raise InputError("fps 0 spreads max_frames over the video, so it needs max_frames, not None")
        fps = max_frames / duration
    if fps > video_fps:  # more frames asked for than the video has: its own frames at their own times
        keep = frame_count if max_frames is None else min(frame_count, max_frames)
        return np.arange(keep, dtype=np.int64), float(video_fps)
    n_targets = math.ceil(duration * fps) if rule == "ceil" else math.floor(duration * fps)
    if max_frames is not None:
        n_targets = min(n_targets, max_frames)
    taken: list[int] = []
    clock, step = 0.0, 1.0 / video_fps
    for index in range(frame_count):
        if len(taken) >= n_targets:
            break
        if clock >= len(taken) / fps:
            taken.append(index)
        clock += step
    return np.asarray(taken, dtype=np.int64), float(fps)


# ---- resize and pad -----------------------------------------------------------------------------------------

def resized_shape(height: int, width: int, resolution: int) -> tuple[int, int]:
    """Upstream's arithmetic: the long side becomes `resolution`, the short side int() of the scaled size."""
    if width > height:
        return int(height / width * resolution), resolution
    return resolution, int(width / height * resolution)


@contextmanager
def _one_torch_thread() -> Iterator[None]:
    """One torch thread in the calling thread, the caller's setting restored after. With OpenMP (the default
    build) the setting is per thread, so other threads (the model's) keep theirs."""
    if not torch.backends.openmp.is_available():
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def resize_and_pad(frames: torch.Tensor, resolution: int) -> torch.Tensor:
    """uint8 (T, H, W, 3) -> uint8 (T, 3, R, R): bilinear resize (OpenCV's INTER_LINEAR geometry, half-pixel
    centres, no antialiasing) of the long side to R, then black padding split //2 and (+1)//2.

    Runs on one torch thread: torch's bilinear kernel rounds a few pixels differently (by 1) with 2 threads than
    with 1 for some sizes, so frames would depend on the machine's core count; and these small tensors gain
    nothing from more threads, only synchronisation (about 4x slower with 2 threads on a busy 2-core machine)."""
    t, h, w, _ = frames.shape
    x = frames.permute(0, 3, 1, 2)  # (T, 3, H, W)
    if (h, w) == (resolution, resolution):
        return x.contiguous()
    new_h, new_w = resized_shape(h, w, resolution)
    with _one_torch_thread():
        if (new_h, new_w) != (h, w):
            x = F.interpolate(x.float(), size=(new_h, new_w), mode="bilinear", align_corners=False, antialias=False)
            x = x.round_().clamp_(0, 255).to(torch.uint8)
        top, left = (resolution - new_h) // 2, (resolution - new_w) // 2
        bottom, right = resolution - new_h - top, resolution - new_w - left
        return F.pad(x, (left, right, top, bottom), value=0)  # (T, 3, R, R)


# ---- decoding -----------------------------------------------------------------------------------------------

def _check_file(path: Path) -> None:
    if not path.exists():
        raise VideoError(f"{path}: no such video file")
    if path.is_dir():
        raise VideoError(f"{path}: is a folder, not a video file")
    if path.stat().st_size == 0:
        raise VideoError(f"{path}: empty file (0 bytes)")


def probe_video(path: str | Path, backend: str = "auto") -> VideoInfo:
    """Frame rate and frame count of a video, without decoding it."""
    return _open(Path(path), _pick_backend(backend))[0]


def _open(path: Path, backend: str):
    """(VideoInfo, an open decord reader or None); every failure is one VideoError line naming the file."""
    _check_file(path)
    try:
        if backend == "decord":
            import decord

            vr = decord.VideoReader(str(path), num_threads=0)
            return VideoInfo(str(path), float(vr.get_avg_fps()), len(vr)), vr
        import av

        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate
            count = stream.frames or sum(1 for p in container.demux(stream) if p.size)
            return VideoInfo(str(path), float(rate or 0), int(count), stream.width, stream.height), None
    except VideoError:
        raise
    except Exception as exc:  # noqa: BLE001 - every decoder failure becomes one line naming the file
        raise VideoError(f"{path}: not a readable video ({type(exc).__name__}: {str(exc).strip()[:160]})") from exc


def _pick_backend(backend: str) -> str:
    if backend == "auto":  # PyAV: flat memory in video length, and no slower than decord reading in order
        return "pyav"
    if backend not in ("decord", "pyav"):
        raise InputError(f"unknown video backend {backend!r} (decord, pyav or auto)")
    return backend


def _decode_decord(path: Path, indices: np.ndarray, reader=None) -> Iterator[np.ndarray]:
    """The frames at `indices` (increasing), one (H, W, 3) RGB array at a time, read in order: frames between
    two kept ones are decoded and skipped, never converted or buffered (a batch read holds decord's buffers)."""
    import decord

    vr = reader if reader is not None else decord.VideoReader(str(path), num_threads=0)
    position = 0  # index of the frame `next()` returns
    for index in indices.tolist():
        if index > position:
            vr.skip_frames(index - position)
        yield vr.next().asnumpy()
        position = index + 1


DECODE_THREADS = 4  # at most this many PyAV decoder threads


def _decode_pyav(path: Path, indices: np.ndarray, reader=None) -> Iterator[np.ndarray]:
    """As `_decode_decord`, with PyAV: every frame up to the last kept one is decoded, the kept ones converted."""
    import av

    wanted = iter(indices.tolist())
    target = next(wanted, None)
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        # FFmpeg's own choice is one thread per core + 1, each holding a frame in flight: capped, so memory
        # stays "the selected frames plus a few decoded ones" on a many-core machine too
        stream.thread_count = min(DECODE_THREADS, (os.cpu_count() or 1) + 1)
        for index, frame in enumerate(container.decode(stream)):
            if index == target:
                yield frame.to_ndarray(format="rgb24")
                target = next(wanted, None)
                if target is None:
                    break


def _prefetch(frames: Iterator[np.ndarray], depth: int = 4) -> Iterator[np.ndarray]:
    """`frames`, decoded in a background thread at most `depth` frames ahead: the decoder (which releases the
    GIL) works on the next frames while the caller resizes the last ones. Errors are re-raised here."""
    import queue
    import threading

    box: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    end = object()

    def put(item) -> bool:
        """Hand one item over; False once the consumer has stopped (never blocks after that)."""
        while not stop.is_set():
            try:
                box.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for frame in frames:
                if not put(frame):
                    return
            put(end)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, which raises it
            put(exc)
        finally:
            getattr(frames, "close", lambda: None)()  # the decoder's file is closed in the thread that used it

    worker = threading.Thread(target=produce, name="video-decode", daemon=True)
    worker.start()
    try:
        while (item := box.get()) is not end:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        worker.join()


RESIZE_BATCH_MB = 2  # float32 input of one resize call: a frame or a few; resize memory (about 3x this) stays small


def read_video(path: str | Path, fps: float = 2.0, max_frames: int | None = 400, resolution: int = 384,
               rule: FrameCountRule = "ceil", keep_original: bool = False, backend: str = "auto") -> Clip:
    """Decode the frames upstream would feed the model.

    fps: sampling rate; 0 spreads `max_frames` over the whole video; negative, NaN or infinite is an
    `InputError`. Above the video's own rate, the video's frames are used at their own times and `Clip.fps` is
    the video's rate (see `source_indices`). rule: "ceil" frame count (benchmark inference) or "floor" (demo and
    training). keep_original: also return the decoded frames at their original size (for display). Long videos
    are truncated at `max_frames`, as upstream.

    Memory: the selected frames (T x 3 x R x R bytes, allocated once) plus a few decoded frames in flight
    (resized `RESIZE_BATCH_MB` of float pixels at a time), whatever the video's length.
    """
    path = Path(path)
    check_fps(fps, f"{path}: ")
    if fps == 0 and not max_frames:
        raise InputError(f"{path}: fps 0 spreads max_frames over the video, so it needs max_frames, not {max_frames!r}")
    backend = _pick_backend(backend)
    info, reader = _open(path, backend)
    if info.fps <= 0 or info.frame_count <= 0:
        raise VideoError(f"{path}: no frames or no frame rate in the container (fps {info.fps}, {info.frame_count} frames)")
    indices, used_fps = source_indices(info.frame_count, info.fps, fps, max_frames, rule)
    if len(indices) == 0:
        raise VideoError(f"{path}: shorter than one frame interval ({info.duration:.3f} s at {used_fps:g} fps)")
    decode = _decode_decord if backend == "decord" else _decode_pyav
    out = torch.empty(len(indices), 3, resolution, resolution, dtype=torch.uint8)  # (T, 3, R, R), filled in place
    originals: list[np.ndarray] | None = [] if keep_original else None
    pending: list[np.ndarray] = []  # decoded, not yet resized: one resize call per few frames is much cheaper
    done = 0

    def flush() -> int:
        out[done:done + len(pending)] = resize_and_pad(torch.from_numpy(np.stack(pending)), resolution)
        n = len(pending)
        pending.clear()
        return n

    try:
        for frame in _prefetch(decode(path, indices, reader)):
            pending.append(frame)
            if originals is not None:
                originals.append(frame)
            if len(pending) * frame.nbytes * 4 >= RESIZE_BATCH_MB * 2**20 or len(pending) == 8:
                done += flush()
        if pending:
            done += flush()
    except Exception as exc:  # noqa: BLE001 - a damaged or truncated file: one line naming it
        raise VideoError(f"{path}: decoding failed after {done + len(pending)} of {len(indices)} selected frames "
                         f"({type(exc).__name__}: {str(exc).strip()[:160]})") from exc
    if done < len(indices):  # truncated file: fewer decodable frames than the header says
        raise VideoError(f"{path}: truncated, {done} of {len(indices)} selected frames decodable")
    return Clip(out, used_fps, info.duration, indices, str(path), originals)


# ---- metadata cache -----------------------------------------------------------------------------------------

def _stat_key(path: Path) -> tuple[int, float]:
    st = path.stat()
    return st.st_size, round(st.st_mtime, 3)


def build_metadata(video_root: str | Path, cache_path: str | Path | None = None, workers: int | None = None,
                   progress: bool = True) -> dict[str, dict]:
    """`videos_metadata.json` for every video under `video_root`: {relative path: {duration, fps, frame_count,
    path, size, mtime}}. Entries whose file size and mtime are unchanged are reused; unreadable files are
    recorded with an `error`. Written atomically when `cache_path` is given (default: inside video_root)."""
    from tqdm.auto import tqdm

    root = Path(video_root)
    cache_path = Path(cache_path) if cache_path else root / "videos_metadata.json"
    cached = json.loads(cache_path.read_text()) if cache_path.exists() else {}
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file())
    result: dict[str, dict] = {}
    todo = []
    for p in files:
        rel = p.relative_to(root).as_posix()
        size, mtime = _stat_key(p)
        old = cached.get(rel)
        if old and old.get("size") == size and old.get("mtime") == mtime:
            result[rel] = old
        else:
            todo.append((rel, p, size, mtime))

    def probe(item):
        rel, p, size, mtime = item
        try:
            info = probe_video(p)
            entry = {"duration": info.duration, "fps": info.fps, "frame_count": info.frame_count}
        except VideoError as exc:
            entry = {"duration": 0.0, "fps": 0.0, "frame_count": 0, "error": str(exc)}
        return rel, {**entry, "path": str(p), "size": size, "mtime": mtime}

    with ThreadPoolExecutor(max_workers=workers or min(8, os.cpu_count() or 1)) as pool:
        for rel, entry in tqdm(pool.map(probe, todo), total=len(todo), disable=not progress or not todo,
                               desc="video metadata"):
            result[rel] = entry
    result = dict(sorted(result.items()))
    if result != cached:
        tmp = cache_path.with_name(f"{cache_path.name}.{os.getpid()}.tmp")  # one per process: ranks may race
        tmp.write_text(json.dumps(result, indent=1))
        os.replace(tmp, cache_path)
    return result


def write_video(path: str | Path, frames: Iterable[np.ndarray], fps: float, codec: str = "libx264",
                crf: int = 18) -> Path:
    """Encode RGB uint8 frames (H, W, 3) to an H.264 mp4 with PyAV (used by the toy world and tests).

    fps may be fractional (29.97 is written as 30000/1001). Odd sizes are allowed (yuv444p is used then,
    since 4:2:0 needs even sides)."""
    import fractions

    import av

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rate = fractions.Fraction(fps).limit_denominator(1001)
    with av.open(str(path), "w") as container:
        stream = None
        for frame in frames:
            if stream is None:
                h, w = frame.shape[:2]
                stream = container.add_stream(codec, rate=rate)
                stream.width, stream.height = w, h
                stream.pix_fmt = "yuv420p" if h % 2 == 0 and w % 2 == 0 else "yuv444p"
                stream.options = {"crf": str(crf), "preset": "veryfast"}
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                container.mux(packet)
        if stream is not None:
            for packet in stream.encode():
                container.mux(packet)
    return path
