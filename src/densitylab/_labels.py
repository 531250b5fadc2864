"""Text labels in a table: which columns hold them, and the estimators that refuse them.

A column holding text can only be modelled as categorical (:mod:`densitylab.categorical`);
the estimators of numeric columns point there instead of failing on ``float('east')``.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def is_text(value: Any) -> bool:
    """Whether a cell holds text (a label) rather than a number."""
    return isinstance(value, str | bytes)


def table_rows(X: Any) -> tuple[np.ndarray, list[str] | None]:
    """``X`` (a DataFrame or a 2-D array, text allowed) as an object array and its column
    names (``None`` without a DataFrame)."""
    names = None
    if hasattr(X, "columns") and hasattr(X, "to_numpy"):
        names = [str(c) for c in X.columns]
        rows = X.to_numpy(dtype=object)
    else:
        rows = np.asarray(X, dtype=object)
    if rows.ndim != 2 or rows.shape[0] < 1 or rows.shape[1] < 1:
        raise ValueError(f"X must be a 2-D table of rows and columns, got shape {rows.shape}")
    return rows, names


def text_columns(rows: np.ndarray) -> list[int]:
    """The columns of an object table that hold text in any cell."""
    return [j for j in range(rows.shape[1]) if any(is_text(v) for v in rows[:, j])]


def refuse_categorical(X: Any, declared: Any) -> None:
    """A ``ValueError`` pointing to :class:`CategoricalDensity` for a table with a text
    column or a column declared ``categorical`` (estimators of numeric columns cannot take
    them)."""
    if isinstance(declared, dict):
        named = [k for k, v in declared.items()
                 if isinstance(v, str) and v.strip().lower() == "categorical"]
        if named:
            raise ValueError(f"column {named[0]!r} is declared categorical: fit "
                             "dl.CategoricalDensity(column_types=...), P(category) x "
                             "p(rest | category)")
    dtypes = getattr(X, "dtypes", None)
    if dtypes is not None:
        text = [str(c) for c, t in zip(X.columns, dtypes, strict=True) if t.kind in "OSUb"
                and not str(t).startswith("bool") and any(is_text(v) for v in X[c])]
    elif isinstance(X, np.ndarray) and X.dtype.kind in "OSU" and X.ndim == 2:
        text = [str(j) for j in text_columns(X.astype(object))]
    else:
        return
    if text:
        raise ValueError(f"column {text[0]!r} holds text: fit dl.CategoricalDensity, which "
                         "models it as categorical (P(category) x p(rest | category))")
