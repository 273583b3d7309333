"""DuetModel on tiny random configs: frame tokens, losses, gradients, and checkpoint equivalence with a
reference built in upstream's module tree and saved by peft itself."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from peft import LoraConfig, get_peft_model
from torch import nn
from transformers import Qwen2ForCausalLM, Qwen2Model, SiglipVisionModel

from mmduet_core.checkpoint import (
    UPSTREAM_LORA_TARGETS,
    CheckpointNotFoundError,
    MissingHeadsError,
    load_model,
    map_adapter_key,
    resolve_checkpoint,
    save_model,
    tiny_config,
)
from mmduet_core.model import IGNORE_INDEX, DuetModel, positive_probability
from mmduet_core.template import DEFAULT_SYSTEM_PROMPT, render, train_tokenizer


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer([DEFAULT_SYSTEM_PROMPT, "What is happening? A red car drives away."] * 3, vocab_size=300)


@pytest.fixture(scope="module")
def config(tok):
    return tiny_config(len(tok), tok.convert_tokens_to_ids("<image>"))


def _frames(n: int, seed: int = 0, size: int = 54) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8)


def _ids(tok, frames: int, query: str = "What is happening?") -> torch.Tensor:
    text = render(tok, [{"role": "system", "content": DEFAULT_SYSTEM_PROMPT}, {"role": "user", "content": query},
                        {"role": "stream", "num_frames": frames}])
    return tok(text, return_tensors="pt", add_special_tokens=False).input_ids


def test_49_tokens_per_frame_from_27x27_grid_with_stride_4(config):
    torch.manual_seed(0)
    model = DuetModel(config).eval()
    assert model.frame_grid_side == 27 and model.frame_num_tokens == 49
    assert model.encode_frames(_frames(3)).shape == (3, 49, config.text_config.hidden_size)


def test_bilinear_pooling_samples_the_spec_positions(config):
    """Spec §2.2: output i samples the grid at (i + 0.5) * 27 / 7 - 0.5, bilinearly between neighbours."""
    model = DuetModel(config)
    side, out = 27, 7
    coords = (np.arange(out) + 0.5) * side / out - 0.5
    np.testing.assert_allclose(coords, [1.43, 5.29, 9.14, 13.0, 16.86, 20.71, 24.57], atol=0.01)
    grid = torch.randn(2, side * side, 5, dtype=torch.float64)
    pooled = model.pool_frame_grid(grid.float()).double()  # (2, 49, 5)
    g = grid.view(2, side, side, 5).numpy()
    lo = np.floor(coords).astype(int)
    w = coords - lo
    expected = np.zeros((2, out, out, 5))
    for i in range(out):
        for j in range(out):
            a, b = lo[i], lo[j]
            expected[:, i, j] = ((1 - w[i]) * (1 - w[j]) * g[:, a, b] + (1 - w[i]) * w[j] * g[:, a, b + 1]
                                 + w[i] * (1 - w[j]) * g[:, a + 1, b] + w[i] * w[j] * g[:, a + 1, b + 1])
    np.testing.assert_allclose(pooled.numpy(), expected.reshape(2, 49, 5), atol=1e-5)


@pytest.mark.parametrize(("mode", "tokens"), [("average", 36), ("max", 36)])
def test_other_pooling_modes(tok, mode, tokens):
    config = tiny_config(len(tok), tok.convert_tokens_to_ids("<image>"), pooling_mode=mode)
    model = DuetModel(config).eval()
    assert model.frame_num_tokens == tokens
    assert model.encode_frames(_frames(2)).shape[1] == tokens


def test_pixels_are_mapped_to_minus_one_one(config):
    model = DuetModel(config).eval()
    frames = _frames(2)
    with torch.no_grad():
        a = model.encode_frames(frames)
        b = model.encode_frames(frames.float() / 127.5 - 1)
    torch.testing.assert_close(a, b)


def test_frames_fill_placeholders_in_order(tok, config):
    model = DuetModel(config).eval()
    ids = _ids(tok, 2)
    embeds = torch.randn(2, 49, config.text_config.hidden_size)
    merged = model.embed_inputs(ids, embeds)
    positions = (ids[0] == config.image_token_id).nonzero().flatten()
    assert len(positions) == 98 and (positions.diff() == 1).all()  # consecutive, no separator
    torch.testing.assert_close(merged[0, positions], embeds.reshape(98, -1))
    with pytest.raises(ValueError, match="placeholders"):
        model.embed_inputs(ids, embeds[:1])


def _labels(ids: torch.Tensor, config, n_frames: int):
    informative = torch.full_like(ids, IGNORE_INDEX)
    relevance = torch.full_like(ids, IGNORE_INDEX)
    last_tokens = (ids[0] == config.image_token_id).nonzero().flatten()[48::49]
    assert len(last_tokens) == n_frames
    informative[0, last_tokens] = torch.tensor([0, 1, 1][:n_frames])
    relevance[0, last_tokens] = torch.tensor([1, 0, 1][:n_frames])
    return informative, relevance


def test_losses_and_gradients_reach_lora_and_heads(tok, config):
    """Both head losses flow into LoRA and heads: one optimiser step changes them (upstream B1 fixed)."""
    torch.manual_seed(0)
    model = DuetModel(config)
    peft = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=UPSTREAM_LORA_TARGETS.replace(
        r"model\.layers", r"model\.language_model\.layers"), modules_to_save=["informative_head", "relevance_head"]))
    ids = _ids(tok, 3)
    informative, relevance = _labels(ids, config, 3)
    labels = torch.full_like(ids, IGNORE_INDEX)
    out = peft(input_ids=ids, frames=_frames(3), labels=labels, informative_labels=informative,
               relevance_labels=relevance)
    # the video loss is one mean over 6 labelled positions of both heads
    inf_logits, rel_logits = out.informative_logits[0], out.relevance_logits[0]
    mask = informative[0] != IGNORE_INDEX
    expected = nn.functional.cross_entropy(torch.cat([inf_logits[mask], rel_logits[mask]]),
                                           torch.cat([informative[0][mask], relevance[0][mask]]))
    torch.testing.assert_close(out.video_loss, expected)
    assert out.lm_loss is not None and torch.isfinite(out.loss)
    out.video_loss.backward()
    named = dict(peft.named_parameters())
    lora_b = [n for n in named if "lora_B" in n]
    heads = [n for n in named if "head" in n and named[n].requires_grad]
    assert lora_b and len(heads) == 2
    # lora_B starts at zero so its gradient is the first to be non-zero
    assert any(named[n].grad is not None and named[n].grad.abs().sum() > 0 for n in lora_b)
    assert all(named[n].grad.abs().sum() > 0 for n in heads)
    before = {n: named[n].detach().clone() for n in lora_b + heads}
    torch.optim.SGD([p for p in peft.parameters() if p.requires_grad], lr=0.1).step()
    assert all(not torch.equal(before[n], named[n]) for n in heads)
    assert any(not torch.equal(before[n], named[n]) for n in lora_b)


def test_label_free_batch_uses_forced_targets(tok, config):
    """Spec §2.5/B11: no LM label -> position 0 predicts token 1; no head label -> position 0 is 'negative'."""
    torch.manual_seed(0)
    model = DuetModel(config)
    ids = _ids(tok, 1)
    none = torch.full_like(ids, IGNORE_INDEX)
    out = model(input_ids=ids, frames=_frames(1), labels=none, informative_labels=none, relevance_labels=none)
    lm = nn.functional.cross_entropy(out.logits[0, :1], ids[0, 1:2])
    video = nn.functional.cross_entropy(torch.cat([out.informative_logits[0, :1], out.relevance_logits[0, :1]]),
                                        torch.zeros(2, dtype=torch.long))
    torch.testing.assert_close(out.lm_loss, lm)
    torch.testing.assert_close(out.video_loss, video)


# ---- checkpoint equivalence with upstream's module tree -------------------------------------------------------

class _UpstreamVisionTower(nn.Module):
    """LLaVA's SigLipVisionTower: `.vision_tower` is the SigLIP model with its last layer deleted."""

    def __init__(self, vision_config):
        super().__init__()
        cfg = vision_config.__class__(**{**vision_config.to_dict(), "num_hidden_layers": vision_config.num_hidden_layers + 1})
        self.vision_tower = SiglipVisionModel(cfg)
        del self.vision_tower.encoder.layers[-1]


