"""Bounded columns: a map of the support onto the whole real line, with its Jacobian.

A density fitted to a column that cannot go below 0 (a price, a waiting time) or leave
``[0, 1]`` (a proportion) puts mass outside the support, and too little near the bound, when
it is fitted in the data's own coordinates. Fitted instead to ``y = log(x - a)`` (a lower bound
``a``), ``y = -log(b - x)`` (an upper bound ``b``) or ``y = logit((x - a) / (b - a))`` (both),
and carried back by the change of variables ``p_x(x) = p_y(y(x)) |dy/dx|``, it integrates to 1
on the support exactly, and its samples never leave it.

Example:
    >>> import numpy as np
    >>> support = Support([(0.0, None), (None, None)], dim=2)
    >>> y, log_jacobian, inside = support.to_free(np.array([[np.e, 5.0], [-1.0, 5.0]]))
    >>> y[0].tolist(), float(log_jacobian[0]), inside.tolist()
    ([1.0, 5.0], -1.0, [True, False])

References:
    Geenens, G. (2014). Probit transformation for kernel density estimation on the unit
    interval. JASA 109(505) (the transformation approach to boundary bias).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

Bound = tuple[float | None, float | None]


def check_bounds(bounds: Any, dim: int) -> list[Bound]:
    """``bounds`` as ``dim`` pairs ``(lower, upper)`` of finite floats or ``None`` (open);
    else a one-line ``ValueError``."""
    if isinstance(bounds, str) or not isinstance(bounds, Sequence) or len(bounds) != dim:
        raise ValueError(f"bounds must list one (lower, upper) pair per column ({dim}), "
                         f"got {bounds!r}")
    out: list[Bound] = []
    for j, pair in enumerate(bounds):
        if pair is None:
            pair = (None, None)
        if isinstance(pair, str) or not isinstance(pair, Sequence) or len(pair) != 2:
            raise ValueError(f"bounds[{j}] must be a (lower, upper) pair, got {pair!r}")
        limits = []
        for value in pair:
            if value is None:
                limits.append(None)
                continue
            if isinstance(value, bool) or not isinstance(value, int | float | np.number) \
                    or not np.isfinite(value):
                raise ValueError(f"bounds[{j}] must hold finite numbers or None, got {pair!r}")
            limits.append(float(value))
        lower, upper = limits
        if lower is not None and upper is not None and not lower < upper:
            raise ValueError(f"bounds[{j}]: the lower bound must lie below the upper, got {pair!r}")
        out.append((lower, upper))
    return out


class Support:
    """The product of intervals ``bounds`` (``(lower, upper)`` per column, ``None`` open), with
    the map :meth:`to_free` onto ``R^d`` and its inverse :meth:`to_data`."""

    def __init__(self, bounds: Any, dim: int) -> None:
        self.bounds = check_bounds(bounds, dim)

    @property
    def bounded(self) -> bool:
        return any(lo is not None or hi is not None for lo, hi in self.bounds)

    def check_inside(self, x: np.ndarray, name: str = "X") -> None:
        """A ``ValueError`` naming the first column whose data reach or cross a bound: the
        map needs every training point strictly inside (a count's lower bound belongs half a
        step below its smallest value)."""
        for j, (lo, hi) in enumerate(self.bounds):
            for limit, outside in ((lo, x[:, j] <= lo if lo is not None else None),
                                   (hi, x[:, j] >= hi if hi is not None else None)):
                if outside is not None and outside.any():
                    raise ValueError(
                        f"{name}: {int(outside.sum())} value(s) of column {j} lie on or beyond its "
                        f"bound {limit:g} (first at row {int(np.argmax(outside))}); a bound must "
                        "lie strictly outside the data (for a count or a rounded column, half a "
                        "step beyond its extreme value)")

    def to_free(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(y, log|det dy/dx|, inside)`` of rows ``x`` ``(n, d)``: rows outside the open
        support have ``inside`` false (and meaningless ``y``). A missing cell (NaN) stays
        missing in ``y`` and adds nothing to the log-Jacobian (it is marginalised)."""
        y = np.array(x, dtype=np.float64, copy=True)
        log_jacobian = np.zeros(len(x))
        missing = np.isnan(x)
        with np.errstate(divide="ignore", invalid="ignore"):
            for j, (lo, hi) in enumerate(self.bounds):
                column = x[:, j]
                if lo is not None and hi is not None:
                    u = (column - lo) / (hi - lo)
                    y[:, j] = np.log(u) - np.log1p(-u)
                    term = -(np.log(hi - lo) + np.log(u) + np.log1p(-u))
                elif lo is not None:
                    y[:, j] = np.log(column - lo)
                    term = -y[:, j]
                elif hi is not None:
                    y[:, j] = -np.log(hi - column)
                    term = y[:, j]
                else:
                    continue
                log_jacobian += np.where(missing[:, j], 0.0, term)
        inside = np.all(np.isfinite(y) | missing, axis=1) & np.isfinite(log_jacobian)
        return y, log_jacobian, inside

    def to_data(self, y: np.ndarray) -> np.ndarray:
        """The inverse map: points of ``R^d`` back in the support (closed, where ``exp``
        underflows)."""
        x = np.array(y, dtype=np.float64, copy=True)
        with np.errstate(over="ignore"):
            for j, (lo, hi) in enumerate(self.bounds):
                if lo is not None and hi is not None:
                    x[:, j] = lo + (hi - lo) / (1.0 + np.exp(-y[:, j]))
                elif lo is not None:
                    x[:, j] = lo + np.exp(y[:, j])
                elif hi is not None:
                    x[:, j] = hi - np.exp(-y[:, j])
        return x

    def to_json(self) -> list[list[float | None]]:
        return [list(pair) for pair in self.bounds]
