"""read_video keeps the same frames as upstream's OpenCV decode-everything loop, and the same pixels within +-1."""

from __future__ import annotations

import json
import math
import os
import time

import cv2
import numpy as np
import pytest

from mmduet_core.tools.bench import synthetic_video
from mmduet_core.video import VideoError, build_metadata, read_video, source_indices

from .conftest import shared_path


def _opencv_reference(path, fps: float, max_frames: int, resolution: int, rule: str = "ceil"):
    """Upstream's test-time loader re-written from the spec with OpenCV: decode every frame, clock rule,
    cv2.resize + black padding, BGR -> RGB."""
    cap = cv2.VideoCapture(str(path))
    video_fps = cap.get(cv2.CAP_PROP_FPS)
    duration = cap.get(cv2.CAP_PROP_FRAME_COUNT) / video_fps
    if fps <= 0:
        fps = max_frames / duration
    n = math.ceil(duration * fps) if rule == "ceil" else math.floor(duration * fps)
    targets = [i / fps for i in range(n)]
    frames, indices, clock, index = [], [], 0.0, 0
    while len(frames) < min(n, max_frames):
        ok, frame = cap.read()
        if not ok:
            break
        if len(frames) < len(targets) and clock >= targets[len(frames)]:
            h, w = frame.shape[:2]
            if (h, w) != (resolution, resolution):
                if w > h:
                    new_w, new_h = resolution, int(h / w * resolution)
                else:
                    new_h, new_w = resolution, int(w / h * resolution)
                frame = cv2.resize(frame, (new_w, new_h))
                top, left = (resolution - new_h) // 2, (resolution - new_w) // 2
                frame = cv2.copyMakeBorder(frame, top, (resolution - new_h + 1) // 2, left,
                                           (resolution - new_w + 1) // 2, cv2.BORDER_CONSTANT, value=(0, 0, 0))
            frames.append(frame[:, :, ::-1].transpose(2, 0, 1))
            indices.append(index)
        clock += 1 / video_fps
        index += 1
    return np.stack(frames), np.array(indices)


def _synthetic(path, n, h, w, fps, seed=0):
    return synthetic_video(path, n, h, w, fps, seed)


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("videos")
    return {
        "30fps": _synthetic(root / "30fps.mp4", 95, 240, 320, 30),
        "odd": _synthetic(root / "odd.mp4", 61, 203, 321, 30),
        "portrait": _synthetic(root / "portrait.mp4", 50, 320, 180, 30),
        "ntsc": _synthetic(root / "ntsc.mp4", 100, 240, 320, 30000 / 1001),
    }


@pytest.mark.parametrize("backend", ["decord", "pyav"])
@pytest.mark.parametrize("name", ["30fps", "odd", "portrait", "ntsc"])
@pytest.mark.parametrize(("fps", "resolution"), [(2.0, 384), (0.5, 96), (7.0, 64)])
def test_same_frames_and_pixels_as_opencv(videos, name, backend, fps, resolution):
    ref_frames, ref_indices = _opencv_reference(videos[name], fps, 400, resolution)
    clip = read_video(videos[name], fps=fps, max_frames=400, resolution=resolution, backend=backend)
    np.testing.assert_array_equal(clip.source_indices, ref_indices)
    assert clip.frames.shape == ref_frames.shape
    diff = np.abs(clip.frames.numpy().astype(int) - ref_frames.astype(int))
    assert diff.max() <= 1, f"max pixel difference {diff.max()}"
    np.testing.assert_allclose(clip.times, np.arange(len(ref_indices)) / fps)


@pytest.mark.parametrize("name", ["office.mp4", "drive.mp4"])
def test_demo_videos_match_opencv(name):
    path = shared_path(f"data/videos/{name}")
    for fps, rule in [(2.0, "ceil"), (1.0, "floor"), (0.5, "ceil")]:
        ref_frames, ref_indices = _opencv_reference(path, fps, 400, 384, rule)
        clip = read_video(path, fps=fps, resolution=384, rule=rule, keep_original=True)
        np.testing.assert_array_equal(clip.source_indices, ref_indices)
        assert np.abs(clip.frames.numpy().astype(int) - ref_frames.astype(int)).max() <= 1
        assert len(clip.original) == len(clip) and clip.original[0].shape == (384, 384, 3)


def test_float_clock_quirk_is_reproduced():
    # 15 additions of 1/30 fall just short of 0.5 s, so upstream takes source frame 16, not 15, at 2 fps
    indices, _ = source_indices(95, 30.0, 2.0)
    assert indices[:3].tolist() == [0, 16, 31]


def test_frame_count_rules_and_spread_mode():
    ceil, _ = source_indices(95, 30.0, 2.0, rule="ceil")  # 3.17 s -> ceil 7
    floor, _ = source_indices(95, 30.0, 2.0, rule="floor")  # floor 6
    assert (len(ceil), len(floor)) == (7, 6)
    spread, used = source_indices(300, 30.0, 0, max_frames=10)  # fps <= 0: 10 frames over 10 s
    assert used == pytest.approx(1.0) and len(spread) == 10
    capped, _ = source_indices(3000, 30.0, 2.0, max_frames=20)  # truncated, not subsampled
    assert len(capped) == 20 and capped[-1] < 600


def test_bad_inputs_are_one_line_errors(tmp_path, videos):
    with pytest.raises(VideoError, match=r"missing\.mp4: no such video file"):
        read_video(tmp_path / "missing.mp4")
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(VideoError, match=r"empty\.mp4: empty file"):
        read_video(tmp_path / "empty.mp4")
    (tmp_path / "text.mp4").write_text("this is not a video\n" * 50)
    with pytest.raises(VideoError, match=r"text\.mp4: not a readable video"):
        read_video(tmp_path / "text.mp4")
    data = videos["30fps"].read_bytes()
    (tmp_path / "truncated.mp4").write_bytes(data[: len(data) // 3])
    with pytest.raises(VideoError, match=r"truncated\.mp4"):
        read_video(tmp_path / "truncated.mp4")
    short = _synthetic(tmp_path / "short.mp4", 3, 64, 64, 30)  # 0.1 s
    with pytest.raises(VideoError, match="shorter than one frame interval"):
        read_video(short, fps=2.0, rule="floor")
    assert len(read_video(short, fps=2.0, rule="ceil")) == 1
    for err in (VideoError,):
        try:
            read_video(tmp_path / "text.mp4")
        except err as exc:
            assert "\n" not in str(exc)


def test_metadata_cache_reuses_and_invalidates(tmp_path, videos):
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    for name in ("30fps", "ntsc"):
        (root / "sub" / f"{name}.mp4").write_bytes(videos[name].read_bytes())
    (root / "broken.mp4").write_bytes(b"")
    meta = build_metadata(root, progress=False)
    assert meta["sub/30fps.mp4"]["frame_count"] == 95 and meta["sub/30fps.mp4"]["fps"] == 30.0
    assert meta["sub/ntsc.mp4"]["duration"] == pytest.approx(100 / (30000 / 1001))
    assert "error" in meta["broken.mp4"]
    cache = json.loads((root / "videos_metadata.json").read_text())
    assert set(cache) == {"sub/30fps.mp4", "sub/ntsc.mp4", "broken.mp4"}
    # reuse: a poisoned cached value survives while size and mtime are unchanged
    cache["sub/30fps.mp4"]["fps"] = 99.0
    (root / "videos_metadata.json").write_text(json.dumps(cache))
    assert build_metadata(root, progress=False)["sub/30fps.mp4"]["fps"] == 99.0
    # invalidate: a changed file is probed again
    (root / "sub" / "30fps.mp4").write_bytes(videos["odd"].read_bytes())
    later = time.time() + 5
    os.utime(root / "sub" / "30fps.mp4", (later, later))
    assert build_metadata(root, progress=False)["sub/30fps.mp4"]["frame_count"] == 61
