"""Loading MMDuet: base weights, the released LoRA adapter (upstream key names), tiny and toy models.

    model, tokenizer = load_model("toy")                                        # shipped tiny model, CPU
    model, tokenizer = load_model("llava-hf/llava-onevision-qwen2-7b-ov-hf",   # hf-format base
                                  adapter="outputs/mmduet", dtype="bfloat16", device="cuda")

The released adapter (`wangyueqian/MMDuet`) was saved by peft from upstream's module tree (`model.layers.*`,
`model.mm_projector.{0,2}`, heads possibly named `response_head` / `related_head`). Its keys are mapped onto
transformers' LLaVA-OneVision names; the heads are loaded explicitly and their absence is an error (upstream
B2/B3: upstream's own loader could silently leave them random). Only safetensors are read.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from transformers import AutoTokenizer, LlavaOnevisionConfig, Qwen2Config, SiglipVisionConfig

from .model import DuetModel
from .template import setup_tokenizer

DEFAULT_BASE = "llava-hf/llava-onevision-qwen2-7b-ov-hf"
RELEASED_ADAPTER = "wangyueqian/MMDuet"
ASSETS = Path(__file__).resolve().parent / "assets"
TOY_DIR = ASSETS / "toy_model"
# upstream's LoRA targets (§2.6), as written in the released adapter_config.json
UPSTREAM_LORA_TARGETS = r"model\.layers.*(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)$"
OUR_LORA_TARGETS = r"model\.language_model\.layers.*(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)$"
BASE_FILES = "config.json, model*.safetensors (+ model.safetensors.index.json), tokenizer.json, tokenizer_config.json"

Dtype = Literal["auto", "bfloat16", "float16", "float32"]


class CheckpointNotFoundError(FileNotFoundError):
    """A checkpoint that is neither a local folder nor in the Hugging Face cache (and no download was asked)."""


class MissingHeadsError(KeyError):
    """An adapter without informative / relevance head weights: the model would score frames at random."""

    def __str__(self) -> str:  # KeyError quotes its message; show it plainly
        return str(self.args[0])


@dataclass
class LoadReport:
    """What `load_model` loaded, for printing and for notebooks' provenance."""

    base: str
    adapter: str | None = None
    dtype: str = "float32"
    device: str = "cpu"
    attn_implementation: str = "sdpa"
    lora_tensors: int = 0
    head_keys: dict[str, str] = field(default_factory=dict)  # our head -> key it came from
    random_heads: list[str] = field(default_factory=list)  # heads left at their random init (base, no adapter)
    other_tensors: list[str] = field(default_factory=list)
    merged: bool = False

    def __str__(self) -> str:
        heads = ", ".join(f"{ours} <- {theirs}" for ours, theirs in self.head_keys.items()) or "from base"
        if self.random_heads:
            heads = f"RANDOM ({', '.join(self.random_heads)} not in the checkpoint)"
        adapter = f"{self.adapter} ({self.lora_tensors} LoRA tensors, heads: {heads})" if self.adapter else "none"
        if self.random_heads and not self.adapter:
            adapter = f"none (heads: {heads})"
        return (f"base {self.base}; adapter {adapter}; {self.dtype} on {self.device}, "
                f"attention {self.attn_implementation}{', LoRA merged' if self.merged else ''}")


# ---- resolving where files are ------------------------------------------------------------------------------

def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() not in ("", "0", "false")


