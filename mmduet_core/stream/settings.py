"""One vocabulary for how a video is streamed through MMDuet.

`DuetSettings` is the only place a streaming setting is named: the session takes it, the benchmark runner embeds
it (its four presets are `DuetSettings` values), the demo's controls produce it, and the `mmduet infer` options
are generated from its fields (`reply_threshold` is `--reply-threshold`, and so on). Each field says what it
changes; fields under "speed" never change a result, only how fast it comes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace
from typing import Literal

from ..errors import InputError
from ..model.template import DEFAULT_SYSTEM_PROMPT

HEADS = ("informative_score", "relevance_score")
Mode = Literal["prob", "sum", "z", "never"]
Context = Literal["faithful", "clean"]
FrameRule = Literal["ceil", "floor"]


@dataclass(frozen=True)
class ModeInfo:
    """How a reply mode reads, for people: its label, its rule, and the threshold's unit and usual range."""

    label: str
    rule: str
    unit: str = ""
    threshold_range: tuple[float, float] = (0.0, 1.0)
    default_threshold: float = 0.5


MODES: dict[str, ModeInfo] = {
    "prob": ModeInfo("single-frame score", "reply at frame t when s(t) > threshold, where s(t) is the chosen heads' "
                     "probabilities at t, summed", "probability", (0.0, 1.0), 0.5),
    "sum": ModeInfo("sum score", "reply when s(a+1) + ... + s(t) > threshold, summing the scores since the last "
                    "reply a; the sum then restarts at 0", "summed score", (0.0, 5.0), 1.5),
    "z": ModeInfo("z-score", "reply when s(t) > mean + threshold x std of the recent scores (population std; "
                  "silent while they settle)", "standard deviations", (0.0, 4.0), 1.0),
    "never": ModeInfo("never reply", "never reply: only the per-frame scores are recorded (grounding, highlights)"),
}


def _setting(default, doc: str, **kwargs):
    return field(default=default, metadata={"doc": doc, **kwargs})


