"""``densitylab sample``: draw points from a trained model."""

from __future__ import annotations

from pathlib import Path

import typer

from densitylab.cli._app import app


def model_dir(run: Path) -> Path:
    """A run directory holds its model in ``model/``; a model directory is itself."""
    return run / "model" if (run / "model" / "config.json").is_file() else run


@app.command()
def sample(
    run: Path = typer.Argument(..., help="A run directory written by `densitylab train` (or a model directory)."),
    n: int = typer.Option(1000, "-n", help="Number of points to draw."),
    seed: int = typer.Option(0, help="Random seed."),
    out: Path = typer.Option(..., "--out", "-o", help="CSV file to write (columns x1, x2, ...)."),
) -> None:
    """Draw N points from a trained model and write them as CSV."""
    import numpy as np

    from densitylab._files import atomic_file
    from densitylab.evaluation import flow_samples
    from densitylab.io import load

    if n < 1:
        raise ValueError(f"-n must be at least 1, got {n}")
    flow = load(model_dir(run))
    points = flow_samples(flow, n, seed)
    header = ",".join(f"x{i + 1}" for i in range(points.shape[1]))
    with atomic_file(out) as staging:
        np.savetxt(staging, points, delimiter=",", header=header, comments="", fmt="%.10g")
    typer.echo(f"wrote {n} samples to {out}")
