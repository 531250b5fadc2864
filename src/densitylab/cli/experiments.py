"""``densitylab experiments`` lists the named studies; ``densitylab run`` runs one."""

from __future__ import annotations

from pathlib import Path

import typer

from densitylab.cli._app import app


@app.command("experiments")
def list_experiments() -> None:
    """List the named experiments and what each one asks."""
    from rich.console import Console
    from rich.table import Table

    from densitylab import experiments

    table = Table(title="densitylab experiments (run one with `densitylab run NAME --out DIR`)")
    table.add_column("name", style="bold")
    table.add_column("what it studies")
    for name, experiment in experiments.registry().items():
        table.add_row(name, experiment.question)
    Console().print(table)


@app.command("run")
def run_experiment(
    name: str = typer.Argument(..., help="Experiment name (see `densitylab experiments`)."),
    out: Path = typer.Option(..., "--out", "-o", help="Directory for figures, outcome.json and findings."),
    quick: bool = typer.Option(False, help="Reduced budgets: a fast preview, not the study's numbers."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Run one experiment: its figures, metrics and findings go to OUT."""
    from densitylab import experiments

    experiments.get(name)  # an unknown name fails before anything is written
    outcome = experiments.run(name, out, quick=quick, verbose=None if not quiet else False)
    typer.echo(f"{outcome.title} ({outcome.seconds:.1f} s), written to {out}\n{outcome.text()}")
