"""Figures of kernel density estimates: the true density beside estimates, on one colour scale."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from densitylab.grids import Grid
from densitylab.plots._figure import Figure
from densitylab.plots._layout import balanced_grid


def density_panels(
    images: Mapping[str, np.ndarray],
    grid: Grid,
    title: str,
    *,
    points: np.ndarray | None = None,
    points_label: str = "data",
    cmap: str = "viridis",
    max_cols: int = 4,
    clip_quantile: float | None = 0.999,
) -> Figure:
    """One panel per density image (e.g. the truth, then KDEs for several bandwidths).

    Every panel uses the same colour scale (0 to the largest value of all images) with a single
    colorbar, and the panels share their axes, so differences in height and spread are real.

    Args:
        images: ``{panel title: density image}``, each of shape ``grid.shape`` (rows follow
            ``grid.ys``), e.g. from ``KDE.evaluate_grid(grid)``.
        grid: the grid the images were evaluated on.
        title: the figure title.
        points: optional ``(n, 2)`` points drawn over every panel (e.g. the data of a KDE).
        points_label: legend label of ``points``.
        cmap: matplotlib colormap name.
        max_cols: panels per row.
        clip_quantile: the colour scale ends at this quantile of all pixel values (marked by
            an arrow on the colorbar) so a singular peak, like the spiral's at the origin, does
            not paint everything else black; ``None`` uses the maximum.
    """
    if not images:
        raise ValueError("density_panels needs at least one image")
    for name, image in images.items():
        if np.shape(image) != grid.shape:
            raise ValueError(
                f"image {name!r} has shape {np.shape(image)}, the grid has shape {grid.shape}"
            )
    pixels = np.concatenate([np.ravel(image) for image in images.values()])
    peak = float(pixels.max())
    vmax = peak if clip_quantile is None else float(np.quantile(pixels, clip_quantile))
    vmax = peak if vmax <= 0 else vmax
    n = len(images)
    cols, rows = balanced_grid(n, max_cols)
    fig = Figure(figsize=(3.2 * cols + 0.9, 3.2 * rows + 0.5), layout="constrained")
    axes = fig.subplots(rows, cols, sharex=True, sharey=True, squeeze=False).ravel()
    (x0, x1), (y0, y1) = grid.bounds
    mesh = None
    for ax, (name, image) in zip(axes, images.items(), strict=False):
        mesh = ax.imshow(
            image,
            origin="lower",
            extent=(x0, x1, y0, y1),
            vmin=0.0,
            vmax=vmax,
            cmap=cmap,
            interpolation="nearest",
            aspect="equal",
        )
        if points is not None:
            ax.scatter(points[:, 0], points[:, 1], s=2, c="white", alpha=0.4, linewidths=0,
                       label=points_label)
        ax.set_title(name, fontsize=10)
        ax.set_xlim(x0, x1)
        ax.set_ylim(y0, y1)
    for ax in axes[n:]:
        ax.set_visible(False)
    for ax in axes[::cols]:
        ax.set_ylabel("$x_2$")
    for ax in axes[max(0, n - cols) : n]:  # the lowest visible panel of each column
        ax.tick_params(labelbottom=True)
        ax.set_xlabel("$x_1$")
    if points is not None:
        axes[0].legend(loc="upper right", fontsize=8, markerscale=4, framealpha=0.6)
    extend = "max" if vmax < peak else "neither"
    fig.colorbar(mesh, ax=axes[:n].tolist(), label="density", shrink=0.9, extend=extend)
    fig.suptitle(title)
    return fig