def resolve_checkpoint(name_or_path: str | Path, download: bool = False, what: str = "checkpoint") -> Path:
    """A local folder for `name_or_path`: the folder itself, the Hugging Face cache, or (only when
    `download=True` and online) a fresh download. Otherwise one clear error, no retries."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    name = str(name_or_path)
    if path.exists() or name.startswith((".", "/", "~")) or name.count("/") != 1:
        raise CheckpointNotFoundError(f"{what} {name!r}: no such folder (expected {BASE_FILES})")
    from huggingface_hub import snapshot_download
    from huggingface_hub.constants import HF_HUB_CACHE

    try:
        return Path(snapshot_download(name, local_files_only=True))
    except Exception:  # noqa: BLE001 - any miss in the cache means "not here"
        pass
    if download and not _offline():
        return Path(snapshot_download(name))
    why = "HF_HUB_OFFLINE is set" if _offline() else "downloads are off unless asked (download=True)"
    raise CheckpointNotFoundError(
        f"{what} {name!r} is not a local folder and not in the Hugging Face cache ({HF_HUB_CACHE}); {why}. "
        f"Get it with `hf download {name} --local-dir <folder>` and pass the folder, "
        f"or call load_model(..., download=True) on a machine with network access.")


# ---- adapter key mapping -------------------------------------------------------------------------------------

_HEAD_NAMES = {"informative_head": ("informative_head", "response_head"),
               "relevance_head": ("relevance_head", "related_head")}
_RENAMES = [
    (re.compile(r"^model\.layers\."), "model.language_model.layers."),
    (re.compile(r"^model\.embed_tokens\."), "model.language_model.embed_tokens."),
    (re.compile(r"^model\.norm\."), "model.language_model.norm."),
    (re.compile(r"^model\.mm_projector\.0\."), "model.multi_modal_projector.linear_1."),
    (re.compile(r"^model\.mm_projector\.2\."), "model.multi_modal_projector.linear_2."),
    (re.compile(r"^model\.vision_tower\.vision_tower\.(vision_model\.)?"), "model.vision_tower."),
]


def map_adapter_key(key: str) -> str:
    """One saved adapter key -> our module path (peft prefix and `modules_to_save` wrappers removed)."""
    key = key.removeprefix("base_model.model.")
    key = re.sub(r"\.modules_to_save\.[^.]+\.", ".", key)
    key = re.sub(r"\.original_module\.", ".", key)
    for ours, names in _HEAD_NAMES.items():
        for name in names:
            key = re.sub(rf"^(model\.)?{name}\.", f"{ours}.", key)
    for pattern, replacement in _RENAMES:
        key = pattern.sub(replacement, key)
    return key


def _read_safetensors(folder: Path, stem: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    path = folder / f"{stem}.safetensors"
    if not path.exists():
        if (folder / f"{stem}.bin").exists():
            raise ValueError(f"{folder / (stem + '.bin')}: pickle checkpoints are not loaded; convert it to safetensors")
        raise CheckpointNotFoundError(f"{path} not found")
    return load_file(str(path))


def load_adapter(model: DuetModel, adapter_dir: str | Path, merge: bool = True,
                 report: LoadReport | None = None, download: bool = False):
    """Apply a peft LoRA adapter saved from upstream's (or our) module tree to `model`.

    Returns the model with LoRA merged (`merge=True`) or a peft model (for further training).
    """
    from peft import LoraConfig, get_peft_model, set_peft_model_state_dict

    folder = resolve_checkpoint(adapter_dir, download, what="adapter")
    config = json.loads((folder / "adapter_config.json").read_text())
    state = {map_adapter_key(k): v for k, v in _read_safetensors(folder, "adapter_model").items()}
    lora = {k: v for k, v in state.items() if ".lora_" in k}
    full = {k: v for k, v in state.items() if ".lora_" not in k}

    heads = {}
    for ours in _HEAD_NAMES:
        if f"{ours}.weight" in full:
            heads[ours] = f"{ours}.weight"
    missing = [h for h in _HEAD_NAMES if h not in heads]
    if missing:
        names = " / ".join(f"{h}.weight (or {_HEAD_NAMES[h][1]}.weight)" for h in missing)
        raise MissingHeadsError(
            f"adapter {folder} has no weights for {names}: without them every frame score is random. "
            f"Found {len(lora)} LoRA tensors and {sorted(full) or 'no other tensors'}.")

    own = model.state_dict()
    unknown = [k for k in full if k not in own]
    if unknown:
        raise ValueError(f"adapter {folder}: tensors that match no module of the model: {unknown[:8]}")
    with torch.no_grad():
        for key, value in full.items():
            own[key].copy_(value.to(own[key].dtype))

    targets = config.get("target_modules") or UPSTREAM_LORA_TARGETS
    if isinstance(targets, str) and "language_model" not in targets:
        targets = targets.replace(r"model\.layers", r"model\.language_model\.layers")
    lora_config = LoraConfig(r=config.get("r", 16), lora_alpha=config.get("lora_alpha", 32),
                             lora_dropout=config.get("lora_dropout", 0.0), target_modules=targets,
                             bias=config.get("bias", "none"), use_rslora=config.get("use_rslora", False))
    peft_model = get_peft_model(model, lora_config, autocast_adapter_dtype=False)
    result = set_peft_model_state_dict(peft_model, {f"base_model.model.{k}": v for k, v in lora.items()})
    lora_missing = [k for k in result.missing_keys if ".lora_" in k]
    if result.unexpected_keys or (lora and lora_missing):
        raise ValueError(f"adapter {folder}: LoRA tensors did not fit the model "
                         f"(unexpected {result.unexpected_keys[:4]}, missing {lora_missing[:4]})")
    if report is not None:
        report.adapter, report.lora_tensors, report.merged = str(adapter_dir), len(lora), merge
        report.head_keys = {ours: _original_head_key(folder, ours) for ours in heads}
        report.other_tensors = sorted(k for k in full if k not in heads.values())
    return peft_model.merge_and_unload() if merge else peft_model


def _original_head_key(folder: Path, ours: str) -> str:
    from safetensors import safe_open

    with safe_open(str(folder / "adapter_model.safetensors"), "pt") as f:
        for key in f.keys():  # noqa: SIM118 - safe_open has no __iter__
            if map_adapter_key(key) == f"{ours}.weight":
                return key
    return ours


# ---- the main entry point ------------------------------------------------------------------------------------

def pick_attn_implementation(device: str | torch.device) -> str:
    """flash_attention_2 when installed and on CUDA, else sdpa."""
    import importlib.util

    if torch.device(device).type == "cuda" and importlib.util.find_spec("flash_attn") is not None:
        return "flash_attention_2"
    return "sdpa"


def _pick_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def _pick_dtype(dtype: Dtype, device: str) -> torch.dtype:
    if dtype == "auto":
        return torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32
    return {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}[dtype]


def load_model(model: str | Path = "toy", adapter: str | Path | None = None, dtype: Dtype = "auto",
               device: str = "auto", attn_implementation: str | None = None, merge_lora: bool = True,
               download: bool = False) -> tuple[DuetModel, object]:
    """Load MMDuet and its tokenizer; `model.load_report` says what was loaded.

    model: "toy" (the shipped tiny model), a local folder, or a hub id of an hf-format LLaVA-OneVision
        checkpoint (`DEFAULT_BASE` for the 7B model) or of a full MMDuet checkpoint saved by this package.
    adapter: a folder or hub id of a LoRA adapter (the released `wangyueqian/MMDuet`, or one we trained).
    dtype: "auto" = bf16 on CUDA, fp32 on CPU. download: allow fetching from the hub (off by default).
    """
    device = _pick_device(device)
    torch_dtype = _pick_dtype(dtype, device)
    attn = attn_implementation or pick_attn_implementation(device)
    if str(model) == "toy":
        if not (TOY_DIR / "config.json").exists():
            raise CheckpointNotFoundError(f"the toy model is not built yet ({TOY_DIR}); run `mmduet train --toy`")
        folder = TOY_DIR
    else:
        folder = resolve_checkpoint(model, download, what="base model")
    net, info = DuetModel.from_pretrained(str(folder), dtype=torch_dtype, attn_implementation=attn,
                                          output_loading_info=True)
    random_heads = [h for h in _HEAD_NAMES if f"{h}.weight" in info["missing_keys"]]
    if random_heads and "DuetModel" in (net.config.architectures or []):
        raise MissingHeadsError(f"{folder} is an MMDuet checkpoint without {', '.join(random_heads)} weights")
    tokenizer = setup_tokenizer(AutoTokenizer.from_pretrained(str(folder)), net.frame_num_tokens)
    if tokenizer.convert_tokens_to_ids("<image>") != net.config.image_token_id:
        raise ValueError(f"{folder}: tokenizer's <image> id {tokenizer.convert_tokens_to_ids('<image>')} "
                         f"differs from the config's image_token_id {net.config.image_token_id}")
    report = LoadReport(base=str(model), dtype=str(torch_dtype).removeprefix("torch."), device=device,
                        attn_implementation=attn)
    if adapter is not None:
        net = load_adapter(net, adapter, merge=merge_lora, report=report, download=download)
    elif random_heads:
        report.random_heads = random_heads
        warnings.warn(f"{model}: no adapter given, so the informative and relevance heads are random "
                      "(pass adapter=..., e.g. the released wangyueqian/MMDuet)", stacklevel=2)
    net = net.to(device).eval()
    net.requires_grad_(False)
    net.load_report = report
    return net, tokenizer


def save_model(model, tokenizer, out_dir: str | Path) -> Path:
    """Save a full model (safetensors) or a peft model (adapter with heads and projector) plus the tokenizer."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out_dir), safe_serialization=True)
    tokenizer.save_pretrained(str(out_dir))
    return out_dir


