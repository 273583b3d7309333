"""Loading MMDuet: a base checkpoint in any published layout, the released LoRA adapter, tiny and toy models.

    model, tokenizer = load_model("toy")                                        # shipped tiny model, CPU
    model, tokenizer = load_model("llava-hf/llava-onevision-qwen2-7b-ov-hf",   # the base, from the HF cache
                                  adapter="outputs/mmduet", dtype="bfloat16", device="cuda")
    print(model.load_report)                                                    # where every tensor came from

Base layouts (read from the safetensors headers, renamed with transformers' own LLaVA-OneVision mapping):
`llava-hf` (the hub repositories: `language_model.model.*`, `language_model.lm_head`, `vision_tower.vision_model.*`,
`multi_modal_projector.*`, `image_newline`), `transformers-5` (what transformers 5 writes for the vanilla class:
the same without `vision_model.`) and `mmduet` (what `save_model` writes: `model.*`, `lm_head`, both heads).

The released adapter (`wangyueqian/MMDuet`) was saved by peft from upstream's module tree (`model.layers.*`,
`model.mm_projector.{0,2}`, heads possibly named `response_head` / `related_head`); its keys are mapped onto ours.
Every tensor is accounted for: a base or adapter tensor that is missing, unexpected or of the wrong shape is an
error naming it. The one allowed gap is a bare base without an adapter (heads random, a warning). Only
safetensors are read, no remote code runs, and the adapter's `base_model_name_or_path` is never resolved.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import re
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from transformers import AutoTokenizer, LlavaOnevisionConfig, Qwen2Config, SiglipVisionConfig

from ..errors import InputError
from .modeling import DuetModel
from .template import setup_tokenizer

DEFAULT_BASE = "llava-hf/llava-onevision-qwen2-7b-ov-hf"
ASSETS = Path(__file__).resolve().parents[1] / "assets"
TOY_DIR = ASSETS / "toy_model"
CONFIGS_DIR = ASSETS / "configs"
# upstream's LoRA targets (as written in the released adapter_config.json) and ours (our module tree)
UPSTREAM_LORA_TARGETS = r"model\.layers.*(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)$"
OUR_LORA_TARGETS = r"model\.language_model\.layers.*(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)$"
BASE_FILES = "config.json, model*.safetensors (+ model.safetensors.index.json), tokenizer.json, tokenizer_config.json"

Dtype = Literal["auto", "bfloat16", "float16", "float32"]
Layout = Literal["llava-hf", "transformers-5", "model"]
LAYOUTS: dict[str, str] = {  # tensor naming styles; any of them may also hold the two heads (an MMDuet checkpoint)
    "llava-hf": "hub names: language_model.model.*, language_model.lm_head, vision_tower.vision_model.*",
    "transformers-5": "transformers 5 save of a model it built: language_model.model.*, vision_tower.*",
    "model": "module paths: model.language_model.*, model.vision_tower.*, lm_head",
}
HEADS = ("informative_head", "relevance_head")
_HEAD_NAMES = {"informative_head": ("informative_head", "response_head"),
               "relevance_head": ("relevance_head", "related_head")}
_PROJECTOR_MODULES = ("mm_projector", "multi_modal_projector")
_PROJECTOR_KEYS = tuple(f"model.multi_modal_projector.linear_{i}.{p}" for i in (1, 2) for p in ("weight", "bias"))


class CheckpointNotFoundError(InputError, FileNotFoundError):
    """A checkpoint that is neither a local folder nor in the Hugging Face cache (and no download was asked)."""


class MissingHeadsError(InputError):
    """An adapter without informative / relevance head weights: the model would score frames at random."""


class UnaccountedTensorsError(InputError):
    """A checkpoint whose tensors do not fill the model exactly: missing, unexpected or misshapen tensors."""


# ---- the load report -----------------------------------------------------------------------------------------

@dataclass
class TensorGroup:
    """One group of the model's tensors and where its values came from."""

    name: str  # "vision tower", "projector", "language model", "lm_head", "image_newline", "LoRA", a head
    tensors: int
    source: Literal["base", "adapter", "random"]
    detail: str = ""  # files, the adapter key, or why