@dataclass(frozen=True)
class DuetSettings:
    """How one video is streamed: which frames, when to speak, what stays in the context, how replies are
    decoded, and how the work is batched. Defaults are upstream's; `runner.PRESETS` holds its four benchmarks."""

    # -- frames
    fps: float = _setting(2.0, "frames per second fed to the model")
    max_frames: int | None = _setting(400, "longer videos are cut here (upstream truncates, it does not subsample)")
    resolution: int | None = _setting(None, "frames are resized and padded to this square (default: the model's)")
    frame_rule: FrameRule = _setting("ceil", "frame count: ceil(duration x fps) as upstream's test loader, or "
                                     "floor as its demo and training loaders")
    # -- when to speak
    mode: Mode = _setting("prob", "prob: this frame's score > threshold; sum: scores summed since the last reply > "
                          "threshold; z: score > mean + threshold x std of recent scores; never: scores only")
    reply_threshold: float = _setting(0.5, "the threshold of `mode` (probability, summed score or standard deviations)")
    score_heads: tuple[str, ...] = _setting(("informative_score",), "heads whose probabilities make a frame's score "
                                            "(informative_score, relevance_score; summed)")
    z_warmup_frames: int = _setting(0, "z mode: frames that stay silent while the running statistics settle "
                                    "(upstream's first_n_frames_no_generate)")
    z_window: int = _setting(20, "z mode: how many recent scores the mean and std use (upstream's running_list_length)")
    suppress_repeats: bool = _setting(False, "drop a reply identical to the previous one (not in upstream)")
    # -- context
    remove_assistant_turns: bool = _setting(False, "take each reply out of the context after generating it")
    context: Context = _setting("faithful", "faithful: upstream's exact token sequence, quirks included; "
                                "clean: the well-formed chat template")
    system_prompt: str = _setting(DEFAULT_SYSTEM_PROMPT, "the system message", cli=False)
    kv_window_frames: int | None = _setting(None, "keep only the first message and the last N frames in the KV "
                                            "cache (bounded memory for long streams; changes results)")
    # -- replies
    max_new_tokens: int = _setting(200, "reply length limit in tokens (upstream's output buffer)")
    repetition_penalty: float | None = _setting(None, "penalise tokens of every earlier reply of the video")
    # -- speed: results are the same whatever these are
    chunk_frames: int = _setting(32, "frames per prefill forward; 1 = upstream's one forward per frame")
    max_prefill_tokens: int = _setting(2048, "cap on the tokens of one prefill forward")
    encode_chunk: int = _setting(32, "frames per vision-encoder forward")

    def __post_init__(self):
        object.__setattr__(self, "score_heads", tuple(self.score_heads))
        _check_choice("mode", self.mode, MODES)
        _check_choice("context", self.context, ("faithful", "clean"))
        _check_choice("frame_rule", self.frame_rule, ("ceil", "floor"))
        bad = [h for h in self.score_heads if h not in HEADS]
        if bad or not self.score_heads:
            raise InputError(f"score_heads must be a non-empty subset of {', '.join(HEADS)}, got {list(self.score_heads)}")
        _check_number("fps", self.fps, low=0.0, low_open=True)
        _check_number("reply_threshold", self.reply_threshold)
        for name in ("max_new_tokens", "chunk_frames", "max_prefill_tokens", "encode_chunk", "z_window"):
            _check_number(name, getattr(self, name), low=1, integer=True)
        _check_number("z_warmup_frames", self.z_warmup_frames, low=0, integer=True)
        for name in ("max_frames", "kv_window_frames", "resolution"):
            if getattr(self, name) is not None:
                _check_number(name, getattr(self, name), low=1, integer=True)
        if self.repetition_penalty is not None:
            _check_number("repetition_penalty", self.repetition_penalty, low=0.0, low_open=True)

    @property
    def can_reply(self) -> bool:
        """False when no frame can ever trigger a reply (mode never, or a probability threshold no score reaches)."""
        return self.mode != "never" and not (self.mode == "prob" and self.reply_threshold >= len(self.score_heads))

    def replace(self, **changes) -> DuetSettings:
        """A copy with some fields changed (validated again)."""
        return replace(self, **changes)

    def describe(self) -> str:
        """One line for reports: the reply rule, heads, context and frame rate."""
        heads = " + ".join(h.removesuffix("_score") for h in self.score_heads)
        rule = "never replies" if not self.can_reply else f"{MODES[self.mode].label} > {self.reply_threshold:g} ({heads})"
        replies = "replies removed from the context" if self.remove_assistant_turns else "replies kept in the context"
        return f"{rule}; {replies}; {self.fps:g} fps, at most {self.max_frames} frames; {self.context} context"


def setting_docs() -> dict[str, str]:
    """{field name: what it does}, for command-line help and documentation."""
    return {f.name: f.metadata.get("doc", "") for f in fields(DuetSettings)}


def _check_choice(name: str, value, allowed) -> None:
    if value not in allowed:
        raise InputError(f"{name} must be one of {', '.join(map(str, allowed))}, not {value!r}")


def _check_number(name: str, value, low: float | None = None, low_open: bool = False, integer: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InputError(f"{name} must be a number, not {value!r}")
    if integer and not float(value).is_integer():
        raise InputError(f"{name} must be a whole number, not {value!r}")
    if not math.isfinite(value):
        raise InputError(f"{name} must be finite, not {value!r}")
    if low is not None and (value <= low if low_open else value < low):
        raise InputError(f"{name} must be {'>' if low_open else '>='} {low:g}, not {value!r}")


def ResponsePolicy(mode: Mode = "prob", threshold: float = 0.5, score_heads=("informative_score",),  # noqa: N802
                   remove_assistant_turns: bool = False, first_n_frames_no_generate: int = 0,
                   running_list_length: int = 20, suppress_repeats: bool = False) -> DuetSettings:
    """Old name, kept for existing code: the reply policy's fields are `DuetSettings` fields now
    (`threshold` is `reply_threshold`, `first_n_frames_no_generate` is `z_warmup_frames`, `running_list_length`
    is `z_window`). Returns the equivalent `DuetSettings`."""
    return DuetSettings(mode=mode, reply_threshold=threshold, score_heads=tuple(score_heads),
                        remove_assistant_turns=remove_assistant_turns, z_warmup_frames=first_n_frames_no_generate,
                        z_window=running_list_length, suppress_repeats=suppress_repeats)
