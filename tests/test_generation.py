"""Replies decoded on the pre-allocated `DuetCache` are transformers' greedy `generate` tokens, token for token."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import DynamicCache, GenerationConfig

from mmduet_core.model import DuetModel
from mmduet_core.model.checkpoint import tiny_config
from mmduet_core.model.template import DEFAULT_SYSTEM_PROMPT, train_tokenizer
from mmduet_core.stream.cache import DuetCache
from mmduet_core.stream.context import PromptIds
from mmduet_core.stream.decode import forward, greedy_decode

NEW = 12


@pytest.fixture(scope="module")
def setup():
    tok = train_tokenizer([DEFAULT_SYSTEM_PROMPT, "a red square appears and moves left"] * 3, vocab_size=320)
    torch.manual_seed(0)
    model = DuetModel(tiny_config(len(tok), tok.convert_tokens_to_ids("<image>"))).eval()
    torch.manual_seed(1)
    context = torch.randn(1, 3 * 49, model.config.text_config.hidden_size)  # three frames' worth of embeddings
    prompt = PromptIds.build(tok, "").generate
    with torch.no_grad():
        ours = DuetCache()
        forward(model, context, ours, 0)
        theirs = model(inputs_embeds=context, cache=DynamicCache(config=model.config.text_config), use_cache=True,
                       logits_to_keep=1).cache
    return model, prompt, ours, theirs


def _generate(model, cache: DynamicCache, length: int, prompt: list[int], eos: int | None) -> list[int]:
    """transformers' greedy decoding after `length` cached positions (the cache is copied, not changed)."""
    ids = torch.tensor([[0] * length + prompt])  # positions before `length` come from the cache, never read
    config = GenerationConfig(max_new_tokens=NEW, do_sample=False, eos_token_id=eos, pad_token_id=0)
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), cache=copy.deepcopy(cache),
                             generation_config=config)
    return out[0, ids.shape[1]:].tolist()


def _decode(model, cache: DuetCache, starts, prompt, eos: int) -> list[list[int]]:
    with torch.no_grad():
        return greedy_decode(model, cache.fork(cache.length, rows=len(starts)), starts, prompt, eos, NEW)


@pytest.mark.timeout(120)
def test_same_tokens_as_generate(setup):
    model, prompt, ours, theirs = setup
    n = ours.length
    free = _decode(model, ours, [(n, n)], prompt, -1)[0]  # no stop token: all NEW tokens
    assert len(free) == NEW
    assert free == _generate(model, theirs, n, prompt, None)
    # a stop token: make one of the generated tokens the end of turn; both stop right after it, emitting it
    k = next(i for i in range(2, NEW) if free.index(free[i]) == i)
    stopped = _decode(model, ours, [(n, n)], prompt, free[k])[0]
    assert stopped == free[: k + 1] == _generate(model, theirs, n, prompt, free[k])


@pytest.mark.timeout(120)
def test_rows_with_different_prefixes_match_generate(setup):
    """Several replies at once (removed replies of one prefill segment): each row sees only its own prefix."""
    model, prompt, ours, theirs = setup
    n = ours.length
    rows = _decode(model, ours, [(49, 49), (2 * 49, 2 * 49), (n, n)], prompt, -1)
    for row, length in zip(rows, (49, 2 * 49, n), strict=True):
        prefix = copy.deepcopy(theirs)
        prefix.crop(length - n)  # transformers 5: a negative count of positions to remove
        assert row == _generate(model, prefix, length, prompt, None), f"row with a {length}-token prefix"
