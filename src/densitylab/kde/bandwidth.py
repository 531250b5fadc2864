"""Bandwidth specifications for :class:`densitylab.KDE`: parsing, and the named selection rules.

A bandwidth resolves to the matrix ``H`` of ``f(x) = 1/|det H| sum_i w_i K(H^{-1}(x - x_i))``
with ``K`` the standard normal density, so the kernel covariance is ``H H^T``. The rules scale the
data's own covariance, as ``scipy.stats.gaussian_kde`` does: ``H = factor * chol(cov)``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

from densitylab.kde.loo import loo_scorer, merge_copies

BandwidthRule = Callable[[np.ndarray, np.ndarray], "float | np.ndarray"]
"""A rule maps data ``(n, d)`` and normalised weights ``(n,)`` to a factor on ``chol(cov)`` or to
the matrix ``H`` itself."""

MAX_CONDITION = 1e12
"""Bandwidth matrices (and data covariances under a rule) worse conditioned than this are
rejected as singular: their inverse would amplify rounding beyond what float64 can carry."""


def cholesky_of_gram(h: np.ndarray) -> np.ndarray:
    """Lower-triangular ``L`` with ``L L^T = H H^T``, from a QR of ``H^T`` (no squaring of the
    condition number, unlike a Cholesky of ``H H^T``)."""
    r = np.linalg.qr(h.T, mode="r")
    return (r * np.sign(np.diag(r))[:, None]).T


def effective_sample_size(weights: np.ndarray) -> float:
    """Kish's effective sample size ``(sum w)^2 / sum w^2``; equals ``n`` for equal weights."""
    return float(weights.sum() ** 2 / np.sum(weights**2))


