"""Every published checkpoint layout loads, every tensor is accounted for, outputs match an independent forward.

Fixtures come from `published_checkpoints` (plain transformers / safetensors / peft writes, never our save path).
The reference is transformers' own `LlavaOnevisionForConditionalGeneration` loaded from the same folder, the LoRA
merged by hand (W + alpha / r * B @ A), the heads applied by hand to its final hidden states.
"""

from __future__ import annotations

import json
import re
import shutil
import warnings
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, get_peft_model
from safetensors import safe_open
from safetensors.torch import load_file
from transformers import LlavaOnevisionForConditionalGeneration

from mmduet_core.errors import InputError
from mmduet_core.model import DuetModel, positive_probability
from mmduet_core.model.checkpoint import (
    OUR_LORA_TARGETS,
    CheckpointNotFoundError,
    MissingHeadsError,
    base_weight_files,
    detect_base_layout,
    load_model,
    map_adapter_key,
    published_config,
    published_config_dict,
    resolve_checkpoint,
    save_model,
)
from mmduet_core.model.template import DEFAULT_SYSTEM_PROMPT, render

from .published_checkpoints import (
    edit_adapter,
    peft012_adapter_config,
    rewrite_tensors,
    write_llava_hf_base,
    write_released_adapter,
    write_transformers5_base,
)

