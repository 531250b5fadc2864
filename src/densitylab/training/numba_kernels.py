"""What the compiled engines share: numba (an optional accelerator: without it training uses
the autograd engine), the compile-and-cache decorator, the activation codes, and the parts of a
flat-parameter stack that do not depend on the flow's layers."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np

ACTIVATION_CODES = {"leaky_relu": 0, "relu": 1, "tanh": 2}

try:
    import numba
    from numba.typed import List

    warnings.filterwarnings("ignore", category=numba.NumbaPerformanceWarning)
except ImportError:  # pragma: no cover - exercised only where numba is missing
    numba = List = None


def available() -> bool:
    return numba is not None


def jit(**options) -> Callable[[Callable], Callable]:
    """numba's ``njit``, compiled once and then loaded from the disk cache (the function
    itself where numba is missing)."""
    if numba is None:  # pragma: no cover
        return lambda function: function
    return numba.njit(cache=True, **options)


class FlatStack:
    """Base of the compiled engines' stacks (``M`` models' parameters as an ``(M, P)`` array):
    subclasses set ``standardize`` (the flow's :class:`Standardize` or ``None``),
    ``n_models``, ``n_params`` (``P``) and ``dtype``."""

    def standardized(self, x: np.ndarray) -> np.ndarray:
        """Data as the first layer sees it: ``(x - mean) / std`` per model, ``(M, n, D)``."""
        x = np.asarray(x, dtype=self.dtype)
        if self.standardize is not None:  # as Standardize computes it, in the flow's precision
            mean = self.standardize.mean.detach().cpu().numpy().astype(self.dtype)
            log_std = self.standardize.log_std.detach().cpu().numpy().astype(self.dtype)
            x = (x - mean) * np.exp(-log_std)
        return np.ascontiguousarray(x, dtype=self.dtype)

    def log_det_offset(self) -> np.ndarray:
        """Per model, the standardisation's constant log-determinant ``-sum(log std)``."""
        if self.standardize is None:
            return np.zeros(self.n_models)
        return -self.standardize.log_std.detach().double().cpu().numpy().sum(axis=(1, 2))

    def new_adam(self) -> dict[str, np.ndarray]:
        """Zeroed Adam state per model: first and second moments and the step count."""
        zeros = np.zeros((self.n_models, self.n_params), dtype=self.dtype)
        return {"m1": zeros, "m2": zeros.copy(), "count": np.zeros((self.n_models, 1))}