class _UpstreamInner(Qwen2Model):
    """Upstream's `model`: Qwen2 (`layers`, `embed_tokens`, `norm`) plus `vision_tower` and `mm_projector`."""

    def __init__(self, config):
        super().__init__(config.text_config)
        self.vision_tower = _UpstreamVisionTower(config.vision_config)
        d_v, d = config.vision_config.hidden_size, config.text_config.hidden_size
        self.mm_projector = nn.Sequential(nn.Linear(d_v, d), nn.GELU(), nn.Linear(d, d))


class _UpstreamMMDuet(Qwen2ForCausalLM):
    """A reference in upstream's names (a Qwen2 causal LM whose `model` also holds the vision parts), written
    from the spec (§2.2-2.4) with transformers parts only."""

    def __init__(self, config, head_names=("response_head", "related_head")):
        super().__init__(config.text_config)
        self.image_token_id = config.image_token_id
        self.model = _UpstreamInner(config)
        d = config.text_config.hidden_size
        self.head_names = head_names
        for name in head_names:
            setattr(self, name, nn.Linear(d, 2, bias=False))

    def forward(self, input_ids, frames):
        x = frames.float() / 127.5 - 1
        hidden = self.model.vision_tower.vision_tower(x, output_hidden_states=True).hidden_states[-1]
        feats = self.model.mm_projector(hidden)  # (F, 729, D)
        # bilinear 27 -> 7 written as explicit sampling (independent of F.interpolate)
        f, n, d = feats.shape
        side = int(math.isqrt(n))
        grid = feats.view(f, side, side, d)
        c = (torch.arange(7, dtype=torch.float64) + 0.5) * side / 7 - 0.5
        lo = c.floor().long()
        w = (c - lo).float()
        rows = grid[:, lo] * (1 - w)[None, :, None, None] + grid[:, lo + 1] * w[None, :, None, None]
        pooled = rows[:, :, lo] * (1 - w)[None, None, :, None] + rows[:, :, lo + 1] * w[None, None, :, None]
        visual = pooled.reshape(f * 49, d)
        embeds = self.model.embed_tokens(input_ids).clone()
        embeds[input_ids == self.image_token_id] = visual
        h = Qwen2Model.forward(self.model, inputs_embeds=embeds).last_hidden_state
        heads = [getattr(self, name)(h) for name in self.head_names]
        return self.lm_head(h), heads[0], heads[1]


