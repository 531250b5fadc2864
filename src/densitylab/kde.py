"""Exact multivariate Gaussian kernel density estimation with bandwidth matrices.

The estimate for points ``x_1..x_N`` with normalised weights ``w_i`` (``1/N`` by default) is

    f(x) = 1/|det H| * sum_i w_i K(H^{-1} (x - x_i)),   K(u) = prod_j exp(-u_j^2 / 2) / sqrt(2 pi),

the separable Gaussian kernel of the coursework, so each kernel is ``N(x_i, H H^T)``: ``H`` is the
bandwidth matrix and ``H H^T`` the kernel covariance (per-axis standard deviations ``h_j`` for
``H = diag(h_1, ..., h_d)``).

Evaluation is exact to float64 rounding and fast: data and queries are whitened once and sorted
into small spatial groups (kd-tree leaves); each query group sums over the data with a matrix
product and a log-sum-exp, centred on the group so the expansion ``|a - b|^2 = |a|^2 + |b|^2 -
2 a.b`` keeps full precision. A data leaf is skipped only when a bound proves that all skipped
leaves together hold less than ``2**-56`` of the sum (below double-precision rounding). On a
regular 2-D grid with an axis-aligned kernel the density image is one product of two small kernel
matrices. Kernel exponentials run in torch (float64), on torch's intra-op threads.

With ``device`` set (a GPU, typically) the same sums run there instead, densely: every kernel in
bounded blocks of exact pairwise distances, combined by log-sum-exp. No pruning, so on a CPU the
default path is faster; on a GPU raw throughput wins.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from scipy.linalg import solve_triangular
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

from densitylab._bandwidth import BANDWIDTH_RULES, resolve_bandwidth
from densitylab._devices import resolve_device
from densitylab._validation import as_points, check_positive_int
from densitylab.grids import Grid

__all__ = ["KDE", "BANDWIDTH_RULES", "leave_one_out_log_likelihood"]

_LOG_2PI = math.log(2.0 * math.pi)
_LOG_DELTA = -56.0 * math.log(2.0)  # pruned kernel mass, relative to the sum it is left out of
_DEFAULT_BLOCK = 1 << 21  # kernel values per block: 16 MB of float64
_TREE_LEAF = 16  # kd-tree leaf size, for data and queries
_DATA_LEAF = 32  # most data points per leaf of the pruning bounds
_QUERY_GROUP = 128  # most query points summed together
_MAX_GROUP_DIAMETER = 8.0  # widest query group, in kernel widths; smaller groups prune better
_TINY = 1e-280  # grid cells below this are recomputed in log space
# Rounding in the expanded exponent grows like |a|^2 eps; past |a|^2 / 2 = 32 (query groups wider
# than ~16 kernel widths, which only a lone sparse leaf can be) differences are formed directly.
_MAX_EXPANDED_HALF_NORM = 32.0


def _torch() -> Any:
    """torch, imported on first evaluation: its vectorised ``exp`` is ~2.5x NumPy's on CPU, and the
    kernel exponentials are most of the work."""
    import torch

    return torch


def _tree(points: np.ndarray) -> Any:
    """kd-tree over ``points``: sliding-midpoint splits, leaves of at most ``_TREE_LEAF`` points."""
    from scipy.spatial import cKDTree

    return cKDTree(points, leafsize=_TREE_LEAF, balanced_tree=False, compact_nodes=False)


def _tree_groups(
    tree: Any, max_size: int, max_diameter: float = math.inf, keep_whole: int = 0
) -> np.ndarray:
    """Spatial groups: start offsets into ``tree.indices`` (plus the end) of the largest tree
    nodes with at most ``max_size`` points and a cell at most ``max_diameter`` across; a node of
    at most ``keep_whole`` points is never split. Consecutive groups are neighbours in space.

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
        if node.split_dim == -1 or small or size <= keep_whole:
            starts.extend(range(node.start_idx, node.end_idx, max(max_size, keep_whole)))
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


def _logsumexp_rows(a: np.ndarray) -> np.ndarray:
    """Row-wise log-sum-exp of a small 2-D array; rows of ``-inf`` give ``-inf``."""
    top = a.max(axis=1)
    top = np.where(np.isfinite(top), top, 0.0)
    with np.errstate(divide="ignore"):
        return top + np.log(np.exp(a - top[:, None]).sum(axis=1))


