"""Report figures that need to know what a run is: the paper's values are drawn beside a run only when the run is
on the same real benchmark with a real checkpoint; otherwise the figure says, inside itself, why they are not."""

from __future__ import annotations

from collections.abc import Sequence

from matplotlib.figure import Figure

from .. import plots
from .paper import DUPLICATE_RATE_RANGE, DUPLICATE_RATE_SOURCE, WINDOW_POINTS
from .runs import RunInfo


def window_figure(rows: Sequence[tuple[int, float]], preset: str, run: RunInfo, best_over_thresholds: bool = False,
                  ) -> Figure:
    """A run's metric against the smoothing window (`rows` = [(w, value)]); the paper's stated values as markers
    when `run.comparable`, a note in the plot otherwise. `best_over_thresholds`: the values are the best over
    the relevance thresholds at each window (grounding)."""
    points = WINDOW_POINTS[preset]
    what = f"best {points.label} over thresholds" if best_over_thresholds else points.label
    title = f"{run.data}: {what} per smoothing window"
    if run.comparable:
        return plots.window_curve(rows, points.label, f"this run: {run.label}", paper=points, title=title)
    why = "on the toy world (synthetic)" if run.toy_world else "with the toy model"
    note = (f"The paper's {points.benchmark} values are not drawn: this run is {why}, a different experiment. "
            "Rerun on the real benchmark with the released checkpoint to compare.")
    return plots.window_curve(rows, points.label, run.label, note=note, title=title)


def duplicate_figure(rates: dict[str, float], comparable: bool) -> Figure:
    """Duplicate-reply rate per run (`rates` = {run label: share}); the published range for the 7B model is
    shaded only when the runs are on a real benchmark with a real checkpoint."""
    if comparable:
        return plots.duplicate_rates(rates, band=DUPLICATE_RATE_RANGE, band_label=f"MMDuet 7B, {DUPLICATE_RATE_SOURCE}")
    return plots.duplicate_rates(rates, title="duplicate-reply rate (the 7B model's published range is drawn only "
                                              "beside runs on a real benchmark)")