@dataclass
class LoadReport:
    """What `load_model` loaded and from where; `str()` prints it one group per line."""

    base: str
    dtype: str = "float32"
    device: str = "cpu"
    attn_implementation: str = "sdpa"
    base_layout: str = ""
    base_heads: bool = False  # the base file holds both heads (an MMDuet checkpoint)
    base_files: list[str] = field(default_factory=list)
    adapter: str | None = None
    lora_tensors: int = 0
    lora_modules: int = 0
    lora_scale: float | None = None
    merged: bool = False
    groups: list[TensorGroup] = field(default_factory=list)
    head_keys: dict[str, str] = field(default_factory=dict)  # our head -> the checkpoint key it came from
    random_heads: list[str] = field(default_factory=list)  # heads left at their random init (base, no adapter)
    other_tensors: list[str] = field(default_factory=list)  # further full tensors the adapter overrode

    def group(self, name: str) -> TensorGroup:
        """The group called `name` (KeyError if absent)."""
        for g in self.groups:
            if g.name == name:
                return g
        raise KeyError(name)

    def set_group(self, group: TensorGroup) -> None:
        """Replace the group of the same name in place, or append `group`."""
        names = [g.name for g in self.groups]
        if group.name in names:
            self.groups[names.index(group.name)] = group
        else:
            self.groups.append(group)

    def to_dict(self) -> dict:
        """Plain data for JSON (notebook provenance, `mmduet doctor --gpu`)."""
        return dataclasses.asdict(self)

    def __str__(self) -> str:
        files = f"{len(self.base_files)} file{'s' if len(self.base_files) != 1 else ''}"
        heads = " + MMDuet heads" if self.base_heads else ""
        lines = [f"base     {self.base}  [{self.base_layout} layout{heads}, {files}]"]
        if self.adapter:
            lines.append(f"adapter  {self.adapter}  [peft LoRA, scale {self.lora_scale:g}]")
        else:
            lines.append("adapter  none")
        lines.append(f"{self.dtype} on {self.device}, attention {self.attn_implementation}"
                     + (", LoRA merged" if self.merged else ""))
        width = max((len(g.name) for g in self.groups), default=0)
        for g in self.groups:
            count = f"{g.tensors} tensor{'s' if g.tensors != 1 else ''}"
            source = g.source.upper() if g.source == "random" else g.source
            lines.append(f"  {g.name:<{width}}  {count:>12}  {source:<7}  {g.detail}".rstrip())
        return "\n".join(lines)


def _common_prefix(keys: Iterable[str]) -> str:
    """`a.b.0.weight`, `a.b.2.bias` -> `a.b.*` (a group of tensor names in one line)."""
    keys = sorted(keys)
    prefix = os.path.commonprefix(keys)
    return keys[0] if len(keys) == 1 else prefix[:prefix.rfind(".") + 1] + "*"


def _few(keys: Iterable[str], n: int = 4) -> str:
    keys = sorted(keys)
    shown = ", ".join(keys[:n])
    return f"{shown} (+{len(keys) - n} more)" if len(keys) > n else shown


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


# ---- the published base configuration -----------------------------------------------------------------------

def published_config_dict(name: str = "llava-onevision-qwen2-7b-ov-hf") -> dict:
    """The shipped `config.json` of a published base, as the JSON object on the hub (no download)."""
    path = CONFIGS_DIR / f"{name}.json"
    if not path.exists():
        known = sorted(p.stem for p in CONFIGS_DIR.glob("*.json"))
        raise InputError(f"no shipped config {name!r}; known: {', '.join(known)}")
    return json.loads(path.read_text())


def published_config(name: str = "llava-onevision-qwen2-7b-ov-hf") -> LlavaOnevisionConfig:
    """The published base's config as a `LlavaOnevisionConfig` (7B: 28 x 3584 Qwen2, 26-layer SigLIP, 49
    tokens per frame), for building a model of the real shape with random weights."""
    return LlavaOnevisionConfig.from_dict(published_config_dict(name))


# ---- base checkpoints: files, layout, loading ----------------------------------------------------------------

