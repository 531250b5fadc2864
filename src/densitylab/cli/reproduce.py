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
    jobs: int = typer.Option(0, "--jobs", "-j", help="Experiments run at once, each in its own process (0: one per CPU core, at most 4). Results do not depend on it."),
) -> None:
    """Run every experiment of the source documents and write OUT/report.html."""
    import os
    import time

    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from densitylab import experiments
    from densitylab._files import claimed_directory
    from densitylab._validation import check_positive_int
    from densitylab.report import REPORT_FILE, write_report

    names = [n for n in only.split(",") if n] or experiments.names()
    for name in names:
        experiments.get(name)
    if jobs == 0:
        jobs = min(os.cpu_count() or 1, 4)
    jobs = min(check_positive_int(jobs, "--jobs"), len(names))
    columns = (TextColumn("[bold]{task.description}"), BarColumn(),
               TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn())
    start = time.perf_counter()
    ours = {*experiments.names(), REPORT_FILE}
    with claimed_directory(out, "report", transient=ours) as claim, Progress(*columns) as progress:
        task = progress.add_task("experiments", total=len(names))

        def show(running: list[str], done: list[str]) -> None:
            label = f"running {', '.join(running)}" if running else "done"
            progress.update(task, completed=len(done), description=label)

        outcomes = experiments.run_all(names, claim.path, quick=quick, jobs=jobs, on_progress=show)
        wall = time.perf_counter() - start
        path = write_report(claim.path, outcomes, quick, wall_seconds=wall, jobs=jobs)
    typer.echo(f"wrote {path} ({len(outcomes)} experiments in {wall:.0f} s on {jobs} processes)")
