"""A practitioner's own table end to end: CSV hygiene, column names kept, every run type scored
and flagged from the shell, boundary-aware densities."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import densitylab as dl
from densitylab.cli import app

runner = CliRunner()


def invoke(*args: str):
    result = runner.invoke(app, [str(a) for a in args], catch_exceptions=True)
    if isinstance(result.exception, ValueError | FileNotFoundError):
        return 2, f"error: {result.exception}"
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.output


@pytest.fixture(scope="module")
def table(tmp_path_factory) -> tuple[pd.DataFrame, str]:
    """A table written by pandas' to_csv (with its index column)."""
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"price": rng.gamma(3.0, 10.0, 300), "area": rng.normal(50, 10, 300)})
    path = tmp_path_factory.mktemp("table") / "homes.csv"
    frame.to_csv(path)
    return frame, str(path)


def test_index_column_dropped_with_a_note_and_names_kept(table):
    frame, path = table
    loaded = dl.datasets.load_table(path)
    assert loaded.names == ["price", "area"] and loaded.x.shape == (300, 2)
    np.testing.assert_allclose(loaded.x, frame.to_numpy())
    assert "index" in loaded.notes[0]


def test_a_numbered_first_column_with_a_name_is_kept(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("id,value\n0,1.5\n1,2.5\n2,0.5\n")
    assert dl.datasets.load_table(path).x.shape == (3, 2)


def test_a_text_column_is_named_in_the_error(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("price,region\n1.5,east\n2.5,west\n")
    with pytest.raises(ValueError, match=r"row 2, column 2 \('region'\) holds text \('east'\)"):
        dl.datasets.load(path)
    path.write_text("price,region\n1.5,2\n2.5,NA\n")
    with pytest.raises(ValueError, match=r"column 2 \('region'\) is missing \(NA\)") as info:
        dl.datasets.load(path)
    assert "HistGradientBoosting" not in str(info.value)


@pytest.mark.slow  # a few seconds: fits several models
def test_kde_runs_are_scored_flagged_and_sampled_with_the_column_names(table, tmp_path):
    frame, path = table
    code, output = invoke("kde", path, "-b", "scott", "--out", tmp_path / "k")
    assert code == 0, output
    config = json.loads((tmp_path / "k" / "config.json").read_text())
    assert config["columns"] == ["price", "area"]
    points = tmp_path / "points.csv"
    rows = np.vstack([frame.to_numpy()[:20], [[500.0, -40.0]]])
    np.savetxt(points, rows, delimiter=",")
    code, output = invoke("score", tmp_path / "k", points, "--contamination", "0.05", "--top", "2",
                          "--out", tmp_path / "s.csv")
    assert code == 0, output
    scored = np.loadtxt(tmp_path / "s.csv", delimiter=",", skiprows=1)
    kde = dl.KDE(bandwidth="scott").fit(frame.to_numpy())
    np.testing.assert_allclose(scored[:, 0], kde.score_samples(rows), rtol=1e-9)
    assert scored[-1, 1] == -1
    lines = output.splitlines()
    assert "row,log_density,price,area" in lines and lines[lines.index(
        "row,log_density,price,area") + 1].startswith("21,")
    code, output = invoke("sample", tmp_path / "k", "-n", "5", "--out", tmp_path / "smp.csv")
    assert code == 0, output
    assert (tmp_path / "smp.csv").read_text().splitlines()[0] == "price,area"


def test_the_kde_threshold_is_out_of_fold(table, tmp_path):
    _, path = table
    code, output = invoke("kde", path, "-b", "0.5", "--out", tmp_path / "k")
    assert code == 0, output
    x = dl.datasets.load(path)
    quantiles = json.loads((tmp_path / "k" / "metrics.json").read_text())[
        "train_log_density_quantiles"]
    det = dl.OutlierDetector(dl.KDE(bandwidth=0.5), contamination=0.05).fit(x)
    assert np.interp(0.05, np.linspace(0, 0.5, 501), quantiles) == pytest.approx(det.offset_)


def _keeps_names(model, frame, folder) -> None:
    import warnings

    model.fit(frame)
    dl.save(model, folder)
    back = dl.load(folder)
    assert list(back.feature_names_in_) == ["price", "area"]
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*(feature names|not writable)")
        np.testing.assert_allclose(back.score_samples(frame), model.score_samples(frame))


def test_a_saved_model_keeps_its_column_names(table, tmp_path):
    frame, _ = table
    for model in (dl.KDE(bandwidth=2.0), dl.AutoDensity(candidates=["gaussian-mixture"])):
        _keeps_names(model, frame, tmp_path / type(model).__name__)


@pytest.mark.slow  # a few seconds: trains flows
def test_a_saved_flow_and_detector_keep_their_column_names(table, tmp_path):
    frame, _ = table
    flow = dl.FlowDensity(model="realnvp", n_layers=2, hidden=(8,), epochs=1)
    detector = dl.OutlierDetector(dl.FlowDensity(model="maf", n_layers=1, hidden=(8,),
                                                 epochs=1), cv=2)
    for model in (flow, detector):
        _keeps_names(model, frame, tmp_path / type(model).__name__)


@pytest.mark.slow  # a few seconds: fits several models
def test_the_shell_default_for_a_file_is_the_tabular_recipe(table, tmp_path):
    _, path = table
    code, output = invoke("train", path, "--epochs", "2", "-q", "--out", tmp_path / "r")
    assert code == 0, output
    config = json.loads((tmp_path / "r" / "config.json").read_text())
    assert config["model"] == "tabular" and config["columns"] == ["price", "area"]
    code, output = invoke("sample", tmp_path / "r", "-n", "3", "--out", tmp_path / "s.csv")
    assert (tmp_path / "s.csv").read_text().splitlines()[0] == "price,area"


@pytest.mark.slow  # a few seconds: fits several models
def test_auto_runs_flag_outliers_from_out_of_fold_scores(table, tmp_path):
    _, path = table
    code, output = invoke("train", path, "--model", "auto", "-q", "--out", tmp_path / "a")
    assert code == 0, output
    np.savetxt(tmp_path / "p.csv", [[30.0, 50.0], [900.0, -100.0]], delimiter=",")
    code, output = invoke("score", tmp_path / "a", tmp_path / "p.csv", "--contamination", "0.01",
                          "--out", tmp_path / "s.csv")
    assert code == 0, output
    assert np.loadtxt(tmp_path / "s.csv", delimiter=",", skiprows=1)[:, 1].tolist() == [1, -1]


@pytest.mark.slow  # an AutoDensity search from the shell: the full run's
def test_auto_runs_print_and_take_column_types(tmp_path):
    rng = np.random.default_rng(4)
    frame = pd.DataFrame({"wait": rng.exponential(size=120) + 1.0, "visits": rng.poisson(2, 120)})
    frame.to_csv(tmp_path / "t.csv", index=False)
    code, output = invoke("train", tmp_path / "t.csv", "--model", "auto", "-q",
                          "--column-types", "wait=bounded(1;)", "--out", tmp_path / "a")
    assert code == 0, output
    assert "column wait: continuous (>= 1), log-density" in output
    assert "column visits: integer (step 1, >= 0), log-probability" in output
    code, output = invoke("sample", tmp_path / "a", "-n", "500", "--out", tmp_path / "s.csv")
    drawn = pd.read_csv(tmp_path / "s.csv")
    assert list(drawn.columns) == ["wait", "visits"] and drawn["wait"].min() > 1
    assert (drawn["visits"] == drawn["visits"].round()).all() and drawn["visits"].min() >= 0
    code, output = invoke("train", tmp_path / "t.csv", "--model", "auto", "--column-types",
                          "nope=integer", "--out", tmp_path / "b")
    assert code == 2 and "nope" in output


def test_missing_cells_from_the_shell(tmp_path):
    rng = np.random.default_rng(5)
    frame = pd.DataFrame({"a": rng.normal(size=100), "b": rng.normal(size=100)})
    frame.iloc[3, 1] = np.nan
    frame.to_csv(tmp_path / "holes.csv", index=False)
    code, output = invoke("kde", tmp_path / "holes.csv", "--out", tmp_path / "k")
    assert code == 2 and "row 5, column 2 ('b') is missing" in output
    code, output = invoke("kde", tmp_path / "holes.csv", "--missing", "drop", "-b", "0.5",
                          "--out", tmp_path / "k")
    assert code == 0 and "dropped 1 of 100 rows" in output
    code, output = invoke("score", tmp_path / "k", tmp_path / "holes.csv",
                          "--out", tmp_path / "s.csv")
    assert code == 0 and "1 row(s) with missing cells scored by the marginal" in output
    scores = np.loadtxt(tmp_path / "s.csv", skiprows=1)
    kept = frame.dropna().to_numpy()
    expected = dl.KDE(bandwidth=0.5).fit(kept[:, [0]]).score_samples(
        frame.iloc[[3], [0]].to_numpy())  # an array, as fitted: no feature-name warning
    assert scores[3] == pytest.approx(expected[0], rel=1e-9)  # written with 10 digits


def test_conditional_runs_flag_outliers_too(tmp_path):
    rng = np.random.default_rng(6)
    c = rng.normal(size=(300, 1))
    np.savetxt(tmp_path / "d.csv", np.hstack([c, 2 * c + 0.1 * rng.normal(size=(300, 1))]),
               delimiter=",")
    code, output = invoke("train", tmp_path / "d.csv", "--condition-on", "0", "--model", "maf",
                          "--epochs", "3", "-q", "--out", tmp_path / "c")
    assert code == 0, output
    np.savetxt(tmp_path / "p.csv", [[0.0, 0.0], [0.0, 5.0]], delimiter=",")
    code, output = invoke("score", tmp_path / "c", tmp_path / "p.csv", "--contamination", "0.05",
                          "--out", tmp_path / "s.csv")
    assert code == 0, output
    assert np.loadtxt(tmp_path / "s.csv", delimiter=",", skiprows=1)[:, 1].tolist() == [1, -1]
