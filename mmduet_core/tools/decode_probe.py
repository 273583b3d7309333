"""One timed video decode in a fresh process, for `mmduet bench video`: our loader or upstream's OpenCV loop.

    python -m mmduet_core.tools.decode_probe {ours,upstream} VIDEO FPS MAX_FRAMES [RESOLUTION]

Prints one JSON line: seconds, frames kept, their source indices, a pixel checksum, and the peak resident memory
above what the process held after its imports (so each loader's memory is its own, not the benchmark's).
"""

from __future__ import annotations

import json
import math
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np


def rss_mb() -> float:
    """Resident memory now, MB."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def reset_peak() -> bool:
    """Reset the kernel's peak-RSS mark (Linux >= 4.0), so the peak measured is the decode's own."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_mb() -> float:
    """Peak resident memory since the last reset (VmHWM), MB; ru_maxrss where /proc is missing."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def upstream_decode(path: str, fps: float, max_frames: int, resolution: int) -> tuple[np.ndarray, list[int]]:
    """Upstream's test-time loader: OpenCV decodes every frame in order, a clock advanced by 1 / video fps
    picks the frames for targets i / fps, each is resized, padded and turned to RGB; stops at `max_frames`."""
    import cv2

    cap = cv2.VideoCapture(path)
    video_fps = cap.get(cv2.CAP_PROP_FPS)
    n = min(math.ceil(cap.get(cv2.CAP_PROP_FRAME_COUNT) / video_fps * fps), max_frames)
    out, indices, clock, index = [], [], 0.0, 0
    while len(out) < n:
        ok, frame = cap.read()
        if not ok:
            break
        if clock >= len(out) / fps:
            h, w = frame.shape[:2]
            if (h, w) != (resolution, resolution):
                new_h, new_w = (int(h / w * resolution), resolution) if w > h else (resolution, int(w / h * resolution))
                frame = cv2.resize(frame, (new_w, new_h))
                top, left = (resolution - new_h) // 2, (resolution - new_w) // 2
                frame = cv2.copyMakeBorder(frame, top, resolution - new_h - top, left, resolution - new_w - left,
                                           cv2.BORDER_CONSTANT, value=0)
            out.append(frame[:, :, ::-1].transpose(2, 0, 1))
            indices.append(index)
        clock += 1 / video_fps
        index += 1
    return np.stack(out), indices


def main(argv: list[str]) -> dict:
    mode, path, fps, max_frames = argv[0], argv[1], float(argv[2]), int(argv[3])
    resolution = int(argv[4]) if len(argv) > 4 else 384
    if mode == "ours":
        import av  # noqa: F401 - the decoder library is an import, not the decode's memory

        from ..video import read_video
    else:
        import cv2  # noqa: F401
    baseline = rss_mb()
    exact = reset_peak()
    start = time.perf_counter()
    if mode == "ours":
        clip = read_video(path, fps=fps, max_frames=max_frames, resolution=resolution)
        frames, indices = clip.frames.numpy(), clip.source_indices.tolist()
    else:
        frames, indices = upstream_decode(path, fps, max_frames, resolution)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "frames": int(len(frames)), "indices": [int(i) for i in indices],
            "checksum": int(frames.sum(dtype=np.int64)), "frames_mb": frames.nbytes / 2**20,
            "peak_mb_above_imports": peak_mb() - baseline, "peak_exact": exact, "cpus": os.cpu_count()}


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1:])))
