"""The live duet demo without a user interface: the original Gradio app's settings and examples, one playback
object that steps a `DuetSession` frame by frame, and pure renderers (frame image, score plot, chat log, the
threshold control of each reply mode, the playback pace, a figure of the duet format, a static page of a finished
session). The ipywidgets player (`widgets.DuetPlayer`) is a thin layer over this module; tests and exported
reports use it directly, no kernel needed.

    playback = DuetPlayback(model, tokenizer, "office.mp4", DEMO_SETTINGS.replace(reply_threshold=0.4))
    playback.send_message("What is happening in the office?")   # stamped with the next frame's time
    while not playback.finished:
        step = playback.step()                                     # one frame: scores, maybe a reply
    html = static_html(playback)                                   # what a report shows without a kernel
"""

from __future__ import annotations

import base64
import html
import io
import math
import textwrap
import threading
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from matplotlib.figure import Figure

from ..errors import InputError
from ..model.checkpoint import ASSETS
from ..plots import INFORMATIVE, RELEVANCE, score_timeline
from ..stream import HEADS, MODES, DuetSession, DuetSettings, StepRecord, policy_trace
from ..video import Clip, read_video

DEMO_MAX_FRAMES = 400  # upstream's demo loader cap
# the original app's defaults: single-frame score 0.3 on the informative head, previous replies removed, 2 fps,
# frames counted with floor as its loader does; one forward per frame, so a message is read at its frame
DEMO_SETTINGS = DuetSettings(fps=2.0, max_frames=DEMO_MAX_FRAMES, frame_rule="floor", mode="prob",
                             reply_threshold=0.3, remove_assistant_turns=True, z_warmup_frames=4, chunk_frames=1)


def DemoSettings(threshold_mode: str = "single-frame score", scores=("informative score",),  # noqa: N802
                 remove_previous_replies: bool = True, threshold: float = 0.3, frame_interval: float = 0.5,
                 z_first_frames: int = 4) -> DuetSettings:
    """Old name, kept for existing code: the demo takes `DuetSettings` now (labels as in the original app:
    "single-frame score" is mode "prob", "sum score" "sum", "z-score" "z"; frame_interval is 1 / fps)."""
    modes = {info.label: mode for mode, info in MODES.items()}
    if not frame_interval > 0:
        raise InputError(f"frame_interval must be > 0 seconds, not {frame_interval!r}")
    if threshold_mode not in modes:
        raise InputError(f"threshold_mode must be one of {', '.join(modes)}, not {threshold_mode!r}")
    return DEMO_SETTINGS.replace(mode=modes[threshold_mode], score_heads=tuple(s.replace(" ", "_") for s in scores),
                                 remove_assistant_turns=remove_previous_replies, reply_threshold=threshold,
                                 fps=1.0 / frame_interval, z_warmup_frames=z_first_frames)


@dataclass(frozen=True)
class DemoExample:
    """A video with the message and settings the demo starts it with."""

    name: str
    video: Path
    message: str
    settings: DuetSettings
    note: str = ""


ORIGINAL_EXAMPLES = (  # upstream demo/app.py's examples (cooking.mp4 was never published)
    ("office.mp4", "What is happening in the office?"),
    ("drive.mp4", "Who is driving the car?"),
)


def demo_examples(video_dirs: Sequence[str | Path] = ()) -> list[DemoExample]:
    """The shipped toy clips, then the original demo's office and drive examples when their videos are found in
    one of `video_dirs` (they come with the original repository's `demo/assets`; they need the 7B model)."""
    toy = DEMO_SETTINGS.replace(reply_threshold=0.5)
    examples = [
        DemoExample("toy: shapes crossing (1 min)", ASSETS / "demo_toy.mp4", "What is happening in the video?", toy,
                    "toy world test video; the shipped toy model narrates it"),
        DemoExample("toy: two shapes (12 s)", ASSETS / "sample_toy.mp4", "What is happening in the video?", toy,
                    "toy world test video test000"),
    ]
    original = DEMO_SETTINGS.replace(reply_threshold=0.4, score_heads=HEADS, remove_assistant_turns=False)
    for filename, message in ORIGINAL_EXAMPLES:
        found = next((Path(d) / filename for d in video_dirs if (Path(d) / filename).is_file()), None)
        if found is not None:
            examples.append(DemoExample(f"original demo: {filename}", found, message, original,
                                        "upstream's example; meaningful with the released 7B model"))
    return [e for e in examples if e.video.is_file()]


