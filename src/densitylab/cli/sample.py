"""``densitylab sample``: draw points from a trained model."""

from __future__ import annotations

from pathlib import Path

import typer

from densitylab.cli._app import app


def header_of(dim: int) -> str:
    return ",".join(f"x{i + 1}" for i in range(dim))


@app.command()
def sample(
    run: Path = typer.Argument(..., help="A run directory written by `densitylab train`, or a model directory written by `dl.save`."),
    n: int = typer.Option(1000, "-n", help="Number of points to draw."),
    seed: int = typer.Option(0, help="Random seed."),
    out: Path = typer.Option(..., "--out", "-o", help="CSV file to write (columns x1, x2, ...); an existing file is replaced only if densitylab wrote it."),
    allow_untrained: bool = typer.Option(False, help="Use a run whose training diverged before learning anything."),
) -> None:
    """Draw N points from a trained model and write them as CSV."""
    import numpy as np

    from densitylab._files import output_file
    from densitylab._validation import check_positive_int
    from densitylab.cli._models import load_model

    check_positive_int(n, "-n", maximum=10**8)
    model = load_model(run, allow_untrained)
    header = header_of(model.dim)
    with output_file(out, header) as staging:
        points = model.sample(n, seed)
        np.savetxt(staging, points, delimiter=",", header=header, comments="", fmt="%.10g")
    typer.echo(f"wrote {n} samples to {out}")
