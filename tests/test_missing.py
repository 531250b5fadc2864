"""Missing cells: the KDE and the mixture score a row by the exact marginal of its observed
cells; weights equal repeated rows."""

from __future__ import annotations

import numpy as np
import pytest

import densitylab as dl
from densitylab.auto import GaussianMixtureBIC


@pytest.fixture(scope="module")
def data() -> np.ndarray:
    rng = np.random.default_rng(0)
    z = rng.normal(size=(300, 3))
    return np.column_stack([z[:, 0], z[:, 0] * 0.8 + 0.5 * z[:, 1], np.abs(z[:, 2]) + 0.1])


def test_the_kde_marginal_equals_the_kde_fitted_on_the_observed_columns(data):
    kde = dl.KDE(bandwidth="scott").fit(data)
    rows = data[:6].copy()
    rows[[0, 1], 1] = np.nan
    rows[[2], 0] = rows[[2], 2] = np.nan
    scores = kde.score_samples(rows)
    on_02 = dl.KDE(bandwidth=np.linalg.cholesky(kde.covariance_[np.ix_([0, 2], [0, 2])]))
    np.testing.assert_allclose(scores[:2], on_02.fit(data[:, [0, 2]]).score_samples(
        rows[:2][:, [0, 2]]), rtol=1e-10)
    on_1 = dl.KDE(bandwidth=np.sqrt(kde.covariance_[1, 1])).fit(data[:, [1]])
    assert scores[2] == pytest.approx(on_1.score_samples(rows[[2]][:, [1]])[0], rel=1e-10)
    np.testing.assert_allclose(scores[3:], kde.score_samples(data[3:6]), rtol=1e-12)


def test_a_bounded_kde_marginal_integrates_the_joint(data):
    kde = dl.KDE(bandwidth="scott", bounds=[None, None, (0.0, None)]).fit(data)
    row = np.array([[0.3, np.nan, 1.0]])
    ys = np.linspace(-8, 8, 4001)
    joint = np.exp(kde.score_samples(np.column_stack([np.full_like(ys, 0.3), ys,
                                                      np.ones_like(ys)])))
    assert np.exp(kde.score_samples(row)[0]) == pytest.approx(np.trapezoid(joint, ys), rel=1e-6)
    assert kde.score_samples([[np.nan, np.nan, np.nan]])[0] == 0.0


def test_the_mixture_marginal_integrates_the_joint(data):
    mixture = GaussianMixtureBIC(max_components=3).fit(data)
    row = np.array([[0.3, np.nan, 1.0]])
    ys = np.linspace(-10, 10, 4001)
    joint = np.exp(mixture.score_samples(np.column_stack([np.full_like(ys, 0.3), ys,
                                                          np.ones_like(ys)])))
    assert np.exp(mixture.score_samples(row)[0]) == pytest.approx(np.trapezoid(joint, ys),
                                                                  rel=1e-6)
    np.testing.assert_allclose(mixture.score_samples(data[:5]),
                               mixture.mixture_.score_samples(data[:5]))


def test_infinite_cells_are_still_refused(data):
    kde = dl.KDE(bandwidth=0.5).fit(data)
    with pytest.raises(ValueError, match="row 1, column 2"):
        kde.score_samples([[0.0, 0.0, 1.0], [0.0, 0.0, np.inf]])


def test_integer_weights_equal_repeated_rows(data):
    """For a given bandwidth; the rules take weights as scipy does (Kish's effective sample
    size), not as counts of repeated rows."""
    weights = np.random.default_rng(1).integers(0, 4, len(data))
    repeated = np.repeat(data, weights, axis=0)
    query = data[:20] + 0.1
    for bandwidth in (0.4, (0.3, 0.2, 0.1), [[0.4, 0, 0], [0.1, 0.3, 0], [0, 0, 0.2]]):
        weighted = dl.KDE(bandwidth=bandwidth).fit(data, sample_weight=weights)
        plain = dl.KDE(bandwidth=bandwidth).fit(repeated)
        np.testing.assert_allclose(weighted.score_samples(query), plain.score_samples(query),
                                   rtol=1e-10, err_msg=str(bandwidth))


def test_auto_density_marginalises_through_its_column_maps(data):
    auto = dl.AutoDensity(candidates=["kde"]).fit(data)  # column 2 is bounded below by 0
    assert auto.column_types_[2].lower == 0.0
    ys = np.linspace(-8, 8, 4001)
    for row, grid in ((np.array([[0.3, np.nan, 1.0]]), (0.3, ys, 1.0)),
                      (np.array([[0.3, 0.5, np.nan]]), (0.3, 0.5, np.exp(ys)))):
        joint = np.exp(auto.score_samples(np.column_stack(np.broadcast_arrays(*grid))))
        axis = ys if np.isnan(row[0, 1]) else np.exp(ys)
        assert np.exp(auto.score_samples(row)[0]) == pytest.approx(np.trapezoid(joint, axis),
                                                                   rel=1e-4)


@pytest.mark.slow  # a few seconds: fits several models
def test_auto_density_weights_equal_repeated_rows_for_the_fitted_model(data):
    weights = np.random.default_rng(2).integers(1, 4, len(data))
    options = dict(candidates=["gaussian-mixture"], column_types="continuous")
    weighted = dl.AutoDensity(**options).fit(data, sample_weight=weights)
    repeated = dl.AutoDensity(**options).fit(np.repeat(data, weights, axis=0))
    np.testing.assert_allclose(weighted.mean_, repeated.mean_)
    np.testing.assert_allclose(weighted.scale_, repeated.scale_)
    np.testing.assert_allclose(weighted.score_samples(data[:10]),
                               repeated.score_samples(data[:10]), rtol=1e-6)


def test_auto_density_weights_reach_the_kde_and_its_folds(data):
    weights = np.random.default_rng(3).random(len(data)) + 0.5
    auto = dl.AutoDensity(candidates=["kde", "gaussian-mixture"],
                          column_types="continuous").fit(data, sample_weight=weights)
    notes = dict(zip(auto.cv_results_["candidate"], auto.cv_results_["note"], strict=True))
    assert "whole-number weights" in notes["gaussian-mixture"] and notes["kde"] == ""
    assert auto.best_name_ == "kde"
    np.testing.assert_allclose(auto.best_estimator_.weights_, weights / weights.sum())
    with pytest.raises(ValueError, match="(?i)weight"):
        dl.AutoDensity(candidates=["kde"]).fit(data, sample_weight=np.zeros(len(data)))