# ---- the playback -------------------------------------------------------------------------------------------

@dataclass
class ChatMessage:
    time: float
    role: Literal["user", "assistant"]
    text: str

    @property
    def stamped(self) -> str:
        """The original demo's form: `[time=X.Xs] text`."""
        return f"[time={self.time:.1f}s] {self.text}"


class DuetPlayback:
    """One video played through one `DuetSession`, a frame per `step()`; the state of a demo run.

    Every access to the session goes through one lock, so a message sent from another thread (or widget
    callback) is inserted between two frames, never in the middle of one.
    """

    def __init__(self, model, tokenizer, video: str | Path | Clip, settings: DuetSettings | None = None):
        self.settings = (settings or DEMO_SETTINGS).replace(chunk_frames=1)
        s = self.settings
        resolution = s.resolution or model.config.vision_config.image_size
        self.clip = video if isinstance(video, Clip) else read_video(
            video, fps=s.fps, max_frames=s.max_frames, resolution=resolution, rule=s.frame_rule, keep_original=True)
        if len(self.clip) == 0:
            raise InputError(f"{self.clip.path}: no frames at {s.fps:g} fps")
        self.session = DuetSession(model, tokenizer, s, fps=self.clip.fps)
        with torch.no_grad():
            self.embeds = model.encode_frames(self.clip.frames)  # (T, n, D), upstream pre-encodes the video
        self._lock = threading.Lock()

    @property
    def finished(self) -> bool:
        return self.session.frame_index >= len(self.clip)

    @property
    def steps(self) -> list[StepRecord]:
        return self.session.steps

    @property
    def chat(self) -> list[ChatMessage]:
        """Messages and replies in the order they happened, each stamped with its video time."""
        return [ChatMessage(r["time"], r["role"], r["content"]) for r in self.session.responses]

    @property
    def video_time(self) -> float:
        """Time of the next frame to feed (the time a message sent now is stamped with, as upstream)."""
        return self.session.video_time

    @property
    def duration(self) -> float:
        return len(self.clip) / self.clip.fps

    def current_frame(self) -> np.ndarray:
        """The last fed frame at its original resolution, (H, W, 3) uint8 (the first frame before any step)."""
        return self.frame(max(self.session.frame_index - 1, 0))

    def frame(self, index: int) -> np.ndarray:
        """Frame `index` at its original resolution (the model's input resolution when originals were not kept)."""
        if self.clip.original is not None:
            return self.clip.original[index]
        return self.clip.frames[index].permute(1, 2, 0).numpy()

    def send_message(self, text: str) -> ChatMessage:
        """Queue a user message; the model reads it before the next frame."""
        text = text.strip()
        if not text:
            raise InputError("empty message")
        with self._lock:
            time = self.session.video_time
            self.session.add_user_message(text, time)
        return ChatMessage(time, "user", text)

    def step(self) -> StepRecord | None:
        """Feed the next frame; returns its step record (None when the video is over)."""
        with self._lock:
            if self.finished:
                return None
            return self.session.push_frame(self.embeds[self.session.frame_index])

    def run(self, progress: bool = False) -> list[StepRecord]:
        """Play the rest of the video without pacing (with `progress`, a progress bar over the frames)."""
        from tqdm.auto import tqdm

        with tqdm(total=len(self.clip) - self.session.frame_index, desc="frames", unit="frame",
                  disable=not progress) as bar:
            while not self.finished:
                self.step()
                bar.update(1)
        return self.steps

    def record(self, question_id: str = "session") -> dict:
        """The session so far as a prediction record (upstream's JSONL schema), for the evaluators' tools."""
        with self._lock:
            return self.session.to_record(question_id, self.clip.duration)


# ---- renderers (pure: data in, PNG bytes / Figure / HTML string out) ----------------------------------------

def png_bytes(image: np.ndarray | Figure, max_side: int | None = None) -> bytes:
    """An (H, W, 3) uint8 frame or a matplotlib Figure as PNG bytes."""
    if isinstance(image, Figure):
        buffer = io.BytesIO()
        image.savefig(buffer, format="png", dpi=image.dpi)
        return buffer.getvalue()
    from PIL import Image

    picture = Image.fromarray(np.ascontiguousarray(image))
    if max_side and max(picture.size) > max_side:
        picture.thumbnail((max_side, max_side))
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


