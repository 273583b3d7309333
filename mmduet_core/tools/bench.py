"""`mmduet bench {stream,generate,video,eval}`: two approaches timed on the same input in one run, as a ratio.

Each side is timed once (`repeat=1`), or `repeat` times keeping the fastest run (the output says which), with
`time.perf_counter` through `timeit`. Torch's CPU threads are set explicitly and reported. The numbers compare the
two sides of one run; they are not for comparing machines.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import timeit
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TypeVar

import numpy as np

from ..stream.policy import PolicyState

REPO = Path(__file__).resolve().parents[2]  # the checkout (tests/ and ../shared live beside the package)
CHARADES_SHARED = "data/charades_sta/charades_test.json"
CHARADES_FIXTURE = REPO / "tests" / "fixtures" / "gold" / "charades_test_subset.json"
YOUCOOK2_FIXTURE = REPO / "tests" / "fixtures" / "gold" / "yc2_val_subset.json"


def _shown(path: str | Path) -> str:
    """A path as reports show it: relative to the checkout when inside it (no machine layout in reports)."""
    path = Path(path).resolve()
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else path.name
CLIP_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "mmduet" / "bench"
T = TypeVar("T")


def charades_gold() -> Path:
    """Charades-STA gold for `bench eval`: the full test file from the shared data checkout (`$MMDUET_SHARED`, or
    `shared/` beside the repository) when present, else the subset shipped with the tests."""
    shared = Path(os.environ.get("MMDUET_SHARED", REPO.parent / "shared")) / CHARADES_SHARED
    return shared if shared.exists() else CHARADES_FIXTURE


def timed(fn: Callable[[], T], repeat: int = 1) -> tuple[float, T]:
    """(seconds, result) of `fn()`: one run, or the fastest of `repeat` runs (with the last run's result)."""
    last: list = [None]  # only the last result is kept: a session holds its whole KV cache

    def run() -> None:
        last[0] = fn()

    seconds = timeit.repeat(run, number=1, repeat=max(repeat, 1))
    return min(seconds), last[0]


def timing_note(repeat: int) -> str:
    """How the sides were timed, for the output."""
    return "each side timed once" if repeat <= 1 else f"each side: the fastest of {repeat} runs"


def set_threads(threads: int | None) -> int:
    """Set torch's CPU threads (None: leave them) and return the number in use."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def machine() -> dict:
    """Cores and load average, so a reader can judge the timings."""
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    return {"cpu_cores": os.cpu_count(), "load_average_1_5_15_min": [round(x, 2) for x in load]}


# ---- eval ---------------------------------------------------------------------------------------------------

def bench_eval(gold: str | Path | None = None, repeat: int = 1, seed: int = 0) -> dict:
    """Vectorised grounding sweep vs the per-query loop, on Charades-STA gold with seeded random scores."""
    from ..data.convert import convert_charades
    from ..evaluation.grounding import THRESHOLDS, WINDOWS, frame_iou_loop, frame_ious, gold_mask, pad_series

    gold = Path(gold) if gold else charades_gold()
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

    vec_time, vec = timed(lambda: frame_ious(s_pad, lengths, gmask, windows, thresholds), repeat)
    loop_time, looped = timed(loop, repeat)
    full_time, _ = timed(lambda: frame_ious(s_pad, lengths, gmask, WINDOWS, THRESHOLDS), repeat)
    return {"benchmark": "eval", "gold": _shown(gold), "queries": len(examples), "timing": timing_note(repeat),
            "grid_compared": f"{len(windows)} windows x {len(thresholds)} thresholds",
            "loop_s": round(loop_time, 3), "vectorised_s": round(vec_time, 4), "ratio": round(loop_time / vec_time, 1),
            "identical_ious": bool(np.allclose(np.asarray(looped), vec)), "full_sweep_vectorised_s": round(full_time, 3),
            "full_sweep": f"{len(WINDOWS)} windows x {len(THRESHOLDS)} thresholds", "goal": "ratio >= 20"}


def _dvc_replies(examples: list[dict], seed: int = 0) -> list[dict]:
    """Prediction records for dense captioning: a reply near the end of each gold step, words drawn from the
    video's own captions (so METEOR and CIDEr have something to score)."""
    rng = np.random.default_rng(seed)
    out = []
    for e in examples:
        words = [w for a in e["answer"] for w in a["content"].split()]
        turns = [{"time": float(a["time"][1]), "role": "assistant",
                  "content": " ".join(rng.choice(words, min(len(words), 5), replace=False))} for a in e["answer"]]
        out.append({"question_id": e["question_id"], "model_response_list": turns, "video_duration": e["duration"]})
    return out


def bench_eval_dvc(gold: str | Path = YOUCOOK2_FIXTURE, limit: int | None = None, seed: int = 0) -> dict:
    """`evaluate_dvc` twice in this process on the same files (YouCook2 gold, synthetic replies): the first call
    pays for METEOR's Java start and every pair (cold, if nothing in this process scored captions before), the
    second finds them memoised (warm). Both must give the same numbers. limit: the first N videos only."""
    import tempfile

    from ..data.benchmarks import write_examples
    from ..data.convert import convert
    from ..evaluation.dvc import evaluate_dvc

    examples = convert("youcook2", gold)[0][:limit]
    with tempfile.TemporaryDirectory() as tmp:
        gold_file = write_examples(examples, Path(tmp) / "gold.json")
        pred = Path(tmp) / "pred.jsonl"
        pred.write_text("".join(json.dumps(r) + "\n" for r in _dvc_replies(examples, seed)))
        cold, first = timed(lambda: evaluate_dvc(pred, gold_file))
        warm, second = timed(lambda: evaluate_dvc(pred, gold_file))
    return {"benchmark": "eval dvc", "gold": _shown(gold), "videos": len(examples), "cold_s": round(cold, 3),
            "warm_s": round(warm, 3), "ratio": round(cold / warm, 1), "identical_metrics": first == second,
            "note": "evaluate_dvc called twice in one process on the same files"}


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


def bench_clip(seconds: float, width: int = 640, height: int = 360, cache: str | Path = CLIP_CACHE) -> Path:
    """The synthetic 30 fps clip of `seconds` for `bench video`, made once and kept in `cache` (a 10-minute
    640 x 360 clip takes several minutes to encode and about 600 MB)."""
    path = Path(cache) / f"synthetic_{seconds:g}s_{width}x{height}_30fps.mp4"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial.mp4")
        synthetic_video(partial, round(seconds * 30), height, width)
        os.replace(partial, path)  # an interrupted encode is never mistaken for a finished clip
    return path


def decode_in_subprocess(mode: str, path: str | Path, fps: float, max_frames: int) -> dict:
    """One decode (`ours` or `upstream`) in a fresh process (`python -m mmduet_core.tools.decode_probe`), so
    its peak memory is its own."""
    out = subprocess.run([sys.executable, "-m", "mmduet_core.tools.decode_probe", mode, str(path), str(fps),
                          str(max_frames)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def bench_video(videos: list[str] | None = None, lengths: tuple[float, ...] = (20, 120, 600), fps: float = 2.0,
                max_frames: int = 400, repeat: int = 1, runner: bool = True, size: tuple[int, int] = (640, 360)) -> dict:
    """Our loader (PyAV in order, only the kept frames converted, written into one pre-allocated tensor) vs
    upstream's (OpenCV decodes every frame and stacks the kept ones), each in a fresh process, on the same files.

    videos: files to decode; default: synthetic clips of `lengths` seconds, `size` (width, height), cached. Memory
    is the peak resident memory above the process's imports; the goal is at most 1.5 x the selected frames + 64 MB.
    runner: also time the benchmark runner's decode-ahead on the smallest file.
    """
    import importlib.util

    from ..video import probe_video

    if importlib.util.find_spec("cv2") is None:
        raise RuntimeError("bench video compares against OpenCV: pip install opencv-python-headless")
    paths = [Path(v) for v in videos] if videos else [bench_clip(s, *size) for s in lengths]
    rows = []
    for path in paths:
        runs = {mode: [decode_in_subprocess(mode, path, fps, max_frames) for _ in range(max(repeat, 1))]
                for mode in ("ours", "upstream")}
        ours, up = (min(runs[m], key=lambda r: r["seconds"]) for m in ("ours", "upstream"))
        peak = max(r["peak_mb_above_imports"] for r in runs["ours"])
        selected = ours["frames_mb"]
        info = probe_video(path)
        rows.append({"video": path.name, "video_s": round(info.duration, 1), "fps": fps, "frames": ours["frames"],
                     "ours_frames_per_s": round(ours["frames"] / ours["seconds"], 1),
                     "upstream_frames_per_s": round(up["frames"] / up["seconds"], 1),
                     "ratio": round(up["seconds"] / ours["seconds"], 2),
                     "same_frames": ours["indices"] == up["indices"],
                     "selected_frames_mb": round(selected, 1),
                     "ours_peak_mb_above_imports": round(peak, 1),
                     "upstream_peak_mb_above_imports": round(max(r["peak_mb_above_imports"] for r in runs["upstream"]), 1),
                     "ours_peak_over_frames": round(peak / selected, 2),
                     "memory_bound_mb": round(1.5 * selected + 64, 1), "within_bound": peak <= 1.5 * selected + 64})
    out = {"benchmark": "video", "timing": timing_note(repeat), "machine": machine(), "rows": rows,
           "note": f"{fps:g} fps, at most {max_frames} frames, 384 px; imports happen before the clock; memory is "
                   "peak RSS above the RSS after imports; goal: ours ratio >= 1 with the same frames, peak <= 1.5 x "
                   "selected frames + 64 MB"}
    if runner:
        out["runner_overlap"] = _runner_overlap([str(min(paths, key=lambda p: p.stat().st_size))])
    return out


# ---- stream -------------------------------------------------------------------------------------------------

STREAM_MODES = {
    "grounding (never replies)": dict(mode="never"),
    "removed replies (sum mode)": dict(mode="sum", remove_assistant_turns=True),
    "kept replies (prob mode)": dict(mode="prob"),
}


@dataclass
class EveryKthFrame(PolicyState):
    """A reply rule for benchmarks only: reply on frames k-1, 2k-1, ... whatever the scores, so both paths do the
    same, stated amount of reply work (random heads would fire on almost every frame)."""

    every: int = 10

    def decide(self, informative: float, relevance: float) -> bool:
        self.frames_seen += 1
        return self.frames_seen % self.every == 0

    def copy(self) -> EveryKthFrame:
        return replace(self, scores=list(self.scores))


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


def stream_model(name: str):
    """(model, tokenizer, label): the shipped toy model ("toy", or "auto" when shipped), else a random tiny MMDuet
    with 49 tokens per frame ("tiny") or 4 ("tiny4")."""
    from ..model.checkpoint import TOY_DIR, load_model

    if name == "toy" or (name == "auto" and (TOY_DIR / "config.json").exists()):
        model, tok = load_model("toy", device="cpu")[0:2]
        return model, tok, f"toy (shipped, {model.frame_num_tokens} tokens per frame)"
    tokens = 4 if name == "tiny4" else 49
    model, tok = _random_model(tokens)
    return model, tok, f"random tiny (hidden 256, 4 layers, {tokens} tokens per frame)"


def _frame_embeddings(model, frames: int, seed: int = 1):
    import torch

    torch.manual_seed(seed)
    side = model.config.vision_config.image_size
    with torch.no_grad():
        return model.encode_frames(torch.randint(0, 256, (frames, 3, side, side), dtype=torch.uint8))


def _stream_once(model, tok, settings, embeds, every: int):
    """One session over all frames with the bench reply rule; replies are exactly `max_new_tokens` long (the
    end-of-turn token does not stop them), so every reply costs the same on both paths."""
    from ..stream import DuetSession

    session = DuetSession(model, tok, settings, fps=2.0)
    if settings.can_reply:
        session.policy = EveryKthFrame(session.settings, every=every)
    session.replier.eos_id = -1
    session.add_user_message("What is happening?", 0.0)
    list(session.push_frames(embeds))
    return session


def _time_stream(model, tok, settings, embeds, every: int, repeat: int):
    """(seconds, session) of `_stream_once`."""
    return timed(lambda: _stream_once(model, tok, settings, embeds, every), repeat)


def prefill_floor(model, embeds, repeat: int = 1) -> float:
    """Seconds of one forward over all frames at once (no replies, no per-frame work): the compute floor."""
    import torch

    from ..stream.cache import DuetCache
    from ..stream.decode import forward

    flat = embeds.reshape(1, -1, embeds.shape[-1]).to(model.dtype)  # (1, F * n, D)
    with torch.no_grad():
        return timed(lambda: forward(model, flat, DuetCache(), 0), repeat)[0]


def bench_stream(model_name: str = "auto", frames: int = 120, reply_every: int = 10, reply_tokens: int = 20,
                 repeat: int = 1, threads: int | None = 1, fast_chunk: int = 32) -> dict:
    """Frames per second of the sequential loop (`chunk_frames=1`, one forward per frame, as upstream) and the
    fast path (`chunk_frames=32`), same model, same frames, same reply rule, in three modes; checks they agree.

    The reply rule is the benchmark's own (`EveryKthFrame`): a reply every `reply_every` frames, each exactly
    `reply_tokens` tokens. The compute floor is one forward over all frames.
    """
    from ..errors import InputError
    from ..stream import DuetSettings

    for name, value in (("frames", frames), ("reply_every", reply_every), ("reply_tokens", reply_tokens)):
        if value < 1:
            raise InputError(f"bench stream: {name} must be >= 1, not {value!r}")
    started = time.perf_counter()
    threads = set_threads(threads)
    model, tok, label = stream_model(model_name)
    embeds = _frame_embeddings(model, frames)
    floor = prefill_floor(model, embeds, repeat)
    rows = []
    for name, kw in STREAM_MODES.items():
        runs = {}
        for path, chunk in (("sequential", 1), ("fast", fast_chunk)):
            settings = DuetSettings(max_new_tokens=reply_tokens, chunk_frames=chunk, **kw)
            runs[path] = _time_stream(model, tok, settings, embeds, reply_every, repeat)
        (t_seq, seq), (t_fast, fast) = runs["sequential"], runs["fast"]
        diff = max(max(abs(a.informative - b.informative), abs(a.relevance - b.relevance))
                   for a, b in zip(seq.steps, fast.steps, strict=True))
        replies = [(r["time"], r["content"]) for r in seq.responses if r["role"] == "assistant"]
        rows.append({"mode": name, "frames": frames, "replies": len(replies),
                     "sequential_frames_per_s": round(frames / t_seq, 1), "fast_frames_per_s": round(frames / t_fast, 1),
                     "ratio": round(t_seq / t_fast, 2), "fast_over_floor": round(t_fast / floor, 2),
                     "max_prob_diff": float(diff),
                     "same_replies": replies == [(r["time"], r["content"]) for r in fast.responses
                                                 if r["role"] == "assistant"]})
    return {"benchmark": "stream", "model": label, "tokens_per_frame": int(embeds.shape[1]), "device": "cpu",
            "torch_threads": threads, "machine": machine(), "timing": timing_note(repeat),
            "reply_rule": f"bench only: a reply every {reply_every} frames (frames {reply_every - 1}, "
                          f"{2 * reply_every - 1}, ...), whatever the scores",
            "reply_tokens": f"exactly {reply_tokens} per reply (end of turn does not stop them)",
            "paths": f"sequential: chunk_frames=1; fast: chunk_frames={fast_chunk}",
            "floor_frames_per_s": round(frames / floor, 1),
            "floor": "one forward over all frames (no per-frame work, no replies); fast_over_floor = fast time / floor",
            "rows": rows, "wall_s": round(time.perf_counter() - started, 1)}


def bench_stream_scaling(models: tuple[str, ...] = ("tiny", "tiny4"), frame_counts: tuple[int, ...] = (8, 16, 32, 64),
                         threads: int | None = 1, repeat: int = 1) -> dict:
    """Grounding mode (never replies) at several stream lengths, per frame geometry: the sequential loop, the fast
    path and the compute floor (one forward over all frames). `floor_ratio` = sequential / floor is the most any
    fast path could gain; `ratio` is what ours gains."""
    from ..stream import DuetSettings

    started = time.perf_counter()
    threads = set_threads(threads)
    rows = []
    for name in models:
        model, tok, label = stream_model(name)
        embeds = _frame_embeddings(model, max(frame_counts))
        for n in frame_counts:
            part = embeds[:n]
            t_seq, _ = _time_stream(model, tok, DuetSettings(mode="never", chunk_frames=1), part, 1, repeat)
            t_fast, _ = _time_stream(model, tok, DuetSettings(mode="never"), part, 1, repeat)
            floor = prefill_floor(model, part, repeat)
            rows.append({"model": label, "tokens_per_frame": int(embeds.shape[1]), "frames": n,
                         "sequential_s": round(t_seq, 4), "fast_s": round(t_fast, 4), "floor_s": round(floor, 4),
                         "ratio": round(t_seq / t_fast, 2), "floor_ratio": round(t_seq / floor, 2)})
    return {"benchmark": "stream scaling", "mode": "grounding (never replies)", "torch_threads": threads,
            "machine": machine(), "timing": timing_note(repeat), "rows": rows,
            "wall_s": round(time.perf_counter() - started, 1)}


# ---- generation ---------------------------------------------------------------------------------------------

def _generate_pair(model, tok, embeds, new_tokens: int, repeat: int) -> dict:
    """Greedy decoding of `new_tokens` after the context `embeds` (1, T, D): ours on a `DuetCache` vs
    transformers' `generate` on a `DynamicCache` holding the same prefilled context."""
    import copy

    import torch
    from transformers import DynamicCache, GenerationConfig

    from ..stream.cache import DuetCache
    from ..stream.context import PromptIds
    from ..stream.decode import forward, greedy_decode

    prompt = PromptIds.build(tok, "").generate
    with torch.no_grad():
        ours_cache = DuetCache()
        forward(model, embeds, ours_cache, 0)
        theirs_cache = model(inputs_embeds=embeds, cache=DynamicCache(config=model.config.text_config),
                             use_cache=True, logits_to_keep=1).cache
    length = ours_cache.length
    # the context's ids are never read (the cache holds it); only the prompt after it is fed
    ids = torch.tensor([[tok.pad_token_id or 0] * length + prompt])
    config = GenerationConfig(max_new_tokens=new_tokens, do_sample=False, eos_token_id=None,
                              pad_token_id=tok.pad_token_id or 0)
    # fresh copies per run, made outside the clock (both decoders write into their cache)
    ours_copies = [ours_cache.fork(length) for _ in range(max(repeat, 1))]
    theirs_copies = [copy.deepcopy(theirs_cache) for _ in range(max(repeat, 1))]
    with torch.no_grad():
        t_ours, ours = timed(lambda: greedy_decode(model, ours_copies.pop(), [(length, length)], prompt, -1,
                                                   new_tokens)[0], repeat)
        t_hf, hf = timed(lambda: model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                                                cache=theirs_copies.pop(), generation_config=config), repeat)
    hf = hf[0, ids.shape[1]:].tolist()
    return {"context_tokens": length, "new_tokens": new_tokens, "ours_tokens_per_s": round(new_tokens / t_ours, 1),
            "transformers_tokens_per_s": round(new_tokens / t_hf, 1), "ratio": round(t_hf / t_ours, 2),
            "identical_tokens": ours == hf}


def bench_generate(model_name: str = "tiny", context_frames: tuple[int, ...] = (4, 32, 64), new_tokens: int = 64,
                   repeat: int = 1, threads: int | None = 1) -> dict:
    """Reply generation in tokens/s: our loop on the pre-allocated `DuetCache` (tokens written in place) against
    transformers' `generate` (a `DynamicCache` grown by concatenation), same model, same context, same run."""
    started = time.perf_counter()
    threads = set_threads(threads)
    model, tok, label = stream_model(model_name)
    embeds = _frame_embeddings(model, max(context_frames))
    rows = [{"context_frames": n, **_generate_pair(model, tok, embeds[:n].reshape(1, -1, embeds.shape[-1]),
                                                   new_tokens, repeat)} for n in context_frames]
    return {"benchmark": "generate", "model": label, "device": "cpu", "torch_threads": threads, "machine": machine(),
            "timing": timing_note(repeat), "decoding": "greedy, no end-of-turn stop (every row decodes new_tokens)",
            "rows": rows, "goal": "ratio (ours / transformers tokens per s) >= 1.0 with identical tokens",
            "wall_s": round(time.perf_counter() - started, 1)}


def _runner_overlap(videos: list[str]) -> dict:
    """Run the benchmark runner over the videos (a random 49-token model, grounding preset at 2 fps) and report
    how much of the decoding was hidden behind inference of the previous video."""
    import tempfile

    from ..run.benchmark import PRESETS, run_benchmark

    model, tok = _random_model(49, hidden=128, layers=2)
    examples = [{"question_id": i, "video": str(Path(v).resolve()), "conversation": [
        {"role": "user", "content": "a red square", "time": 0.0}]} for i, v in enumerate(videos * 2)]
    config = PRESETS["charades"].settings
    with tempfile.TemporaryDirectory() as tmp:
        # each example decoded on its own (not once per video), so the next decode overlaps this inference
        summary = run_benchmark(model, tok, examples, "/", Path(tmp) / "p.jsonl", config, progress=False,
                                group_videos=False)
    return {"examples": len(examples), "decode_s": round(summary.decode_seconds, 3),
            "decode_wait_s": round(summary.decode_wait_seconds, 3),
            "hidden_share": round(summary.decode_hidden_share, 3), "total_s": round(summary.seconds, 3)}


def run(what: str, args) -> dict:
    """The `mmduet bench` command."""
    if what == "eval":
        return {**bench_eval(args.gold, args.repeat or 3), "dvc_cold_warm": bench_eval_dvc()}
    if what == "video":
        return bench_video(args.videos, tuple(args.lengths), args.fps, args.max_frames, args.repeat or 1)
    if what == "generate":
        return bench_generate(args.model if args.model != "auto" else "tiny", tuple(args.context_frames),
                              args.new_tokens, args.repeat or 3, args.threads)
    return bench_stream(args.model, args.frames, args.reply_every, args.reply_tokens, args.repeat or 1, args.threads)
