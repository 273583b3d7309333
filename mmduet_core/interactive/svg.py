"""Small charts drawn as SVG strings, for displays that redraw on every slider move: building and rasterising a
matplotlib figure takes a few hundred milliseconds on a busy CPU, an SVG string about a millisecond, and the
browser draws it. Pure: data in, markup out.

    canvas = Canvas(560, 200)
    panel = canvas.panel(50, 20, 480, 140, xlim=(0, 30), ylim=(0, 1), xlabel="video time (s)")
    canvas.polyline(panel, times, scores, "#d62728")
    canvas.hline(panel, 0.5, dash="4 3")
    html = canvas.svg()
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from matplotlib import colormaps
from matplotlib.ticker import MaxNLocator


def _f(v: float) -> str:
    return f"{v:.1f}"


@dataclass(frozen=True)
class Panel:
    """A plotting area of a canvas: its pixel box and the data ranges mapped onto it."""

    x: float
    y: float
    width: float
    height: float
    xlim: tuple[float, float]
    ylim: tuple[float, float]

    def px(self, v: float) -> float:
        lo, hi = self.xlim
        return self.x + (v - lo) / ((hi - lo) or 1.0) * self.width

    def py(self, v: float) -> float:
        lo, hi = self.ylim
        return self.y + self.height - (v - lo) / ((hi - lo) or 1.0) * self.height


class Canvas:
    """An SVG drawing: panels with axes, and shapes placed in data or pixel coordinates."""

    def __init__(self, width: int, height: int, css_class: str = ""):
        self.width, self.height, self.css_class = width, height, css_class
        self.parts: list[str] = []

    def svg(self) -> str:
        return (f"<svg class='{html.escape(self.css_class)}' xmlns='http://www.w3.org/2000/svg' width='{self.width}' "
                f"height='{self.height}' viewBox='0 0 {self.width} {self.height}' style='font-family:sans-serif;"
                f"max-width:100%;height:auto'>{''.join(self.parts)}</svg>")

    # -- pixel space ----------------------------------------------------------------------------------------
    def text(self, x: float, y: float, text: str, size: float = 10, anchor: str = "start", colour: str = "#333",
             weight: str = "normal", rotate: float = 0) -> None:
        turn = f" transform='rotate({rotate} {_f(x)} {_f(y)})'" if rotate else ""
        self.parts.append(f"<text x='{_f(x)}' y='{_f(y)}' font-size='{size}' text-anchor='{anchor}' fill='{colour}' "
                          f"font-weight='{weight}'{turn}>{html.escape(text)}</text>")

    def rect(self, x: float, y: float, width: float, height: float, fill: str = "none", opacity: float = 1.0,
             stroke: str = "none", dash: str = "", stroke_width: float = 1.0, tooltip: str = "") -> None:
        dashed = f" stroke-dasharray='{dash}'" if dash else ""
        end = f"><title>{html.escape(tooltip)}</title></rect>" if tooltip else "/>"
        self.parts.append(f"<rect x='{_f(x)}' y='{_f(y)}' width='{_f(max(width, 0))}' height='{_f(max(height, 0))}' "
                          f"fill='{fill}' fill-opacity='{opacity}' stroke='{stroke}' "
                          f"stroke-width='{stroke_width}'{dashed}{end}")

    def label(self, x: float, y: float, text: str, width: float, size: float = 8, colour: str = "#333") -> None:
        """`text` cut to what fits in `width` pixels (nothing when under four characters fit)."""
        fits = int(width / (size * 0.55))
        if fits >= 4:
            self.text(x, y, text if len(text) <= fits else text[: fits - 1] + "…", size, "start", colour)

    def line(self, x1: float, y1: float, x2: float, y2: float, colour: str = "#333", width: float = 1.0,
             dash: str = "") -> None:
        dashed = f" stroke-dasharray='{dash}'" if dash else ""
        self.parts.append(f"<line x1='{_f(x1)}' y1='{_f(y1)}' x2='{_f(x2)}' y2='{_f(y2)}' stroke='{colour}' "
                          f"stroke-width='{width}'{dashed}/>")

    # -- data space -----------------------------------------------------------------------------------------
    def panel(self, x: float, y: float, width: float, height: float, xlim: tuple[float, float],
              ylim: tuple[float, float], xlabel: str = "", ylabel: str = "", title: str = "",
              xticks: bool = True, yticks: bool = True, integer_x: bool = False) -> Panel:
        """A framed plotting area with tick labels; returns it for placing shapes in data coordinates."""
        p = Panel(x, y, width, height, (float(xlim[0]), float(xlim[1])), (float(ylim[0]), float(ylim[1])))
        self.rect(x, y, width, height, stroke="#bbbbbb")
        if xticks:
            for t in MaxNLocator(nbins=6, integer=integer_x).tick_values(*p.xlim):
                if p.xlim[0] - 1e-9 <= t <= p.xlim[1] + 1e-9:
                    self.line(p.px(t), y + height, p.px(t), y + height + 3, "#888")
                    self.text(p.px(t), y + height + 13, f"{t:g}", 9, "middle", "#555")
        if yticks:
            for t in MaxNLocator(nbins=4).tick_values(*p.ylim):
                if p.ylim[0] - 1e-9 <= t <= p.ylim[1] + 1e-9:
                    self.line(x - 3, p.py(t), x, p.py(t), "#888")
                    self.text(x - 5, p.py(t) + 3, f"{t:g}", 9, "end", "#555")
        if xlabel:
            self.text(x + width / 2, y + height + 26, xlabel, 10, "middle", "#333")
        if ylabel:
            self.text(x - 34, y + height / 2, ylabel, 10, "middle", "#333", rotate=-90)
        if title:
            self.text(x, y - 6, title, 10, "start", "#222")
        return p

    def polyline(self, p: Panel, xs: Sequence[float], ys: Sequence[float], colour: str, width: float = 1.4,
                 dash: str = "") -> None:
        """A line through the finite points (a NaN breaks it)."""
        runs, run = [], []
        for x, y in zip(xs, ys, strict=True):
            if np.isfinite(x) and np.isfinite(y):
                run.append(f"{_f(p.px(x))},{_f(p.py(y))}")
            elif run:
                runs.append(run)
                run = []
        runs.append(run)
        dashed = f" stroke-dasharray='{dash}'" if dash else ""
        for r in runs:
            if len(r) > 1:
                self.parts.append(f"<polyline points='{' '.join(r)}' fill='none' stroke='{colour}' "
                                  f"stroke-width='{width}'{dashed}/>")

    def hline(self, p: Panel, y: float, colour: str = "#222", dash: str = "4 3", width: float = 1.0) -> None:
        self.line(p.x, p.py(y), p.x + p.width, p.py(y), colour, width, dash)

    def vline(self, p: Panel, x: float, colour: str = "#222", dash: str = "", width: float = 1.0) -> None:
        self.line(p.px(x), p.y, p.px(x), p.y + p.height, colour, width, dash)

    def span(self, p: Panel, x0: float, x1: float, colour: str, opacity: float = 0.2,
             y0: float | None = None, y1: float | None = None, tooltip: str = "") -> tuple[float, float]:
        """A box from x0 to x1 (data), over the panel's height or from y0 to y1 (data); returns its pixel left
        and width."""
        top = p.y if y1 is None else p.py(y1)
        bottom = p.y + p.height if y0 is None else p.py(y0)
        left, right = max(p.px(x0), p.x), min(p.px(x1), p.x + p.width)
        self.rect(left, top, right - left, bottom - top, colour, opacity, tooltip=tooltip)
        return left, right - left

    def points(self, p: Panel, xs: Sequence[float], ys: Sequence[float], colour: str, radius: float = 2.5,
               hollow: bool = False, width: float = 2.0) -> None:
        for x, y in zip(xs, ys, strict=True):
            fill = "none" if hollow else colour
            self.parts.append(f"<circle cx='{_f(p.px(x))}' cy='{_f(p.py(y))}' r='{radius}' fill='{fill}' "
                              f"stroke='{colour}' stroke-width='{width if hollow else 0}'/>")

    def triangles(self, p: Panel, xs: Sequence[float], y: float, colour: str = "#222", size: float = 4.0) -> None:
        """Downward triangles at xs, at height y (data)."""
        for x in xs:
            cx, cy = p.px(x), p.py(y)
            self.parts.append(f"<polygon points='{_f(cx - size)},{_f(cy - size)} {_f(cx + size)},{_f(cy - size)} "
                              f"{_f(cx)},{_f(cy + size)}' fill='{colour}'/>")


def heatmap_cells(p: Panel, table: np.ndarray, xs: Sequence[float], ys: Sequence[float], vmin: float,
                  vmax: float, cmap: str = "viridis") -> str:
    """The cells of a (len(ys), len(xs)) table as SVG rectangles centred on (xs[j], ys[i]), coloured by `cmap`
    (NaN blank)."""
    dx = (xs[1] - xs[0]) if len(xs) > 1 else 1.0
    dy = (ys[1] - ys[0]) if len(ys) > 1 else 1.0
    rgb = (colormaps[cmap]((np.asarray(table, dtype=float) - vmin) / ((vmax - vmin) or 1.0))[..., :3] * 255)
    hexes = np.vectorize(lambda r, g, b: f"#{int(r):02x}{int(g):02x}{int(b):02x}")(*np.round(rgb).transpose(2, 0, 1))
    lefts = [p.px(x - dx / 2) for x in xs]
    width = p.px(xs[0] + dx / 2) - lefts[0] + 0.6
    tops = [p.py(y + dy / 2) for y in ys]
    height = p.py(ys[0] - dy / 2) - tops[0] + 0.6
    return "".join(f"<rect x='{lefts[j]:.1f}' y='{tops[i]:.1f}' width='{width:.1f}' height='{height:.1f}' "
                   f"fill='{hexes[i, j]}'/>" for i in range(len(ys)) for j in range(len(xs))
                   if np.isfinite(table[i, j]))


def colour_bar(canvas: Canvas, x: float, y: float, height: float, vmin: float, vmax: float, label: str,
               cmap: str = "viridis", steps: int = 24) -> None:
    """A vertical colour scale with its end values and a label."""
    for k, (r, g, b, _) in enumerate(colormaps[cmap]((np.arange(steps) + 0.5) / steps)):
        canvas.rect(x, y + height * (1 - (k + 1) / steps), 10, height / steps + 0.6,
                    f"#{round(r * 255):02x}{round(g * 255):02x}{round(b * 255):02x}")
    canvas.text(x + 14, y + 8, f"{vmax:.0f}", 9, "start", "#555")
    canvas.text(x + 14, y + height, f"{vmin:.0f}", 9, "start", "#555")
    canvas.text(x + 30, y + height / 2, label, 9, "middle", "#555", rotate=-90)
