"""Reading the user's own points from ``.csv``, ``.npy`` or ``.npz`` files, with errors that
name the file and the row and column at fault."""

from __future__ import annotations

import math
import os
import zipfile
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

MIN_ROWS = 2


@dataclass(frozen=True)
class Table:
    """A user's file as read: the points, the column names of a CSV header (``None`` without
    one) and notes on what was done to it (an index column dropped)."""

    x: np.ndarray
    names: list[str] | None = None
    notes: list[str] = field(default_factory=list)
    labels: dict[int, list[str | None]] = field(default_factory=dict)
    """Columns read as text labels (categorical): index -> the cells as written, ``None`` for
    a missing one (``x`` holds NaN there)."""

    def rows(self) -> np.ndarray:
        """The table as an object array ``(n, d)``: numbers, and the labels of text columns."""
        out = self.x.astype(object)
        for j, cells in self.labels.items():
            out[:, j] = np.asarray(cells, dtype=object)
        return out


def load(path: str | os.PathLike[str]) -> np.ndarray:
    """Read points, one per row, as a float64 array of shape ``(n, d)``.

    Supported: ``.csv`` (comma-, semicolon-, tab- or space-separated; an optional header row
    whose cells are all non-numeric; blank lines and ``#`` comments skipped), ``.npy`` (a 2-D
    array) and ``.npz`` (a single array, or one named ``x`` or ``data``). In messages, CSV rows
    are numbered as lines of the file (from 1) and columns from 1.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: unsupported extension, non-numeric cell, NaN/inf, ragged rows, an array
            that is not 2-D, or fewer than 2 rows.

    Example:
        >>> import densitylab as dl
        >>> x = dl.datasets.load("points.csv")  # doctest: +SKIP
    """
    return load_table(path).x


