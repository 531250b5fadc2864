"""Every figure of densitylab, each returned as a matplotlib ``Figure`` (saving is the caller's).

Figures of fitted models, in any dimension (any densitylab model, a raw flow or a fit result):

- :func:`density` (truth beside it when known), :func:`samples` (against the data),
  :func:`pairs` (corner plot for D > 2), :func:`layers` (a flow, layer by layer),
  :func:`loss` (training curves); for a two-dimensional continuous flow, :func:`transport`
  (its density at several times t) and :func:`vector_field` (its velocity as arrows).

Array-level figure functions they are built from live in the submodules ``datasets``, ``kde``,
``flows`` and ``marginals``; ``images`` holds the figures of images and image flows.
Importing densitylab never selects a matplotlib backend and never
imports ``pyplot``; the figures display inline in Jupyter by themselves.

Example:
    >>> import densitylab as dl
    >>> x = dl.datasets.get("moons").sample(300, seed=0)
    >>> fig = dl.plots.density(dl.KDE(bandwidth=0.2).fit(x), data=x, resolution=30)
    >>> type(fig).__mro__[1].__name__
    'Figure'
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from densitylab.plots import datasets, flows, images, kde, marginals, models
    from densitylab.plots.models import (
        density,
        layers,
        loss,
        pairs,
        samples,
        transport,
        vector_field,
    )

_SUBMODULES = {"datasets", "flows", "images", "kde", "marginals", "models"}
_MODEL_FIGURES = {"density", "samples", "pairs", "layers", "loss", "transport", "vector_field"}

__all__ = [
    "datasets", "density", "flows", "images", "kde", "layers", "loss", "marginals", "models",
    "pairs", "samples", "save_figures", "transport", "vector_field",
]


def __getattr__(name: str) -> Any:  # the figure modules import torch: load on first use
    if name in _SUBMODULES:
        return importlib.import_module(f"densitylab.plots.{name}")
    if name in _MODEL_FIGURES:
        return getattr(importlib.import_module("densitylab.plots.models"), name)
    raise AttributeError(f"module 'densitylab.plots' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


def save_figures(directory: str | Path, figures: dict, strict: bool = False) -> None:
    """Write ``{name: Figure}`` as ``directory/name.png`` (the callers' one saving helper).

    Each figure is checked first (:func:`densitylab.plots._layout.layout_problems`: aspect
    ratio at most 4:1, at most four panels in a row, no title clipped by the edge) and saved
    as a compact palette PNG. An unreadable figure is a ``ValueError`` naming the problem with
    ``strict=True`` (the report's experiments), a warning otherwise.
    """
    from densitylab.plots._layout import save_png

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for name, figure in figures.items():
        save_png(figure, directory / f"{name}.png", strict=strict)
