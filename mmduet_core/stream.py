"""The duet stream: one video, one KV cache, frames in, scores and replies out (upstream spec §5.4-5.6).

    session = DuetSession(model, tokenizer, ResponsePolicy("prob", 0.5), fps=2.0)
    session.add_user_message("What is happening?", time=0.0)
    for step in session.push_frames(model.encode_frames(clip.frames)):   # or push_frame(one) per frame
        print(step.time, step.informative, step.relevance, step.reply)
    record = session.to_record("q1", clip.duration)                      # upstream's JSONL schema

Each frame step is upstream's live loop: (1) feed at most one due user message, (2) feed the frame (after
upstream's prefix: the system prompt when nothing was fed yet, the last generated token and a stream header
after a kept reply), (3) read both heads at the frame's last token and let the policy decide, (4) reply
greedily, keeping the reply in the context or cropping the cache back (`remove_assistant_turns`).

`context="faithful"` (default) feeds exactly upstream's token sequence, quirks included (no system prompt when
the query comes first, no stream header before the first frame, unclosed turns); `context="clean"` feeds the
well-formed template instead.

`push_frames` is exact and fast: frames are prefilled many at a time (causal attention gives each frame's last
token the same state as feeding them one by one); replies are generated from a cropped view of the cache at
each firing frame; when replies stay in the context, the prefill after the first firing frame is rolled back.
`chunk_frames=1` is the sequential reference (one forward per frame, as upstream).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
from transformers import DynamicCache
from transformers.generation.logits_process import RepetitionPenaltyLogitsProcessor

from .model import DuetModel, positive_probability
from .template import DEFAULT_SYSTEM_PROMPT, render

HEADS = ("informative_score", "relevance_score")
Mode = Literal["prob", "sum", "z"]


# ---- response policy ----------------------------------------------------------------------------------------

@dataclass
class ResponsePolicy:
    """When to speak. Modes (spec §5.5):

    prob: reply when this frame's score > threshold (strict; may fire on consecutive frames).
    sum: reply when the scores summed since the last reply exceed threshold; the sum then restarts at 0.
    z: reply when the score exceeds mean + threshold * std (population) of the previous `running_list_length`
       scores, silent for the first `first_n_frames_no_generate` frames. Upstream's live loop never fires in
       this mode; this is the rule its deprecated streaming method describes, implemented as intended.
    """

    mode: Mode = "prob"
    threshold: float = 0.5  # prob: probability; sum: summed score; z: number of standard deviations
    score_heads: tuple[str, ...] = ("informative_score",)  # summed: a score lies in [0, len(score_heads)]
    remove_assistant_turns: bool = False  # crop each reply out of the context after generating it
    first_n_frames_no_generate: int = 0  # z mode
    running_list_length: int = 20  # z mode
    suppress_repeats: bool = False  # drop a reply identical to the previous one (beyond upstream)

    def __post_init__(self):
        if self.mode not in ("prob", "sum", "z"):
            raise ValueError(f"mode must be prob, sum or z, not {self.mode!r}")
        self.score_heads = tuple(self.score_heads)
        bad = [h for h in self.score_heads if h not in HEADS]
        if bad or not self.score_heads:
            raise ValueError(f"score_heads must be a non-empty subset of {HEADS}, got {self.score_heads}")

    @property
    def can_fire(self) -> bool:
        """False when no score can ever pass (upstream's grounding settings: prob with threshold >= #heads)."""
        return not (self.mode == "prob" and self.threshold >= len(self.score_heads))

    def new_state(self) -> PolicyState:
        return PolicyState(self)


@dataclass
class PolicyState:
    policy: ResponsePolicy
    score_sum: float = 0.0
    scores: list[float] = field(default_factory=list)
    frames_seen: int = 0

    def frame_score(self, informative: float, relevance: float) -> float:
        """One frame's score: the probabilities of the heads the policy uses, summed."""
        return sum(informative if h == "informative_score" else relevance for h in self.policy.score_heads)

    def current_threshold(self) -> float:
        """What the next frame is compared with (z: mean + z * std of the recent scores, 1.0 while they settle)."""
        p = self.policy
        if p.mode != "z":
            return p.threshold
        if len(self.scores) < p.first_n_frames_no_generate or not self.scores:
            return 1.0
        return float(np.mean(self.scores) + p.threshold * np.std(self.scores))

    def decide(self, informative: float, relevance: float) -> bool:
        """Update with one frame's probabilities; True when the model should reply now."""
        p = self.policy
        score = self.frame_score(informative, relevance)
        self.frames_seen += 1
        if p.mode == "z":
            threshold = self.current_threshold()
            self.scores = (self.scores + [score])[-p.running_list_length:]
            return self.frames_seen > p.first_n_frames_no_generate and score > threshold
        self.scores = (self.scores + [score])[-p.running_list_length:]
        self.score_sum += score
        if p.mode == "sum":
            if self.score_sum > p.threshold:
                self.score_sum = 0.0
                return True
            return False
        return score > p.threshold


def clean_up_tokenization(text: str) -> str:
    """transformers 4.x's `clean_up_tokenization_spaces=True`, which upstream's decode applied (v5 no longer
    applies it to BPE tokenizers): no space before . ? ! , and English contractions."""
    for before, after in ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"),
                          (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re")):
        text = text.replace(before, after)
    return text


# ---- cache helpers ------------------------------------------------------------------------------------------

def cache_length(cache: DynamicCache | None) -> int:
    return 0 if cache is None else cache.get_seq_length()


def crop_cache(cache: DynamicCache, length: int) -> None:
    """Keep the first `length` positions, in place."""
    for layer in cache.layers:
        if layer.is_initialized:
            layer.keys, layer.values = layer.keys[..., :length, :], layer.values[..., :length, :]


def cache_view(cache: DynamicCache, length: int) -> DynamicCache:
    """A cache holding views of the first `length` positions; growing it never touches `cache`."""
    view = copy.copy(cache)
    view.layers = [copy.copy(layer) for layer in cache.layers]
    crop_cache(view, length)
    return view


def drop_cache_range(cache: DynamicCache, start: int, end: int) -> None:
    """Remove positions [start, end) in place (the KV window)."""
    for layer in cache.layers:
        if layer.is_initialized:
            layer.keys = torch.cat([layer.keys[..., :start, :], layer.keys[..., end:, :]], dim=-2)
            layer.values = torch.cat([layer.values[..., :start, :], layer.values[..., end:, :]], dim=-2)


# ---- records ------------------------------------------------------------------------------------------------

@dataclass
class StepRecord:
    """One frame step: its time, both heads' positive probabilities, and the reply if the model spoke."""

    time: float
    informative: float
    relevance: float
    reply: str | None = None
    user_message: str | None = None  # a message fed at this step, before the frame


@dataclass
class _Segment:
    """Cache bookkeeping for the KV window: where each frame sits in the cache."""

    start: int
    end: int


class DuetSession:
    """One video stream with one KV cache (sam2-style: state in one object, obvious verbs)."""

    def __init__(self, model: DuetModel, tokenizer, policy: ResponsePolicy | None = None, fps: float = 2.0,
                 system_prompt: str = DEFAULT_SYSTEM_PROMPT, context: Literal["faithful", "clean"] = "faithful",
                 max_new_tokens: int = 200, repetition_penalty: float | None = None,
                 kv_window_frames: int | None = None, chunk_frames: int = 32, max_prefill_tokens: int = 2048,
                 record_tokens: bool = False):
        if context not in ("faithful", "clean"):
            raise ValueError(f"context must be faithful or clean, not {context!r}")
        if fps <= 0:
            raise ValueError(f"fps must be positive, got {fps}")
        self.model, self.tokenizer = model, tokenizer
        self.policy = policy or ResponsePolicy()
        self.fps, self.system_prompt, self.context = fps, system_prompt, context
        self.max_new_tokens, self.repetition_penalty = max_new_tokens, repetition_penalty
        self.kv_window_frames, self.chunk_frames = kv_window_frames, max(1, chunk_frames)
        # attention cost per forward grows with (new tokens x context): cap the tokens of one prefill
        self.max_prefill_tokens = max_prefill_tokens
        self.record_tokens = record_tokens
        self.image_id = model.config.image_token_id
        self.eos_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
        self._ids = {  # upstream's cached id sequences
            "start": self._encode(render(tokenizer, [{"role": "system", "content": system_prompt}])),
            "stream": self._encode(render(tokenizer, [{}], add_stream_prompt=True)),
            "generate": self._encode(render(tokenizer, [{}], add_stream_generation_prompt=True)),
        }
        self.reset()

    # ---- state ----------------------------------------------------------------------------------------------

    def reset(self) -> None:
        """Forget the video: empty cache, no queued messages, time 0."""
        self.cache: DynamicCache | None = None
        self.position = 0  # absolute position of the next token (== cache length without a KV window)
        self.video_time = 0.0
        self.frame_index = 0
        self.last_role = "system"
        self.last_ids: list[int] = []  # the last generated token, fed before the next frame (kept replies)
        self.generated_ids: list[int] = []  # every non-eos generated id of the video (repetition penalty)
        self.pending: list[tuple[float, str]] = []
        self.responses: list[dict] = []  # upstream's model_response_list
        self.steps: list[StepRecord] = []
        self.policy_state = self.policy.new_state()
        self.token_log: list[int] = []
        self._frames_in_cache: list[_Segment] = []
        self._prefix_end: int | None = None
        self._stream_open = False  # clean mode: inside an open stream turn
        self._speculate = self.chunk_frames  # frames prefilled ahead when replies stay in the context

    def add_user_message(self, text: str, time: float | None = None) -> None:
        """Queue a user message, fed at the first frame step whose time is >= `time` (default: now).
        One message is fed per frame step, as upstream; messages left when frames run out are never fed."""
        time = self.video_time if time is None else float(time)
        self.pending.append((time, text))
        self.pending.sort(key=lambda item: item[0])
        self.responses.append({"time": time, "content": text, "role": "user"})

    # ---- feeding --------------------------------------------------------------------------------------------

    def _encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False).input_ids

    def _embed(self, ids: list[int]) -> torch.Tensor:
        emb = self.model.get_input_embeddings()
        return emb(torch.tensor([ids], device=emb.weight.device))  # (1, T, D)

    def _forward(self, embeds: torch.Tensor, cache: DynamicCache | None, position: int):
        """Run the language model on (1, T, D) embeddings after `cache`; returns the output and new cache."""
        if cache is None:
            cache = DynamicCache(config=self.model.config.text_config)
        t = embeds.shape[1]
        past = cache_length(cache)
        kwargs = {}
        if past != position:  # a windowed cache: absolute positions and an explicit mask
            kwargs["position_ids"] = torch.arange(position, position + t, device=embeds.device)[None]
            mask = torch.ones(t, past + t, dtype=torch.bool, device=embeds.device)
            mask[:, past:] = torch.tril(mask[:, past:])
            kwargs["attention_mask"] = mask[None, None]
        out = self.model(inputs_embeds=embeds, cache=cache, use_cache=True, logits_to_keep=1, **kwargs)
        return out, out.cache

    def _feed_ids(self, ids: list[int]) -> None:
        if not ids:
            return
        _, self.cache = self._forward(self._embed(ids), self.cache, self.position)
        self.position += len(ids)
        if self.record_tokens:
            self.token_log.extend(ids)

    def _query_ids(self, text: str) -> list[int]:
        if self.context == "clean":
            prefix = (list(self._ids["start"]) if self.cache is None else []) + self._pending_close()
            close = self._stream_open
            self._stream_open = True  # the query form ends with an opened stream header
            return prefix + self._encode(render(self.tokenizer, [{"role": "user", "content": text}],
                                                add_stream_query_prompt=close, add_stream_prompt=True))
        return self._encode(render(self.tokenizer, [{"role": "user", "content": text}],
                                   add_stream_query_prompt=self.last_role == "stream", add_stream_prompt=True))

    def _pending_close(self) -> list[int]:
        """clean mode: the unfed <|im_end|> that closes a kept reply."""
        ids, self.last_ids = self.last_ids, []
        return ids

    def _frame_prefix(self) -> list[int]:
        """Token ids fed before a frame's embeddings."""
        if self.context == "clean":
            ids = self._ids["start"] if self.cache is None else []
            ids = ids + self._pending_close()
            if not self._stream_open:
                ids = ids + self._ids["stream"]
                self._stream_open = True
            return ids
        if self.cache is None:
            return list(self._ids["start"])
        if self.last_role == "assistant" and self.last_ids:
            return self.last_ids + self._ids["stream"]
        return []

    def _maybe_feed_query(self) -> str | None:
        if self.pending and self.video_time >= self.pending[0][0]:
            _, text = self.pending.pop(0)
            self._feed_ids(self._query_ids(text))
            self.last_role = "user"
            return text
        return None

    # ---- replies --------------------------------------------------------------------------------------------

    def _generate(self, cache: DynamicCache, position: int) -> tuple[str, list[int], DynamicCache, int]:
        """Greedy decoding after `<|im_end|>\\n<|im_start|>assistant\\n` (spec §5.6). Returns the text, the
        generated ids (the last one, eos or the token at the length limit, is never fed), the grown cache
        and the next position."""
        processor = RepetitionPenaltyLogitsProcessor(self.repetition_penalty) if self.repetition_penalty else None
        inputs = self._ids["generate"]
        fed: list[int] = []
        out_ids: list[int] = []
        for _ in range(self.max_new_tokens):
            out, cache = self._forward(self._embed(inputs), cache, position)
            position += len(inputs)
            fed.extend(inputs)
            logits = out.logits[:, -1]  # (1, V)
            if processor is not None and self.generated_ids:
                logits = processor(torch.tensor([self.generated_ids], device=logits.device), logits)
            token = int(logits.argmax(-1))
            out_ids.append(token)
            if token == self.eos_id:
                break
            self.generated_ids.append(token)
            inputs = [token]
        if self.record_tokens:
            self._last_reply_fed = fed
        text = clean_up_tokenization(self.tokenizer.decode(out_ids, skip_special_tokens=True,
                                                           clean_up_tokenization_spaces=False))
        return text, out_ids, cache, position

    def _reply_at(self, cache_len: int, position: int, keep: bool) -> str:
        """Reply from the state right after a frame (`cache_len` positions of the cache)."""
        if keep:
            crop_cache(self.cache, cache_len)
            text, ids, self.cache, self.position = self._generate(self.cache, position)
            self.last_ids = ids[-1:]
            if self.record_tokens:
                self.token_log.extend(self._last_reply_fed)
            self._stream_open = False
        else:
            text, _, _, _ = self._generate(cache_view(self.cache, cache_len), position)
            self.last_ids = []
        self.last_role = "assistant"
        return text

    def respond(self) -> str:
        """Reply now, whatever the scores (the demo's on-demand answer); recorded at the current time."""
        if self.cache is None:
            raise RuntimeError("respond() needs at least one fed frame or message")
        text = self._reply_at(cache_length(self.cache), self.position, keep=not self.policy.remove_assistant_turns)
        self.responses.append({"time": self.video_time, "content": text, "role": "assistant"})
        return text

    # ---- frames ---------------------------------------------------------------------------------------------

    def _frames_until_next_query(self) -> int:
        """Frame steps, counting this one, before a pending message would be fed (a segment boundary)."""
        if not self.pending:
            return 1 << 30
        t, k = self.video_time, 0
        while True:  # replay the float clock, as the steps will
            k += 1
            t += 1.0 / self.fps
            if t >= self.pending[0][0]:
                return k

    def push_frame(self, frame: torch.Tensor) -> StepRecord:
        """One frame (embeddings (n, D) or uint8 pixels (3, R, R)) -> its step record."""
        return self.push_frames(frame[None])[0]

    def push_frames(self, frames: torch.Tensor) -> list[StepRecord]:
        """Frames (F, n, D) embeddings or (F, 3, R, R) uint8 pixels, processed exactly as F calls of the
        sequential loop would, with up to `chunk_frames` frames per forward."""
        if frames.dtype == torch.uint8:
            frames = self.model.encode_frames(frames)
        records: list[StepRecord] = []
        i = 0
        with torch.no_grad():
            while i < len(frames):
                message = self._maybe_feed_query()
                n = min(len(frames) - i, self._segment_limit(frames.shape[1]), self._frames_until_next_query())
                done = self._run_segment(frames[i:i + n], message)
                self._adapt_speculation(len(done), n)
                records.extend(done)
                i += len(done)
                self._apply_kv_window()
        return records

    def _segment_limit(self, tokens_per_frame: int) -> int:
        limit = min(self.chunk_frames, max(1, self.max_prefill_tokens // max(tokens_per_frame, 1)))
        if self.kv_window_frames is not None:
            limit = min(limit, self.kv_window_frames)
        if self.policy.can_fire and not self.policy.remove_assistant_turns:
            limit = min(limit, self._speculate)  # a kept reply discards the prefill after it
        return limit

    def _adapt_speculation(self, done: int, tried: int) -> None:
        """Kept replies: after a rollback prefill about twice the frames that survived, else double."""
        if done < tried:
            self._speculate = max(1, 2 * (done - 1))
        else:
            self._speculate = min(self.chunk_frames, 2 * self._speculate)

    def _run_segment(self, frames: torch.Tensor, message: str | None) -> list[StepRecord]:
        """Prefill frames together; decide frame by frame; reply at firing frames. Returns the steps done
        (fewer than given when a kept reply invalidates the rest of the prefill)."""
        prefix = self._frame_prefix()
        per_frame = frames.shape[1]
        embeds = frames.reshape(1, -1, frames.shape[-1]).to(self.model.dtype)  # (1, F * n, D)
        if prefix:
            embeds = torch.cat([self._embed(prefix), embeds], 1)
        start_len, start_pos = cache_length(self.cache), self.position
        out, self.cache = self._forward(embeds, self.cache, self.position)
        ends = len(prefix) + per_frame * torch.arange(1, len(frames) + 1) - 1  # each frame's last token
        p_inf = positive_probability(out.informative_logits[0, ends]).tolist()
        p_rel = positive_probability(out.relevance_logits[0, ends]).tolist()
        self.position += embeds.shape[1]
        self.last_role = "stream"
        self._stream_open = True
        keep = not self.policy.remove_assistant_turns
        batch_replies = not keep and self.repetition_penalty is None  # independent replies: one batch
        steps, firing = [], []
        for k in range(len(frames)):
            frame_end = int(ends[k]) + 1
            step = StepRecord(self.video_time, p_inf[k], p_rel[k], user_message=message if k == 0 else None)
            self._note_frame(start_len + frame_end - per_frame, start_len + frame_end)
            if self.record_tokens:
                self.token_log.extend((prefix if k == 0 else []) + [self.image_id] * per_frame)
            fire = self.policy_state.decide(p_inf[k], p_rel[k]) if self.policy.can_fire else False
            if fire and batch_replies:
                firing.append((step, start_len + frame_end, start_pos + frame_end))
                self.last_role = "assistant"
            elif fire:
                if keep:
                    self._forget_frames_after(start_len + frame_end)
                    self.position = start_pos + frame_end
                self._record_reply(step, self._reply_at(start_len + frame_end, start_pos + frame_end, keep))
            else:
                self.last_role = "stream"
            steps.append(step)
            self.steps.append(step)
            self.video_time += 1.0 / self.fps
            self.frame_index += 1
            if fire and keep:
                break
        if firing:
            texts = self._generate_batch([(length, position) for _, length, position in firing])
            for (step, _, _), text in zip(firing, texts, strict=True):
                self._record_reply(step, text)
            self.last_ids = []
        return steps

    def _record_reply(self, step: StepRecord, text: str) -> None:
        if not (self.policy.suppress_repeats and self._repeats(text)):
            step.reply = text
            self.responses.append({"time": step.time, "content": text, "role": "assistant"})

    def _generate_batch(self, starts: list[tuple[int, int]]) -> list[str]:
        """Replies from several points of the current cache at once (removed replies only): every row shares
        the cached keys, row j masked to its first `starts[j][0]` positions, its own tokens at its own positions.
        The same greedy decoding as `_generate`, one forward per step for all rows."""
        if len(starts) == 1:
            return [self._generate(cache_view(self.cache, starts[0][0]), starts[0][1])[0]]
        rows = len(starts)
        cache = cache_view(self.cache, cache_length(self.cache))
        for layer in cache.layers:
            if layer.is_initialized:
                layer.keys = layer.keys.expand(rows, -1, -1, -1)
                layer.values = layer.values.expand(rows, -1, -1, -1)
        full = cache_length(self.cache)
        device = self.model.get_input_embeddings().weight.device
        past = torch.arange(full, device=device)[None] < torch.tensor([n for n, _ in starts], device=device)[:, None]
        positions = torch.tensor([p for _, p in starts], device=device)
        inputs = [list(self._ids["generate"])] * rows
        generated, out_ids, done = 0, [[] for _ in range(rows)], [False] * rows
        for _ in range(self.max_new_tokens):
            t = len(inputs[0])
            mask = torch.cat([past[:, None, :].expand(rows, t, full),
                              torch.ones(rows, t, generated, dtype=torch.bool, device=device),
                              torch.tril(torch.ones(t, t, dtype=torch.bool, device=device))[None].expand(rows, t, t)], 2)
            emb = self.model.get_input_embeddings()(torch.tensor(inputs, device=device))  # (rows, t, D)
            out = self.model(inputs_embeds=emb, cache=cache, use_cache=True, logits_to_keep=1,
                             position_ids=positions[:, None] + torch.arange(t, device=device)[None],
                             attention_mask=mask[:, None])
            cache, positions, generated = out.cache, positions + t, generated + t
            tokens = out.logits[:, -1].argmax(-1).tolist()
            for j, token in enumerate(tokens):
                if not done[j]:
                    out_ids[j].append(token)
                    done[j] = token == self.eos_id
            if all(done):
                break
            inputs = [[token] for token in tokens]
        for ids in out_ids:  # the whole-video list, in reply order (kept for consistency with `_generate`)
            self.generated_ids.extend(i for i in ids if i != self.eos_id)
        return [clean_up_tokenization(self.tokenizer.decode(ids, skip_special_tokens=True,
                                                            clean_up_tokenization_spaces=False)) for ids in out_ids]

    def _repeats(self, text: str) -> bool:
        previous = [r["content"] for r in self.responses if r["role"] == "assistant"]
        return bool(previous) and previous[-1] == text

    # ---- KV window ------------------------------------------------------------------------------------------

    def _note_frame(self, start: int, end: int) -> None:
        if self.kv_window_frames is None:
            return
        if self._prefix_end is None:
            self._prefix_end = start
        self._frames_in_cache.append(_Segment(start, end))

    def _forget_frames_after(self, cache_len: int) -> None:
        self._frames_in_cache = [s for s in self._frames_in_cache if s.end <= cache_len]

    def _apply_kv_window(self) -> None:
        """Keep the prefix (system prompt and first message) and the last `kv_window_frames` frames."""
        n = self.kv_window_frames
        if n is None or len(self._frames_in_cache) <= n:
            return
        cut_end = self._frames_in_cache[-n].start
        cut_start = self._prefix_end
        if cut_end <= cut_start:
            return
        drop_cache_range(self.cache, cut_start, cut_end)
        removed = cut_end - cut_start
        self._frames_in_cache = [_Segment(s.start - removed, s.end - removed) for s in self._frames_in_cache[-n:]]

    # ---- output ---------------------------------------------------------------------------------------------

    def stream(self, frames: Iterable[torch.Tensor]) -> Iterator[StepRecord]:
        """Yield step records as frames come in: single frames ((n, D) embeddings or (3, R, R) pixels) or
        batches of them."""
        for item in frames:
            single = item.dim() == (3 if item.dtype == torch.uint8 else 2)
            yield from self.push_frames(item[None] if single else item)

    def debug_data(self, digits: int = 3) -> list[dict]:
        return [{"time": round(s.time, digits), "informative_score": round(s.informative, digits),
                 "relevance_score": round(s.relevance, digits)} for s in self.steps]

    def to_record(self, question_id, video_duration: float, digits: int = 3) -> dict:
        """The upstream prediction record (floats rounded to 3 decimals, responses sorted by time)."""
        responses = sorted(self.responses, key=lambda r: r["time"])  # stable: user entries first at equal time
        return {"question_id": question_id,
                "model_response_list": [{**r, "time": round(r["time"], digits)} for r in responses],
                "video_duration": round(float(video_duration), digits), "debug_data": self.debug_data(digits)}
