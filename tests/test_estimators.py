"""FlowDensity honours the scikit-learn estimator contract."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import GridSearchCV
from sklearn.utils.estimator_checks import parametrize_with_checks

import densitylab as dl


# Every check applies and passes; a 1-feature X gets the ValueError sklearn's check expects.
@parametrize_with_checks([dl.FlowDensity(n_layers=1, hidden=(4,), epochs=2, batch_size=16)])
def test_scikit_learn_estimator_checks(estimator, check):
    check(estimator)


def test_fit_score_sample():
    x = np.random.default_rng(0).normal(size=(300, 2)) * [2.0, 0.5]
    est = dl.FlowDensity(n_layers=2, epochs=30, random_state=1).fit(x)
    scores = est.score_samples(x[:10])
    assert scores.shape == (10,) and scores.dtype == np.float64
    assert est.score(x[:10]) == pytest.approx(scores.sum())
    samples = est.sample(50, random_state=3)
    assert samples.shape == (50, 2)
    np.testing.assert_array_equal(samples, est.sample(50, random_state=3))
    assert np.std(samples[:, 0]) > np.std(samples[:, 1])  # learned the anisotropy
    assert clone(est).get_params() == est.get_params()


def test_grid_search_tunes_n_layers():
    x = np.random.default_rng(0).normal(size=(240, 2))
    search = GridSearchCV(
        dl.FlowDensity(hidden=(8,), epochs=3), {"n_layers": [1, 2]}, cv=2
    ).fit(x)
    assert search.best_params_["n_layers"] in (1, 2)
    assert np.isfinite(search.cv_results_["mean_test_score"]).all()


def test_errors():
    with pytest.raises(NotFittedError):
        dl.FlowDensity().score_samples(np.zeros((2, 2)))
    with pytest.raises(ValueError, match="unknown model"):
        dl.FlowDensity(model="maf").fit(np.zeros((10, 2)))
    with pytest.raises(ValueError, match="at least 2 features"):
        dl.FlowDensity().fit(np.zeros((10, 1)))