def load_table(path: str | os.PathLike[str], allow_missing: bool = False,
               text: bool = False, as_text: Collection[int] = ()) -> Table:
    """:func:`load`, keeping a CSV header's column names. A first column that is a pandas
    index (written by ``DataFrame.to_csv()``: an empty or ``Unnamed: 0`` header over the row
    numbers 0, 1, 2, ...) is dropped, with a note saying so. With ``allow_missing``, a CSV's
    empty or ``NA`` cells are read as NaN (missing) instead of refused. With ``text``, a CSV
    column holding text is read as labels (``Table.labels``, for a categorical model) instead
    of refused; the columns ``as_text`` (indices after any index column) are always read so."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such file: {path}")
    if not path.is_file():
        raise ValueError(f"{path} is not a file")
    reader = _READERS.get(path.suffix.lower())
    if reader is None:
        raise ValueError(
            f"{path}: unsupported file type {path.suffix or '(none)'!r}; "
            f"use one of {', '.join(sorted(_READERS))}"
        )
    table = (_read_csv(path, allow_missing, text, set(as_text)) if reader is _read_csv
             else reader(path))
    if not isinstance(table, Table):
        table = Table(table)
    if table.x.shape[0] < MIN_ROWS:
        raise ValueError(f"{path}: needs at least {MIN_ROWS} rows (points), got {table.x.shape[0]}")
    return Table(np.ascontiguousarray(table.x, dtype=np.float64), table.names, table.notes,
                 table.labels)


def _split(line: str, delimiter: str | None) -> list[str]:
    return [cell.strip() for cell in line.split(delimiter)]


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _read_csv(path: Path, allow_missing: bool = False, text: bool = False,
              as_text: set[int] | None = None) -> Table:
    try:
        content = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not a text file ({err.reason})") from None
    lines = [
        (number, line)
        for number, line in enumerate(content.splitlines(), start=1)
        if line.strip() and not line.lstrip().startswith("#")
    ]
    if not lines:
        raise ValueError(f"{path}: no data rows")
    first = lines[0][1]
    delimiter = next((d for d in (",", ";", "\t") if d in first), None)
    names = None
    if not any(_is_number(cell) for cell in _split(first, delimiter)):
        names = [cell.strip('"') for cell in _split(first, delimiter)]  # header row
        lines = lines[1:]
    if not lines:
        raise ValueError(f"{path}: only a header row, no data rows")
    width = len(_split(lines[0][1], delimiter))
    if names is not None and len(names) != width:
        raise ValueError(f"{path}: the header names {len(names)} columns, the rows have {width}")

    def column(j: int) -> str:
        return f"column {j} ({names[j - 1]!r})" if names else f"column {j}"

    table = []
    for number, line in lines:
        cells = _split(line, delimiter)
        if len(cells) != width:
            raise ValueError(
                f"{path}: row {number} has {len(cells)} columns, expected {width} "
                f"(as in row {lines[0][0]})"
            )
        table.append((number, cells))
    labelled = _text_columns(table, width, names, as_text or set()) if text else set()
    labels: dict[int, list[str | None]] = {j - 1: [] for j in sorted(labelled)}
    rows = []
    for number, cells in table:
        values = []
        for j, cell in enumerate(cells, start=1):
            if j in labelled:
                absent = not cell or cell.upper() in MISSING
                if absent and not allow_missing:
                    raise ValueError(f"{path}: row {number}, {column(j)} is missing: drop or "
                                     "fill that row (or --missing drop)")
                labels[j - 1].append(None if absent else cell.strip('"'))
                values.append(math.nan)
                continue
            try:
                value = float(cell)
            except ValueError:
                if (not cell or cell.upper() in MISSING) and allow_missing:
                    values.append(math.nan)
                    continue
                if not cell or cell.upper() in MISSING:
                    raise ValueError(
                        f"{path}: row {number}, {column(j)} is missing ({cell or 'empty'}); "
                        "densitylab models complete rows: drop or fill the rows with missing "
                        "values") from None
                raise ValueError(
                    f"{path}: row {number}, {column(j)} holds text ({cell!r}); densitylab "
                    "models numeric columns here: drop that column, encode it as numbers, or "
                    "model it as categorical (train --model auto; dl.CategoricalDensity)"
                ) from None
            if math.isnan(value) and allow_missing:
                values.append(value)
                continue
            if not math.isfinite(value):
                raise ValueError(f"{path}: row {number}, {column(j)} is {cell!r} "
                                 "(NaN/inf not allowed)")
            values.append(value)
        rows.append(values)
    return _without_index(np.array(rows, dtype=np.float64), names, path, labels)


def _text_columns(table: list[tuple[int, list[str]]], width: int, names: list[str] | None,
                  as_text: set[int]) -> set[int]:
    """Columns (from 1) holding a cell that is neither a number nor missing, and those of
    ``as_text`` (from 0, counted after a pandas index column, which holds no text)."""
    index = 1 if names is not None and width > 1 and names[0] in ("", "Unnamed: 0") else 0
    found = {j + 1 + index for j in as_text if j + index < width}
    for _, cells in table:
        found |= {j for j, cell in enumerate(cells, start=1)
                  if cell and cell.upper() not in MISSING and not _is_number(cell)}
    return found


MISSING = {"NA", "N/A", "NAN", "NULL", "NONE", "?"}
"""Cells read as a missing value (besides an empty cell), upper-cased."""


def _without_index(x: np.ndarray, names: list[str] | None, path: Path,
                   labels: dict[int, list[str]] | None = None) -> Table:
    """Drop a first column that is a pandas index: unnamed, holding the row numbers."""
    labels = labels or {}
    if names is None or x.shape[1] < 2 or names[0] not in ("", "Unnamed: 0") or 0 in labels:
        return Table(x, names, [], labels)
    if not np.array_equal(x[:, 0], np.arange(len(x))):
        return Table(x, names, [], labels)
    note = (f"{path.name}: dropped the first column, an unnamed index of row numbers "
            "(pandas' to_csv)")
    return Table(x[:, 1:], names[1:], [note], {j - 1: v for j, v in labels.items()})


def _check_array(array: np.ndarray, where: str) -> np.ndarray:
    if array.dtype.kind not in "iuf":
        raise ValueError(f"{where}: expected a numeric array, got dtype {array.dtype}")
    if array.ndim != 2:
        raise ValueError(
            f"{where}: expected a 2-D array of shape (n, d), one point per row; "
            f"got shape {array.shape}"
        )
    finite = np.isfinite(array)
    if not finite.all():
        row, column = np.argwhere(~finite)[0]
        raise ValueError(
            f"{where}: row {row + 1}, column {column + 1} is {array[row, column]} "
            "(NaN/inf not allowed)"
        )
    return array.astype(np.float64)


MAX_ARRAY_BYTES = 2**31
"""Largest array a ``.npy`` or ``.npz`` file may hold (2 GiB, 268 million float64 numbers):
the size its header claims is checked before anything is allocated, so a small file whose
header claims a huge shape, or an archive that expands far beyond its size, is refused."""


def _checked_header(handle: Any, where: str, available: int) -> None:
    """Read a ``.npy`` header from ``handle`` and refuse what it announces unless it is a
    numeric array that fits :data:`MAX_ARRAY_BYTES` and the ``available`` bytes after it."""
    try:
        major, _ = np.lib.format.read_magic(handle)
        read = (np.lib.format.read_array_header_1_0 if major == 1
                else np.lib.format.read_array_header_2_0)
        shape, _, dtype = read(handle, max_header_size=10_000)
    except (ValueError, OSError, EOFError, SyntaxError) as err:
        raise ValueError(f"{where}: cannot read as an .npy array of numbers ({err})") from None
    if dtype.hasobject or dtype.kind not in "iuf":
        raise ValueError(f"{where}: expected a numeric array, got dtype {dtype} (densitylab "
                         "never loads Python objects)")
    size = math.prod(shape) * dtype.itemsize
    if size > MAX_ARRAY_BYTES:
        raise ValueError(f"{where}: its header claims shape {shape} ({size / 2**30:.3g} GiB), "
                         f"more than densitylab reads ({MAX_ARRAY_BYTES // 2**30} GiB)")
    if size > available - handle.tell():
        raise ValueError(f"{where}: its header claims shape {shape}, more data than the file "
                         "holds (truncated or damaged)")


def _read_npy(path: Path) -> np.ndarray:
    with open(path, "rb") as handle:
        _checked_header(handle, str(path), path.stat().st_size)
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise ValueError(f"{path}: cannot read as an .npy array of numbers ({err})") from None
    return _check_array(array, str(path))


def _read_npz(path: Path) -> np.ndarray:
    try:
        with zipfile.ZipFile(path) as archive:
            members = {info.filename.removesuffix(".npy"): info for info in archive.infolist()}
            keys = list(members)
            if len(keys) == 1:
                key = keys[0]
            else:
                key = next((k for k in ("x", "data") if k in keys), None)
                if key is None:
                    raise ValueError(
                        f"{path}: holds arrays {keys}; expected a single array or one named "
                        "'x' or 'data'"
                    )
            info = members[key]
            if info.file_size > MAX_ARRAY_BYTES + 10_000:
                raise ValueError(f"{path} [{key}]: expands to {info.file_size / 2**30:.3g} GiB, "
                                 f"more than densitylab reads ({MAX_ARRAY_BYTES // 2**30} GiB)")
            with archive.open(info) as member:
                _checked_header(member, f"{path} [{key}]", info.file_size)
        with np.load(path, allow_pickle=False) as archive:
            array = archive[key]
    except (OSError, EOFError, zipfile.BadZipFile) as err:
        raise ValueError(f"{path}: cannot read as .npz ({err})") from None
    return _check_array(array, f"{path} [{key}]")


_READERS: dict[str, Callable[[Path], np.ndarray]] = {
    ".csv": _read_csv,
    ".npy": _read_npy,
    ".npz": _read_npz,
}
