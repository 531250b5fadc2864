"""AutoDensity, the BIC mixture, the kernel-shape search and rounded-column handling: real
components throughout, small generated data."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
from sklearn.utils.estimator_checks import check_estimator
from typer.testing import CliRunner

import densitylab as dl
from densitylab._rounding import dequantise, rounding_steps
from densitylab.auto import CANDIDATES, DEFAULT_CANDIDATES, GaussianMixtureBIC, equal_folds
from densitylab.cli import app
from densitylab.flows.recipes import tabular_budget
from densitylab.kde import leave_one_out_log_likelihood
from densitylab.kde.bandwidth import KERNEL_SHAPES, select_bandwidth


def gaussian(n: int, seed: int = 0) -> np.ndarray:
    mix = np.array([[1.0, 0.0, 0.0], [0.6, 0.8, 0.0], [0.2, -0.3, 0.5]])
    return np.random.default_rng(seed).normal(size=(n, 3)) @ mix.T * [1.0, 20.0, 0.1] + 7.0


def ring(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    angle = rng.uniform(0, 2 * np.pi, n)
    radius = 3.0 + 0.1 * rng.standard_normal(n)
    return np.c_[radius * np.cos(angle), radius * np.sin(angle)]


# --------------------------------------------------------------------------------------------
# AutoDensity
# --------------------------------------------------------------------------------------------


def banana(n: int, seed: int = 0) -> np.ndarray:
    """A curved law: x2 = x1^2 + small noise given x1, what one affine autoregressive layer
    models exactly (a conditional mean that the network learns, a constant width)."""
    rng = np.random.default_rng(seed)
    a = rng.standard_normal(n)
    return np.c_[a, a**2 + 0.05 * rng.standard_normal(n), rng.standard_normal(n)]


@pytest.mark.slow
def test_gaussian_data_get_one_gaussian_and_the_choice_is_reproducible():
    x = gaussian(240)
    auto = dl.AutoDensity(random_state=3).fit(x)
    table = auto.cv_results_
    assert table["candidate"] == list(DEFAULT_CANDIDATES)
    assert sorted(table["rank"]) == list(range(1, len(DEFAULT_CANDIDATES) + 1))
    best = table["candidate"][table["rank"].index(1)]
    assert best == auto.best_name_
    if auto.best_name_ == "gaussian-mixture":
        assert auto.best_estimator_.mixture_.n_components == 1
    else:  # any other winner must be a Gaussian in all but noise
        gmm = table["mean_log_likelihood"][table["candidate"].index("gaussian-mixture")]
        assert table["mean_log_likelihood"][table["rank"].index(1)] - gmm < 0.05
    again = dl.AutoDensity(random_state=3).fit(x)
    assert again.best_name_ == auto.best_name_
    np.testing.assert_array_equal(again.cv_results_["mean_log_likelihood"],
                                  table["mean_log_likelihood"])
    np.testing.assert_array_equal(again.score_samples(x[:20]), auto.score_samples(x[:20]))


@pytest.mark.slow
@pytest.mark.parametrize("n, k", [(30, 3), (31, 3), (101, 5)])
def test_equal_folds_test_every_point_once_on_training_sets_of_one_size(n, k):
    folds = equal_folds(n, k, seed=4)
    assert len(folds) == k
    assert sorted(np.concatenate([test for _, test in folds]).tolist()) == list(range(n))
    assert len({len(train) for train, _ in folds}) == 1
    assert len(folds[0][0]) == n - math.ceil(n / k)
    for train, test in folds:
        assert not set(train) & set(test) and len(set(train)) == len(train)


def test_flow_folds_trained_together_score_as_each_fold_alone():
    """AutoDensity's flow candidates fit their folds in one batched run (fit_together): each
    fold's model is the one a fit on that fold alone gives."""
    x = dl.datasets.get("moons").sample(150, seed=3)
    folds = equal_folds(len(x), 3, seed=0)
    trains = [x[train] for train, _ in folds]
    estimator = dl.FlowDensity(epochs=6, patience=1, random_state=2)
    together = estimator.fit_together(trains)
    assert not hasattr(estimator, "flow_")  # the copies are fitted, not the template
    for fitted, train, (_, test) in zip(together, trains, folds, strict=True):
        alone = dl.FlowDensity(epochs=6, patience=1, random_state=2).fit(train)
        assert fitted.best_epoch_ == alone.best_epoch_
        np.testing.assert_allclose(fitted.score_samples(x[test]), alone.score_samples(x[test]),
                                   rtol=1e-6)
    with pytest.raises(ValueError, match="same shape"):
        estimator.fit_together([x[:50], x[:60]])


