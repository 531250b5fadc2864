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
    first = json.loads(json.dumps(config))  # as the first version wrote it: no strategy table
    for key in ("strategy", "cv_results", "conditional", "training_digest", "feature_names"):
        del first["config"][key]
    (tmp_path / "m" / "config.json").write_text(json.dumps(first))
    old = dl.load(tmp_path / "m")
    np.testing.assert_array_equal(old.score_samples(df), model.score_samples(df))
    assert old.strategy_ == model.strategy_
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
    with pytest.raises(ValueError, match="cannot hold a text column"):
        dl.AutoDensity(column_types="continuous", **QUICK).fit(df)
    df.loc[3, "region"] = None
    with pytest.raises(ValueError, match=r"row 3, column 0 \('region'\)"):
        dl.AutoDensity(**QUICK).fit(df)


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
        dl.datasets.load_table(path, text=True)
    assert dl.datasets.load_table(path, allow_missing=True, text=True).labels == {
        1: ["east", None]}


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


# -- AutoDensity on tables with categorical columns -------------------------------------------
def shapes(same: bool, n: int = 120, seed: int = 0) -> pd.DataFrame:
    """Three categories whose two rest columns share one law (``same``) or have very
    different shapes (a round blob, a skewed wide cloud, a thin line)."""
    rng = np.random.default_rng(seed)
    label = np.repeat(["a", "b", "c"], n)
    if same:
        return pd.DataFrame({"g": label, "x": rng.normal(size=3 * n),
                             "y": rng.normal(size=3 * n)})
    line = rng.normal(-6, 0.3, n)
    x = np.concatenate([rng.normal(0, 1, n), 3 * rng.exponential(1, n) + 4, line])
    y = np.concatenate([rng.normal(0, 1, n), rng.normal(0, 3, n), 0.5 * line
                        + rng.normal(0, 0.1, n)])
    return pd.DataFrame({"g": label, "x": x, "y": y})


def test_auto_density_models_a_text_column_as_the_categorical_density_does():
    df = regions(240)
    auto = dl.AutoDensity(**QUICK).fit(df)
    model = dl.CategoricalDensity(**QUICK).fit(df)
    assert auto.best_name_ == "by-category" and auto.categorical_columns_ == [0]
    np.testing.assert_allclose(auto.score_samples(df), model.score_samples(df), rtol=1e-12)
    np.testing.assert_allclose(auto.oof_score_samples_, model.oof_score_samples_, rtol=1e-12)
    assert auto.describe_columns()[0] == "categorical (3 labels), log-probability"
    assert [t.kind for t in auto.column_types_] == ["categorical", "continuous", "continuous"]
    assert auto.results_csv().splitlines()[0].startswith("candidate,mean_log_likelihood")
    drawn = auto.sample(200, random_state=1)
    assert list(drawn.columns) == list(df) and set(drawn["region"]) <= {"east", "west", "north"}
    assert np.isfinite(auto.score_samples(drawn)).all()
    numbers = dl.AutoDensity(column_types={1: "categorical"}, **QUICK).fit(
        df[["price", "region"]].assign(region=df["region"].map(
            {"east": 1, "west": 2, "north": 3})).to_numpy())  # numeric codes, declared
    assert numbers.categories_ == [[1.0, 2.0, 3.0]] and numbers.sample(5).dtype == object


@pytest.mark.parametrize("same", [False, True])
def test_cross_validation_picks_models_per_category_only_where_shapes_differ(same):
    auto = dl.AutoDensity(**QUICK).fit(shapes(same))
    results = dict(zip(auto.cv_results_["candidate"], auto.cv_results_["mean_log_likelihood"],
                       strict=True))
    chosen = auto.best_estimator_.strategy_
    assert chosen == ("ignore-category" if same else "per-category"), results
    assert results[chosen] == max(results.values())
    assert "no flow" in auto.cv_results_["note"][2]  # the conditional flow needs a flow
    assert (auto.best_estimator_.own_ != {}) == (not same)


