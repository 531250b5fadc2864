"""densitylab: density estimation with normalizing flows and kernel density estimation.

Submodules load on first use, so ``densitylab --help`` stays quick and torch is only imported
when a flow is needed.

Example:
    >>> import densitylab as dl
    >>> x = dl.datasets.get("moons").sample(1500, seed=0)
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_SUBMODULES = {"datasets", "flows", "metrics", "plots", "experiments", "numpy_flow", "baselines"}
_ATTRIBUTES = {
    "KDE": "densitylab.kde",
    "fit": "densitylab.training",
    "fit_many": "densitylab.training",
    "FitResult": "densitylab.training",
    "FlowDensity": "densitylab.estimators",
    "AutoDensity": "densitylab.auto",
    "save": "densitylab.io",
    "load": "densitylab.io",
}

__all__ = sorted(_SUBMODULES | set(_ATTRIBUTES) | {"__version__"})


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"densitylab.{name}")
    if name in _ATTRIBUTES:
        return getattr(importlib.import_module(_ATTRIBUTES[name]), name)
    raise AttributeError(f"module 'densitylab' has no attribute {name!r}")