def test_progress_bar_names_each_candidate_and_its_score(capsys):
    x = np.random.default_rng(0).normal(size=(60, 2))
    dl.AutoDensity(candidates=["kde", "gaussian-mixture"], verbose=True).fit(x)
    shown = capsys.readouterr()
    text = shown.out + shown.err
    assert "model selection" in text and "2/2" in text and "gaussian-mixture: " in text
    dl.AutoDensity(candidates=["kde"]).fit(x)  # quiet by default
    shown = capsys.readouterr()
    assert "model selection" not in shown.out + shown.err


def test_threads_run_folds_side_by_side_with_the_same_result():
    x = dl.datasets.get("moons").sample(120, seed=4)
    options = dict(candidates=["kde", "flow"], random_state=1)
    alone = dl.AutoDensity(**options).fit(x)
    threaded = dl.AutoDensity(**options, threads=2).fit(x)
    assert threaded._candidate("flow", 0).threads == 2
    assert alone._candidate("flow", 0).threads is None  # None: the flow chooses its own
    np.testing.assert_allclose(threaded.cv_results_["mean_log_likelihood"],
                               alone.cv_results_["mean_log_likelihood"], rtol=1e-6)
    np.testing.assert_allclose(threaded.score_samples(x[:5]), alone.score_samples(x[:5]),
                               rtol=1e-6)


@pytest.mark.slow
def test_a_ring_is_not_a_mixture_of_few_gaussians():
    x = ring(300)
    auto = dl.AutoDensity(random_state=0).fit(x)
    few = (auto.best_name_ == "gaussian-mixture"
           and auto.best_estimator_.mixture_.n_components <= 3)
    assert not few, auto.cv_results_


@pytest.mark.slow
def test_scores_are_in_the_units_of_the_data():
    x = gaussian(200, seed=1)
    auto = dl.AutoDensity(candidates=("gaussian-mixture",)).fit(x)
    scaled = dl.AutoDensity(candidates=("gaussian-mixture",)).fit(10.0 * x)
    shift = 3 * math.log(10.0)  # densities of 10 x are 10^-3 times those of x
    np.testing.assert_allclose(scaled.score_samples(10.0 * x), auto.score_samples(x) - shift,
                               atol=1e-6)
    assert auto.score(x) == pytest.approx(auto.score_samples(x).sum())
    draws = auto.sample(2000, random_state=0)
    assert draws.shape == (2000, 3)
    np.testing.assert_allclose(draws.mean(axis=0), x.mean(axis=0), atol=0.2 * x.std(axis=0).max())
    np.testing.assert_array_equal(draws, auto.sample(2000, random_state=0))


@pytest.mark.slow
# the continuous flows leave: their recipes train for minutes here (the ODE solver; 20,000
# flow-matching steps), and a winner saves as the FlowDensity it is, whose round trip with a
# continuous flow test_continuous.py checks for both objectives
@pytest.mark.parametrize("candidate", [c for c in CANDIDATES if c not in ("cnf", "cnf-fm")])
def test_save_and_load_give_identical_scores(candidate, tmp_path):
    x = ring(120, seed=2)
    auto = dl.AutoDensity(candidates=(candidate,), random_state=1).fit(x)
    dl.save(auto, tmp_path / "m")
    assert not list(tmp_path.rglob("*.pkl")) and not list(tmp_path.rglob("*.pt"))
    loaded = dl.load(tmp_path / "m")
    assert type(loaded) is dl.AutoDensity and loaded.best_name_ == candidate
    queries = np.vstack([x[:30], ring(30, seed=9) * 1.5])
    np.testing.assert_array_equal(loaded.score_samples(queries), auto.score_samples(queries))
    assert loaded.cv_results_ == auto.cv_results_
    assert loaded.get_params() == auto.get_params()


