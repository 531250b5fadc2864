"""``densitylab score``: log-density of the user's points under a trained model."""

from __future__ import annotations

from pathlib import Path

import typer

from densitylab.cli._app import app

HEADER = "log_density"


@app.command()
def score(
    run: Path = typer.Argument(..., help="A run directory written by `densitylab train`, or a model directory written by `dl.save`."),
    points: Path = typer.Argument(..., help="Points to score: .csv (header optional), .npy or .npz."),
    out: Path = typer.Option(..., "--out", "-o", help="CSV file to write: one log_density per row; an existing file is replaced only if densitylab wrote it."),
    allow_untrained: bool = typer.Option(False, help="Use a run whose training diverged before learning anything."),
) -> None:
    """Write log p(x), in nats, for every row of POINTS (-inf where the model gives no density)."""
    import numpy as np

    from densitylab import datasets
    from densitylab._files import output_file
    from densitylab.cli._models import load_model

    model = load_model(run, allow_untrained)
    x = datasets.load(points)
    if x.shape[1] != model.dim:
        raise ValueError(f"{points} has {x.shape[1]} columns but the model has dimension {model.dim}")
    with output_file(out, HEADER) as staging:
        log_p = model.log_density(x)
        np.savetxt(staging, log_p, header=HEADER, comments="", fmt="%.10g")
    typer.echo(f"wrote {len(log_p)} log-densities to {out} (mean {log_p.mean():.4f} nats)")
