"""Summation engines of the KDE: ``log sum_j w_j exp(-|v - u_j|^2 / 2)`` for whitened queries
``v`` and whitened data ``u_j`` with normalised weights ``w_j``, exact to float64 rounding.

- **tree** (:func:`tree_log_kernel_sums`, the CPU default): data and queries are sorted into small
  spatial groups (kd-tree leaves, :class:`Index`). Each query sums its nearest data exactly and
  skips a data leaf only when bounds prove that all skipped leaves together hold less than
  ``2**-53`` of the result (the unit roundoff of float64); the kept terms are summed by compiled
  loops, centred on the group so the expansion ``|a - b|^2 = |a|^2 + |b|^2 - 2 a.b`` keeps full
  precision, groups in parallel (:mod:`densitylab.kde.kernels`, on the threads of the call's
  budget).
  Queries far beyond the data are summed from exact differences instead
  (:func:`direct_log_kernel_sums`).
- **dense** (:func:`dense_log_kernel_sums`, with a ``device``, typically a GPU): every kernel in
  bounded blocks of exact pairwise distances, combined by log-sum-exp. No pruning, so on a CPU the
  tree is faster; on a GPU raw throughput wins.
- **grid** (:func:`grid_log_image`): on a regular 2-D grid with an axis-aligned kernel the density
  image is one product of two small kernel matrices, computed in torch.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from densitylab import compiling, threads
from densitylab.kde import kernels

__all__ = [
    "Index", "dense_log_kernel_sums", "direct_log_kernel_sums", "grid_log_image",
    "one_blas_thread", "tree_log_kernel_sums",
]

_LOG_2PI = math.log(2.0 * math.pi)

# pruned kernel mass, relative to the sum it is left out of: the unit roundoff of float64, less
# than the rounding error of the sum of the kept terms itself
_LOG_DELTA = -53.0 * math.log(2.0)
_TREE_LEAF = 16  # kd-tree leaf size, for data and queries
_DATA_LEAF = 64  # most data points per leaf of the pruning bounds (tighter costs more per leaf)
_QUERY_GROUP = 64  # most query points sharing one set of kept leaves
_GROUPS_PER_TASK = 8  # fewer groups than this per thread: not worth a second thread
_MAX_GROUP_DIAMETER = 8.0  # widest query group, in kernel widths; smaller groups prune better
_TINY = 1e-280  # grid cells below this are recomputed in log space


def _torch() -> Any:
    """torch, imported on first evaluation: the grid's kernel matrices (its vectorised ``exp`` is
    ~2.5x NumPy's on CPU) and the ``device`` path."""
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
class Index:
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
    def build(cls, u: np.ndarray, log_w: np.ndarray) -> Index:
        tree = _tree(u)
        starts = _tree_groups(tree, _DATA_LEAF)
        points, log_w = u[tree.indices], log_w[tree.indices]
        lo, hi = _boxes(points, starts)
        log_leaf_w = np.logaddexp.reduceat(log_w, starts[:-1])
        return cls(points, np.ascontiguousarray(points.T), log_w, starts, lo, hi, log_leaf_w, tree)

    def scaled(self, s: float) -> Index:
        """The same index for coordinates multiplied by ``s > 0`` (a bandwidth divided by s)."""
        return dataclasses.replace(
            self, points=self.points * s, points_t=self.points_t * s, lo=self.lo * s,
            hi=self.hi * s, scale=self.scale * s,
        )


def tree_log_kernel_sums(index: Index, queries: np.ndarray | None) -> np.ndarray:
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
    workers = threads.workers(work=n_groups, grain=_GROUPS_PER_TASK)
    compiling.announce("kde")
    if workers == 1:
        kernels.log_kernel_sums(*args, np.array([0, n_groups]), out)
    else:  # a few tasks per thread balance uneven groups
        bounds = np.linspace(0, n_groups, 4 * workers + 1).astype(np.int64)
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(lambda k: kernels.log_kernel_sums(*args, bounds[k : k + 2], out),
                          range(len(bounds) - 1)))
    if qorder is None:
        return out
    result = np.empty_like(out)
    result[qorder] = out
    return result


def direct_log_kernel_sums(points: np.ndarray, log_w: np.ndarray, queries: np.ndarray
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


def dense_log_kernel_sums(
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
def one_blas_thread() -> Iterator[None]:
    """BLAS on one thread. The KDE's linear algebra is tiny (``d x d`` factors, ``n x d``
    solves), and an OpenBLAS pool woken by it keeps spinning for a while, taking a core from
    the kernel threads (sums at two threads were 1.3x slower after a fit)."""
    with _thread_pools().limit(limits=1, user_api="blas"):
        yield


def _separable_log_image(
    x: np.ndarray, w: np.ndarray, sd: np.ndarray, xs: np.ndarray, ys: np.ndarray, block: int,
    device: Any = None, workers: int = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """Log-density image ``(len(ys), len(xs))`` of an axis-aligned 2-D Gaussian mixture.

    The image is ``Ky diag(w) Kx^T`` with ``Kx[a, j] = exp(-(xs_a - x_j1)^2 / (2 sd_1^2))``: one
    matrix product of two small kernel matrices, exact (a sum of positive terms). Cells below
    ``1e-280`` (where kernel values may have underflowed) are flagged in the returned mask, for
    recomputation in log space. On the CPU, ``workers`` Python threads each sum a share of the
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
    workers = min(workers, len(chunks)) if on_cpu else 1
    if workers > 1:
        with ThreadPoolExecutor(workers) as pool:
            image = sum(pool.map(partial_image, (chunks[k::workers] for k in range(workers))))
    else:
        image = partial_image(chunks)
    image = image * (w[0] if equal else 1.0)
    small = image < _TINY
    with np.errstate(divide="ignore"):
        return np.log(image) - _LOG_2PI - math.log(sd[0] * sd[1]), small


def grid_log_image(
    x: np.ndarray, w: np.ndarray, sd: np.ndarray, xs: np.ndarray, ys: np.ndarray, block: int,
    device: Any = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Log-density image ``(len(ys), len(xs))`` of the axis-aligned 2-D Gaussian mixture with
    points ``x``, weights ``w`` and per-axis kernel widths ``sd``, and the mask of its cells to
    recompute pointwise (see ``_separable_log_image``). On the CPU (``device=None``) the data are
    shared among the Python threads of the call's budget, each on one torch and one BLAS thread:
    the grid's small products and exponentials ran 3x slower on two such threads than on one
    (benchmarks/RESULTS.md)."""
    if device is not None:
        return _separable_log_image(x, w, sd, xs, ys, block, device)
    workers = threads.workers()
    with threads.budget(1):
        return _separable_log_image(x, w, sd, xs, ys, block, device, workers)
