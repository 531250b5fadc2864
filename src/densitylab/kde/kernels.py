"""Compiled (numba) kernel sums for the exact KDE, pruned by provable bounds.

``log_kernel_sums`` computes ``log sum_j w_j exp(-|v_i - u_j|^2 / 2)`` for whitened queries
``v_i`` and data ``u_j`` sorted into spatial leaves (see ``densitylab.kde.engines``). Each query
group (a small, compact set of queries) bounds every data leaf's contribution from above by its box
distance and sums its nearest leaf exactly; it skips the leaves whose bounds add up to less
than half the allowed fraction (``delta``) of the smallest of those exact sums. Each query then
sums its nearest kept leaves and skips the farthest ones whose bounds at that query add up to
less than the other half of ``delta`` times its sum so far: at most ``delta`` of the result is
left out. The kept terms are summed in one fused loop (distance, exponential, sum) with an
exponential that LLVM vectorises.
The kernel releases the GIL: Python threads share the groups (numba's own threading layer
would reset the OpenMP thread count torch reads).
"""

from __future__ import annotations

import math

import numba
import numpy as np

_jit = numba.njit(cache=True, fastmath={"contract"})  # contract: fused multiply-adds only
# reassoc lets LLVM split a sum into vector lanes; used only where the loops are plain sums
_jit_sums = numba.njit(cache=True, fastmath={"contract", "reassoc"})

_LOG2E = 1.4426950408889634
_LN2_HI = 6.93147180369123816490e-01  # ln 2 split in two (Cody & Waite): k * _LN2_HI is exact
_LN2_LO = 1.90821492927058770002e-10
_ROUND = 6755399441055744.0  # 1.5 * 2**52: adding it rounds to an integer kept in the low bits
# exp(r) = 1 + r + r^2 (c2 + c3 r + ... + c11 r^9) on |r| <= ln2 / 2: c2..c11 of the degree-11
# polynomial interpolating exp at the 12 Chebyshev points of that interval, solved in 60-digit
# arithmetic (mpmath) and rounded (its own coefficients of 1 and r are exactly 1). Interpolation
# error 4e-18; evaluated in float64 as written below, within 0.6 ulp of exp(r).
_EXP_TAIL = (
    0.5000000000000019, 0.1666666666666668, 0.0416666666664881, 0.008333333333319601,
    0.0013888888952314775, 0.00019841269890047113, 2.4801485482328494e-05,
    2.755724091857897e-06, 2.763263963904103e-07, 2.5110037605963777e-08,
)
_PREFIX_LEAVES = 8  # nearest kept leaves summed before each query's own cut
_MAX_SHIFTED = 600.0  # no term may exceed its shift by more: sums of < 10^40 terms stay finite
_SMALLEST_TRUSTED = 1e-280  # shifted sums below this are recomputed with the exact maximum
# Rounding in the expanded exponent grows like |a|^2 eps; past |a|^2 / 2 = 32 (queries more than
# 8 kernel widths from their group's centre, which only a lone sparse group has) the query takes
# the exact two-pass path, with differences formed directly.
_MAX_EXPANDED_HALF_NORM = 32.0


@_jit
def _exp(x):
    """``exp(x)`` for ``x <= 709`` to about 1 ulp, 0 below -708; branch-free, so loops over it
    vectorise. ``x = k ln2 + r`` with ``|r| <= ln2 / 2``; ``exp(r)`` by a degree-11 polynomial
    (``_EXP_TAIL``, Estrin's scheme for the tail); ``2**k`` added into the exponent bits."""
    c = _EXP_TAIL
    y = max(x, -708.0)
    t = y * _LOG2E + _ROUND
    k = t - _ROUND
    r = (y - k * _LN2_HI) - k * _LN2_LO
    r2 = r * r
    r4 = r2 * r2
    tail = (c[0] + c[1] * r + (c[2] + c[3] * r) * r2
            + (c[4] + c[5] * r + (c[6] + c[7] * r) * r2) * r4
            + (c[8] + c[9] * r) * (r4 * r4))
    p = 1.0 + (r + r2 * tail)
    bits = np.float64(p).view(np.int64) + (np.float64(t).view(np.int64) << 52)
    return np.int64(bits).view(np.float64) if x >= -708.0 else 0.0


@_jit_sums
def _leaf_sum(points_t, log_w, start, end, v, shift, skip, buf):
    """``sum_j exp(log_w_j - |v - u_j|^2 / 2 - shift)`` over data ``start:end``, without the
    point ``skip`` (an index, or -1)."""
    m = end - start
    for j in range(m):
        buf[j] = log_w[start + j] - shift
    for k in range(points_t.shape[0]):
        vk = v[k]
        row = points_t[k]
        for j in range(m):
            diff = vk - row[start + j]
            buf[j] -= 0.5 * diff * diff
    if start <= skip < end:
        buf[skip - start] = -np.inf
    total = 0.0
    for j in range(m):
        total += _exp(buf[j])
    return total


