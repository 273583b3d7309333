"""The toy world: synthetic videos of coloured shapes, small enough to train MMDuet on a CPU, with annotations in
every format the package reads. `world` generates it (a pure function of the seed), `store` writes and finds it on
disk; scoring a model on it lives beside the runner (`mmduet_core.run.toyeval`)."""

from .store import (
           SPLITS,
           WORLD_FORMAT,
           ensure_splits,
           install_samples,
           load_split,
           make_toyworld,
           prepare_toy_benchmark,
)
from .world import COLOURS, SHAPES, TOY_FPS, ToyVideo, Visit, on_screen, render_frame, toy_vocabulary

__all__ = ["COLOURS", "SHAPES", "SPLITS", "TOY_FPS", "WORLD_FORMAT", "ToyVideo", "Visit", "ensure_splits",
           "install_samples", "load_split", "make_toyworld", "on_screen", "prepare_toy_benchmark", "render_frame",
           "toy_vocabulary"]
