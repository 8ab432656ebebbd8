"""Figures for the reports (``python -m pipeline.report``, ``python -m training.report``): PNG
files drawn by matplotlib's Agg renderer, no display needed.

Figures are built with ``matplotlib.figure.Figure`` directly, never through pyplot: no backend
is selected, no global figure list grows, and importing this module leaves an interactive
session's own matplotlib setup alone.

Every drawing function returns a ``Plotted``: the file written and the data drawn, series by
series, so that what a plot shows can be compared with its inputs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
from matplotlib.figure import Figure

DPI = 110


@dataclass
class Series:
    """One line, marker set, histogram or bar set as drawn: ``x`` the steps / bin left edges /
    category names, ``y`` the values / counts (same length)."""

    x: list
    y: list


@dataclass
class Plotted:
    """A written figure: its path, title and each drawn series by key (``"<panel>/<label>"``
    where a figure has several panels)."""

    path: str
    title: str
    series: dict[str, Series] = field(default_factory=dict)


def new_figure(panels: int = 1, width: float = 6.4, height: float = 4.2) -> tuple[Figure, list]:
    """A figure with ``panels`` axes side by side."""
    fig = Figure(figsize=(width * panels, height), layout="constrained")
    axes = fig.subplots(1, panels, squeeze=False)[0]
    return fig, list(axes)


def save(fig: Figure, path: str) -> str:
    """Write ``fig`` as PNG to ``path`` (its directory created); returns the path."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, format="png", dpi=DPI)
    return path


def rolling_mean(y: Sequence[float], window: int) -> np.ndarray:
    """Mean over the last ``window`` values at each point (fewer at the start), (N,) -> (N,)."""
    y = np.asarray(y, dtype=np.float64)
    if window <= 1 or len(y) == 0:
        return y
    sums = np.cumsum(np.concatenate([[0.0], y]))
    hi = np.arange(1, len(y) + 1)
    lo = np.maximum(hi - window, 0)
    return (sums[hi] - sums[lo]) / (hi - lo)


def bars(ax, categories: Sequence[str], stacks: dict[str, Sequence[float]], horizontal: bool = False) -> None:
    """Bars per category, one stacked segment per key of ``stacks`` (each aligned with ``categories``)."""
    base = np.zeros(len(categories))
    positions = np.arange(len(categories))
    for label, values in stacks.items():
        values = np.asarray(values, dtype=np.float64)
        if horizontal:
            ax.barh(positions, values, left=base, label=label)
        else:
            ax.bar(positions, values, bottom=base, label=label)
        base += values
    if horizontal:
        ax.set_yticks(positions, list(categories))
        ax.invert_yaxis()  # the first category on top
    else:
        ax.set_xticks(positions, list(categories), rotation=30, ha="right")
    if len(stacks) > 1:
        ax.legend(loc="best", fontsize=8, framealpha=0.7)