@_jit_sums
def _expanded_sum(kept_t, kept_c, start, end, a, offset, buf):
    """``sum_j exp(c_j + a.u_j - offset)`` over gathered points ``start:end``: with ``c_j =
    log_w_j - |u_j|^2 / 2`` and ``offset = shift + |a|^2 / 2`` this is ``_leaf_sum``'s sum with
    the squared distance expanded, fewer operations per term and float64-accurate while ``a``
    and ``u`` are centred near the group (the caller checks ``|a|``)."""
    c = kept_c[start:end]  # 1-D slices: LLVM vectorises their loops best
    total = 0.0
    if kept_t.shape[0] == 2:  # two dimensions, the common case: one fused pass
        a0, a1 = a[0], a[1]
        row0, row1 = kept_t[0, start:end], kept_t[1, start:end]
        for j in range(c.shape[0]):
            total += _exp(c[j] + a0 * row0[j] + a1 * row1[j] - offset)
        return total
    part = buf[: c.shape[0]]
    for j in range(c.shape[0]):
        part[j] = c[j] - offset
    for k in range(kept_t.shape[0]):
        ak = a[k]
        row = kept_t[k, start:end]
        for j in range(c.shape[0]):
            part[j] += ak * row[j]
    for j in range(c.shape[0]):
        total += _exp(part[j])
    return total


@_jit
def _leaf_max(points_t, log_w, start, end, v, skip):
    """Largest term ``log_w_j - |v - u_j|^2 / 2`` over data ``start:end`` without ``skip``."""
    top = -np.inf
    for j in range(start, end):
        if j == skip:
            continue
        e = log_w[j]
        for k in range(points_t.shape[0]):
            diff = v[k] - points_t[k, j]
            e -= 0.5 * diff * diff
        top = max(top, e)
    return top


@_jit
def _exact_log_sum(points_t, log_w, starts, leaves, v, skip, buf):
    """Log of the sum over ``leaves`` by the safe two-pass log-sum-exp (maximum first)."""
    top = -np.inf
    for leaf in leaves:
        top = max(top, _leaf_max(points_t, log_w, starts[leaf], starts[leaf + 1], v, skip))
    if top == -np.inf:
        return -np.inf
    total = 0.0
    for leaf in leaves:
        total += _leaf_sum(points_t, log_w, starts[leaf], starts[leaf + 1], v, top, skip, buf)
    return top + math.log(total)


@numba.njit(cache=True, fastmath={"contract"}, nogil=True)
def log_kernel_sums(points_t, log_w, starts, lo, hi, log_leaf_w, queries, q_starts, skips,
                    own_leaves, log_delta, groups, out):
    """Log kernel sums into ``out`` for the queries of groups ``groups[0]:groups[1]``;
    ``queries`` ``(m, d)`` are sorted into groups ``q_starts``. Releases the GIL, so threads
    can share the groups.

    ``points_t`` ``(d, n)``: data in leaf order, coordinates as rows; ``starts``: leaf
    boundaries; ``lo``, ``hi`` ``(leaves, d)``: leaf boxes; ``log_leaf_w``: log total weight per
    leaf; ``skips[i]``: data index query ``i`` leaves out (leave-one-out) or -1, always inside
    the group's ``own_leaves[g]`` (-1: the leaf of largest bound); ``log_delta``: log of the
    pruned mass allowed, relative to each result (half spent by the group, half by the query).
    """
    for g in range(groups[0], groups[1]):
        first, last = q_starts[g], q_starts[g + 1]
        bound = _leaf_bounds(lo, hi, log_leaf_w, queries[first:last])
        near = own_leaves[g] if own_leaves[g] >= 0 else np.argmax(bound)
        buf = np.empty(points_t.shape[1])
        near_sums = np.empty(last - first)
        near_only = np.array([near])
        for i in range(first, last):
            near_sums[i - first] = _exact_log_sum(points_t, log_w, starts, near_only,
                                                  queries[i], skips[i], buf)
        # half the pruning budget for the whole group, half for each query on its own
        half_delta = log_delta - math.log(2.0)
        kept = _kept_leaves(bound, near, near_sums.min() + half_delta)[::-1]  # nearest first
        top = bound[kept].max() if kept.shape[0] > 0 else -np.inf
        centre = queries[first:last].sum(axis=0) / (last - first)
        kept_t, kept_c, offsets = _gather(points_t, log_w, starts, kept, centre)
        everything = np.append(kept, near)
        a = np.empty_like(centre)
        for i in range(first, last):
            near_sum = near_sums[i - first]
            shift = near_sum if top - near_sum <= _MAX_SHIFTED else top - _MAX_SHIFTED
            for k in range(a.shape[0]):
                a[k] = queries[i, k] - centre[k]
            half_a2 = 0.5 * np.dot(a, a)
            offset = shift + half_a2
            total = 0.0
            if half_a2 <= _MAX_EXPANDED_HALF_NORM:
                # the nearest few kept leaves first: their exact sum is the lower bound against
                # which the farthest kept leaves are cut for this query
                prefix = offsets[min(_PREFIX_LEAVES, kept.shape[0])]
                total = math.exp(near_sum - shift)
                total += _expanded_sum(kept_t, kept_c, 0, prefix, a, offset, buf)
                m = _needed_points(lo, hi, log_leaf_w, kept, offsets, queries[i],
                                   shift + math.log(total) + half_delta)
                if m > prefix:
                    total += _expanded_sum(kept_t, kept_c, prefix, m, a, offset, buf)
            if total >= _SMALLEST_TRUSTED:
                out[i] = shift + math.log(total)
            else:  # far from the group's centre, or bounds far above the terms: two passes
                out[i] = _exact_log_sum(points_t, log_w, starts, everything, queries[i],
                                        skips[i], buf)


