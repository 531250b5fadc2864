"""Figures of fitted models, in any dimension: pass the model, get a ``Figure``.

Each function accepts any densitylab model (``KDE``, ``FlowDensity``, ``AutoDensity``, a raw
``Flow``, a ``FitResult``, a built-in distribution, or anything with ``score_samples`` /
``log_prob``), computes what it shows with :mod:`densitylab.views` and draws it with the
array-level figure functions of :mod:`densitylab.plots.kde`, :mod:`~densitylab.plots.flows`
and :mod:`~densitylab.plots.marginals`. In Jupyter the returned figure displays inline; in a
script, save it with ``fig.savefig("name.png")``.

Example:
    >>> import densitylab as dl
    >>> dist = dl.datasets.get("moons")
    >>> x = dist.sample(500, seed=0)
    >>> kde = dl.KDE(bandwidth=0.15).fit(x)
    >>> fig = dl.plots.density(kde, data=x, truth=dist, resolution=40)
    >>> fig.axes[1].get_title()
    'model: KDE'
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from densitylab import views
from densitylab.plots._figure import Figure
from densitylab.plots.flows import (
    loss_curves,
    samples_vs_data,
    trace_labels,
    trace_panels,
    vector_field_panels,
)
from densitylab.plots.kde import density_panels
from densitylab.plots.marginals import density_curves, histograms, pairs_panels


def name_of(model: Any) -> str:
    """How figures name a model: a distribution's label, else its class (``KDE``, ``Flow``)."""
    label = getattr(model, "label", None)
    if isinstance(label, str):
        return label
    winner = getattr(model, "best_estimator_", None)
    if winner is not None:
        return f"{type(model).__name__} ({type(winner).__name__})"
    return type(views._unwrap(model)).__name__


def _range(model: Any, data: np.ndarray | None, seed: int) -> np.ndarray:
    """Per-axis plotting range ``(d, 2)``: around the data if given, else around samples."""
    if data is not None:
        return views.bounds_of(data)
    return views.bounds_of(views.draw(model, 2000, seed))


def _points(data: Any, dim: int, model: Any = None) -> np.ndarray | None:
    """``data`` as float rows ``(n, dim)``; the labels of ``model``'s categorical columns
    as their codes (:func:`densitylab.views.encoded`)."""
    if data is None:
        return None
    x = views.encoded(model, data) if views.category_labels(model) else np.asarray(
        data, dtype=np.float64)
    x = x[:, None] if x.ndim == 1 else x
    if x.ndim != 2 or x.shape[1] != dim:
        raise ValueError(f"data must have shape (n, {dim}) like the model, got {np.shape(data)}")
    return x


def density(
    model: Any,
    data: Any = None,
    truth: Any = None,
    *,
    bounds: Any = None,
    resolution: int | None = None,
    n_samples: int = 4000,
    seed: int = 0,
    title: str | None = None,
) -> Figure:
    """The density of a fitted model, beside the true density when ``truth`` is given.

    1-D: the curve over a histogram of ``data``. 2-D: density images on one colour scale
    (truth first), ``data`` drawn over the model when there is no truth. More dimensions: the
    pairs plot of :func:`pairs` (marginals estimated from ``n_samples`` samples; exact for a KDE).

    Args:
        model: a fitted model (see the module docstring).
        data: optional points ``(n, d)`` to show against the model; they also set the range.
        truth: optional distribution with ``log_prob`` (e.g. ``densitylab.datasets.get(...)``);
            its ``bounds()`` set the 2-D range when it has them.
        bounds: per-axis ``[(low, high), ...]`` to override the range.
        resolution: grid cells per axis (default 120 in 2-D, 400 points in 1-D, 50 for pairs).
        n_samples: samples used where a model's marginals are estimated (pairs plot).
        seed: seed of every sample drawn.
        title: figure title; by default names the model.
    """
    dim = views.dimension(model)
    x = _points(data, dim, model)
    name = name_of(model)
    if dim > 2 or (dim == 2 and views.category_labels(model)):  # labels: bars, not a grid
        return pairs(model, data, bounds=bounds, resolution=resolution or 50, n_samples=n_samples,
                     seed=seed, title=title)
    if bounds is not None:
        box = np.asarray(bounds, dtype=np.float64).reshape(dim, 2)
    elif truth is not None and hasattr(truth, "bounds") and dim == 2:
        box = np.asarray(truth.bounds(), dtype=np.float64)
    else:
        box = _range(model, x, seed)
    if dim == 1:
        xs = np.linspace(box[0, 0], box[0, 1], resolution or 400)
        curves = {f"model: {name}": views.density_curve(model, xs)}
        if truth is not None:
            curves = {f"true density: {name_of(truth)}": views.density_curve(truth, xs), **curves}
        return density_curves(xs, curves, title or f"Density of the {name}", data=x)
    grid, image = views.density_grid(model, tuple(map(tuple, box)), resolution or 120)
    images = {f"model: {name}": image}
    if truth is not None:
        truth_image = np.exp(views.log_density(truth, grid.points)).reshape(grid.shape)
        images = {f"true density: {name_of(truth)}": truth_image, **images}
    return density_panels(images, grid, title or f"Density of the {name}",
                          points=x if truth is None else None)


