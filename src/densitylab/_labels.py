"""Text labels in a table: which columns hold them, and how a table is told apart.

A column holding text can only be modelled as categorical (:mod:`densitylab.categorical`);
AutoDensity hands a table with one to that model instead of failing on ``float('east')``.
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


def holds_categories(X: Any, declared: Any) -> bool:
    """Whether a table has a column holding text or one declared ``categorical``: what
    :class:`~densitylab.CategoricalDensity` models (AutoDensity hands such tables to it)."""
    if isinstance(declared, dict) and any(
            isinstance(v, str) and v.strip().lower() == "categorical" for v in declared.values()):
        return True
    dtypes = getattr(X, "dtypes", None)
    if dtypes is not None:
        return any(t.kind in "OSU" and any(is_text(v) for v in X[c])
                   for c, t in zip(X.columns, dtypes, strict=True))
    if isinstance(X, np.ndarray) and X.dtype.kind in "OSU" and X.ndim == 2:
        return bool(text_columns(X.astype(object)))
    if isinstance(X, list | tuple):
        return any(is_text(v) for row in X if isinstance(row, list | tuple) for v in row)
    return False


def table_digest(rows: np.ndarray) -> str:
    """A fingerprint of an object table (labels and numbers), to recognise the training rows."""
    import hashlib

    digest = hashlib.sha256()
    for row in rows:
        cells = (repr(v if is_text(v) or v is None else float(v)) for v in row)
        digest.update("\x1f".join(cells).encode())
        digest.update(b"\x1e")
    return digest.hexdigest()
