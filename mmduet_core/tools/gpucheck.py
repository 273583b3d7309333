"""`mmduet doctor --gpu` / `make gpu-check`: the first command a GPU owner runs.

Builds MMDuet in the published 7B shape (the shipped llava-hf config) with random weights - nothing is downloaded -
and measures what the benchmark runs depend on, as one JSON object:

* grounding-mode frames/s at `frames` frames (400 = upstream's cap): the fast path (many frames per forward) and
  the sequential reference (one frame per forward), per attention implementation (sdpa; flash-attention-2 when
  installed), plus the vision encoder's frames/s;
* peak GPU memory of that run;
* head-score agreement (max |dp|): fast vs sequential, bf16 vs fp32 on a few frames, flash vs sdpa;
* when real weights are present (the base in a folder or the Hugging Face cache, and the adapter folder): the
  load report and a one-video smoke run, with bf16 vs fp32 on its first frames.

On a CPU the same code runs at tiny scale (`scale="tiny"`), which is what the tests exercise.
"""

from __future__ import annotations

import gc
import importlib.metadata
import importlib.util
import math
import resource
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from ..errors import InputError
from ..model import DuetModel
from ..model.checkpoint import (
    ASSETS,
    DEFAULT_BASE,
    CheckpointNotFoundError,
    load_model,
    published_config,
    resolve_checkpoint,
)
from ..model.template import DEFAULT_SYSTEM_PROMPT, train_tokenizer
from ..stream import DuetSession, ResponsePolicy

Scale = Literal["auto", "7b", "tiny"]
PUBLISHED = "llava-onevision-qwen2-7b-ov-hf"
DEFAULT_ADAPTER = Path("outputs/mmduet")
SMOKE_VIDEO = ASSETS / "sample_toy.mp4"
# widths of the tiny scale: the 7B model's 27 x 27 grid (54 px in 2 px patches) so a frame is still 49 tokens
TINY_TEXT = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
             "num_key_value_heads": 2}
TINY_VISION = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
               "image_size": 54, "patch_size": 2}


# ---- the streaming engine, in one place ---------------------------------------------------------------------

def grounding_scores(model: DuetModel, tokenizer, frame_embeds: torch.Tensor,
                     chunk_frames: int) -> tuple[list[float], list[float]]:
    """Informative and relevance probabilities of every frame in grounding mode (a policy that never replies).
    `chunk_frames=1` is the sequential reference. The only code here that touches `DuetSession`."""
    policy = ResponsePolicy("prob", 1.0, ("informative_score",))
    session = DuetSession(model, tokenizer, policy, fps=2.0, chunk_frames=chunk_frames)
    steps = list(session.push_frames(frame_embeds))
    return [s.informative for s in steps], [s.relevance for s in steps]


# ---- models of the published shape ----------------------------------------------------------------------------

def check_config(scale: Literal["7b", "tiny"], tokenizer, layers: int | None = None):
    """The published config (7b) or the same with tiny widths and the check tokenizer's ids (tiny);
    `layers` cuts the language model to that many layers (a shallower copy)."""
    config = published_config(PUBLISHED)
    if scale == "tiny":
        for key, value in TINY_TEXT.items():
            setattr(config.text_config, key, value)
        for key, value in TINY_VISION.items():
            setattr(config.vision_config, key, value)
        config.text_config.vocab_size = len(tokenizer)
        config.image_token_id = tokenizer.convert_tokens_to_ids("<image>")
    text = config.text_config
    text.num_hidden_layers = layers or text.num_hidden_layers
    text.layer_types = text.layer_types[:text.num_hidden_layers]  # one entry per layer
    return config


def check_tokenizer(frame_num_tokens: int = 49):
    """A small duet tokenizer for random-weight models: frames enter as embeddings, so any ids below the
    vocabulary size do; real weights bring their own tokenizer."""
    texts = [DEFAULT_SYSTEM_PROMPT, "What is happening in the video? Tell me when the dog appears."] * 4
    return train_tokenizer(texts, vocab_size=300, frame_num_tokens=frame_num_tokens)


