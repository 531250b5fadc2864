"""Toy 2-D distributions with exact log-densities and entropies, and loading of user data.

Every built-in law has a seeded sampler, a log-density that is exact (closed form, or 1-D
quadrature/root-finding accurate to ~1e-10 near the data) and an entropy in nats, so a fitted
model can be judged against the truth: the gap between its NLL and the entropy is the KL.

Example:
    >>> import densitylab as dl
    >>> dist = dl.datasets.get("moons")
    >>> x = dist.sample(1500, seed=0)
    >>> dist.log_prob(x).shape, round(dist.entropy(), 3)
    ((1500,), 1.008)

Built-in names (``names()``), one line each:

- ``moons`` (noise=0.1): population of scikit-learn's ``make_moons``.
- ``circles`` (noise=0.1, factor=0.8): population of scikit-learn's ``make_circles``.
- ``gaussians-grid``: 4 Gaussians, std 0.5, at (0,0), (0,2), (2,0), (2,2) (coursework).
- ``gaussians-rot`` (num_gaussians=5): Gaussians with variance 0.1 on a circle of radius 2.5
  (coursework).
- ``gmm`` (sigma=0.5): the coursework KDE mixture, same 4 centres, std ``sigma``.
- ``spiral``: ``theta ~ U[0, 4 pi]``, ``r ~ N(theta/2, 0.25)`` (coursework KDE part).
- ``checkerboard``, ``8gaussians``, ``2spirals``, ``pinwheel``, ``rings``, ``swissroll``: the
  toy data of Grathwohl et al., "FFJORD", ICLR 2019 (``lib/toy_data.py``), with their
  population laws and an explicit random generator.
"""

from __future__ import annotations

from densitylab.datasets._base import Distribution, as_generator
from densitylab.datasets._images import (
    check_images,
    image_levels,
    image_split,
    images,
    load_images,
)
from densitylab.datasets._load import Table, load, load_table
from densitylab.datasets._registry import (
    catalogue,
    from_spec,
    get,
    names,
    parameters,
    resolve,
    resolve_table,
)

__all__ = [
    "Distribution",
    "as_generator",
    "catalogue",
    "check_images",
    "image_levels",
    "image_split",
    "images",
    "load_images",
    "from_spec",
    "get",
    "load",
    "load_table",
    "names",
    "parameters",
    "resolve",
    "resolve_table",
    "Table",
]
