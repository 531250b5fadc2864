"""Boundary-corrected densities: the support mapped onto R^d, the Jacobian counted."""

from __future__ import annotations

import numpy as np
import pytest

import densitylab as dl
from densitylab.support import Support


def _nodes_01(n: int) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.linspace(-14.0, 14.0, n)))  # dense near 0 and 1


def _nodes_0inf(n: int) -> np.ndarray:
    return np.exp(np.linspace(-14.0, 4.5, n))  # dense near 0, up to 90


def test_the_map_round_trips_and_its_log_jacobian_matches_finite_differences():
    support = Support([(0.0, None), (None, 2.0), (-1.0, 3.0), None], dim=4)
    x = np.array([[0.3, 1.5, 0.2, -7.0], [5.0, -3.0, 2.9, 1.0]])
    y, log_jacobian, inside = support.to_free(x)
    assert inside.all()
    np.testing.assert_allclose(support.to_data(y), x, rtol=1e-12)
    eps = 1e-6
    for row in range(2):
        slopes = [(support.to_free(x[[row]] + eps * np.eye(4)[j])[0][0, j] - y[row, j]) / eps
                  for j in range(4)]
        assert log_jacobian[row] == pytest.approx(np.sum(np.log(np.abs(slopes))), rel=1e-5)


@pytest.mark.parametrize("bounds, make, nodes", [
    ([(0.0, None)], lambda r: r.exponential(size=(300, 1)), _nodes_0inf),
    ([(0.0, 1.0)], lambda r: r.beta(2.0, 5.0, size=(300, 1)), _nodes_01),
])
def test_a_bounded_kde_integrates_to_one_on_its_support_in_one_dimension(bounds, make, nodes):
    x = make(np.random.default_rng(0))
    kde = dl.KDE(bandwidth="scott", bounds=bounds).fit(x)
    v = nodes(20000)
    mass = np.trapezoid(np.exp(kde.score_samples(v[:, None])), v)
    assert mass == pytest.approx(1.0, abs=1e-4)
    plain = dl.KDE(bandwidth="scott").fit(x)  # loses the mass it spreads beyond the bound
    assert np.trapezoid(np.exp(plain.score_samples(v[:, None])), v) < mass - 0.005
    assert kde.score_samples([[-0.5]])[0] == -np.inf


def test_a_bounded_kde_integrates_to_one_on_its_support_in_two_dimensions():
    rng = np.random.default_rng(1)
    u = rng.beta(2.0, 5.0, size=400)
    x = np.column_stack([u, rng.exponential(size=400) * (0.5 + u)])  # correlated columns
    kde = dl.KDE(bandwidth="scott", bounds=[(0.0, 1.0), (0.0, None)]).fit(x)
    a, b = _nodes_01(300), _nodes_0inf(300)
    grid = np.stack(np.meshgrid(a, b, indexing="ij"), axis=-1).reshape(-1, 2)
    density = np.exp(kde.score_samples(grid)).reshape(len(a), len(b))
    mass = np.trapezoid(np.trapezoid(density, b, axis=1), a)
    assert mass == pytest.approx(1.0, abs=2e-3)


@pytest.mark.parametrize("bounds, make", [
    ([(0.0, None)], lambda r, n: r.exponential(size=(n, 1))),
    ([(0.0, 1.0)], lambda r, n: r.beta(2.0, 5.0, size=(n, 1))),
    ([(0.0, None), (0.0, 1.0)],
     lambda r, n: np.column_stack([r.exponential(size=n), r.beta(0.8, 3.0, size=n)])),
])
def test_a_bounded_kde_beats_the_plain_one_held_out(bounds, make):
    rng = np.random.default_rng(2)
    train, test = make(rng, 500), make(rng, 5000)
    for bandwidth in ("scott", "cv"):
        bounded = dl.KDE(bandwidth=bandwidth, bounds=bounds).fit(train).score_samples(test)
        plain = dl.KDE(bandwidth=bandwidth).fit(train).score_samples(test)
        assert bounded.mean() > plain.mean() + 0.005


def test_samples_stay_in_the_support_and_the_model_saves(tmp_path):
    rng = np.random.default_rng(3)
    x = np.column_stack([rng.exponential(size=200), rng.beta(2.0, 2.0, size=200) * 4 - 1])
    kde = dl.KDE(bandwidth=0.3, bounds=[(0.0, None), (-1.0, 3.0)]).fit(x)
    draws = kde.sample(20000, random_state=0)
    assert draws[:, 0].min() >= 0 and draws[:, 1].min() >= -1 and draws[:, 1].max() <= 3
    dl.save(kde, tmp_path / "kde")
    back = dl.load(tmp_path / "kde")
    np.testing.assert_allclose(back.score_samples(x), kde.score_samples(x), rtol=1e-9)


def test_data_on_a_bound_and_bad_bounds_are_clear_errors():
    x = np.array([[0.0], [1.0], [2.0]])
    with pytest.raises(ValueError, match="1 value.* of column 0 lie on or beyond its bound 0"):
        dl.KDE(bounds=[(0.0, None)]).fit(x)
    for bad in ([(1.0, 0.0)], [(0.0, None), None], "positive", [("a", None)]):
        with pytest.raises(ValueError, match="bounds"):
            dl.KDE(bounds=bad).fit(x + 5)