def build_random_model(config, dtype: torch.dtype, device: str, attn: str = "sdpa", seed: int = 0) -> DuetModel:
    """MMDuet with random weights, built directly on `device` in `dtype` (no host copy of 8 B parameters)."""
    torch.manual_seed(seed)
    with torch.device(device):
        model = DuetModel._from_config(config, dtype=dtype, attn_implementation=attn)
    return model.eval().requires_grad_(False)


def parameter_count(config) -> int:
    """Parameters of MMDuet with `config`, counted on the meta device (no memory)."""
    with torch.device("meta"):
        return sum(p.numel() for p in DuetModel(config).parameters())


# ---- measuring ----------------------------------------------------------------------------------------------------

def _is_cuda(device: str) -> bool:
    return torch.device(device).type == "cuda"


def _sync(device: str) -> None:
    if _is_cuda(device):
        torch.cuda.synchronize()


@dataclass
class Timed:
    """Wall time of a run over some frames."""

    seconds: float
    frames_per_s: float

    def to_dict(self) -> dict:
        return {"seconds": round(self.seconds, 3), "frames_per_s": round(self.frames_per_s, 2)}


def timed_scores(model: DuetModel, tokenizer, embeds: torch.Tensor, chunk_frames: int,
                 device: str) -> tuple[Timed, tuple[list[float], list[float]]]:
    """Grounding scores and their wall time (device synchronised)."""
    _sync(device)
    start = time.perf_counter()
    scores = grounding_scores(model, tokenizer, embeds, chunk_frames)
    _sync(device)
    seconds = time.perf_counter() - start
    return Timed(seconds, len(embeds) / seconds), scores


def timed_encode(model: DuetModel, frames: torch.Tensor, device: str) -> tuple[Timed, torch.Tensor]:
    """uint8 frames (F, 3, R, R) -> frame embeddings (F, 49, D) and the encoder's wall time."""
    _sync(device)
    start = time.perf_counter()
    with torch.no_grad():
        embeds = model.encode_frames(frames)  # (F, 49, D)
    _sync(device)
    seconds = time.perf_counter() - start
    return Timed(seconds, len(frames) / seconds), embeds


def max_dp(a: tuple[list[float], list[float]], b: tuple[list[float], list[float]]) -> dict:
    """Largest probability difference per head between two score runs over the same frames."""
    return {head: float(max(abs(x - y) for x, y in zip(pa, pb, strict=True)))
            for head, pa, pb in (("informative", a[0], b[0]), ("relevance", a[1], b[1]))}


