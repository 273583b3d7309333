"""The duet chat template, tokenizer set-up and learn ranges (upstream spec §3).

A conversation is a list of messages with roles `system`, `user`, `assistant` and `stream`; a stream message
carries `num_frames` and renders as that many frames of `<image>` placeholders. Template variables:
`add_generation_prompt`, `add_stream_prompt`, `add_stream_generation_prompt` (suffixes) and
`add_stream_query_prompt` (a user turn that first closes an open stream turn).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # transformers is imported where it is used, so reading the constants stays light
    from transformers import PreTrainedTokenizerBase, PreTrainedTokenizerFast

IM_START, IM_END = "<|im_start|>", "<|im_end|>"
IMAGE_TOKEN = "<image>"
PAD_TOKEN = "<|endoftext|>"
DEFAULT_SYSTEM_PROMPT = (
    "A multimodal AI assistant is helping users with some activities. Below is their conversation, "
    "interleaved with the list of video frames received by the assistant."
)

# Jinja source; FRAME_TOKENS is substituted with the tokens per frame of the model it is installed for.
_TEMPLATE = (
    "{%- set S = '<|im_start|>' -%}{%- set E = '<|im_end|>' -%}"
    "{%- if messages and messages[0]['role'] == 'system' -%}"
    "{{ S + 'system\\n' + messages[0]['content'] + E }}{%- set messages = messages[1:] -%}"
    "{%- endif -%}"
    "{%- for m in messages -%}"
    "{%- if m['role'] == 'user' -%}"
    "{%- if add_stream_query_prompt -%}{{ E + '\\n' }}{%- else -%}{{ '\\n' }}{%- endif -%}"
    "{{ S + 'user\\n' + m['content'] + E }}"
    "{%- elif m['role'] == 'assistant' -%}{{ '\\n' + S + 'assistant\\n' + m['content'] + E }}"
    "{%- elif m['role'] == 'stream' and m['num_frames'] > 0 -%}"
    "{{ '\\n' + S + 'stream\\n' + '<image>' * (m['num_frames'] * FRAME_TOKENS) + E }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '\\n' + S + 'assistant\\n' }}"
    "{%- elif add_stream_prompt -%}{{ '\\n' + S + 'stream\\n' }}"
    "{%- elif add_stream_generation_prompt -%}{{ E + '\\n' + S + 'assistant\\n' }}"
    "{%- endif -%}"
)


def duet_chat_template(frame_num_tokens: int) -> str:
    """The Jinja chat template with `frame_num_tokens` placeholders per frame."""
    return _TEMPLATE.replace("FRAME_TOKENS", str(int(frame_num_tokens)))


def setup_tokenizer(tokenizer: PreTrainedTokenizerBase, frame_num_tokens: int = 49) -> PreTrainedTokenizerBase:
    """Upstream's tokenizer set-up, in place: `<image>` special, bos/eos = im_start/im_end, the duet template."""
    if IMAGE_TOKEN not in tokenizer.get_vocab():
        tokenizer.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]})
    tokenizer.bos_token = IM_START
    tokenizer.eos_token = IM_END
    if tokenizer.pad_token is None:
        tokenizer.pad_token = PAD_TOKEN
    tokenizer.padding_side = "left"
    tokenizer.chat_template = duet_chat_template(frame_num_tokens)
    tokenizer.init_kwargs["frame_num_tokens"] = int(frame_num_tokens)
    return tokenizer


def render(tokenizer: PreTrainedTokenizerBase, messages: Sequence[dict], **template_vars) -> str:
    """The conversation as text through the tokenizer's chat template (never tokenized here)."""
    return tokenizer.apply_chat_template(list(messages), tokenize=False, **template_vars)


# Transition strings between consecutive roles (§3.3); only their lengths matter.
def _transition(prev: str | None, role: str) -> str:
    if prev is None:
        if role != "system":
            raise KeyError(f"a conversation for learn ranges starts with a system message, not {role!r}")
        return IM_START + "system\n"
    if (prev, role) in {("system", "assistant"), ("assistant", "assistant")}:
        raise KeyError(f"no transition from {prev!r} to {role!r} in the duet format")
    return IM_END + "\n" + IM_START + role + "\n"


def learn_ranges(messages: Iterable[dict], frame_num_tokens: int = 49) -> list[range]:
    """Character ranges of the rendered text supervised by the LM loss: each learned assistant turn's
    content plus its closing `<|im_end|>` (upstream `get_learn_ranges`, including its quirk that a zero-frame
    stream message still counts its transition although the template renders nothing)."""
    ranges, offset, prev = [], 0, None
    for message in messages:
        role = message["role"]
        offset += len(_transition(prev, role))
        if role == "stream":
            offset += message["num_frames"] * frame_num_tokens * len(IMAGE_TOKEN)
        else:
            if role == "assistant" and message.get("learn", True):
                ranges.append(range(offset, offset + len(message["content"]) + len(IM_END)))
            offset += len(message["content"])
        prev = role
    return ranges


def train_tokenizer(texts: Iterable[str], vocab_size: int = 512, frame_num_tokens: int = 49) -> PreTrainedTokenizerFast:
    """A small byte-level BPE tokenizer with Qwen2's special tokens, set up for the duet template.

    Used for tiny test models and the toy world (a 152k-token vocabulary would dwarf a toy model).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = [PAD_TOKEN, IM_START, IM_END, IMAGE_TOKEN]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(list(texts), trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=PAD_TOKEN, bos_token=IM_START,
                                   eos_token=IM_END, additional_special_tokens=[IMAGE_TOKEN])
    return setup_tokenizer(fast, frame_num_tokens)
