"""The duet demo: settings, playback, pure renderers, and the ipywidgets player driven without a kernel."""

from __future__ import annotations

import asyncio
import datetime
import json
import math

import numpy as np
import pytest
from matplotlib.figure import Figure

from mmduet_core.evaluation.records import duplicate_stats
from mmduet_core.interactive.demo import (
    DEMO_SETTINGS,
    ChatMessage,
    DemoExample,
    DemoSettings,
    DuetPlayback,
    chat_html,
    demo_examples,
    duet_format_figure,
    modes_table_html,
    pace_html,
    placeholder_png,
    png_bytes,
    replay_steps,
    static_html,
    threshold_control,
)
from mmduet_core.interactive.widgets import PAUSE, RESUME, DuetPlayer
from mmduet_core.model.checkpoint import ASSETS, load_model
from mmduet_core.plots import score_timeline
from mmduet_core.stream import HEADS, MODES, DuetSession, policy_trace
from mmduet_core.video import read_video, write_video

from .conftest import shared_path

SAMPLE = ASSETS / "sample_toy.mp4"
SAMPLE_SECONDS = json.loads((ASSETS / "sample_toy.json").read_text())["duration"]


@pytest.fixture(scope="module")
def toy():
    return load_model("toy", device="cpu")


# ---- settings -----------------------------------------------------------------------------------------------

def test_settings_map_the_original_controls_to_duet_settings():
    s = DemoSettings("sum score", ("informative score", "relevance score"), False, 1.5, 2.0)
    assert (s.mode, s.reply_threshold, s.score_heads, s.remove_assistant_turns, s.fps) == (
        "sum", 1.5, ("informative_score", "relevance_score"), False, 0.5)
    assert DemoSettings().mode == "prob" and DemoSettings("z-score").mode == "z"
    # the original app's defaults: single-frame, informative, remove previous turns, 0.3, 0.5 s
    d = DEMO_SETTINGS
    assert (d.mode, d.score_heads, d.remove_assistant_turns, d.reply_threshold, 1 / d.fps, d.frame_rule) == (
        "prob", ("informative_score",), True, 0.3, 0.5, "floor")


@pytest.mark.parametrize("bad", [dict(scores=()), dict(scores=("loudness",)), dict(threshold_mode="always"),
                                 dict(frame_interval=0.0)])
def test_bad_settings_are_refused(bad):
    with pytest.raises(ValueError):
        DemoSettings(**bad)


def test_examples_include_the_original_demo_videos_when_found(tmp_path):
    names = [e.name for e in demo_examples([tmp_path])]
    assert names and all(n.startswith("toy") for n in names)  # no office/drive here
    videos = shared_path("data/videos/office.mp4").parent
    found = {e.name: e for e in demo_examples([tmp_path, videos])}
    office = found["original demo: office.mp4"]
    # upstream's example row: single-frame, informative + relevance, 0.4, 0.5 s, keep previous replies
    assert office.message == "What is happening in the office?"
    assert (office.settings.reply_threshold, 1 / office.settings.fps, office.settings.remove_assistant_turns,
            office.settings.score_heads) == (0.4, 0.5, False, HEADS)
    assert found["original demo: drive.mp4"].message == "Who is driving the car?"


# ---- the policy trace ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("settings", [DemoSettings("single-frame score", threshold=0.5),
                                      DemoSettings("sum score", threshold=1.0),
                                      DemoSettings("z-score", threshold=1.0)])
def test_policy_trace_replays_the_sessions_decisions(toy, settings):
    model, tokenizer = toy
    playback = DuetPlayback(model, tokenizer, SAMPLE, settings)
    playback.send_message("What is happening in the video?")
    steps = playback.run()
    trace = policy_trace(playback.settings, [(s.informative, s.relevance) for s in steps])
    assert [p.fired for p in trace] == [s.reply is not None for s in steps]
    if settings.mode == "sum":  # the level is the running sum, reset after each reply
        fired_levels = [p.level for p in trace if p.fired]
        assert all(level > settings.reply_threshold for level in fired_levels)


def test_policy_trace_on_hand_made_scores():
    scores = [(inf, 0.0) for inf in [0.2, 0.3, 0.6, 0.1, 0.9]]
    trace = policy_trace(DemoSettings("sum score", threshold=1.0), scores)
    assert [round(p.level, 2) for p in trace] == [0.2, 0.5, 1.1, 0.1, 1.0]
    assert [p.fired for p in trace] == [False, False, True, False, False]  # strict >, reset after firing


# ---- playback -----------------------------------------------------------------------------------------------

