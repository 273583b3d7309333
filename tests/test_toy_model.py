"""The shipped toy model: loads offline, streams the sample video and says what it sees."""

from __future__ import annotations

import json

import pytest

from mmduet_core.model.checkpoint import ASSETS, load_model
from mmduet_core.stream import DuetSession, ResponsePolicy
from mmduet_core.video import read_video


@pytest.fixture(scope="module")
def toy():
    return load_model("toy", device="cpu")


def test_toy_model_loads_with_its_template(toy):
    model, tokenizer = toy
    assert model.frame_num_tokens == 4 and model.config.vision_config.image_size == 64
    assert sum(p.numel() for p in model.parameters()) < 2_000_000
    assert "<image><image><image><image>" in tokenizer.apply_chat_template(
        [{"role": "stream", "num_frames": 1}], tokenize=False)


def test_toy_model_describes_the_sample_video(toy):
    """The sample shows a red square moving down, a white square moving left, then a yellow triangle moving up.
    With the DVC preset policy at 2 fps the model names each visit's colour while it is on screen, and names
    most visits exactly (colour and shape). It gets shapes wrong more often than colours and often gets the direction
    wrong (README, "The toy world"), so neither is asserted for every visit; an untrained model names nothing."""
    model, tokenizer = toy
    visits = json.loads((ASSETS / "sample_toy.json").read_text())["visits"]
    clip = read_video(ASSETS / "sample_toy.mp4", fps=2.0, resolution=model.config.vision_config.image_size)
    session = DuetSession(model, tokenizer, ResponsePolicy("sum", 2.0, remove_assistant_turns=True), fps=2.0)
    session.add_user_message("Please concisely narrate the video in real time.", 0.0)
    list(session.push_frames(clip.frames))
    replies = [r for r in session.responses if r["role"] == "assistant"]
    assert replies, "the toy model never spoke"
    named = 0
    for visit in visits:
        inside = [r["content"] for r in replies if visit["start"] <= r["time"] <= visit["end"]]
        assert any(visit["colour"] in text for text in inside), (visit, replies)
        named += any(f"a {visit['colour']} {visit['shape']}" in text for text in inside)
    assert named >= 2, (named, replies)
