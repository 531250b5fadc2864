"""What the model figures show, computed: densities on grids, samples and marginals of any model.

The figure functions of :mod:`densitylab.plots` accept any fitted densitylab model; this module
turns one into arrays, so plotting code never computes. A *model* here is anything with a
log-density:

- an estimator with ``score_samples`` (``KDE``, ``FlowDensity``, ``AutoDensity``, scikit-learn's
  ``KernelDensity`` or ``GaussianMixture``);
- a raw :class:`~densitylab.flows.Flow` or a :class:`~densitylab.training.FitResult`;
- a built-in distribution (``densitylab.datasets.get(...)``), whose density is exact;
- anything else with ``log_prob`` taking ``(n, d)`` points.

Example:
    >>> import densitylab as dl
    >>> from densitylab import views
    >>> x = dl.datasets.get("moons").sample(500, seed=0)
    >>> kde = dl.KDE(bandwidth=0.2).fit(x)
    >>> views.dimension(kde)
    2
    >>> views.log_density(kde, x[:3]).shape
    (3,)
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import numpy as np

from densitylab.grids import Bounds, Grid, make_grid

Curves = dict[int, tuple[np.ndarray, np.ndarray]]  # axis -> (positions, 1-D marginal density)
Images = dict[tuple[int, int], tuple[Grid, np.ndarray]]  # (row axis, column axis) -> image


def _unwrap(model: Any) -> Any:
    """The object that holds the density: a FitResult's flow, a selector's refitted winner."""
    if hasattr(model, "flow") and hasattr(model, "history"):  # FitResult
        return model.flow
    return model


def as_flow(model: Any) -> Any:
    """The :class:`~densitylab.flows.Flow` inside ``model`` (a flow, a FitResult, a fitted
    ``FlowDensity`` or a selector whose winner is one), or ``None`` when it holds none."""
    from densitylab.flows import Flow

    model = _unwrap(model)
    for _ in range(3):  # Flow, estimator.flow_, selector.best_estimator_.flow_
        if isinstance(model, Flow):
            return model
        if hasattr(model, "flow_"):
            model = model.flow_
        elif hasattr(model, "best_estimator_"):
            model = model.best_estimator_
        else:
            return None
    return model if isinstance(model, Flow) else None


def _kde_inside(model: Any) -> Any:
    """A densitylab ``KDE`` in the data's units whose density is ``model``'s (itself, or a
    selector's winner carried back through its standardisation), else ``None``: its marginals
    are then exact. A KDE on bounded or discrete columns is not Gaussian in the data's units."""
    from densitylab.kde import KDE

    model = _unwrap(model)
    if isinstance(model, KDE):
        return model if getattr(model, "support_", None) is None else None
    winner = getattr(model, "best_estimator_", None)
    if not isinstance(winner, KDE) or getattr(winner, "support_", None) is not None:
        return None
    types = getattr(model, "column_types_", [])
    if any(t.discrete or t.lower is not None or t.upper is not None for t in types):
        return None
    scale, mean = getattr(model, "scale_", None), getattr(model, "mean_", None)
    if scale is None or mean is None:
        return winner
    return KDE(bandwidth=np.diag(scale) @ winner.bandwidth_).fit(
        winner.data_ * scale + mean, sample_weight=winner.weights_)


def dimension(model: Any) -> int:
    """Number of coordinates of the points ``model`` describes."""
    model = _unwrap(model)
    flow = as_flow(model)
    if flow is not None:
        return int(flow.dim)
    for name in ("n_features_in_", "dim"):
        value = getattr(model, name, None)
        if isinstance(value, int | np.integer):
            return int(value)
    raise ValueError(
        f"cannot tell the dimension of a {type(model).__name__}: fit it first, or pass a model "
        "with n_features_in_ (a fitted estimator) or dim (a flow or distribution)"
    )


def log_density(model: Any, points: np.ndarray) -> np.ndarray:
    """Log-density of ``model`` at ``points`` ``(n, d)``, a NumPy array of shape ``(n,)``."""
    points = np.asarray(points, dtype=np.float64)
    model = _unwrap(model)
    flow = as_flow(model) if not hasattr(model, "score_samples") else None
    if flow is not None:
        from densitylab.evaluation import flow_log_prob

        return flow_log_prob(flow, points)
    if hasattr(model, "score_samples"):
        return np.asarray(model.score_samples(points), dtype=np.float64)
    if hasattr(model, "log_prob"):
        value = model.log_prob(points)
        if hasattr(value, "detach"):  # a torch tensor
            value = value.detach().double().cpu().numpy()
        return np.asarray(value, dtype=np.float64)
    raise TypeError(
        f"a {type(model).__name__} has no density: pass a fitted estimator (score_samples), "
        "a flow, a fit result or a distribution (log_prob)"
    )


def draw(model: Any, n: int, seed: int = 0) -> np.ndarray:
    """``n`` samples of ``model`` as a NumPy array ``(n, d)``, from an explicit seed."""
    model = _unwrap(model)
    if not hasattr(model, "sample") and hasattr(model, "best_estimator_"):  # GridSearchCV
        model = model.best_estimator_
    flow = as_flow(model) if not hasattr(model, "score_samples") else None
    if flow is not None:
        from densitylab.evaluation import flow_samples

        return flow_samples(flow, n, seed)
    if hasattr(model, "score_samples"):  # scikit-learn convention
        try:
            value = model.sample(n, random_state=seed)
        except TypeError:  # GaussianMixture: no argument, its own random_state decides
            value = model.sample(n)
        if isinstance(value, tuple):  # GaussianMixture returns (points, component labels)
            value = value[0]
        return encoded(model, value)
    if hasattr(model, "sample"):
        value = model.sample(n, seed=seed)
        if hasattr(value, "detach"):
            value = value.detach().double().cpu().numpy()
        return np.asarray(value, dtype=np.float64)
    raise TypeError(f"a {type(model).__name__} cannot draw samples (it has no sample method)")


def bounds_of(*clouds: np.ndarray, quantile: float = 0.005, pad: float = 0.15) -> np.ndarray:
    """Per-axis plotting range ``(d, 2)`` covering all but the extreme tails of the points."""
    stacked = np.concatenate([np.asarray(c, dtype=np.float64) for c in clouds])
    low, high = np.quantile(stacked, [quantile, 1 - quantile], axis=0)
    width = np.where(high > low, high - low, 1.0)
    return np.column_stack([low - pad * width, high + pad * width])


def density_grid(model: Any, bounds: Bounds, resolution: int = 120) -> tuple[Grid, np.ndarray]:
    """A 2-D model's density on a ``resolution x resolution`` grid: ``(grid, image)``."""
    grid = make_grid(bounds, resolution)
    kde = _kde_inside(model)
    if kde is not None and model is kde:
        return grid, kde.evaluate_grid(grid)
    return grid, np.exp(log_density(model, grid.points)).reshape(grid.shape)


def density_curve(model: Any, xs: np.ndarray) -> np.ndarray:
    """A 1-D model's density at the positions ``xs``."""
    return np.exp(log_density(model, np.asarray(xs, dtype=np.float64)[:, None]))


def _marginal_kde(kde: Any, samples: np.ndarray | None, axes: Sequence[int]) -> Any:
    """A KDE whose density is a marginal on ``axes``: exact for a Gaussian ``kde`` (its
    marginal is the KDE of the projected data with the projected kernel covariance); else a
    Scott-bandwidth KDE of the model's ``samples`` projected on ``axes``."""
    from densitylab.kde import KDE

    axes = list(axes)
    if kde is not None:
        covariance = kde.covariance_[np.ix_(axes, axes)]
        return KDE(bandwidth=np.linalg.cholesky(covariance)).fit(
            kde.data_[:, axes], sample_weight=kde.weights_
        )
    return KDE(bandwidth="scott").fit(samples[:, axes])


def marginals(
    model: Any,
    bounds: np.ndarray,
    resolution: int = 60,
    n_samples: int = 4000,
    seed: int = 0,
) -> tuple[Curves, Images]:
    """1-D and 2-D marginal densities of a ``d``-dimensional model, for a pairs plot.

    Returns ``({i: (xs, density)}, {(i, j): (grid, image)})`` for every axis ``i`` and every
    pair ``i > j`` (``j`` horizontal, ``i`` vertical), on ``bounds`` ``(d, 2)``. A KDE's
    marginals are exact; other models' are estimated from one draw of ``n_samples`` samples
    (seeded) with a KDE, the same draw for every panel, so the panels agree with each other.
    """
    bounds = np.asarray(bounds, dtype=np.float64)
    kde = _kde_inside(model)
    samples = None if kde is not None else draw(model, n_samples, seed)
    one: Curves = {}
    two: Images = {}
    for i in range(len(bounds)):
        xs = np.linspace(bounds[i, 0], bounds[i, 1], 4 * resolution)
        one[i] = xs, np.exp(_marginal_kde(kde, samples, [i]).score_samples(xs[:, None]))
        for j in range(i):
            grid = make_grid(((bounds[j, 0], bounds[j, 1]), (bounds[i, 0], bounds[i, 1])),
                             resolution)
            two[i, j] = grid, _marginal_kde(kde, samples, [j, i]).evaluate_grid(grid)
    return one, two


def discrete_masses(model: Any, samples: np.ndarray) -> dict[int, tuple[np.ndarray, float]]:
    """``{column: (its values in the samples, lattice step)}`` for the discrete columns of a
    model that records ``column_types_`` (AutoDensity): what a figure draws as bars. A
    categorical column's values are its label codes (:func:`encoded`), one apart."""
    types = getattr(_unwrap(model), "column_types_", None) or []
    return {j: (samples[:, j], 1.0 if t.kind == "categorical" else t.step)
            for j, t in enumerate(types) if t.discrete or t.kind == "categorical"}


def category_labels(model: Any) -> dict[int, list]:
    """``{column: its labels}`` of a model with categorical columns
    (:class:`~densitylab.CategoricalDensity`, or an AutoDensity of a table with categories)."""
    model = _unwrap(model)
    columns = getattr(model, "categorical_columns_", None) or []
    return dict(zip(columns, getattr(model, "categories_", []), strict=True))


def encoded(model: Any, rows: Any) -> np.ndarray:
    """Rows (a DataFrame or an array, labels allowed) as float64 ``(n, d)``: a categorical
    column of ``model`` (:func:`category_labels`) as the index of each label among its labels
    (NaN for an unknown one), so that figures can place it; other columns as numbers."""
    labels = category_labels(model)
    if not labels:
        return np.asarray(rows, dtype=np.float64)
    table = np.asarray(rows.to_numpy(dtype=object) if hasattr(rows, "to_numpy") else rows,
                       dtype=object)
    out = np.empty(table.shape, dtype=np.float64)
    for j in range(table.shape[1]):
        if j in labels:
            index = {label: k for k, label in enumerate(labels[j])}
            text = isinstance(labels[j][0], str)
            out[:, j] = [index.get(str(v) if text else float(v), np.nan) for v in table[:, j]]
        else:
            out[:, j] = table[:, j].astype(np.float64)
    return out


def layer_trace(model: Any, n: int = 1000, seed: int = 0) -> list[np.ndarray]:
    """Samples after every layer of the flow inside ``model``, prior first and data last."""
    import torch

    flow = as_flow(model)
    if flow is None:
        raise TypeError(
            f"a {type(model).__name__} has no layers to trace: pass a flow, a fit result or a "
            "fitted FlowDensity"
        )
    with torch.no_grad():
        return [t.detach().double().cpu().numpy() for t in flow.trace_to_data(n, seed=seed)]


def history_of(result: Any) -> Any:
    """The training :class:`~densitylab.training.History` of a fit result, a fitted
    ``FlowDensity`` (``history_``) or a history itself."""
    for name in ("history", "history_"):
        value = getattr(result, name, None)
        if value is not None and hasattr(value, "train_nll"):
            return value
    if hasattr(result, "train_nll") and hasattr(result, "val_nll"):
        return result
    raise TypeError(
        f"a {type(result).__name__} has no training history: pass a fit result, a fitted "
        "FlowDensity or a History"
    )


def continuous_flow(model: Any) -> Any:
    """The two-dimensional flow inside ``model`` whose last transform is continuous (a CNF), as
    a float64 copy, or a one-line ``ValueError``."""
    from densitylab.flows import ContinuousFlow

    flow = as_flow(model)
    if flow is None or not isinstance(flow.transforms[-1], ContinuousFlow):
        raise ValueError("this figure needs a continuous flow (dl.flows.cnf, or FlowDensity "
                         "with model='cnf' or 'cnf-fm')")
    if flow.dim != 2 or flow.context_features:
        raise ValueError("this figure draws unconditional two-dimensional continuous flows")
    return copy.deepcopy(flow).double().eval()


def _into_field(flow: Any, points: np.ndarray) -> tuple[Any, Any]:
    """Points in the user's units through the transforms before the continuous one
    (standardisation): the field's coordinates ``(1, n, 2)`` and that map's ``log|det|``."""
    import torch

    y = torch.as_tensor(points, dtype=torch.float64).unsqueeze(0)
    logdet = torch.zeros(y.shape[:-1], dtype=torch.float64)
    for transform in flow.transforms[:-1]:
        y, step = transform._to_latent(y)
        logdet = logdet + step
    return y, logdet


def density_along_time(model: Any, bounds: Bounds, times: Sequence[float],
                       resolution: int = 80) -> tuple[Grid, dict[float, np.ndarray]]:
    """The densities ``p_t`` of a continuous flow at ``times`` in [0, 1] (``p_0``: the base
    Gaussian, ``p_1``: the model) on a grid, in the user's units: each grid point is carried
    from ``t`` back to the base by the ODE and scored there."""
    import torch

    flow = continuous_flow(model)
    if any(not 0.0 <= t <= 1.0 for t in times):
        raise ValueError(f"times must lie in [0, 1], got {list(times)}")
    grid = make_grid(bounds, resolution)
    y, logdet = _into_field(flow, grid.points)
    images = {}
    with torch.no_grad():
        for t in times:
            z, step = flow.transforms[-1].transport(y, float(t), 0.0)
            log_p = flow.base.log_prob(z) + step + logdet
            images[float(t)] = np.exp(log_p[0].numpy()).reshape(grid.shape)
    return grid, images


def velocity(model: Any, bounds: Bounds, t: float, resolution: int = 20
             ) -> tuple[np.ndarray, np.ndarray]:
    """A continuous flow's velocity ``dx/dt`` at time ``t`` on a ``resolution``-square grid of
    points, both ``(resolution**2, 2)``, in the user's units (the field's velocity carried
    through the standardisation's Jacobian)."""
    import torch

    flow = continuous_flow(model)
    points = make_grid(bounds, resolution).points
    y, _ = _into_field(flow, points)

    def to_user(field_points):
        for transform in reversed(flow.transforms[:-1]):
            field_points = transform._to_data(field_points)[0]
        return field_points

    with torch.no_grad():
        v = flow.transforms[-1].field(torch.tensor(float(t), dtype=torch.float64), y)
    y = y.clone().requires_grad_(True)
    user = to_user(y)  # dx_i/dt = sum_j (dx_i/dy_j) v_j, one backward pass per coordinate
    dx = torch.stack([(torch.autograd.grad(user[..., i].sum(), y, retain_graph=True)[0] * v)
                      .sum(-1) for i in range(user.shape[-1])], dim=-1)
    return points, dx[0].detach().numpy()
