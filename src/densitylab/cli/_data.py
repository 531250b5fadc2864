"""Reading ``DATA`` for the commands that fit a model: points, column names, notes shown."""

from __future__ import annotations

from typing import Any

import typer


def read_data(data: str, n: int, seed: int) -> tuple[Any, Any, list[str] | None]:
    """``(points, truth or None, column names or None)`` of a built-in name or a file; notes
    on how a file was read (an index column dropped) are printed."""
    from densitylab import datasets

    table, truth = datasets.resolve_table(data, n, seed)
    for note in table.notes:
        typer.echo(f"note: {note}", err=True)
    return table.x, truth, table.names


def is_builtin(data: str) -> bool:
    """Whether ``DATA`` names a built-in distribution (else it is a user's file)."""
    from densitylab import datasets

    return str(data).partition(":")[0].strip() in datasets.names()
