"""Every figure of densitylab. A figure function takes data and returns a matplotlib ``Figure``;
saving is the caller's job. Submodules: ``datasets``, ``kde``, ``flows``."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")


def save_figures(directory, figures: dict) -> None:
    """Write ``{name: Figure}`` as ``directory/name.png`` (the callers' one saving helper)."""
    from pathlib import Path

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for name, figure in figures.items():
        figure.savefig(directory / f"{name}.png", dpi=110)
