"""densitylab: density estimation with normalizing flows and kernel density estimation.

Submodules load on first use, so ``densitylab --help`` stays quick and torch is only imported
when a flow is needed. Every name below is listed by ``dir(densitylab)`` and visible to type
checkers and IDEs.

- Estimators: :class:`KDE`, :class:`FlowDensity`, :class:`ImageFlow` (integer images, bits
  per dimension), :class:`AutoDensity` (picks among them by
  cross-validation), :class:`ConditionalFlowDensity` (``p(y | X)``), :class:`OutlierDetector`
  (anomalies by low density); training: :func:`fit`, :func:`fit_many`,
  :class:`FitResult`; persistence: :func:`save`, :func:`load`.
- Submodules: ``datasets`` (toy laws with exact densities, user files), ``flows`` (RealNVP,
  Glow, spline flows), ``plots`` (figures of models), ``baselines`` (VAE, GAN), ``numpy_flow``
  (a teaching RealNVP in NumPy), ``distributed`` (torchrun), ``metrics``, ``evaluation``,
  ``experiments``, ``views``, ``grids``, ``kde``, ``training``, ``estimators``, ``io``,
  ``outliers``.

Example:
    >>> import densitylab as dl
    >>> x = dl.datasets.get("moons").sample(1500, seed=0)
    >>> x.shape
    (1500, 2)
"""

import importlib as _importlib
import typing as _typing

if _typing.TYPE_CHECKING:
    from densitylab import (
        auto,
        baselines,
        datasets,
        derivations,
        distributed,
        estimators,
        evaluation,
        experiments,
        flows,
        grids,
        io,
        kde,
        metrics,
        numpy_flow,
        outliers,
        plots,
        report,
        training,
        views,
    )
    from densitylab.auto import AutoDensity
    from densitylab.categorical import CategoricalDensity
    from densitylab.estimators import ConditionalFlowDensity, FlowDensity
    from densitylab.image_estimator import ImageFlow
    from densitylab.io import load, save
    from densitylab.kde import KDE
    from densitylab.outliers import OutlierDetector
    from densitylab.training import FitResult, fit, fit_many

__version__ = "0.1.0"

_SUBMODULES = {
    "auto", "baselines", "categorical", "datasets", "derivations", "distributed", "estimators",
    "evaluation", "experiments", "flows", "grids", "io", "kde", "metrics", "numpy_flow", "outliers",
    "plots", "report", "training", "views",
}
_ATTRIBUTES = {
    "KDE": "densitylab.kde",
    "fit": "densitylab.training",
    "fit_many": "densitylab.training",
    "FitResult": "densitylab.training",
    "FlowDensity": "densitylab.estimators",
    "AutoDensity": "densitylab.auto",
    "CategoricalDensity": "densitylab.categorical",
    "ConditionalFlowDensity": "densitylab.estimators",
    "ImageFlow": "densitylab.image_estimator",
    "OutlierDetector": "densitylab.outliers",
    "save": "densitylab.io",
    "load": "densitylab.io",
}

__all__ = [  # a literal, for type checkers; a test keeps it equal to the two tables above
    "AutoDensity", "CategoricalDensity", "ConditionalFlowDensity", "FitResult", "FlowDensity",
    "ImageFlow", "KDE", "OutlierDetector", "__version__",
    "auto", "baselines", "categorical", "datasets",
    "derivations", "distributed", "estimators", "evaluation", "experiments", "fit", "fit_many",
    "flows", "grids", "io", "kde", "load", "metrics", "numpy_flow", "outliers", "plots", "report",
    "save", "training", "views",
]


def __getattr__(name: str) -> object:
    if name in _ATTRIBUTES:
        return getattr(_importlib.import_module(_ATTRIBUTES[name]), name)
    if name in _SUBMODULES:
        return _importlib.import_module(f"densitylab.{name}")
    raise AttributeError(f"module 'densitylab' has no attribute {name!r}")


def __dir__() -> list[str]:
    return list(__all__)
