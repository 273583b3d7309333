"""Tiny checkpoints in the layouts that are published, written the way the published files were written.

Only plain transformers / safetensors / peft calls; never this package's save path.

- `write_llava_hf_base`: the `llava-hf/llava-onevision-qwen2-7b-ov-hf` layout. transformers' conversion script
  saved a `LlavaOnevisionForConditionalGeneration` (transformers 4.45: `language_model.model.*`,
  `language_model.lm_head.weight`, `vision_tower.vision_model.*`, `multi_modal_projector.*`, `image_newline`) in
  float16, sharded with an index; its config.json is the published one (shipped in the package) with tiny widths;
  its tokenizer is Qwen2's with `<image>` and `<video>` added as special tokens.
- `write_transformers5_base`: the same weights through transformers 5's own `save_pretrained`.
- `write_released_adapter`: the `wangyueqian/MMDuet` layout. peft's `save_pretrained` of upstream's module tree (a
  Qwen2 causal LM whose `model` also holds `vision_tower.vision_tower` and `mm_projector`, heads beside `lm_head`)
  with the released LoraConfig, in bfloat16, and the adapter_config.json fields peft 0.12 wrote.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import (
    AddedToken,
    LlavaOnevisionConfig,
    LlavaOnevisionForConditionalGeneration,
    Qwen2ForCausalLM,
    Qwen2Model,
    Qwen2Tokenizer,
    SiglipVisionModel,
)

from mmduet_core.model.checkpoint import published_config_dict

TEXTS = ["A multimodal AI assistant is helping users with some activities. Below is their conversation, "
         "interleaved with the list of video frames received by the assistant.",
         "What is happening? A red car drives away, then a dog runs across the street."] * 3
TINY_TEXT = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
             "num_key_value_heads": 2}
# 54 px in 2 px patches keeps the 7B model's 27 x 27 grid, so pooling still gives 49 tokens per frame
TINY_VISION = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
               "image_size": 54, "patch_size": 2}
RELEASED_MODULES_TO_SAVE = ["connector", "mm_projector", "response_head", "related_head"]
RELEASED_TARGETS = r"model\.layers.*(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)$"


# ---- tokenizer ---------------------------------------------------------------------------------------------

def build_llava_hf_tokenizer(vocab_size: int = 300) -> Qwen2Tokenizer:
    """A small byte-level BPE in Qwen2's form (`<|endoftext|>`, `<|im_start|>`, `<|im_end|>` after the vocabulary,
    eos `<|im_end|>`, no bos), then `<image>` and `<video>` added as the conversion script added them."""
    from tokenizers import AddedToken as RawAddedToken
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    raw.train_from_iterator(TEXTS, trainers.BpeTrainer(vocab_size=vocab_size, show_progress=False,
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    raw.add_special_tokens([RawAddedToken(t, special=True, normalized=False)
                            for t in ("<|endoftext|>", "<|im_start|>", "<|im_end|>")])
    tokenizer = Qwen2Tokenizer(tokenizer_object=raw, unk_token=None, bos_token=None, eos_token="<|im_end|>",
                               pad_token="<|endoftext|>", additional_special_tokens=["<|im_start|>", "<|im_end|>"],
                               errors="replace", model_max_length=32768, clean_up_tokenization_spaces=False)
    tokenizer.add_tokens([AddedToken("<image>", special=True, normalized=False),
                          AddedToken("<video>", special=True, normalized=False)], special_tokens=True)
    return tokenizer


# ---- the published config with tiny widths -----------------------------------------------------------------

def tiny_published_config(tokenizer) -> dict:
    """The published config.json, every field kept, with tiny widths and this tokenizer's ids. The vocabulary
    is padded to a multiple of 64 beyond the tokenizer, as the published one (152128 rows, 151648 tokens)."""
    config = published_config_dict()
    config["text_config"].update(TINY_TEXT, vocab_size=-(-len(tokenizer) // 64) * 64,
                                 bos_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
                                 eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"))
    config["vision_config"].update(TINY_VISION)
    config["image_token_index"] = tokenizer.convert_tokens_to_ids("<image>")
    config["video_token_index"] = tokenizer.convert_tokens_to_ids("<video>")
    return config


def random_vanilla_model(config: dict, seed: int = 0) -> LlavaOnevisionForConditionalGeneration:
    """transformers' own class from the config, every weight random and non-trivial (norms and biases too)."""
    model = LlavaOnevisionForConditionalGeneration(LlavaOnevisionConfig.from_dict(config))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return model.eval()


# ---- bases ---------------------------------------------------------------------------------------------------

# transformers 5 module paths -> the names transformers 4.45 saved (what the hub repositories hold)
_HUB_NAMES = [("model.language_model.", "language_model.model."), ("lm_head.", "language_model.lm_head."),
              ("model.vision_tower.", "vision_tower.vision_model."),
              ("model.multi_modal_projector.", "multi_modal_projector."), ("model.image_newline", "image_newline")]


def hub_name(module_path: str) -> str:
    for new, old in _HUB_NAMES:
        if module_path.startswith(new):
            return old + module_path[len(new):]
    raise KeyError(module_path)