@_jit
def _gap2(lo, hi, leaf, q_lo, q_hi):
    """Squared distance between ``leaf``'s box and the box ``[q_lo, q_hi]`` (a point when the
    two are equal)."""
    gap2 = 0.0
    for k in range(lo.shape[1]):
        gap = max(0.0, lo[leaf, k] - q_hi[k], q_lo[k] - hi[leaf, k])
        gap2 += gap * gap
    return gap2


@_jit
def _leaf_bounds(lo, hi, log_leaf_w, group):
    """Per data leaf, the log of the largest contribution it can make to a sum at any point of
    ``group``'s bounding box: its weight times the kernel at the boxes' distance."""
    n_leaves, d = lo.shape
    q_lo, q_hi = group[0].copy(), group[0].copy()
    for i in range(group.shape[0]):
        for k in range(d):
            q_lo[k] = min(q_lo[k], group[i, k])
            q_hi[k] = max(q_hi[k], group[i, k])
    bound = np.empty(n_leaves)
    for leaf in range(n_leaves):
        bound[leaf] = log_leaf_w[leaf] - 0.5 * _gap2(lo, hi, leaf, q_lo, q_hi)
    return bound


@_jit
def _kept_leaves(bound, near, log_budget):
    """Leaves other than ``near`` that must be summed: all but those of smallest bound whose
    bounds add up to at most ``exp(log_budget)``."""
    order = np.argsort(bound)
    cumulative = -np.inf
    n_drop = 0
    for leaf in order:
        if leaf == near:
            continue
        cumulative = np.logaddexp(cumulative, bound[leaf])
        if not cumulative <= log_budget:
            break
        n_drop += 1
    kept = order[n_drop:]
    return kept[kept != near]


@_jit
def _gather(points_t, log_w, starts, leaves, centre):
    """The points of ``leaves`` minus ``centre`` and ``log_w - |u - centre|^2 / 2``, contiguous
    (one long loop per query), and where each leaf starts there."""
    offsets = np.zeros(leaves.shape[0] + 1, np.int64)
    for r in range(leaves.shape[0]):
        offsets[r + 1] = offsets[r] + starts[leaves[r] + 1] - starts[leaves[r]]
    size = offsets[-1]
    d = points_t.shape[0]
    kept_t = np.empty((d, size))
    kept_c = np.empty(size)
    for r in range(leaves.shape[0]):  # explicit loops: no temporary arrays
        a, at = starts[leaves[r]], offsets[r]
        for j in range(offsets[r + 1] - at):
            kept_c[at + j] = log_w[a + j]
        for k in range(d):
            for j in range(offsets[r + 1] - at):
                u = points_t[k, a + j] - centre[k]
                kept_t[k, at + j] = u
                kept_c[at + j] -= 0.5 * u * u
    return kept_t, kept_c, offsets


@_jit
def _needed_points(lo, hi, log_leaf_w, leaves, offsets, v, log_budget):
    """How many leading points of the gathered ``leaves`` (nearest first) the query ``v`` needs:
    trailing leaves are left out while their bounds at ``v`` add up to at most
    ``exp(log_budget)``."""
    total = 0.0
    for r in range(leaves.shape[0] - 1, -1, -1):
        leaf = leaves[r]
        bound = log_leaf_w[leaf] - 0.5 * _gap2(lo, hi, leaf, v, v)
        # capped: past 709 _exp is undefined, and one leaf above the budget settles it
        total += _exp(min(bound - log_budget, 1.0))
        if not total <= 1.0:
            return offsets[r + 1]
    return 0
