"""``densitylab score``: log-density of the user's points under a trained model."""

from __future__ import annotations

from pathlib import Path

import typer

from densitylab.cli._app import app
from densitylab.cli.sample import model_dir


@app.command()
def score(
    run: Path = typer.Argument(..., help="A run directory written by `densitylab train` (or a model directory)."),
    points: Path = typer.Argument(..., help="Points to score: .csv (header optional), .npy or .npz."),
    out: Path = typer.Option(..., "--out", "-o", help="CSV file to write: one log_density per row."),
) -> None:
    """Write log p(x), in nats, for every row of POINTS."""
    import numpy as np

    from densitylab import datasets
    from densitylab._files import atomic_file
    from densitylab.evaluation import flow_log_prob
    from densitylab.io import load

    flow = load(model_dir(run))
    x = datasets.load(points)
    if x.shape[1] != flow.dim:
        raise ValueError(f"{points} has {x.shape[1]} columns but the model has dimension {flow.dim}")
    log_p = flow_log_prob(flow, x)
    with atomic_file(out) as staging:
        np.savetxt(staging, log_p, header="log_density", comments="", fmt="%.10g")
    typer.echo(f"wrote {len(log_p)} log-densities to {out} (mean {log_p.mean():.4f} nats)")