CHAT_STYLE = (
    "font-family:sans-serif;font-size:13px;height:100%;overflow-y:auto;padding:6px;background:#fafafa;"
    "border:1px solid #ddd;border-radius:6px;box-sizing:border-box")


def chat_html(messages: Sequence[ChatMessage], height_px: int = 320) -> str:
    """The chat log as HTML: user messages right, replies left, each stamped `[time=X.Xs]`; newest at the
    bottom (the box scrolls)."""
    rows = []
    for m in messages:
        user = m.role == "user"
        bubble = ("background:#dcebff;margin-left:20%" if user else "background:#ffffff;margin-right:20%")
        who = "you" if user else "MMDuet"
        rows.append(f"<div class='duet-msg duet-{m.role}' style='{bubble};border:1px solid #d0d7de;"
                    f"border-radius:8px;padding:4px 8px;margin:4px 0'><b>{who}</b> "
                    f"<span style='color:#666'>[time={m.time:.1f}s]</span> {html.escape(m.text)}</div>")
    if not rows:
        rows.append("<div style='color:#888'>No messages yet. Press Start; replies appear here.</div>")
    return (f"<div class='duet-chat' style='{CHAT_STYLE};height:{height_px}px;display:flex;"
            f"flex-direction:column-reverse'><div>{''.join(rows)}</div></div>")


def status_html(playback: DuetPlayback | None, state: str) -> str:
    """Video time and the last frame's scores, one line."""
    if playback is None or not playback.steps:
        return f"<b>{html.escape(state)}</b>"
    last = playback.steps[-1]
    return (f"<b>{html.escape(state)}</b> &nbsp; video time <b>{last.time:.1f} s</b> / {playback.duration:.1f} s"
            f" &nbsp; informative <b style='color:{INFORMATIVE}'>{last.informative:.2f}</b>"
            f" &nbsp; relevance <b style='color:{RELEVANCE}'>{last.relevance:.2f}</b>")


def _img_tag(data: bytes, alt: str, style: str = "") -> str:
    return f"<img alt='{html.escape(alt)}' style='{style}' src='data:image/png;base64,{base64.b64encode(data).decode()}'>"


def static_html(playback: DuetPlayback, frames_shown: int = 6) -> str:
    """A finished (or paused) session as self-contained HTML: settings, score plot, frames at the replies,
    chat log. What exported reports show where widgets cannot run."""
    settings = playback.settings.describe()
    plot = _img_tag(png_bytes(score_timeline(playback.steps, playback.settings, duration=playback.duration,
                                             size=(8, 2.8))),
                    "scores over time", "max-width:100%")
    picks = sorted({s.frame_index for s in playback.steps if s.reply is not None})[:frames_shown] or [0]
    strip = "".join(
        f"<figure style='display:inline-block;margin:4px;text-align:center'>"
        f"{_img_tag(png_bytes(playback.frame(k), 240), f'frame at {k / playback.clip.fps:.1f} s', 'height:120px')}"
        f"<figcaption style='font-size:11px'>{k / playback.clip.fps:.1f} s</figcaption></figure>"
        for k in picks if k < len(playback.clip))
    return (f"<div class='duet-static' style='font-family:sans-serif'>"
            f"<p style='font-size:13px'><b>{html.escape(Path(playback.clip.path).name)}</b>: "
            f"{len(playback.steps)} of {len(playback.clip)} frames; {html.escape(settings)}</p>"
            f"{plot}<div>{strip}</div>{chat_html(playback.chat, 260)}</div>")


# ---- the reply modes, for people ----------------------------------------------------------------------------

@dataclass(frozen=True)
class ThresholdControl:
    """What the threshold slider of one reply mode shows: its range and step, its default, its unit, its rule."""

    mode: str
    low: float
    high: float
    step: float
    default: float
    unit: str
    rule: str


def threshold_control(mode: str, heads: int = 1) -> ThresholdControl:
    """The threshold slider of `mode`, from `MODES`. A single-frame score is one probability per head, summed, so
    its range grows with the number of heads used."""
    if mode not in MODES:
        raise InputError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
    info = MODES[mode]
    low, high = info.threshold_range
    if mode == "prob":
        high *= max(heads, 1)
    step = 0.05 if high - low <= 2 else 0.1
    return ThresholdControl(mode, low, high, step, info.default_threshold, info.unit, info.rule)


