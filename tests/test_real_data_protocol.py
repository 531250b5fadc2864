"""The real-data protocol (``densitylab.experiments.real_data.held_out_log_likelihood``):
discrete columns are spread over their lattice cells before any method sees them."""

from __future__ import annotations

import numpy as np
from sklearn.model_selection import KFold

from densitylab.experiments.real_data import held_out_log_likelihood


def _recording() -> tuple[list[np.ndarray], dict]:
    seen: list[np.ndarray] = []

    def method(z: np.ndarray, seed: int):
        seen.append(z.copy())
        return lambda q: np.zeros(len(q))

    return seen, {"recorder": method}


def test_discrete_columns_are_spread_within_their_cells_and_continuous_ones_kept():
    rng = np.random.default_rng(0)
    x = np.column_stack([np.round(rng.normal(5.0, 0.5, 90), 1), rng.normal(size=90)])
    spread, methods = _recording()
    held_out_log_likelihood(x, methods, folds=3, seed=0)
    raw, methods = _recording()
    held_out_log_likelihood(x, methods, folds=3, seed=0, raw=True)
    splits = KFold(3, shuffle=True, random_state=0).split(x)
    for (train, _), z, z_raw in zip(splits, spread, raw, strict=True):
        recorded = x[train, 0]
        assert len(np.unique(z_raw[:, 0])) < len(train)  # the recorded values repeat
        assert len(np.unique(z[:, 0])) == len(train)  # spread: no two alike
        np.testing.assert_array_equal(z[:, 1], z_raw[:, 1])  # the continuous column as it was
        # each spread value stays inside its recorded value's cell: the cells are disjoint,
        # so sorting by the spread values keeps the recorded ones in order
        assert np.all(np.diff(recorded[np.argsort(z[:, 0])]) >= 0)
