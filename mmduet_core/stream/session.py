"""The duet session: one video, one KV cache, frames in, per-frame scores and replies out.

    session = DuetSession(model, tokenizer, DuetSettings(mode="sum", reply_threshold=2.0), fps=clip.fps)
    session.add_user_message("What is happening?", time=0.0)
    for step in session.push_frames(model.encode_frames(clip.frames)):   # a generator, one step per frame
        print(step.frame_index, step.time, step.informative, step.relevance, step.reply)
    record = session.to_record("q1", clip.duration)                      # upstream's JSONL schema

Each frame step is upstream's live loop: feed at most one due user message, feed the frame (after what the
context mode puts before it), read both heads at the frame's last token, let the reply rule decide, and reply
greedily, keeping the reply in the context or not (`remove_assistant_turns`).

Frames are prefilled up to `chunk_frames` at a time: causal attention gives each frame's last token the same
state as feeding frames one by one, so results equal the sequential loop (`chunk_frames=1`). A kept reply, or a
message added while the steps of a prefilled segment are being read, cuts the segment back to that frame.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch

from ..errors import InputError, is_finite_number
from ..model import DuetModel, positive_probability
from ..video import FrameClock
from .cache import DuetCache, FrameWindow
from .context import CONTEXTS, PromptIds
from .decode import Replier, embed, forward
from .policy import PolicyState
from .record import StepRecord, prediction_record
from .settings import DuetSettings


@dataclass
class Mark:
    """A session's state right after one frame of a segment, to cut the segment back to it."""

    cache_length: int
    position: int
    context: object
    policy: PolicyState
    window: FrameWindow
    history: int
    tokens: int

    @classmethod
    def take(cls, session: DuetSession, cache_length: int, position: int) -> Mark:
        return cls(cache_length, position, session.context.copy(), session.policy.copy(), session.window.copy(),
                   len(session.replier.history), len(session.token_log))

    def restore(self, session: DuetSession) -> None:
        session.cache.truncate(self.cache_length)
        session.position, session.context, session.policy = self.position, self.context, self.policy
        session.window = self.window
        del session.replier.history[self.history:]
        del session.token_log[self.tokens:]


class Lookahead:
    """How many frames to prefill at once while replies stay in the context: a kept reply discards the prefill
    after it, so prefill as far as the last gap between replies (the next is likely as far), doubling while none
    comes."""

    def __init__(self, most: int):
        self.most = self.frames = most
        self.since_reply = 0

    def after_segment(self, frames: int, kept_reply: bool) -> None:
        self.since_reply += frames
        if kept_reply:
            self.frames, self.since_reply = max(1, self.since_reply), 0
        else:
            self.frames = min(self.most, 2 * self.frames)


