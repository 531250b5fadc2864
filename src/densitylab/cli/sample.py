"""``densitylab sample``: draw points from a trained model."""

from __future__ import annotations

from pathlib import Path

import typer

from densitylab.cli._app import app


def header_of(dim: int, names: tuple[str, ...] | None = None) -> str:
    """The data's own column names where the run knows them, else ``x1, x2, ...``."""
    return ",".join(names) if names else ",".join(f"x{i + 1}" for i in range(dim))


@app.command()
def sample(
    run: Path = typer.Argument(..., help="A run directory written by `densitylab train`, or a model directory written by `dl.save`."),
    n: int = typer.Option(1000, "-n", help="Number of points to draw."),
    seed: int = typer.Option(0, help="Random seed."),
    out: Path = typer.Option(..., "--out", "-o", help="CSV file to write, headed by the training data's column names (x1, x2, ... without them); - for standard output. An existing file is replaced only if densitylab wrote it (and it is unchanged since)."),
    allow_untrained: bool = typer.Option(False, help="Use a run whose training diverged before learning anything."),
    given: Path | None = typer.Option(None, "--given", help="For a conditional model (train --condition-on): a .csv/.npy/.npz of condition values, one row per point to draw; -n is then the number of rows."),
) -> None:
    """Draw N points from a trained model and write them as CSV."""
    import numpy as np

    from densitylab._files import is_stream, output_file
    from densitylab._validation import check_positive_int
    from densitylab.cli._models import load_model

    check_positive_int(n, "-n", maximum=10**8)
    model = load_model(run, allow_untrained)
    condition = None
    if given is not None:
        if model.sample_given is None:
            raise ValueError(f"{run} is not a conditional model: drop --given")
        from densitylab import datasets

        condition = datasets.load(given)
        if condition.shape[1] != len(model.given):
            raise ValueError(f"{given} has {condition.shape[1]} columns; the model's condition "
                             f"has {len(model.given)} (columns {list(model.given)})")
        n = len(condition)
    header = header_of(model.dim, model.names)
    with output_file(out) as staging:
        points = model.sample(n, seed) if condition is None else model.sample_given(condition, seed)
        exact = set(model.given) if condition is not None else set()  # the user's own values
        fmt = ["%.17g" if j in exact else "%.10g" for j in range(model.dim)]
        if points.dtype == object:  # labels of categorical columns beside numbers
            write_labelled(staging, points, header)
        else:
            np.savetxt(staging, points, delimiter=",", header=header, comments="", fmt=fmt)
    typer.echo(f"wrote {n} samples to {out}", err=is_stream(out))


def write_labelled(path: Path, rows, header: str) -> None:
    """Rows of numbers and text labels as CSV (labels quoted where they need it)."""
    import csv

    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        handle.write(header + "\n")
        writer.writerows([v if isinstance(v, str) else f"{v:.10g}" for v in row] for row in rows)