def _randomise(module: nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)


def _write_upstream_checkpoint(tmp_path, tok, config, head_names, modules_to_save):
    """Base (hf format, our DuetModel's save_pretrained) and a peft adapter saved from the upstream tree."""
    torch.manual_seed(0)
    ref = _UpstreamMMDuet(config, head_names)
    _randomise(ref, 1)
    base = DuetModel(config)
    own = base.state_dict()
    with torch.no_grad():  # the base checkpoint: the same weights before fine-tuning
        for key, value in ref.model.vision_tower.vision_tower.state_dict().items():
            own[f"model.vision_tower.{key}"].copy_(value)
        for key, value in Qwen2Model.state_dict(ref.model).items():
            if not key.startswith(("vision_tower", "mm_projector")):
                own[f"model.language_model.{key}"].copy_(value)
        own["model.multi_modal_projector.linear_1.weight"].copy_(ref.model.mm_projector[0].weight)
        own["model.multi_modal_projector.linear_1.bias"].copy_(ref.model.mm_projector[0].bias)
        own["model.multi_modal_projector.linear_2.weight"].copy_(ref.model.mm_projector[2].weight)
        own["model.multi_modal_projector.linear_2.bias"].copy_(ref.model.mm_projector[2].bias)
        own["lm_head.weight"].copy_(ref.lm_head.weight)
    base_dir = tmp_path / "base"
    save_model(base, tok, base_dir)

    peft_ref = get_peft_model(ref, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.05, target_modules=UPSTREAM_LORA_TARGETS,
                                              modules_to_save=modules_to_save, task_type="CAUSAL_LM"),
                              autocast_adapter_dtype=False)
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():  # fine-tuned state: non-zero LoRA, changed projector and heads
        for name, p in peft_ref.named_parameters():
            if "lora_" in name or "modules_to_save" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    adapter_dir = tmp_path / "adapter"
    peft_ref.save_pretrained(str(adapter_dir))
    return peft_ref.eval(), base_dir, adapter_dir


