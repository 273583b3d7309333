"""read_video keeps the same frames as upstream's OpenCV decode-everything loop, and the same pixels within +-1."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest
import torch

from mmduet_core.errors import InputError
from mmduet_core.tools.bench import synthetic_video
from mmduet_core.video import (
    FrameClock,
    VideoError,
    build_metadata,
    read_video,
    resize_and_pad,
    source_indices,
)

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
    spread, used = source_indices(300, 30.0, 0, max_frames=10)  # fps 0: 10 frames over 10 s
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


# ---- the frame clock never invents time ---------------------------------------------------------------------

def _upstream_rule(frame_count, video_fps, fps, max_frames, rule):
    """Upstream's clock rule, written from the spec: N targets at i / fps, a decoded frame taken for the next
    target when the clock (1 / video_fps added per frame) has reached it, at most one target per frame."""
    duration = frame_count / video_fps
    n = math.ceil(duration * fps) if rule == "ceil" else math.floor(duration * fps)
    n = min(n, max_frames) if max_frames is not None else n
    taken, clock = [], 0.0
    for index in range(frame_count):
        if len(taken) < n and clock >= len(taken) / fps:
            taken.append(index)
        clock += 1 / video_fps
    return taken


@pytest.mark.parametrize("video_fps", [30.0, 30000 / 1001, 25.0, 4.0, 1.0])
@pytest.mark.parametrize("rule", ["ceil", "floor"])
def test_upstream_rule_kept_at_or_below_the_video_rate(video_fps, rule):
    for frame_count in (1, 3, 48, 95, 361):
        for fps in (0.1, 0.5, 1.0, 2.0, 3.0, 7.0, video_fps / 2, video_fps):
            if fps > video_fps:
                continue
            for max_frames in (None, 5, 400):
                indices, used = source_indices(frame_count, video_fps, fps, max_frames, rule)
                assert indices.tolist() == _upstream_rule(frame_count, video_fps, fps, max_frames, rule)
                assert used == fps


def test_rate_above_the_video_keeps_true_times():
    # a 3-frame 1 fps video read at 2 fps: its frames at 0, 1, 2 s (upstream labelled them 0, 0.5, 1.0 s)
    indices, used = source_indices(3, 1.0, 2.0)
    assert indices.tolist() == [0, 1, 2] and used == 1.0
    assert FrameClock(used).times(3).tolist() == [0.0, 1.0, 2.0]
    # the same frames upstream would take, only the rate (so the time stamps) differs
    assert indices.tolist() == _upstream_rule(3, 1.0, 2.0, None, "ceil")
    # 1000 fps on a 12 s, 4 fps video: the last frame is at 11.75 s (upstream: 0.047 s)
    indices, used = source_indices(48, 4.0, 1000.0, max_frames=400)
    assert len(indices) == 48 and used == 4.0
    assert FrameClock(used).time(47) == pytest.approx(11.75)
    # max_frames still truncates
    assert source_indices(48, 4.0, 1000.0, max_frames=10)[0].tolist() == list(range(10))


def test_spread_mode_covers_the_whole_video():
    # 12 s at 4 fps, 400 frames asked for: only 48 exist, so all of them at their own times (upstream: 0-1.41 s)
    indices, used = source_indices(48, 4.0, 0, max_frames=400)
    assert len(indices) == 48 and used == 4.0 and FrameClock(used).time(47) == pytest.approx(11.75)
    # 24 frames over the same video: 2 fps, the last frame in the last second
    indices, used = source_indices(48, 4.0, 0, max_frames=24)
    assert len(indices) == 24 and used == pytest.approx(2.0)
    assert indices[-1] >= 44 and FrameClock(used).time(23) == pytest.approx(11.5)
    with pytest.raises(InputError, match="needs max_frames"):
        source_indices(48, 4.0, 0, max_frames=None)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf"), -1.0, "2"])
def test_bad_fps_is_one_line_input_error(tmp_path, bad):
    video = _synthetic(tmp_path / "clip.mp4", 6, 32, 32, 2)
    with pytest.raises(InputError) as err:
        read_video(video, fps=bad)
    message = str(err.value)
    assert "clip.mp4" in message and repr(bad) in message and "\n" not in message
    with pytest.raises(InputError):
        source_indices(6, 2.0, bad)
    with pytest.raises(InputError, match=r"clip\.mp4.*needs max_frames"):
        read_video(video, fps=0, max_frames=None)


@pytest.mark.parametrize("backend", ["pyav", "decord"])
def test_read_video_above_rate_and_spread_on_a_file(tmp_path, backend):
    video = _synthetic(tmp_path / "slow.mp4", 12, 48, 64, 4)  # 3 s at 4 fps
    clip = read_video(video, fps=10.0, resolution=32, backend=backend)
    assert len(clip) == 12 and clip.fps == 4.0 and clip.times[-1] == pytest.approx(2.75)
    spread = read_video(video, fps=0, max_frames=400, resolution=32, backend=backend)
    assert spread.fps == 4.0 and spread.source_indices.tolist() == list(range(12))
    assert torch.equal(spread.frames, clip.frames)
    half = read_video(video, fps=0, max_frames=6, resolution=32, backend=backend)
    assert half.fps == pytest.approx(2.0) and half.source_indices.tolist() == [0, 2, 4, 6, 8, 10]


# ---- memory and pixels of the loader --------------------------------------------------------------------

@pytest.mark.parametrize("backend", ["pyav", "decord"])
def test_pixels_identical_to_decode_all_then_resize(videos, backend):
    """The streaming loader (frames resized a few at a time into one tensor) gives exactly the pixels of the
    straightforward pipeline: decode every frame, keep the selected ones, resize them all at once."""
    import av

    path = videos["odd"]
    clip = read_video(path, fps=7.0, resolution=96, backend=backend)
    with av.open(str(path)) as container:
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(container.streams.video[0])]
    reference = resize_and_pad(torch.from_numpy(np.stack([decoded[i] for i in clip.source_indices])), 96)
    assert torch.equal(clip.frames, reference)


@pytest.mark.timeout(180)
def test_peak_memory_bounded_by_the_selected_frames(tmp_path):
    """Peak RSS above imports <= 1.5 x the selected frames + 64 MB (a fresh process: the bench's probe). The
    old loader (decord batch reads, a list of chunks concatenated at the end) peaked at 220 MB here, for 63 MB of
    frames (bound 159 MB); resizing 8 frames at a time, 118 MB on a 2-core machine and 165 MB in one CI run;
    a frame or two at a time with at most 4 decoder threads, 95 MB."""
    video = _synthetic(tmp_path / "many.mp4", 150, 240, 320, 30)
    out = subprocess.run([sys.executable, "-m", "mmduet_core.tools.decode_probe", "ours", str(video), "60", "400"],
                         capture_output=True, text=True, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["frames"] == 150 and result["indices"] == list(range(150))
    bound = 1.5 * result["frames_mb"] + 64
    assert result["peak_mb_above_imports"] <= bound, \
        f"{result['peak_mb_above_imports']:.0f} MB > {bound:.0f} MB ({result['cpus']} cpus)"


def test_resize_does_not_depend_on_torch_threads():
    """torch's bilinear kernel rounds a few pixels differently with 2 threads than with 1 at some sizes; frames
    must not depend on the machine's core count (and the caller's thread setting must survive)."""
    x = torch.randint(0, 256, (8, 240, 320, 3), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = resize_and_pad(x, 96)
        torch.set_num_threads(2)
        two = resize_and_pad(x, 96)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    assert torch.equal(one, two)


@pytest.mark.timeout(30)
def test_decode_ahead_thread_passes_errors_and_stops():
    from mmduet_core.video import _prefetch

    def frames(n, fail_at=None):
        for i in range(n):
            if i == fail_at:
                raise RuntimeError("damaged frame")
            yield np.full(1, i)

    assert [int(f[0]) for f in _prefetch(frames(20))] == list(range(20))
    with pytest.raises(RuntimeError, match="damaged frame"):
        list(_prefetch(frames(20, fail_at=7)))
    with pytest.raises(ValueError, match="caller"):  # the caller fails while the decoder is ahead: no hang
        for f in _prefetch(frames(1000)):
            if f[0] == 2:
                raise ValueError("caller")
