"""``densitylab datasets``: list the built-in distributions with their entropies (and plot them)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import typer

from densitylab.cli._app import app

# The coursework's KDE part draws 10000 points from these; the others use 1000.
_KDE_PART = {"gmm", "spiral"}


def _labels(dists: list) -> list[str]:
    """File-name-safe labels: the name, plus ``-key-value`` parts where a name appears twice."""
    counts = Counter(d.name for d in dists)
    return [
        "-".join([d.name, *(f"{k}-{v:g}" for k, v in d.params.items())])
        if counts[d.name] > 1
        else d.name
        for d in dists
    ]


@app.command()
def datasets(
    plot: Path | None = typer.Option(
        None, "--plot", help="Also write one scatter PNG per distribution and overview.png to this directory (new, empty, or an earlier --plot output)."
    ),
    seed: int = typer.Option(0, help="Seed of the plotted samples."),
) -> None:
    """List the built-in distributions with their parameters and entropies (nats)."""
    from rich.console import Console
    from rich.progress import Progress
    from rich.table import Table

    from densitylab import datasets as ds
    from densitylab._files import check_output, output_directory

    if plot is not None:  # fail before the long computation, not after it
        check_output(plot, "datasets")

    console = Console()
    dists = ds.catalogue()
    labels = _labels(dists)
    entropies = []
    samples = {}
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("computing entropies", total=len(dists))
        for dist, label in zip(dists, labels, strict=True):
            progress.update(task, description=f"entropy of {dist.name}")
            entropies.append(dist.entropy())
            if plot is not None:
                n = 10_000 if dist.name in _KDE_PART else 1_000
                samples[label] = dist.sample(n, seed=seed)
            progress.advance(task)

    table = Table(title="Built-in distributions")
    table.add_column("name", style="bold")
    table.add_column("parameters")
    table.add_column("entropy (nats)", justify="right")
    table.add_column("description")
    for dist, entropy in zip(dists, entropies, strict=True):
        table.add_row(dist.name, dist.params_text or "-", f"{entropy:.4f}", dist.description)
    console.print(table)

    if plot is not None:
        from densitylab.plots import datasets as plots

        with console.status("writing figures"), output_directory(plot, "datasets") as staging:
            for label, x in samples.items():
                fig = plots.scatter(x, label)
                fig.savefig(staging / f"{label}.png", dpi=100)
            plots.overview(samples).savefig(staging / "overview.png", dpi=100)
        console.print(f"wrote {len(samples) + 1} figures to {plot}")
