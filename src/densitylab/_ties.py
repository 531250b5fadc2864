"""Duplicated and near-duplicated rows: found once, kept together wherever data are split.

A table often holds the same row more than once (a repeated record, a merge done twice) or
copies differing only in the last digits. A copy on both sides of a split leaks: a kernel or a
flow placed on the training copy scores the held-out copy as if it had seen it, so
cross-validation favours ever narrower models and a test NLL can fall below the data's entropy.
Every split densitylab makes (test sets, cross-validation folds, leave-one-out) therefore keeps
all copies of a row on one side.
"""

from __future__ import annotations

import numpy as np

NEAR = 1e-6
"""Rows closer than this, in every column, measured in that column's standard deviation, are
copies of one another (exact duplicates are at distance 0)."""


def tie_groups(x: np.ndarray, near: float = NEAR) -> np.ndarray:
    """A group label per row of ``x`` ``(n, d)``: rows within ``near`` standard deviations of
    each other in every column (chains of them) share a label; labels are ``0..groups - 1``.

    Example:
        >>> tie_groups(np.array([[0.0, 1.0], [2.0, 3.0], [0.0, 1.0 + 1e-12], [5.0, 0.0]]))
        array([0, 1, 0, 2])
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components
    from scipy.spatial import cKDTree

    x = np.asarray(x, dtype=np.float64)
    n = len(x)
    if n < 2:
        return np.zeros(n, dtype=np.int64)
    scale = x.std(axis=0)
    scale[~(scale > 0)] = 1.0
    z = (x - x.mean(axis=0)) / scale
    pairs = cKDTree(z).query_pairs(near, p=np.inf, output_type="ndarray")
    if len(pairs) == 0:
        return np.arange(n, dtype=np.int64)
    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    _, first = np.unique(labels, return_index=True)  # number the groups by first appearance
    order = np.empty(len(first), dtype=np.int64)
    order[np.argsort(np.argsort(first))] = np.arange(len(first))
    relabel = np.empty(labels.max() + 1, dtype=np.int64)
    relabel[np.unique(labels)] = order
    return relabel[labels]


def duplicate_count(groups: np.ndarray) -> int:
    """How many rows repeat an earlier one (``n`` minus the number of groups)."""
    return int(len(groups) - (groups.max() + 1 if len(groups) else 0))


def grouped_permutation(groups: np.ndarray, seed: int) -> np.ndarray:
    """A seeded permutation of the rows in which the copies of a row are adjacent (groups in
    random order): cutting it anywhere between groups keeps every group on one side."""
    rng = np.random.default_rng(seed)
    group_order = rng.permutation(groups.max() + 1)
    rank = np.empty_like(group_order)
    rank[group_order] = np.arange(len(group_order))
    return np.lexsort((rng.permutation(len(groups)), rank[groups]))


def grouped_kfold(groups: np.ndarray, k: int, seed: int) -> list[np.ndarray]:
    """The test rows of ``k`` folds with every group in one fold: groups in seeded random
    order, each given to the fold with the fewest rows so far (largest groups first)."""
    rng = np.random.default_rng(seed)
    sizes = np.bincount(groups)
    shuffled = rng.permutation(len(sizes))
    order = shuffled[np.argsort(-sizes[shuffled], kind="stable")]
    fold_of = np.empty(len(sizes), dtype=np.int64)
    filled = np.zeros(k, dtype=np.int64)
    for g in order:
        fold = int(np.argmin(filled))
        fold_of[g] = fold
        filled[fold] += sizes[g]
    return [np.flatnonzero(fold_of[groups] == fold) for fold in range(k)]
