"""FFJORD's checkerboard: piecewise uniform, so density and entropy are exact."""

from __future__ import annotations

import numpy as np

from densitylab.datasets._base import Distribution
from densitylab.grids import Bounds


class Checkerboard(Distribution):
    """Uniform on the 8 "black" squares of side 2 of a 4 x 4 board covering ``[-4, 4]^2``.

    Square ``[2i, 2i + 2) x [2j, 2j + 2)`` (``i, j`` in -2..1) is in the support when ``i + j`` is
    even; the density is ``1/32`` there and 0 elsewhere, so ``log_prob`` is ``-inf`` off the
    support (the exact value). Entropy: ``log 32`` exactly (uniform on an area of 32).

    References:
        Grathwohl et al., "FFJORD", ICLR 2019 (``toy_data.py``).
    """

    description = "uniform on 8 squares of a checkerboard (FFJORD)"
    reference = "Grathwohl et al. 2019 (FFJORD)"
    area = 32.0

    def __init__(self) -> None:
        super().__init__("checkerboard")

    @property
    def length_scale(self) -> float:
        return 2.0

    def _sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        x1 = rng.uniform(-2.0, 2.0, n)
        x2 = rng.random(n) - 2.0 * rng.integers(0, 2, n) + np.mod(np.floor(x1), 2.0)
        return 2.0 * np.column_stack([x1, x2])

    def _log_prob(self, x: np.ndarray) -> np.ndarray:
        cells = np.floor(x / 2.0)
        inside = np.all((cells >= -2) & (cells <= 1), axis=1)
        black = np.mod(cells.sum(axis=1), 2.0) == 0
        return np.where(inside & black, -np.log(self.area), -np.inf)

    def _compute_entropy(self) -> float:
        return float(np.log(self.area))

    def bounds(self) -> Bounds:
        return ((-4.0, 4.0), (-4.0, 4.0))
