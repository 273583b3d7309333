"""Old module path: scoring a model on the toy world lives in `mmduet_core.run.toyeval`."""

from .run.toyeval import *  # noqa: F403
from .run.toyeval import evaluate_on_toyworld, evaluate_oracle, oracle_records, toy_presets  # noqa: F401
