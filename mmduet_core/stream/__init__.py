"""The duet stream: MMDuet reading a video frame by frame and deciding when to speak.

`DuetSession` (session.py) holds one video's state; `DuetSettings` (settings.py) names every setting; the reply
rule (policy.py), the text around frames in each context mode (context.py), the KV cache (cache.py) and greedy
decoding (decode.py) each have their own module. The settings and the reply rule import without torch, so the
command line and the widgets can read them cheaply.
"""

from .policy import PolicyPoint, PolicyState, policy_trace
from .record import StepRecord, prediction_record
from .settings import HEADS, MODES, DuetSettings, ModeInfo, ResponsePolicy

__all__ = ["HEADS", "MODES", "DuetSession", "DuetSettings", "ModeInfo", "PolicyPoint", "PolicyState",
           "ResponsePolicy", "StepRecord", "policy_trace", "prediction_record"]


def __getattr__(name: str):
    if name == "DuetSession":
        from . import session

        return getattr(session, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