@pytest.mark.slow
def test_the_mixture_based_flow_wins_on_clusters():
    """Five tight clusters: a flow that starts from a fitted Gaussian mixture beats the same
    flow on one Gaussian, which must carve every cluster out of it."""
    rng = np.random.default_rng(0)
    centres = rng.uniform(-6, 6, size=(5, 2))
    x = centres[rng.integers(5, size=400)] + 0.2 * rng.normal(size=(400, 2))
    auto = dl.AutoDensity(candidates=("flow", "flow-mixture"), random_state=0).fit(x)
    scores = dict(zip(auto.cv_results_["candidate"], auto.cv_results_["mean_log_likelihood"],
                      strict=True))
    assert auto.best_name_ == "flow-mixture" and scores["flow-mixture"] > scores["flow"] + 0.2
    base = auto.best_estimator_.flow_.base
    assert int(np.isfinite(base.log_weights.numpy()).sum()) == 5


@pytest.mark.slow
def test_maf_candidate_wins_on_a_curved_law_is_refitted_and_saved(tmp_path):
    x = banana(150)
    auto = dl.AutoDensity(candidates=("gaussian-mixture", "maf"), random_state=0).fit(x)
    table = auto.cv_results_
    assert table["candidate"] == ["gaussian-mixture", "maf"]
    assert np.isfinite(table["mean_log_likelihood"]).all()
    assert auto.best_name_ == "maf", table
    best = auto.best_estimator_  # refitted on all the (standardised) points
    assert isinstance(best, dl.FlowDensity) and best.model == "tabular-maf"
    assert best.flow_.config["builder"] == "maf" and best.flow_.config["transform"] == "affine"
    dl.save(auto, tmp_path / "m")
    loaded = dl.load(tmp_path / "m")
    assert type(loaded) is dl.AutoDensity and loaded.best_name_ == "maf"
    assert isinstance(loaded.best_estimator_, dl.FlowDensity)
    queries = np.vstack([x[:30], 2.0 * banana(30, seed=5)])
    np.testing.assert_array_equal(loaded.score_samples(queries), auto.score_samples(queries))
    assert loaded.cv_results_ == auto.cv_results_


@pytest.mark.parametrize(("kwargs", "data", "message"), [
    ({}, np.full((10, 2), np.nan), "NaN"),
    ({}, np.zeros((1, 2)), "sample"),
    ({}, np.zeros((5, 2)) + np.arange(5)[:, None], "at least 6 points"),
    ({}, np.c_[np.arange(20.0), np.ones(20)], "column 1 of X is constant"),
    ({"candidates": ("kde", "forest")}, None, "unknown candidate"),
    ({"candidates": ()}, None, "unknown candidate"),
    ({"cv": 1}, None, "cv must be an integer >= 2"),
    ({"random_state": "x"}, None, "random_state must be an int"),
])
def test_bad_input_gets_a_clear_error(kwargs, data, message):
    x = gaussian(30)[:, :2] if data is None else data
    with pytest.raises(ValueError, match=message):
        dl.AutoDensity(**kwargs).fit(x)


@pytest.mark.slow
def test_one_dimensional_data_score_every_candidate():
    x = np.random.default_rng(0).gamma(2.0, size=(60, 1))
    auto = dl.AutoDensity(candidates=("kde", "flow")).fit(x)
    assert np.isfinite(auto.cv_results_["mean_log_likelihood"]).all()  # the flow runs in 1-D
    assert auto.best_name_ in ("kde", "flow")
    assert np.isfinite(auto.score_samples(x)).all()
    assert "candidate,mean_log_likelihood" in auto.results_csv()


