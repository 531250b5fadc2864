"""ImageFlow: fit, bits/dim, sampling at a temperature, save/load with identical scores, and
one-line errors for bad images."""

from __future__ import annotations

import numpy as np
import pytest

import densitylab as dl


@pytest.fixture(scope="module")
def digits():
    x = dl.datasets.images("digits")
    train, val, test = dl.datasets.image_split(len(x))
    return x[train[:200]], x[val[:40]], x[test[:30]]


@pytest.fixture(scope="module")
def fitted(digits):
    train, val, _ = digits
    return dl.ImageFlow(steps=1, hidden=8, epochs=2, random_state=0).fit(train, X_val=val)


def test_fit_scores_in_bits_per_dim_and_samples(fitted, digits):
    test = digits[2]
    bpd = fitted.score_samples(test)
    assert bpd.shape == (30,) and np.isfinite(bpd).all()
    assert 0 < bpd.mean() < np.log2(17) + 1  # well below a flat model's log2(17)+ slack
    ll = fitted.log_likelihood(test)
    assert np.allclose(bpd, -ll / (64 * np.log(2)))
    assert fitted.pixel_levels_ == 17 and fitted.image_shape_ == (1, 8, 8)
    samples = fitted.sample(5, temperature=0.7, random_state=1)
    assert samples.shape == (5, 1, 8, 8) and samples.dtype == np.int64
    assert samples.min() >= 0 and samples.max() <= 16
    assert np.array_equal(samples, fitted.sample(5, temperature=0.7, random_state=1))


def test_save_and_load_give_identical_bits_per_dim(fitted, digits, tmp_path):
    dl.save(fitted, tmp_path / "model")
    loaded = dl.load(tmp_path / "model")
    assert isinstance(loaded, dl.ImageFlow)
    assert np.array_equal(loaded.score_samples(digits[2]), fitted.score_samples(digits[2]))
    assert loaded.get_params() == fitted.get_params()


def test_variational_dequantization_trains_and_reloads(digits, tmp_path):
    train, val, test = digits
    est = dl.ImageFlow(model="realnvp", steps=1, hidden=8, epochs=1,
                       dequantization="variational").fit(train, X_val=val)
    assert np.isfinite(est.score_samples(test)).all()
    dl.save(est, tmp_path / "m")
    assert np.array_equal(dl.load(tmp_path / "m").score_samples(test), est.score_samples(test))


@pytest.mark.parametrize("bad, message", [
    (np.full((5, 8, 8), 0.5), "floats outside"),
    (np.zeros((5, 8)), "shape"),
    (np.full((5, 1, 8, 8), 20), "outside the model's 17 levels"),
    (np.zeros((5, 1, 4, 4), int), "fitted on"),
])
def test_bad_images_are_refused_in_one_line(fitted, bad, message):
    with pytest.raises(ValueError, match=message) as err:
        fitted.score_samples(bad)
    assert "\n" not in str(err.value)


def test_bad_hyper_parameters_are_refused(digits):
    with pytest.raises(ValueError, match="unknown image model"):
        dl.ImageFlow(model="pixelcnn").fit(digits[0])
    with pytest.raises(ValueError, match="temperature"):
        dl.ImageFlow(steps=1, hidden=4, epochs=1).fit(digits[0]).sample(2, temperature=-1)