def test_playback_feeds_a_message_before_the_next_frame(toy):
    """A message sent after frame k is stamped with frame k+1's time and read right before it, exactly as a
    session given the same message at that time."""
    model, tokenizer = toy
    settings = DemoSettings(threshold=0.5)
    playback = DuetPlayback(model, tokenizer, SAMPLE, settings)
    for _ in range(6):
        playback.step()
    sent = playback.send_message("  What is happening in the video?  ")
    assert sent.time == pytest.approx(3.0) and sent.text == "What is happening in the video?"
    playback.run()
    assert playback.finished and len(playback.steps) == len(playback.clip) == math.floor(SAMPLE_SECONDS * 2)
    assert playback.steps[6].user_message == sent.text
    assert playback.step() is None
    reference = DuetSession(model, tokenizer, settings.replace(chunk_frames=32), fps=2.0)
    reference.add_user_message(sent.text, 3.0)
    size = model.config.vision_config.image_size
    list(reference.push_frames(read_video(SAMPLE, fps=2.0, resolution=size, rule="floor").frames))
    assert [round(s.informative, 5) for s in playback.steps] == [round(s.informative, 5) for s in reference.steps]
    def replies(responses):  # the reference holds the message from the start, the playback from frame 6 on
        return [(r["time"], r["content"]) for r in responses if r["role"] == "assistant"]

    assert replies(playback.session.responses) == replies(reference.responses)
    assert [m.role for m in playback.chat].count("assistant") == sum(s.reply is not None for s in playback.steps)


def test_empty_message_is_refused(toy):
    playback = DuetPlayback(*toy, SAMPLE)
    with pytest.raises(ValueError, match="empty"):
        playback.send_message("   ")


def test_current_frame_is_the_original_resolution(toy, tmp_path):
    big = write_video(tmp_path / "big.mp4", (np.kron(f, np.ones((2, 2, 1), np.uint8)) for f in
                                             read_video(SAMPLE, fps=4.0, resolution=64).frames.permute(0, 2, 3, 1).numpy()), 4.0)
    playback = DuetPlayback(*toy, big)
    assert playback.current_frame().shape == (128, 128, 3)  # what the user sees; the model sees its own size
    assert playback.clip.frames.shape[-1] == toy[0].config.vision_config.image_size < 128


# ---- renderers ----------------------------------------------------------------------------------------------

def test_chat_html_stamps_times_and_escapes_text():
    html = chat_html([ChatMessage(1.25, "user", "is <b>this</b> safe?"), ChatMessage(3.0, "assistant", "a red square")])
    assert "[time=1.2s]" in html or "[time=1.3s]" in html
    assert "[time=3.0s]" in html and "a red square" in html
    assert "<b>this</b>" not in html and "&lt;b&gt;this&lt;/b&gt;" in html
    assert ChatMessage(2.0, "assistant", "hi").stamped == "[time=2.0s] hi"


def test_score_figure_and_static_page(toy):
    playback = DuetPlayback(*toy, SAMPLE, DemoSettings("sum score", ("informative score", "relevance score"),
                                                       threshold=1.0))
    playback.send_message("What is happening in the video?")
    playback.run()
    fig = score_timeline(playback.steps, playback.settings, duration=playback.duration)
    assert isinstance(fig, Figure)
    labels = [line.get_label() for line in fig.axes[0].get_lines()]
    assert {"informative", "relevance", "running sum", "reply"} <= set(labels)
    assert png_bytes(fig)[:8] == b"\x89PNG\r\n\x1a\n"
    assert png_bytes(np.zeros((10, 20, 3), np.uint8))[:4] == b"\x89PNG"
    page = static_html(playback)
    assert page.count("<img") >= 2 and "[time=" in page and "sum score" in page


# ---- the widget ---------------------------------------------------------------------------------------------

@pytest.fixture
def player(toy, tmp_path):
    examples = [DemoExample("toy sample", SAMPLE, "What is happening in the video?", DemoSettings(threshold=0.5)),
                DemoExample("toy sum", SAMPLE, "Please simply describe what do you see.",
                            DemoSettings("sum score", ("informative score",), True, 1.5, 1.0))]
    return DuetPlayer(*toy, examples=examples, realtime=False, upload_dir=tmp_path)