def samples(
    model: Any, data: Any, *, n: int = 2000, seed: int = 0, title: str | None = None
) -> Figure:
    """Samples of the model against the data: overlaid histograms in 1-D, one scatter in 2-D,
    the pairs plot (data against samples above the diagonal) in more dimensions."""
    dim = views.dimension(model)
    x = _points(data, dim, model)
    drawn = views.draw(model, n, seed)
    title = title or f"Data and samples of the {name_of(model)}"
    if views.category_labels(model) and dim >= 2:  # categorical columns: bars of the pairs plot
        return pairs(model, data, n_samples=n, seed=seed, title=title)
    if dim == 1:
        return histograms({f"data (n={len(x)})": x[:, 0], f"samples (n={n})": drawn[:, 0]}, title)
    if dim == 2:
        return samples_vs_data(x, drawn, title)
    return pairs(model, x, n_samples=n, seed=seed, title=title)


def pairs(
    model: Any,
    data: Any = None,
    *,
    bounds: Any = None,
    resolution: int = 50,
    n_samples: int = 4000,
    seed: int = 0,
    title: str | None = None,
    names: list[str] | None = None,
) -> Figure:
    """A pairs (corner) plot for any dimension >= 2: 1-D marginals on the diagonal, 2-D
    marginal densities below it, data against model samples above it.

    A KDE's marginals are exact (the marginal of a Gaussian KDE is a KDE); for other models they
    are estimated by a KDE of ``n_samples`` samples drawn with ``seed``. ``names`` label the
    coordinates (default: the model's column names, else ``x_1, x_2, ...``); as many samples as
    data points are drawn above the diagonal, so the two clouds compare fairly. A discrete
    column (integer, rounded, binary: the model's ``column_types_``) is drawn as bars of
    probability mass on its diagonal panel; so is a categorical one, at positions ``0, 1,
    ...`` named by its labels (``data`` may then be a DataFrame holding the labels).
    """
    dim = views.dimension(model)
    x = _points(data, dim, model)
    drawn = views.draw(model, n_samples, seed)
    box = (np.asarray(bounds, dtype=np.float64).reshape(dim, 2) if bounds is not None
           else views.bounds_of(*([x] if x is not None else []), drawn))
    one, two = views.marginals(model, box, resolution, n_samples, seed)
    shown = min(1500, len(drawn), len(x) if x is not None else len(drawn))
    if names is None and getattr(model, "feature_names_in_", None) is not None:
        names = [str(n) for n in model.feature_names_in_]
    return pairs_panels(one, two, title or f"Marginals of the {name_of(model)}", names=names,
                        data=x[:shown] if x is not None else None, samples=drawn[:shown],
                        model_label=name_of(model), bars=views.discrete_masses(model, drawn),
                        labels=views.category_labels(model))


def layers(
    model: Any, *, n: int = 1000, seed: int = 0, data: Any = None, title: str | None = None
) -> Figure:
    """Samples after every layer of a flow (a ``Flow``, ``FitResult`` or fitted
    ``FlowDensity``), prior first and data last, on shared axes. In more than two dimensions
    the panels show the first two coordinates."""
    trace = views.layer_trace(model, n, seed)
    labels = trace_labels(len(trace) - 1)
    dim = trace[0].shape[1]
    x = _points(data, dim)
    note = "" if dim == 2 else " (first two coordinates)"
    return trace_panels(trace, labels, title or f"Samples after every layer, z -> x{note}",
                        data=x)


def loss(result: Any, *, entropy: float | None = None, title: str | None = None) -> Figure:
    """Training and validation NLL per epoch of a fit result, a fitted ``FlowDensity`` or a
    ``History``; pass ``{label: result}`` to compare runs, ``entropy`` to draw the floor."""
    runs = result if isinstance(result, Mapping) else {"flow": result}
    histories = {label: views.history_of(run) for label, run in runs.items()}
    return loss_curves(histories, entropy, title or "Negative log-likelihood per epoch")


def _box(model: Any, data: Any, bounds: Any, seed: int) -> tuple:
    if bounds is not None:
        box = np.asarray(bounds, dtype=np.float64).reshape(2, 2)
    else:
        box = _range(model, _points(data, 2), seed)
    return tuple(map(tuple, box))


def transport(
    model: Any, times: Any = (0.0, 1 / 3, 2 / 3, 1.0), *, data: Any = None,
    bounds: Any = None, resolution: int = 80, seed: int = 0, title: str | None = None,
) -> Figure:
    """A two-dimensional continuous flow's density at several times ``t`` in [0, 1]: the base
    Gaussian (``t = 0``) carried along the ODE into the model (``t = 1``), on one colour scale
    and shared axes, in the data's units. ``model``: a CNF, its ``FitResult`` or a fitted
    ``FlowDensity(model="cnf" | "cnf-fm")``.

    Example:
        >>> import densitylab as dl
        >>> fig = dl.plots.transport(dl.flows.cnf(2, hidden=(8,)), times=(0, 1), resolution=20,
        ...                          bounds=[(-3, 3), (-3, 3)])
        >>> fig.axes[1].get_title()
        't = 1.00'
    """
    grid, images = views.density_along_time(model, _box(model, data, bounds, seed), times,
                                            resolution)
    labelled = {f"t = {t:.2f}": image for t, image in images.items()}
    return density_panels(labelled, grid, title or "Density carried from the Gaussian (t = 0) "
                          "to the model (t = 1)", points=_points(data, 2))


def vector_field(
    model: Any, times: Any = (0.0, 0.5, 1.0), *, data: Any = None, bounds: Any = None,
    resolution: int = 20, seed: int = 0, title: str | None = None,
) -> Figure:
    """A two-dimensional continuous flow's velocity ``dx/dt`` as arrows at several times, in the
    data's units (a ``resolution``-square grid of arrows per panel)."""
    box = _box(model, data, bounds, seed)
    fields = {}
    for t in times:
        points, v = views.velocity(model, box, float(t), resolution)
        fields[f"t = {float(t):.2f}"] = v
    return vector_field_panels(points, fields, title or "Velocity of the continuous flow")