@pytest.mark.slow
def test_cli_trains_scores_and_samples_an_image_run(tmp_path):
    import json

    from typer.testing import CliRunner

    from densitylab.cli import app

    runner = CliRunner()
    run = tmp_path / "run"
    result = runner.invoke(app, ["train", "digits-images", "--model", "realnvp", "--layers", "1",
                                 "--hidden", "4", "--epochs", "1", "--out", str(run), "-q"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((run / "metrics.json").read_text())
    config = json.loads((run / "config.json").read_text())
    assert config["pixel_levels"] == 17 and config["split"]["test"] == 397
    assert {"samples.png", "interpolation.png", "scales.png", "layers.png",
            "dequantization.png"} <= {p.name for p in (run / "figures").iterdir()}
    x = dl.datasets.images("digits")
    _, _, test = dl.datasets.image_split(len(x))
    loaded = dl.load(run / "model")
    assert np.isclose(loaded.score_samples(x[test]).mean(), metrics["test_bits_per_dim"])
    np.save(tmp_path / "few.npy", x[:4, 0])
    scored = runner.invoke(app, ["score", str(run), str(tmp_path / "few.npy"),
                                 "--out", str(tmp_path / "s.csv")])
    assert scored.exit_code == 0, scored.output
    values = np.loadtxt(tmp_path / "s.csv", skiprows=1, delimiter=",")
    assert np.array_equal(values.round(4), loaded.log_likelihood(x[:4]).round(4))
    sampled = runner.invoke(app, ["sample", str(run), "-n", "3", "--out",
                                  str(tmp_path / "x.csv")])
    assert sampled.exit_code == 0
    assert np.loadtxt(tmp_path / "x.csv", skiprows=1, delimiter=",").shape == (3, 64)


@pytest.mark.slow
@pytest.mark.parametrize("args, message", [
    (["digits-images", "--model", "nsf"], "image model"),
    (["missing-folder", "--images", "--model", "glow"], "not a built-in image set"),
    (["digits-images", "--dequantization", "gauss", "--model", "glow", "--epochs", "1"],
     "unknown dequantization"),
])
def test_cli_image_errors_are_one_line(tmp_path, args, message):
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "densitylab", "train", *args, "--out",
                           str(tmp_path / "r")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and message in done.stderr
    assert done.stderr.strip().count("\n") == 0 and not (tmp_path / "r").exists()


def test_image_figures_of_a_fitted_flow(fitted, digits):
    from matplotlib.figure import Figure

    from densitylab.image_figures import image_figures

    figures = image_figures(fitted, digits[2], seed=0)
    assert set(figures) == {"samples", "interpolation", "scales", "dequantization", "layers"}
    for figure in figures.values():
        assert isinstance(figure, Figure) and figure.get_suptitle()
    flow = fitted.flow_
    variants = flow.resample_scales(digits[2][0], 0, 4, temperature=0.0, seed=0)
    # temperature 0 on the finest scale: every variant gets the same (zero) fine latents
    assert (variants == variants[:1]).all()
    line = flow.interpolate(digits[2][0], digits[2][1], steps=5)
    assert line.shape == (5, 1, 8, 8)


@pytest.mark.slow
def test_the_images_study_runs_quick(tmp_path):
    from densitylab import experiments

    assert "images" in experiments.names()
    outcome = experiments.run("images", tmp_path / "images", quick=True)
    assert "bits/dim" in " ".join(outcome.findings) and outcome.tables[0].rows
    assert (tmp_path / "images" / "figures" / "novelty.png").is_file()


@pytest.mark.slow
def test_cli_trains_an_image_flow_under_torchrun_as_one_process_does(tmp_path):
    import json
    import subprocess
    import sys

    common = ["digits-images", "--model", "glow", "--layers", "1", "--hidden", "4", "--epochs",
              "2", "-q"]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                "--nproc-per-node", "2", "-m", "densitylab", "train"]
    done = subprocess.run([*torchrun, *common, "--distributed", "--out", str(tmp_path / "p")],
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("wrote") == 1
    alone = subprocess.run([sys.executable, "-m", "densitylab", "train", *common, "--out",
                            str(tmp_path / "a")], capture_output=True, text=True, timeout=240)
    assert alone.returncode == 0, alone.stderr[-3000:]
    bpd = [json.loads((tmp_path / run / "metrics.json").read_text())["test_bits_per_dim"]
           for run in ("p", "a")]
    assert abs(bpd[0] - bpd[1]) < 1e-3  # the same model, up to float32 rounding