TOL = 1e-5
_HEAD_OF = {"response_head": "informative", "informative_head": "informative",
            "related_head": "relevance", "relevance_head": "relevance"}


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("published")
    hub = write_llava_hf_base(root / "llava-hf")
    tree = write_released_adapter(root / "adapter", hub)
    return {"root": root, "llava-hf": hub, "transformers-5": write_transformers5_base(root / "t5", hub),
            "adapter": root / "adapter", "tree": tree}


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _inputs(tokenizer, n_frames: int = 2, seed: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    text = render(tokenizer, [{"role": "system", "content": DEFAULT_SYSTEM_PROMPT},
                              {"role": "user", "content": "What is happening?"},
                              {"role": "stream", "num_frames": n_frames}])
    ids = tokenizer(text, return_tensors="pt", add_special_tokens=False).input_ids
    g = torch.Generator().manual_seed(seed)
    return ids, torch.randint(0, 256, (n_frames, 3, 54, 54), generator=g, dtype=torch.uint8)


# ---- the independent reference ----------------------------------------------------------------------------------

def _merge_adapter_by_hand(ref, adapter: Path) -> dict[str, torch.Tensor]:
    """LoRA merged, projector replaced; returns the head matrices. Upstream key names parsed here directly."""
    cfg = json.loads((adapter / "adapter_config.json").read_text())
    scale = cfg["lora_alpha"] / cfg["r"]
    saved = {k: v.float() for k, v in load_file(str(adapter / "adapter_model.safetensors")).items()}
    params, heads = dict(ref.named_parameters()), {}
    wrap = r"(?:modules_to_save\.default\.)?"
    with torch.no_grad():
        for key, value in saved.items():
            if m := re.fullmatch(r"base_model\.model\.model\.layers\.(\d+)\.(self_attn|mlp)\.(\w+)\.lora_A\.weight", key):
                b = saved[key.replace("lora_A", "lora_B")]
                params[f"model.language_model.layers.{m[1]}.{m[2]}.{m[3]}.weight"] += scale * b @ value
            elif m := re.fullmatch(rf"base_model\.model\.model\.mm_projector\.{wrap}([02])\.(weight|bias)", key):
                params[f"model.multi_modal_projector.linear_{1 if m[1] == '0' else 2}.{m[2]}"].copy_(value)
            elif m := re.fullmatch(rf"base_model\.model\.(\w+_head)\.{wrap}weight", key):
                heads[_HEAD_OF[m[1]]] = value
    return heads


def _bilinear_7x7(feats: torch.Tensor) -> torch.Tensor:
    """(F, 729, D) -> (F, 49, D): bilinear resampling written as explicit sampling (align_corners False)."""
    f, n, d = feats.shape
    side = round(n ** 0.5)
    grid = feats.view(f, side, side, d)
    c = (torch.arange(7, dtype=torch.float64) + 0.5) * side / 7 - 0.5
    lo, w = c.floor().long(), (c - c.floor()).float()
    rows = grid[:, lo] * (1 - w)[None, :, None, None] + grid[:, lo + 1] * w[None, :, None, None]
    cols = rows[:, :, lo] * (1 - w)[None, None, :, None] + rows[:, :, lo + 1] * w[None, None, :, None]
    return cols.reshape(f, 49, d)


_REFERENCES: dict[tuple, tuple] = {}  # the same folders and inputs give the same reference: compute it once


def reference_forward(base: Path, adapter: Path | None, ids: torch.Tensor, frames: torch.Tensor,
                      heads_file: Path | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """LM logits (1, T, V) and head logits {"informative", "relevance"} (1, T, 2) from the vanilla class."""
    key = (base, adapter, heads_file, tuple(ids.flatten().tolist()), hash(frames.numpy().tobytes()))
    if key not in _REFERENCES:
        _REFERENCES[key] = _reference_forward(base, adapter, ids, frames, heads_file)
    return _REFERENCES[key]


def _reference_forward(base, adapter, ids, frames, heads_file):
    ref = LlavaOnevisionForConditionalGeneration.from_pretrained(str(base), dtype=torch.float32).eval()
    heads = _merge_adapter_by_hand(ref, adapter) if adapter else {}
    if heads_file is not None:
        saved = load_file(str(heads_file))
        heads = {"informative": saved["informative_head.weight"], "relevance": saved["relevance_head.weight"]}
    with torch.no_grad():
        hidden = ref.model.vision_tower(frames.float() / 127.5 - 1, output_hidden_states=True).hidden_states[-1]
        visual = _bilinear_7x7(ref.model.multi_modal_projector(hidden))
        embeds = ref.get_input_embeddings()(ids).clone()
        embeds[ids == ref.config.image_token_id] = visual.reshape(-1, visual.shape[-1])
        h = ref.model.language_model(inputs_embeds=embeds).last_hidden_state
        return ref.lm_head(h), {name: h @ w.float().T for name, w in heads.items()}


def assert_matches_reference(model, tokenizer, base: Path, adapter: Path | None, heads_file: Path | None = None):
    ids, frames = _inputs(tokenizer)
    ref_logits, ref_heads = reference_forward(base, adapter, ids, frames, heads_file)
    with torch.no_grad():
        out = model(input_ids=ids, frames=frames)
    assert (out.logits - ref_logits).abs().max() <= TOL
    ends = (ids[0] == model.config.image_token_id).nonzero().flatten()[48::49]
    for name, theirs in ref_heads.items():
        ours = getattr(out, f"{name}_logits")
        assert (positive_probability(ours[0, ends]) - positive_probability(theirs[0, ends])).abs().max() <= TOL
        assert (ours - theirs).abs().max() <= TOL
    return out


# ---- the fixtures are the published layouts ----------------------------------------------------------------------

def test_fixtures_hold_the_published_layouts(ckpt):
    hub, t5 = base_weight_files(ckpt["llava-hf"]), base_weight_files(ckpt["transformers-5"])
    assert "language_model.lm_head.weight" in hub and "image_newline" in hub
    assert any(k.startswith("vision_tower.vision_model.encoder.") for k in hub)
    assert len(set(hub.values())) == 2  # sharded with an index, as on the hub
    # transformers 5.24's own save of the vanilla class: the same names without `vision_model.`
    assert "language_model.lm_head.weight" in t5 and "language_model.model.norm.weight" in t5
    assert any(k.startswith("vision_tower.encoder.") for k in t5)
    assert not any(k.startswith("vision_tower.vision_model.") for k in t5)
    assert (detect_base_layout(hub), detect_base_layout(t5)) == ("llava-hf", "transformers-5")
    published = json.loads((ckpt["llava-hf"] / "config.json").read_text())
    assert set(published) == set(published_config_dict())  # every published field, tiny values
    with safe_open(str(ckpt["adapter"] / "adapter_model.safetensors"), "pt") as f:
        keys = set(f.keys())  # noqa: SIM118
    assert "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight" in keys
    assert {"base_model.model.model.mm_projector.0.weight", "base_model.model.response_head.weight"} <= keys
    assert json.loads((ckpt["adapter"] / "adapter_config.json").read_text()) == peft012_adapter_config()


def test_published_7b_config():
    config = published_config()
    text, vision = config.text_config, config.vision_config
    assert (text.hidden_size, text.num_hidden_layers, text.num_attention_heads, text.num_key_value_heads) == (3584, 28, 28, 4)
    assert (text.vocab_size, config.image_token_id, config.video_token_id) == (152128, 151646, 151647)
    assert (vision.num_hidden_layers, vision.image_size, vision.patch_size, vision.hidden_size) == (26, 384, 14, 1152)
    assert (config.vision_feature_layer, config.vision_feature_select_strategy) == (-1, "full")
    raw = published_config_dict()
    for name in ("image_token_index", "video_token_index", "vision_aspect_ratio", "image_grid_pinpoints",
                 "use_image_newline_parameter", "projector_hidden_act", "torch_dtype", "transformers_version"):
        assert name in raw
    assert raw["text_config"]["_name_or_path"] == "Qwen/Qwen2-7B-Instruct" and len(raw["image_grid_pinpoints"]) == 36


# ---- loading every layout -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("layout", ["llava-hf", "transformers-5"])
def test_base_with_released_adapter_matches_reference(ckpt, layout):
    model, tokenizer = load_model(ckpt[layout], adapter=ckpt["adapter"], dtype="float32", device="cpu")
    assert_matches_reference(model, tokenizer, ckpt[layout], ckpt["adapter"])
    report = model.load_report
    assert report.base_layout == layout and report.random_heads == []
    assert report.head_keys == {"informative_head": "base_model.model.response_head.weight",
                                "relevance_head": "base_model.model.related_head.weight"}
    assert report.lora_tensors == 2 * 7 * 2 and report.lora_modules == 14 and report.lora_scale == 2.0
    assert report.group("projector").source == "adapter" and report.group("lm_head").source == "base"
    lines = str(report).splitlines()
    for group in ("vision tower", "projector", "language model", "lm_head", "image_newline", "LoRA",
                  "informative_head", "relevance_head"):
        assert sum(line.strip().startswith(group + " ") for line in lines) == 1, group
    assert any("merged into 14 modules" in line for line in lines)


@pytest.mark.parametrize("layout", ["llava-hf", "transformers-5"])
def test_bare_base_warns_and_reports_random_heads(ckpt, layout):
    with pytest.warns(UserWarning, match="heads are random"):
        model, tokenizer = load_model(ckpt[layout], dtype="float32", device="cpu")
    assert_matches_reference(model, tokenizer, ckpt[layout], None)  # LM logits; heads are random
    assert model.load_report.random_heads == ["informative_head", "relevance_head"]
    assert model.load_report.group("informative_head").source == "random"
    assert "RANDOM" in str(model.load_report)
    assert tokenizer.convert_tokens_to_ids("<image>") == model.config.image_token_id


def test_our_saved_models_round_trip(ckpt):
    """save_model keeps the names the base was read with (transformers 5 reverses its load renames) and adds
    the heads; a model built in this process is saved under its module paths. Both load to the same numbers."""
    merged, tokenizer = load_model(ckpt["llava-hf"], adapter=ckpt["adapter"], dtype="float32", device="cpu")
    built_here = DuetModel(merged.config)
    built_here.load_state_dict(merged.state_dict())
    for name, net, layout in (("ours-hub", merged, "llava-hf"), ("ours-built", built_here, "model")):
        folder = save_model(net, tokenizer, ckpt["root"] / name)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # heads come from the file: no random-heads warning
            model, tok = load_model(folder, dtype="float32", device="cpu")
        assert (model.load_report.base_layout, model.load_report.base_heads) == (layout, True)
        assert model.load_report.group("relevance_head").source == "base"
        # the numbers of the published base + adapter, and of the vanilla class reading our folder
        assert_matches_reference(model, tok, ckpt["llava-hf"], ckpt["adapter"])
        assert_matches_reference(model, tok, folder, None, heads_file=folder / "model.safetensors")


@pytest.mark.parametrize(("heads", "wrapper"), [(("informative_head", "relevance_head"), False),
                                                (("response_head", "related_head"), True)])
def test_adapter_head_names_and_wrapper_segment(ckpt, tmp_path, heads, wrapper):
    adapter = tmp_path / "adapter"
    write_released_adapter(adapter, ckpt["llava-hf"], head_names=heads,
                           modules_to_save=["connector", "mm_projector", *heads], wrapper_segment=wrapper)
    model, tokenizer = load_model(ckpt["llava-hf"], adapter=adapter, dtype="float32", device="cpu")
    assert_matches_reference(model, tokenizer, ckpt["llava-hf"], adapter)
    segment = ".modules_to_save.default" if wrapper else ""
    assert model.load_report.head_keys["informative_head"] == f"base_model.model.{heads[0]}{segment}.weight"


def test_released_adapter_matches_upstreams_own_tree(ckpt):
    """A second, different reference: upstream's module tree holding the base's weights, its LoRA injected by
    peft (not merged), computing frames, pooling and heads its own way."""
    model, tokenizer = load_model(ckpt["llava-hf"], adapter=ckpt["adapter"], dtype="float32", device="cpu")
    ids, frames = _inputs(tokenizer)
    with torch.no_grad():
        ref_logits, ref_inf, ref_rel = ckpt["tree"].get_base_model()(ids, frames)
        out = model(input_ids=ids, frames=frames)
    assert (out.logits - ref_logits).abs().max() <= TOL
    ends = (ids[0] == model.config.image_token_id).nonzero().flatten()[48::49]
    for ours, theirs in ((out.informative_logits, ref_inf), (out.relevance_logits, ref_rel)):
        assert (positive_probability(ours[0, ends]) - positive_probability(theirs[0, ends])).abs().max() <= TOL


def test_our_trained_adapter_round_trips_heads_included(ckpt, tmp_path):
    """What our training saves (peft on our tree: LoRA, projector and both heads) loads back exactly."""
    with pytest.warns(UserWarning, match="heads are random"):
        base, tokenizer = load_model(ckpt["transformers-5"], dtype="float32", device="cpu")
    peft_model = get_peft_model(base.requires_grad_(True), LoraConfig(
        r=4, lora_alpha=8, target_modules=OUR_LORA_TARGETS,
        modules_to_save=["multi_modal_projector", "informative_head", "relevance_head"]))
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in peft_model.parameters():
            if p.requires_grad:
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    save_model(peft_model, tokenizer, tmp_path / "ours")
    model, _ = load_model(ckpt["transformers-5"], adapter=tmp_path / "ours", dtype="float32", device="cpu")
    assert model.load_report.head_keys == {"informative_head": "base_model.model.informative_head.weight",
                                           "relevance_head": "base_model.model.relevance_head.weight"}
    ids, frames = _inputs(tokenizer)
    with torch.no_grad():
        a, b = model(input_ids=ids, frames=frames), peft_model.eval()(input_ids=ids, frames=frames)
    for name in ("logits", "informative_logits", "relevance_logits"):
        assert (getattr(a, name) - getattr(b, name)).abs().max() <= TOL


def test_unmerged_adapter_gives_the_same_numbers(ckpt):
    merged, tokenizer = load_model(ckpt["llava-hf"], adapter=ckpt["adapter"], dtype="float32", device="cpu")
    peft_model, _ = load_model(ckpt["llava-hf"], adapter=ckpt["adapter"], dtype="float32", device="cpu",
                               merge_lora=False)
    ids, frames = _inputs(tokenizer)
    with torch.no_grad():
        a, b = merged(input_ids=ids, frames=frames), peft_model(input_ids=ids, frames=frames)
    assert (a.logits - b.logits).abs().max() <= TOL
    assert (a.informative_logits - b.informative_logits).abs().max() <= TOL


def test_adapter_names_no_base_that_is_resolved(ckpt, monkeypatch):
    """The adapter names lmms-lab's original repository; nothing may look it up."""
    import huggingface_hub

    def refuse(*args, **kwargs):
        raise AssertionError(f"hub lookup {args} {kwargs}")

    for name in ("snapshot_download", "hf_hub_download"):
        monkeypatch.setattr(huggingface_hub, name, refuse)
    model, _ = load_model(ckpt["llava-hf"], adapter=ckpt["adapter"], dtype="float32", device="cpu")
    assert model.load_report.adapter == str(ckpt["adapter"])


# ---- every tensor accounted for -----------------------------------------------------------------------------------

@pytest.mark.parametrize(("name", "module_path"), [
    ("language_model.model.layers.1.mlp.up_proj.weight", "model.language_model.layers.1.mlp.up_proj.weight"),
    ("language_model.lm_head.weight", "lm_head.weight"),
    ("vision_tower.vision_model.encoder.layers.0.self_attn.q_proj.bias",
     "model.vision_tower.encoder.layers.0.self_attn.q_proj.bias")])
def test_base_missing_a_tensor_names_it(ckpt, tmp_path, name, module_path):
    base = _copy(ckpt["llava-hf"], tmp_path / "base")
    rewrite_tensors(base, lambda state: {k: v for k, v in state.items() if k != name})
    with pytest.raises(InputError, match=rf"1 missing: {re.escape(module_path)}$"):
        load_model(base, adapter=ckpt["adapter"], dtype="float32", device="cpu")


def test_base_with_an_extra_tensor_fails(ckpt, tmp_path):
    base = _copy(ckpt["llava-hf"], tmp_path / "base")
    extra = "language_model.model.layers.7.mlp.up_proj.weight"
    rewrite_tensors(base, lambda state: {**state, extra: torch.zeros(2, 2, dtype=torch.float16)})
    with pytest.raises(InputError, match=r"1 unexpected: \S*layers\.7\.mlp\.up_proj\.weight"):
        load_model(base, dtype="float32", device="cpu")


def test_base_with_a_misshapen_tensor_fails(ckpt, tmp_path):
    base = _copy(ckpt["transformers-5"], tmp_path / "base")
    name = "multi_modal_projector.linear_2.bias"
    rewrite_tensors(base, lambda state: {**state, name: torch.zeros(3)})
    with pytest.raises(InputError, match=r"wrong shape.*multi_modal_projector\.linear_2\.bias"):
        load_model(base, adapter=ckpt["adapter"], dtype="float32", device="cpu")


@pytest.mark.parametrize("name", ["base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight",
                                  "base_model.model.model.layers.0.mlp.down_proj.lora_A.weight",
                                  "base_model.model.model.mm_projector.2.bias"])
def test_adapter_missing_a_tensor_names_it(ckpt, tmp_path, name):
    adapter = _copy(ckpt["adapter"], tmp_path / "adapter")
    edit_adapter(adapter, lambda state: {k: v for k, v in state.items() if k != name})
    with pytest.raises(InputError, match=rf"1 missing: {re.escape(name)}"):
        load_model(ckpt["llava-hf"], adapter=adapter, dtype="float32", device="cpu")


@pytest.mark.parametrize("name", ["base_model.model.model.layers.0.self_attn.q_proj.lora_C.weight",
                                  "base_model.model.model.foo.weight", "base_model.model.lm_head.bias"])
def test_adapter_with_an_unexpected_tensor_fails(ckpt, tmp_path, name):
    adapter = _copy(ckpt["adapter"], tmp_path / "adapter")
    edit_adapter(adapter, lambda state: {**state, name: torch.zeros(4, 4, dtype=torch.bfloat16)})
    with pytest.raises(InputError, match=rf"unexpected: .*{re.escape(name)}"):
        load_model(ckpt["llava-hf"], adapter=adapter, dtype="float32", device="cpu")


def test_released_config_with_heads_it_does_not_name_fails_loudly(ckpt, tmp_path):
    """The released modules_to_save names response_head / related_head; a tree whose heads are called
    informative_head / relevance_head saves no head at all, and that adapter must not load."""
    adapter = tmp_path / "adapter"
    write_released_adapter(adapter, ckpt["llava-hf"], head_names=("informative_head", "relevance_head"))
    with safe_open(str(adapter / "adapter_model.safetensors"), "pt") as f:
        assert not any("_head" in k for k in f.keys())  # noqa: SIM118
    with pytest.raises(MissingHeadsError, match=r"informative_head\.weight.*relevance_head\.weight"):
        load_model(ckpt["llava-hf"], adapter=adapter, dtype="float32", device="cpu")


def test_pickle_only_base_is_refused_in_one_line(ckpt, tmp_path):
    base = tmp_path / "base"
    base.mkdir()
    shutil.copy(ckpt["llava-hf"] / "config.json", base)
    (base / "pytorch_model.bin").write_bytes(b"never unpickled")
    with pytest.raises(InputError, match="pickle") as info:
        load_model(base, device="cpu")
    assert "\n" not in str(info.value)


def test_pickle_adapters_are_refused(ckpt, tmp_path):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps(peft012_adapter_config()))
    (adapter / "adapter_model.bin").write_bytes(b"never unpickled")
    with pytest.raises(InputError, match="pickle"):
        load_model(ckpt["llava-hf"], adapter=adapter, dtype="float32", device="cpu")


def test_offline_missing_checkpoint_is_one_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(CheckpointNotFoundError, match=r"not in the Hugging Face cache.*hf download"):
        resolve_checkpoint("someone/not-downloaded", what="base model")
    with pytest.raises(CheckpointNotFoundError, match="no such folder"):
        resolve_checkpoint(tmp_path / "nothing-here")


def test_adapter_key_mapping():
    assert map_adapter_key("base_model.model.model.layers.3.self_attn.q_proj.lora_A.weight") == \
        "model.language_model.layers.3.self_attn.q_proj.lora_A.weight"
    assert map_adapter_key("base_model.model.model.mm_projector.2.bias") == "model.multi_modal_projector.linear_2.bias"
    assert map_adapter_key("base_model.model.model.mm_projector.modules_to_save.default.0.weight") == \
        "model.multi_modal_projector.linear_1.weight"
    assert map_adapter_key("base_model.model.response_head.modules_to_save.default.weight") == "informative_head.weight"
    assert map_adapter_key("base_model.model.related_head.weight") == "relevance_head.weight"
    assert map_adapter_key("base_model.model.model.informative_head.weight") == "informative_head.weight"


def test_base_without_tokenizer_is_one_clear_error(ckpt, tmp_path):
    base = _copy(ckpt["llava-hf"], tmp_path / "base")
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        (base / name).unlink(missing_ok=True)
    with pytest.raises(InputError, match="no tokenizer"):
        load_model(base, adapter=ckpt["adapter"], dtype="float32", device="cpu")


def test_original_llava_next_format_is_refused():
    with pytest.raises(InputError, match="original LLaVA-NeXT"):
        detect_base_layout(["model.layers.0.self_attn.q_proj.weight", "model.mm_projector.0.weight"])


# ---- the GPU check, at tiny scale on the CPU --------------------------------------------------------------------

def test_gpu_check_runs_at_tiny_scale(tmp_path, capsys):
    from mmduet_core.cli import main

    code = main(["doctor", "--gpu", "--scale", "tiny", "--frames", "6", "--base", str(tmp_path / "no-base"),
                 "--adapter", str(tmp_path / "no-adapter")])
    assert code == 0
    result = json.loads(capsys.readouterr().out)  # exactly one JSON object
    assert (result["scale"], result["frames"], result["model"]["tokens_per_frame"]) == ("tiny", 6, 49)
    sdpa = result["grounding"]["sdpa"]
    assert sdpa["prefill"]["frames_per_s"] > 0 and sdpa["sequential"]["frames_per_s"] > 0
    assert result["encode"]["frames_per_s"] > 0 and result["memory"]["peak_rss_gib"] > 0
    fp32 = result["agreement"]["bf16_vs_fp32"]
    assert fp32["layers"] == "2 of 2" and max(fp32["fp32_prefill_vs_sequential_max_abs_dp"].values()) < 1e-5
    assert 0 < max(fp32["max_abs_dp"].values()) < 0.05  # bf16 rounding moves the scores, a little
    assert max(sdpa["prefill_vs_sequential_max_abs_dp"].values()) < 0.05
    assert "skipped" in result["agreement"]["flash_vs_sdpa"] and "skipped" in result["real_weights"]


def test_gpu_check_7b_needs_a_gpu(capsys):
    from mmduet_core.cli import main

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert main(["doctor", "--gpu", "--scale", "7b"]) == 2
    assert "needs a CUDA GPU" in capsys.readouterr().err


def test_gpu_check_compares_fp32_on_a_shallower_copy_when_memory_is_short(monkeypatch, tmp_path):
    from mmduet_core.tools import gpucheck

    monkeypatch.setattr(gpucheck, "_free_memory", lambda device: 5e5)  # bytes: less than the tiny fp32 model
    result = gpucheck.run_gpu_check(scale="tiny", frames=3, device="cpu", sequential=False,
                                    base=str(tmp_path / "no-base"), adapter=tmp_path / "no-adapter")
    fp32 = result["agreement"]["bf16_vs_fp32"]
    assert fp32["layers"] == "1 of 2" and "shallower copy" in fp32["note"]
    assert result["model"]["text_layers"] == 2 and "sequential" not in result["grounding"]["sdpa"]
