"""The contract every built-in distribution follows, and the helpers they share."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from densitylab._validation import as_points, check_positive_int
from densitylab.grids import Bounds

Seed = int | np.random.Generator


def as_generator(seed: Seed) -> np.random.Generator:
    """Return a ``Generator`` for ``seed``: an int seeds a fresh one, a ``Generator`` is used as is.

    The global NumPy random state is never read or written.
    """
    if isinstance(seed, np.random.Generator):
        return seed
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
        raise ValueError(f"seed must be an int or a numpy Generator, got {seed!r}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    return np.random.default_rng(int(seed))


def positive_float(value: Any, name: str, *, allow_zero: bool = False) -> float:
    """Return ``value`` as a float if it is a finite number > 0 (or >= 0), else raise."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise ValueError(f"{name} must be a number, got {value!r}")
    value = float(value)
    ok = value >= 0 if allow_zero else value > 0
    if not (math.isfinite(value) and ok):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be a finite number {bound}, got {value!r}")
    return value


def xlogx_sum(log_p: np.ndarray) -> float:
    """``sum(p * log p)`` from log-densities, with ``0 log 0 = 0``."""
    p = np.exp(log_p)
    with np.errstate(invalid="ignore"):  # 0 * -inf
        return float(np.sum(np.where(p > 0, p * log_p, 0.0)))


class Distribution(ABC):
    """A 2-D probability law with a sampler, an exact log-density and its entropy.

    Points are arrays of shape ``(n, 2)``; densities are per unit area of the plane, in the
    units of the samples. Subclasses implement ``_sample``, ``_log_prob`` and ``bounds`` and
    set ``length_scale`` (the finest feature of the density, which sets the entropy grid).

    Example:
        >>> import densitylab as dl
        >>> dist = dl.datasets.get("moons")
        >>> x = dist.sample(1500, seed=0)
        >>> dist.log_prob(x).shape
        (1500,)
    """

    dim: int = 2
    description: str = ""  # one line, for listings
    reference: str = ""  # where the law comes from

    def __init__(self, name: str, params: dict[str, Any] | None = None, description: str = "",
                 reference: str = "") -> None:
        self.name = name
        if description:
            self.description = description
        if reference:
            self.reference = reference
        self._params: dict[str, Any] = dict(params or {})
        self._entropy: float | None = None

    @property
    def params(self) -> dict[str, Any]:
        """The law's parameters, e.g. ``{"noise": 0.1}`` (a copy: instances are immutable)."""
        return dict(self._params)

    @property
    def params_text(self) -> str:
        """The parameters as ``"key=value, ..."`` (empty when there are none)."""
        return ", ".join(f"{k}={v:g}" for k, v in self._params.items())

    @property
    def label(self) -> str:
        """How tables and figures name the law: ``"gmm (sigma=1)"``, or just the name."""
        return f"{self.name} ({self.params_text})" if self._params else self.name

    # -- public API ---------------------------------------------------------------------------
    def sample(self, n: int, seed: Seed = 0) -> np.ndarray:
        """Draw ``n`` independent points, shape ``(n, 2)``, from an explicit seed or Generator."""
        n = check_positive_int(n, "n")
        rng = as_generator(seed)
        return np.ascontiguousarray(self._sample(n, rng), dtype=np.float64)

    def log_prob(self, x: ArrayLike) -> np.ndarray:
        """Log-density (nats) at each row of ``x`` (shape ``(n, 2)``); returns shape ``(n,)``."""
        points = as_points(x, name="x", dim=2)
        return self._log_prob(points)

    def entropy(self) -> float:
        """Differential entropy in nats, computed once and cached (see the class for the method)."""
        if self._entropy is None:
            self._entropy = float(self._compute_entropy())
        return self._entropy

    @abstractmethod
    def bounds(self) -> Bounds:
        """A box ``((xmin, xmax), (ymin, ymax))`` holding all but a negligible part of the mass."""

    # -- for subclasses -----------------------------------------------------------------------
    @property
    @abstractmethod
    def length_scale(self) -> float:
        """The finest length scale of the density (e.g. the noise standard deviation)."""

    @abstractmethod
    def _sample(self, n: int, rng: np.random.Generator) -> np.ndarray: ...

    @abstractmethod
    def _log_prob(self, x: np.ndarray) -> np.ndarray: ...

    def _compute_entropy(self) -> float:
        """Midpoint rule for ``-∫ p log p`` over ``bounds()`` with a step of ``length_scale / 2.5``.

        For densities that are Gaussian-smoothed at that scale the midpoint rule converges
        faster than any power of the step (and the integrand vanishes at the box edges), so
        the result is accurate to about 1e-8 nats. Rows are evaluated in blocks to bound memory.
        """
        step = self.length_scale / 2.5
        (x0, x1), (y0, y1) = self.bounds()
        nx, ny = (max(2, int(np.ceil((hi - lo) / step))) for lo, hi in ((x0, x1), (y0, y1)))
        xs = x0 + (x1 - x0) * (np.arange(nx) + 0.5) / nx
        ys = y0 + (y1 - y0) * (np.arange(ny) + 0.5) / ny
        rows_per_block = max(1, 200_000 // nx)
        total = 0.0
        for start in range(0, ny, rows_per_block):
            yy, xx = np.meshgrid(ys[start : start + rows_per_block], xs, indexing="ij")
            total += xlogx_sum(self._log_prob(np.column_stack([xx.ravel(), yy.ravel()])))
        return -total * (x1 - x0) * (y1 - y0) / (nx * ny)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"{type(self).__name__}(name={self.name!r}{', ' if args else ''}{args})"
