"""Figures of 1-D densities and of marginals in any dimension: histogram + curves, pairs plots.

Array in, ``Figure`` out, like the other figure modules; :mod:`densitylab.views` computes the
curves and images from a model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from densitylab.grids import Grid
from densitylab.plots._figure import Figure

POINT = dict(s=2, alpha=0.4, linewidths=0)


def density_curves(
    xs: np.ndarray,
    curves: Mapping[str, np.ndarray],
    title: str,
    *,
    data: np.ndarray | None = None,
    data_label: str = "data",
    xlabel: str = "$x$",
) -> Figure:
    """1-D densities on one axis: a normalised histogram of ``data`` (if given) and one line per
    entry of ``curves`` (label -> density at ``xs``), so the estimate is read against the data.

    Example:
        >>> import numpy as np
        >>> xs = np.linspace(-3, 3, 50)
        >>> fig = density_curves(xs, {"N(0, 1)": np.exp(-xs**2 / 2) / np.sqrt(2 * np.pi)}, "normal")
    """
    fig = Figure(figsize=(6.0, 4.0), layout="constrained")
    ax = fig.subplots()
    if data is not None:
        values = np.ravel(data)
        bins = int(np.clip(np.sqrt(len(values)), 10, 80))
        ax.hist(values, bins=bins, range=(float(xs[0]), float(xs[-1])), density=True,
                color="C0", alpha=0.35, label=f"{data_label} (histogram, n={len(values)})")
    styles = ["-", "--", "-.", ":"]
    for k, (label, curve) in enumerate(curves.items()):
        ax.plot(xs, curve, styles[k % 4], color=f"C{k + 1}", lw=1.8, label=label)
    ax.set(xlim=(float(xs[0]), float(xs[-1])), xlabel=xlabel, ylabel="density p(x)", title=title)
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return fig


def pairs_panels(
    one: Mapping[int, tuple[np.ndarray, np.ndarray]],
    two: Mapping[tuple[int, int], tuple[Grid, np.ndarray]],
    title: str,
    *,
    names: Sequence[str] | None = None,
    data: np.ndarray | None = None,
    samples: np.ndarray | None = None,
    model_label: str = "model",
    bars: Mapping[int, tuple[np.ndarray, float]] | None = None,
    labels: Mapping[int, Sequence[str]] | None = None,
) -> Figure:
    """A pairs (corner) plot of a ``d``-dimensional density.

    Diagonal: each 1-D marginal ``one[i] = (xs, density)`` over a histogram of ``data``; a
    discrete column ``i`` in ``bars`` (``(model samples, lattice step)``) shows the model's
    probability mass per value as bars, the data's as outlined bars. Below it: each 2-D marginal
    ``two[i, j] = (grid, image)`` (``x_j`` across, ``x_i`` up), each on its own colour scale
    (the columns' units differ, so one shared scale would leave most panels dark), scaled to its
    own maximum. Above it: ``data`` against ``samples`` of the model, where given. Panels of a
    column share the horizontal axis and panels of a row the vertical one. A categorical
    column ``i`` in ``labels`` is drawn at positions ``0, 1, ...`` named by its labels.
    """
    d = len(one)
    names = list(names) if names is not None else [f"$x_{{{i + 1}}}$" for i in range(d)]
    fig = Figure(figsize=(2.3 * d + 1.2, 2.3 * d + 0.6), layout="constrained")
    axes = fig.subplots(d, d, squeeze=False)
    bars = bars or {}
    mesh = None
    for i in range(d):
        xs, curve = one[i]
        ax = axes[i, i]
        if i in bars:
            _mass_bars(ax, bars[i], None if data is None else data[:, i], model_label)
        else:
            if data is not None:
                ax.hist(data[:, i], bins=30, range=(float(xs[0]), float(xs[-1])), density=True,
                        color="C0", alpha=0.35, label="data")
            ax.plot(xs, curve, color="C3", lw=1.5, label=model_label)
        ax.set_xlim(float(xs[0]), float(xs[-1]))
        ax.set_ylim(bottom=0)
        ax.set_yticks([])
        for j in range(d):
            if j < i:
                grid, image = two[i, j]
                (x0, x1), (y0, y1) = grid.bounds
                peak = float(np.max(image))
                mesh = axes[i, j].imshow(image / peak if peak > 0 else image, origin="lower",
                                         extent=(x0, x1, y0, y1), vmin=0.0, vmax=1.0,
                                         cmap="viridis", aspect="auto")
            elif j > i:
                ax_ij = axes[i, j]
                if data is not None:
                    ax_ij.scatter(data[:, j], data[:, i], color="C0", label="data", **POINT)
                if samples is not None:
                    ax_ij.scatter(samples[:, j], samples[:, i], color="C3",
                                  label=f"{model_label} samples", **POINT)
                if data is None and samples is None:
                    ax_ij.set_visible(False)
    for i in range(d):  # shared limits: column j spans x_j, row i spans x_i
        for j in range(d):
            axes[i, j].set_xlim(*one[j][0][[0, -1]])
            if i != j:
                axes[i, j].set_ylim(*one[i][0][[0, -1]])
            axes[i, j].tick_params(labelsize=7)
            if i < d - 1:
                axes[i, j].tick_params(labelbottom=False)
            if j > 0 and i != j:
                axes[i, j].tick_params(labelleft=False)
        axes[d - 1, i].set_xlabel(names[i])
        if i > 0:
            axes[i, 0].set_ylabel(names[i])
    for i, texts in (labels or {}).items():  # categorical columns: their labels as ticks
        positions = np.arange(len(texts))
        axes[d - 1, i].set_xticks(positions, [str(t) for t in texts], rotation=45)
        if i > 0:
            axes[i, 0].set_yticks(positions, [str(t) for t in texts])
    axes[0, 0].set_ylabel(f"{names[0]}\n(marginal)")
    axes[0, 0].legend(fontsize=7, loc="upper right")
    if d > 1 and (data is not None or samples is not None):
        axes[0, d - 1].legend(fontsize=7, loc="upper right", markerscale=4)
    if mesh is not None:
        fig.colorbar(mesh, ax=axes.ravel().tolist(),
                     label="2-D marginal density / the panel's maximum (lower panels)",
                     shrink=0.6)
    fig.suptitle(title)
    return fig


def _mass_bars(ax: Any, bar: tuple[np.ndarray, float], data: np.ndarray | None,
               model_label: str) -> None:
    """Probability mass per value of a discrete column: the model's samples as filled bars,
    the data as outlined ones."""
    samples, step = bar
    values, counts = np.unique(samples, return_counts=True)
    ax.bar(values, counts / counts.sum(), width=0.8 * step, color="C3", alpha=0.5,
           label=f"{model_label} (mass)")
    if data is not None:
        seen, observed = np.unique(data, return_counts=True)
        ax.bar(seen, observed / observed.sum(), width=0.8 * step, fill=False, edgecolor="C0",
               label="data (mass)")


def histograms(series: Mapping[str, np.ndarray], title: str, *, xlabel: str = "$x$") -> Figure:
    """Normalised histograms of 1-D values (e.g. data and samples) on shared bins."""
    values = [np.ravel(v) for v in series.values()]
    low, high = np.quantile(np.concatenate(values), [0.001, 0.999])
    bins = np.linspace(low, high, int(np.clip(np.sqrt(max(map(len, values))), 10, 80)) + 1)
    fig = Figure(figsize=(6.0, 4.0), layout="constrained")
    ax = fig.subplots()
    for k, (label, v) in enumerate(zip(series, values, strict=True)):
        ax.hist(v, bins=bins, density=True, histtype="stepfilled" if k == 0 else "step",
                alpha=0.35 if k == 0 else 1.0, lw=1.5, color=f"C{k * 3}", label=label)
    ax.set(xlabel=xlabel, ylabel="density", title=title)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return fig
