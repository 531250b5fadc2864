"""Figures of flows: loss curves, layer-by-layer traces, samples against data, latent codes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from densitylab.plots._figure import Figure
from densitylab.plots._layout import MAX_ASPECT, balanced_axes, balanced_grid, wrap_title

POINT = dict(s=3, alpha=0.5, linewidths=0)


def robust_limits(*clouds: np.ndarray, quantile: float = 0.005, pad: float = 0.1):
    """Axis limits ``((x0, x1), (y0, y1))`` covering all but the extreme tails of the points."""
    stacked = np.concatenate([c[:, :2] for c in clouds])
    low, high = np.quantile(stacked, [quantile, 1 - quantile], axis=0)
    margin = pad * (high - low)
    return tuple((float(lo), float(hi)) for lo, hi in zip(low - margin, high + margin, strict=True))


RUNS_PER_LOSS_PANEL = 3  # train + validation curve each: at most six curves per panel


def _loss_axes(ax, histories: Mapping[str, Any], entropy: float | None, colors,
               ylabel: str = "NLL (nats per point)") -> None:
    values = []
    for (label, history), color in zip(histories.items(), colors, strict=False):
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
    ax.set(xlabel="epoch", ylabel=ylabel)
    ax.grid(alpha=0.3)
    # below the axes, never over the curves
    ax.legend(fontsize=7, ncol=2, loc="upper center", bbox_to_anchor=(0.5, -0.14))


def loss_curves(
    histories: Mapping[str, Any], entropy: float | None = None, title: str = "Training curves",
    groups: Mapping[str, Sequence[str]] | None = None, ylabel: str = "NLL (nats per point)",
) -> Figure:
    """Train (dashed) and validation (solid) NLL (or the loss ``ylabel`` names) per epoch for
    each labelled run (a training ``History``, or anything with ``train_nll`` and ``val_nll``
    lists).

    At most three runs (six curves) share a panel: ``groups`` (``{panel title: [run labels]}``)
    says which runs go together; by default consecutive runs are grouped by three. Panels sit
    side by side, at most three in a row, the rows balanced (3 panels: one row, never 2 + 1),
    with the legend under each."""
    labels = list(histories)
    if groups is None:
        chunks = [labels[i:i + RUNS_PER_LOSS_PANEL]
                  for i in range(0, len(labels), RUNS_PER_LOSS_PANEL)]
        groups = {"" if len(chunks) == 1 else ", ".join(c): c for c in chunks}
    n = len(groups)
    cols, rows = balanced_grid(n, max_cols=3)
    width = 6.2 if cols < 3 else 5.0
    fig = Figure(figsize=(width * cols, 4.6 * rows + 0.3), layout="constrained")
    axes = balanced_axes(fig.subplots(rows, cols, squeeze=False), n)
    # one colour per run on every panel: a run shown twice keeps its colour
    colour = {lb: f"C{i % 10}" for i, lb in enumerate(dict.fromkeys(
        lb for members in groups.values() for lb in members))}
    for ax, (name, members) in zip(axes, groups.items(), strict=True):
        _loss_axes(ax, {lb: histories[lb] for lb in members}, entropy,
                   [colour[lb] for lb in members], ylabel)
        if name:
            ax.set_title(wrap_title(name, 0.8 * width), fontsize=10)
    fig.suptitle(title)
    return fig


def trace_labels(steps: int) -> list[str]:
    """Panel titles of a trace of ``steps`` layers, prior first, in the page's direction
    (layers map x = z_0 -> z_1 -> ... -> z_K = z, so sampling runs z_K -> ... -> z_0)."""
    return ([f"$z = z_{{{steps}}}$ (prior)"] + [f"$z_{{{k}}}$" for k in range(steps - 1, 0, -1)]
            + ["$x = z_0$ (data)"])


def trace_panels(
    trace: Sequence[np.ndarray], labels: Sequence[str], title: str, data: np.ndarray | None = None
) -> Figure:
    """Samples after every layer, prior first and data last, on shared axes; rows as full as
    possible (5 panels: 3 + 2, never 4 + 1)."""
    n = len(trace)
    cols, rows = balanced_grid(n)
    (x0, x1), (y0, y1) = robust_limits(*trace, *([data] if data is not None else []))
    # rows as tall as the equal-aspect panels (about 2.5 wide after labels), plus a title line
    row_height = 2.5 * (y1 - y0) / (x1 - x0) + 0.45
    fig = Figure(figsize=(2.8 * cols, row_height * rows + 0.6), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, cols, sharex=True, sharey=True, squeeze=False)).ravel()
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
    fig.suptitle(wrap_title(title, 2.8 * cols))
    return fig


def draw_samples(ax, data: np.ndarray, samples: np.ndarray, title: str, labels=("data", "model"),
                 limits=None):
    """Generated samples drawn over the held-out data (light, underneath), so what the model
    generates is never hidden by the test points."""
    ax.scatter(data[:, 0], data[:, 1], s=4, color="C0", alpha=0.25, linewidths=0,
               label=labels[0], zorder=1)
    ax.scatter(samples[:, 0], samples[:, 1], color="C3", label=labels[1], zorder=2, **POINT)
    (x0, x1), (y0, y1) = limits if limits is not None else robust_limits(data, samples)
    ax.set(xlim=(x0, x1), ylim=(y0, y1), xlabel="$x_1$", ylabel="$x_2$", title=title)
    ax.set_aspect("equal", adjustable="box")
    ax.legend(markerscale=2, fontsize=7, loc="upper right", framealpha=0.7)


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


def panel_row(draw, panels: Mapping[str, tuple], title: str, size: float = 4.2,
              per_row: int = 4, shared_limits=None) -> Figure:
    """One panel per entry: ``draw(ax, *arguments, title=label)`` for ``label: arguments``,
    at most ``per_row`` panels in a row. ``shared_limits``: axis limits every panel uses
    (passed to ``draw`` as ``limits=``), so the panels compare on the same axes; with them,
    each row is as tall as the equal-aspect panels need, not a square with blank bands."""
    n = len(panels)
    cols, rows = balanced_grid(n, per_row)
    height = size
    if shared_limits is not None:
        (x0, x1), (y0, y1) = shared_limits
        plot = 0.75 * size  # the axes' width inside a panel's labels and margins
        height = min(size, plot * (y1 - y0) / (x1 - x0) + (size - plot))
        height = max(height, (size * cols / (0.9 * MAX_ASPECT) - 0.4) / rows)  # never too wide
    fig = Figure(figsize=(size * cols, height * rows + 0.4), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    for ax, (label, arguments) in zip(axes, panels.items(), strict=False):
        label = wrap_title(label, 0.8 * size)  # the axes' width, within the panel's margins
        if shared_limits is not None:
            draw(ax, *arguments, title=label, limits=shared_limits)
        else:
            draw(ax, *arguments, title=label)
    for ax in axes[n:]:
        ax.set_visible(False)
    if title:
        fig.suptitle(wrap_title(title, size * cols))
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
    ax.set(xlabel="$x_1$", ylabel="$x_2$")
    ax.set_title(title, fontsize=9)
    return image


def density_comparison(columns: Sequence[tuple[str, object, np.ndarray | None, np.ndarray]],
                       title: str, per_row: int | None = None,
                       model_name: str = "model", clip_quantile: float = 0.995) -> Figure:
    """Per column ``(data label, grid, true_density or None, model_density)``: the truth
    ("true p(x)") above the model, both on the column's colour scale, so each estimate is read
    against its target. ``per_row`` wraps many columns into blocks of that many (at most 4).
    The colour scale ends at the ``clip_quantile`` of the truth's pixels (an arrow on the
    colour bar), so a sharp peak, like the spiral's centre, does not paint the rest black."""
    has_truth = any(c[2] is not None for c in columns)
    rows_per_block = 2 if has_truth else 1
    width = min(per_row or 4, len(columns), 4)
    blocks = -(-len(columns) // width)
    fig = Figure(figsize=(3.4 * width + 0.6, 3.5 * rows_per_block * blocks + 0.5),
                 layout="constrained")
    axes = fig.subplots(rows_per_block * blocks, width, squeeze=False)
    for index, (label, grid, truth, model) in enumerate(columns):
        block, j = divmod(index, width)
        pair = axes[rows_per_block * block: rows_per_block * (block + 1), j]
        reference = truth if truth is not None else model
        peak = max(float(np.max(model)), float(np.max(reference)))
        vmax = float(np.quantile(reference, clip_quantile)) or peak
        if has_truth:
            if truth is not None:
                density_image(pair[0], grid, truth, vmax, f"{label}: true p(x)")
            else:
                pair[0].set_visible(False)
        image = density_image(pair[-1], grid, model, vmax, f"{label}: {model_name}")
        fig.colorbar(image, ax=pair.tolist(), shrink=0.7, location="bottom", label="p(x)",
                     extend="max" if vmax < peak else "neither")
    for ax in axes[rows_per_block * (blocks - 1):, len(columns) - width * (blocks - 1):].flat:
        ax.set_visible(False)
    fig.suptitle(wrap_title(title, 3.4 * width + 0.6))
    return fig


def sample_grid(
    panels: Mapping[tuple[str, str], tuple[np.ndarray, np.ndarray]],
    rows: Sequence[str],
    cols: Sequence[str],
    title: str,
) -> Figure:
    """A table of sample plots: ``panels[row, col] = (data, samples)``; columns share axes
    (one data set per column), the samples drawn over the held-out data (light, underneath)."""
    fig = Figure(figsize=(2.9 * len(cols), 2.7 * len(rows) + 0.8), layout="constrained")
    axes = fig.subplots(len(rows), len(cols), squeeze=False, sharex="col", sharey="col")
    for j, col in enumerate(cols):
        (x0, x1), (y0, y1) = robust_limits(*(c for row in rows for c in panels[row, col][:1]))
        for i, row in enumerate(rows):
            data, samples = panels[row, col]
            ax = axes[i, j]
            ax.scatter(data[:, 0], data[:, 1], color="C0", s=4, alpha=0.25, linewidths=0,
                       label="test data", zorder=1)
            ax.scatter(samples[:, 0], samples[:, 1], color="C3", label="samples", zorder=2,
                       **POINT)
            ax.set(xlim=(x0, x1), ylim=(y0, y1))
            if i == 0:
                ax.set_title(col, fontsize=10)
            if j == 0:
                ax.set_ylabel(f"{row}\n$x_2$")
            if i == len(rows) - 1:
                ax.set_xlabel("$x_1$")
    handles, names = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, names, loc="outside lower center", ncol=2, markerscale=4, fontsize=8)
    fig.suptitle(title)
    return fig


