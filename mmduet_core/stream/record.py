"""What a session produces, frame by frame, and upstream's prediction record built from it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass
class StepRecord:
    """One frame step: the frame's index and time, both heads' positive probabilities, the reply if the model
    spoke, and the user message read just before the frame, if any."""

    frame_index: int
    time: float
    informative: float
    relevance: float
    reply: str | None = None
    user_message: str | None = None


def debug_data(steps: Sequence[StepRecord], digits: int = 3) -> list[dict]:
    """Upstream's per-frame `debug_data` (rounded to 3 decimals, as upstream writes it)."""
    return [{"time": round(s.time, digits), "informative_score": round(s.informative, digits),
             "relevance_score": round(s.relevance, digits)} for s in steps]


def prediction_record(question_id, video_duration: float, steps: Sequence[StepRecord], responses: Sequence[dict],
                      digits: int = 3) -> dict:
    """Upstream's prediction record: messages and replies sorted by time (stable: a message before a reply at the
    same time), the video's duration and the per-frame scores."""
    ordered = sorted(responses, key=lambda r: r["time"])
    return {"question_id": question_id,
            "model_response_list": [{**r, "time": round(r["time"], digits)} for r in ordered],
            "video_duration": round(float(video_duration), digits), "debug_data": debug_data(steps, digits)}
