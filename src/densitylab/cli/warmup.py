"""``densitylab warmup``: compile and cache every compiled path now, not on first use."""

from __future__ import annotations

import typer

from densitylab.cli._app import app


@app.command()
def warmup() -> None:
    """Compile the numba kernels (KDE sums, spline and RealNVP engines) into the disk cache:
    about a minute once, a few seconds when already cached."""
    from densitylab.compiling import PATHS
    from densitylab.warmup import warmup as run_all

    def show(name: str, seconds: float) -> None:
        typer.echo(f"{PATHS[name].title}: ready ({seconds:.1f} s)")

    total = sum(run_all(show).values())
    typer.echo(f"all compiled paths cached ({total:.1f} s)")
