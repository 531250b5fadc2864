"""The KDE estimator: exact multivariate Gaussian kernel density estimation with bandwidth
matrices, under the scikit-learn estimator contract.

The estimate for points ``x_1..x_N`` with normalised weights ``w_i`` (``1/N`` by default) is

    f(x) = 1/|det H| * sum_i w_i K(H^{-1} (x - x_i)),   K(u) = prod_j exp(-u_j^2 / 2) / sqrt(2 pi),

the separable Gaussian kernel of the coursework, so each kernel is ``N(x_i, H H^T)``: ``H`` is the
bandwidth matrix and ``H H^T`` the kernel covariance (per-axis standard deviations ``h_j`` for
``H = diag(h_1, ..., h_d)``).

The estimator whitens data and queries once (``u = L^{-1}(x - mean)`` with ``L L^T = H H^T``) and
hands the sums to an engine of :mod:`densitylab.kde.engines`: the exact pruned kd-tree on the
CPU, dense blocks on a ``device``, or the separable grid product. Bandwidth rules live in
:mod:`densitylab.kde.bandwidth`, the leave-one-out criterion in :mod:`densitylab.kde.loo`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from scipy.linalg import solve_triangular
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

from densitylab import threads as threads_
from densitylab._validation import check_positive_int, estimator_points, feature_names_of
from densitylab.grids import Grid
from densitylab.guard import Guard, guard_weight
from densitylab.kde.bandwidth import cholesky_of_gram, resolve_bandwidth
from densitylab.kde.engines import (
    Index,
    dense_log_kernel_sums,
    direct_log_kernel_sums,
    grid_log_image,
    one_blas_thread,
    tree_log_kernel_sums,
)
from densitylab.kde.loo import loo_scorer
from densitylab.missing import marginal_log_density
from densitylab.runtime import resolve_device
from densitylab.support import Support

__all__ = ["KDE", "leave_one_out_log_likelihood"]

_LOG_2PI = math.log(2.0 * math.pi)
_DEFAULT_BLOCK = 1 << 21  # kernel values per block: 16 MB of float64
# whitened coordinates beyond these magnitudes: the data spread is too wide for the bandwidth
# (squared distances would overflow float64), or a query lies so far out that it is summed
# directly from its differences instead of by the compiled kernels' expansion
_MAX_DATA_SPREAD = 1e50
_FAR_QUERY = 1e100


class KDE(BaseEstimator):
    """Gaussian kernel density estimate with a bandwidth matrix, exact and fast.

    ``f(x) = 1/|det H| sum_i w_i K(H^{-1}(x - x_i))`` with the separable standard normal kernel
    ``K``: every data point carries a Gaussian ``N(x_i, H H^T)``. Follows the scikit-learn
    estimator contract: ``fit`` / ``score_samples`` (log-density) / ``score`` / ``sample``.

    Args:
        bandwidth: ``H`` or a rule naming it, for ``d``-dimensional data:

            - a positive number ``h``: ``H = h I`` (isotropic, std ``h`` per axis);
            - ``d`` positive numbers: ``H = diag(h_1, ..., h_d)`` (std ``h_j`` along axis ``j``);
            - a ``(d, d)`` invertible matrix: ``H`` itself, kernel covariance ``H H^T``;
            - ``"scott"`` / ``"silverman"``: ``H = factor * chol(Sigma)`` with ``Sigma`` the
              (weighted) data covariance and the rule's factor; ``"cv"``: the factor maximising
              the leave-one-out log-likelihood. Rules live in ``BANDWIDTH_RULES``.
        chunk_size: largest number of kernel values held at once by the grid and the ``device``
            paths (query x data block); ``None`` means ``2**21`` (16 MB of float64). The default
            pointwise path holds a few arrays of the data's size per thread. Memory stays
            bounded for any number of points.
        device: ``None`` (default) evaluates on the CPU with kd-tree pruning, the fastest path
            on a CPU; a torch device (``"cuda"``, ``"cpu"``, ``"auto"``: CUDA when available)
            evaluates every kernel there in dense blocks, for GPUs. Both are exact.
        bounds: ``None``, or one ``(lower, upper)`` pair per column (``None`` for an open side,
            ``None`` for an unbounded column): a boundary-corrected estimate. The kernels are
            placed on ``log(x - lower)``, ``-log(upper - x)`` or the logit of the scaled column
            (:class:`densitylab.support.Support`), and the density carried back with the
            Jacobian, so it integrates to 1 on the support, is 0 outside it, and samples stay in
            it. Every training point must lie strictly inside.
        guard: the weight ``eps`` of a defensive component (:mod:`densitylab.guard`):
            ``f = (1 - eps) KDE + eps N(m, diag(s^2))`` with the data's mean and, per axis,
            ``s^2`` four times the data's variance plus the kernel's (the width the flows'
            guard shares), which bounds the log-density of points off the data's thin
            directions at a cost of at most ``-log(1 - eps)`` nats anywhere. ``None`` (default):
            ``0.01`` under ``bandwidth="cv"``, whose kernels the data's covariance shapes, and
            ``0`` otherwise (the plain KDE, equal to scipy's and scikit-learn's); ``0`` turns it
            off.
        threads: threads of every call (``fit``, ``score_samples``, ``evaluate_grid``,
            ``sample``): the pointwise sums and the grid share their work among them.
            ``None`` (default): as many as there are cores, at most ``OMP_NUM_THREADS``, and
            BLAS on the cores other processes leave idle (see :mod:`densitylab.threads`). The
            caller's thread settings are restored after each call.

    Attributes:
        bandwidth_: the matrix ``H``, ``(d, d)``; lower-triangular under a rule.
        covariance_: the kernel covariance ``H H^T``.
        factor_: the rule's factor on ``chol(Sigma)``, or ``None`` for an explicit bandwidth.
        guard_weight_: the defensive weight ``eps`` in use (``0.0``: none).
        data_, weights_: the points with positive weight and their weights (summing to one);
            with ``bounds``, ``data_`` is in the mapped coordinates, where the kernels sit.
        support_: the :class:`~densitylab.support.Support` of ``bounds``, or ``None``.
        n_features_in_: ``d``.

    How the bandwidth maps onto other libraries (same estimate, to float64 rounding):

    - ``scipy.stats.gaussian_kde(x.T, bw_method=b)``: its ``covariance`` is the data covariance
      times ``factor**2``, so ``covariance_ == kde.covariance`` and ``KDE(bandwidth=kde.cho_cov)``
      (the lower Cholesky factor, ``factor * chol(Sigma)``) or ``KDE(bandwidth="scott")`` give
      scipy's estimate. The rules here equal scipy's, weights and effective sample size included.
    - ``sklearn.neighbors.KernelDensity(kernel="gaussian", bandwidth=h)``: ``h`` is the standard
      deviation of an isotropic kernel, so it equals ``KDE(bandwidth=h)`` (``H = h I``). For another
      ``H``, fit scikit-learn on ``z = H^{-1} x`` with ``bandwidth=1`` and subtract
      ``log|det H|`` from its scores. Its ``"scott"`` / ``"silverman"`` ignore the data's scale
      (``H = factor * I``); ours scale by the data covariance, as scipy does.

    Example:
        >>> import numpy as np
        >>> x = np.random.default_rng(0).normal(size=(500, 2))
        >>> kde = KDE(bandwidth=(0.3, 0.2)).fit(x)
        >>> kde.score_samples(np.zeros((1, 2))).shape
        (1,)

    References:
        Scott, D. W. (1992). Multivariate Density Estimation. Wiley.
        Silverman, B. W. (1986). Density Estimation for Statistics and Data Analysis.
        Chapman & Hall.
    """

    def __init__(
        self,
        bandwidth: float | str | ArrayLike = "scott",
        chunk_size: int | None = None,
        device: str | None = None,
        threads: int | None = None,
        bounds: Any = None,
        guard: float | None = None,
    ) -> None:
        self.bandwidth = bandwidth
        self.chunk_size = chunk_size
        self.device = device
        self.threads = threads
        self.bounds = bounds
        self.guard = guard

    def fit(self, X: ArrayLike, y: Any = None, sample_weight: ArrayLike | None = None) -> KDE:
        """Store the points ``X`` ``(n, d)`` (weighted by ``sample_weight``) and resolve ``H``."""
        with threads_.budget(self.threads):
            return self._fit(X, sample_weight)

    def _fit(self, X: ArrayLike, sample_weight: ArrayLike | None) -> KDE:
        x = estimator_points(self, X, reset=True)
        w = _check_weights(sample_weight, len(x))
        self.support_ = None if self.bounds is None else Support(self.bounds, x.shape[1])
        if self.support_ is not None:  # the kernels sit on the support mapped onto R^d
            self.support_.check_inside(x)
            x = self.support_.to_free(x)[0]
        positive = w > 0
        x, w = x[positive], w[positive] / w[positive].sum()
        if self.chunk_size is not None:
            check_positive_int(self.chunk_size, "chunk_size")
        guard = guard_weight(self.guard, _names_cv(self.bandwidth))
        with one_blas_thread():
            h, factor = resolve_bandwidth(self.bandwidth, x, w)
            chol, mean = cholesky_of_gram(h), w @ x
        self._device = None if self.device is None else resolve_device(self.device)
        self.bandwidth_ = h
        with np.errstate(over="ignore", under="ignore"):
            self.covariance_ = h @ h.T
        self.factor_ = factor
        self.guard_weight_ = guard
        self._guard = Guard.of_kde(x, w, h, guard) if guard > 0 else None
        self.data_, self.weights_ = x, w
        self.n_features_in_ = x.shape[1]
        self.__dict__.pop("feature_names_in_", None)
        if (names := feature_names_of(X)) is not None:  # a DataFrame's column names
            self.feature_names_in_ = names
        self._chol, self._mean = chol, mean
        d = x.shape[1]
        self._log_norm = 0.5 * d * _LOG_2PI + float(np.sum(np.log(np.diag(chol))))
        self._index: Index | None = None  # built on first pointwise evaluation
        self._whitened = self._whiten(x)
        spread = float(np.max(np.abs(self._whitened)))
        if not spread <= _MAX_DATA_SPREAD:
            raise ValueError(
                f"bandwidth too small for these data: they spread over {spread:.3g} kernel widths, "
                "beyond what float64 distances can hold; choose a larger bandwidth"
            )
        return self

    def _whiten(self, x: np.ndarray) -> np.ndarray:
        with np.errstate(over="ignore", invalid="ignore"):
            u = solve_triangular(self._chol, (x - self._mean).T, lower=True,
                                 check_finite=False).T
        return np.ascontiguousarray(u)

    @property
    def _block(self) -> int:
        return _DEFAULT_BLOCK if self.chunk_size is None else int(self.chunk_size)

    def score_samples(self, X: ArrayLike) -> np.ndarray:
        """Log-density at each row of ``X`` ``(m, d)``, shape ``(m,)``; finite however far a point
        lies from the data (the sum is taken in log space); ``-inf`` outside ``bounds``. A row
        with missing cells (NaN) gets the exact marginal density of its observed cells."""
        check_is_fitted(self)
        with threads_.budget(self.threads):
            return self._score_samples(X)

    def _score_samples(self, X: ArrayLike) -> np.ndarray:
        x = estimator_points(self, X, reset=False, allow_missing=True)
        if np.isnan(x).any():
            return marginal_log_density(x, self._marginal)
        if getattr(self, "support_", None) is None:
            return self._log_density(x)
        y, log_jacobian, inside = self.support_.to_free(x)
        out = np.full(len(x), -np.inf)
        out[inside] = self._log_density(y[inside]) + log_jacobian[inside]
        return out

    def _marginal(self, observed: list[int]):
        """The log-density of this KDE's marginal on the columns ``observed``: the kernels'
        points and covariance restricted to them (exact for Gaussian kernels)."""
        if len(observed) == self.n_features_in_:
            return self.score_samples
        block = self.covariance_[np.ix_(observed, observed)]
        marginal = KDE(bandwidth=np.linalg.cholesky(block),
                       guard=getattr(self, "guard_weight_", 0.0)).fit(
            self.data_[:, observed], sample_weight=self.weights_)
        support = getattr(self, "support_", None)
        if support is not None:  # the kernels sit in mapped coordinates: map those columns
            marginal.support_ = Support([support.bounds[j] for j in observed], len(observed))
        return marginal.score_samples

    def _log_density(self, x: np.ndarray) -> np.ndarray:
        """Log-density at ``x`` (mapped coordinates where ``bounds`` are set): the kernels',
        with the guard's component where there is one."""
        return self._guarded(self._log_kernels(x), x)

    def _guarded(self, log_kernels: np.ndarray, x: np.ndarray) -> np.ndarray:
        guard = getattr(self, "_guard", None)
        return log_kernels if guard is None else guard.mix(log_kernels, x)

    def _log_kernels(self, x: np.ndarray) -> np.ndarray:
        """Log-density of the kernels alone at ``x`` (mapped coordinates)."""
        v = self._whiten(x)
        far = ~(np.max(np.abs(v), axis=1) <= _FAR_QUERY)  # NaN/inf (overflowed) count as far
        sums = np.empty(len(x))
        if far.any():
            sums[far] = direct_log_kernel_sums(self._whitened, np.log(self.weights_), v[far])
        near = v[~far]
        if self._device is not None and len(near):
            sums[~far] = dense_log_kernel_sums(self._whitened, np.log(self.weights_), near,
                                                self._block, self._device)
        elif len(near):
            with one_blas_thread():
                if self._index is None:
                    self._index = Index.build(self._whitened, np.log(self.weights_))
                sums[~far] = tree_log_kernel_sums(self._index, near)
        return sums - self._log_norm

    def score(self, X: ArrayLike, y: Any = None) -> float:
        """Total log-likelihood of ``X``."""
        return float(np.sum(self.score_samples(X)))

    def evaluate_grid(self, grid: Grid, *, log: bool = False) -> np.ndarray:
        """Density (or log-density) image on a 2-D ``Grid``, shape ``grid.shape``.

        An axis-aligned kernel (diagonal ``H H^T``) uses the separable product, exact and much
        faster than pointwise evaluation; cells it cannot represent in float64 are recomputed
        pointwise in log space.
        """
        check_is_fitted(self)
        if self.n_features_in_ != 2:
            raise ValueError(
                f"evaluate_grid needs 2-D data, this KDE was fitted on {self.n_features_in_}-D data"
            )
        with threads_.budget(self.threads):
            return self._evaluate_grid(grid, log)

    def _evaluate_grid(self, grid: Grid, log: bool) -> np.ndarray:
        cov = self.covariance_
        if cov[0, 1] == 0.0 and cov[1, 0] == 0.0 and getattr(self, "support_", None) is None:
            sd = np.sqrt(np.diag(cov))
            log_image, small = grid_log_image(self.data_, self.weights_, sd, grid.xs, grid.ys,
                                              self._block, self._device)
            if small.any():
                log_image[small] = self._log_kernels(grid.points[small.ravel()])
            log_image = self._guarded(log_image.ravel(), grid.points).reshape(grid.shape)
        else:
            log_image = self._score_samples(grid.points).reshape(grid.shape)
        return log_image if log else np.exp(log_image)

    def sample(self, n_samples: int = 1, random_state: Any = None) -> np.ndarray:
        """Draw ``(n_samples, d)`` points: a data point chosen by weight plus ``H z``,
        ``z ~ N(0, I)`` (with probability ``guard_weight_``, a draw of the guard's Gaussian
        instead). ``random_state``: ``None``, an int seed or a ``numpy.random.Generator``."""
        check_is_fitted(self)
        n_samples = check_positive_int(n_samples, "n_samples")
        seed_types = int | np.integer | np.random.Generator
        if isinstance(random_state, bool) or not (
            random_state is None or isinstance(random_state, seed_types)
        ):
            raise ValueError(
                "random_state must be None, an int seed or a numpy.random.Generator, "
                f"got {type(random_state).__name__}"
            )
        rng = np.random.default_rng(random_state)
        idx = rng.choice(len(self.data_), size=n_samples, p=self.weights_)
        z = rng.standard_normal((n_samples, self.n_features_in_))
        with threads_.budget(self.threads):
            points = self.data_[idx] + z @ self.bandwidth_.T
        if getattr(self, "_guard", None) is not None:
            points = self._guard.sample_into(points, rng)
        support = getattr(self, "support_", None)
        return points if support is None else support.to_data(points)


