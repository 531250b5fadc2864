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
        dl.FlowDensity(model="spam").fit(np.zeros((10, 2)))
    with pytest.raises(ValueError, match="use nsf or maf"):
        dl.FlowDensity(model="realnvp").fit(np.random.default_rng(0).normal(size=(10, 1)))


def test_recommended_model_takes_its_architecture_and_recipe(tmp_path):
    x = dl.datasets.get("moons").sample(600, seed=0)
    est = dl.FlowDensity(model="recommended", epochs=2, random_state=0).fit(x)
    config = est.flow_.config
    assert config["builder"] == "nsf"
    assert {k: config[k] for k in ("n_layers", "bins", "bound", "fourier")} == {
        k: v for k, v in dl.flows.RECOMMENDED_MODEL.items() if k != "hidden"
    }
    assert tuple(config["hidden"]) == dl.flows.RECOMMENDED_MODEL["hidden"]
    assert len(est.history_.train_nll) == 2
    settings = dl.FlowDensity(model="recommended")._settings(10_000)
    assert settings["epochs"] == dl.flows.recommended_epochs(10_000) == 28
    assert (settings["batch_size"], settings["lr"], settings["schedule"]) == (256, 3e-3, "cosine")
    # a value set by the user wins over the recipe, and the budget follows the batch size
    settings = dl.FlowDensity(model="recommended", batch_size=128, n_layers=2)._settings(10_000)
    assert settings["n_layers"] == 2 and settings["epochs"] == 15
    dl.save(est, tmp_path / "m")
    np.testing.assert_allclose(dl.load(tmp_path / "m").score_samples(x[:20]),
                               est.score_samples(x[:20]), rtol=1e-12)


def test_coursework_defaults_and_schedules():
    settings = dl.FlowDensity(model="realnvp")._settings(1500)
    assert settings == {"builder": "realnvp", "n_layers": 4, "hidden": (32, 32), "epochs": 1000,
                        "batch_size": 64, "lr": 1e-3, "schedule": "constant", "standardize": True}
    x = np.random.default_rng(0).normal(size=(100, 2))
    dl.FlowDensity(hidden=(4,), epochs=1, schedule="constant").fit(x)
    with pytest.raises(ValueError, match="unknown schedule 'linear'"):
        dl.FlowDensity(schedule="linear").fit(x)


def test_weighted_nll_equals_the_repeated_rows_loss_on_a_batch():
    import torch

    from densitylab.training.objectives import NLL, OBJECTIVES

    flow = dl.flows.realnvp(dim=2, n_layers=2, seed=0).double()
    x = torch.as_tensor(np.random.default_rng(0).normal(size=(1, 4, 2)))
    weights = torch.tensor([2.0, 0.0, 1.0, 1.0])  # sum 4 = the batch size
    rows = torch.cat([x, weights.reshape(1, 4, 1)], dim=2)
    weighted = OBJECTIVES["weighted-nll"]().point_losses(flow, rows)
    repeated = NLL().point_losses(flow, torch.repeat_interleave(x, weights.long(), dim=1))
    torch.testing.assert_close(weighted.mean(dim=1), repeated.mean(dim=1))
    torch.testing.assert_close(weighted.sum(dim=1) / weights.sum(), repeated.mean(dim=1))


def test_flow_weights_go_through_the_driver():
    rng = np.random.default_rng(1)
    x = np.vstack([rng.normal(size=(150, 2)), rng.normal(size=(150, 2)) + 8.0])
    options = dict(model="realnvp", n_layers=2, hidden=(16,), epochs=3, batch_size=32)
    plain = dl.FlowDensity(**options).fit(x)
    equal = dl.FlowDensity(**options).fit(x, sample_weight=np.full(len(x), 3.0))
    # equal weights are rescaled to 1: the weighted NLL is the NLL, the same run
    np.testing.assert_allclose(equal.score_samples(x), plain.score_samples(x), rtol=1e-6)
    weights = np.r_[np.ones(150), np.zeros(150)]  # the second cluster weighs nothing
    left = dl.FlowDensity(**{**options, "epochs": 30}).fit(x, sample_weight=weights)
    assert left.score_samples(x[:150]).mean() > left.score_samples(x[150:]).mean() + 5
    with pytest.raises(ValueError, match="(?i)negative"):
        dl.FlowDensity(**options).fit(x, sample_weight=-np.ones(len(x)))
    with pytest.raises(ValueError, match="positive sum"):
        dl.fit(dl.flows.realnvp(dim=2, n_layers=1, seed=0), x, epochs=1,
               sample_weight=np.zeros(len(x)))
