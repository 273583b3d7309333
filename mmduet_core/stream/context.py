"""The text fed around frames and messages, one class per context mode.

Both classes answer the same three questions as the stream goes on: which token ids go in before a user
message, which before a frame, and what a reply leaves behind. `FaithfulContext` is upstream's exact token
sequence, quirks included; `CleanContext` is the well-formed chat template. Nothing else in the package knows
how the two differ.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

from ..model.template import render


@dataclass(frozen=True)
class PromptIds:
    """The fixed token sequences: the system turn, a stream header, and the opening of a reply."""

    start: list[int]  # <|im_start|>system\n{system prompt}<|im_end|>
    stream: list[int]  # \n<|im_start|>stream\n
    generate: list[int]  # <|im_end|>\n<|im_start|>assistant\n

    @classmethod
    def build(cls, tokenizer, system_prompt: str) -> PromptIds:
        def encode(text: str) -> list[int]:
            return tokenizer(text, add_special_tokens=False).input_ids

        return cls(encode(render(tokenizer, [{"role": "system", "content": system_prompt}])),
                   encode(render(tokenizer, [{}], add_stream_prompt=True)),
                   encode(render(tokenizer, [{}], add_stream_generation_prompt=True)))


def _user_turn(tokenizer, text: str, close_stream: bool) -> str:
    return render(tokenizer, [{"role": "user", "content": text}], add_stream_query_prompt=close_stream,
                  add_stream_prompt=True)


class _Context:
    reply_tail: list[int]

    def copy(self):
        out = copy.copy(self)
        out.reply_tail = list(self.reply_tail)
        return out


class FaithfulContext(_Context):
    """Upstream's live loop, token for token:

    * the system turn is fed only if a frame comes first (a message at time 0 goes in before it, so the system
      prompt is never fed), and no stream header precedes the first frame;
    * a message after a frame closes the open stream turn (`<|im_end|>` first); after a reply it does not;
    * after a kept reply, the reply's last generated token (normally `<|im_end|>`, never fed while generating)
      and a stream header precede the next frame; a message after a reply leaves that token unfed.
    """

    def __init__(self, tokenizer, ids: PromptIds):
        self.tokenizer, self.ids = tokenizer, ids
        self.fed = False  # anything fed yet
        self.last_role = "system"
        self.reply_tail: list[int] = []  # a kept reply's unfed last token

    def before_message(self, text: str) -> list[int]:
        close = self.last_role == "stream"
        self.fed, self.last_role = True, "user"
        return self.tokenizer(_user_turn(self.tokenizer, text, close), add_special_tokens=False).input_ids

    def before_frame(self) -> list[int]:
        if not self.fed:
            ids = list(self.ids.start)
        elif self.last_role == "assistant" and self.reply_tail:
            ids = self.reply_tail + self.ids.stream
        else:
            ids = []
        self.fed, self.last_role = True, "stream"
        return ids

    def after_frame(self, replied: bool, reply_tail: list[int] | None = None) -> None:
        """A frame was fed and, if `replied`, answered; `reply_tail` is the unfed last token of a kept reply."""
        self.last_role = "assistant" if replied else "stream"
        self.reply_tail = list(reply_tail or [])


class CleanContext(_Context):
    """The chat template as written: the system turn first, every turn closed, frames inside stream turns."""

    def __init__(self, tokenizer, ids: PromptIds):
        self.tokenizer, self.ids = tokenizer, ids
        self.fed = False
        self.stream_open = False
        self.reply_tail: list[int] = []  # closes a kept reply before whatever comes next

    def _opening(self) -> list[int]:
        ids = ([] if self.fed else list(self.ids.start)) + self.reply_tail
        self.fed, self.reply_tail = True, []
        return ids

    def before_message(self, text: str) -> list[int]:
        prefix, close = self._opening(), self.stream_open
        self.stream_open = True  # the message ends with an opened stream header
        return prefix + self.tokenizer(_user_turn(self.tokenizer, text, close), add_special_tokens=False).input_ids

    def before_frame(self) -> list[int]:
        ids = self._opening()
        if not self.stream_open:
            ids += self.ids.stream
            self.stream_open = True
        return ids

    def after_frame(self, replied: bool, reply_tail: list[int] | None = None) -> None:
        if replied and reply_tail is not None:  # a kept reply closed the stream turn
            self.stream_open, self.reply_tail = False, list(reply_tail)


CONTEXTS = {"faithful": FaithfulContext, "clean": CleanContext}