def test_player_start_step_message_pause_stop(player):
    assert player.video_path.value == "sample_toy.mp4" and player.video_file() == SAMPLE
    assert player.threshold.value == 0.5
    player.start_button.click()  # no event loop here: nothing plays until step()
    assert player.last_error is None and player.state == "playing"
    assert player.start_button.disabled and player.threshold.disabled and not player.stop_button.disabled
    assert [m.text for m in player.playback.chat] == ["What is happening in the video?"]  # the box was sent
    assert player.message.value == ""
    player.step(4)
    assert player.frame_image.value[:4] == b"\x89PNG" and player.plot.value[:4] == b"\x89PNG"
    assert "video time <b>1.5 s</b>" in player.status.value  # the last fed frame
    player.message.value = "Which shape is it?"
    player.send_button.click()
    assert player.playback.chat[-1].text == "Which shape is it?" and player.playback.chat[-1].time == 2.0
    assert "Which shape is it?" in player.chat.value and "[time=2.0s]" in player.chat.value
    player.pause_button.click()
    assert player.state == "paused" and player.pause_button.description == RESUME
    player.pause_button.click()
    assert player.state == "playing" and player.pause_button.description == PAUSE
    player.step(100)
    assert player.state == "finished" and not player.start_button.disabled and player.pause_button.disabled
    assert player.playback.steps[4].user_message == "Which shape is it?"
    replies = [m for m in player.playback.chat if m.role == "assistant"]
    assert replies and all(f"[time={m.time:.1f}s]" in player.chat.value for m in replies)
    assert "<img" in player.to_static()


def test_player_example_and_controls(player):
    player.example.value = "toy sum"
    assert (player.mode.value, player.threshold.value, player.interval.value) == ("sum", 1.5, 1.0)
    assert player.message.value == "Please simply describe what do you see."
    player.use_relevance.value = True
    player.remove_replies.value = "no"
    s = player.settings()
    assert s.score_heads == HEADS and not s.remove_assistant_turns
    player.start_button.click()
    assert player.playback.clip.fps == 1.0 and len(player.playback.clip) == math.floor(SAMPLE_SECONDS)
    assert player.playback.settings.mode == "sum" and not player.playback.settings.remove_assistant_turns
    player.stop_button.click()
    assert player.state == "stopped" and not player.mode.disabled


def test_player_shows_errors_instead_of_raising(player):
    player.use_informative.value = False
    player.start_button.click()
    assert "score_heads must be" in player.error.value and player.playback is None
    player.use_informative.value = True
    player.video_path.value = "/no/such/video.mp4"
    player.start_button.click()
    assert "no such video file" in player.error.value
    player.message.value = "hello"
    player.send_button.click()
    assert "start a video first" in player.error.value
    player.video_path.value = "/no/<b>such</b>.mp4"  # a message is shown as text, never as markup
    player.start_button.click()
    assert "/no/&lt;b&gt;such&lt;/b&gt;.mp4: no such video file" in player.error.value
    assert player.last_error == "FileNotFoundError: /no/<b>such</b>.mp4: no such video file"


def test_player_upload_goes_to_disk_not_widget_state(player, tmp_path):
    player.upload.value = ({"name": "clip.mp4", "type": "video/mp4", "size": SAMPLE.stat().st_size,
                            "content": memoryview(SAMPLE.read_bytes()),
                            "last_modified": datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)},)
    assert player.video_path.value == "clip.mp4 (uploaded)" and player.video_file() == tmp_path / "clip.mp4"
    assert (tmp_path / "clip.mp4").read_bytes() == SAMPLE.read_bytes() and player.upload.value == ()
    player.start_button.click()
    assert player.last_error is None and player.playback.clip.path.endswith("clip.mp4")


def test_player_plays_on_the_event_loop_and_pause_holds_it(player):
    """Started inside a running loop, playback is a task: it yields between frames, so Pause (and a message)
    take effect while it runs, and it resumes where it stopped."""
    async def scenario():
        player.start()
        assert player._task is not None
        for _ in range(200):
            await asyncio.sleep(0)
            if len(player.playback.steps) >= 3:
                break
        player.toggle_pause()
        held = len(player.playback.steps)
        player.send("Which shape is it?")
        for _ in range(20):
            await asyncio.sleep(0.01)
        assert len(player.playback.steps) == held  # paused: no frame fed
        player.toggle_pause()
        await asyncio.wait_for(player._task, timeout=60)
        return held

    held = asyncio.run(scenario())
    assert player.state == "finished" and len(player.playback.steps) == math.floor(SAMPLE_SECONDS * 2)
    assert player.playback.steps[held].user_message == "Which shape is it?"


# ---- each reply mode its own threshold ----------------------------------------------------------------------

def test_threshold_control_follows_the_modes():
    for mode in ("prob", "sum", "z"):
        control = threshold_control(mode)
        assert (control.low, control.high) == MODES[mode].threshold_range
        assert control.default == MODES[mode].default_threshold and control.unit == MODES[mode].unit
    assert threshold_control("sum").default == 1.5  # the original demo's sum-score example
    assert threshold_control("prob", heads=2).high == 2.0  # one probability per head, summed
    with pytest.raises(ValueError):
        threshold_control("always")
    table = modes_table_html()
    assert all(MODES[m].label in table for m in MODES) and table.count("<tr>") == len(MODES) + 1


