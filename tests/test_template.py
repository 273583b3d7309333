"""The duet template renders every row of upstream spec §3.2 byte for byte; learn ranges select the replies."""

from __future__ import annotations

import pytest

from mmduet_core.model.template import DEFAULT_SYSTEM_PROMPT, learn_ranges, render, train_tokenizer

S, E = "<|im_start|>", "<|im_end|>"


@pytest.fixture(scope="module")
def tok2():
    """A tokenizer whose template uses 2 tokens per frame (the spec's worked examples)."""
    return train_tokenizer(["Q? A. SYS what is shown"] * 4, vocab_size=280, frame_num_tokens=2)


@pytest.fixture(scope="module")
def tok49():
    return train_tokenizer(["Q? A. SYS what is shown"] * 4, vocab_size=280, frame_num_tokens=49)


def test_full_training_example(tok2):
    conv = [{"role": "system", "content": "SYS"}, {"role": "user", "content": "Q?"},
            {"role": "stream", "num_frames": 2}, {"role": "assistant", "content": "A."},
            {"role": "stream", "num_frames": 1}]
    expected = (f"{S}system\nSYS{E}\n{S}user\nQ?{E}\n{S}stream\n" + "<image>" * 4 + f"{E}\n{S}assistant\nA.{E}"
                f"\n{S}stream\n<image><image>{E}")
    assert render(tok2, conv) == expected


@pytest.mark.parametrize(("messages", "template_vars", "expected"), [
    ([{"role": "system", "content": "SYS"}], {}, f"{S}system\nSYS{E}"),
    ([{}], {"add_stream_prompt": True}, f"\n{S}stream\n"),
    ([{}], {"add_stream_generation_prompt": True}, f"{E}\n{S}assistant\n"),
    ([{"role": "user", "content": "Q?"}], {"add_stream_query_prompt": True, "add_stream_prompt": True},
     f"{E}\n{S}user\nQ?{E}\n{S}stream\n"),
    ([{"role": "user", "content": "Q?"}], {"add_stream_prompt": True}, f"\n{S}user\nQ?{E}\n{S}stream\n"),
    ([{"role": "user", "content": "Q?"}], {}, f"\n{S}user\nQ?{E}"),
    ([{"role": "assistant", "content": "A."}], {}, f"\n{S}assistant\nA.{E}"),
    ([{"role": "stream", "num_frames": 0}], {}, ""),
    ([{"role": "narrator", "content": "x"}], {}, ""),
    ([{"role": "user", "content": "Q?"}], {"add_generation_prompt": True}, f"\n{S}user\nQ?{E}\n{S}assistant\n"),
    # the generation prompt wins over the stream prompts (the template's elif chain)
    ([{}], {"add_generation_prompt": True, "add_stream_prompt": True}, f"\n{S}assistant\n"),
    ([{}], {"add_stream_prompt": True, "add_stream_generation_prompt": True}, f"\n{S}stream\n"),
])
def test_spec_rows(tok2, messages, template_vars, expected):
    assert render(tok2, messages, **template_vars) == expected


def test_stream_renders_49_placeholders_per_frame(tok49):
    text = render(tok49, [{"role": "stream", "num_frames": 3}])
    assert text == f"\n{S}stream\n" + "<image>" * 147 + E
    ids = tok49(text, add_special_tokens=False).input_ids
    assert ids.count(tok49.convert_tokens_to_ids("<image>")) == 147


def test_system_only_first(tok2):
    # a system message later in the list is not a system prompt: it renders nothing
    conv = [{"role": "user", "content": "Q?"}, {"role": "system", "content": "SYS"}]
    assert render(tok2, conv) == f"\n{S}user\nQ?{E}"


def test_learn_ranges_select_assistant_text_and_im_end(tok49):
    conv = [{"role": "system", "content": DEFAULT_SYSTEM_PROMPT}, {"role": "user", "content": "What is shown?"},
            {"role": "stream", "num_frames": 2}, {"role": "assistant", "content": "A red square."},
            {"role": "stream", "num_frames": 1}, {"role": "assistant", "content": "Not learned.", "learn": False},
            {"role": "user", "content": "And now?"}, {"role": "stream", "num_frames": 3},
            {"role": "assistant", "content": "It left."}]
    text = render(tok49, conv)
    ranges = learn_ranges(conv, 49)
    assert [text[r.start:r.stop] for r in ranges] == [f"A red square.{E}", f"It left.{E}"]


def test_learn_ranges_zero_frame_stream_quirk():
    # upstream counts the transition of a zero-frame stream although nothing is rendered (latent mismatch, kept)
    conv = [{"role": "system", "content": "S"}, {"role": "stream", "num_frames": 0},
            {"role": "assistant", "content": "A"}]
    (r,) = learn_ranges(conv, 49)
    assert r.start == len(f"{S}system\n") + 1 + len(f"{E}\n{S}stream\n") + len(f"{E}\n{S}assistant\n")


def test_learn_ranges_reject_unknown_transitions():
    with pytest.raises(KeyError):
        learn_ranges([{"role": "system", "content": "S"}, {"role": "assistant", "content": "A"}])
    with pytest.raises(KeyError):
        learn_ranges([{"role": "user", "content": "Q"}])


def test_special_tokens(tok49):
    assert tok49.bos_token == S and tok49.eos_token == E and tok49.pad_token == "<|endoftext|>"
    ids = tok49("<image><image>", add_special_tokens=False).input_ids
    assert ids == [tok49.convert_tokens_to_ids("<image>")] * 2