def mode_rule_html(mode: str) -> str:
    """The mode's rule as one line, for the line under the mode control."""
    return (f"<div class='duet-rule' style='font-size:12px;color:#444;line-height:1.3;white-space:normal'>"
            f"<b>{html.escape(MODES[mode].label)}</b>: {html.escape(MODES[mode].rule)}</div>")


CELL = "text-align:left;vertical-align:top;padding:3px 8px"


def modes_table_html(modes: Sequence[str] = ("prob", "sum", "z", "never")) -> str:
    """Every reply mode with its rule, threshold unit, usual range and default (from `MODES`), as an HTML table."""
    rows = []
    for mode in modes:
        info = MODES[mode]
        unit = html.escape(info.unit) or "-"
        span = f"{info.threshold_range[0]:g} to {info.threshold_range[1]:g}" if info.unit else "-"
        default = f"{info.default_threshold:g}" if info.unit else "-"
        cells = (f"<b>{html.escape(info.label)}</b><br><code>{mode}</code>", html.escape(info.rule), unit, span, default)
        rows.append("<tr>" + "".join(f"<td style='{CELL}'>{c}</td>" for c in cells) + "</tr>")
    head = "".join(f"<th style='{CELL}'>{h}</th>" for h in ("mode", "rule (s(t): a frame's score)", "threshold in",
                                                           "range", "default"))
    return ("<table class='duet-modes' style='font-size:13px;border-collapse:collapse'>"
            f"<tr>{head}</tr>{''.join(rows)}</table>")


def replay_steps(steps: Sequence[StepRecord], settings: DuetSettings) -> list[StepRecord]:
    """The steps with the replies the rule of `settings` gives on the same scores: a frame where it fires keeps
    the session's reply, or is marked "(reply)" where the session was silent. Exact when replies are removed
    from the context (the scores then do not depend on earlier replies); otherwise a what-if on these scores."""
    trace = policy_trace(settings, [(s.informative, s.relevance) for s in steps])
    return [replace(s, reply=(s.reply or "(reply)") if point.fired else None)
            for s, point in zip(steps, trace, strict=True)]


# ---- placeholders and pace ----------------------------------------------------------------------------------

def placeholder_png(text: str, width: int = 360, height: int = 240) -> bytes:
    """A light grey PNG with `text` in the middle: what an image shows before there is anything to show."""
    from PIL import Image, ImageDraw

    picture = Image.new("RGB", (width, height), (244, 244, 244))
    draw = ImageDraw.Draw(picture)
    draw.rectangle((0, 0, width - 1, height - 1), outline=(210, 210, 210))
    box = draw.multiline_textbbox((0, 0), text, align="center")
    draw.multiline_text(((width - (box[2] - box[0])) / 2, (height - (box[3] - box[1])) / 2), text,
                        fill=(120, 120, 120), align="center")
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


def pace_html(step_seconds: Sequence[float], interval: float, window: int = 10) -> str:
    """Whether playback keeps up with the video: the mean time the last `window` frames took to process (model
    and displays) against the interval between frames."""
    if not step_seconds:
        return "<span class='duet-pace' style='font-size:12px;color:#888'>pace: shown while playing</span>"
    recent = list(step_seconds)[-window:]
    per_frame = sum(recent) / len(recent)
    detail = f"a frame takes {per_frame:.2f} s to process; frames are {interval:.2f} s apart"
    if per_frame <= interval * 1.05:
        return (f"<span class='duet-pace duet-realtime' style='font-size:12px;color:#1a7f37'>&#9679; real time "
                f"({detail})</span>")
    return (f"<span class='duet-pace duet-behind' style='font-size:12px;color:#bc4c00'>&#9679; behind real time: "
            f"the video plays at {interval / per_frame:.2f}x ({detail}; a longer frame interval keeps up)</span>")


# ---- the duet format in one figure --------------------------------------------------------------------------

USER, REPLY = "#dcebff", "#f2f2f2"


