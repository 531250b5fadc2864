"""Exact multivariate Gaussian kernel density estimation with bandwidth matrices.

The estimate for points ``x_1..x_N`` with normalised weights ``w_i`` (``1/N`` by default) is

    f(x) = 1/|det H| * sum_i w_i K(H^{-1} (x - x_i)),   K(u) = prod_j exp(-u_j^2 / 2) / sqrt(2 pi),

the separable Gaussian kernel of the coursework, so each kernel is ``N(x_i, H H^T)``: ``H`` is the
bandwidth matrix and ``H H^T`` the kernel covariance (per-axis standard deviations ``h_j`` for
``H = diag(h_1, ..., h_d)``).

Evaluation is exact to float64 rounding and fast: data and queries are whitened once and sorted
into small spatial groups (kd-tree leaves). Each query sums its nearest data exactly and skips
a data leaf only when bounds prove that all skipped leaves together hold less than ``2**-53``
of the result (the unit roundoff of float64); the kept terms are summed by compiled
loops, centred on the group so the expansion ``|a - b|^2 = |a|^2 + |b|^2 - 2 a.b`` keeps full
precision, groups in parallel (``densitylab._kde_kernels``, on as many threads as torch uses).
On a regular 2-D grid with an axis-aligned kernel the density image is one product of two small
kernel matrices, computed in torch.

With ``device`` set (a GPU, typically) the same sums run there instead, densely: every kernel in
bounded blocks of exact pairwise distances, combined by log-sum-exp. No pruning, so on a CPU the
default path is faster; on a GPU raw throughput wins.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from scipy.linalg import solve_triangular
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

from densitylab import _kde_kernels as kernels
from densitylab._bandwidth import BANDWIDTH_RULES, resolve_bandwidth
from densitylab._validation import as_points, check_positive_int
from densitylab.grids import Grid
from densitylab.runtime import resolve_device

__all__ = ["KDE", "BANDWIDTH_RULES", "leave_one_out_log_likelihood"]

_LOG_2PI = math.log(2.0 * math.pi)
# pruned kernel mass, relative to the sum it is left out of: the unit roundoff of float64, less
# than the rounding error of the sum of the kept terms itself
_LOG_DELTA = -53.0 * math.log(2.0)
_DEFAULT_BLOCK = 1 << 21  # kernel values per block: 16 MB of float64
_TREE_LEAF = 16  # kd-tree leaf size, for data and queries
_DATA_LEAF = 64  # most data points per leaf of the pruning bounds (tighter costs more per leaf)
_QUERY_GROUP = 64  # most query points sharing one set of kept leaves
_GROUPS_PER_TASK = 8  # fewer groups than this per thread: not worth a second thread
_MAX_GROUP_DIAMETER = 8.0  # widest query group, in kernel widths; smaller groups prune better
_TINY = 1e-280  # grid cells below this are recomputed in log space
# whitened coordinates beyond these magnitudes: the data spread is too wide for the bandwidth
# (squared distances would overflow float64), or a query lies so far out that it is summed
# directly from its differences instead of by the compiled kernels' expansion
_MAX_DATA_SPREAD = 1e50
_FAR_QUERY = 1e100


def _torch() -> Any:
    """torch, imported on first evaluation: the grid's kernel matrices (its vectorised ``exp`` is
    ~2.5x NumPy's on CPU), the ``device`` path, and the thread count everything follows."""
    import torch

    return torch


def _tree(points: np.ndarray) -> Any:
    """kd-tree over ``points``: sliding-midpoint splits, leaves of at most ``_TREE_LEAF`` points."""
    from scipy.spatial import cKDTree

    return cKDTree(points, leafsize=_TREE_LEAF, balanced_tree=False, compact_nodes=False)


