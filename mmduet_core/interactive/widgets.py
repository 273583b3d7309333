"""The interactive duet player for JupyterLab: the original Gradio demo as ipywidgets.

A thin layer over `demo.py`: the controls build `DuetSettings`, Start makes a `DuetPlayback`, and a playback
task on the kernel's event loop feeds one frame at a time, paced to real time, yielding to the loop between
frames so Pause, Stop and messages are handled there (one session, every access serialised by the playback's
lock). Without a running event loop (tests, scripts) `step()` drives it by hand.

    player = DuetPlayer(model, tokenizer, examples=demo_examples())
    display(player)                      # pick an example or a video, press Start, type while it plays
    HTML(player.to_static())             # the finished session for an exported report
"""

from __future__ import annotations

import asyncio
import html
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import ipywidgets as w

from ..plots import score_timeline
from ..stream import MODES, DuetSettings, StepRecord
from .demo import (
    DEMO_SETTINGS,
    DemoExample,
    DuetPlayback,
    chat_html,
    mode_rule_html,
    pace_html,
    placeholder_png,
    png_bytes,
    static_html,
    status_html,
    threshold_control,
)

PAUSE, RESUME = "Pause Video", "Resume Video"
PLOT_EVERY_S = 1.0  # redraw the score plot at most this often while playing: drawing it costs a frame's time
FRAME_PLACEHOLDER = "Press Start:\nthe current frame appears here"
PLOT_PLACEHOLDER = "The scores of every frame, the threshold\nand the replies are drawn here while the video plays"


def range_threshold_slider(slider: w.FloatSlider, mode: str, heads: int, remembered: dict[str, float]):
    """Give `slider` the reply mode's range and step, and the threshold last used in that mode (at first the
    mode's default); returns the mode's `ThresholdControl`."""
    control = threshold_control(mode, heads)
    value = min(max(remembered.get(control.mode, control.default), control.low), control.high)
    with slider.hold_trait_notifications():
        slider.min, slider.max = control.low, control.high
        slider.step, slider.value = control.step, value
    return control


class ShowsErrors:
    """For a widget with an `error` HTML line: callbacks show their errors there (and in `last_error`) instead of
    losing them in the kernel log; a bad input is one line, anything else also prints its traceback."""

    error: w.HTML
    last_error: str | None = None

    def _guard(self, callback: Callable) -> Callable:
        def run(*args):
            try:
                callback(*args)
            except Exception as exc:  # noqa: BLE001
                self._show_error(exc)
        return run

    def _show_error(self, exc: BaseException) -> None:
        self.last_error = f"{type(exc).__name__}: {exc}"
        self.error.value = f"<span style='color:#b00020;font-size:12px'>{html.escape(self.last_error)}</span>"
        if not isinstance(exc, ValueError | FileNotFoundError):
            traceback.print_exception(exc)

    def _clear_error(self) -> None:
        self.error.value, self.last_error = "", None


