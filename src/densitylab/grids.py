"""Regular 2-D evaluation grids, shared by density images, KL/TV integrals and KDE plots."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

Bounds = tuple[tuple[float, float], tuple[float, float]]


@dataclass(frozen=True)
class Grid:
    """Cell centres of a ``resolution x resolution`` grid over ``bounds``.

    ``points`` has shape ``(resolution**2, 2)`` in row-major order, so
    ``values.reshape(grid.shape)`` gives an image whose rows follow ``ys`` and columns ``xs``.
    """

    xs: np.ndarray
    ys: np.ndarray
    bounds: Bounds

    @property
    def shape(self) -> tuple[int, int]:
        return (len(self.ys), len(self.xs))

    @property
    def points(self) -> np.ndarray:
        xx, yy = np.meshgrid(self.xs, self.ys)
        return np.column_stack([xx.ravel(), yy.ravel()])

    @property
    def cell_area(self) -> float:
        (x0, x1), (y0, y1) = self.bounds
        return (x1 - x0) * (y1 - y0) / (len(self.xs) * len(self.ys))


def make_grid(bounds: Bounds, resolution: int = 100) -> Grid:
    """Midpoint grid over ``bounds = ((xmin, xmax), (ymin, ymax))``; midpoints make
    ``sum(values) * cell_area`` the midpoint rule for the integral over the box."""
    if resolution < 2:
        raise ValueError(f"resolution must be >= 2, got {resolution}")
    (x0, x1), (y0, y1) = bounds
    if not (x1 > x0 and y1 > y0):
        raise ValueError(f"bounds must be increasing, got {bounds}")
    step_x, step_y = (x1 - x0) / resolution, (y1 - y0) / resolution
    xs = x0 + step_x * (np.arange(resolution) + 0.5)
    ys = y0 + step_y * (np.arange(resolution) + 0.5)
    return Grid(xs=xs, ys=ys, bounds=((float(x0), float(x1)), (float(y0), float(y1))))
