"""Reading ``DATA`` for the commands that fit a model: points, column names, notes shown."""

from __future__ import annotations

from typing import Any

import typer


def read_data(data: str, n: int, seed: int,
              missing: str = "error") -> tuple[Any, Any, list[str] | None]:
    """``(points, truth or None, column names or None)`` of a built-in name or a file; notes
    on how a file was read (an index column dropped, rows with missing cells dropped under
    ``missing="drop"``) are printed."""
    import numpy as np

    from densitylab import datasets
    from densitylab._validation import check_choice

    check_choice(missing, ("error", "drop"), "--missing")
    table, truth = datasets.resolve_table(data, n, seed, allow_missing=missing == "drop")
    for note in table.notes:
        typer.echo(f"note: {note}", err=True)
    x = table.x
    incomplete = np.isnan(x).any(axis=1)
    if incomplete.any():
        x = x[~incomplete]
        typer.echo(f"note: dropped {int(incomplete.sum())} of {len(incomplete)} rows with "
                   f"missing values (--missing drop); fitting on {len(x)}", err=True)
        if len(x) < 2:
            raise ValueError(f"{data}: fewer than 2 complete rows")
    return x, truth, table.names


MISSING_HELP = ("Rows of a CSV with missing cells (empty, NA, NaN): error (the default: the "
                "message names the first one's row and column) or drop (fit on the complete "
                "rows; the number dropped is printed).")


def is_builtin(data: str) -> bool:
    """Whether ``DATA`` names a built-in distribution (else it is a user's file)."""
    from densitylab import datasets

    return str(data).partition(":")[0].strip() in datasets.names()
