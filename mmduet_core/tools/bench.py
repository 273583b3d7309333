"""`mmduet bench {stream,video,eval}`: two approaches timed on the same input in one run, reported as a ratio.

Timings are wall-clock medians over `--repeat` runs; they are for comparing the two sides of one run, not
across machines.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

SHARED_CHARADES = Path("../shared/data/charades_sta/charades_test.json")


def _median_time(fn, repeat: int) -> float:
    times = []
    for _ in range(max(repeat, 1)):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


# ---- eval ---------------------------------------------------------------------------------------------------

def bench_eval(gold: str | Path | None = None, repeat: int = 3, seed: int = 0) -> dict:
    """Vectorised grounding sweep vs the per-query loop, on Charades-STA gold with seeded random scores."""
    from ..data.convert import convert_charades
    from ..evaluation.grounding import THRESHOLDS, WINDOWS, frame_iou_loop, frame_ious, gold_mask, pad_series

    gold = Path(gold) if gold else SHARED_CHARADES
    if not gold.exists():
        raise FileNotFoundError(f"{gold}: Charades-STA gold not found; pass --gold charades_test.json")
    examples = convert_charades(gold)
    rng = np.random.default_rng(seed)
    times = [np.arange(int(np.ceil(e["duration"] * 2))) / 2 for e in examples]
    scores = [rng.random(len(t)) for t in times]
    spans = [e["timestamps"] for e in examples]
    t_pad, lengths = pad_series(times)
    s_pad, _ = pad_series(scores)
    gmask = gold_mask(t_pad, spans)

    # the loop is too slow for the full grid, so both sides run the same sub-grid for the ratio
    windows, thresholds = (0, 6, 14), (0.3, 0.5, 0.7)

    def loop():
        return [[[frame_iou_loop(t, s, sp, w, th) for t, s, sp in zip(times, scores, spans, strict=True)]
                 for th in thresholds] for w in windows]

    vec_time = _median_time(lambda: frame_ious(s_pad, lengths, gmask, windows, thresholds), repeat)
    loop_time = _median_time(loop, 1)
    same = np.allclose(np.asarray(loop()), frame_ious(s_pad, lengths, gmask, windows, thresholds))
    full_time = _median_time(lambda: frame_ious(s_pad, lengths, gmask, WINDOWS, THRESHOLDS), repeat)
    return {"benchmark": "eval", "queries": len(examples), "grid_compared": f"{len(windows)} windows x {len(thresholds)} thresholds",
            "loop_s": round(loop_time, 3), "vectorised_s": round(vec_time, 4), "ratio": round(loop_time / vec_time, 1),
            "identical_ious": bool(same), "full_sweep_vectorised_s": round(full_time, 3),
            "full_sweep": f"{len(WINDOWS)} windows x {len(THRESHOLDS)} thresholds",
            "goal": "ratio >= 20"}


# ---- video --------------------------------------------------------------------------------------------------

def synthetic_video(path: str | Path, frames: int, height: int = 360, width: int = 640, fps: float = 30.0,
                    seed: int = 0) -> Path:
    """An H.264 test video: a moving bar, a fixed block, a brightness ramp and noise (so it does not compress
    to nothing). For decode benchmarks and loader tests."""
    from ..video import write_video

    rng = np.random.default_rng(seed)

    def frame(i: int) -> np.ndarray:
        f = np.full((height, width, 3), (i * 7) % 200, np.uint8)
        f[height // 4:height // 2, (i * 3) % width:(i * 3) % width + width // 5] = (250, 20, 120)
        f[-height // 5:, : width // 3] = (20, 200, 40)
        return f + rng.integers(0, 25, (height, width, 3), dtype=np.uint8)

    return write_video(path, (frame(i) for i in range(frames)), fps)


_DECODE_SNIPPET = r"""
import json, resource, sys, time
import numpy as np
mode, path, fps = sys.argv[1], sys.argv[2], float(sys.argv[3])
if mode == "ours":
    from mmduet_core.video import read_video
else:
    import math, cv2
def rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20
baseline = rss_mb()
start = time.perf_counter()
if mode == "ours":
    clip = read_video(path, fps=fps, max_frames=None, resolution=384)
    frames, indices = clip.frames.numpy(), clip.source_indices
