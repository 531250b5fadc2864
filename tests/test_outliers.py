"""Outlier detection from densities follows scikit-learn's conventions exactly."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.ensemble import IsolationForest

import densitylab as dl


@pytest.fixture(scope="module")
def gaussian():
    return np.random.default_rng(0).normal(size=(400, 2))


def test_signs_offset_and_labels_follow_scikit_learn(gaussian):
    det = dl.OutlierDetector(dl.KDE(bandwidth=0.4), contamination=0.1).fit(gaussian)
    train_scores = dl.KDE(bandwidth=0.4).fit(gaussian).score_samples(gaussian)
    assert det.offset_ == pytest.approx(np.quantile(train_scores, 0.1))
    queries = np.array([[0.0, 0.0], [0.3, -0.2], [5.0, 5.0], [-7.0, 1.0]])
    np.testing.assert_allclose(det.decision_function(queries),
                               det.score_samples(queries) - det.offset_)
    assert det.predict(queries).tolist() == [1, 1, -1, -1]
    # on the training data a contamination fraction is flagged, like IsolationForest's
    labels = det.fit_predict(gaussian)
    assert set(np.unique(labels)) == {-1, 1}
    assert np.mean(labels == -1) == pytest.approx(0.1, abs=0.005)
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
