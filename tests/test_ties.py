"""Duplicated and near-duplicated rows never leak across a split, and the KDE's width never
falls below the data's resolution."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest

import densitylab as dl
from densitylab._ties import duplicate_count, grouped_kfold, grouped_permutation, tie_groups
from densitylab.auto import equal_folds
from densitylab.kde import leave_one_out_log_likelihood
from densitylab.kde.bandwidth import decimal_steps, resolution_floor

ENTROPY_2D = math.log(2 * math.pi * math.e)  # of the standard normal in 2-D


def normal(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, 2))


def copies_of(x: np.ndarray, kind: str) -> np.ndarray:
    jitter = 1e-9 * np.random.default_rng(1).normal(size=x.shape) if kind == "near" else 0.0
    return np.vstack([x, x + jitter])


def test_copies_are_grouped_exactly_and_near():
    x = normal(50)
    groups = tie_groups(np.vstack([x, x, x[:5] + 1e-10]))
    assert duplicate_count(groups) == 55
    np.testing.assert_array_equal(groups[:50], groups[50:100])
    np.testing.assert_array_equal(groups[:5], groups[100:])
    assert duplicate_count(tie_groups(x)) == 0


def test_every_split_keeps_the_copies_of_a_row_together():
    groups = tie_groups(np.vstack([normal(40)] * 3))
    order = grouped_permutation(groups, seed=2)
    assert sorted(order) == list(range(120))
    ordered = groups[order]
    assert np.count_nonzero(ordered[1:] != ordered[:-1]) == 39  # each group is one run
    folds = grouped_kfold(groups, 3, seed=2)
    assert sorted(np.concatenate(folds)) == list(range(120))
    for test in folds:
        assert not set(groups[test]) & set(np.delete(groups, test))
    for train, test in equal_folds(120, 3, seed=2, groups=groups):
        assert not set(groups[train]) & set(groups[test])


def test_leave_one_out_leaves_out_every_copy():
    x, h = normal(80), 0.3
    alone = leave_one_out_log_likelihood(x, h)
    assert leave_one_out_log_likelihood(np.vstack([x, x]), h) == pytest.approx(alone, rel=1e-12)
    assert leave_one_out_log_likelihood(copies_of(x, "near"), h) == pytest.approx(alone,
                                                                                  rel=1e-6)


@pytest.mark.parametrize("kind", ["exact", "near"])
def test_kde_cv_on_duplicated_rows_matches_the_deduplicated_fit(kind):
    """Before: -1.7e8 (exact copies) and -1.5e10 (1e-9 jitter) nats per held-out point."""
    x, fresh = normal(300), normal(2000, seed=5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        alone = dl.KDE(bandwidth="cv").fit(x).score_samples(fresh).mean()
        doubled = dl.KDE(bandwidth="cv").fit(copies_of(x, kind)).score_samples(fresh).mean()
    assert abs(doubled - alone) < 0.1


def test_auto_cross_validation_cannot_beat_the_entropy_by_leakage():
    """Before: the KDE's CV score on doubled rows was -0.93 against an entropy of 2.84."""
    x = np.vstack([normal(150)] * 2)
    auto = dl.AutoDensity(candidates=["kde", "gaussian-mixture"], random_state=0).fit(x)
    assert auto.n_duplicates_ == 150
    assert max(auto.cv_results_["mean_log_likelihood"]) < -ENTROPY_2D + 0.15
    assert -auto.score_samples(normal(2000, seed=7)).mean() > ENTROPY_2D - 0.05


def test_kde_width_never_below_the_data_resolution():
    rng = np.random.default_rng(3)
    steps = np.array([0.5, 0.01])
    x = np.round(rng.normal(size=(400, 2)) * [1.0, 0.3] / steps) * steps
    np.testing.assert_allclose(decimal_steps(x), [0.1, 0.01])  # 0.5 is written with 1 decimal
    floor = resolution_floor(x)  # the spread of the rounding error, step / sqrt(12)
    np.testing.assert_allclose(floor * math.sqrt(12), [0.5, 0.01])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        kde = dl.KDE(bandwidth="cv").fit(np.vstack([x, x[:100]]))
    assert np.all(np.sqrt(np.diag(kde.covariance_)) >= floor * (1 - 1e-9))
    fresh = np.round(rng.normal(size=(2000, 2)) * [1.0, 0.3] / steps) * steps
    assert np.all(np.isfinite(kde.score_samples(fresh)))


@pytest.mark.slow
def test_the_cli_reports_copies_and_keeps_them_out_of_the_test_set(tmp_path):
    from test_cli import invoke

    x = np.vstack([normal(60)] * 2)
    np.savetxt(tmp_path / "twice.csv", x, delimiter=",")
    code, output = invoke("train", str(tmp_path / "twice.csv"), "--model", "auto", "--out",
                          str(tmp_path / "run"), "--quiet")
    assert code == 0, output
    assert "60 of the 120 rows repeat another row" in output
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["test_nll"] > ENTROPY_2D - 0.3  # with leakage: a KDE's test NLL far below


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["plain", "rounded", "doubled", "counts"])
def test_kde_cv_at_least_matches_scikit_learns_grid_searched_kde(kind):
    """Issue #34's bar: the held-out likelihood of KDE(bandwidth="cv") is not below a
    5-fold grid search of scikit-learn's KernelDensity on standardised data (before: doubled
    rows gave -1.7e8 where scikit-learn's search gave -2443, both absurd)."""
    from sklearn.model_selection import GridSearchCV
    from sklearn.neighbors import KernelDensity

    rng = np.random.default_rng(0)
    law = dl.datasets.get("moons")
    x, fresh = law.sample(400, seed=0), law.sample(4000, seed=1)
    if kind == "rounded":
        x, fresh = np.round(x / 0.05) * 0.05, np.round(fresh / 0.05) * 0.05
    elif kind == "doubled":
        x = np.vstack([x, x])
    elif kind == "counts":
        counts = np.round(rng.gamma(2.0, 3.0, size=(2400, 3)))
        x, fresh = counts[:400], counts[400:]
    mean, sd = x.mean(axis=0), x.std(axis=0)
    search = GridSearchCV(KernelDensity(), {"bandwidth": np.logspace(-3, 1, 33)}, cv=5)
    search.fit((x - mean) / sd)
    theirs = (search.best_estimator_.score_samples((fresh - mean) / sd) - np.log(sd).sum()).mean()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        ours = dl.KDE(bandwidth="cv").fit(x).score_samples(fresh).mean()
    # within 0.02 nats: on the counts ours picks per-axis widths (1.5-2.1) where scikit-learn's
    # isotropic 1.75 does 0.008 better on fresh points, a sampling difference, not a failure
    assert ours >= theirs - 0.02


def test_training_validates_on_rows_whose_copies_it_did_not_train_on():
    x = np.vstack([normal(100)] * 2)
    result = dl.fit(dl.flows.realnvp(2, 1, hidden=(4,), seed=0), x, epochs=1, verbose=False)
    groups = tie_groups(x)
    assert len(result.val_indices) == 20  # the usual tenth
    assert not set(groups[result.train_indices]) & set(groups[result.val_indices])