def test_player_threshold_follows_the_mode(player):
    """Switching mode ranges the slider to that mode's unit and gives it that mode's threshold (its default at
    first, later the value last used in it); the rule of the mode is written under the control."""
    assert (player.mode.value, player.threshold.value, player.threshold.max) == ("prob", 0.5, 1.0)
    assert "probability" in player.threshold_label.value and "single-frame score" in player.rule.value
    player.mode.value = "sum"
    assert (player.threshold.min, player.threshold.max, player.threshold.value) == (0.0, 5.0, 1.5)
    assert "summed score" in player.threshold_label.value and "restarts at 0" in player.rule.value
    player.threshold.value = 2.5
    player.mode.value = "z"
    assert (player.threshold.max, player.threshold.value) == (4.0, 1.0)
    assert "standard deviations" in player.threshold_label.value and "std" in player.rule.value
    player.mode.value = "sum"
    assert player.threshold.value == 2.5
    assert player.settings().reply_threshold == 2.5 and player.settings().mode == "sum"
    player.mode.value = "prob"
    assert player.threshold.value == 0.5
    player.use_relevance.value = True
    assert player.threshold.max == 2.0  # two heads summed
    player.threshold.value = 1.4
    player.use_relevance.value = False
    assert player.threshold.value == 1.0  # back inside one head's range


def test_player_before_start_shows_placeholders_and_no_folders(player):
    assert player.frame_image.value[:4] == b"\x89PNG" and player.plot.value[:4] == b"\x89PNG"
    assert "shown while playing" in player.pace.value

    def texts(widget):
        own = [v for v in (getattr(widget, "value", None), getattr(widget, "description", None)) if isinstance(v, str)]
        return own + [t for child in getattr(widget, "children", ()) for t in texts(child)]

    shown = " ".join(texts(player))
    assert str(ASSETS) not in shown and str(SAMPLE.parent) not in shown and "/" not in player.video_path.value
    assert "Frame interval (seconds between frames)" in shown and player.interval.description == ""


def test_pace_says_real_time_or_behind():
    on_time = pace_html([0.1, 0.12], 0.5)
    assert "duet-realtime" in on_time and "real time" in on_time and "behind" not in on_time
    behind = pace_html([1.0, 1.0], 0.5)
    assert "duet-behind" in behind and "behind real time" in behind and "0.50x" in behind
    assert placeholder_png("press Start", 100, 60)[:4] == b"\x89PNG"


def test_player_reports_its_pace(player):
    player.start_button.click()
    player.step(3)
    assert len(player.step_seconds) == 3 and "duet-pace" in player.pace.value
    assert ("duet-realtime" in player.pace.value) == (sum(player.step_seconds) / 3 <= 0.5 * 1.05)


# ---- teaching figures ---------------------------------------------------------------------------------------

def test_replayed_modes_match_sessions_run_with_them(toy):
    """With previous replies removed, the scores do not depend on the replies: replaying another mode's rule over a
    session's scores gives the frames a session run with that mode replies at."""
    model, tokenizer = toy
    base = DemoSettings(threshold=0.5)
    runs = {}
    for mode, threshold in (("prob", 0.5), ("sum", 1.5), ("z", 1.0)):
        playback = DuetPlayback(model, tokenizer, SAMPLE, base.replace(mode=mode, reply_threshold=threshold))
        playback.send_message("What is happening in the video?")
        runs[mode] = playback.run(progress=True)
    for mode in ("sum", "z"):
        replayed = replay_steps(runs["prob"], base.replace(mode=mode, reply_threshold={"sum": 1.5, "z": 1.0}[mode]))
        assert [s.reply is not None for s in replayed] == [s.reply is not None for s in runs[mode]]
        assert [s.reply for s in replayed if s.reply and s.reply != "(reply)"] == \
            [a.reply for a, b in zip(runs[mode], runs["prob"], strict=True) if a.reply and b.reply]


def test_duet_format_figure_and_record(toy):
    playback = DuetPlayback(*toy, SAMPLE, DemoSettings(threshold=0.5))
    with pytest.raises(ValueError, match="no frames yet"):
        duet_format_figure(playback)
    playback.send_message("What is happening in the video?")
    playback.run()
    fig = duet_format_figure(playback)
    assert isinstance(fig, Figure) and len(fig.axes) == 3
    texts = [t.get_text() for t in fig.axes[2].texts]
    assert any(t.startswith("you: What is happening") for t in texts)
    distinct = len({m.text for m in playback.chat if m.role == "assistant"})
    assert sum(t.startswith("MMDuet: ") for t in texts) <= distinct
    record = playback.record("sample")
    assert record["question_id"] == "sample" and len(record["debug_data"]) == len(playback.steps)
    stats = duplicate_stats([record])
    replies = [m.text for m in playback.chat if m.role == "assistant"]
    assert stats["turns"] == len(replies) and stats["distinct_turns"] == len(set(replies))