def write_sharded(state: dict[str, torch.Tensor], folder: Path, shards: int = 2) -> None:
    """Safetensors shards and `model.safetensors.index.json`, named as the hub names them."""
    keys = sorted(state)
    per = -(-len(keys) // shards)
    weight_map = {}
    for i in range(shards):
        name = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        part = {k: state[k].contiguous() for k in keys[i * per:(i + 1) * per]}
        save_file(part, str(folder / name), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(part, name))
    total = sum(t.numel() * t.element_size() for t in state.values())
    (folder / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))


def write_llava_hf_base(folder: Path, seed: int = 0) -> Path:
    """A tiny base in the llava-hf hub layout (float16, two shards, the published config's fields)."""
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = build_llava_hf_tokenizer()
    config = tiny_published_config(tokenizer)
    model = random_vanilla_model(config, seed)
    state = {hub_name(k): v.to(torch.float16) for k, v in model.state_dict().items()}
    write_sharded(state, folder)
    (folder / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    tokenizer.save_pretrained(str(folder))
    return folder


def write_transformers5_base(folder: Path, like: Path) -> Path:
    """The llava-hf base at `like` written by transformers 5's vanilla `save_pretrained` from a model built in
    this process (a model loaded from a hub folder would be saved back under the hub names it was read with)."""
    loaded = LlavaOnevisionForConditionalGeneration.from_pretrained(str(like), dtype=torch.float32)
    fresh = LlavaOnevisionForConditionalGeneration(loaded.config)
    fresh.load_state_dict(loaded.state_dict())
    fresh.save_pretrained(str(folder))
    Qwen2Tokenizer.from_pretrained(str(like)).save_pretrained(str(folder))
    return folder


def read_tensors(folder: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a (possibly sharded) safetensors checkpoint."""
    state = {}
    for file in sorted(folder.glob("*.safetensors")):
        state.update(load_file(str(file)))
    return state


def rewrite_tensors(folder: Path, edit) -> None:
    """Apply `edit(dict) -> dict` to a checkpoint's tensors, keeping its file split (tests remove or add one)."""
    index = folder / "model.safetensors.index.json"
    files = sorted(p.name for p in folder.glob("*.safetensors"))
    state = edit(read_tensors(folder))
    if index.exists():
        for file in files:
            (folder / file).unlink()
        write_sharded(state, folder, shards=len(files))
    else:
        save_file(state, str(folder / files[0]), metadata={"format": "pt"})


# ---- upstream's module tree and the released adapter ---------------------------------------------------------

class UpstreamVisionTower(nn.Module):
    """LLaVA-NeXT's SigLipVisionTower: `.vision_tower` is SigLIP with its last layer deleted."""

    def __init__(self, vision_config):
        super().__init__()
        cfg = vision_config.__class__(**{**vision_config.to_dict(),
                                         "num_hidden_layers": vision_config.num_hidden_layers + 1})
        self.vision_tower = SiglipVisionModel(cfg)
        del self.vision_tower.encoder.layers[-1]


class UpstreamInner(Qwen2Model):
    """Upstream's `model`: Qwen2 (`layers`, `embed_tokens`, `norm`) plus `vision_tower` and `mm_projector`."""

    def __init__(self, config):
        super().__init__(config.text_config)
        self.vision_tower = UpstreamVisionTower(config.vision_config)
        d_v, d = config.vision_config.hidden_size, config.text_config.hidden_size
        self.mm_projector = nn.Sequential(nn.Linear(d_v, d), nn.GELU(), nn.Linear(d, d))


class UpstreamMMDuet(Qwen2ForCausalLM):
    """Upstream's module tree (a Qwen2 causal LM whose `model` also holds the vision parts, heads beside
    `lm_head`), so peft saves an adapter with upstream's key names; `forward` is upstream's computation as the
    spec describes it, written with transformers parts only (an independent reference)."""

    def __init__(self, config, head_names=("response_head", "related_head")):
        super().__init__(config.text_config)
        self.image_token_id = config.image_token_id
        self.model = UpstreamInner(config)
        self.head_names = tuple(head_names)
        for name in head_names:
            setattr(self, name, nn.Linear(config.text_config.hidden_size, 2, bias=False))

    def forward(self, input_ids: torch.Tensor, frames: torch.Tensor):
        """-> LM logits (1, T, V), informative and relevance logits (1, T, 2)."""
        x = frames.float() / 127.5 - 1
        hidden = self.model.vision_tower.vision_tower(x, output_hidden_states=True).hidden_states[-1]
        feats = self.model.mm_projector(hidden)  # (F, 729, D)
        f, n, d = feats.shape
        side = round(n ** 0.5)
        grid = feats.view(f, side, side, d)
        c = (torch.arange(7, dtype=torch.float64) + 0.5) * side / 7 - 0.5  # bilinear 27 -> 7, align_corners False
        lo, w = c.floor().long(), (c - c.floor()).float()
        rows = grid[:, lo] * (1 - w)[None, :, None, None] + grid[:, lo + 1] * w[None, :, None, None]
        pooled = rows[:, :, lo] * (1 - w)[None, None, :, None] + rows[:, :, lo + 1] * w[None, None, :, None]
        embeds = self.model.embed_tokens(input_ids).clone()
        embeds[input_ids == self.image_token_id] = pooled.reshape(f * 49, d)
        h = Qwen2Model.forward(self.model, inputs_embeds=embeds).last_hidden_state
        return self.lm_head(h), *(getattr(self, name)(h) for name in self.head_names)


# llava-hf names -> upstream's (the conversion script's renames, read backwards)
_UPSTREAM_FROM_HUB = [("language_model.model.", "model."), ("language_model.lm_head.", "lm_head."),
                      ("vision_tower.vision_model.", "model.vision_tower.vision_tower."),
                      ("multi_modal_projector.linear_1.", "model.mm_projector.0."),
                      ("multi_modal_projector.linear_2.", "model.mm_projector.2.")]


def upstream_tree_from_base(base: Path, head_names=("response_head", "related_head"), seed: int = 2) -> UpstreamMMDuet:
    """Upstream's tree holding the llava-hf base's weights (what lmms-lab's checkpoint holds under its names);
    the heads start random, as upstream's did."""
    config = LlavaOnevisionConfig.from_pretrained(str(base))
    torch.manual_seed(seed)
    tree = UpstreamMMDuet(config, head_names)
    state = {}
    for key, value in read_tensors(base).items():
        for hub, upstream in _UPSTREAM_FROM_HUB:
            if key.startswith(hub):
                state[upstream + key[len(hub):]] = value.float()
    result = tree.load_state_dict(state, strict=False)
    assert not result.unexpected_keys and {k.split(".")[0] for k in result.missing_keys} <= set(head_names)
    return tree


def peft012_adapter_config(r: int = 16, alpha: int = 32, modules_to_save=RELEASED_MODULES_TO_SAVE) -> dict:
    """adapter_config.json with exactly the fields peft 0.12 wrote, values as released."""
    return {"alpha_pattern": {}, "auto_mapping": None, "base_model_name_or_path": "lmms-lab/llava-onevision-qwen2-7b-ov",
            "bias": "none", "fan_in_fan_out": False, "inference_mode": True, "init_lora_weights": True,
            "layer_replication": None, "layers_pattern": None, "layers_to_transform": None, "loftq_config": {},
            "lora_alpha": alpha, "lora_dropout": 0.05, "megatron_config": None, "megatron_core": "megatron.core",
            "modules_to_save": list(modules_to_save), "peft_type": "LORA", "r": r, "rank_pattern": {},
            "revision": None, "target_modules": RELEASED_TARGETS, "task_type": "CAUSAL_LM", "use_dora": False,
            "use_rslora": False}


def write_released_adapter(folder: Path, base: Path, head_names=("response_head", "related_head"),
                           modules_to_save=RELEASED_MODULES_TO_SAVE, wrapper_segment: bool = False,
                           seed: int = 2):
    """A tiny adapter as released: peft's save of upstream's tree fine-tuned from `base` (LoRA on the decoder
    linears, the projector through `modules_to_save`, heads only when `modules_to_save` names them), stored in
    bfloat16. `wrapper_segment=True` keeps peft's `modules_to_save.default` segment in the full-tensor keys.
    Returns the fine-tuned peft tree (its LoRA injected in place)."""
    tree = upstream_tree_from_base(base, head_names, seed)
    lora = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules=RELEASED_TARGETS,
                      modules_to_save=list(modules_to_save), task_type="CAUSAL_LM")
    peft_tree = get_peft_model(tree, lora, autocast_adapter_dtype=False)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # a fine-tuned state: non-zero LoRA B, changed projector and heads, bf16 values
        for name, p in peft_tree.named_parameters():
            if "lora_" in name or "modules_to_save" in name:
                p.copy_((torch.randn(p.shape, generator=g) * 0.2).to(torch.bfloat16))
    peft_tree.save_pretrained(str(folder), save_embedding_layers=False)  # no lookup of the base's name
    saved = load_file(str(folder / "adapter_model.safetensors"))
    wrapped = [m for m in modules_to_save if m != "connector"]
    saved = {_with_wrapper(k, wrapped) if wrapper_segment else k: v.to(torch.bfloat16) for k, v in saved.items()}
    save_file(saved, str(folder / "adapter_model.safetensors"), metadata={"format": "pt"})
    (folder / "adapter_config.json").write_text(json.dumps(peft012_adapter_config(modules_to_save=modules_to_save),
                                                           indent=2, sort_keys=True) + "\n")
    return peft_tree.eval()


def _with_wrapper(key: str, modules: list[str]) -> str:
    for module in modules:
        key = re.sub(rf"(\.{module})\.", r"\1.modules_to_save.default.", key, count=1)
    return key


def edit_adapter(folder: Path, edit) -> None:
    """Apply `edit(dict) -> dict` to an adapter's tensors."""
    path = folder / "adapter_model.safetensors"
    save_file(edit(load_file(str(path))), str(path), metadata={"format": "pt"})
