"""Figures of the built-in and user data sets: one scatter, or an overview grid of scatters."""

from __future__ import annotations

import numpy as np
from matplotlib.axes import Axes

from densitylab._validation import as_points
from densitylab.plots._figure import Figure
from densitylab.plots._layout import balanced_axes, balanced_grid, wrap_title


def _points(ax: Axes, x: np.ndarray, label: str | None = None) -> None:
    size = 4.0 if len(x) <= 2000 else 1.0
    alpha = 0.6 if len(x) <= 2000 else 0.3
    ax.scatter(x[:, 0], x[:, 1], s=size, alpha=alpha, linewidths=0, color="C0", label=label)
    ax.set_aspect("equal", adjustable="datalim")
    ax.set_xlabel("$x_1$")
    ax.set_ylabel("$x_2$")


def scatter(x: np.ndarray, title: str) -> Figure:
    """Scatter plot of points ``x`` (shape ``(n, 2)``) with equal axis scales.

    Example:
        >>> import densitylab as dl
        >>> from densitylab.plots import datasets as plots
        >>> fig = plots.scatter(dl.datasets.get("moons").sample(1000), "moons")
    """
    x = as_points(x, name="x", dim=2)
    fig = Figure(figsize=(5.0, 5.0), layout="constrained")
    ax = fig.add_subplot()
    _points(ax, x, label=f"{len(x)} samples")
    ax.set_title(title)
    ax.legend(loc="upper right", markerscale=4.0, fontsize="small")
    return fig


def overview(samples: dict[str, np.ndarray], title: str = "Built-in distributions") -> Figure:
    """One panel per entry of ``samples`` (title -> points), in a grid of up to 4 columns.

    Panels keep their own limits (the distributions live on different scales) but all use
    equal axis scales, so shapes compare honestly.
    """
    if not samples:
        raise ValueError("overview needs at least one sample set")
    cols, rows = balanced_grid(len(samples))
    fig = Figure(figsize=(3.2 * cols, 3.2 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax, (name, x) in zip(balanced_axes(axes, len(samples)), samples.items(), strict=True):
        x = as_points(x, name=f"samples[{name!r}]", dim=2)
        _points(ax, x)
        ax.set_title(wrap_title(f"{name} (n={len(x)})", 3.0, fontsize=10), fontsize=10)
    fig.suptitle(title)
    return fig
