"""Input checks shared by every public entry point: one clear ``ValueError`` per problem."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike


def as_points(
    x: ArrayLike, *, name: str = "x", dim: int | None = None, min_rows: int = 1,
    allow_missing: bool = False,
) -> np.ndarray:
    """Return ``x`` as a float64 array of shape ``(n, dim)`` or raise a ``ValueError``.

    A 1-D input is read as ``n`` points of dimension 1 only when ``dim == 1``. NaN cells
    (missing values) pass where ``allow_missing``; infinite ones never do.
    """
    if np.iscomplexobj(x):
        raise ValueError(f"{name} holds complex numbers: Complex data not supported (pass the "
                         "real and imaginary parts as two columns)")
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be numeric, got {type(x).__name__}") from err
    if arr.ndim == 1 and dim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise ValueError(f"{name} must have shape (n, dim), got an array with shape {arr.shape}")
    if dim is not None and arr.shape[1] != dim:
        raise ValueError(f"{name} must have {dim} columns, got {arr.shape[1]}")
    if arr.shape[0] < min_rows:
        raise ValueError(f"{name} needs at least {min_rows} rows, got {arr.shape[0]}")
    bad = np.isinf(arr) if allow_missing else ~np.isfinite(arr)
    if bad.any():
        row, column = (int(v) for v in np.argwhere(bad)[0])
        raise ValueError(f"{name} contains NaN or infinite values (first at row {row}, "
                         f"column {column})")
    return arr


def estimator_points(estimator: Any, X: ArrayLike, *, reset: bool, name: str = "X",
                     min_rows: int = 1, allow_missing: bool = False) -> np.ndarray:
    """:func:`as_points` for a scikit-learn estimator: scikit-learn's checks as well (sparse,
    complex and empty input refused, object arrays of numbers converted, ``n_features_in_``
    set on ``reset`` and compared otherwise). Where both refuse the input, the one-line error
    gives our reason and then scikit-learn's. NaN cells pass where ``allow_missing``."""
    from sklearn.utils.validation import validate_data

    expected = None if reset else getattr(estimator, "n_features_in_", None)
    if expected == 1 and np.ndim(X) == 1:
        X = np.asarray(X)[:, None]  # points of a one-dimensional model may come as a vector
    try:
        arr = validate_data(estimator, X, reset=reset, dtype=np.float64,
                            ensure_all_finite=False, ensure_min_samples=min_rows)
    except ValueError as theirs:
        try:
            as_points(X, name=name, dim=expected, min_rows=min_rows, allow_missing=allow_missing)
        except ValueError as ours:
            first = str(theirs).strip().splitlines()[0]
            raise ValueError(f"{ours} ({first})") from None
        raise
    return as_points(arr, name=name, min_rows=min_rows, allow_missing=allow_missing)


def check_positive_int(
    value: int, name: str, minimum: int = 1, maximum: int | None = None
) -> int:
    """Return ``value`` if it is an integer in ``[minimum, maximum]``, else a ``ValueError``."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be at most {maximum}, got {value!r}")
    return int(value)


def check_flow_dim(dim: Any, minimum: int = 2) -> int:
    """Return ``dim`` if it is an integer >= ``minimum`` (2 for couplings, which split the
    input), else a ``ValueError`` that points one-dimensional data to the flows that take it."""
    if isinstance(dim, bool) or not isinstance(dim, int | np.integer) or dim < minimum:
        hint = (" (for one-dimensional data use nsf or maf, which need no split)"
                if dim == 1 else "")
        raise ValueError(f"dim must be an integer >= {minimum} for a coupling flow, "
                         f"got {dim!r}{hint}")
    return int(dim)


def check_positive_float(value: float, name: str) -> float:
    """Return ``value`` as a float if it is a finite positive real number, else a ``ValueError``.

    NumPy scalars are welcome (``np.float32(1e-3)``); booleans and strings are not.
    """
    if isinstance(value, bool | np.bool_) or not isinstance(value, int | float | np.number):
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    if not (np.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return float(value)


def column_statistics(x: Any, dim: int = 0) -> tuple[Any, Any]:
    """Mean and standard deviation of a torch tensor's columns along ``dim``, in float64.

    No clamp: data of any scale keep their exact units (a clamp at 1e-12 made every data set
    below that scale look alike). A constant column has no density to learn: a ``ValueError``.
    """
    wide = x.double()
    std = wide.std(dim=dim, keepdim=True)
    constant = ~(std > 0)
    if bool(constant.any()):
        column = int(constant.reshape(-1, x.shape[-1]).any(0).nonzero()[0, 0])
        raise ValueError(f"column {column} of the data is constant: it has no density to learn")
    return wide.mean(dim=dim, keepdim=True), std


def check_widths(hidden: Any, allow_empty: bool = False) -> tuple[int, ...]:
    """Hidden layer widths as a tuple of positive ints (``()``, a linear map, only where
    ``allow_empty``); one int means one layer."""
    sequence = isinstance(hidden, Sequence) and not isinstance(hidden, str)
    widths = tuple(hidden) if sequence else (hidden,)
    if (not widths and not allow_empty) or any(
        isinstance(h, bool) or not isinstance(h, int | np.integer) or h < 1 for h in widths
    ):
        kind = "a" if allow_empty else "a non-empty"
        raise ValueError(f"hidden must be {kind} sequence of positive ints, got {hidden!r}")
    return tuple(int(h) for h in widths)


def check_choice(value: Any, choices: Any, name: str) -> Any:
    """Return ``value`` if it is one of ``choices``, else a ``ValueError`` listing them."""
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; choose one of {list(choices)}")
    return value


def feature_names_of(x: Any) -> np.ndarray | None:
    """The column names of a DataFrame whose columns are all strings (scikit-learn's rule for
    ``feature_names_in_``), else ``None``."""
    columns = getattr(x, "columns", None)
    if columns is None or not all(isinstance(c, str) for c in columns):
        return None
    return np.asarray(list(columns), dtype=object)


MISSING_CHOICES = ("error", "drop")


def complete_rows(x: np.ndarray, missing: str, names: Any = None) -> tuple[np.ndarray, int]:
    """``(x without its incomplete rows, how many were dropped)`` under ``missing="drop"``;
    under ``"error"``, a ``ValueError`` naming the first missing (NaN) cell's column and row.
    Infinite cells are always an error."""
    check_choice(missing, MISSING_CHOICES, "missing")

    def where(row: int, j: int) -> str:
        return f"row {row}, column {j}" + ("" if names is None else f" ({names[j]!r})")

    if np.isinf(x).any():
        row, j = (int(v) for v in np.argwhere(np.isinf(x))[0])
        raise ValueError(f"X has an infinite value at {where(row, j)}")
    incomplete = np.isnan(x).any(axis=1)
    if not incomplete.any():
        return x, 0
    if missing == "error":
        row, j = (int(v) for v in np.argwhere(np.isnan(x))[0])
        raise ValueError(f"X has {int(incomplete.sum())} row(s) with missing values (NaN); the "
                         f"first is {where(row, j)}. Pass missing='drop' to fit on the complete "
                         "rows, or drop them yourself (DataFrame.dropna())")
    kept = x[~incomplete]
    if len(kept) < 2:
        raise ValueError(f"only {len(kept)} row(s) of X are complete: too few to fit")
    return kept, int(incomplete.sum())