class DuetPlayer(ShowsErrors, w.VBox):
    """Video, settings, Start / Pause / Stop, the current frame, live scores, the chat and a message box."""

    def __init__(self, model, tokenizer, examples: Sequence[DemoExample] = (), video: str | Path | None = None,
                 settings: DuetSettings | None = None, realtime: bool = True, upload_dir: str | Path | None = None):
        self.model, self.tokenizer = model, tokenizer
        self.examples = list(examples)
        self.realtime = realtime  # sleep to the video's pace when inference is faster
        self.upload_dir = Path(upload_dir or tempfile.mkdtemp(prefix="mmduet-upload-"))
        self.playback: DuetPlayback | None = None
        self.state = "ready"
        self.step_seconds: list[float] = []  # time each frame took to process and draw (the pace indicator)
        self._task: asyncio.Task | None = None
        self._paused = False
        self._plotted_at = 0.0
        self._videos: dict[str, Path] = {}  # what the video box shows -> the file (no folders on screen)
        self._thresholds = {m: MODES[m].default_threshold for m in MODES}  # each mode keeps its own threshold
        self._adjusting = False  # set while the threshold slider is re-ranged for another mode
        self._build()
        settings = settings or (self.examples[0].settings if self.examples else DEMO_SETTINGS)
        if self.examples and video is None:
            self._apply_example(self.examples[0])
        else:
            self.video_path.value = self._show_video(Path(video)) if video else ""
            self._apply_settings(settings)
        super().__init__([self.title, w.HBox([self.controls, self.display_area])],
                         layout=w.Layout(width="100%"))
        self.add_class("duet-player")  # a handle for styling and for the browser test
        self._render()

    # ---- layout -------------------------------------------------------------------------------------------

    def _build(self) -> None:
        self.title = w.HTML("<h3 style='margin:4px 0'>MMDuet · VideoLLM Knows When to Speak</h3>"
                            "<span style='font-size:12px;color:#555'>Pick an example or a video, press Start, "
                            "type a message while it plays: it is read at the current video time. After every "
                            "frame the model scores it and speaks when the score passes the threshold.</span>")
        wide = w.Layout(width="300px")
        style = {"description_width": "90px"}
        names = [e.name for e in self.examples]
        self.example = w.Dropdown(options=names or ["(none)"], value=names[0] if names else "(none)",
                                  description="Example", layout=wide, style=style)
        self.video_path = w.Text(description="Video file", placeholder="path/to/video.mp4", layout=wide, style=style)
        self.upload = w.FileUpload(accept="video/*", multiple=False, description="Upload video")
        self.mode = w.RadioButtons(options=[(MODES[m].label, m) for m in ("prob", "sum", "z")],
                                   description="Reply mode", style=style)
        self.rule = w.HTML(layout=w.Layout(width="300px"))
        self.use_informative = w.Checkbox(description="informative score", indent=False)
        self.use_relevance = w.Checkbox(description="relevance score", indent=False)
        self.remove_replies = w.RadioButtons(options=["yes", "no"], description="Remove previous replies",
                                             style={"description_width": "initial"})
        self.threshold_label = w.HTML()
        self.threshold = w.FloatSlider(min=0, max=1, step=0.05, layout=wide, readout_format=".2f")
        self.interval_label = w.HTML("<span style='font-size:13px'>Frame interval (seconds between frames)</span>")
        self.interval = w.FloatSlider(min=0.1, max=10, step=0.1, layout=wide, readout_format=".1f")
        self.start_button = w.Button(description="Start", button_style="primary", icon="play")
        self.pause_button = w.Button(description=PAUSE, disabled=True, icon="pause")
        self.stop_button = w.Button(description="Stop Video", button_style="danger", disabled=True, icon="stop")
        self.frame_image = w.Image(format="png", layout=w.Layout(width="360px", height="auto",
                                                                   border="1px solid #ddd"))
        self.status = w.HTML()
        self.pace = w.HTML()
        self.plot = w.Image(format="png", layout=w.Layout(width="100%", max_width="720px"))
        self.chat = w.HTML(layout=w.Layout(width="100%"))
        self.message = w.Text(placeholder="Type a message; it is read at the current video time",
                              layout=w.Layout(flex="1"))
        self.send_button = w.Button(description="Send", icon="paper-plane")
        self.error = w.HTML()
        self.controls = w.VBox([
            self.example, self.video_path, self.upload, self.mode, self.rule,
            w.HTML("<span style='font-size:13px'>Scores used</span>"), self.use_informative, self.use_relevance,
            self.remove_replies, self.threshold_label, self.threshold, self.interval_label, self.interval,
            w.HBox([self.start_button, self.pause_button]), self.stop_button, self.error,
        ], layout=w.Layout(width="320px", padding="0 12px 0 0"))
        self.display_area = w.VBox([
            w.HBox([self.frame_image, w.VBox([self.chat], layout=w.Layout(flex="1", padding="0 0 0 10px"))]),
            self.status, self.pace, self.plot, w.HBox([self.message, self.send_button], layout=w.Layout(width="100%")),
        ], layout=w.Layout(flex="1"))
        self.example.observe(self._guard(self._on_example), names=["value"])
        self.upload.observe(self._guard(self._on_upload), names=["value"])
        self.mode.observe(self._guard(self._on_mode), names=["value"])
        self.threshold.observe(self._guard(self._on_threshold), names=["value"])
        self.use_informative.observe(self._guard(self._on_heads), names=["value"])
        self.use_relevance.observe(self._guard(self._on_heads), names=["value"])
        self.start_button.on_click(self._guard(lambda _: self.start()))
        self.pause_button.on_click(self._guard(lambda _: self.toggle_pause()))
        self.stop_button.on_click(self._guard(lambda _: self.stop()))
        self.send_button.on_click(self._guard(lambda _: self.send()))
        with warnings.catch_warnings():  # Enter in the box. ipywidgets suggests observing `value` instead, which
            warnings.simplefilter("ignore", DeprecationWarning)  # also fires on blur and would send half-typed text
            self.message.on_submit(self._guard(lambda _: self.send()))

    # ---- settings -----------------------------------------------------------------------------------------

    def _heads(self) -> tuple[str, ...]:
        return tuple(head for head, box in (("informative_score", self.use_informative),
                                            ("relevance_score", self.use_relevance)) if box.value)

    def settings(self) -> DuetSettings:
        """The controls as validated `DuetSettings`."""
        return self._base_settings.replace(mode=self.mode.value, score_heads=self._heads(),
                                           remove_assistant_turns=self.remove_replies.value == "yes",
                                           reply_threshold=round(float(self.threshold.value), 4),
                                           fps=1.0 / float(self.interval.value))

    def _apply_settings(self, s: DuetSettings) -> None:
        self._base_settings = s
        self._thresholds[s.mode] = s.reply_threshold
        self.use_informative.value = "informative_score" in s.score_heads
        self.use_relevance.value = "relevance_score" in s.score_heads
        self.remove_replies.value = "yes" if s.remove_assistant_turns else "no"
        self.interval.value = 1.0 / s.fps
        if self.mode.value == s.mode:
            self._range_threshold()
        self.mode.value = s.mode  # its observer ranges the slider and sets the mode's threshold

    def _range_threshold(self) -> None:
        """Range, step, label and value of the threshold slider for the current mode and heads."""
        self._adjusting = True
        try:
            control = range_threshold_slider(self.threshold, self.mode.value, max(len(self._heads()), 1),
                                             self._thresholds)
        finally:
            self._adjusting = False
        self.threshold_label.value = f"<span style='font-size:13px'>Threshold ({control.unit})</span>"
        self.rule.value = mode_rule_html(control.mode)

    def _on_mode(self, change) -> None:
        self._range_threshold()

    def _on_threshold(self, change) -> None:
        if not self._adjusting:
            self._thresholds[self.mode.value] = float(change["new"])

    def _on_heads(self, change) -> None:
        if self.mode.value == "prob":  # one probability per head: the range follows the number of heads
            self._range_threshold()

    def _show_video(self, path: Path, label: str | None = None) -> str:
        """Register a file under the name the video box shows for it (its file name, not its folders)."""
        shown = label or path.name
        while shown in self._videos and self._videos[shown] != path:
            shown = f"{shown} (another)"
        self._videos[shown] = path
        return shown

    def video_file(self) -> Path | None:
        """The file the video box names: an example, an upload, or a path typed in."""
        text = self.video_path.value.strip()
        if not text:
            return None
        return self._videos.get(text, Path(text).expanduser())

    def _apply_example(self, example: DemoExample) -> None:
        self.video_path.value = self._show_video(example.video)
        self.message.value = example.message
        self._apply_settings(example.settings)

    def _on_example(self, change) -> None:
        example = next((e for e in self.examples if e.name == change["new"]), None)
        if example is not None:
            self._apply_example(example)

    def _on_upload(self, change) -> None:
        files = change["new"]
        if not files:
            return
        item = files[0]
        path = self.upload_dir / Path(item["name"]).name
        path.write_bytes(bytes(item["content"]))
        self.video_path.value = self._show_video(path, f"{path.name} (uploaded)")
        self.upload.value = ()  # the bytes live on disk, not in the widget state

    # ---- running ------------------------------------------------------------------------------------------

    def start(self) -> None:
        """Load the video with the current settings and start playing (a message in the box is sent first, at
        time 0). Without a running event loop, nothing plays until `step()` is called."""
        self.stop()
        self._clear_error()
        settings = self.settings()
        video = self.video_file()
        if video is None:
            raise ValueError("choose a video: an example, a file path or an upload")
        if not video.is_file():
            raise FileNotFoundError(f"{self.video_path.value.strip()}: no such video file")
        self._set_state("loading")
        self.playback = DuetPlayback(self.model, self.tokenizer, video, settings)
        self.step_seconds = []
        self._paused = False
        self._set_running(True)
        if self.message.value.strip():
            self.send()
        self._set_state("playing")
        self._render()
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._task = loop.create_task(self.play())

    async def play(self) -> None:
        """Feed frames until the video ends or Stop; paused, it waits; each frame yields to the event loop."""
        try:
            while self.playback is not None and not self.playback.finished:
                if self._paused:
                    await asyncio.sleep(0.05)
                    continue
                self.step()
                wait = 1.0 / self.playback.settings.fps - self.step_seconds[-1] if self.realtime else 0
                await asyncio.sleep(max(wait, 0.0))
        except Exception as exc:  # noqa: BLE001
            self._show_error(exc)
            self._set_running(False)
            self._set_state("error")

    def step(self, frames: int = 1) -> list[StepRecord]:
        """Feed up to `frames` frames now and update the displays."""
        if self.playback is None:
            raise RuntimeError("press Start (or call start()) first")
        records = []
        for _ in range(frames):
            started = time.perf_counter()
            record = self.playback.step()
            if record is None:
                break
            records.append(record)
            if self.playback.finished:
                self._set_running(False)
                self._set_state("finished")
            self._render(plot=self.playback.finished or time.perf_counter() - self._plotted_at >= PLOT_EVERY_S)
            self.step_seconds.append(time.perf_counter() - started)
        self.pace.value = pace_html(self.step_seconds, 1.0 / self.playback.settings.fps)
        return records

    def toggle_pause(self) -> None:
        if self.playback is None or self.playback.finished:
            return
        self._paused = not self._paused
        self.pause_button.description = RESUME if self._paused else PAUSE
        self.pause_button.icon = "play" if self._paused else "pause"
        self._set_state("paused" if self._paused else "playing")
        self._render()

    def stop(self) -> None:
        """End the run; the last frame, scores and chat stay visible until the next Start."""
        if self._task is not None and not self._task.done():
            self._task.cancel()
        self._task = None
        if self.playback is not None and self.state in ("playing", "paused", "loading"):
            self._set_state("stopped")
            self._render()
        self._paused = False
        self._set_running(False)

    def send(self, text: str | None = None) -> None:
        """Send the message box's text (or `text`): shown now, read by the model before the next frame."""
        text = (self.message.value if text is None else text).strip()
        if not text:
            return
        if self.playback is None or self.playback.finished:
            raise ValueError("start a video first: messages are read at the current video time")
        self.playback.send_message(text)
        self.message.value = ""
        self.chat.value = chat_html(self.playback.chat)

    # ---- displays -----------------------------------------------------------------------------------------

    def _set_running(self, running: bool) -> None:
        for control in (self.example, self.video_path, self.upload, self.mode, self.use_informative,
                        self.use_relevance, self.remove_replies, self.threshold, self.interval, self.start_button):
            control.disabled = running
        self.pause_button.disabled = self.stop_button.disabled = not running
        self.pause_button.description, self.pause_button.icon = PAUSE, "pause"

    def _set_state(self, state: str) -> None:
        self.state = state
        self.status.value = status_html(self.playback, state)

    def _render(self, plot: bool = True) -> None:
        """Status, chat and frame; the score plot too unless `plot` is False (it costs the most to draw)."""
        pb = self.playback
        self.status.value = status_html(pb, self.state)
        self.chat.value = chat_html(pb.chat if pb else [])
        if pb is None:
            self.frame_image.value = placeholder_png(FRAME_PLACEHOLDER, 360, 240)
            self.plot.value = placeholder_png(PLOT_PLACEHOLDER, 640, 200)
            self.pace.value = pace_html([], 1.0 / float(self.interval.value))
            return
        self.frame_image.value = png_bytes(pb.current_frame(), max_side=480)
        if pb.steps and plot:
            fig = score_timeline(pb.steps, pb.settings, duration=pb.duration, size=(6.4, 2.8))
            self.plot.value = png_bytes(fig)
            self._plotted_at = time.perf_counter()

    def to_static(self) -> str:
        """The session so far as self-contained HTML (exported reports have no kernel for the widgets)."""
        if self.playback is None:
            return "<p>No session yet: press Start.</p>"
        return static_html(self.playback)


__all__ = ["DuetPlayer"]