def random_frames(n: int, size: int, seed: int = 0) -> torch.Tensor:
    """(n, 3, size, size) uint8 noise frames (content does not matter for speed or agreement)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8)


def _peak_memory(device: str) -> dict:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux
    out = {"peak_rss_gib": round(rss, 2)}
    if _is_cuda(device):
        out["peak_gpu_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    return out


def _release(device: str) -> None:
    gc.collect()
    if _is_cuda(device):
        torch.cuda.empty_cache()


def _free_memory(device: str) -> float | None:
    return torch.cuda.mem_get_info()[0] if _is_cuda(device) else None


# ---- the parts of the check ------------------------------------------------------------------------------------

def bf16_vs_fp32(scale: Literal["7b", "tiny"], tokenizer, device: str, frames: int = 8) -> tuple[dict, DuetModel | None]:
    """Head scores of an fp32 model and of the same weights cast to bf16, on `frames` frames. Uses the full depth
    when fp32 fits in 80 % of free memory, else a shallower copy (said so in the result). Returns the result and
    the bf16 model when it has the full depth (reused for the speed runs)."""
    config = check_config(scale, tokenizer)
    layers = config.text_config.num_hidden_layers
    free, need = _free_memory(device), 4 * parameter_count(config)
    kept = layers if free is None or need < 0.8 * free else max(1, math.floor(layers * 0.8 * free / need) - 1)
    if kept < layers:
        config = check_config(scale, tokenizer, layers=kept)
    model = build_random_model(config, torch.float32, device)
    pixels = random_frames(frames, config.vision_config.image_size, seed=1)
    with torch.no_grad():
        embeds = model.encode_frames(pixels)
        p32 = grounding_scores(model, tokenizer, embeds, chunk_frames=32)
        p32_sequential = grounding_scores(model, tokenizer, embeds, chunk_frames=1)
        model.to(torch.bfloat16)
        p16 = grounding_scores(model, tokenizer, model.encode_frames(pixels), chunk_frames=32)
    result = {"frames": frames, "layers": f"{kept} of {layers}", "max_abs_dp": max_dp(p16, p32),
              # in fp32 the fast path must reproduce the sequential one (only summation order differs)
              "fp32_prefill_vs_sequential_max_abs_dp": max_dp(p32, p32_sequential)}
    if kept < layers:
        result["note"] = (f"a shallower copy: the full model in fp32 needs {need / 2**30:.0f} GiB, "
                          f"{free / 2**30:.0f} GiB free")
        del model
        _release(device)
        return result, None
    return result, model


def speed_runs(model: DuetModel, tokenizer, embeds: torch.Tensor, device: str, attn: str,
               sequential: bool) -> tuple[dict, tuple[list[float], list[float]]]:
    """Fast-path (and optionally sequential) grounding timings with attention `attn`; returns the fast scores."""
    model.set_attn_implementation(attn)
    fast_time, fast = timed_scores(model, tokenizer, embeds, 32, device)
    out = {"prefill": {"chunk_frames": 32, **fast_time.to_dict()}}
    if sequential:
        seq_time, seq = timed_scores(model, tokenizer, embeds, 1, device)
        out["sequential"] = {"chunk_frames": 1, **seq_time.to_dict()}
        out["prefill_vs_sequential_max_abs_dp"] = max_dp(fast, seq)
    return out, fast


def flash_available(device: str) -> bool:
    return _is_cuda(device) and importlib.util.find_spec("flash_attn") is not None


def real_weights(base: str, adapter: Path, device: str, compare_frames: int = 8,
                 video: Path = SMOKE_VIDEO) -> dict:
    """Load report and a one-video smoke run of the real checkpoint, when both are on this machine."""
    try:
        resolve_checkpoint(base, download=False, what="base model")
    except CheckpointNotFoundError as exc:
        return {"skipped": f"base not here: {exc}"}
    if not (Path(adapter) / "adapter_config.json").exists():
        return {"skipped": f"no adapter in {adapter}/ (hf download wangyueqian/MMDuet --local-dir {adapter})"}
    if not _is_cuda(device):
        return {"skipped": "the real 7B model is only run on a GPU"}
    from ..video import read_video

    # fp32 first (for the bf16 comparison) when it fits, then the same weights cast to bf16
    fits = 4 * parameter_count(published_config(PUBLISHED)) < 0.8 * _free_memory(device)
    model, tokenizer = load_model(base, adapter=adapter, dtype="float32" if fits else "bfloat16", device=device,
                                  attn_implementation="sdpa")
    clip = read_video(video, fps=2.0, resolution=model.config.vision_config.image_size)
    with torch.no_grad():
        p32 = grounding_scores(model, tokenizer, model.encode_frames(clip.frames[:compare_frames]), 32)
        model.to(torch.bfloat16)
        encode_time, embeds = timed_encode(model, clip.frames, device)
    if flash_available(device):
        model.set_attn_implementation("flash_attention_2")
    score_time, scores = timed_scores(model, tokenizer, embeds, 32, device)
    head = tuple(s[:compare_frames] for s in scores)
    comparison = ({"frames": len(head[0]), "max_abs_dp": max_dp(head, p32)} if fits
                  else {"skipped": "the model in fp32 does not fit in 80 % of free GPU memory"})
    return {"load_report": model.load_report.to_dict(), "load_report_text": str(model.load_report),
            "smoke": {"video": str(video), "frames": len(clip), "encode": encode_time.to_dict(),
                      "grounding": score_time.to_dict(),
                      "informative": _summary(scores[0]), "relevance": _summary(scores[1])},
            "bf16_vs_fp32": comparison}


def _summary(values: list[float]) -> dict:
    return {"min": round(min(values), 4), "mean": round(sum(values) / len(values), 4), "max": round(max(values), 4)}


def _versions() -> dict:
    out = {"torch": torch.__version__, "cuda": torch.version.cuda}
    for name in ("transformers", "peft", "flash_attn"):
        try:
            out[name] = importlib.metadata.version(name.replace("_", "-"))
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


# ---- the whole check -------------------------------------------------------------------------------------------

def _speed_and_agreement(model: DuetModel, tokenizer, config, frames: int, device: str, sequential: bool,
                         fp32: dict) -> dict:
    """Encode and grounding timings at `frames` frames per attention implementation, memory, agreements."""
    if _is_cuda(device):
        fp32["peak_gpu_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        torch.cuda.reset_peak_memory_stats()  # from here: the bf16 model at `frames` frames
    encode_time, embeds = timed_encode(model, random_frames(frames, config.vision_config.image_size), device)
    grounding, agreement = {}, {"bf16_vs_fp32": fp32}
    grounding["sdpa"], sdpa = speed_runs(model, tokenizer, embeds, device, "sdpa", sequential)
    if flash_available(device):
        grounding["flash_attention_2"], flash = speed_runs(model, tokenizer, embeds, device, "flash_attention_2",
                                                           sequential)
        agreement["flash_vs_sdpa"] = {"frames": frames, "max_abs_dp": max_dp(flash, sdpa)}
    else:
        why = "flash-attn is not installed" if _is_cuda(device) else "flash-attention needs a CUDA GPU"
        agreement["flash_vs_sdpa"] = {"skipped": why}
    return {"encode": encode_time.to_dict(), "grounding": grounding, "memory": _peak_memory(device),
            "agreement": agreement}


def run_gpu_check(scale: Scale = "auto", frames: int = 400, device: str = "auto", compare_frames: int = 8,
                  base: str = DEFAULT_BASE, adapter: str | Path = DEFAULT_ADAPTER, sequential: bool = True) -> dict:
    """Everything above, as one JSON-ready dict. scale "auto" = 7b on CUDA, tiny on CPU."""
    start = time.perf_counter()
    device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
    scale = ("7b" if _is_cuda(device) else "tiny") if scale == "auto" else scale
    if scale == "7b" and not _is_cuda(device):
        raise InputError("--scale 7b needs a CUDA GPU; use --scale tiny to run the same code on a CPU")
    if frames < 1 or compare_frames < 1:
        raise InputError(f"frames and compare_frames must be >= 1, got {frames} and {compare_frames}")
    if _is_cuda(device):
        torch.cuda.reset_peak_memory_stats()
    tokenizer = check_tokenizer()
    fp32, model = bf16_vs_fp32(scale, tokenizer, device, compare_frames)
    config = check_config(scale, tokenizer)
    if model is None:  # the fp32 comparison ran on a shallower copy
        model = build_random_model(config, torch.bfloat16, device)
    result = {"check": "mmduet gpu-check", "scale": scale, "device": _device_name(device), "versions": _versions(),
              "model": {"config": f"{PUBLISHED} (shipped; random weights, nothing downloaded)",
                        "parameters": parameter_count(config), "dtype": "bfloat16",
                        "text_layers": config.text_config.num_hidden_layers,
                        "hidden_size": config.text_config.hidden_size, "tokens_per_frame": model.frame_num_tokens},
              "frames": frames}
    result.update(_speed_and_agreement(model, tokenizer, config, frames, device, sequential, fp32))
    del model
    _release(device)  # the real model needs the memory
    result["real_weights"] = real_weights(base, Path(adapter), device, compare_frames)
    result["seconds"] = round(time.perf_counter() - start, 1)
    return result


def _device_name(device: str) -> str:
    if _is_cuda(device):
        return torch.cuda.get_device_name(torch.device(device))
    return f"cpu ({torch.get_num_threads()} threads)"