def test_mixture_candidate_follows_the_scikit_learn_contract():
    check_estimator(GaussianMixtureBIC(max_components=2))


@pytest.mark.slow  # ~10 s idle: every check refits 40 mixtures per fold
def test_scikit_learn_contract():
    # Flows are left out for time only: they follow the same contract (tests/test_estimators.py).
    # weights: the folds are drawn over the distinct rows, so a weighted fit and one on repeated
    # rows choose on different folds (the fitted model agrees: tests/test_missing.py)
    check_estimator(dl.AutoDensity(candidates=("kde", "gaussian-mixture")),
                    expected_failed_checks={"check_sample_weight_equivalence_on_dense_data":
                                            "model selection folds over distinct rows"})


@pytest.mark.slow
def test_cli_train_auto_writes_the_table(tmp_path):
    data = tmp_path / "data.npy"
    np.save(data, gaussian(150)[:, :2])
    result = CliRunner().invoke(app, ["train", str(data), "--model", "auto", "--threads", "2",
                                      "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["params"]["threads"] == 2
    table = (tmp_path / "run" / "model_selection.csv").read_text().splitlines()
    assert table[0].startswith("candidate,mean_log_likelihood,std_error,seconds")
    assert len(table) == 1 + len(DEFAULT_CANDIDATES)
    assert isinstance(dl.load(tmp_path / "run" / "model"), dl.AutoDensity)


# --------------------------------------------------------------------------------------------
# Kernel shape search
# --------------------------------------------------------------------------------------------


def test_shape_search_agrees_with_brute_force_likelihood_maximisation():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(60, 2)) * [1.0, 0.2]
    w = np.full(60, 1 / 60)
    grid = np.exp(np.linspace(np.log(0.02), np.log(2.0), 41))
    for shape, make in {"isotropic": lambda a, b: np.diag([a, a * 0.2]),
                        "full": None, "per-axis": lambda a, b: np.diag([a, b])}.items():
        h, chosen, scores = select_bandwidth(x, w, (shape,))
        assert chosen == shape
        if make is None:  # full: factor on the Cholesky factor of the covariance
            chol = np.linalg.cholesky(np.cov(x, rowvar=False))
            brute = max(leave_one_out_log_likelihood(x, c * chol) for c in grid)
        elif shape == "isotropic":
            sd = x.std(axis=0, ddof=1)
            brute = max(leave_one_out_log_likelihood(x, np.diag(c * sd)) for c in grid)
        else:
            brute = max(leave_one_out_log_likelihood(x, make(a, b))
                        for a in grid[::2] for b in grid[::2])
        assert scores[shape] == pytest.approx(leave_one_out_log_likelihood(x, h), rel=1e-10)
        assert scores[shape] >= brute - 1e-3, shape  # at least as good as the grid's best
    # all three: the winner is the best of them
    h, best, scores = select_bandwidth(x, w)
    assert set(scores) == set(KERNEL_SHAPES) and scores[best] == max(scores.values())
    assert best == "per-axis"  # axes of very different spread, no correlation
    np.testing.assert_allclose(dl.KDE(bandwidth="cv").fit(x).bandwidth_, h)


def test_shape_search_is_scale_equivariant():
    x = ring(200)
    narrow, wide = dl.KDE(bandwidth="cv").fit(x), dl.KDE(bandwidth="cv").fit(x * [3.0, 0.5])
    np.testing.assert_allclose(np.abs(np.diag(wide.bandwidth_)),
                               np.abs(np.diag(narrow.bandwidth_)) * [3.0, 0.5], rtol=2e-2)


def test_unknown_shape_and_constant_column_are_refused():
    x = ring(50)
    with pytest.raises(ValueError, match="unknown kernel shape"):
        select_bandwidth(x, np.full(50, 0.02), ("round",))
    with pytest.raises(ValueError, match="column 1 is constant"):
        dl.KDE(bandwidth="cv").fit(np.c_[x[:, 0], np.ones(50)])


# --------------------------------------------------------------------------------------------
# Rounded columns and the tabular flow recipe
# --------------------------------------------------------------------------------------------


def rounded_example(n: int = 200) -> np.ndarray:
    rng = np.random.default_rng(5)
    return np.c_[np.round(rng.normal(5.0, 1.0, n), 1), rng.normal(size=n),
                 rng.integers(0, 3, n).astype(float)]


def test_rounded_columns_are_detected():
    x = rounded_example()
    np.testing.assert_allclose(rounding_steps(x), [0.1, 0.0, 1.0], rtol=1e-9)
    spread = dequantise(x, rounding_steps(x), seed=0)
    assert np.all(np.abs(spread - x) <= rounding_steps(x) / 2)
    assert len(np.unique(spread[:, 0])) == len(x)
    np.testing.assert_array_equal(spread[:, 1], x[:, 1])


def test_kde_widths_stay_above_the_rounding_error():
    x = rounded_example()[:, :2]
    x = np.vstack([x, x[:50]])  # exact duplicates too
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        kde = dl.KDE(bandwidth="cv").fit(x)
    widths = np.sqrt(np.diag(kde.covariance_))
    assert widths[0] >= 0.1 / math.sqrt(12) * (1 - 1e-9)
    assert np.all(np.isfinite(kde.score_samples(x)))


def test_tabular_flow_dequantises_rounded_columns_and_records_it(tmp_path):
    x = rounded_example(150)
    est = dl.FlowDensity(random_state=0).fit(x)
    assert est.rounded_columns_ == [0, 2] and est.dequantized_
    np.testing.assert_allclose(est.rounding_steps_, [0.1, 1.0], rtol=1e-9)
    scores = est.score_samples(x)
    assert np.all(np.isfinite(scores)) and scores.min() > -50
    dl.save(est, tmp_path / "m")
    assert dl.load(tmp_path / "m").rounded_columns_ == [0, 2]
    with pytest.warns(UserWarning, match=r"columns \[0, 2\] hold rounded values"):
        coursework = dl.FlowDensity(model="realnvp", epochs=1).fit(x)
    assert coursework.rounded_columns_ == [0, 2] and not coursework.dequantized_


def test_tabular_budget_grows_with_the_data():
    small, large = tabular_budget(200), tabular_budget(20_000)
    assert small["batch_size"] == 32 and small["epochs"] * math.ceil(180 / 32) >= 200
    assert large["batch_size"] == 256
    assert large["epochs"] * math.ceil(18_000 / 256) <= 1500 + math.ceil(18_000 / 256)
    assert dl.FlowDensity()._settings(200)["builder"] == "nsf"
    assert dl.FlowDensity(model="realnvp")._settings(200)["builder"] == "realnvp"
    tabular = dl.FlowDensity()
    for model, transform in (("tabular-maf", "affine"), ("tabular-maf-spline", "spline")):
        maf = dl.FlowDensity(model=model)
        assert maf._recipe(200)[:2] == ("maf", {"n_layers": 5, "hidden": (64, 64),
                                                "transform": transform}
                                        | ({"bins": 8, "bound": 5.0} if transform == "spline"
                                           else {}))
        for n in (200, 20_000):  # the same budget and patience as the tabular spline flow
            assert maf._recipe(n)[2] == tabular._recipe(n)[2]
            assert maf._recipe(n)[3] == tabular._recipe(n)[3] == tabular_budget(n)["patience"]


def test_mixture_integer_weights_equal_repeated_rows_exactly():
    x = gaussian(120)[:, :2]
    weights = np.random.default_rng(4).integers(0, 4, len(x))
    weighted = GaussianMixtureBIC(max_components=3).fit(x, sample_weight=weights)
    repeated = GaussianMixtureBIC(max_components=3).fit(np.repeat(x, weights, axis=0))
    assert weighted.bic_ == repeated.bic_
    np.testing.assert_array_equal(weighted.score_samples(x), repeated.score_samples(x))
    with pytest.raises(ValueError, match="whole-number weights"):
        GaussianMixtureBIC().fit(x, sample_weight=np.full(len(x), 0.5))
