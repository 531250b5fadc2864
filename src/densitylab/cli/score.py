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
    out: Path = typer.Option(..., "--out", "-o", help="CSV file to write: one log_density per row; - for standard output. An existing file is replaced only if densitylab wrote it (and it is unchanged since)."),
    allow_untrained: bool = typer.Option(False, help="Use a run whose training diverged before learning anything."),
    contamination: float | None = typer.Option(None, help="Also flag outliers: the expected outlier fraction of the training data, in (0, 0.5]. Adds a column `outlier`: -1 below that quantile of the training log-densities (recorded by `train`), +1 above."),
) -> None:
    """Write log p(x), in nats, for every row of POINTS (-inf where the model gives no density)."""
    import numpy as np

    from densitylab._files import is_stream, output_file
    from densitylab.cli._models import load_model, training_offset

    model = load_model(run, allow_untrained)
    offset = None if contamination is None else training_offset(run, contamination)
    x = model.read(points)
    if x.shape[1] != model.dim:
        raise ValueError(f"{points} has {x.shape[1]} columns but the model has dimension {model.dim}")
    header = HEADER if offset is None else f"{HEADER},outlier"
    with output_file(out) as staging:
        log_p = model.log_density(x)
        columns = [log_p] if offset is None else [log_p, np.where(log_p < offset, -1, 1)]
        np.savetxt(staging, np.column_stack(columns), header=header, comments="",
                   fmt=["%.10g", "%d"][: len(columns)], delimiter=",")
    flagged = "" if offset is None else f", {int(np.sum(log_p < offset))} flagged as outliers"
    typer.echo(f"wrote {len(log_p)} log-densities to {out} (mean {log_p.mean():.4f} nats{flagged})",
               err=is_stream(out))
