"""The command line as a user runs it: outputs written, errors one clear line, nothing half-done."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from densitylab.cli import app, main

runner = CliRunner()


def invoke(*args: str):
    """Run the CLI in-process the way the entry point does (errors become one line, exit 2)."""
    result = runner.invoke(app, list(args), catch_exceptions=True)
    if isinstance(result.exception, ValueError | FileNotFoundError):
        return 2, f"error: {result.exception}"
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.output


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "moons"
    code, output = invoke("train", "moons", "--epochs", "3", "-n", "300", "--n-test", "500",
                          "--out", str(out), "--quiet")
    assert code == 0, output
    return out


def test_help_everywhere():
    for command in ([], ["train"], ["sample"], ["score"], ["run"], ["reproduce"], ["datasets"]):
        code, output = invoke(*command, "--help")
        assert code == 0 and "Usage" in output
    completed = subprocess.run([sys.executable, "-m", "densitylab", "--help"],
                               capture_output=True, text=True, check=True)
    assert "train" in completed.stdout and "reproduce" in completed.stdout


def test_train_writes_the_run_directory(trained_run):
    names = {p.name for p in trained_run.iterdir()}
    assert names == {".densitylab", "config.json", "metrics.json", "history.csv", "model",
                     "figures"}
    metrics = json.loads((trained_run / "metrics.json").read_text())
    assert metrics["entropy"] == pytest.approx(1.0076, abs=1e-3)
    assert metrics["test_nll"] > metrics["entropy"] - 0.1
    assert len((trained_run / "history.csv").read_text().splitlines()) == 4
    figures = {p.name for p in (trained_run / "figures").iterdir()}
    assert {"loss.png", "density.png", "samples.png", "latent.png", "layers.png"} <= figures


def test_sample_and_score(trained_run, tmp_path):
    code, output = invoke("sample", str(trained_run), "-n", "50", "--out", str(tmp_path / "s.csv"))
    assert code == 0, output
    samples = np.loadtxt(tmp_path / "s.csv", delimiter=",", skiprows=1)
    assert samples.shape == (50, 2)
    code, output = invoke("score", str(trained_run), str(tmp_path / "s.csv"),
                          "--out", str(tmp_path / "scores.csv"))
    assert code == 0, output
    scores = np.loadtxt(tmp_path / "scores.csv", skiprows=1)
    assert scores.shape == (50,) and np.isfinite(scores).all()


def test_train_on_a_user_file(tmp_path):
    data = np.random.default_rng(0).normal(size=(200, 3))
    np.save(tmp_path / "mine.npy", data)
    code, output = invoke("train", str(tmp_path / "mine.npy"), "--epochs", "2", "--layers", "2",
                          "--out", str(tmp_path / "run"), "-q")
    assert code == 0, output
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["n_test"] == 40 and "entropy" not in metrics


@pytest.mark.slow
def test_train_a_spline_flow_and_the_quality_recipe(tmp_path):
    code, output = invoke("train", "moons", "--model", "nsf", "--standardize", "--epochs", "2",
                          "-n", "300", "--n-test", "500", "--out", str(tmp_path / "nsf"), "-q")
    assert code == 0, output
    assert json.loads((tmp_path / "nsf" / "config.json").read_text())["flow"]["builder"] == "nsf"
    code, output = invoke("train", "moons", "--scale", "tanh", "--activation", "tanh", "--ema",
                          "0.9", "--epochs", "3", "-n", "300", "--n-test", "500",
                          "--out", str(tmp_path / "recipe"), "-q")
    assert code == 0, output
    config = json.loads((tmp_path / "recipe" / "config.json").read_text())
    assert config["ema"] == 0.9
    assert config["flow"]["scale"] == "tanh" and config["flow"]["activation"] == "tanh"


@pytest.mark.slow  # two trainings from the shell: the full run's
@pytest.mark.parametrize("model", ["maf", "tabular-maf"])
def test_train_a_masked_autoregressive_flow(tmp_path, model):
    # --scale belongs to RealNVP and Glow; the MAF builder takes no such option
    code, output = invoke("train", "moons", "--model", model, "--epochs", "2", "-n", "300",
                          "--n-test", "500", "--out", str(tmp_path / model), "-q")
    assert code == 0, output
    assert json.loads((tmp_path / model / "config.json").read_text())["flow"]["builder"] == "maf"


@pytest.mark.slow
def test_train_the_recommended_model_with_its_recipe(tmp_path):
    from densitylab.flows import RECOMMENDED_MODEL

    code, output = invoke("train", "moons", "--model", "recommended", "-n", "300", "--n-test",
                          "500", "--lr", "1e-3", "--epochs", "2", "--out", str(tmp_path / "rec"),
                          "-q")
    assert code == 0, output
    config = json.loads((tmp_path / "rec" / "config.json").read_text())
    assert config["flow"]["builder"] == "nsf" and config["flow"]["standardize"] is True
    assert config["flow"]["fourier"] == RECOMMENDED_MODEL["fourier"]
    assert (config["layers"], config["batch_size"], config["schedule"]) == (6, 256, "cosine")
    assert config["lr"] == 1e-3 and config["epochs"] == 2  # what the user sets wins


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "nowhere.csv", "--out", "x"], "nowhere.csv"),
        (["train", "moons", "--activation", "swish", "--out", "x"], "swish"),
        (["train", "moons", "--hidden", "32,a", "--out", "x"], "--hidden"),
        (["train", "moons", "--model", "spam", "--epochs", "1", "--out", "x"], "spam"),
        (["train", "moons", "--epochs", "0", "--out", "x"], "epochs"),
        (["train", "moons", "--schedule", "linear", "--out", "x"], "linear"),
        (["run", "no-such-experiment", "--out", "x"], "no-such-experiment"),
        (["train", "moons", "--device", "tpu", "--out", "x"], "unknown device 'tpu'"),
        (["kde", "moons", "--device", "tpu", "--out", "x"], "unknown device 'tpu'"),
        (["train", "moons", "--hidden", "", "--out", "x"], "got ''"),
        (["train", "moons", "--n-test", "0", "--out", "x"], "--n-test"),
        (["train", "moons", "--threads", "0", "--out", "x"], "--threads"),
        (["train", "moons", "--condition-on", "0", "--threads", "2", "--out", "x"], "--threads"),
        (["kde", "moons", "--resolution", "100000", "--out", "x"], "--resolution"),
        (["kde", "moons", "-b", "1e-200", "-n", "100", "--out", "x"], "bandwidth too small"),
    ],
)
def test_errors_are_one_line_and_write_nothing(tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    code, output = invoke(*args)
    assert code == 2 and message in output and "Traceback" not in output
    assert not (tmp_path / "x").exists()


def test_entry_point_prints_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["densitylab", "score", "missing-run", "p.csv", "--out", "o"])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err


@pytest.mark.slow
def test_experiments_listing_and_quick_run(tmp_path):
    code, output = invoke("experiments")
    assert code == 0 and "depth" in output and "flows-per-dataset" in output
    code, output = invoke("run", "depth", "--out", str(tmp_path / "depth"), "--quick", "-q")
    assert code == 0, output
    outcome = json.loads((tmp_path / "depth" / "outcome.json").read_text())
    assert "K=4" in " ".join(outcome["findings"]) and set(outcome["metrics"]) == {"K=2", "K=4"}
    metrics = json.loads((tmp_path / "depth" / "metrics.json").read_text())
    assert metrics["K=4"]["test_nll"] == outcome["metrics"]["K=4"]["test_nll"]
    written = (tmp_path / "depth" / "findings.md").read_text()
    assert written.startswith(f"# {outcome['title']}\n\n{outcome['findings'][0]}\n\n- ")
    assert all(f"- {line}\n" in written for line in outcome["findings"][1:])
    assert outcome["findings"][0] in output  # the summary, then the bullets, on the terminal


def test_resume_of_a_finished_run_is_refused(trained_run):
    code, output = invoke("train", "moons", "--epochs", "3", "-n", "300", "--n-test", "500",
                          "--out", str(trained_run), "--quiet", "--resume")
    assert code == 2 and "nothing to resume" in output


@pytest.mark.slow
def test_a_diverged_run_exits_3_and_is_refused_by_score(tmp_path):
    out = tmp_path / "diverged"
    with pytest.warns(RuntimeWarning, match="diverged"):
        code, output = invoke("train", "moons", "--lr", "10", "--epochs", "30", "-n", "300",
                              "--n-test", "300", "--out", str(out), "-q")
    assert code == 3 and "untrained" in output
    assert json.loads((out / "metrics.json").read_text())["trained"] is False
    np.savetxt(tmp_path / "p.csv", np.zeros((3, 2)), delimiter=",")
    code, output = invoke("score", str(out), str(tmp_path / "p.csv"), "--out",
                          str(tmp_path / "s.csv"))
    assert code == 2 and "--allow-untrained" in output and not (tmp_path / "s.csv").exists()
    code, output = invoke("score", str(out), str(tmp_path / "p.csv"), "--out",
                          str(tmp_path / "s.csv"), "--allow-untrained")
    assert code == 0, output


def test_error_messages_keep_their_quotes(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["densitylab", "train", "moons", "--hidden", "8,a",
                                      "--out", "x"])
    with pytest.raises(SystemExit):
        main()
    assert capsys.readouterr().err.strip().endswith("got '8,a'")  # the closing quote stays


def test_train_on_one_column_data_with_a_spline_flow(tmp_path):
    x = np.random.default_rng(0).gamma(2.0, size=(300, 1))
    np.savetxt(tmp_path / "one.csv", x)
    code, output = invoke("train", str(tmp_path / "one.csv"), "--model", "nsf", "--standardize",
                          "--epochs", "3", "--out", str(tmp_path / "run"), "-q")
    assert code == 0, output
    assert {p.name for p in (tmp_path / "run" / "figures").iterdir()} == {
        "loss.png", "density.png", "samples.png"}
    code, output = invoke("train", str(tmp_path / "one.csv"), "--model", "realnvp",
                          "--out", str(tmp_path / "r2"))
    assert code == 2 and "use nsf or maf" in output


def test_kde_with_a_cross_validated_bandwidth_draws_its_figure(tmp_path):
    """cv chooses the kernel's shape too (no single factor): the figure still says what it is."""
    code, output = invoke("kde", "moons", "-b", "cv", "-n", "300", "--resolution", "30",
                          "--out", str(tmp_path / "k"))
    assert code == 0, output
    assert (tmp_path / "k" / "figures" / "density.png").is_file()
