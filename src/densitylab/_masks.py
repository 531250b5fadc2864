"""The coupling masks of RealNVP-style flows, in NumPy: shared by the torch flow layer and the
NumPy flows without either importing the other (or numba)."""

from __future__ import annotations

import numpy as np


def half_mask(dim: int, flip: bool) -> np.ndarray:
    """Conditioning mask on the first half of the coordinates (``flip``: the second half);
    the middle coordinate of an odd ``dim`` conditions first."""
    mask = np.arange(dim) < (dim // 2 if dim % 2 == 0 else dim // 2 + 1)
    return ~mask if flip else mask
