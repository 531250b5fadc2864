"""Data preparation for every run: checked arrays, the train/validation split, context rows."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from densitylab._validation import as_points


@dataclass
class TrainingData:
    """Training and validation points of ``M`` models, ``(M, n, D)`` float64 each, and the
    indices of each model's split into the data it was given."""

    train: np.ndarray
    val: np.ndarray
    splits: list[tuple[np.ndarray, np.ndarray]]


def split(n: int, val_fraction: float, seed: int,
          groups: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Random train/validation index split; both parts get at least one point. With
    ``groups`` that hold copies (:func:`densitylab._ties.tie_groups`), every copy of a row
    lands on one side (a copy in both would validate on training data), the validation part
    filled to the same size from groups in seeded random order."""
    n_val = min(max(1, round(n * val_fraction)), n - 1)
    if groups is not None and groups.max() + 1 < n:
        sizes = np.bincount(groups)
        chosen, left = [], n_val
        for g in np.random.default_rng(seed).permutation(len(sizes)):
            if sizes[g] <= left:
                chosen.append(g)
                left -= sizes[g]
            if left == 0:
                val = np.flatnonzero(np.isin(groups, chosen))
                return np.setdiff1d(np.arange(n), val), val
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def prepare(
    x, x_val, *, n_models: int, dim: int, val_fraction: float, seeds: list[int]
) -> TrainingData:
    """Check ``x`` (one ``(n, dim)`` set shared by the models, or one per model), split each
    by its seed unless ``x_val`` is given, and stack the parts."""
    data = _per_model(x, n_models, dim, "x")
    if x_val is None:
        from densitylab._ties import tie_groups

        splits = [split(len(d), val_fraction, s, tie_groups(d))
                  for d, s in zip(data, seeds, strict=True)]
        train = [d[t] for d, (t, _) in zip(data, splits, strict=True)]
        val = [d[v] for d, (_, v) in zip(data, splits, strict=True)]
    else:
        splits = [(np.arange(len(d)), np.arange(0)) for d in data]
        train, val = data, _per_model(x_val, n_models, dim, "x_val", min_rows=1)
    if len({len(t) for t in train}) != 1 or len({len(v) for v in val}) != 1:
        raise ValueError("models trained together need data sets of equal size; "
                         "fit them separately")
    return TrainingData(np.stack(train), np.stack(val), splits)


def with_context(context_features: int, dim: int, x, context):
    """``x``, or the rows ``[x | context]`` a conditional model trains on (per data set when
    ``x`` is a sequence); a clear error where the context is missing or does not fit."""
    if x is None or not context_features:
        if context is not None:
            raise ValueError("context was given but this flow is not conditional (build it "
                             "with context=C)")
        return x
    if context is None:
        raise ValueError(f"this flow is conditional: pass context= with "
                         f"{context_features} column(s), one row per point")
    if isinstance(x, list | tuple):
        return [with_context(context_features, dim, part, c)
                for part, c in zip(x, context, strict=True)]
    points = as_points(x, name="x", dim=dim)
    given = as_points(context, name="context", dim=context_features)
    if len(points) != len(given):
        raise ValueError(f"context has {len(given)} rows for {len(points)} points")
    return np.hstack([points, given])


def with_weights(x, weights, dim: int):
    """Rows ``x`` (one set ``(n, dim)`` or a sequence of them) with their weights as a last
    column, rescaled to mean 1 per set (``None``: weight 1; one vector is shared by every set
    of its length); a clear error for weights that are not one finite non-negative number per
    row of positive sum."""
    if x is None:
        return None
    if isinstance(x, list | tuple):
        shared = not (isinstance(weights, list | tuple) and len(weights) > 0
                      and not np.isscalar(weights[0]))
        if not shared and len(weights) != len(x):
            raise ValueError(f"sample_weight lists {len(weights)} weight vectors for {len(x)} "
                             "data sets")
        return [with_weights(part, weights if shared else w, dim)
                for part, w in zip(x, [weights] * len(x) if shared else weights, strict=True)]
    points = as_points(x, name="x", dim=dim)
    if weights is None:
        return np.hstack([points, np.ones((len(points), 1))])
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (len(points),) or not np.all(np.isfinite(w)) or np.any(w < 0) or \
            not w.sum() > 0:
        raise ValueError(f"sample_weight must hold one finite non-negative weight per row "
                         f"({len(points)}), of positive sum")
    return np.hstack([points, (w / w.mean())[:, None]])


def seeds_of(seed, n_models: int) -> list[int]:
    """One seed per model from one seed or a sequence of them."""
    seeds = [seed] * n_models if isinstance(seed, int | np.integer) else list(seed)
    if len(seeds) != n_models:
        raise ValueError(f"got {len(seeds)} seeds for {n_models} models")
    for s in seeds:
        if isinstance(s, bool) or not isinstance(s, int | np.integer) or s < 0:
            raise ValueError(f"seed must be a non-negative integer, got {s!r}")
    return [int(s) for s in seeds]


def _per_model(x: ArrayLike, n_models: int, dim: int, name: str, min_rows: int = 2):
    """One float64 ``(n, dim)`` array per model from a shared array or a sequence of arrays."""
    if isinstance(x, list | tuple):
        if len(x) != n_models:
            raise ValueError(f"got {len(x)} data sets for {n_models} models")
        return [as_points(d, name=f"{name}[{i}]", dim=dim, min_rows=min_rows)
                for i, d in enumerate(x)]
    shared = as_points(x, name=name, dim=dim, min_rows=min_rows)
    return [shared] * n_models
