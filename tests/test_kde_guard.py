"""The defensive component of KDE(bandwidth="cv") (densitylab.guard): it bounds the
log-density of points off the data's thin directions, costs at most -log(1 - eps) anywhere, and
leaves the bandwidth choice and the density's exact properties (mass 1, marginals) as they were."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import norm

import densitylab as dl
from densitylab.guard import GUARD_WEIGHT, WIDEN
from densitylab.kde.bandwidth import select_bandwidth


def correlated(n: int = 300, seed: int = 0) -> np.ndarray:
    """Two columns equal up to noise of 1e-3 standard deviations: a thin direction."""
    rng = np.random.default_rng(seed)
    t = rng.normal(size=n)
    return np.c_[t, t + 1e-3 * rng.normal(size=n)]


def test_a_point_off_a_thin_direction_keeps_a_bounded_log_density():
    x = correlated()
    guarded = dl.KDE(bandwidth="cv").fit(x)
    plain = dl.KDE(bandwidth=guarded.bandwidth_).fit(x)  # the same kernels, no guard
    off = np.array([[0.0, 1.0], [1.0, -0.5]])  # one standard deviation off the line
    assert np.all(plain.score_samples(off) < -1e4)  # the absurd value, before
    scores = guarded.score_samples(off)
    # the floor: log eps + the independent Gaussian: the mean, twice the sd with the kernel
    sd = np.sqrt(WIDEN**2 * x.var(axis=0) + np.diag(guarded.covariance_))
    floor = math.log(GUARD_WEIGHT) + norm.logpdf(off, x.mean(axis=0), sd).sum(axis=1)
    np.testing.assert_allclose(scores, floor, atol=1e-9)  # the kernels add nothing there
    assert np.all(scores > -10)


def test_the_guard_leaves_the_choice_on_well_behaved_data():
    rng = np.random.default_rng(1)
    x, fresh = rng.normal(size=(400, 3)), rng.normal(size=(2000, 3))
    guarded = dl.KDE(bandwidth="cv").fit(x)
    h = select_bandwidth(x, np.full(400, 1 / 400))[0]
    np.testing.assert_allclose(guarded.bandwidth_, h)  # the bandwidth is chosen as before
    plain = dl.KDE(bandwidth=guarded.bandwidth_).fit(x)
    assert guarded.guard_weight_ == GUARD_WEIGHT and plain.guard_weight_ == 0.0
    ours, theirs = guarded.score_samples(fresh), plain.score_samples(fresh)
    assert np.all(ours >= theirs + math.log1p(-GUARD_WEIGHT) - 1e-12)  # never costs more
    assert abs(ours.mean() - theirs.mean()) < -math.log1p(-GUARD_WEIGHT)


def test_the_guarded_density_integrates_to_one_and_marginalises_exactly():
    x = correlated(60, seed=2) * [1.0, 3.0] + [0.0, 5.0]
    kde = dl.KDE(bandwidth="cv").fit(x)
    assert kde.guard_weight_ > 0
    # the marginal of the first column, by quadrature over the second, equals the score of a
    # row whose second cell is missing (the exact marginal of kernels and guard alike); the
    # kernels sit on the line b = 3 a + 5 within a few 1e-3, the guard spreads wide
    for a in (-1.0, 0.3):
        line = 3 * a + 5
        b = np.unique(np.r_[np.linspace(-60, 70, 4001), np.linspace(line - 0.1, line + 0.1, 8001)])
        density = np.exp(kde.score_samples(np.c_[np.full(len(b), a), b]))
        missing = kde.score_samples(np.array([[a, np.nan]]))[0]
        assert math.log(np.trapezoid(density, b)) == pytest.approx(missing, abs=1e-5)
    a = np.linspace(-40, 40, 8001)
    marginal = np.exp(kde.score_samples(np.c_[a, np.full(len(a), np.nan)]))
    assert np.trapezoid(marginal, a) == pytest.approx(1.0, abs=1e-6)


def test_samples_draw_the_guard_at_its_weight():
    x = correlated()
    kde = dl.KDE(bandwidth="cv", guard=0.2).fit(x)
    draws = kde.sample(20000, random_state=0)
    off_line = np.abs(draws[:, 1] - draws[:, 0]) > 0.05  # the kernels never reach this far
    sd = np.sqrt(WIDEN**2 * x.var(axis=0) + np.diag(kde.covariance_))  # the guard's axes
    expected = 0.2 * 2 * norm.sf(0.05 / np.hypot(*sd))
    assert off_line.mean() == pytest.approx(expected, abs=0.01)


def test_guard_is_validated_and_saved(tmp_path):
    x = correlated(80)
    for bad in (1.0, -0.1, "wide", True):
        with pytest.raises(ValueError, match="guard must be None or a number in"):
            dl.KDE(bandwidth="cv", guard=bad).fit(x)
    kde = dl.KDE(bandwidth="cv").fit(x)
    dl.save(kde, tmp_path / "kde")
    loaded = dl.load(tmp_path / "kde")
    assert loaded.guard_weight_ == GUARD_WEIGHT
    q = np.array([[0.0, 1.0], [0.5, 0.5]])
    np.testing.assert_allclose(loaded.score_samples(q), kde.score_samples(q), rtol=1e-12)


@pytest.mark.slow
def test_no_absurd_held_out_value_on_breast_cancer():
    """Issue #34's bar on the table that broke it: on scikit-learn's breast-cancer data (30
    nearly collinear columns, standardised, 3 shuffled folds) no held-out row's log-density
    falls more than 50 nats below the worst of scikit-learn's BIC mixture (before the guard:
    -583 against -412 on the third fold, in standardised units)."""
    from sklearn.datasets import load_breast_cancer
    from sklearn.model_selection import KFold

    from densitylab.auto import GaussianMixtureBIC

    x = load_breast_cancer().data
    for k, (train, test) in enumerate(KFold(3, shuffle=True, random_state=0).split(x)):
        mean, sd = x[train].mean(axis=0), x[train].std(axis=0)
        z_train, z_test = (x[train] - mean) / sd, (x[test] - mean) / sd
        ours = dl.KDE(bandwidth="cv").fit(z_train).score_samples(z_test)
        mixture = GaussianMixtureBIC(random_state=k).fit(z_train).score_samples(z_test)
        assert ours.min() >= mixture.min() - 50, k


def test_the_separable_grid_carries_the_guard():
    from densitylab.grids import make_grid

    x = correlated(200) * [1.0, 0.5]
    kde = dl.KDE(bandwidth=(0.3, 0.2), guard=0.3).fit(x)  # axis-aligned: the separable path
    grid = make_grid(((-6, 6), (-4, 4)), 31)
    expected = kde.score_samples(grid.points).reshape(grid.shape)
    np.testing.assert_allclose(kde.evaluate_grid(grid, log=True), expected, rtol=1e-9)
    plain = dl.KDE(bandwidth=(0.3, 0.2)).fit(x).evaluate_grid(grid, log=True)
    gain = kde.evaluate_grid(grid, log=True) - plain
    assert gain.min() >= math.log(0.7) - 1e-9 and gain.max() > 10  # off the line it counts
