"""The defensive component of the flow estimators (densitylab.guard): FlowDensity's density is
``(1 - eps) flow + eps N(m, diag(s^2))``, a normalised density sampled exactly, bounded below
off the data, saved and reloaded as it is, and the plain flow when ``guard=0``.

Most tests wrap an untrained flow (a real, normalised density) in a FlowDensity by ``restore``,
as :func:`densitylab.load` does: the guard's mathematics does not depend on training."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy.stats import norm

import densitylab as dl
from densitylab.estimators import FlowDensity
from densitylab.evaluation import flow_log_prob, flow_samples
from densitylab.flows import build
from densitylab.guard import GUARD_WEIGHT, WIDEN, Guard

MEAN, SD = np.array([0.5, -1.0]), np.array([1.5, 0.7])


def wrapped(eps: float | None, mean=MEAN, sd=SD, seed: int = 0) -> FlowDensity:
    """An untrained 2-D RealNVP as a fitted FlowDensity, guarded by ``N(mean, diag(sd^2))``
    of weight ``eps`` (``None``: no guard)."""
    est = FlowDensity(model="realnvp", guard=eps)
    guard = None if eps is None else Guard(eps, np.asarray(mean, float), np.asarray(sd, float))
    est.restore(build("realnvp", dim=2, seed=seed),
                {"best_epoch": 1, "best_val_nll": 1.0, "shift": [0.0, 0.0],
                 "guard": None if guard is None else guard.summary()})
    return est


def test_the_guarded_density_integrates_to_one_on_a_grid():
    est = wrapped(0.3)  # a large weight: a wrong normalisation of either part would show
    t = np.linspace(-14, 14, 561)
    a, b = np.meshgrid(t, t)
    density = np.exp(est.score_samples(np.c_[a.ravel(), b.ravel()]))
    assert np.trapezoid(np.trapezoid(density.reshape(a.shape), t, axis=1), t) \
        == pytest.approx(1.0, abs=2e-3)


def test_the_guard_costs_at_most_log_one_minus_eps_and_bounds_far_points():
    guarded, plain = wrapped(0.01), wrapped(None)
    x = np.random.default_rng(0).normal(scale=6.0, size=(4000, 2))
    ours, theirs = guarded.score_samples(x), plain.score_samples(x)
    assert np.all(ours >= theirs + math.log1p(-0.01) - 1e-12)
    assert np.all(ours >= math.log(0.01) + norm.logpdf(x, MEAN, SD).sum(axis=1) - 1e-12)
    # a far point: the flow's Gaussian tail gives it about -2300 nats, the guard's Gaussian
    # (twice the flow's unit spread, as for data of unit spread) about -660
    far, wide = np.array([[60.0, -40.0]]), wrapped(0.01, mean=[0.0, 0.0], sd=[2.0, 2.0])
    floor = math.log(0.01) + norm.logpdf(far, 0.0, 2.0).sum(axis=1)
    assert plain.score_samples(far)[0] < -2000 and floor[0] > -700
    np.testing.assert_allclose(wide.score_samples(far), floor, rtol=1e-12)


def test_a_share_eps_of_the_samples_comes_from_the_gaussian():
    eps, far = 0.3, np.array([100.0, -100.0])  # the Gaussian far from the flow's mass
    est = wrapped(eps, mean=far, sd=[1.0, 2.0])
    draws = est.sample(20000, random_state=3)
    wide = np.linalg.norm(draws - far, axis=1) < 30
    assert abs(wide.mean() - eps) < 4 * math.sqrt(eps * (1 - eps) / 20000)
    np.testing.assert_allclose(draws[wide].mean(axis=0), far, atol=0.1)
    np.testing.assert_allclose(draws[wide].std(axis=0), [1.0, 2.0], rtol=0.05)
    # the rest are the flow's own draws, unchanged
    np.testing.assert_array_equal(draws[~wide], wrapped(None).sample(20000, 3)[~wide])


def test_guard_zero_is_the_plain_flow_exactly():
    x = np.random.default_rng(1).normal(size=(50, 2))
    est = wrapped(None)
    assert est.guard_weight_ == 0.0
    np.testing.assert_array_equal(est.score_samples(x), flow_log_prob(est.flow_, x))
    np.testing.assert_array_equal(est.sample(30, random_state=2),
                                  flow_samples(est.flow_, 30, 2))


def test_save_and_load_keep_the_guard_and_refuse_a_tampered_one(tmp_path):
    est = wrapped(0.05)
    x = np.random.default_rng(2).normal(scale=3.0, size=(40, 2))
    dl.save(est, tmp_path / "m")
    back = dl.load(tmp_path / "m")
    assert back.guard_weight_ == 0.05
    np.testing.assert_array_equal(back.score_samples(x), est.score_samples(x))
    np.testing.assert_array_equal(back.sample(25, random_state=4), est.sample(25, 4))
    config_file = tmp_path / "m" / "config.json"
    saved = json.loads(config_file.read_text())
    for field, value, message in [("weight", 1.5, "guard"), ("weight", 0.0, "guard"),
                                  ("mean", [0.0], "mean"), ("mean", [0.0, "nan"], "mean"),
                                  ("sd", [1.0, -1.0], "sd"), ("sd", [1.0, 0.0], "sd")]:
        tampered = json.loads(json.dumps(saved))
        tampered["config"]["fitted"]["guard"][field] = value
        config_file.write_text(json.dumps(tampered))
        with pytest.raises(ValueError, match=message):
            dl.load(tmp_path / "m")
    tampered = json.loads(json.dumps(saved))
    tampered["config"]["fitted"]["guard"]["extra"] = 1
    config_file.write_text(json.dumps(tampered))
    with pytest.raises(ValueError, match="exactly weight, mean and sd"):
        dl.load(tmp_path / "m")


def test_the_outlier_detector_scores_through_the_guard():
    x = np.random.default_rng(3).normal(size=(60, 2))
    detector = dl.OutlierDetector(FlowDensity(model="realnvp", epochs=1, guard=0.01), cv=2,
                                  contamination=0.05).fit(x)
    assert detector.estimator_.guard_weight_ == 0.01
    far = np.array([[60.0, -40.0]])
    guard = detector.estimator_._guard
    np.testing.assert_allclose(detector.score_samples(far),
                               math.log(0.01) + guard.log_density(far), rtol=1e-9)


def test_the_guard_of_data_is_the_data_mean_and_twice_its_spread():
    x = np.random.default_rng(4).normal([3.0, -2.0, 0.0], [1.0, 5.0, 0.0], size=(500, 3))
    guard = Guard.of_data(x, GUARD_WEIGHT)
    np.testing.assert_allclose(guard.mean, x.mean(axis=0))
    np.testing.assert_allclose(guard.sd, WIDEN * np.r_[x.std(axis=0)[:2], 1.0])
    weights = np.r_[np.ones(250), np.zeros(250)]  # zero weights: the first half's spread
    np.testing.assert_allclose(Guard.of_data(x, 0.01, weights).mean, x[:250].mean(axis=0))


@pytest.mark.parametrize("guard", [-0.1, 1.0, True, "0.01"])
def test_a_bad_guard_weight_is_refused_before_training(guard):
    with pytest.raises(ValueError, match="guard must be"):
        FlowDensity(guard=guard).fit(np.zeros((10, 2)))


def test_the_tabular_recipe_is_guarded_by_default_and_the_guard_leaves_training_alone():
    x = np.random.default_rng(5).normal([10.0, 0.0], [3.0, 0.1], size=(300, 2))
    guarded = FlowDensity(epochs=2).fit(x)
    plain = FlowDensity(epochs=2, guard=0.0).fit(x)
    assert guarded.guard_weight_ == GUARD_WEIGHT and plain.guard_weight_ == 0.0
    assert FlowDensity(model="realnvp", epochs=1).fit(x).guard_weight_ == 0.0  # coursework
    for a, b in zip(guarded.flow_.state_dict().values(), plain.flow_.state_dict().values(),
                    strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())  # the same flow, trained alike
    np.testing.assert_allclose(guarded._guard.mean, x.mean(axis=0))
    np.testing.assert_allclose(guarded._guard.sd, 2 * x.std(axis=0))
    probe = np.r_[x[:20], [[10.0, 5.0]]]  # the last: 50 standard deviations off column 2
    np.testing.assert_allclose(
        guarded.score_samples(probe),
        guarded._guard.mix(plain.score_samples(probe), probe), rtol=1e-12)


@pytest.mark.slow  # (4-5 s: a training run and a scoring run of the command line)
def test_the_shell_scores_and_saves_the_guarded_flow_python_loads(tmp_path):
    from typer.testing import CliRunner

    from densitylab.cli import app

    rng = np.random.default_rng(6)
    data, points = tmp_path / "table.csv", tmp_path / "points.csv"
    np.savetxt(data, rng.normal([5.0, 0.0], [2.0, 0.1], size=(200, 2)), delimiter=",",
               header="a,b", comments="")
    np.savetxt(points, np.r_[rng.normal([5.0, 0.0], [2.0, 0.1], size=(5, 2)), [[5.0, 3.0]]],
               delimiter=",", header="a,b", comments="")
    run = tmp_path / "run"
    result = CliRunner().invoke(app, ["train", str(data), "--epochs", "2", "--out", str(run),
                                      "-q"])
    assert result.exit_code == 0, result.output
    model = dl.load(run / "model")
    assert isinstance(model, FlowDensity) and model.guard_weight_ == GUARD_WEIGHT
    assert json.loads((run / "config.json").read_text())["guard"] == GUARD_WEIGHT
    result = CliRunner().invoke(app, ["score", str(run), str(points), "--out",
                                      str(tmp_path / "scores.csv")])
    assert result.exit_code == 0, result.output
    shell = np.loadtxt(tmp_path / "scores.csv", skiprows=1)
    python = model.score_samples(np.loadtxt(points, delimiter=",", skiprows=1))
    np.testing.assert_allclose(shell, python, rtol=1e-9)  # (the shell writes 10 digits)
    # 30 standard deviations off column b: bounded below by the guard's Gaussian
    floor = math.log(GUARD_WEIGHT) + model._guard.log_density(np.array([[5.0, 3.0]]))
    assert shell[-1] >= floor[0] - 1e-6


@pytest.mark.parametrize(("extra", "message"), [
    (["--guard", "1.5"], "guard must be"),
    (["--guard", "0.01", "--model", "auto"], "--guard applies"),
])
def test_the_shell_refuses_a_bad_or_misplaced_guard(tmp_path, extra, message):
    from typer.testing import CliRunner

    from densitylab.cli import app

    data = tmp_path / "table.csv"
    np.savetxt(data, np.random.default_rng(7).normal(size=(40, 2)), delimiter=",")
    result = CliRunner().invoke(app, ["train", str(data), "--out", str(tmp_path / "run"),
                                      *extra])
    assert isinstance(result.exception, ValueError) and message in str(result.exception)
    assert not (tmp_path / "run").exists()


@pytest.mark.slow  # (about 3 s: a training run of the command line)
def test_a_guarded_run_writes_the_guarded_density_s_numbers(tmp_path):
    from typer.testing import CliRunner

    from densitylab.cli import app

    run = tmp_path / "run"
    result = CliRunner().invoke(app, ["train", "moons", "--model", "tabular", "--epochs", "2",
                                      "-n", "300", "--n-test", "500", "--seed", "8",
                                      "--out", str(run), "-q"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((run / "metrics.json").read_text())
    model = dl.load(run / "model")
    test = dl.datasets.get("moons").sample(500, seed=9)  # train's test points: seed + 1
    assert metrics["guard_weight"] == GUARD_WEIGHT
    assert metrics["test_nll"] == pytest.approx(-model.score_samples(test).mean(), rel=1e-12)
    assert metrics["entropy_gap"] == pytest.approx(metrics["test_nll"] - metrics["entropy"])
    assert 0 <= metrics["grid"]["tv"] <= 1  # the guarded density's grid divergences


def test_the_conditional_flow_carries_the_guard_as_a_density_of_y_for_every_x(tmp_path):
    from densitylab.estimators import ConditionalFlowDensity

    rng = np.random.default_rng(8)
    c = rng.uniform(-1, 1, size=(200, 1))
    y = np.c_[np.sin(3 * c[:, 0]), c[:, 0]] + 0.1 * rng.normal(size=(200, 2))
    est = ConditionalFlowDensity(n_layers=1, hidden=(8,), epochs=2).fit(c, y)
    plain = ConditionalFlowDensity(guard=0)  # the same flow without its guard, as load makes it
    plain.restore(est.flow_, {**est.fitted_summary(), "guard": None})
    assert est.guard_weight_ == GUARD_WEIGHT and plain.guard_weight_ == 0.0
    np.testing.assert_allclose(est._guard.sd, 2 * y.std(axis=0))
    # for one condition, the guarded conditional density of y integrates to 1
    t = np.linspace(-8, 8, 201)
    a, b = np.meshgrid(t, t)
    grid = np.c_[a.ravel(), b.ravel()]
    density = np.exp(est.score_samples(np.full((len(grid), 1), 0.3), grid)).reshape(a.shape)
    assert np.trapezoid(np.trapezoid(density, t, axis=1), t) == pytest.approx(1.0, abs=2e-3)
    x = np.r_[c[:20], [[40.0]]]  # the last: a condition far outside the training range
    np.testing.assert_allclose(est.score_samples(x, y[:21]),
                               est._guard.mix(plain.score_samples(x, y[:21]), y[:21]),
                               rtol=1e-12)
    dl.save(est, tmp_path / "c")
    back = dl.load(tmp_path / "c")
    np.testing.assert_array_equal(back.score_samples(x, y[:21]), est.score_samples(x, y[:21]))
    np.testing.assert_array_equal(back.sample(x, random_state=1), est.sample(x, 1))
