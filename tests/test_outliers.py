"""Outlier detection from densities follows scikit-learn's conventions exactly."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.ensemble import IsolationForest
from sklearn.model_selection import KFold

import densitylab as dl


@pytest.fixture(scope="module")
def gaussian():
    return np.random.default_rng(0).normal(size=(400, 2))


def test_signs_offset_and_labels_follow_scikit_learn(gaussian):
    det = dl.OutlierDetector(dl.KDE(bandwidth=0.4), contamination=0.1).fit(gaussian)
    out_of_fold = np.empty(len(gaussian))  # each row scored by the KDE of the other folds
    for train, test in KFold(5, shuffle=True, random_state=0).split(gaussian):
        out_of_fold[test] = dl.KDE(bandwidth=0.4).fit(gaussian[train]).score_samples(
            gaussian[test])
    assert det.offset_ == pytest.approx(np.quantile(out_of_fold, 0.1))
    queries = np.array([[0.0, 0.0], [0.3, -0.2], [5.0, 5.0], [-7.0, 1.0]])
    np.testing.assert_allclose(det.decision_function(queries),
                               det.score_samples(queries) - det.offset_)
    assert det.predict(queries).tolist() == [1, 1, -1, -1]
    # on new data from the same law a contamination fraction is flagged, like IsolationForest's
    # on its training data (in-sample, a KDE rates each row with its own kernel included)
    fresh = np.random.default_rng(1).normal(size=(20000, 2))
    assert np.mean(det.predict(fresh) == -1) == pytest.approx(0.1, abs=0.01)
    labels = det.fit_predict(gaussian)
    assert set(np.unique(labels)) == {-1, 1}
    forest = IsolationForest(contamination=0.1, random_state=0).fit(gaussian)
    assert np.mean(forest.predict(gaussian) == -1) == pytest.approx(0.1, abs=0.005)
    # both call the far point an outlier, the centre an inlier
    assert forest.predict(queries[[0, 2]]).tolist() == det.predict(queries[[0, 2]]).tolist()


def test_any_density_estimator_can_be_wrapped(gaussian):
    flow = dl.FlowDensity(model="realnvp", n_layers=2, hidden=(8,), epochs=3)
    det = dl.OutlierDetector(flow, contamination=0.05).fit(gaussian)
    assert det.predict([[8.0, 8.0]]).tolist() == [-1]
    assert det.estimator_ is not flow  # cloned, the user's estimator stays unfitted
    default = dl.OutlierDetector().fit(gaussian)
    assert default.estimator_.bandwidth == "cv"


@pytest.mark.parametrize("contamination", [0, -0.1, 0.6, "a", True])
def test_bad_contamination_is_a_clear_error(gaussian, contamination):
    with pytest.raises(ValueError, match="contamination"):
        dl.OutlierDetector(contamination=contamination).fit(gaussian)


def test_an_estimator_without_a_density_is_refused(gaussian):
    from sklearn.cluster import KMeans

    with pytest.raises(ValueError, match="not a density estimator"):
        dl.OutlierDetector(KMeans(n_clusters=2)).fit(gaussian)


@pytest.mark.slow
def test_score_command_adds_an_outlier_column(tmp_path):
    from typer.testing import CliRunner

    from densitylab.cli import app

    runner = CliRunner()
    result = runner.invoke(app, ["train", "moons", "-n", "300", "--n-test", "300", "--epochs",
                                 "5", "--out", str(tmp_path / "run"), "-q"])
    assert result.exit_code == 0, result.output
    points = np.array([[0.5, 0.25], [1.0, 0.0], [9.0, -9.0]])
    np.savetxt(tmp_path / "p.csv", points, delimiter=",")
    result = runner.invoke(app, ["score", str(tmp_path / "run"), str(tmp_path / "p.csv"),
                                 "--contamination", "0.05", "--out", str(tmp_path / "s.csv")])
    assert result.exit_code == 0, result.output
    table = np.loadtxt(tmp_path / "s.csv", delimiter=",", skiprows=1)
    assert open(tmp_path / "s.csv").readline().strip() == "log_density,outlier"
    assert table[:, 1].tolist()[-1] == -1
    result = runner.invoke(app, ["score", str(tmp_path / "run"), str(tmp_path / "p.csv"),
                                 "--contamination", "0.7", "--out", str(tmp_path / "s.csv")])
    assert isinstance(result.exception, ValueError) and "contamination" in str(result.exception)


def test_a_prefit_estimator_is_used_as_it_is_with_an_out_of_fold_threshold(gaussian):
    kde = dl.KDE(bandwidth=0.4).fit(gaussian)
    det = dl.OutlierDetector(kde, prefit=True, contamination=0.1).fit(gaussian)
    assert det.estimator_ is kde
    fresh = dl.OutlierDetector(dl.KDE(bandwidth=0.4), contamination=0.1).fit(gaussian)
    assert det.offset_ == pytest.approx(fresh.offset_)
    # the out-of-fold threshold lies below the in-sample one (each row's own kernel excluded)
    assert det.offset_ < np.quantile(kde.score_samples(gaussian), 0.1)
    with pytest.raises(ValueError, match="prefit"):
        dl.OutlierDetector(prefit=True).fit(gaussian)


@pytest.mark.slow  # a few seconds: fits several models
def test_auto_density_gives_its_cross_validation_scores_without_refitting(gaussian):
    auto = dl.AutoDensity(candidates=["kde", "gaussian-mixture"]).fit(gaussian)
    det = dl.OutlierDetector(auto, prefit=True, contamination=0.05).fit(gaussian)
    assert det.offset_ == pytest.approx(np.quantile(auto.oof_score_samples_, 0.05))
    # on other rows than the training ones, the clones are fitted fold by fold
    other = dl.OutlierDetector(auto, prefit=True, contamination=0.05, cv=2).fit(gaussian[:100])
    assert np.isfinite(other.offset_) and other.offset_ != det.offset_


def test_top_lists_the_most_anomalous_rows_first(gaussian):
    det = dl.OutlierDetector(dl.KDE(bandwidth=0.4)).fit(gaussian)
    rows = np.array([[0.0, 0.0], [9.0, 0.0], [3.0, 3.0], [-20.0, 0.0]])
    assert det.top(2, rows).tolist() == [3, 1]
    assert det.top(10, rows).tolist() == [3, 1, 2, 0]
    with pytest.raises(ValueError, match="k must be"):
        det.top(0, rows)


def test_a_detector_saves_and_loads(gaussian, tmp_path):
    import pandas as pd

    frame = pd.DataFrame(gaussian, columns=["width", "height"])
    det = dl.OutlierDetector(dl.KDE(bandwidth=0.4), contamination=0.05).fit(frame)
    dl.save(det, tmp_path / "det")
    back = dl.load(tmp_path / "det")
    assert back.offset_ == det.offset_ and list(back.feature_names_in_) == ["width", "height"]
    np.testing.assert_allclose(back.decision_function(frame), det.decision_function(frame))


def test_scikit_learn_contract_of_the_detector():
    from sklearn.utils.estimator_checks import check_estimator

    reason = ("the threshold is the out-of-fold quantile, so in-sample scores (each row with "
              "its own kernel) flag fewer training rows than the contamination fraction")
    check_estimator(dl.OutlierDetector(dl.KDE(bandwidth=0.5)), expected_failed_checks={
        "check_outliers_train": reason, "check_outliers_fit_predict": reason})


def test_tables_with_labels_prefit_and_refit_top_and_round_trip(tmp_path):
    import pandas as pd

    rng = np.random.default_rng(3)
    region = rng.choice(["east", "west"], 100)
    df = pd.DataFrame({"region": region, "price": np.where(region == "east", 5.0, -2.0)
                       + rng.normal(0, 0.5, 100)})
    quick = {"candidates": ["kde"], "random_state": 0}
    auto = dl.AutoDensity(**quick).fit(df)
    prefit = dl.OutlierDetector(auto, contamination=0.05, prefit=True).fit(df)
    np.testing.assert_array_equal(prefit.training_scores_, auto.oof_score_samples_)  # no refit
    points = pd.DataFrame({"region": ["east", "west", "east", "south"],
                           "price": [5.0, -2.0, -2.0, 5.0]})
    assert prefit.predict(points).tolist() == [1, 1, -1, -1]  # west's price in the east
    assert prefit.top(2, points).tolist() == [3, 2]  # an unknown label: -inf, first
    refit = dl.OutlierDetector(dl.CategoricalDensity(**quick), contamination=0.05, cv=2).fit(df)
    assert refit.predict(points).tolist() == [1, 1, -1, -1]
    assert list(refit.estimator_.sample(3, random_state=0).columns) == ["region", "price"]
    dl.save(prefit, tmp_path / "d")
    loaded = dl.load(tmp_path / "d")
    np.testing.assert_array_equal(loaded.score_samples(points), prefit.score_samples(points))
    assert loaded.offset_ == prefit.offset_ and loaded.top(2, points).tolist() == [3, 2]