def data_covariance(x: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Weighted, bias-corrected covariance ``(d, d)``, the one scipy's ``gaussian_kde`` scales."""
    return np.atleast_2d(np.cov(x, rowvar=False, aweights=weights))


def data_cholesky(x: np.ndarray, weights: np.ndarray, rule: str) -> np.ndarray:
    """Lower Cholesky factor of the data covariance, or a ``ValueError`` if it is singular.

    The covariance is taken of the data divided by a power of two near their magnitude (an
    exact division) and the factor scaled back, so data of 1e-300 or 1e300 keep their exact
    covariance although its entries would under- or overflow float64.
    """
    magnitude = float(np.max(np.abs(x)))
    scale = 2.0 ** math.frexp(magnitude)[1] if magnitude > 0 else 1.0
    cov = data_covariance(x / scale, weights)
    try:
        chol = np.linalg.cholesky(cov)
    except np.linalg.LinAlgError:
        chol = None
    if chol is None or np.linalg.cond(cov) > MAX_CONDITION:
        raise ValueError(
            f"bandwidth rule {rule!r} scales the data covariance, which is singular here "
            "(the points coincide or lie on a lower-dimensional subspace); "
            "pass an explicit bandwidth instead"
        )
    return chol * scale


def scott_factor(x: np.ndarray, weights: np.ndarray) -> float:
    """Scott's rule ``n_eff^(-1/(d+4))``.

    References:
        Scott, D. W. (1992). Multivariate Density Estimation. Wiley.
    """
    return effective_sample_size(weights) ** (-1.0 / (x.shape[1] + 4))


def silverman_factor(x: np.ndarray, weights: np.ndarray) -> float:
    """Silverman's rule ``(n_eff (d + 2) / 4)^(-1/(d+4))``.

    References:
        Silverman, B. W. (1986). Density Estimation for Statistics and Data Analysis.
        Chapman & Hall.
    """
    d = x.shape[1]
    return (effective_sample_size(weights) * (d + 2) / 4.0) ** (-1.0 / (d + 4))


def _maximise_log_factor(
    score: Callable[[float], float], start: float, lowest: float = 1e-4, highest: float = 10.0
) -> float:
    """The factor ``c`` in ``[lowest, highest]`` maximising ``score(c)``.

    Starting at ``start``, the search doubles or halves ``c`` until the score drops on both sides,
    then a bounded Brent search refines it to ~0.1%. A maximum at ``lowest`` above the default
    floor is expected (a floor set by rounded data); one at the default limits is warned about.
    """
    from scipy.optimize import minimize_scalar

    cache: dict[float, float] = {}

    def log_score(t: float) -> float:  # t = log(factor)
        t = min(max(t, lo_limit), hi_limit)
        if t not in cache:
            cache[t] = score(math.exp(t))
        return cache[t]

    lo_limit, hi_limit, step = math.log(lowest), math.log(highest), math.log(2.0)
    mid = min(max(math.log(start), lo_limit), hi_limit)
    left, right = max(mid - step, lo_limit), min(mid + step, hi_limit)
    while log_score(left) > log_score(mid) and left > lo_limit:
        left, mid, right = max(left - step, lo_limit), left, mid
    while log_score(right) > log_score(mid) and right < hi_limit:
        left, mid, right = mid, right, min(right + step, hi_limit)
    if log_score(mid) < max(log_score(left), log_score(right)):
        best = max(cache, key=cache.__getitem__)
        if lowest <= 1e-4 or best > lo_limit:
            warnings.warn(
                f"cv bandwidth search stopped at the edge of its range (factor "
                f"{math.exp(best):.3g}); the data may hold duplicated points or be too few",
                RuntimeWarning,
                stacklevel=4,
            )
        return math.exp(best)
    minimize_scalar(
        lambda t: -log_score(t), bounds=(left, right), method="bounded", options={"xatol": 1e-3}
    )
    return math.exp(max(cache, key=cache.__getitem__))  # the best point evaluated


MAX_DECIMALS = 12
"""Most decimal places :func:`decimal_steps` looks for; finer columns count as continuous."""


def decimal_steps(x: np.ndarray) -> np.ndarray:
    """The recorded resolution of each column: ``10**-k`` for the fewest decimals ``k`` (at most
    ``MAX_DECIMALS``, integers included) that write every value of it and tell at least two of
    them apart, ``0`` if none does (full-precision values, or values far below ``10**-12``).

    Example:
        >>> decimal_steps(np.array([[1.25, 3.0, 0.1234567891234567], [2.5, 7.0, 1.0]]))
        array([0.01, 1.  , 0.  ])
    """
    steps = np.zeros(x.shape[1])
    for j in range(x.shape[1]):
        for k in range(MAX_DECIMALS + 1):
            scaled = x[:, j] * 10.0**k
            if not np.all(np.abs(scaled) < 2.0**52):
                break
            rounded = np.round(scaled)
            if np.ptp(rounded) > 0 and np.all(np.abs(scaled - rounded) <= 1e-6):
                steps[j] = 10.0**-k
                break
    return steps


def resolution_floor(x: np.ndarray) -> np.ndarray:
    """Smallest kernel standard deviation per axis: the spread ``step / sqrt(12)`` of the
    rounding error at the data's resolution, the larger of the rounding step of a column of few
    distinct values (:func:`densitylab._rounding.rounding_steps`) and the decimal step its values
    are written to (:func:`decimal_steps`); ``0`` for a column of full-precision values. A kernel
    narrower than the rounding error claims a precision the data do not have, and on repeated
    values the cross-validated likelihood grows without bound as the kernel shrinks. (A floor of
    a whole step cost 2 nats per point on scikit-learn's diabetes table, whose binary column's
    step is two standard deviations.)"""
    from densitylab._rounding import rounding_steps

    return np.maximum(rounding_steps(x), decimal_steps(x)) / math.sqrt(12.0)


def _factor_on(x: np.ndarray, weights: np.ndarray, base: np.ndarray, start: float,
               floor: np.ndarray) -> float:
    """Leave-one-out best ``c`` for ``H = c * base`` (``base`` lower-triangular), kept above the
    resolution floor along every axis."""
    axis_sd = np.sqrt(np.sum(base**2, axis=1))  # kernel sd per axis for c = 1
    lowest = max(1e-4, float(np.max(floor / axis_sd)))
    return _maximise_log_factor(loo_scorer(x, weights, base), start, lowest=lowest)


def cv_factor(x: np.ndarray, weights: np.ndarray, floor: np.ndarray | None = None) -> float:
    """Factor maximising the leave-one-out log-likelihood of ``H = factor * chol(cov)``.

    Starting at Scott's factor, the search doubles or halves the factor until the score drops on
    both sides (within ``[1e-4, 10]``), then a bounded Brent search refines it to ~0.1%. Every
    evaluation is exact and costs at most n^2 kernel values (far fewer for small bandwidths).

    References:
        Silverman, B. W. (1986). Density Estimation for Statistics and Data Analysis, sec. 3.4.
    """
    chol = data_cholesky(x, weights, "cv")
    floor = resolution_floor(x) if floor is None else floor
    return _factor_on(x, weights, chol, scott_factor(x, weights), floor)


def _isotropic_shape(x: np.ndarray, weights: np.ndarray, floor: np.ndarray,
                     fitted: dict) -> np.ndarray:
    """``H = c * diag(sd)``: one width for every axis of the standardised data (what a
    grid search of scikit-learn's ``KernelDensity`` on standardised data tunes)."""
    base = np.diag(np.sqrt(np.diag(data_covariance(x, weights))))
    return _factor_on(x, weights, base, scott_factor(x, weights), floor) * base


def _full_shape(x: np.ndarray, weights: np.ndarray, floor: np.ndarray,
                fitted: dict) -> np.ndarray:
    """``H = c * chol(cov)``: kernels shaped like the data's covariance (scipy's convention)."""
    return cv_factor(x, weights, floor) * data_cholesky(x, weights, "cv")


def _scott_shape(x: np.ndarray, weights: np.ndarray, floor: np.ndarray,
                 fitted: dict) -> np.ndarray:
    """``H = scott * chol(cov)``, widened to the floor: the guard of the tied case, where it
    competes with the shapes above on K-fold held-out likelihood (see :func:`cv_bandwidth`)."""
    chol = data_cholesky(x, weights, "cv")
    axis_sd = np.sqrt(np.sum(chol**2, axis=1))
    return max(scott_factor(x, weights), float(np.max(floor / axis_sd))) * chol


PER_AXIS_SUBSAMPLE = 1000
"""Most points the per-axis gradient search looks at (its cost is dense in n^2); the overall
scale of the shape it finds is then refitted exactly on all the data."""


def _per_axis_shape(x: np.ndarray, weights: np.ndarray, floor: np.ndarray,
                    fitted: dict) -> np.ndarray:
    """``H = diag(h_1..h_d)``: one width per axis, by L-BFGS on the leave-one-out log-likelihood
    of ``log h`` with its exact gradient, from the best isotropic kernel; the widths are kept
    above the rounding floor. On more than ``PER_AXIS_SUBSAMPLE`` points the shape comes from a
    seeded subsample and its scale from all the points."""
    from scipy.optimize import minimize
    from scipy.special import logsumexp

    isotropic = fitted.get("isotropic")
    start = np.diag(_isotropic_shape(x, weights, floor, fitted) if isotropic is None
                    else isotropic)
    sub, w = x, weights
    if len(x) > PER_AXIS_SUBSAMPLE:
        keep = np.random.default_rng(0).choice(len(x), PER_AXIS_SUBSAMPLE, replace=False,
                                               p=weights)
        sub, w = x[keep], np.full(PER_AXIS_SUBSAMPLE, 1.0 / PER_AXIS_SUBSAMPLE)
    centred = sub - w @ sub
    log_w = np.log(w)
    const = float(np.dot(w, np.log1p(-w)))
    lowest = np.maximum(floor, 1e-6 * np.sqrt(np.diag(data_covariance(x, weights))))

    def negative_loo(t: np.ndarray) -> tuple[float, np.ndarray]:
        u = centred / np.exp(t)
        sq = np.sum(u**2, axis=1)
        logits = log_w[None, :] - 0.5 * np.maximum(sq[:, None] + sq[None, :] - 2 * u @ u.T, 0.0)
        np.fill_diagonal(logits, -np.inf)
        log_sums = logsumexp(logits, axis=1)
        p = np.exp(logits - log_sums[:, None])  # p_ik: share of kernel k in the density at i
        # d log f_-i / d log h_j = sum_k p_ik (u_ij - u_kj)^2 - 1
        spread = u**2 - 2 * u * (p @ u) + p @ (u**2)
        value = float(np.dot(w, log_sums)) - const - float(np.sum(t))
        return -value, -(w @ spread - 1.0)

    fitted = minimize(negative_loo, np.log(start), jac=True, method="L-BFGS-B",
                      bounds=[(math.log(f), None) for f in lowest],
                      options={"maxiter": 100, "ftol": 1e-8, "gtol": 1e-6})
    base = np.diag(np.exp(fitted.x))
    if sub is x:
        return base
    return _factor_on(x, weights, base, 1.0, floor) * base


Shape = Callable[[np.ndarray, np.ndarray, np.ndarray, dict], np.ndarray]
KERNEL_SHAPES: dict[str, Shape] = {
    "isotropic": _isotropic_shape,
    "per-axis": _per_axis_shape,
    "full": _full_shape,
}
"""Kernel shapes the ``"cv"`` rule chooses among; each maps data, weights, the per-axis floor of
the kernel's width and the shapes fitted so far (``{name: H}``, which it may start from) to its
best ``H``."""
GUARD_SHAPES: dict[str, Shape] = {"scott": _scott_shape}
"""Shapes that join the choice where ties decide (K-fold scoring, see :func:`cv_bandwidth`)."""
TIED_FOLDS = 5


def select_bandwidth(
    x: np.ndarray, weights: np.ndarray, shapes: tuple[str, ...] = tuple(KERNEL_SHAPES),
    floor: np.ndarray | None = None, folds: int | None = None,
) -> tuple[np.ndarray, str, dict[str, float]]:
    """The bandwidth matrix with the best held-out log-likelihood over kernel ``shapes``.

    Returns ``(H, shape, scores)``: the winner, its shape's name, and every shape's mean
    held-out log-likelihood (nats per point): leave-one-out (every point left out with its
    copies), or with ``folds`` the ``folds``-fold cross-validation that keeps copies in one
    fold. ``floor``: the smallest kernel width per axis (default: the data's resolution,
    :func:`resolution_floor`). A shape that cannot be fitted here (a singular data covariance
    for ``"full"``) is left out of the scores.
    """
    from densitylab.kde.loo import kfold_score

    registry = KERNEL_SHAPES | GUARD_SHAPES
    unknown = [s for s in shapes if s not in registry]
    if unknown or not shapes:
        raise ValueError(f"unknown kernel shape(s) {unknown or shapes!r}; choose from "
                         f"{', '.join(registry)}")
    floor = resolution_floor(x) if floor is None else floor
    merged, merged_w = merge_copies(x, weights)
    if len(merged) < 2:
        raise ValueError("bandwidth rule 'cv' needs at least 2 distinct points")
    fitted: dict[str, np.ndarray] = {}
    scores: dict[str, float] = {}
    errors: list[str] = []
    for shape in shapes:
        try:
            h = registry[shape](merged, merged_w, floor, fitted)
        except ValueError as err:
            errors.append(f"{shape}: {err}")
            continue
        fitted[shape] = h
        scores[shape] = (loo_scorer(merged, merged_w, cholesky_of_gram(h))(1.0) if folds is None
                         else kfold_score(x, weights, cholesky_of_gram(h), folds))
    if not scores:
        raise ValueError("no kernel shape could be fitted: " + "; ".join(errors))
    best = max(scores, key=scores.__getitem__)
    return fitted[best], best, scores


def cv_bandwidth(x: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Bandwidth matrix with the best held-out log-likelihood over the kernel shapes of
    ``KERNEL_SHAPES``: isotropic on standardised data, per-axis widths, and the data's
    covariance scaled (see :func:`select_bandwidth`), never narrower than the data's resolution
    (:func:`resolution_floor`).

    Each shape's width is fitted by leave-one-out likelihood, every point left out with its
    copies. Where ties would decide (the data repeat rows), the shapes are compared by
    ``TIED_FOLDS``-fold held-out likelihood instead, with copies kept in one fold, and Scott's
    rule competes as a guard: a kernel that fits the ties but scores fresh points absurdly low
    loses to it. (Columns of few distinct values alone keep leave-one-out: the floor bounds
    their kernels, and on scikit-learn's wine table the 5-fold comparison chose a shape 0.5
    nats worse.)
    """
    constant = np.flatnonzero(np.ptp(x, axis=0) == 0)
    if len(constant):
        raise ValueError(
            f"bandwidth rule 'cv' needs every column to vary; column {int(constant[0])} "
            "is constant (drop it, or pass an explicit bandwidth)"
        )
    distinct = len(merge_copies(x, weights)[0])
    if distinct == len(x):
        return select_bandwidth(x, weights)[0]
    return select_bandwidth(x, weights, (*KERNEL_SHAPES, *GUARD_SHAPES),
                            folds=min(TIED_FOLDS, distinct))[0]


BANDWIDTH_RULES: dict[str, BandwidthRule] = {
    "scott": scott_factor,
    "silverman": silverman_factor,
    "cv": cv_bandwidth,
}
"""Named bandwidth rules; each returns the factor on the data covariance's Cholesky factor, or
the bandwidth matrix ``H`` itself (``"cv"``, which chooses the kernel's shape too)."""


def _bandwidth_error(bandwidth: Any, d: int, problem: str) -> ValueError:
    rules = ", ".join(repr(name) for name in sorted(BANDWIDTH_RULES))
    return ValueError(
        f"bandwidth {problem}; expected a positive number h, {d} positive per-axis values, "
        f"an invertible ({d}, {d}) matrix H, or a rule ({rules}); got {bandwidth!r}"
    )


def resolve_bandwidth(
    bandwidth: Any, x: np.ndarray, weights: np.ndarray
) -> tuple[np.ndarray, float | None]:
    """Return ``(H, factor)`` for a bandwidth specification; ``factor`` is ``None`` unless a rule
    was used. ``x`` holds the points with positive weight, ``weights`` sum to one."""
    d = x.shape[1]
    if isinstance(bandwidth, str):
        rule = BANDWIDTH_RULES.get(bandwidth.strip().lower())
        if rule is None:
            raise _bandwidth_error(bandwidth, d, "names no known rule")
        if len(x) < 2:
            raise ValueError(
                f"bandwidth rule {bandwidth!r} needs at least 2 points with positive weight, "
                f"got n_samples={len(x)}"
            )
        chosen = rule(x, weights)
        if isinstance(chosen, np.ndarray):
            return chosen, None
        return float(chosen) * data_cholesky(x, weights, bandwidth), float(chosen)
    if isinstance(bandwidth, bool | np.bool_):
        raise _bandwidth_error(bandwidth, d, "must not be a boolean")
    try:
        arr = np.array(bandwidth, dtype=np.float64)
    except (TypeError, ValueError):
        raise _bandwidth_error(bandwidth, d, "is not numeric") from None
    if not np.all(np.isfinite(arr)):
        raise _bandwidth_error(bandwidth, d, "contains NaN or infinite values")
    if arr.ndim == 0:
        if arr <= 0:
            raise _bandwidth_error(bandwidth, d, "must be positive")
        return float(arr) * np.eye(d), None
    if arr.ndim == 1:
        if arr.shape != (d,):
            raise _bandwidth_error(bandwidth, d, f"has {arr.size} per-axis values for {d}-D data")
        if np.any(arr <= 0):
            raise _bandwidth_error(bandwidth, d, "per-axis values must all be positive")
        return np.diag(arr), None
    if arr.shape != (d, d):
        raise _bandwidth_error(bandwidth, d, f"matrix has shape {arr.shape}, not ({d}, {d})")
    singular = np.linalg.svd(arr, compute_uv=False)
    if singular[-1] <= 0 or singular[0] / singular[-1] > MAX_CONDITION:
        cond = math.inf if singular[-1] <= 0 else singular[0] / singular[-1]
        raise _bandwidth_error(
            bandwidth, d, f"matrix is singular or nearly so (condition number {cond:.3g})"
        )
    return arr, None