else:
    cap = cv2.VideoCapture(path)
    vfps = cap.get(cv2.CAP_PROP_FPS); n = math.ceil(cap.get(cv2.CAP_PROP_FRAME_COUNT) / vfps * fps)
    out, indices, clock, i = [], [], 0.0, 0
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        if len(out) < n and clock >= len(out) / fps:
            h, w = frame.shape[:2]
            if w > h: nw, nh = 384, int(h / w * 384)
            else: nh, nw = 384, int(w / h * 384)
            if (h, w) != (384, 384):
                frame = cv2.resize(frame, (nw, nh))
                t, l = (384 - nh) // 2, (384 - nw) // 2
                frame = cv2.copyMakeBorder(frame, t, 384 - nh - t, l, 384 - nw - l, cv2.BORDER_CONSTANT, value=0)
            out.append(frame[:, :, ::-1].transpose(2, 0, 1)); indices.append(i)
        clock += 1 / vfps; i += 1
    frames = np.stack(out)
elapsed = time.perf_counter() - start
print(json.dumps({"seconds": elapsed, "frames": int(len(frames)), "indices": [int(x) for x in indices],
                  "checksum": int(frames.sum(dtype=np.int64)),
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "baseline_rss_mb": baseline}))
"""


def _decode_in_subprocess(mode: str, path: str, fps: float) -> dict:
    out = subprocess.run([sys.executable, "-c", _DECODE_SNIPPET, mode, path, str(fps)], capture_output=True,
                         text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def bench_video(videos: list[str] | None = None, repeat: int = 3) -> dict:
    """Our loader (decode only the kept frames) vs upstream's (OpenCV decodes every frame), each in a fresh
    process so peak memory is its own, at 0.5 and 2 fps on the same files."""
    import importlib.util

    if importlib.util.find_spec("cv2") is None:
        raise RuntimeError("bench video compares against OpenCV: pip install opencv-python-headless")
    if not videos:
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:  # a 20 s 640 x 360 30 fps H.264 video
            return bench_video([str(synthetic_video(Path(tmp) / "synthetic_360p.mp4", 600))], repeat)
    rows = []
    for path in videos:
        for fps in (0.5, 2.0):
            runs = {mode: [_decode_in_subprocess(mode, path, fps) for _ in range(max(repeat, 1))]
                    for mode in ("ours", "upstream")}
            ours = min(runs["ours"], key=lambda r: r["seconds"])
            up = min(runs["upstream"], key=lambda r: r["seconds"])
            rows.append({"video": Path(path).name, "fps": fps, "frames": ours["frames"],
                         "ours_frames_per_s": round(ours["frames"] / ours["seconds"], 1),
                         "upstream_frames_per_s": round(up["frames"] / up["seconds"], 1),
                         "ratio": round(up["seconds"] / ours["seconds"], 2),
                         "same_frames": ours["indices"] == up["indices"],
                         "ours_peak_mb_above_imports": round(ours["peak_rss_mb"] - ours["baseline_rss_mb"], 1),
                         "upstream_peak_mb_above_imports": round(up["peak_rss_mb"] - up["baseline_rss_mb"], 1),
                         "selected_frames_mb": round(ours["frames"] * 3 * 384 * 384 / 2**20, 1)})
    return {"benchmark": "video", "rows": rows, "runner_overlap": _runner_overlap(videos), "note": "imports happen before the clock; memory is peak RSS minus RSS after imports"}


# ---- stream -------------------------------------------------------------------------------------------------

STREAM_MODES = {
    "grounding (never replies)": dict(mode="never"),
    "rm-ass-turns sum 2.0": dict(mode="sum", reply_threshold=2.0, remove_assistant_turns=True),
    "kept replies prob 0.5": dict(mode="prob", reply_threshold=0.5),
}


def _random_model(tokens_per_frame: int = 49, hidden: int = 256, layers: int = 4):
    """A random MMDuet with 49 tokens per frame (the 7B layout: 27 x 27 grid, stride 4) or 4 (the toy's size)."""
    import torch

    from ..model import DuetModel
    from ..model.checkpoint import tiny_config
    from ..model.template import DEFAULT_SYSTEM_PROMPT, train_tokenizer

    tok = train_tokenizer([DEFAULT_SYSTEM_PROMPT, "a red square appears and moves left"] * 4, vocab_size=400)
    torch.manual_seed(0)
    grid = {49: dict(image_size=54, patch_size=2, pooling_stride=4), 4: dict(image_size=32, patch_size=8, pooling_stride=2)}
    config = tiny_config(len(tok), tok.convert_tokens_to_ids("<image>"), hidden_size=hidden, num_layers=layers,
                         num_heads=8, num_kv_heads=4, **grid[tokens_per_frame])
    return DuetModel(config).eval(), tok


def _stream_model(name: str):
    """The toy model when asked for (or shipped), else a small random MMDuet."""
    from ..model.checkpoint import TOY_DIR, load_model

    if name == "toy" or (name == "auto" and (TOY_DIR / "config.json").exists()):
        return load_model("toy", device="cpu")[0:2] + ("toy",)
    tokens = 4 if name == "tiny4" else 49
    model, tok = _random_model(tokens)
    return model, tok, f"random tiny (hidden 256, 4 layers, {tokens} tokens per frame)"


def bench_stream(model_name: str = "auto", frames: int = 120, max_new_tokens: int = 200, repeat: int = 1) -> dict:
    """Frames per second of the sequential loop (one forward per frame) and the exact fast path, same model,
    same frames, same policy; also checks they agree."""
    import torch

    from ..stream import DuetSession, DuetSettings

    model, tok, label = _stream_model(model_name)
    torch.manual_seed(1)
    side = model.config.vision_config.image_size
    with torch.no_grad():
        embeds = model.encode_frames(torch.randint(0, 256, (frames, 3, side, side), dtype=torch.uint8))
    rows = []
    for name, kw in STREAM_MODES.items():
        policy = DuetSettings(**kw)
        out = {}
        for path, chunk in (("sequential", 1), ("fast", 32)):
            def go(chunk=chunk, policy=policy):
                s = DuetSession(model, tok, policy, fps=2.0, chunk_frames=chunk, max_new_tokens=max_new_tokens)
                s.add_user_message("What is happening?", 0.0)
                list(s.push_frames(embeds))
                return s
            seconds = _median_time(go, repeat)
            out[path] = (seconds, go())
        (t_seq, s_seq), (t_fast, s_fast) = out["sequential"], out["fast"]
        diff = max(abs(a.informative - b.informative) for a, b in zip(s_seq.steps, s_fast.steps, strict=True))
        replies = [(r["time"], r["content"]) for r in s_seq.responses]
        rows.append({"mode": name, "frames": frames, "replies": sum(1 for r in replies if r[1]) - 1,
                     "sequential_frames_per_s": round(frames / t_seq, 1), "fast_frames_per_s": round(frames / t_fast, 1),
                     "ratio": round(t_seq / t_fast, 2), "max_prob_diff": float(diff),
                     "same_replies": replies == [(r["time"], r["content"]) for r in s_fast.responses]})
    return {"benchmark": "stream", "model": label, "device": "cpu", "max_new_tokens": max_new_tokens, "rows": rows,
            "goals": "ratio >= 10 in grounding mode, >= 3 in rm-ass-turns sum mode"}


def _runner_overlap(videos: list[str]) -> dict:
    """Run the benchmark runner over the videos (a random 49-token model, grounding preset at 2 fps) and report
    how much of the decoding was hidden behind inference of the previous video."""
    import tempfile

    from ..runner import PRESETS, run_benchmark

    model, tok = _random_model(49, hidden=128, layers=2)
    examples = [{"question_id": i, "video": str(Path(v).resolve()), "conversation": [
        {"role": "user", "content": "a red square", "time": 0.0}]} for i, v in enumerate(videos * 2)]
    config = PRESETS["charades"].settings
    with tempfile.TemporaryDirectory() as tmp:
        summary = run_benchmark(model, tok, examples, "/", Path(tmp) / "p.jsonl", config, progress=False)
    return {"examples": len(examples), "decode_s": round(summary.decode_seconds, 3),
            "decode_wait_s": round(summary.decode_wait_seconds, 3),
            "hidden_share": round(summary.decode_hidden_share, 3), "total_s": round(summary.seconds, 3)}


def run(what: str, args) -> dict:
    if what == "eval":
        return bench_eval(args.gold, args.repeat)
    if what == "video":
        return bench_video(args.videos, args.repeat)
    return bench_stream(args.model, args.frames, args.max_new_tokens, args.repeat)