def segment_length(session: DuetSession, frames: torch.Tensor) -> int:
    """Frames to prefill in one forward: up to the next queued message, within the speed settings."""
    s = session.settings
    limit = min(len(frames), s.chunk_frames, max(1, s.max_prefill_tokens // frames.shape[1]))
    if s.kv_window_frames is not None:
        limit = min(limit, s.kv_window_frames)
    if s.can_reply and not s.remove_assistant_turns:
        limit = min(limit, session.lookahead.frames)  # a kept reply discards the prefill after it
    if session.pending:
        start = session.frame_index
        due = session.clock.first_frame_at(session.pending[0][0], start + 1, start + limit)
        limit = limit if due is None else due - start
    return limit


def checked_message(text, time) -> tuple[float, str]:
    """A user message's (time, text), or an `InputError` saying what is wrong with it."""
    if not isinstance(text, str) or not text.strip():
        raise InputError(f"a user message must be non-empty text, got {text!r}")
    if not is_finite_number(time):
        raise InputError(f"message {text[:40]!r}: time must be a finite number of seconds, not {time!r}")
    return float(time), text


class DuetSession:
    """One video stream with one KV cache (in the manner of sam2's video predictor: state in one object).

    settings: how to stream (`DuetSettings`; keyword arguments override its fields). fps: the rate of the frames
    you push (default `settings.fps`; pass `clip.fps`). record_tokens: keep every fed token id in `token_log`.
    """

    def __init__(self, model: DuetModel, tokenizer, settings: DuetSettings | None = None, *, fps: float | None = None,
                 record_tokens: bool = False, **overrides):
        settings = settings or DuetSettings()
        self.settings = settings.replace(**overrides) if overrides else settings
        self.model, self.tokenizer = model, tokenizer
        self.fps = self.settings.fps if fps is None else fps
        self.record_tokens = record_tokens
        self.ids = PromptIds.build(tokenizer, self.settings.system_prompt)
        self.reset()

    def reset(self) -> None:
        """Forget the video: empty cache, no messages, frame 0."""
        self.clock = FrameClock(self.fps)
        self.cache, self.position = DuetCache(), 0  # position: absolute index of the next token
        self.frame_index = 0  # frames done
        self.context = CONTEXTS[self.settings.context](self.tokenizer, self.ids)
        self.policy = PolicyState(self.settings)
        self.window = FrameWindow(self.settings.kv_window_frames)
        self.pending: list[tuple[float, str]] = []  # messages not fed yet, by time
        self.responses: list[dict] = []  # upstream's model_response_list
        self.steps: list[StepRecord] = []
        s = self.settings
        self.replier = Replier(self.model, self.tokenizer, self.ids.generate, s.max_new_tokens, s.repetition_penalty)
        self.token_log: list[int] = []
        self.lookahead = Lookahead(self.settings.chunk_frames)

    @property
    def video_time(self) -> float:
        """The time of the next frame: a message added now is read before it."""
        return self.clock.time(self.frame_index)

    def add_user_message(self, text: str, time: float | None = None) -> None:
        """Queue a message, read before the first frame whose time is >= `time` (default: the next frame). One
        message is read per frame, as upstream; messages still queued when the frames run out are never read."""
        time, text = checked_message(text, self.video_time if time is None else time)
        self.pending.append((time, text))
        self.pending.sort(key=lambda item: item[0])
        self.responses.append({"time": time, "content": text, "role": "user"})

    # ---- frames -------------------------------------------------------------------------------------------------

    def push_frame(self, frame: torch.Tensor) -> StepRecord:
        """One frame ((n, D) embeddings or (3, R, R) uint8 pixels) -> its step."""
        return list(self.push_frames(frame[None]))[0]

    def push_frames(self, frames: torch.Tensor) -> Iterator[StepRecord]:
        """Feed frames ((F, n, D) embeddings or (F, 3, R, R) uint8 pixels); yields one step per frame, exactly as
        F calls of the sequential loop would produce them."""
        frames = self.model.frame_embeddings(frames, self.settings.encode_chunk)
        done = 0
        while done < len(frames):
            with torch.no_grad():
                segment = self._run_segment(frames[done:])
            for k, (step, mark) in enumerate(segment):
                self._commit(step)
                try:
                    yield step
                except GeneratorExit:  # the caller stopped reading: undo the frames it never saw
                    if k + 1 < len(segment):
                        mark.restore(self)
                    raise
                done += 1
                if k + 1 < len(segment) and self._message_due():
                    mark.restore(self)  # read the new message before the next frame, as the sequential loop would
                    break
            self.window.apply(self.cache)

    def _message_due(self) -> bool:
        return bool(self.pending) and self.pending[0][0] <= self.video_time

    def _feed_due_message(self) -> str | None:
        if not self._message_due():
            return None
        _, text = self.pending.pop(0)
        ids = self.context.before_message(text)
        forward(self.model, embed(self.model, ids), self.cache, self.position)
        self.position += len(ids)
        if self.record_tokens:
            self.token_log.extend(ids)
        return text

    def _run_segment(self, frames: torch.Tensor) -> list[tuple[StepRecord, Mark | None]]:
        """Prefill a segment of frames, decide frame by frame, reply where the rule fires. Returns the steps done
        (fewer than prefilled when a kept reply invalidates the rest), each with the state right after it."""
        self.window.apply(self.cache)
        message = self._feed_due_message()
        n, per = segment_length(self, frames), frames.shape[1]
        prefix = self.context.before_frame()
        embeds = frames[:n].reshape(1, n * per, -1).to(self.model.dtype)  # (1, n * per, D)
        if prefix:
            embeds = torch.cat([embed(self.model, prefix), embeds], 1)
        start_len, start_pos = self.cache.length, self.position
        out = forward(self.model, embeds, self.cache, self.position)
        self.position += embeds.shape[1]
        ends = len(prefix) + per * torch.arange(1, n + 1) - 1  # each frame's last token
        p_inf = positive_probability(out.informative_logits[0, ends]).tolist()
        p_rel = positive_probability(out.relevance_logits[0, ends]).tolist()
        keep = not self.settings.remove_assistant_turns
        steps, firing = [], []
        for k in range(n):
            end = int(ends[k]) + 1
            index = self.frame_index + k
            step = StepRecord(index, self.clock.time(index), p_inf[k], p_rel[k], user_message=None if k else message)
            self.window.note_frame(start_len + end - per, start_len + end)
            if self.record_tokens:
                self.token_log.extend((prefix if k == 0 else []) + [self.model.config.image_token_id] * per)
            fired = self.policy.decide(p_inf[k], p_rel[k])
            if fired and keep:
                step.reply = self._reply_in_context(start_len + end, start_pos + end)
                steps.append((step, None))
                break
            if fired and self.settings.repetition_penalty:  # each reply sees the ones before: one at a time
                step.reply = self.replier.outside(self.cache, [(start_len + end, start_pos + end)])[0]
            elif fired:
                firing.append((step, start_len + end, start_pos + end))
            self.context.after_frame(fired)
            steps.append((step, Mark.take(self, start_len + end, start_pos + end)))
        if firing:
            texts = self.replier.outside(self.cache, [(length, position) for _, length, position in firing])
            for (step, _, _), text in zip(firing, texts, strict=True):
                step.reply = text
        self.lookahead.after_segment(frames=len(steps), kept_reply=steps[-1][1] is None)
        return steps

    def _commit(self, step: StepRecord) -> None:
        if step.reply is not None and self.settings.suppress_repeats and step.reply == self._last_reply():
            step.reply = None
        if step.reply is not None:
            self.responses.append({"time": step.time, "content": step.reply, "role": "assistant"})
        self.steps.append(step)
        self.frame_index = step.frame_index + 1

    def _last_reply(self) -> str | None:
        return next((r["content"] for r in reversed(self.responses) if r["role"] == "assistant"), None)

    # ---- replies ------------------------------------------------------------------------------------------------

    def _reply_in_context(self, cache_length: int, position: int) -> str:
        """A kept reply after the frame ending at `cache_length`: the prefill after it is dropped, the reply stays."""
        self.cache.truncate(cache_length)
        self.window.forget_after(cache_length)
        text, fed, tail = self.replier.in_context(self.cache, position)
        self.position = position + len(fed)
        if self.record_tokens:
            self.token_log.extend(fed)
        self.context.after_frame(True, tail)
        return text

    # ---- output -------------------------------------------------------------------------------------------------

    def to_record(self, question_id, video_duration: float) -> dict:
        """Upstream's prediction record of this video (floats rounded to 3 decimals, responses sorted by time)."""
        return prediction_record(question_id, video_duration, self.steps, self.responses)