@dataclass(frozen=True)
class _Index:
    """Whitened data sorted into spatial leaves, with each leaf's bounding box and log weight."""

    points: np.ndarray  # (n, d), leaf order
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
        return cls(points, log_w, starts, lo, hi, log_leaf_w, tree)

    def scaled(self, s: float) -> _Index:
        """The same index for coordinates multiplied by ``s > 0`` (a bandwidth divided by s)."""
        return dataclasses.replace(
            self, points=self.points * s, lo=self.lo * s, hi=self.hi * s, scale=self.scale * s
        )

    def query_groups(self) -> np.ndarray:
        """Leave-one-out query groups, as boundaries in leaf numbers: runs of whole leaves."""
        starts = _tree_groups(
            self.tree, _QUERY_GROUP, _MAX_GROUP_DIAMETER / self.scale, keep_whole=_DATA_LEAF
        )
        return np.searchsorted(self.starts, starts)


def _block_logsumexp(
    a: np.ndarray,
    b: np.ndarray,
    b_log_w: np.ndarray,
    block: int,
    diagonal: int | None,
    shift: np.ndarray | None,
) -> np.ndarray:
    """``log sum_j exp(log_w_j - |a_r - b_j|^2 / 2)`` per row ``r`` of ``a``.

    When every ``|a_r|`` is small (``a`` and ``b`` are centred on the query leaf), the exponent is
    expanded as ``a.b - |b|^2/2 - |a|^2/2`` and computed by one matrix product, which keeps
    float64 precision; otherwise the differences are formed directly (slower, equally exact).
    ``shift``: per-row values no term exceeds by more than ~700, subtracted inside the product
    (saving a pass for the row maxima), or ``None``. ``diagonal``: column of ``b`` that matches
    row 0 of ``a``; the pairs ``(r, diagonal + r)`` are left out (leave-one-out sums).
    """
    torch = _torch()
    q, d = a.shape
    half_a2 = 0.5 * np.einsum("ij,ij->i", a, a)
    expand = half_a2.max() <= _MAX_EXPANDED_HALF_NORM
    if expand:  # rows [a, 1, -shift] times columns [b, log_w - |b|^2/2, 1]
        a1 = np.ones((q, d + 2))
        a1[:, :d], a1[:, d + 1] = a, 0.0 if shift is None else -half_a2 - shift
        b1 = np.ones((len(b), d + 2))
        b1[:, :d], b1[:, d] = b, b_log_w - 0.5 * np.einsum("ij,ij->i", b, b)
        a_t, b_t = torch.from_numpy(a1), torch.from_numpy(b1)
    else:
        a_t, b_t = torch.from_numpy(a), torch.from_numpy(b)
        log_w_t = torch.from_numpy(b_log_w)
        shift_t = None if shift is None else torch.from_numpy(shift)
    rows = np.arange(q)
    cols = max(1, block // (q if expand else q * d))
    maxima, sums = [], []
    for j in range(0, len(b), cols):
        if expand:
            e = a_t @ b_t[j : j + cols].T
        else:
            e = (a_t[:, None, :] - b_t[None, j : j + cols, :]).square_().sum(-1)
            e = e.mul_(-0.5).add_(log_w_t[j : j + cols])
            if shift_t is not None:
                e -= shift_t[:, None]
        if diagonal is not None:
            hit = (diagonal + rows >= j) & (diagonal + rows < j + e.shape[1])
            e[rows[hit], diagonal + rows[hit] - j] = -math.inf
        if shift is not None:
            m = np.zeros(q)
        else:
            m = e.amax(1).numpy()
            m = np.where(np.isfinite(m), m, 0.0)
            e -= torch.from_numpy(m)[:, None]
        sums.append(e.exp_().sum(1).numpy())
        maxima.append(m)
    if len(sums) == 1:
        lse = maxima[0] + np.log(sums[0])
    else:
        m_all, s_all = np.array(maxima), np.array(sums)
        top = m_all.max(0)
        lse = top + np.log(np.sum(s_all * np.exp(m_all - top), axis=0))
    if shift is not None:
        lse += shift
    return lse - half_a2 if expand and shift is None else lse


def _log_kernel_sums(
    index: _Index, queries: np.ndarray | None, block: int = _DEFAULT_BLOCK
) -> np.ndarray:
    """``log sum_j w_j exp(-|v - u_j|^2 / 2)`` for whitened queries ``v`` (rows).

    With ``queries=None`` the queries are the indexed points themselves, each leaving itself out
    (leave-one-out), and the result follows the index's leaf order.
    """
    loo = queries is None
    sizes = np.diff(index.starts)
    if loo:  # query groups: runs of the index's own leaves
        groups = index.query_groups()
        qorder, qpoints, qstarts = None, index.points, index.starts[groups]
        qlo = np.minimum.reduceat(index.lo, groups[:-1], axis=0)
        qhi = np.maximum.reduceat(index.hi, groups[:-1], axis=0)
    else:
        tree = _tree(queries)
        qorder, qstarts = tree.indices, _tree_groups(tree, _QUERY_GROUP, _MAX_GROUP_DIAMETER)
        qpoints = queries[qorder]
        qlo, qhi = _boxes(qpoints, qstarts)
    out = np.empty(len(qpoints))
    for k in range(len(qstarts) - 1):
        rows = slice(qstarts[k], qstarts[k + 1])
        v = qpoints[rows]
        gap = np.maximum(index.lo - qhi[k], qlo[k] - index.hi)
        np.maximum(gap, 0.0, out=gap)
        upper = index.log_leaf_w - 0.5 * np.einsum("ij,ij->i", gap, gap)  # bound per data leaf
        # Exact terms of near points bound every sum of this query group from below: the group
        # itself (each point without itself) for leave-one-out, else the most promising leaf.
        if loo:
            own: slice | int = slice(groups[k], groups[k + 1])
            near, near_log_w = v, index.log_w[rows]
        else:
            own = int(np.argmax(upper))
            near = index.points[index.starts[own] : index.starts[own + 1]]
            near_log_w = index.log_w[index.starts[own] : index.starts[own + 1]]
        terms = near_log_w - 0.5 * np.sum((v[:, None, :] - near[None, :, :]) ** 2, axis=-1)
        if loo:
            np.fill_diagonal(terms, -math.inf)
        near_sums = _logsumexp_rows(terms)
        lower = float(np.min(near_sums))
        # Drop the leaves whose bounds add up to less than 2^-56 of the smallest sum.
        upper[own] = math.inf
        by_bound = np.argsort(upper)
        cumulative = np.logaddexp.accumulate(upper[by_bound])
        n_drop = int(np.searchsorted(cumulative, lower + _LOG_DELTA, side="right"))
        keep = np.ones(len(sizes), dtype=bool)
        keep[by_bound[:n_drop]] = False
        mask = np.repeat(keep, sizes)
        centre = 0.5 * (qlo[k] + qhi[k])
        diagonal = int(sizes[: groups[k]][keep[: groups[k]]].sum()) if loo else None
        # No term exceeds its leaf's bound, so the near sums can serve as shifts when no bound
        # of another kept leaf lies far above them.
        kept_bounds = upper[by_bound[n_drop:]]
        top_other = kept_bounds[np.isfinite(kept_bounds)].max(initial=-math.inf)
        shift = near_sums if top_other - lower < 700.0 else None
        out[rows] = _block_logsumexp(
            v - centre, index.points[mask] - centre, index.log_w[mask], block, diagonal, shift
        )
    if qorder is None:
        return out
    result = np.empty_like(out)
    result[qorder] = out
    return result


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


@contextlib.contextmanager
def _one_thread(active: bool) -> Iterator[None]:
    """One BLAS and one torch thread while ``active``: the grid's small products and
    exponentials ran 3x slower on two threads than on one (benchmarks/RESULTS.md)."""
    if not active:
        yield
        return
    from threadpoolctl import threadpool_limits

    torch = _torch()
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(1):
            yield
    finally:
        torch.set_num_threads(previous)


def _separable_log_image(
    x: np.ndarray, w: np.ndarray, sd: np.ndarray, xs: np.ndarray, ys: np.ndarray, block: int,
    device: Any = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Log-density image ``(len(ys), len(xs))`` of an axis-aligned 2-D Gaussian mixture.

    The image is ``Ky diag(w) Kx^T`` with ``Kx[a, j] = exp(-(xs_a - x_j1)^2 / (2 sd_1^2))``: one
    matrix product of two small kernel matrices, exact (a sum of positive terms). Cells below
    ``1e-280`` (where kernel values may have underflowed) are flagged in the returned mask, for
    recomputation in log space.
    """
    torch = _torch()
    gx, gy = (torch.from_numpy(v / s).to(device) for v, s in ((xs, sd[0]), (ys, sd[1])))
    zx, zy = (torch.from_numpy(np.ascontiguousarray(x[:, k] / sd[k])).to(device) for k in (0, 1))
    equal = bool(np.all(w == w[0]))  # then weigh once at the end
    weights = torch.from_numpy(w).to(device)
    on_cpu = gx.device.type == "cpu"
    image = (np.zeros((len(ys), len(xs))) if on_cpu
             else torch.zeros((len(ys), len(xs)), dtype=torch.float64, device=device))
    cols = max(1, min(block, 1 << 17) // max(len(xs), len(ys)))  # cache-sized chunks
    for j in range(0, len(x), cols):
        kx = (gx[:, None] - zx[j : j + cols]).square_().mul_(-0.5).exp_()
        ky = (gy[:, None] - zy[j : j + cols]).square_().mul_(-0.5).exp_()
        ky = ky if equal else ky * weights[j : j + cols]
        if on_cpu:  # NumPy's BLAS multiplies these float64 shapes ~1.7x faster than torch's
            image += ky.numpy() @ kx.numpy().T
        else:
            image += ky @ kx.T
    image = (image if on_cpu else image.cpu().numpy()) * (w[0] if equal else 1.0)
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
        chunk_size: largest number of kernel values held at once (query x data block); ``None``
            means ``2**21`` (16 MB of float64). Memory stays bounded for any number of points.
        device: ``None`` (default) evaluates on the CPU with kd-tree pruning, the fastest path
            on a CPU; a torch device (``"cuda"``, ``"cpu"``, ``"auto"``: CUDA when available)
            evaluates every kernel there in dense blocks, for GPUs. Both are exact.

    The work runs on torch's intra-op threads (``torch.set_num_threads``, ``OMP_NUM_THREADS``);
    on a machine busy with other jobs one thread is often the fastest.

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
        h, factor = resolve_bandwidth(self.bandwidth, x, w)
        self._device = None if self.device is None else resolve_device(self.device)
        chol = _cholesky_of_gram(h)
        self.bandwidth_ = h
        self.covariance_ = h @ h.T
        self.factor_ = factor
        self.data_, self.weights_ = x, w
        self.n_features_in_ = x.shape[1]
        self._chol, self._mean = chol, w @ x
        d = x.shape[1]
        self._log_norm = 0.5 * d * _LOG_2PI + float(np.sum(np.log(np.diag(chol))))
        self._index: _Index | None = None  # built on first pointwise evaluation
        self._whitened: np.ndarray | None = None  # whitened data, for the device path
        return self

    def _whiten(self, x: np.ndarray) -> np.ndarray:
        u = solve_triangular(self._chol, (x - self._mean).T, lower=True).T
        return np.ascontiguousarray(u)

    @property
    def _block(self) -> int:
        return _DEFAULT_BLOCK if self.chunk_size is None else int(self.chunk_size)

    def score_samples(self, X: ArrayLike) -> np.ndarray:
        """Log-density at each row of ``X`` ``(m, d)``, shape ``(m,)``; finite however far a point
        lies from the data (the sum is taken in log space)."""
        check_is_fitted(self)
        x = as_points(X, name="X", dim=self.n_features_in_)
        if self._device is not None:
            if self._whitened is None:
                self._whitened = self._whiten(self.data_)
            sums = _dense_log_kernel_sums(self._whitened, np.log(self.weights_), self._whiten(x),
                                          self._block, self._device)
            return sums - self._log_norm
        if self._index is None:
            self._index = _Index.build(self._whiten(self.data_), np.log(self.weights_))
        return _log_kernel_sums(self._index, self._whiten(x), self._block) - self._log_norm

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
            with _one_thread(self._device is None):
                log_image, small = _separable_log_image(
                    self.data_, self.weights_, sd, grid.xs, grid.ys, self._block, self._device
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