@pytest.mark.parametrize("head_names", [("response_head", "related_head"), ("informative_head", "relevance_head")])
def test_released_adapter_layout_loads_to_the_same_outputs(tmp_path, tok, config, head_names):
    modules = ["connector", "mm_projector", *head_names]
    ref, base_dir, adapter_dir = _write_upstream_checkpoint(tmp_path, tok, config, head_names, modules)
    saved = json.loads((adapter_dir / "adapter_config.json").read_text())
    assert saved["target_modules"] == UPSTREAM_LORA_TARGETS
    model, tokenizer = load_model(base_dir, adapter=adapter_dir, dtype="float32", device="cpu")
    assert set(model.load_report.head_keys) == {"informative_head", "relevance_head"}
    assert model.load_report.lora_tensors == 2 * 7 * config.text_config.num_hidden_layers
    ids, frames = _ids(tokenizer, 3), _frames(3, seed=5)
    with torch.no_grad():
        ref_logits, ref_inf, ref_rel = ref.get_base_model()(ids, frames)  # LoRA is injected in place
        out = model(input_ids=ids, frames=frames)
    torch.testing.assert_close(out.logits, ref_logits.float(), atol=1e-5, rtol=1e-5)
    frame_ends = (ids[0] == config.image_token_id).nonzero().flatten()[48::49]
    for ours, theirs in ((out.informative_logits, ref_inf), (out.relevance_logits, ref_rel)):
        torch.testing.assert_close(positive_probability(ours[0, frame_ends]),
                                   positive_probability(theirs[0, frame_ends]), atol=1e-5, rtol=1e-5)
    # the unmerged (trainable) form gives the same numbers
    peft_model, _ = load_model(base_dir, adapter=adapter_dir, dtype="float32", device="cpu", merge_lora=False)
    with torch.no_grad():
        torch.testing.assert_close(peft_model(input_ids=ids, frames=frames).logits, out.logits, atol=1e-5, rtol=1e-5)


def test_adapter_without_heads_fails_loudly(tmp_path, tok, config):
    """The released config's modules_to_save names no existing head module (B2): such an adapter has no heads."""
    _, base_dir, adapter_dir = _write_upstream_checkpoint(
        tmp_path, tok, config, ("informative_head", "relevance_head"), ["connector", "mm_projector", "response_head", "related_head"])
    with pytest.raises(MissingHeadsError, match=r"informative_head\.weight.*relevance_head\.weight"):
        load_model(base_dir, adapter=adapter_dir, dtype="float32", device="cpu")


def test_our_lora_checkpoint_round_trips_heads_included(tmp_path, tok, config):
    torch.manual_seed(0)
    base = DuetModel(config)
    save_model(base, tok, tmp_path / "base")
    peft = get_peft_model(DuetModel.from_pretrained(tmp_path / "base"), LoraConfig(
        r=4, lora_alpha=8, target_modules=UPSTREAM_LORA_TARGETS.replace(r"model\.layers", r"model\.language_model\.layers"),
        modules_to_save=["multi_modal_projector", "informative_head", "relevance_head"]))
    _randomise(peft.base_model.model.informative_head, 3)
    with torch.no_grad():
        for p in peft.parameters():
            if p.requires_grad:
                p.add_(0.01)
    save_model(peft, tok, tmp_path / "ours")
    model, _ = load_model(tmp_path / "base", adapter=tmp_path / "ours", dtype="float32", device="cpu")
    ids, frames = _ids(tok, 2), _frames(2)
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=ids, frames=frames).informative_logits,
                                   peft.eval()(input_ids=ids, frames=frames).informative_logits, atol=1e-5, rtol=1e-5)


def test_adapter_key_mapping():
    assert map_adapter_key("base_model.model.model.layers.3.self_attn.q_proj.lora_A.weight") == \
        "model.language_model.layers.3.self_attn.q_proj.lora_A.weight"
    assert map_adapter_key("base_model.model.model.mm_projector.2.bias") == "model.multi_modal_projector.linear_2.bias"
    assert map_adapter_key("base_model.model.response_head.modules_to_save.default.weight") == "informative_head.weight"
    assert map_adapter_key("base_model.model.related_head.weight") == "relevance_head.weight"
    assert map_adapter_key("base_model.model.model.informative_head.weight") == "informative_head.weight"


def test_offline_missing_checkpoint_is_one_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(CheckpointNotFoundError, match=r"not in the Hugging Face cache.*hf download"):
        resolve_checkpoint("someone/not-downloaded", what="base model")
    with pytest.raises(CheckpointNotFoundError, match="no such folder"):
        resolve_checkpoint(tmp_path / "nothing-here")


def test_pickle_adapters_are_refused(tmp_path, tok, config):
    base = DuetModel(config)
    save_model(base, tok, tmp_path / "base")
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    (adapter / "adapter_model.bin").write_bytes(b"not read")
    with pytest.raises(ValueError, match="pickle"):
        load_model(tmp_path / "base", adapter=adapter, device="cpu")