def base_weight_files(folder: Path) -> dict[str, str]:
    """Every tensor name of a base checkpoint -> the safetensors file holding it (headers only, no data)."""
    from safetensors import safe_open

    index = folder / "model.safetensors.index.json"
    if index.exists():
        return dict(json.loads(index.read_text())["weight_map"])
    single = folder / "model.safetensors"
    if single.exists():
        with safe_open(str(single), "pt") as f:
            return dict.fromkeys(f.keys(), single.name)  # noqa: SIM118 - safe_open has no __iter__
    pickles = sorted(p.name for p in folder.glob("pytorch_model*.bin"))
    if pickles:
        raise InputError(f"{folder}: only pickle weights ({pickles[0]}); they are not loaded (arbitrary code on "
                         f"load). Use the repository's safetensors files or convert them")
    raise CheckpointNotFoundError(f"{folder}: no model.safetensors or model.safetensors.index.json "
                                  f"(expected {BASE_FILES})")


def detect_base_layout(keys: Iterable[str]) -> Layout:
    """Which published naming a base checkpoint's tensors follow (see `LAYOUTS`). transformers 5 saves a model
    under the names it was loaded from, so a model read from the hub and saved again keeps the hub names."""
    keys = set(keys)
    if any(k.startswith(("model.mm_projector.", "model.vision_tower.vision_tower.")) for k in keys):
        raise InputError("this is the original LLaVA-NeXT checkpoint format (lmms-lab: model.mm_projector.*); "
                         f"load the transformers-format base instead ({DEFAULT_BASE})")
    if any(k.startswith("language_model.") for k in keys):
        return "llava-hf" if any(k.startswith("vision_tower.vision_model.") for k in keys) else "transformers-5"
    if any(k.startswith("model.language_model.") for k in keys):
        return "model"
    raise InputError(f"unknown checkpoint layout (first tensors: {_few(keys, 3)}); expected a LLaVA-OneVision "
                     f"checkpoint with {'; or '.join(LAYOUTS.values())}")


def base_key_mapping(model_type: str = "llava_onevision") -> dict[str, str]:
    """The renames transformers applies when its own LLaVA-OneVision class loads a checkpoint (hub and
    transformers-5 names -> module paths). A subclass counts as custom code and skips them, so we pass them
    to `from_pretrained(key_mapping=...)` ourselves."""
    from transformers.conversion_mapping import get_checkpoint_conversion_mapping

    mapping: dict[str, str] = {}
    for transform in get_checkpoint_conversion_mapping(model_type) or []:
        for source, target in zip(transform.source_patterns, transform.target_patterns):
            mapping[source] = target
    if not mapping:  # a future transformers without this table: the renames it used to hold
        mapping = {r"^language_model.lm_head": "lm_head", r"^language_model": "model.language_model",
                   r"^vision_tower": "model.vision_tower", r"^multi_modal_projector": "model.multi_modal_projector",
                   r"^image_newline": "model.image_newline"}
    return mapping


