"""Figures of flows: loss curves, layer-by-layer traces, samples against data, latent codes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from densitylab.plots._figure import Figure
from densitylab.training.result import History

POINT = dict(s=3, alpha=0.5, linewidths=0)


def robust_limits(*clouds: np.ndarray, quantile: float = 0.005, pad: float = 0.1):
    """Axis limits ``((x0, x1), (y0, y1))`` covering all but the extreme tails of the points."""
    stacked = np.concatenate([c[:, :2] for c in clouds])
    low, high = np.quantile(stacked, [quantile, 1 - quantile], axis=0)
    margin = pad * (high - low)
    return tuple((float(lo), float(hi)) for lo, hi in zip(low - margin, high + margin, strict=True))


def loss_curves(
    histories: Mapping[str, History], entropy: float | None = None, title: str = "Training curves"
) -> Figure:
    """Train (dashed) and validation (solid) NLL per epoch for each labelled run."""
    fig = Figure(figsize=(7, 4.2), layout="constrained")
    ax = fig.subplots()
    colors = [f"C{i}" for i in range(10)]
    values = []
    for (label, history), color in zip(histories.items(), colors * 10, strict=False):
        epochs = np.arange(1, len(history.train_nll) + 1)
        ax.plot(epochs, history.train_nll, "--", color=color, lw=1, label=f"{label} train")
        ax.plot(epochs, history.val_nll, "-", color=color, lw=1.5, label=f"{label} validation")
        values += history.train_nll + history.val_nll
    if entropy is not None:
        ax.axhline(entropy, color="black", lw=1, ls=":", label=f"true entropy {entropy:.3f}")
        values.append(entropy)
    finite = np.asarray([v for v in values if np.isfinite(v)])
    if finite.size:  # the first epochs can be far above the rest: keep the interesting range
        low, high = finite.min(), np.quantile(finite, 0.95)
        ax.set_ylim(low - 0.05 * (high - low + 1e-9), high + 0.1 * (high - low + 1e-9))
    ax.set(xlabel="epoch", ylabel="negative log-likelihood (nats per point)", title=title)
    ax.legend(fontsize=8, ncol=2)
    ax.grid(alpha=0.3)
    return fig


def trace_panels(
    trace: Sequence[np.ndarray], labels: Sequence[str], title: str, data: np.ndarray | None = None
) -> Figure:
    """Samples after every layer, prior first and data last, on shared axes."""
    n = len(trace)
    cols = min(n, 6)
    rows = int(np.ceil(n / cols))
    fig = Figure(figsize=(2.8 * cols, 3.0 * rows + 0.9), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, cols, sharex=True, sharey=True, squeeze=False)).ravel()
    (x0, x1), (y0, y1) = robust_limits(*trace, *([data] if data is not None else []))
    for ax, points, label in zip(axes, trace, labels, strict=False):
        ax.scatter(points[:, 0], points[:, 1], color="C0", **POINT)
        ax.set_title(label, fontsize=9)
        ax.set_xlim(x0, x1)
        ax.set_ylim(y0, y1)
        ax.set_aspect("equal", adjustable="box")
    for ax in axes[n:]:
        ax.set_visible(False)
    for ax in axes[::cols]:
        ax.set_ylabel("$x_2$")
    for ax in axes[-cols:]:
        ax.set_xlabel("$x_1$")
    fig.suptitle(title)
    return fig


def draw_samples(ax, data: np.ndarray, samples: np.ndarray, title: str, labels=("data", "model")):
    """Held-out data and generated samples on one axis."""
    ax.scatter(data[:, 0], data[:, 1], color="C0", label=labels[0], **POINT)
    ax.scatter(samples[:, 0], samples[:, 1], color="C3", label=labels[1], **POINT)
    (x0, x1), (y0, y1) = robust_limits(data, samples)
    ax.set(xlim=(x0, x1), ylim=(y0, y1), xlabel="$x_1$", ylabel="$x_2$", title=title)
    ax.set_aspect("equal", adjustable="box")
    ax.legend(markerscale=4, fontsize=8, loc="upper right")


def draw_latent(ax, z: np.ndarray, title: str):
    """Latent codes against N(0, I): its 1-, 2- and 3-sigma circles hold 39%, 86%, 99% of mass."""
    ax.scatter(z[:, 0], z[:, 1], color="C2", label="latent codes z", **POINT)
    angle = np.linspace(0, 2 * np.pi, 200)
    for radius, style in [(1, "-"), (2, "--"), (3, ":")]:
        ax.plot(radius * np.cos(angle), radius * np.sin(angle), style, color="black", lw=1,
                label=f"N(0, I) {radius}-sigma")
    limit = max(4.0, float(np.quantile(np.abs(z[:, :2]), 0.995)) * 1.1)
    ax.set(xlim=(-limit, limit), ylim=(-limit, limit), xlabel="$z_1$", ylabel="$z_2$", title=title)
    ax.set_aspect("equal")
    ax.legend(fontsize=7, markerscale=4, loc="upper right")


def panel_row(draw, panels: Mapping[str, tuple], title: str, size: float = 4.2) -> Figure:
    """One panel per entry: ``draw(ax, *arguments, title=label)`` for ``label: arguments``."""
    n = len(panels)
    fig = Figure(figsize=(size * n, size + 0.4), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, n, squeeze=False)).ravel()
    for ax, (label, arguments) in zip(axes, panels.items(), strict=True):
        draw(ax, *arguments, title=label)
    fig.suptitle(title)
    return fig


def samples_vs_data(data: np.ndarray, samples: np.ndarray, title: str) -> Figure:
    """Held-out data and generated samples on one plot."""
    return panel_row(draw_samples, {title: (data, samples)}, "", size=5)


def latent_codes(z: np.ndarray, title: str) -> Figure:
    """Latent codes of held-out points against N(0, I)."""
    return panel_row(draw_latent, {title: (z,)}, "", size=5)


def density_image(
    ax, grid, density: np.ndarray, vmax: float | None = None, title: str = ""
):  # returns the image for a colorbar
    """Draw a density on ``grid`` as an image into ``ax`` (a helper for panel figures)."""
    (x0, x1), (y0, y1) = grid.bounds
    image = ax.imshow(density.reshape(grid.shape), origin="lower", extent=(x0, x1, y0, y1),
                      cmap="viridis", vmin=0, vmax=vmax, aspect="equal")
    ax.set(xlabel="$x_1$", ylabel="$x_2$", title=title)
    return image


def density_comparison(columns: Sequence[tuple[str, object, np.ndarray | None, np.ndarray]],
                       title: str, per_row: int | None = None) -> Figure:
    """Per column ``(label, grid, true_density or None, model_density)``: the truth above the
    model, both on the column's colour scale, so each estimate is read against its target.
    ``per_row`` wraps many columns into blocks of that many."""
    has_truth = any(c[2] is not None for c in columns)
    rows_per_block = 2 if has_truth else 1
    width = min(per_row or len(columns), len(columns))
    blocks = -(-len(columns) // width)
    fig = Figure(figsize=(3.4 * width + 0.6, 3.3 * rows_per_block * blocks + 0.5),
                 layout="constrained")
    axes = fig.subplots(rows_per_block * blocks, width, squeeze=False)
    for index, (label, grid, truth, model) in enumerate(columns):
        block, j = divmod(index, width)
        pair = axes[rows_per_block * block: rows_per_block * (block + 1), j]
        vmax = max(float(np.max(model)), float(np.max(truth)) if truth is not None else 0.0)
        if has_truth:
            if truth is not None:
                density_image(pair[0], grid, truth, vmax, f"true p(x): {label}")
            else:
                pair[0].set_visible(False)
        image = density_image(pair[-1], grid, model, vmax, f"model: {label}")
        fig.colorbar(image, ax=pair.tolist(), shrink=0.7, location="bottom", label="p(x)")
    for ax in axes[rows_per_block * (blocks - 1):, len(columns) - width * (blocks - 1):].flat:
        ax.set_visible(False)
    fig.suptitle(title)
    return fig


def sample_grid(
    panels: Mapping[tuple[str, str], tuple[np.ndarray, np.ndarray]],
    rows: Sequence[str],
    cols: Sequence[str],
    title: str,
) -> Figure:
    """A table of sample plots: ``panels[row, col] = (data, samples)``; rows share axes."""
    fig = Figure(figsize=(2.7 * len(cols), 2.8 * len(rows) + 0.6), layout="constrained")
    axes = fig.subplots(len(rows), len(cols), squeeze=False, sharey="row", sharex="row")
    for i, row in enumerate(rows):
        (x0, x1), (y0, y1) = robust_limits(*(c for col in cols for c in panels[row, col]))
        for j, col in enumerate(cols):
            data, samples = panels[row, col]
            ax = axes[i, j]
            ax.scatter(samples[:, 0], samples[:, 1], color="C3", label="samples", **POINT)
            ax.scatter(data[:, 0], data[:, 1], color="C0", s=5, alpha=0.8, linewidths=0,
                       label="test data")
            ax.set(xlim=(x0, x1), ylim=(y0, y1))
            ax.set_title(f"{col}" if i == 0 else "", fontsize=10)
            if j == 0:
                ax.set_ylabel(f"{row}\n$x_2$")
            if i == len(rows) - 1:
                ax.set_xlabel("$x_1$")
    axes[0, -1].legend(markerscale=4, fontsize=7, loc="upper right")
    fig.suptitle(title)
    return fig


def grouped_bars(
    labels: Sequence[str],
    series: Mapping[str, Sequence[float]],
    ylabel: str,
    title: str,
    reference: tuple[float, str] | None = None,
) -> Figure:
    """One group of bars per label, one bar per series, on a log scale;
    ``reference = (value, label)`` draws a dashed horizontal line (a target, say)."""
    fig = Figure(figsize=(max(6.0, 1.4 * len(labels) + 2), 4.5), layout="constrained")
    ax = fig.subplots()
    width = 0.8 / len(series)
    positions = np.arange(len(labels))
    for i, (name, values) in enumerate(series.items()):
        ax.bar(positions + (i - (len(series) - 1) / 2) * width, values, width, label=name)
    if reference is not None:
        ax.axhline(reference[0], color="black", linestyle="--", linewidth=1, label=reference[1])
    ax.set_xticks(positions, labels, fontsize=8, rotation=30 if len(labels) > 8 else 0,
                  ha="right" if len(labels) > 8 else "center")
    ax.set_yscale("log")
    ax.set(ylabel=ylabel, title=title)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.grid(axis="y", alpha=0.3)
    return fig