def grouped_bars(
    labels: Sequence[str],
    series: Mapping[str, Sequence[float]],
    ylabel: str,
    title: str,
    reference: tuple[float, str] | None = None,
    errors: Mapping[str, Sequence[float]] | None = None,
) -> Figure:
    """One group of bars per label, one bar per series, on a log scale;
    ``reference = (value, label)`` draws a dashed horizontal line (a target, say);
    ``errors``: per series, the half-length of each bar's error bar."""
    fig_width = min(12.0, max(6.0, 1.0 * len(labels) + 2))
    fig = Figure(figsize=(fig_width, 5.0), layout="constrained")
    ax = fig.subplots()
    width = 0.8 / len(series)
    positions = np.arange(len(labels))
    for i, (name, values) in enumerate(series.items()):
        ax.bar(positions + (i - (len(series) - 1) / 2) * width, values, width, label=name,
               yerr=None if errors is None else errors[name], capsize=2,
               error_kw={"elinewidth": 0.8})
    if reference is not None:
        ax.axhline(reference[0], color="black", linestyle="--", linewidth=1, label=reference[1])
    ax.set_xticks(positions, labels, fontsize=8, rotation=30 if len(labels) > 8 else 0,
                  ha="right" if len(labels) > 8 else "center")
    ax.set_yscale("log")
    ax.set(ylabel=ylabel, title=wrap_title(title, 0.7 * fig_width))
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.grid(axis="y", alpha=0.3)
    return fig