def _names_cv(bandwidth: Any) -> bool:
    return isinstance(bandwidth, str) and bandwidth.strip().lower() == "cv"


def _check_weights(sample_weight: ArrayLike | None, n: int) -> np.ndarray:
    if sample_weight is None:
        return np.full(n, 1.0 / n)
    try:
        w = np.asarray(sample_weight, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError("sample_weight must be numeric") from err
    if w.shape != (n,):
        raise ValueError(f"sample_weight must have shape ({n},), got {w.shape}")
    if not np.all(np.isfinite(w)):
        raise ValueError("sample_weight contains NaN or infinite values")
    if np.any(w < 0):
        raise ValueError(
            f"sample_weight must be non-negative (first negative at index {int(np.argmax(w < 0))})"
        )
    if not w.sum() > 0:
        raise ValueError("sample_weight must have a positive sum (the weights are all zero)")
    return w


def leave_one_out_log_likelihood(
    X: ArrayLike, bandwidth: float | str | ArrayLike, sample_weight: ArrayLike | None = None
) -> float:
    """Weighted mean of ``log f_{-i}(x_i)``, each point scored by the KDE of all the others: the
    criterion ``bandwidth="cv"`` maximises (exact, in nats per point)."""
    kde = KDE(bandwidth=bandwidth).fit(X, sample_weight=sample_weight)
    if len(kde.data_) < 2:
        raise ValueError("leave-one-out needs at least 2 points with positive weight")
    return loo_scorer(kde.data_, kde.weights_, kde._chol)(1.0)