def test_log_mass_of_categories_sums_to_one_and_each_density_integrates_to_one():
    df = shapes(False)[["g", "x"]]
    auto = dl.AutoDensity(**QUICK).fit(df)
    assert auto.best_estimator_.strategy_ == "per-category"
    grid = np.linspace(-12, 40, 20001)
    masses = []
    for label in "abc":
        rows = pd.DataFrame({"g": [label] * len(grid), "x": grid})
        masses.append(np.trapezoid(np.exp(auto.score_samples(rows)), grid))
    frequencies = np.exp(auto.best_estimator_._log_frequency(np.arange(3)))
    assert frequencies.sum() == pytest.approx(1.0, abs=1e-12)  # every label seen
    np.testing.assert_allclose(np.array(masses) / frequencies, 1.0, atol=1e-3)


@pytest.mark.slow  # 32 BIC searches of Gaussian mixtures: 8 s
def test_weighted_fit_equals_the_fit_on_repeated_rows():
    df = shapes(False, n=60)[["g", "x"]]
    weights = np.ones(len(df), dtype=int)
    weights[::7] = 2  # the folds differ (drawn over distinct rows): compare one strategy
    options = {"candidates": ["gaussian-mixture"], "strategies": ["per-category"]}
    weighted = dl.CategoricalDensity(**options).fit(df, sample_weight=weights)
    repeated = dl.CategoricalDensity(**options).fit(df.loc[df.index.repeat(weights)])
    assert len(weighted.own_) == 3 and weighted.strategy_ == "per-category"
    np.testing.assert_allclose(weighted.score_samples(df), repeated.score_samples(df),
                               rtol=1e-9)
    np.testing.assert_allclose(weighted.counts_, repeated.counts_)


def test_missing_cells_are_dropped_when_asked_and_integrated_out_when_scored():
    df = shapes(False, n=60)
    holed = df.copy()
    holed.loc[5, "x"], holed.loc[70, "g"] = np.nan, None
    auto = dl.AutoDensity(missing="drop", **QUICK).fit(holed)
    assert auto.n_dropped_ == 2
    complete = dl.AutoDensity(**QUICK).fit(holed.drop(index=[5, 70]))
    np.testing.assert_allclose(auto.score_samples(df), complete.score_samples(df), rtol=1e-12)
    row = df.iloc[[0]].assign(x=np.nan)  # category a, x missing: log P(a) + log p(y | a)
    model = auto.best_estimator_
    own = model.own_[0]  # the KDE of category a's rows, marginalised over x
    expected = model._log_frequency(np.array([0]))[0] + own.score_samples(
        row[["x", "y"]].to_numpy())[0]
    assert auto.score_samples(row)[0] == pytest.approx(expected, rel=1e-12)
    unlabelled = df.iloc[[0, 100]].assign(g=None)  # a missing label: summed over the labels
    each = np.array([auto.score_samples(df.iloc[[0, 100]].assign(g=label)) for label in "abc"])
    np.testing.assert_allclose(auto.score_samples(unlabelled), np.log(np.exp(each).sum(axis=0)),
                               rtol=1e-12)
    grid = np.linspace(-15, 40, 4001)  # neither label nor y: the marginal density of x
    rows = pd.DataFrame({"g": [None] * len(grid), "x": grid, "y": np.nan})
    assert np.trapezoid(np.exp(auto.score_samples(rows)), grid) == pytest.approx(1, abs=1e-3)