def duet_format_figure(playback: DuetPlayback, title: str | None = None, thumbnails: int = 24,
                       size: tuple[float, float] = (11.0, 5.4)) -> Figure:
    """A session as the duet format: the frames as they stream in, the user's turn where it was read, after every
    frame the score the reply rule compares with the threshold, and a reply wherever it fired (a reply that
    repeats the previous one is marked, not written again). Built without pyplot."""
    steps, settings = playback.steps, playback.settings
    if not steps:
        raise InputError("the session has no frames yet: step or run it first")
    dt = 1.0 / playback.clip.fps
    end = steps[-1].time + dt
    fig = Figure(figsize=size, dpi=100)
    grid = fig.add_gridspec(3, 1, height_ratios=(1.0, 1.5, 1.6), hspace=0.12, left=0.11, right=0.985,
                            top=0.9, bottom=0.1)
    ax_frames, ax_score, ax_chat = (fig.add_subplot(grid[k]) for k in range(3))
    every = max(1, math.ceil(len(steps) / thumbnails))
    for s in steps[::every]:
        ax_frames.imshow(playback.frame(s.frame_index), extent=(s.time, s.time + every * dt * 0.94, 0, 1),
                         aspect="auto", interpolation="nearest")
    trace = policy_trace(settings, [(s.informative, s.relevance) for s in steps])
    times = [s.time for s in steps]
    levels = [p.level for p in trace]
    ax_score.bar(times, levels, width=dt * 0.8, align="edge", color=[INFORMATIVE if p.fired else "#b9cfe4"
                                                                     for p in trace])
    if settings.mode == "z":
        ax_score.step(times + [end], [p.threshold for p in trace] + [trace[-1].threshold], where="post",
                      color="black", ls="--", lw=1)
    elif settings.can_reply:
        ax_score.axhline(settings.reply_threshold, color="black", ls="--", lw=1)
    heads = " + ".join(h.removesuffix("_score") for h in settings.score_heads)
    level = "scores summed since the last reply" if settings.mode == "sum" else f"score s(t) = {heads}"
    ax_score.text(0.003, 0.97, f"{level}; dashed: threshold ({MODES[settings.mode].label} "
                  f"{settings.reply_threshold:g}); dark: the rule fires", transform=ax_score.transAxes,
                  va="top", fontsize=8, color="#333")
    ax_score.set_ylim(0, max(levels + [settings.reply_threshold if settings.can_reply else 0, 1.0]) * 1.25)
    for s in steps:
        if s.reply is not None:
            for ax in (ax_score, ax_chat):
                ax.axvline(s.time + dt * 0.4, color="#999999", lw=0.6, ls=":")
    _chat_lane(ax_chat, playback.chat, dt)
    for ax, label in ((ax_frames, "frames"), (ax_score, "scores"), (ax_chat, "turns")):
        ax.set_xlim(0, end)
        ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=10)
        ax.tick_params(labelsize=8)
        if ax is not ax_chat:
            ax.tick_params(labelbottom=False)
    ax_frames.set_yticks([])
    ax_chat.set_yticks([])
    ax_chat.set_xlabel("video time (s)")
    fig.suptitle(title or "The duet format: frames stream in, the user speaks at any time, and after every frame "
                 "the model decides whether to reply", fontsize=11)
    return fig


def _chat_lane(ax, chat: Sequence[ChatMessage], dt: float, lanes: int = 3) -> None:
    """User turns (top) and replies as boxes at their times, replies cycling through `lanes` rows so neighbours
    do not overlap; a reply equal to the previous one is a small marker on the bottom line."""
    ax.set_ylim(-0.5, lanes + 1)
    previous, lane = None, 0
    for m in chat:
        x = m.time + dt * 0.4
        if m.role == "assistant" and m.text == previous:
            ax.plot([x], [-0.2], "v", color="#666666", ms=4)
            continue
        if m.role == "assistant":
            previous, y, lane = m.text, lanes - 0.5 - lane % lanes, lane + 1
        else:
            y = lanes + 0.5
        text = ("you: " if m.role == "user" else "MMDuet: ") + m.text
        ax.text(x, y, textwrap.shorten(text, 44, placeholder="..."), fontsize=7, va="center", ha="left",
                bbox={"boxstyle": "round,pad=0.25", "fc": USER if m.role == "user" else REPLY, "ec": "#999999",
                      "lw": 0.6})
    if any(m.role == "assistant" for m in chat):
        ax.text(0.997, 0.96, "a marker on the bottom line: a reply repeating the previous one",
                transform=ax.transAxes, fontsize=7, ha="right", va="top", color="#666666")
