"""DuetModel on tiny random configs: frame tokens, pooling, placeholders, losses and gradients.
(Checkpoint loading is tested in test_checkpoint_layouts.py.)"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from peft import LoraConfig, get_peft_model
from torch import nn

from mmduet_core.model import IGNORE_INDEX, DuetModel
from mmduet_core.model.checkpoint import UPSTREAM_LORA_TARGETS, tiny_config
from mmduet_core.model.template import DEFAULT_SYSTEM_PROMPT, render, train_tokenizer


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
