"""Every kind of run from the shell, end to end: train -> score -> sample on the saved run."""

from __future__ import annotations

import json

import numpy as np
import pytest

from densitylab.flows.recipes import MODELS
from test_cli import invoke

RUNS = [["--model", name, "--epochs", "2"] for name in MODELS] + [
    ["--model", "auto"],
    ["--condition-on", "0", "--model", "recommended", "--epochs", "2"],
    ["--condition-on", "1", "--epochs", "2"],
]


@pytest.mark.slow
@pytest.mark.parametrize("options", RUNS, ids=[" ".join(o[:4]) for o in RUNS])
def test_train_score_sample_for_every_kind_of_run(options, tmp_path):
    rng = np.random.default_rng(0)
    data = np.column_stack([rng.normal(size=160), rng.normal(size=160)])
    data[:, 1] += data[:, 0] ** 2
    np.savetxt(tmp_path / "data.csv", data, delimiter=",", header="a,b", comments="")
    points = data[:7] + 0.01
    np.savetxt(tmp_path / "points.csv", points, delimiter=",")
    run = tmp_path / "run"
    code, output = invoke("train", str(tmp_path / "data.csv"), *options, "--out", str(run),
                          "--quiet", "--seed", "1")
    assert code == 0, output

    scores = tmp_path / "scores.csv"
    code, output = invoke("score", str(run), str(tmp_path / "points.csv"), "--out", str(scores))
    assert code == 0, output
    log_p = np.loadtxt(scores, delimiter=",", skiprows=1)
    assert log_p.shape == (7,) and np.isfinite(log_p).all()

    flagged = tmp_path / "flagged.csv"
    code, output = invoke("score", str(run), str(tmp_path / "points.csv"), "--out", str(flagged),
                          "--contamination", "0.2")
    assert code == 0, output
    table = np.loadtxt(flagged, delimiter=",", skiprows=1)
    np.testing.assert_allclose(table[:, 0], log_p, rtol=1e-8)
    assert set(table[:, 1]) <= {-1.0, 1.0}

    drawn = tmp_path / "drawn.csv"
    if "--condition-on" in options:
        given = int(options[options.index("--condition-on") + 1])
        assert json.loads((run / "config.json").read_text())["condition_on"] == [given]
        code, output = invoke("sample", str(run), "-n", "5", "--out", str(drawn))
        assert code == 2 and "--given" in output
        np.savetxt(tmp_path / "given.csv", points[:, [given]], delimiter=",")
        code, output = invoke("sample", str(run), "--given", str(tmp_path / "given.csv"),
                              "--out", str(drawn))
        assert code == 0, output
        rows = np.loadtxt(drawn, delimiter=",", skiprows=1)
        np.testing.assert_array_equal(rows[:, given], points[:, given])
    else:
        code, output = invoke("sample", str(run), "-n", "5", "--out", str(drawn))
        assert code == 0, output
        rows = np.loadtxt(drawn, delimiter=",", skiprows=1)
    assert rows.shape == (len(rows), 2) and np.isfinite(rows).all()


def test_a_conditional_estimator_saved_with_its_own_options_loads(tmp_path):
    """``verbose=None`` (the progress bar on a terminal, what ``train`` passes) is one of the
    estimator's own values: the schema must accept it back."""
    import densitylab as dl
    from densitylab.estimators import ConditionalFlowDensity

    rng = np.random.default_rng(0)
    c = rng.normal(size=(60, 1))
    est = ConditionalFlowDensity(n_layers=1, hidden=(4,), epochs=1, verbose=None,
                                 standardize=None).fit(c, c[:, 0] + rng.normal(size=60))
    dl.save(est, tmp_path / "m")
    loaded = dl.load(tmp_path / "m")
    assert loaded.get_params() == {**est.get_params(), "hidden": (4,)}
    np.testing.assert_allclose(loaded.score_samples(c, c), est.score_samples(c, c))