def _tree_groups(tree: Any, max_size: int, max_diameter: float = math.inf) -> np.ndarray:
    """Spatial groups: start offsets into ``tree.indices`` (plus the end) of the largest tree
    nodes with at most ``max_size`` points and a cell at most ``max_diameter`` across.
    Consecutive groups are neighbours in space.

    Identical points can make a leaf larger than ``max_size``: it is cut into pieces.
    """
    starts: list[int] = []
    max_d2 = max_diameter**2
    stack = [(tree.tree, tree.mins.tolist(), tree.maxes.tolist())]
    while stack:
        node, lo, hi = stack.pop()
        size = node.children
        small = (
            size <= max_size and sum((b - a) ** 2 for a, b in zip(lo, hi, strict=True)) <= max_d2
        )
        if node.split_dim == -1 or small:
            starts.extend(range(node.start_idx, node.end_idx, max_size))
            continue
        k, split = node.split_dim, node.split
        stack.append((node.greater, [*lo[:k], split, *lo[k + 1 :]], hi))
        stack.append((node.lesser, lo, [*hi[:k], split, *hi[k + 1 :]]))
    return np.array(sorted(starts) + [tree.n])


def _boxes(points: np.ndarray, starts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return (
        np.minimum.reduceat(points, starts[:-1], axis=0),
        np.maximum.reduceat(points, starts[:-1], axis=0),
    )


@dataclass(frozen=True)
class _Index:
    """Whitened data sorted into spatial leaves, with each leaf's bounding box and log weight."""

    points: np.ndarray  # (n, d), leaf order
    points_t: np.ndarray  # (d, n), the same, coordinates as rows (the kernels' layout)
    log_w: np.ndarray  # (n,), log of normalised weights, leaf order
    starts: np.ndarray  # (leaves + 1,)
    lo: np.ndarray  # (leaves, d)
    hi: np.ndarray  # (leaves, d)
    log_leaf_w: np.ndarray  # (leaves,)
    tree: Any  # the kd-tree the leaves come from, in unscaled coordinates
    scale: float = 1.0  # points = scale * tree coordinates

    @classmethod
    def build(cls, u: np.ndarray, log_w: np.ndarray) -> _Index:
        tree = _tree(u)
        starts = _tree_groups(tree, _DATA_LEAF)
        points, log_w = u[tree.indices], log_w[tree.indices]
        lo, hi = _boxes(points, starts)
        log_leaf_w = np.logaddexp.reduceat(log_w, starts[:-1])
        return cls(points, np.ascontiguousarray(points.T), log_w, starts, lo, hi, log_leaf_w, tree)

    def scaled(self, s: float) -> _Index:
        """The same index for coordinates multiplied by ``s > 0`` (a bandwidth divided by s)."""
        return dataclasses.replace(
            self, points=self.points * s, points_t=self.points_t * s, lo=self.lo * s,
            hi=self.hi * s, scale=self.scale * s,
        )


def _log_kernel_sums(index: _Index, queries: np.ndarray | None) -> np.ndarray:
    """``log sum_j w_j exp(-|v - u_j|^2 / 2)`` for whitened queries ``v`` (rows).

    With ``queries=None`` the queries are the indexed points themselves, each leaving itself out
    (leave-one-out), grouped by their own leaves, and the result follows the index's leaf order.
    """
    n_leaves = len(index.starts) - 1
    if queries is None:
        qorder, qpoints, qstarts = None, index.points, index.starts
        skips, own_leaves = np.arange(len(qpoints)), np.arange(n_leaves)
    else:
        tree = _tree(queries)
        qorder, qstarts = tree.indices, _tree_groups(tree, _QUERY_GROUP, _MAX_GROUP_DIAMETER)
        qpoints = np.ascontiguousarray(queries[qorder])
        skips, own_leaves = np.full(len(qpoints), -1), np.full(len(qstarts) - 1, -1)
    out = np.empty(len(qpoints))
    args = (index.points_t, index.log_w, index.starts, index.lo, index.hi, index.log_leaf_w,
            qpoints, qstarts, skips, own_leaves, _LOG_DELTA)
    n_groups = len(qstarts) - 1
    threads = min(_torch().get_num_threads(), max(1, n_groups // _GROUPS_PER_TASK))
    if threads == 1:
        kernels.log_kernel_sums(*args, np.array([0, n_groups]), out)
    else:  # a few tasks per thread balance uneven groups
        bounds = np.linspace(0, n_groups, 4 * threads + 1).astype(np.int64)
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(lambda k: kernels.log_kernel_sums(*args, bounds[k : k + 2], out),
                          range(len(bounds) - 1)))
    if qorder is None:
        return out
    result = np.empty_like(out)
    result[qorder] = out
    return result


def _direct_log_kernel_sums(points: np.ndarray, log_w: np.ndarray, queries: np.ndarray
                            ) -> np.ndarray:
    """``log sum_j w_j exp(-|v - u_j|^2 / 2)`` from exact differences, one query at a time:
    for queries far beyond the data; ``-inf`` where the squared distance overflows float64."""
    from scipy.special import logsumexp

    out = np.full(len(queries), -math.inf)
    with np.errstate(over="ignore", invalid="ignore"):
        for i, v in enumerate(queries):
            if np.all(np.isfinite(v)):
                d2 = np.sum(np.square(points - v), axis=1)
                out[i] = logsumexp(log_w - 0.5 * d2)
    return np.where(np.isnan(out), -math.inf, out)


def _dense_log_kernel_sums(
    points: np.ndarray, log_w: np.ndarray, queries: np.ndarray, block: int, device: Any
) -> np.ndarray:
    """``log sum_j w_j exp(-|v - u_j|^2 / 2)`` for every query, by brute force on ``device``.

    Distances are formed from differences (no expansion), in float64, ``block`` kernel values at
    a time; partial sums over data blocks are merged with ``logaddexp``.
    """
    torch = _torch()
    u = torch.from_numpy(points).to(device)
    lw = torch.from_numpy(log_w).to(device)
    v = torch.from_numpy(queries).to(device)
    rows = max(1, min(len(v), block // min(len(u), block)))
    cols = max(1, block // rows)
    out = torch.empty(len(v), dtype=torch.float64, device=device)
    for i in range(0, len(v), rows):
        total = torch.full((min(rows, len(v) - i),), -math.inf, dtype=torch.float64, device=device)
        for j in range(0, len(u), cols):
            d2 = torch.cdist(v[i : i + rows], u[j : j + cols],
                             compute_mode="donot_use_mm_for_euclid_dist").square_()
            total = torch.logaddexp(total, torch.logsumexp(lw[j : j + cols] - 0.5 * d2, dim=1))
        out[i : i + rows] = total
    return out.cpu().numpy()


@functools.cache
def _thread_pools() -> Any:
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()  # lists the loaded libraries once (~4 ms); limits take ~30 us


@contextlib.contextmanager
def _one_blas_thread() -> Iterator[None]:
    """BLAS on one thread. The KDE's linear algebra is tiny (``d x d`` factors, ``n x d``
    solves), and an OpenBLAS pool woken by it keeps spinning for a while, taking a core from
    the kernel threads (sums at two threads were 1.3x slower after a fit)."""
    with _thread_pools().limit(limits=1, user_api="blas"):
        yield


@contextlib.contextmanager
def _one_thread(active: bool) -> Iterator[None]:
    """One BLAS and one torch thread while ``active``: the grid's small products and
    exponentials ran 3x slower on two such threads than on one (benchmarks/RESULTS.md); the
    grid's own threads share the work instead."""
    if not active:
        yield
        return
    torch = _torch()
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with _one_blas_thread():
            yield
    finally:
        torch.set_num_threads(previous)


def _separable_log_image(
    x: np.ndarray, w: np.ndarray, sd: np.ndarray, xs: np.ndarray, ys: np.ndarray, block: int,
    device: Any = None, threads: int = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """Log-density image ``(len(ys), len(xs))`` of an axis-aligned 2-D Gaussian mixture.

    The image is ``Ky diag(w) Kx^T`` with ``Kx[a, j] = exp(-(xs_a - x_j1)^2 / (2 sd_1^2))``: one
    matrix product of two small kernel matrices, exact (a sum of positive terms). Cells below
    ``1e-280`` (where kernel values may have underflowed) are flagged in the returned mask, for
    recomputation in log space. On the CPU, ``threads`` Python threads each sum a share of the
    data's chunks into their own image (torch and BLAS release the GIL; call on one torch and
    one BLAS thread).
    """
    torch = _torch()
    gx, gy = (torch.from_numpy(v / s).to(device) for v, s in ((xs, sd[0]), (ys, sd[1])))
    zx, zy = (torch.from_numpy(np.ascontiguousarray(x[:, k] / sd[k])).to(device) for k in (0, 1))
    equal = bool(np.all(w == w[0]))  # then weigh once at the end
    weights = torch.from_numpy(w).to(device)
    on_cpu = gx.device.type == "cpu"
    cols = max(1, min(block, 1 << 17) // max(len(xs), len(ys)))  # cache-sized chunks

    def partial_image(chunk_starts: range) -> Any:
        image = (np.zeros((len(ys), len(xs))) if on_cpu
                 else torch.zeros((len(ys), len(xs)), dtype=torch.float64, device=device))
        for j in chunk_starts:
            kx = (gx[:, None] - zx[j : j + cols]).square_().mul_(-0.5).exp_()
            ky = (gy[:, None] - zy[j : j + cols]).square_().mul_(-0.5).exp_()
            ky = ky if equal else ky * weights[j : j + cols]
            if on_cpu:  # NumPy's BLAS multiplies these float64 shapes ~1.7x faster than torch's
                image += ky.numpy() @ kx.numpy().T
            else:
                image += ky @ kx.T
        return image if on_cpu else image.cpu().numpy()

    chunks = range(0, len(x), cols)
    threads = min(threads, len(chunks)) if on_cpu else 1
    if threads > 1:
        with ThreadPoolExecutor(threads) as pool:
            image = sum(pool.map(partial_image, (chunks[k::threads] for k in range(threads))))
    else:
        image = partial_image(chunks)
    image = image * (w[0] if equal else 1.0)
    small = image < _TINY
    with np.errstate(divide="ignore"):
        return np.log(image) - _LOG_2PI - math.log(sd[0] * sd[1]), small


def _cholesky_of_gram(h: np.ndarray) -> np.ndarray:
    """Lower-triangular ``L`` with ``L L^T = H H^T``, from a QR of ``H^T`` (no squaring of the
    condition number, unlike a Cholesky of ``H H^T``)."""
    r = np.linalg.qr(h.T, mode="r")
    return (r * np.sign(np.diag(r))[:, None]).T


def _loo_scorer(x: np.ndarray, weights: np.ndarray, chol: np.ndarray) -> Callable[[float], float]:
    """``score(c)``: the weighted mean leave-one-out log-likelihood with ``H = c * chol``.

    ``log f_{-i}(x_i) = log(sum_{j != i} w_j N(x_i; x_j, H H^T) / (1 - w_i))``; the index is built
    once and rescaled for each ``c``.
    """
    d = x.shape[1]
    u = solve_triangular(chol, (x - weights @ x).T, lower=True).T
    index = _Index.build(np.ascontiguousarray(u), np.log(weights))
    w = np.exp(index.log_w)
    const = float(np.dot(w, np.log1p(-w))) + 0.5 * d * _LOG_2PI
    const += float(np.sum(np.log(np.abs(np.diag(chol)))))

    def score(c: float) -> float:
        sums = _log_kernel_sums(index.scaled(1.0 / c), None)
        return float(np.dot(w, sums)) - const - d * math.log(c)

    return score


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

    Pointwise sums use as many threads as torch (``torch.set_num_threads``,
    ``OMP_NUM_THREADS``); on a machine busy with other jobs one thread is often the fastest.

    Attributes:
        bandwidth_: the matrix ``H``, ``(d, d)``; lower-triangular under a rule.
        covariance_: the kernel covariance ``H H^T``.
        factor_: the rule's factor on ``chol(Sigma)``, or ``None`` for an explicit bandwidth.
        data_, weights_: the points with positive weight and their weights (summing to one).
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
    ) -> None:
        self.bandwidth = bandwidth
        self.chunk_size = chunk_size
        self.device = device

    def fit(self, X: ArrayLike, y: Any = None, sample_weight: ArrayLike | None = None) -> KDE:
        """Store the points ``X`` ``(n, d)`` (weighted by ``sample_weight``) and resolve ``H``."""
        x = as_points(X, name="X")
        w = _check_weights(sample_weight, len(x))
        positive = w > 0
        x, w = x[positive], w[positive] / w[positive].sum()
        if self.chunk_size is not None:
            check_positive_int(self.chunk_size, "chunk_size")
        with _one_blas_thread():
            h, factor = resolve_bandwidth(self.bandwidth, x, w)
            chol, mean = _cholesky_of_gram(h), w @ x
        self._device = None if self.device is None else resolve_device(self.device)
        self.bandwidth_ = h
        with np.errstate(over="ignore", under="ignore"):
            self.covariance_ = h @ h.T
        self.factor_ = factor
        self.data_, self.weights_ = x, w
        self.n_features_in_ = x.shape[1]
        self._chol, self._mean = chol, mean
        d = x.shape[1]
        self._log_norm = 0.5 * d * _LOG_2PI + float(np.sum(np.log(np.diag(chol))))
        self._index: _Index | None = None  # built on first pointwise evaluation
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
        lies from the data (the sum is taken in log space)."""
        check_is_fitted(self)
        x = as_points(X, name="X", dim=self.n_features_in_)
        v = self._whiten(x)
        far = ~(np.max(np.abs(v), axis=1) <= _FAR_QUERY)  # NaN/inf (overflowed) count as far
        sums = np.empty(len(x))
        if far.any():
            sums[far] = _direct_log_kernel_sums(self._whitened, np.log(self.weights_), v[far])
        near = v[~far]
        if self._device is not None and len(near):
            sums[~far] = _dense_log_kernel_sums(self._whitened, np.log(self.weights_), near,
                                                self._block, self._device)
        elif len(near):
            with _one_blas_thread():
                if self._index is None:
                    self._index = _Index.build(self._whitened, np.log(self.weights_))
                sums[~far] = _log_kernel_sums(self._index, near)
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
        cov = self.covariance_
        if cov[0, 1] == 0.0 and cov[1, 0] == 0.0:
            sd = np.sqrt(np.diag(cov))
            threads = _torch().get_num_threads()
            with _one_thread(self._device is None):
                log_image, small = _separable_log_image(
                    self.data_, self.weights_, sd, grid.xs, grid.ys, self._block, self._device,
                    threads,
                )
            if small.any():
                log_image[small] = self.score_samples(grid.points[small.ravel()])
        else:
            log_image = self.score_samples(grid.points).reshape(grid.shape)
        return log_image if log else np.exp(log_image)

    def sample(self, n_samples: int = 1, random_state: Any = None) -> np.ndarray:
        """Draw ``(n_samples, d)`` points: a data point chosen by weight plus ``H z``,
        ``z ~ N(0, I)``. ``random_state``: ``None``, an int seed or a ``numpy.random.Generator``."""
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
        return self.data_[idx] + z @ self.bandwidth_.T


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
        raise ValueError("sample_weight must have a positive sum")
    return w


def leave_one_out_log_likelihood(
    X: ArrayLike, bandwidth: float | str | ArrayLike, sample_weight: ArrayLike | None = None
) -> float:
    """Weighted mean of ``log f_{-i}(x_i)``, each point scored by the KDE of all the others: the
    criterion ``bandwidth="cv"`` maximises (exact, in nats per point)."""
    kde = KDE(bandwidth=bandwidth).fit(X, sample_weight=sample_weight)
    if len(kde.data_) < 2:
        raise ValueError("leave-one-out needs at least 2 points with positive weight")
    return _loo_scorer(kde.data_, kde.weights_, kde._chol)(1.0)