def test_auto_density_by_category_round_trips_and_refuses_tampered_tables(tmp_path):
    df = shapes(False, n=60)
    auto = dl.AutoDensity(**QUICK).fit(df)
    dl.save(auto, tmp_path / "m")
    loaded = dl.load(tmp_path / "m")
    np.testing.assert_array_equal(loaded.score_samples(df), auto.score_samples(df))
    pd.testing.assert_frame_equal(loaded.sample(30, random_state=2),
                                  auto.sample(30, random_state=2))
    assert loaded.cv_results_ == auto.cv_results_ and loaded.describe_columns() == \
        auto.describe_columns()
    np.testing.assert_array_equal(loaded.recorded_out_of_fold(df), auto.oof_score_samples_)
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    for key, value, message in (("categories", [["a", "c", "b"]], "sorted list"),
                                ("strategy", "conditional-flow", "unknown model .own"),
                                ("strategy", "everything", "unknown strategy")):
        tampered = json.loads(json.dumps(config))
        tampered["config"]["best"][key] = value
        (tmp_path / "m" / "config.json").write_text(json.dumps(tampered))
        with pytest.raises(ValueError, match=message):
            dl.load(tmp_path / "m")
    config["config"]["best"]["rest"]["pooled"]["column_types"][0]["kind"] = "categorical"
    (tmp_path / "m" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="kind is not one of"):
        dl.load(tmp_path / "m")


@pytest.mark.slow  # trains conditional flows on three folds and all rows: about 20 s
def test_a_conditional_flow_shares_strength_across_many_small_categories(tmp_path):
    rng = np.random.default_rng(0)
    k, n = 6, 40  # categories too small for a model of their own (min_rows=50)
    shift = np.repeat(np.arange(k) * 1.5, n)
    x = shift + rng.normal(0, 0.4, k * n)
    df = pd.DataFrame({"g": np.repeat([f"c{i}" for i in range(k)], n), "x": x,
                       "y": 0.5 * x + rng.normal(0, 1, k * n)})
    auto = dl.AutoDensity(candidates=["flow"], random_state=0).fit(df)
    results = dict(zip(auto.cv_results_["candidate"], auto.cv_results_["mean_log_likelihood"],
                       strict=True))
    assert auto.best_estimator_.strategy_ == "conditional-flow", results
    assert results["conditional-flow"] > results["ignore-category"] + 0.5
    grid = np.linspace(-4, 12, 161)
    xx, yy = np.meshgrid(grid, grid)
    rows = pd.DataFrame({"g": "c2", "x": xx.ravel(), "y": yy.ravel()})
    mass = np.exp(auto.score_samples(rows)).sum() * (grid[1] - grid[0]) ** 2
    assert mass == pytest.approx(1 / k, rel=0.03)  # P(c2) times a density of total mass 1
    dl.save(auto, tmp_path / "m")
    loaded = dl.load(tmp_path / "m")
    np.testing.assert_allclose(loaded.score_samples(df), auto.score_samples(df), rtol=1e-12)
    drawn = loaded.sample(300, random_state=0)
    assert set(drawn["g"]) <= set(df["g"])
    for label in ("c0", "c5"):  # each category's samples sit where its rows do
        assert abs(drawn.loc[drawn["g"] == label, "x"].mean()
                   - df.loc[df["g"] == label, "x"].mean()) < 0.5


def test_figures_draw_categorical_columns_as_labelled_bars_and_the_rest_in_data_units():
    df = regions(240)
    auto = dl.AutoDensity(**QUICK).fit(df)
    fig = dl.plots.samples(auto, df, n=300)  # the pairs plot: labels need bars
    axes = np.array(fig.axes[:9]).reshape(3, 3)
    heights = [p.get_height() for p in axes[0, 0].patches if p.get_fill()]
    assert len(heights) == 3 and sum(heights) == pytest.approx(1.0)  # mass per label
    assert [t.get_text() for t in axes[2, 0].get_xticklabels()] == ["east", "north", "west"]
    low, high = axes[1, 1].get_xlim()  # price, in its own units
    assert low < df["price"].min() < df["price"].max() < high < 3 * df["price"].max()
    two = dl.CategoricalDensity(**QUICK).fit(df[["region", "price"]])
    fig = dl.plots.density(two, df[["region", "price"]], n_samples=300,
                           resolution=20)  # two columns, one of labels: bars, not a grid
    assert fig.axes[0].get_ylabel() == "region\n(marginal)"