# ---- tiny configurations for tests and the toy world ---------------------------------------------------------

def tiny_config(vocab_size: int, image_token_id: int, hidden_size: int = 64, num_layers: int = 2,
                num_heads: int = 4, num_kv_heads: int = 2, vision_hidden: int = 32, vision_layers: int = 2,
                image_size: int = 54, patch_size: int = 2, pooling_stride: int = 4,
                pooling_mode: str = "bilinear", **text_kwargs) -> LlavaOnevisionConfig:
    """A few-MB LLaVA-OneVision/MMDuet config. Defaults keep the 7B model's 27 x 27 grid (54 px, patch 2)
    so pooling gives its 49 tokens per frame."""
    vision = SiglipVisionConfig(hidden_size=vision_hidden, intermediate_size=2 * vision_hidden,
                                num_hidden_layers=vision_layers, num_attention_heads=2, image_size=image_size,
                                patch_size=patch_size, vision_use_head=False)
    text = Qwen2Config(vocab_size=vocab_size, hidden_size=hidden_size, intermediate_size=2 * hidden_size,
                       num_hidden_layers=num_layers, num_attention_heads=num_heads,
                       num_key_value_heads=num_kv_heads, max_position_embeddings=8192,
                       tie_word_embeddings=False, **text_kwargs)
    return LlavaOnevisionConfig(vision_config=vision, text_config=text, image_token_index=image_token_id,
                                vision_feature_layer=-1, vision_feature_select_strategy="full",
                                frame_pooling_stride=pooling_stride, frame_pooling_mode=pooling_mode,
                                tie_word_embeddings=False)