class _DropLoadReport(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "LOAD REPORT" not in str(record.msg)


@contextlib.contextmanager
def _quiet_transformers_load_report() -> Iterator[None]:
    """transformers logs its own missing/unexpected table; ours is stricter and raises, so drop that one record
    (a filter, not a level: transformers runs extra checks when that logger's level is raised)."""
    logger = logging.getLogger("transformers.modeling_utils")
    drop = _DropLoadReport()
    logger.addFilter(drop)
    try:
        yield
    finally:
        logger.removeFilter(drop)


def _read_base_config(folder: Path) -> dict:
    path = folder / "config.json"
    if not path.exists():
        raise CheckpointNotFoundError(f"{folder}: no config.json (expected {BASE_FILES})")
    config = json.loads(path.read_text())
    if config.get("model_type") != "llava_onevision":
        raise InputError(f"{path}: model_type {config.get('model_type')!r}, not 'llava_onevision'; MMDuet loads "
                         f"transformers-format LLaVA-OneVision checkpoints such as {DEFAULT_BASE}")
    return config


def _load_base(folder: Path, torch_dtype: torch.dtype, attn: str) -> tuple[DuetModel, dict]:
    with _quiet_transformers_load_report():
        return DuetModel.from_pretrained(
            str(folder), dtype=torch_dtype, attn_implementation=attn, key_mapping=base_key_mapping(),
            use_safetensors=True, ignore_mismatched_sizes=True, output_loading_info=True)


def _check_base(info: dict, folder: Path, layout: str) -> list[str]:
    """Raise unless the base filled every parameter but the heads; returns the heads it lacked."""
    head_keys = {f"{h}.weight" for h in HEADS}
    missing = sorted(k for k in info["missing_keys"] if k not in head_keys)
    unexpected = sorted(info["unexpected_keys"])
    mismatched = sorted(f"{key} {tuple(saved)} vs {tuple(ours)}" for key, saved, ours in info["mismatched_keys"])
    problems = [f"{len(keys)} {what}: {_few(keys)}" for what, keys in
                (("missing", missing), ("unexpected", unexpected), ("of the wrong shape (file vs config)", mismatched))
                if keys]
    if problems:
        raise UnaccountedTensorsError(f"base {folder} ({layout} layout): tensors do not fill the model: "
                                      + "; ".join(problems))
    return [h for h in HEADS if f"{h}.weight" in info["missing_keys"]]


def _group_of(key: str) -> str:
    """The report group of a checkpoint tensor name (any layout)."""
    for head, names in _HEAD_NAMES.items():
        if any(re.search(rf"(^|\.){name}\.", key) for name in names):
            return head
    if "image_newline" in key:
        return "image_newline"
    if "vision_tower" in key:
        return "vision tower"
    if "multi_modal_projector" in key or "mm_projector" in key:
        return "projector"
    if key.endswith("lm_head.weight"):
        return "lm_head"
    return "language model"


def _base_groups(files: dict[str, str]) -> list[TensorGroup]:
    grouped: dict[str, list[str]] = {}
    for key, file in files.items():
        grouped.setdefault(_group_of(key), []).append(file)
    order = ["vision tower", "projector", "language model", "lm_head", "image_newline", *HEADS]
    groups = []
    for name in order:
        if name in grouped:
            detail = ", ".join(sorted(set(grouped[name])))
            if name == "image_newline":
                detail += " (unused by MMDuet)"
            groups.append(TensorGroup(name, len(grouped[name]), "base", detail))
    return groups


# ---- adapters -------------------------------------------------------------------------------------------------

_RENAMES = [
    (re.compile(r"^model\.layers\."), "model.language_model.layers."),
    (re.compile(r"^model\.embed_tokens\."), "model.language_model.embed_tokens."),
    (re.compile(r"^model\.norm\."), "model.language_model.norm."),
    (re.compile(r"^model\.mm_projector\.0\."), "model.multi_modal_projector.linear_1."),
    (re.compile(r"^model\.mm_projector\.2\."), "model.multi_modal_projector.linear_2."),
    (re.compile(r"^model\.vision_tower\.vision_tower\.(vision_model\.)?"), "model.vision_tower."),
]
# ours -> upstream's names, only to name a missing tensor the way the adapter file would
_UPSTREAM_NAMES = [("model.language_model.", "model."), ("model.multi_modal_projector.linear_1.", "model.mm_projector.0."),
                   ("model.multi_modal_projector.linear_2.", "model.mm_projector.2.")]


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


def _saved_name(ours: str, upstream: bool) -> str:
    """Our key -> the name the adapter file would give it (upstream's tree or ours)."""
    if upstream:
        for new, old in _UPSTREAM_NAMES:
            if ours.startswith(new):
                ours = old + ours[len(new):]
                break
    return f"base_model.model.{ours}"


def _read_safetensors(folder: Path, stem: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    path = folder / f"{stem}.safetensors"
    if not path.exists():
        if (folder / f"{stem}.bin").exists():
            raise InputError(f"{folder / (stem + '.bin')}: pickle checkpoints are not loaded; convert it to safetensors")
        raise CheckpointNotFoundError(f"{path} not found")
    return load_file(str(path))


# Fields of a saved LoraConfig we do not pass on: the base it names is never resolved (the caller gives the
# base), modules_to_save are copied by us, the task wrapper would change the forward signature.
_LORA_FIELDS_DROPPED = {"base_model_name_or_path", "revision", "modules_to_save", "task_type", "inference_mode",
                        "auto_mapping", "peft_version"}


def adapter_lora_config(folder: Path, trainable: bool = False):
    """The adapter's `LoraConfig` retargeted at our module tree (upstream's `model.layers` regex ->
    `model.language_model.layers`). Returns (LoraConfig, the saved JSON)."""
    from peft import LoraConfig

    path = folder / "adapter_config.json"
    if not path.exists():
        raise CheckpointNotFoundError(f"{path} not found")
    saved = json.loads(path.read_text())
    if saved.get("peft_type", "LORA") != "LORA":
        raise InputError(f"{path}: peft_type {saved.get('peft_type')!r}; only LoRA adapters are loaded")
    known = {f.name for f in dataclasses.fields(LoraConfig)}
    unknown = sorted(k for k in saved if k not in known)
    if unknown:
        raise InputError(f"{path}: fields this peft does not know: {', '.join(unknown)} (a newer peft wrote it)")
    kwargs = {k: v for k, v in saved.items() if k not in _LORA_FIELDS_DROPPED}
    targets = kwargs.get("target_modules") or UPSTREAM_LORA_TARGETS
    if isinstance(targets, str) and "language_model" not in targets:
        targets = targets.replace(r"model\.layers", r"model\.language_model\.layers")
    kwargs["target_modules"] = targets
    return LoraConfig(**kwargs, inference_mode=not trainable), saved


@dataclass
class _AdapterTensors:
    """An adapter's tensors sorted by what they are; names are our module paths."""

    lora: dict[str, torch.Tensor] = field(default_factory=dict)
    projector: dict[str, torch.Tensor] = field(default_factory=dict)
    heads: dict[str, torch.Tensor] = field(default_factory=dict)
    other: dict[str, torch.Tensor] = field(default_factory=dict)
    saved_names: dict[str, str] = field(default_factory=dict)  # ours -> key in the file
    upstream: bool = False  # saved from upstream's module tree


def _sort_adapter_tensors(saved: dict[str, torch.Tensor]) -> _AdapterTensors:
    out = _AdapterTensors(upstream=any(re.match(r"base_model\.model\.model\.(layers|mm_projector)\.", k) for k in saved))
    for key, value in saved.items():
        ours = map_adapter_key(key)
        if ours in out.saved_names:
            raise UnaccountedTensorsError(f"adapter tensors {out.saved_names[ours]} and {key} both map to {ours}")
        out.saved_names[ours] = key
        if ".lora_" in ours:
            out.lora[ours] = value
        elif ours in _PROJECTOR_KEYS:
            out.projector[ours] = value
        elif ours.removesuffix(".weight") in HEADS:
            out.heads[ours] = value
        else:
            out.other[ours] = value
    return out


def _check_adapter_full_tensors(model: DuetModel, parts: _AdapterTensors, saved_config: dict, folder: Path) -> None:
    """Heads present, projector complete when the adapter saves one, every other tensor a model parameter."""
    missing_heads = [h for h in HEADS if f"{h}.weight" not in parts.heads]
    if missing_heads:
        names = " / ".join(f"{h}.weight (or {_HEAD_NAMES[h][1]}.weight)" for h in missing_heads)
        projector = _common_prefix(parts.saved_names[k] for k in parts.projector) if parts.projector else "no projector"
        raise MissingHeadsError(f"adapter {folder} has no weights for {names}: without them every frame score is "
                                f"random. Found {len(parts.lora)} LoRA tensors and {projector}.")
    saves_projector = any(m in _PROJECTOR_MODULES for m in saved_config.get("modules_to_save") or [])
    missing = [k for k in _PROJECTOR_KEYS if k not in parts.projector] if (saves_projector or parts.projector) else []
    own = model.state_dict()
    unexpected = [parts.saved_names[k] for k in parts.other if k not in own]
    misshapen = [f"{parts.saved_names[k]} {tuple(v.shape)} vs {tuple(own[k].shape)}"
                 for group in (parts.projector, parts.heads, parts.other) for k, v in group.items()
                 if k in own and v.shape != own[k].shape]
    problems = [f"{len(keys)} {what}: {_few(keys)}" for what, keys in
                (("missing", [_saved_name(k, parts.upstream) for k in missing]), ("unexpected", unexpected),
                 ("of the wrong shape (file vs model)", misshapen)) if keys]
    if problems:
        raise UnaccountedTensorsError(f"adapter {folder}: tensors do not fit the model: " + "; ".join(problems))


def _peft_key_to_ours(key: str, adapter_name: str = "default") -> str:
    return key.removeprefix("base_model.model.").replace(f".{adapter_name}.", ".")


def _inject_lora(model: DuetModel, lora_config, parts: _AdapterTensors, folder: Path):
    """Wrap `model` with LoRA layers and load the adapter's LoRA tensors; every target module must get its pair."""
    from peft import get_peft_model, set_peft_model_state_dict

    peft_model = get_peft_model(model, lora_config, autocast_adapter_dtype=False)
    result = set_peft_model_state_dict(peft_model, {f"base_model.model.{k}": v for k, v in parts.lora.items()})
    missing = [_saved_name(_peft_key_to_ours(k), parts.upstream) for k in result.missing_keys if ".lora_" in k]
    unexpected = [parts.saved_names.get(_peft_key_to_ours(k), k) for k in result.unexpected_keys]
    if missing or unexpected or not parts.lora:
        problems = [f"{len(keys)} {what}: {_few(keys)}" for what, keys in (("missing", missing), ("unexpected", unexpected))
                    if keys] or ["no LoRA tensors at all"]
        raise UnaccountedTensorsError(f"adapter {folder}: LoRA tensors do not fit the target modules "
                                      f"{lora_config.target_modules!r}: " + "; ".join(problems))
    return peft_model


def load_adapter(model: DuetModel, adapter_dir: str | Path, merge: bool = True,
                 report: LoadReport | None = None, download: bool = False):
    """Apply a peft LoRA adapter saved from upstream's (or our) module tree to `model`.

    Every adapter tensor must be a LoRA tensor of a target module, the projector, a head or another model
    parameter; every target module must get its LoRA pair; both heads must be present. Returns the model with
    LoRA merged (`merge=True`) or a peft model (for further training).
    """
    folder = resolve_checkpoint(adapter_dir, download, what="adapter")
    lora_config, saved_config = adapter_lora_config(folder, trainable=not merge)
    parts = _sort_adapter_tensors(_read_safetensors(folder, "adapter_model"))
    _check_adapter_full_tensors(model, parts, saved_config, folder)
    own = model.state_dict()
    with torch.no_grad():
        for group in (parts.projector, parts.heads, parts.other):
            for key, value in group.items():
                own[key].copy_(value.to(own[key].dtype))
    peft_model = _inject_lora(model, lora_config, parts, folder)
    if report is not None:
        _report_adapter(report, adapter_dir, parts, lora_config, merge)
    return peft_model.merge_and_unload() if merge else peft_model


def _report_adapter(report: LoadReport, adapter_dir, parts: _AdapterTensors, lora_config, merged: bool) -> None:
    modules = {k.split(".lora_")[0] for k in parts.lora}
    scale = lora_config.lora_alpha / (lora_config.r ** 0.5 if lora_config.use_rslora else lora_config.r)
    report.adapter, report.merged = str(adapter_dir), merged
    report.lora_tensors, report.lora_modules, report.lora_scale = len(parts.lora), len(modules), scale
    report.head_keys = {k.removesuffix(".weight"): parts.saved_names[k] for k in parts.heads}
    report.other_tensors = sorted(parts.saved_names[k] for k in parts.other)
    if parts.projector:
        had = report.group("projector").tensors if any(g.name == "projector" for g in report.groups) else 0
        names = _common_prefix(parts.saved_names[k] for k in parts.projector)
        report.set_group(TensorGroup("projector", len(parts.projector), "adapter",
                                     f"{names} (overrides the base's {had})"))
    how = "merged into" if merged else "kept unmerged on"
    report.set_group(TensorGroup("LoRA", len(parts.lora), "adapter", f"{how} {len(modules)} modules, scale {scale:g}"))
    for head in HEADS:
        report.set_group(TensorGroup(head, 1, "adapter", report.head_keys[head]))
    if parts.other:
        report.set_group(TensorGroup("other", len(parts.other), "adapter", _few(report.other_tensors)))


# ---- the main entry point ------------------------------------------------------------------------------------

def pick_attn_implementation(device: str | torch.device) -> str:
    """flash_attention_2 when installed and on CUDA, else sdpa."""
    import importlib.util

    if torch.device(device).type == "cuda" and importlib.util.find_spec("flash_attn") is not None:
        return "flash_attention_2"
    return "sdpa"


def resolve_device(device: str | torch.device = "auto") -> str:
    """"auto" -> "cuda" when a GPU is visible, else "cpu"; any other name must be a device this machine has
    (cpu, cuda, cuda:N, mps), else an `InputError` saying which exist. Checked before anything is loaded."""
    if str(device) == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise InputError(f"device {str(device)!r}: not a device name (auto, cpu, cuda, cuda:N, mps)") from None
    if parsed.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise InputError(f"device {str(device)!r}: no CUDA GPU is visible here (use cpu or auto)")
        if parsed.index is not None and parsed.index >= count:
            raise InputError(f"device {str(device)!r}: only {count} CUDA GPU{'s' if count != 1 else ''} visible "
                             f"(cuda:0 to cuda:{count - 1})")
    elif parsed.type == "mps" and not torch.backends.mps.is_available():
        raise InputError(f"device {str(device)!r}: MPS is not available here (use cpu or auto)")
    elif parsed.type not in ("cpu", "cuda", "mps"):
        raise InputError(f"device {str(device)!r}: this package runs on cpu, cuda or mps")
    return str(parsed)


def resolve_dtype(dtype: Dtype, device: str) -> torch.dtype:
    """"auto" -> bfloat16 on CUDA, float32 elsewhere; otherwise the named dtype."""
    if dtype == "auto":
        return torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32
    names = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
    if dtype not in names:
        raise InputError(f"dtype {dtype!r}: one of auto, {', '.join(names)}")
    return names[dtype]



def _base_folder(model: str | Path, download: bool) -> Path:
    if str(model) == "toy":
        if not (TOY_DIR / "config.json").exists():
            raise CheckpointNotFoundError(f"the toy model is not built yet ({TOY_DIR}); run `mmduet train --toy`")
        return TOY_DIR
    return resolve_checkpoint(model, download, what="base model")


def _check_tokenizer_files(folder: Path) -> None:
    if not any((folder / name).exists() for name in ("tokenizer.json", "tokenizer_config.json", "vocab.json")):
        raise CheckpointNotFoundError(f"{folder}: no tokenizer (tokenizer.json / tokenizer_config.json)")


def _load_tokenizer(folder: Path, net: DuetModel):
    _check_tokenizer_files(folder)
    tokenizer = setup_tokenizer(AutoTokenizer.from_pretrained(str(folder)), net.frame_num_tokens)
    image_id = tokenizer.convert_tokens_to_ids("<image>")
    if image_id != net.config.image_token_id:
        raise InputError(f"{folder}: tokenizer's <image> id {image_id} differs from the config's "
                         f"image_token_index {net.config.image_token_id}")
    return tokenizer


def load_model(model: str | Path = "toy", adapter: str | Path | None = None, dtype: Dtype = "auto",
               device: str = "auto", attn_implementation: str | None = None, merge_lora: bool = True,
               download: bool = False) -> tuple[DuetModel, object]:
    """Load MMDuet and its tokenizer; `model.load_report` says where every group of tensors came from.

    model: "toy" (the shipped tiny model), a local folder, or a hub id of a transformers-format LLaVA-OneVision
        checkpoint in any published layout (`DEFAULT_BASE` for the 7B model), or a full MMDuet checkpoint saved
        by this package.
    adapter: a folder or hub id of a LoRA adapter (the released `wangyueqian/MMDuet`, or one we trained).
    dtype: "auto" = bf16 on CUDA, fp32 on CPU. download: allow fetching from the hub (off by default).
    Raises `InputError` (or a subclass) naming the tensors when a checkpoint does not fill the model exactly.
    """
    device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, device)
    attn = attn_implementation or pick_attn_implementation(device)
    folder = _base_folder(model, download)
    config = _read_base_config(folder)
    files = base_weight_files(folder)
    layout = detect_base_layout(files)
    _check_tokenizer_files(folder)  # before the weights are read: a folder without one costs nothing
    net, info = _load_base(folder, torch_dtype, attn)
    random_heads = _check_base(info, folder, layout)
    if random_heads and "DuetModel" in (config.get("architectures") or []):
        raise MissingHeadsError(f"{folder} is an MMDuet checkpoint without {', '.join(random_heads)} weights")
    tokenizer = _load_tokenizer(folder, net)
    report = LoadReport(base=str(model), dtype=str(torch_dtype).removeprefix("torch."), device=device,
                        attn_implementation=attn, base_layout=layout, base_heads=not random_heads,
                        base_files=sorted(set(files.values())),
                        groups=_base_groups(files))
    report.head_keys = {h: f"{h}.weight" for h in HEADS if h not in random_heads}
    if adapter is not None:
        net = load_adapter(net, adapter, merge=merge_lora, report=report, download=download)
    elif random_heads:
        report.random_heads = random_heads
        for head in random_heads:
            report.set_group(TensorGroup(head, 1, "random", "not in the base and no adapter given"))
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