def test_the_shell_scores_and_samples_a_saved_auto_density_of_a_table_with_text(tmp_path):
    df = regions(120)
    auto = dl.AutoDensity(**QUICK).fit(df)
    dl.save(auto, tmp_path / "m")
    points = pd.DataFrame({"region": ["east", "west", "east", "south"],
                           "price": [5.0, -2.0, -2.0, 5.0], "area": [50.0] * 4})
    points.to_csv(tmp_path / "p.csv", index=False)
    runner = CliRunner()
    result = runner.invoke(app, ["score", str(tmp_path / "m"), str(tmp_path / "p.csv"),
                                 "--contamination", "0.05", "--top", "2",
                                 "--out", str(tmp_path / "s.csv")])
    assert result.exit_code == 0, result.output
    assert "row,log_density,region,price,area\n4,-inf,south,5,50\n3," in result.output
    scores = pd.read_csv(tmp_path / "s.csv")
    np.testing.assert_allclose(scores["log_density"], auto.score_samples(points), rtol=1e-9)
    assert scores["outlier"].tolist() == [1, 1, -1, -1]
    (tmp_path / "q.csv").write_text("region,price,area\n,5.0,50\neast,,50\n")
    result = runner.invoke(app, ["score", str(tmp_path / "m"), str(tmp_path / "q.csv"),
                                 "--out", str(tmp_path / "q_scores.csv")])
    assert result.exit_code == 0 and "2 row(s) with missing cells" in result.output
    holed = pd.DataFrame({"region": [None, "east"], "price": [5.0, np.nan], "area": [50.0] * 2})
    np.testing.assert_allclose(pd.read_csv(tmp_path / "q_scores.csv")["log_density"],
                               auto.score_samples(holed), rtol=1e-9)
    detector = dl.OutlierDetector(auto, prefit=True, contamination=0.05).fit(df)
    dl.save(detector, tmp_path / "det")
    result = runner.invoke(app, ["score", str(tmp_path / "det"), str(tmp_path / "p.csv"),
                                 "--contamination", "0.05", "--top", "1",
                                 "--out", str(tmp_path / "s2.csv")])
    assert result.exit_code == 0, result.output
    assert "row,log_density,region,price,area\n4,-inf,south,5,50" in result.output
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "s2.csv"), scores)
    result = runner.invoke(app, ["sample", str(tmp_path / "m"), "-n", "40", "--seed", "1",
                                 "--out", str(tmp_path / "d.csv")])
    assert result.exit_code == 0, result.output
    drawn = pd.read_csv(tmp_path / "d.csv")
    expected = auto.sample(40, random_state=1)
    assert list(drawn.columns) == list(df) and drawn["region"].tolist() == \
        expected["region"].tolist()
    np.testing.assert_allclose(drawn["price"], expected["price"], rtol=1e-9)


@pytest.mark.slow  # trains flows: about 30 s
def test_the_shell_default_model_trains_a_table_with_text(tmp_path):
    regions(80).to_csv(tmp_path / "t.csv")  # with pandas' index column
    runner = CliRunner()
    result = runner.invoke(app, ["train", str(tmp_path / "t.csv"), "-q",
                                 "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    assert "column region: categorical (3 labels), log-probability" in result.output
    selection = pd.read_csv(tmp_path / "run" / "model_selection.csv")
    assert set(selection["candidate"]) == {"ignore-category", "per-category",
                                           "conditional-flow"}
    assert (tmp_path / "run" / "figures" / "samples.png").is_file()
    model = dl.load(tmp_path / "run" / "model")
    assert model.best_estimator_.pooled_.candidates == ("flow",)
    result = runner.invoke(app, ["sample", str(tmp_path / "run"), "-n", "20", "--out",
                                 str(tmp_path / "d.csv")])
    assert result.exit_code == 0, result.output
    assert set(pd.read_csv(tmp_path / "d.csv")["region"]) <= {"east", "west", "north"}
    result = runner.invoke(app, ["train", str(tmp_path / "t.csv"), "--epochs", "5",
                                 "--out", str(tmp_path / "run2")])
    assert isinstance(result.exception, ValueError)  # the entry point: one line, exit 2
    assert "has categorical columns" in str(result.exception)
    assert not (tmp_path / "run2").exists()
