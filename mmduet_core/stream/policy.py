"""When to speak: the reply rule applied frame by frame (upstream's three threshold modes, plus "never").

A frame's score is the sum of the chosen heads' positive probabilities (so it lies in [0, number of heads]).

    prob   reply when score > threshold (strict; may fire on consecutive frames)
    sum    reply when the scores summed since the last reply exceed the threshold; the sum restarts at 0
    z      reply when score > mean + threshold x std (population) of the previous `z_window` scores, silent for
           the first `z_warmup_frames` frames (upstream's live loop never fires in this mode; this is the rule its
           deprecated method describes)
    never  only record scores

The decisions are a pure function of the scores, so `policy_trace` can replay them over recorded steps.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from .settings import DuetSettings


@dataclass
class PolicyState:
    """The running state of the reply rule for one video."""

    settings: DuetSettings
    score_sum: float = 0.0
    scores: list[float] = field(default_factory=list)  # the last `z_window` frame scores
    frames_seen: int = 0

    def frame_score(self, informative: float, relevance: float) -> float:
        """One frame's score: the probabilities of the heads the settings use, summed."""
        return sum(informative if h == "informative_score" else relevance for h in self.settings.score_heads)

    def current_threshold(self) -> float:
        """What the next frame's score is compared with (z: mean + z x std of the recent scores, 1.0 while they
        settle, as upstream)."""
        s = self.settings
        if s.mode != "z":
            return s.reply_threshold
        if len(self.scores) < s.z_warmup_frames or not self.scores:
            return 1.0
        return float(np.mean(self.scores) + s.reply_threshold * np.std(self.scores))

    def decide(self, informative: float, relevance: float) -> bool:
        """Take one frame's probabilities; True when the model should reply now."""
        s = self.settings
        score, threshold = self.frame_score(informative, relevance), self.current_threshold()
        self.frames_seen += 1
        self.scores = (self.scores + [score])[-s.z_window:]
        if not s.can_reply:
            return False
        if s.mode == "z":
            return self.frames_seen > s.z_warmup_frames and score > threshold
        if s.mode == "sum":
            self.score_sum += score
            if self.score_sum > threshold:
                self.score_sum = 0.0
                return True
            return False
        return score > threshold

    def copy(self) -> PolicyState:
        return PolicyState(self.settings, self.score_sum, list(self.scores), self.frames_seen)


@dataclass(frozen=True)
class PolicyPoint:
    """What the rule compared at one frame: the frame's score, the level compared (sum mode: the running sum),
    the threshold it was compared with, and whether it fired."""

    score: float
    level: float
    threshold: float
    fired: bool


def policy_trace(settings: DuetSettings, scores: Iterable[tuple[float, float]]) -> list[PolicyPoint]:
    """Replay the reply rule over (informative, relevance) pairs."""
    state, out = PolicyState(settings), []
    for informative, relevance in scores:
        score, threshold = state.frame_score(informative, relevance), state.current_threshold()
        level = state.score_sum + score if settings.mode == "sum" else score
        out.append(PolicyPoint(score, level, threshold, state.decide(informative, relevance)))
    return out
