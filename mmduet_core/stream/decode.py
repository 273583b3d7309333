"""Running the language model on a duet cache, and the one greedy decoding loop (upstream's
`fast_greedy_generate`: argmax, at most `max_new_tokens`, stop at `<|im_end|>` without feeding it)."""

from __future__ import annotations

import torch
from transformers.generation.logits_process import RepetitionPenaltyLogitsProcessor

from .cache import DuetCache


def embed(model, ids: list[int] | list[list[int]]) -> torch.Tensor:
    """Token ids -> (rows, T, D) input embeddings."""
    table = model.get_input_embeddings()
    rows = ids if ids and isinstance(ids[0], list) else [ids]
    return table(torch.tensor(rows, device=table.weight.device))


def forward(model, embeds: torch.Tensor, cache: DuetCache, position: int | torch.Tensor,
            visible: torch.Tensor | None = None, heads: bool = True):
    """Run (rows, T, D) embeddings after `cache`, at absolute `position` (per row when a tensor).

    visible: (rows, cache length) booleans, the cached positions each row may attend to. An explicit mask is
    built when rows see different prefixes or when the cache no longer starts at position 0 (KV window).
    heads: False runs only the language model and `lm_head` on the last position and returns its (rows, 1, V)
    float logits (the same numbers as the full model's), for decoding, where the heads are not read.
    """
    rows, t, _ = embeds.shape
    device = embeds.device
    past = cache.length
    start = torch.as_tensor(position, device=device).reshape(-1, 1)  # (rows or 1, 1)
    kwargs = {}
    if visible is not None or bool((start != past).any()):
        kwargs["position_ids"] = (start + torch.arange(t, device=device)).expand(rows, t)
        seen = visible if visible is not None else torch.ones(rows, past, dtype=torch.bool, device=device)
        causal = torch.ones(t, t, dtype=torch.bool, device=device).tril()
        mask = torch.cat([seen[:, None, :].expand(rows, t, past), causal.expand(rows, t, t)], dim=2)
        kwargs["attention_mask"] = mask[:, None]  # (rows, 1, T, past + T)
    if heads:
        return model(inputs_embeds=embeds, cache=cache, use_cache=True, logits_to_keep=1, **kwargs)
    hidden = model.get_decoder()(inputs_embeds=embeds, cache=cache, use_cache=True, **kwargs).last_hidden_state
    return model.get_output_embeddings()(hidden[:, -1:]).float()  # (rows, 1, V), as DuetModel.forward computes it


def greedy_decode(model, cache: DuetCache, starts: list[tuple[int, int]], prompt: list[int], eos_id: int,
                  max_new_tokens: int, penalty: float | None = None, history: list[int] | None = None
                  ) -> list[list[int]]:
    """Decode one reply per row of `cache`, in place, and return each row's generated ids (the last is `eos_id`
    unless the length limit came first; it is never fed, as upstream).

    Row j continues from its first `starts[j][0]` cached positions at absolute position `starts[j][1]`: `prompt`
    is fed, then each argmax token. `history` (every earlier generated id of the video, upstream never clears it)
    is extended with the new non-eos ids; with `penalty` (one row only) those ids are penalised as transformers'
    repetition penalty does.
    """
    rows, device = len(starts), model.get_input_embeddings().weight.device
    if penalty and rows != 1:
        raise ValueError("a repetition penalty needs replies decoded one at a time")
    processor = RepetitionPenaltyLogitsProcessor(penalty) if penalty else None
    past = list(history or [])
    base = cache.length
    lengths = torch.tensor([n for n, _ in starts], device=device)
    positions = torch.tensor([p for _, p in starts], device=device)
    shared = rows == 1 and starts[0][0] == base  # nothing to hide: the plain causal mask
    out: list[list[int]] = [[] for _ in range(rows)]
    inputs = [list(prompt)] * rows
    for _ in range(max_new_tokens):
        visible = None
        if not shared:
            cached = torch.arange(cache.length, device=device)
            visible = (cached[None] < lengths[:, None]) | (cached[None] >= base)  # own prefix + own new tokens
        logits = forward(model, embed(model, inputs), cache, positions, visible, heads=False)[:, -1]  # (rows, V)
        positions = positions + len(inputs[0])
        if processor is not None and past:
            logits = processor(torch.tensor([past], device=device), logits)
        for row, token in zip(out, logits.argmax(-1).tolist(), strict=True):
            if not row or row[-1] != eos_id:
                row.append(token)
                if processor is not None and token != eos_id:
                    past.append(token)
        if all(row[-1] == eos_id for row in out):
            break
        inputs = [[row[-1]] for row in out]
    if history is not None:
        history.extend(token for row in out for token in row if token != eos_id)
    return out


class Replier:
    """One video's replies: kept in the context (decoded in place) or removed from it (decoded on a copy of the
    cache, several at once when they are independent). Holds the video's generated ids for the repetition
    penalty, which upstream never clears between replies."""

    def __init__(self, model, tokenizer, generate_prompt: list[int], max_new_tokens: int,
                 repetition_penalty: float | None = None):
        self.model, self.tokenizer, self.prompt = model, tokenizer, generate_prompt
        self.max_new_tokens, self.penalty = max_new_tokens, repetition_penalty
        self.eos_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
        self.history: list[int] = []

    def in_context(self, cache: DuetCache, position: int) -> tuple[str, list[int], list[int]]:
        """Reply after the whole cache and leave the reply in it: (text, ids fed, the unfed last id)."""
        ids = greedy_decode(self.model, cache, [(cache.length, position)], self.prompt, self.eos_id,
                            self.max_new_tokens, self.penalty, self.history)[0]
        return self.text(ids), self.prompt + ids[:-1], ids[-1:]

    def outside(self, cache: DuetCache, starts: list[tuple[int, int]]) -> list[str]:
        """Replies from the first `length` positions at `position`, one per (length, position); `cache` is left
        as it was."""
        before = cache.length
        if len(starts) == 1 and starts[0][0] == before:  # decode in place, then cut it off again
            work = cache
        else:
            work = cache.fork(before if len(starts) > 1 else starts[0][0], rows=len(starts))
        replies = greedy_decode(self.model, work, starts, self.prompt, self.eos_id, self.max_new_tokens,
                                self.penalty, self.history if self.penalty else None)
        cache.truncate(before)
        return [self.text(ids) for ids in replies]

    def text(self, ids: list[int]) -> str:
        text = self.tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)
        return self.tokenizer.clean_up_tokenization(text)  # upstream decoded with clean_up_tokenization_spaces=True
