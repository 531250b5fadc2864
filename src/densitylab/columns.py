"""Column types of a user's table: continuous, bounded, integer or rounded, binary.

A table is rarely a cloud of real numbers: counts are integers, flags are 0 or 1, prices cannot
be negative, shares live in ``[0, 1]``. :func:`detect_column_types` reads these from the data;
:func:`column_types` merges them with the user's declarations (``column_types=`` in Python,
``--column-types`` on the command line). :class:`TableMap` is what a density model does with
them:

- a **discrete** column (integer, rounded, binary) with lattice step ``s`` is modelled as its
  values spread by uniform noise on ``[-s/2, s/2]`` (dequantisation). The model of the spread
  variable ``u`` gives each recorded value ``k`` the probability mass ``P(k) = integral of
  p(u) over [k - s/2, k + s/2]``, estimated by ``s * p(k)`` (the midpoint rule): a discrete
  column's log-likelihood is a log-probability, a continuous column's a log-density (a value
  off the lattice gets the mass of the cell it falls in);
- a **bounded** column (and a discrete one with bounds, half a step beyond them) is mapped onto
  the real line by :class:`densitylab.support.Support`, so the density integrates to 1 on the
  support and samples never leave it;
- samples of a discrete column are put back on its lattice (and within its levels).

References:
    Uria, B., Murray, I. and Larochelle, H. (2013). RNADE. NeurIPS (dequantisation).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from densitylab._rounding import rounding_steps
from densitylab.support import Support

KINDS = ("continuous", "integer", "rounded", "binary")
DISCRETE = ("integer", "rounded", "binary")
NEAR_BOUND = 0.05
"""A non-negative column is read as bounded below by 0 when its minimum lies within this
fraction of its range from 0 (prices, waiting times); a column in ``[0, 1]`` touching both ends
as closely is a share, bounded by 0 and 1."""


@dataclass(frozen=True)
class ColumnType:
    """One column's type: ``kind`` (one of :data:`KINDS`, or ``"categorical"`` for a column of
    labels, which :class:`~densitylab.CategoricalDensity` models and :class:`TableMap` never
    sees), its bounds (``None``: open), and for a discrete kind its lattice ``step`` and
    ``origin`` (a value on the lattice)."""

    kind: str = "continuous"
    lower: float | None = None
    upper: float | None = None
    step: float = 0.0
    origin: float = 0.0

    @property
    def discrete(self) -> bool:
        return self.kind in DISCRETE

    def describe(self) -> str:
        """``"integer (step 1, >= 0), log-probability"`` and the like."""
        parts = [f"step {self.step:g}"] if self.discrete and self.kind != "binary" else []
        if self.lower is not None and self.upper is not None:
            parts.append(f"in [{self.lower:g}, {self.upper:g}]")
        elif self.lower is not None:
            parts.append(f">= {self.lower:g}")
        elif self.upper is not None:
            parts.append(f"<= {self.upper:g}")
        kind = self.kind if not parts else f"{self.kind} ({', '.join(parts)})"
        mass = self.discrete or self.kind == "categorical"
        return f"{kind}, {'log-probability' if mass else 'log-density'}"

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "lower": self.lower, "upper": self.upper, "step": self.step,
                "origin": self.origin}


def detect_column_types(x: np.ndarray) -> list[ColumnType]:
    """The type of each column of ``x`` ``(n, d)``, read from the data.

    Two distinct values: binary. Whole numbers: integer, on the greatest common step of their
    gaps. At most half the values distinct (see :func:`densitylab._rounding.rounding_steps`)
    and all on the lattice of their smallest gap: rounded to that gap (else continuous). A
    non-negative column whose minimum is near 0 (within :data:`NEAR_BOUND` of its range) is
    bounded below by 0; one in ``[0, 1]`` near both ends, by 0 and 1; a continuous column with
    values on such a bound is left unbounded (its values there are a point mass that no
    density holds).

    Example:
        >>> x = np.array([[0, 3, 0.5], [1, 0, 2.5], [0, 2, 9.0], [1, 2, 4.0], [1, 0, 0.2]])
        >>> [t.describe() for t in detect_column_types(x)]  # doctest: +NORMALIZE_WHITESPACE
        ['binary (in [0, 1]), log-probability', 'integer (step 1, >= 0), log-probability',
         'continuous (>= 0), log-density']
    """
    steps = rounding_steps(x)
    types = []
    for j in range(x.shape[1]):
        column = x[:, j]
        values = np.unique(column)
        low, high = float(values[0]), float(values[-1])
        near = NEAR_BOUND * (high - low)
        if len(values) < 2:  # constant: no type to read (the model refuses it)
            types.append(ColumnType())
            continue
        if len(values) == 2:
            types.append(ColumnType("binary", low, high, high - low, low))
            continue
        lower = 0.0 if 0 <= low <= near else None
        upper = 1.0 if lower == 0.0 and high <= 1 and 1 - high <= near else None
        if (low == lower or high == upper) and steps[j] == 0 and not np.all(
                values == np.round(values)):  # a continuous column reaching its bound: the
            lower = upper = None  # values on it are a point mass, not a density's
        whole = bool(np.all(values == np.round(values))) and high - low < 2**53
        if whole:  # the greatest common step of the gaps
            step = float(np.gcd.reduce(np.diff(values).astype(np.int64)))
            types.append(ColumnType("integer", lower, upper, step, low))
        elif steps[j] > 0 and _on_lattice(values, low, float(steps[j])):
            types.append(ColumnType("rounded", lower, upper, float(steps[j]), low))
        else:
            types.append(ColumnType("continuous", lower, upper))
    return types


_SPEC = re.compile(r"^\s*(?P<kind>[a-z]+)\s*(\((?P<args>[^)]*)\))?\s*$")


def parse_type(spec: str, detected: ColumnType, column: np.ndarray) -> ColumnType:
    """A declared type: ``continuous`` (and unbounded), ``positive`` (bounded below by 0),
    ``bounded(a,b)`` (either side may be empty), ``integer``, ``integer(step)``,
    ``rounded(step)``, ``binary`` (the two values of ``column``); what is not declared is taken
    from ``detected``."""
    match = _SPEC.match(spec.lower()) if isinstance(spec, str) else None
    if match is None:
        raise ValueError(f"unknown column type {spec!r}; use continuous, positive, "
                         "bounded(a,b), integer, integer(step), rounded(step) or binary")
    kind, args = match["kind"], match["args"]
    numbers = [] if args is None else [a.strip() for a in args.split(",")]
    try:
        values = [None if a == "" else float(a) for a in numbers]
    except ValueError:
        raise ValueError(f"column type {spec!r}: the arguments must be numbers") from None
    if kind == "continuous" and not values:
        return ColumnType("continuous")
    if kind == "positive" and not values:
        return ColumnType("continuous" if not detected.discrete else detected.kind, 0.0,
                          detected.upper, detected.step, detected.origin)
    if kind == "bounded" and len(values) == 2:
        return replace(detected, lower=values[0], upper=values[1])
    if kind in ("integer", "rounded") and len(values) <= 1:
        step = values[0] if values else (1.0 if kind == "integer" else detected.step)
        if step is None or not step > 0:
            raise ValueError(f"column type {spec!r}: the step must be positive")
        return ColumnType(kind, detected.lower, detected.upper, float(step), detected.origin)
    if kind == "binary" and not values:
        levels = np.unique(column)
        if len(levels) != 2:
            raise ValueError(f"a column declared binary holds {len(levels)} distinct values")
        low, high = float(levels[0]), float(levels[1])
        return ColumnType("binary", low, high, high - low, low)
    raise ValueError(f"unknown column type {spec!r}; use continuous, positive, bounded(a,b), "
                     "integer, integer(step), rounded(step) or binary")


def column_types(x: np.ndarray, declared: Mapping[Any, str] | None = None,
                 names: Sequence[str] | None = None) -> list[ColumnType]:
    """Detected types of ``x``'s columns, overridden by ``declared`` (column index or name ->
    type, see :func:`parse_type`); each type checked against the data."""
    types = detect_column_types(x)
    for key, spec in (declared or {}).items():
        j = column_index(key, x.shape[1], names)
        types[j] = parse_type(spec, types[j], x[:, j])
    for j, t in enumerate(types):
        _check_fits(x[:, j], t, j if names is None else f"{j} ({names[j]!r})")
    return types


def column_index(key: Any, width: int, names: Sequence[str] | None) -> int:
    """The index of the column ``key`` (an index, or a name among ``names``) of a table
    ``width`` columns wide; else a ``ValueError``."""
    if isinstance(key, str):
        if names is None or key not in names:
            known = "no column names" if names is None else f"columns {list(names)}"
            raise ValueError(f"column_types names a column {key!r}; the data have {known}")
        return list(names).index(key)
    if isinstance(key, bool) or not isinstance(key, int | np.integer) or not 0 <= key < width:
        raise ValueError(f"column_types key {key!r} is not a column index in 0..{width - 1}")
    return int(key)


def _on_lattice(values: np.ndarray, origin: float, step: float) -> bool:
    """Whether every value is ``origin`` plus a whole number of ``step`` (to rounding)."""
    lattice = (values - origin) / step
    return bool(np.allclose(lattice, np.round(lattice), atol=1e-6))


def _check_fits(column: np.ndarray, t: ColumnType, where: Any) -> None:
    if t.lower is not None and column.min() < t.lower or \
            t.upper is not None and column.max() > t.upper:
        raise ValueError(f"column {where} has values outside its bounds "
                         f"[{t.lower}, {t.upper}]")
    if not t.discrete and (t.lower is not None and column.min() == t.lower
                           or t.upper is not None and column.max() == t.upper):
        raise ValueError(f"column {where} has values on its bound: a continuous column's "
                         "density needs its bounds strictly beyond the values (declare it "
                         "integer or rounded if the values are counts or rounded)")
    if t.discrete:
        if not _on_lattice(column, t.origin, t.step):
            raise ValueError(f"column {where} is declared {t.kind} with step {t.step:g}, but "
                             "holds values off that lattice")


class TableMap:
    """What a density model does with a table's column types: discrete columns dequantised,
    bounded ones mapped onto the real line (see the module's docstring)."""

    def __init__(self, types: Sequence[ColumnType]) -> None:
        self.types = list(types)
        self.support = Support([self._free_bounds(t) for t in self.types], len(self.types))
        steps = np.array([t.step if t.discrete else 0.0 for t in self.types])
        self.steps = steps
        self.log_steps = np.log(np.where(steps > 0, steps, 1.0))

    @staticmethod
    def _free_bounds(t: ColumnType) -> tuple[float | None, float | None]:
        """A discrete column's spread values reach half a step beyond its bounds; a binary
        one lies between its two levels."""
        half = t.step / 2 if t.discrete else 0.0
        lower = t.origin if t.kind == "binary" else t.lower
        upper = t.origin + t.step if t.kind == "binary" else t.upper
        return (None if lower is None else lower - half, None if upper is None else upper + half)

    def for_fitting(self, x: np.ndarray, seed: int) -> np.ndarray:
        """Training rows: discrete columns spread by uniform noise, then mapped."""
        rng = np.random.default_rng(seed)
        spread = x + (rng.random(x.shape) - 0.5) * self.steps
        return self.support.to_free(spread)[0]

    def for_scoring(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(mapped rows, per-row log-Jacobian + log steps)``: a model's log-density of the
        mapped rows plus the second is the log-likelihood in the data's units (log-mass for
        discrete columns); ``-inf`` for rows outside the support. A discrete value off the
        lattice gets the mass of the cell it falls in (its nearest lattice point's). Missing
        cells (NaN) stay missing and count in neither."""
        x = np.array(x, dtype=np.float64, copy=True)
        for j, t in enumerate(self.types):
            if t.discrete:
                x[:, j] = t.origin + t.step * np.round((x[:, j] - t.origin) / t.step)
        y, log_jacobian, inside = self.support.to_free(x)
        missing = np.isnan(x)
        log_jacobian = log_jacobian + np.where(missing, 0.0, self.log_steps).sum(axis=1)
        log_jacobian = np.where(inside, log_jacobian, -np.inf)
        y[~inside] = 0.0
        return y, log_jacobian

    def to_data(self, y: np.ndarray) -> np.ndarray:
        """Model samples back in the data's units: discrete columns on their lattice and
        levels, bounded ones inside their bounds."""
        x = self.support.to_data(y)
        for j, t in enumerate(self.types):
            if t.discrete:
                x[:, j] = t.origin + t.step * np.round((x[:, j] - t.origin) / t.step)
                low = t.origin if t.kind == "binary" else t.lower
                high = t.origin + t.step if t.kind == "binary" else t.upper
                x[:, j] = np.clip(x[:, j], low, high)
        return x
