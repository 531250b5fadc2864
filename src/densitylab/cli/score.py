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
    contamination: float | None = typer.Option(None, help="Also flag outliers: the expected outlier fraction of the training data, in (0, 0.5]. Adds a column `outlier`: -1 below that quantile of the training log-densities (recorded by `train` and `kde` runs, out-of-fold where the run could score them so: --model auto and kde), +1 above."),
    top: int = typer.Option(0, "--top", help="Also print the K most anomalous rows of POINTS (lowest log-density first), with their values by column name."),
) -> None:
    """Write log p(x), in nats, for every row of POINTS (-inf where the model gives no density)."""
    import numpy as np

    from densitylab._files import is_stream, output_file
    from densitylab.cli._models import load_model, missing_cells, training_offset

    model = load_model(run, allow_untrained)
    offset = None if contamination is None else training_offset(run, contamination, model)
    x = model.read(points)
    if x.shape[1] != model.dim:
        raise ValueError(f"{points} has {x.shape[1]} columns but the model has dimension {model.dim}")
    holes = missing_cells(x)
    incomplete = int(holes.any(axis=1).sum())
    if incomplete and not model.marginalises:
        row, column = (int(v) for v in np.argwhere(holes)[0])
        raise ValueError(f"{points}: {incomplete} row(s) have missing cells (the first: row "
                         f"{row + 1}, column {column + 1}); this model cannot integrate them out "
                         "(a KDE, a Gaussian mixture or an auto run that chose one can)")
    header = HEADER if offset is None else f"{HEADER},outlier"
    with output_file(out) as staging:
        log_p = model.log_density(x)
        columns = [log_p] if offset is None else [log_p, np.where(log_p < offset, -1, 1)]
        np.savetxt(staging, np.column_stack(columns), header=header, comments="",
                   fmt=["%.10g", "%d"][: len(columns)], delimiter=",")
    flagged = "" if offset is None else f", {int(np.sum(log_p < offset))} flagged as outliers"
    if incomplete:
        flagged += (f"; {incomplete} row(s) with missing cells scored by the marginal density "
                    "of their observed cells")
    typer.echo(f"wrote {len(log_p)} log-densities to {out} (mean {log_p.mean():.4f} nats{flagged})",
               err=is_stream(out))
    if top:
        typer.echo(anomalous_rows(x, log_p, top, model.names), err=is_stream(out))


def anomalous_rows(x, log_p, k: int, names: tuple[str, ...] | None) -> str:
    """The ``k`` lowest-density rows as a small table: row (from 1), log-density, values."""
    from densitylab._validation import check_positive_int
    from densitylab.outliers import most_anomalous

    k = check_positive_int(k, "--top")
    names = names or tuple(f"x{j + 1}" for j in range(x.shape[1]))
    lines = [f"the {min(k, len(x))} most anomalous rows:", "row,log_density," + ",".join(names)]
    for i in most_anomalous(log_p, k):
        lines.append(f"{i + 1},{log_p[i]:.6g}," + ",".join(
            v if isinstance(v, str) else f"{v:.6g}" for v in x[i]))
    return "\n".join(lines)
