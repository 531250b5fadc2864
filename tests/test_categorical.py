"""Categorical columns by conditioning: P(category) x p(rest | category)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import densitylab as dl
from densitylab.cli import app

QUICK = {"candidates": ["kde"], "random_state": 0}


def regions(n: int = 300, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    region = rng.choice(["east", "west", "north"], n, p=[0.5, 0.3, 0.2])
    price = np.where(region == "east", rng.normal(5, 1, n), rng.normal(-2, 0.5, n))
    return pd.DataFrame({"region": region, "price": price, "area": rng.normal(50, 5, n)})


def log_frequency(labels: pd.Series, label: str, smoothing: float, k: int) -> float:
    return float(np.log(((labels == label).sum() + smoothing) / (len(labels) + smoothing * k)))


def test_pooled_log_likelihood_is_log_frequency_plus_the_rest():
    df = regions()
    model = dl.CategoricalDensity(min_rows=10**6, **QUICK).fit(df)
    assert model.own_ == {} and model.categories_ == [["east", "north", "west"]]
    rest = dl.AutoDensity(**QUICK).fit(df[["price", "area"]].to_numpy())
    expected = [log_frequency(df["region"], r, 0.5, 3) for r in df["region"][:20]]
    expected += rest.score_samples(df[["price", "area"]].to_numpy()[:20])
    np.testing.assert_allclose(model.score_samples(df[:20]), expected, rtol=1e-10)


def test_a_category_of_its_own_wins_where_the_rest_depends_on_it():
    df = regions(600)
    model = dl.CategoricalDensity(min_rows=50, **QUICK).fit(df)
    assert set(model.choices_["chosen"]) == {"own"}  # the price depends on the region
    east = df[df["region"] == "east"]
    own = dl.AutoDensity(**QUICK).fit(east[["price", "area"]].to_numpy())
    expected = log_frequency(df["region"], "east", 0.5, 3) + own.score_samples(
        east[["price", "area"]].to_numpy()[:10])
    np.testing.assert_allclose(model.score_samples(east[:10]), expected, rtol=1e-10)
    assert np.all(np.array(model.choices_["own"]) > np.array(model.choices_["pooled"]))


def test_the_joint_law_sums_and_integrates_to_one():
    df = regions()[["region", "price"]]
    model = dl.CategoricalDensity(min_rows=50, **QUICK).fit(df)
    grid = np.linspace(-12, 15, 6001)
    total = 0.0
    for label in ["east", "north", "west"]:
        rows = pd.DataFrame({"region": [label] * len(grid), "price": grid})
        total += np.trapezoid(np.exp(model.score_samples(rows)), grid)
    assert total == pytest.approx(1.0, abs=1e-4)


def test_samples_carry_valid_labels_at_the_smoothed_frequencies():
    rng = np.random.default_rng(1)
    x = np.column_stack([rng.normal(size=400), rng.choice([1, 2, 7], 400, p=[0.6, 0.3, 0.1])])
    model = dl.CategoricalDensity(column_types={1: "categorical"}, **QUICK).fit(x)
    assert model.categories_ == [[1.0, 2.0, 7.0]]
    drawn = model.sample(4000, random_state=0)
    assert drawn.shape == (4000, 2) and set(drawn[:, 1]) <= {1.0, 2.0, 7.0}
    smoothed = (np.array([np.sum(x[:, 1] == v) for v in (1, 2, 7)]) + 0.5) / (400 + 1.5)
    frequencies = np.array([np.mean(drawn[:, 1] == v) for v in (1.0, 2.0, 7.0)])
    np.testing.assert_allclose(frequencies, smoothed, atol=0.025)
    assert np.isneginf(model.score_samples(np.array([[0.0, 3.0]], dtype=object)))[0]
    text = model.sample(5, random_state=0)
    frame = dl.CategoricalDensity(**QUICK).fit(regions()).sample(50, random_state=0)
    assert list(frame.columns) == ["region", "price", "area"] and text.dtype == object
    assert set(frame["region"]) <= {"east", "west", "north"}


def test_unseen_combinations_get_the_smoothed_mass():
    df = pd.DataFrame({"a": ["p", "q"] * 50, "b": ["u"] * 100, "x": np.arange(100.0)})
    df.loc[0, "b"] = "v"  # combinations seen: p/u, q/u, p/v; q/v is never seen
    model = dl.CategoricalDensity(smoothing=1.0, **QUICK).fit(df[["a", "b"]])
    p = np.exp(model.score_samples(pd.DataFrame({"a": ["p", "q", "p", "q"],
                                                 "b": ["u", "u", "v", "v"]})))
    np.testing.assert_allclose(p, np.array([49 + 1, 50 + 1, 1 + 1, 0 + 1]) / (100 + 4))


def test_save_and_load_round_trip_and_check_the_labels(tmp_path):
    df = regions()
    model = dl.CategoricalDensity(min_rows=50, **QUICK).fit(df)
    dl.save(model, tmp_path / "m")
    loaded = dl.load(tmp_path / "m")
    np.testing.assert_array_equal(loaded.score_samples(df), model.score_samples(df))
    pd.testing.assert_frame_equal(loaded.sample(20, random_state=3),
                                  model.sample(20, random_state=3))
    assert loaded.choices_ == model.choices_ and list(loaded.feature_names_in_) == list(df)
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    config["config"]["categories"] = [["east", "east", "west"]]
    (tmp_path / "m" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="distinct strings"):
        dl.load(tmp_path / "m")


def test_bad_declarations_are_clear_errors():
    df = regions(60)
    with pytest.raises(ValueError, match="no categorical column"):
        dl.CategoricalDensity(**QUICK).fit(df[["price", "area"]])
    with pytest.raises(ValueError, match=r"'region'\) holds text but is declared 'integer'"):
        dl.CategoricalDensity(column_types={"region": "integer"}, **QUICK).fit(df)
    with pytest.raises(ValueError, match="CategoricalDensity"):
        dl.AutoDensity(**QUICK).fit(df)
    with pytest.raises(ValueError, match="CategoricalDensity"):
        dl.AutoDensity(column_types={"area": "categorical"}, **QUICK).fit(df[["price", "area"]])


@pytest.mark.slow  # trains AutoDensities per category from the shell
def test_the_shell_trains_scores_and_samples_a_table_with_text(tmp_path):
    regions(240).to_csv(tmp_path / "t.csv")  # with pandas' index column
    runner = CliRunner()
    result = runner.invoke(app, ["train", str(tmp_path / "t.csv"), "--model", "auto", "-q",
                                 "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    assert "column region: categorical (3 labels), log-probability" in result.output
    points = pd.DataFrame({"region": ["east", "west", "south"], "price": [5.0, -2.0, 0.0],
                           "area": [50.0, 50.0, 50.0]})
    points.to_csv(tmp_path / "p.csv", index=False)
    result = runner.invoke(app, ["score", str(tmp_path / "run"), str(tmp_path / "p.csv"),
                                 "--contamination", "0.05", "--out", str(tmp_path / "s.csv")])
    assert result.exit_code == 0, result.output
    scores = pd.read_csv(tmp_path / "s.csv")
    model = dl.load(tmp_path / "run" / "model")
    np.testing.assert_allclose(scores["log_density"], model.score_samples(points), rtol=1e-9)
    assert np.isneginf(scores["log_density"][2]) and list(scores["outlier"]) [2] == -1
    result = runner.invoke(app, ["sample", str(tmp_path / "run"), "-n", "30", "--out",
                                 str(tmp_path / "d.csv")])
    assert result.exit_code == 0, result.output
    drawn = pd.read_csv(tmp_path / "d.csv")
    assert list(drawn.columns) == ["region", "price", "area"]
    assert set(drawn["region"]) <= {"east", "west", "north"} and len(drawn) == 30


def test_csv_text_columns_are_read_as_labels_only_when_asked(tmp_path):
    path = tmp_path / "t.csv"
    pd.DataFrame({"price": [1.5, 2.5, 3.0], "region": ["east", "west", "east"],
                  "code": [1, 2, 1]}).to_csv(path)  # with pandas' index column
    with pytest.raises(ValueError, match=r"column 3 \('region'\) holds text \('east'\)"):
        dl.datasets.load_table(path)
    table = dl.datasets.load_table(path, text=True, as_text=[2])
    assert table.names == ["price", "region", "code"] and "index" in table.notes[0]
    assert table.labels == {1: ["east", "west", "east"], 2: ["1", "2", "1"]}
    assert table.rows()[1].tolist() == [2.5, "west", "2"]
    path.write_text("price,region\n1.5,east\n2.5,\n")
    with pytest.raises(ValueError, match=r"row 3, column 2 \('region'\) is missing"):
        dl.datasets.load_table(path, allow_missing=True, text=True)


def test_weights_count_in_the_frequencies_as_repeated_rows():
    df = pd.DataFrame({"a": ["p", "q", "r", "p"], "b": [1, 2, 1, 2]})
    weights = np.array([3, 0, 1, 2])
    declared = {"b": "categorical"}
    weighted = dl.CategoricalDensity(column_types=declared).fit(df, sample_weight=weights)
    repeated = dl.CategoricalDensity(column_types=declared).fit(df.loc[df.index.repeat(weights)])
    rows = pd.DataFrame({"a": ["p", "q", "r", "p", "q"], "b": [1, 2, 1, 2, 1]})
    np.testing.assert_allclose(weighted.score_samples(rows), repeated.score_samples(rows),
                               rtol=1e-12)  # q weighs 0: an unknown label in both (-inf)
    assert weighted.categories_ == [["p", "r"], [1.0, 2.0]]
    np.testing.assert_allclose(weighted.score_samples(rows)[0], np.log(3.5 / (6 + 0.5 * 4)))
