"""``densitylab reproduce``: every experiment, then one self-contained HTML report."""

from __future__ import annotations

from pathlib import Path

import typer

from densitylab.cli._app import app


@app.command()
def reproduce(
    out: Path = typer.Option(..., "--out", "-o", help="Directory for every experiment and report.html."),
    quick: bool = typer.Option(False, help="Reduced budgets (about two minutes): a preview of the report."),
    only: str = typer.Option("", help="Comma-separated experiment names to run (default: all)."),
) -> None:
    """Run every experiment of the source documents and write OUT/report.html."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from densitylab import experiments
    from densitylab.report import write_report

    names = [n for n in only.split(",") if n] or experiments.names()
    for name in names:
        experiments.get(name)
    outcomes = []
    columns = (TextColumn("[bold]{task.description}"), BarColumn(),
               TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn())
    with Progress(*columns) as progress:
        task = progress.add_task("experiments", total=len(names))
        for name in names:
            progress.update(task, description=f"running {name}")
            outcomes.append(experiments.run(name, out / name, quick=quick, verbose=False))
            progress.advance(task)
        progress.update(task, description="done")
    path = write_report(out, outcomes, quick)
    total = sum(o.seconds for o in outcomes)
    typer.echo(f"wrote {path} ({len(outcomes)} experiments, {total:.0f} s)")