def vector_field_panels(points: np.ndarray, velocities: Mapping[str, np.ndarray],
                        title: str) -> Figure:
    """One quiver panel per labelled velocity field (e.g. a continuous flow's ``dx/dt`` at
    several times), arrows coloured by speed on one shared colour scale, shared axes."""
    if not velocities:
        raise ValueError("vector_field_panels needs at least one field")
    speeds = {k: np.linalg.norm(v, axis=1) for k, v in velocities.items()}
    top = max(float(s.max()) for s in speeds.values()) or 1.0
    n = len(velocities)
    cols = min(n, 4)
    rows = -(-n // cols)
    fig = Figure(figsize=(3.4 * cols + 0.9, 3.4 * rows + 0.5), layout="constrained")
    axes = fig.subplots(rows, cols, sharex=True, sharey=True, squeeze=False).ravel()
    arrows = None
    for ax, (label, v) in zip(axes, velocities.items(), strict=False):
        arrows = ax.quiver(points[:, 0], points[:, 1], v[:, 0], v[:, 1], speeds[label],
                           cmap="viridis", clim=(0.0, top), angles="xy")
        ax.set(title=label, xlabel="$x_1$", ylabel="$x_2$", aspect="equal")
    for ax in axes[n:]:
        ax.set_visible(False)
    fig.colorbar(arrows, ax=axes[:n].tolist(), label="speed |dx/dt|", shrink=0.8)
    fig.suptitle(wrap_title(title, fig.get_figwidth()))
    return fig
