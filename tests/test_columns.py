"""Column types: detected, declared, and honoured by AutoDensity (mass, bounds, lattices)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import densitylab as dl
from densitylab.columns import ColumnType, column_types, detect_column_types

FAST = ["kde", "gaussian-mixture"]


@pytest.fixture(scope="module")
def homes() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    n = 300
    return pd.DataFrame({"price": rng.gamma(2.0, 10.0, n), "rooms": rng.poisson(2.0, n) * 1.0,
                         "garden": rng.integers(0, 2, n) * 1.0, "share": rng.beta(0.7, 0.7, n),
                         "size": rng.normal(size=n) + 0.3 * rng.poisson(2.0, n)})


def test_types_are_detected(homes):
    kinds = [(t.kind, t.lower, t.upper) for t in detect_column_types(homes.to_numpy())]
    assert kinds == [("continuous", 0.0, None), ("integer", 0.0, None), ("binary", 0.0, 1.0),
                     ("continuous", 0.0, 1.0), ("continuous", None, None)]
    rounded = np.round(np.random.default_rng(1).normal(size=(200, 1)), 1)
    (t,) = detect_column_types(rounded)
    assert t.kind == "rounded" and t.step == pytest.approx(0.1)


def test_declarations_override_detection_and_are_checked(homes):
    x, names = homes.to_numpy(), list(homes.columns)
    types = column_types(x, {"size": "continuous", "price": "bounded(0,)", 1: "integer(1)"},
                         names)
    assert types[0] == ColumnType("continuous", 0.0, None)
    assert types[4] == ColumnType("continuous")  # declared continuous: unbounded too
    assert column_types(x, {"garden": "binary"}, names)[2] == ColumnType("binary", 0, 1, 1, 0)
    for bad, message in [({"size": "positive"}, "outside its bounds"),
                         ({"rooms": "binary"}, "declared binary holds"),
                         ({"share": f"bounded({float(x[:, 3].min())!r},1)"}, "on its bound"),
                         ({"price": "integer"}, "off that lattice"),
                         ({"nope": "integer"}, "names a column 'nope'"),
                         ({"price": "spam"}, "unknown column type"),
                         ({9: "binary"}, "not a column index")]:
        with pytest.raises(ValueError, match=message):
            column_types(x, bad, names)


@pytest.fixture(scope="module")
def auto(homes) -> dl.AutoDensity:
    return dl.AutoDensity(candidates=["kde"]).fit(homes)


def test_auto_density_samples_keep_lattices_bounds_and_levels(auto):
    draws = auto.sample(5000, random_state=0)
    assert draws[:, 0].min() > 0 and (draws[:, 3].min() > 0) and draws[:, 3].max() < 1
    assert np.all(draws[:, 1] == np.round(draws[:, 1])) and draws[:, 1].min() >= 0
    assert set(np.unique(draws[:, 2])) == {0.0, 1.0}
    described = [t.describe() for t in auto.column_types_]
    assert described[1].endswith("log-probability") and described[0].endswith("log-density")


def test_a_discrete_column_is_scored_by_its_probability_mass():
    counts = np.random.default_rng(2).poisson(3.0, size=(400, 1)) * 1.0
    auto = dl.AutoDensity(candidates=FAST).fit(counts)
    support = np.arange(0, 60, dtype=float)[:, None]
    mass = np.exp(auto.score_samples(support))
    assert mass.sum() == pytest.approx(1.0, abs=0.03)  # the midpoint rule of each cell's mass
    # off the lattice: the mass of the cell it falls in; below the bound: none
    scores = auto.score_samples([[2.2], [-1.0]])
    assert scores[0] == pytest.approx(auto.score_samples([[2.0]])[0], rel=1e-12)
    assert scores[1] == -np.inf


def test_the_types_survive_save_and_load(auto, homes, tmp_path):
    dl.save(auto, tmp_path / "auto")
    back = dl.load(tmp_path / "auto")
    assert back.column_types_ == auto.column_types_
    np.testing.assert_allclose(back.score_samples(homes), auto.score_samples(homes))
    np.testing.assert_array_equal(back.sample(50, random_state=1), auto.sample(50, random_state=1))


@pytest.mark.slow  # a few seconds: fits several models
def test_missing_values_are_named_without_scikit_learns_advice(homes):
    holes = homes.copy()
    holes.iloc[7, 3] = np.nan
    with pytest.raises(ValueError, match=r"missing values \(NaN\); the first is row 7, "
                                         r"column 3 \('share'\)") as info:
        dl.AutoDensity(candidates=FAST).fit(holes)
    assert "HistGradientBoosting" not in str(info.value)
    flow = dl.FlowDensity(model="realnvp", n_layers=2, hidden=(8,), epochs=1)
    with pytest.raises(ValueError, match=r"row 7, column 3 \('share'\)"):
        flow.fit(holes)
    flow.set_params(missing="drop").fit(holes)
    assert flow.n_dropped_ == 1 and flow.n_features_in_ == 5
    auto = dl.AutoDensity(candidates=["gaussian-mixture"], missing="drop").fit(holes)
    assert auto.n_dropped_ == 1
    np.testing.assert_allclose(auto.score_samples(homes.drop(index=7)), dl.AutoDensity(
        candidates=["gaussian-mixture"]).fit(homes.drop(index=7)).score_samples(
        homes.drop(index=7)))


def test_a_flow_on_bounded_columns_puts_no_mass_outside():
    rng = np.random.default_rng(7)
    x = np.column_stack([rng.exponential(size=300), rng.beta(2.0, 2.0, size=300)])
    auto = dl.AutoDensity(candidates=["flow"], column_types={1: "bounded(0,1)"}).fit(x)
    draws = auto.sample(5000, random_state=0)
    assert draws[:, 0].min() > 0 and draws[:, 1].min() > 0 and draws[:, 1].max() < 1
    assert auto.score_samples([[-0.1, 0.5], [1.0, 1.2]]).tolist() == [-np.inf, -np.inf]


def test_an_integer_column_without_an_upper_bound_may_sample_beyond_the_data_maximum():
    """Counts have no upper bound unless declared: the largest count seen is not the largest
    possible (a Poisson's tail), so samples may exceed it; a declared bound is kept."""
    counts = np.random.default_rng(0).poisson(2.0, size=(300, 1)).astype(float)
    auto = dl.AutoDensity(candidates=["kde"]).fit(counts)
    assert auto.column_types_[0].upper is None and auto.column_types_[0].lower == 0.0
    drawn = auto.sample(20000, random_state=0)
    assert drawn.min() >= 0 and np.all(drawn == np.round(drawn)) and drawn.max() > counts.max()
    top = float(counts.max())
    bounded = dl.AutoDensity(candidates=["kde"], column_types={0: f"bounded(0,{top})"}).fit(
        counts)
    drawn = bounded.sample(20000, random_state=0)
    assert drawn.max() == top and drawn.min() == 0
    mass = np.exp(bounded.score_samples(np.arange(top + 1)[:, None])).sum()
    assert mass == pytest.approx(1.0, abs=0.02)  # the lattice's masses, midpoint rule
