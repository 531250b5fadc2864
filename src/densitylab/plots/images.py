"""Figures of images and image flows: sample grids (by temperature), latent interpolations,
what each scale encodes, the dequantization noise, and one image layer by layer. Each takes
arrays (integer or float images ``(n, C, H, W)``) and returns a ``Figure``."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.axes import Axes

from densitylab.plots._figure import Figure


def montage(images: np.ndarray, columns: int | None = None) -> np.ndarray:
    """Images ``(n, C, H, W)`` tiled into one ``(rows*H, cols*W)`` (or RGB) array with a
    one-pixel gap; single-channel images stay grey, 3-channel ones become colour."""
    images = np.asarray(images, dtype=float)
    n, c, h, w = images.shape
    columns = columns or math.ceil(math.sqrt(n))
    rows = math.ceil(n / columns)
    canvas = np.full((rows * (h + 1) - 1, columns * (w + 1) - 1, c), np.nan)
    for k, image in enumerate(images):
        r, q = divmod(k, columns)
        top, left = r * (h + 1), q * (w + 1)
        canvas[top: top + h, left: left + w] = image.transpose(1, 2, 0)
    return canvas[..., 0] if c == 1 else canvas


def _show(ax: Axes, images: np.ndarray, levels: int | None, title: str,
          columns: int | None = None) -> None:
    canvas = montage(images, columns)
    top = (levels - 1) if levels else np.nanmax(canvas)
    if canvas.ndim == 3:
        ax.imshow(np.nan_to_num(canvas / max(top, 1e-12), nan=1.0).clip(0, 1))
    else:
        ax.imshow(canvas, cmap="gray_r", vmin=0 if levels else np.nanmin(canvas), vmax=top)
    ax.set_title(title, fontsize=10)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_xlabel("pixel column")
    ax.set_ylabel("pixel row")


def grids(panels: Mapping[str, np.ndarray], title: str, levels: int | None = None) -> Figure:
    """One montage panel per entry (``{panel title: images}``), up to four in a row: sample
    grids by temperature, data beside samples."""
    cols = min(4, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig = Figure(figsize=(3.2 * cols, 3.4 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax, (name, images) in zip(axes.flat, panels.items(), strict=False):
        _show(ax, images, levels, name)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    fig.suptitle(title)
    return fig


def strips(rows: Mapping[str, np.ndarray], title: str, levels: int | None = None) -> Figure:
    """One row of images per entry, top to bottom (interpolations, scale resampling)."""
    width = max(len(images) for images in rows.values())
    fig = Figure(figsize=(min(1.0 * width + 1.5, 12.0), 1.5 * len(rows) + 0.8),
                 layout="constrained")
    axes = fig.subplots(len(rows), 1, squeeze=False)[:, 0]
    for ax, (name, images) in zip(axes, rows.items(), strict=True):
        _show(ax, images, levels, name, columns=width)
    fig.suptitle(title)
    return fig


def layer_views(views: Sequence[tuple[str, np.ndarray]], title: str) -> Figure:
    """One image after every transform (each array ``(C, H, W)``, its channels side by side),
    up to four panels in a row; colour scales are per panel (values change scale by layer)."""
    cols = min(4, len(views))
    rows = math.ceil(len(views) / cols)
    fig = Figure(figsize=(3.0 * cols, 2.6 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    for k, (ax, (name, array)) in enumerate(zip(axes.flat, views, strict=False)):
        array = np.asarray(array, dtype=float)
        _show(ax, array[:, None], None, f"{k}: {name} {tuple(array.shape)}",
              columns=min(len(array), 4))
    for ax in axes.flat[len(views):]:
        ax.set_visible(False)
    fig.suptitle(title)
    return fig


def score_histograms(scores: Mapping[str, np.ndarray], title: str,
                     xlabel: str = "bits per dimension") -> Figure:
    """Overlaid histograms of per-image scores, one per labelled group (shared bins)."""
    values = np.concatenate([np.asarray(v, dtype=float) for v in scores.values()])
    finite = values[np.isfinite(values)]
    bins = np.linspace(finite.min(), finite.max(), 40)
    fig = Figure(figsize=(6.5, 4.0), layout="constrained")
    ax = fig.add_subplot()
    for label, v in scores.items():
        ax.hist(np.clip(v, bins[0], bins[-1]), bins=bins, alpha=0.5, label=f"{label} (n={len(v)})")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("images")
    ax.set_title(title)
    ax.legend(fontsize="small")
    return fig
