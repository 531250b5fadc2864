"""What the compiled engines share: numba (an optional accelerator: without it training uses
the autograd engine), the compile-and-cache decorator and the activation codes."""

from __future__ import annotations

import warnings
from collections.abc import Callable

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
