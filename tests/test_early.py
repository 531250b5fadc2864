"""What is knowable before training is refused before training: nothing written, no
checkpoint left behind, no traceback; and the small API contracts."""

from __future__ import annotations

import time

import numpy as np
import pytest

import densitylab as dl
from test_cli import invoke


def write(path, x):
    np.savetxt(path, x, delimiter=",")
    return str(path)


@pytest.mark.parametrize("model", ["realnvp", "glow", "maf", "auto"])
def test_a_constant_column_is_refused_before_training(tmp_path, model):
    """Before: realnvp and maf reported a meaningless test NLL, glow failed after training."""
    x = np.random.default_rng(0).normal(size=(60, 3))
    x[:, 1] = 5.0
    code, output = invoke("train", write(tmp_path / "d.csv", x), "--model", model,
                          "--epochs", "2", "--out", str(tmp_path / "run"), "-q")
    assert code == 2 and "column 1 of" in output and "constant" in output
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("args", [
    ["three.csv"],  # 3 rows: nothing to train on and test on
    ["moons", "--n-test", "1"],  # one test point has no standard error
    ["moons", "--hidden", "100000,100000"],  # 8e10 parameters: refused, not allocated
    ["moons", "--model", "recommended", "--hidden", "100000,100000"],
])
def test_hopeless_runs_are_refused_at_once(tmp_path, args):
    write(tmp_path / "three.csv", np.random.default_rng(0).normal(size=(3, 2)))
    args = [str(tmp_path / a) if a.endswith(".csv") else a for a in args]
    start = time.perf_counter()
    code, output = invoke("train", *args, "--epochs", "2", "--out", str(tmp_path / "run"), "-q")
    assert code == 2 and output.startswith("error:") and len(output.strip().splitlines()) == 1
    assert time.perf_counter() - start < 5 and not (tmp_path / "run").exists()


@pytest.mark.slow
def test_thirty_columns_skip_the_pairs_figure_with_a_note(tmp_path):
    """Before: 134 s for 3 epochs, nearly all of it drawing a 7020x6960-pixel figure."""
    x = np.random.default_rng(0).normal(size=(200, 30))
    start = time.perf_counter()
    code, output = invoke("train", write(tmp_path / "wide.csv", x), "--epochs", "1",
                          "--layers", "2", "--hidden", "8", "--out", str(tmp_path / "run"), "-q")
    assert code == 0, output
    assert "pairs figure (30x30 panels) is skipped" in output
    assert not (tmp_path / "run" / "figures" / "density.png").exists()
    assert time.perf_counter() - start < 30


def test_fourier_octaves_beyond_float_precision_are_refused():
    """Before: fourier=2000 trained 'successfully' with a best validation NLL of inf."""
    with pytest.raises(ValueError, match="fourier must be an integer in 0..20"):
        dl.flows.realnvp(dim=2, fourier=2000)
    assert dl.flows.realnvp(dim=2, fourier=20).dim == 2


def test_complex_input_is_refused():
    """Before: the imaginary parts were dropped silently."""
    z = np.random.default_rng(0).normal(size=(50, 2)) * (1 + 1j)
    with pytest.raises(ValueError, match="complex"):
        dl.KDE().fit(z)
    kde = dl.KDE().fit(z.real)
    with pytest.raises(ValueError, match="complex"):
        kde.score_samples(z)


@pytest.mark.parametrize("flag", ["standardize", "dequantize", "verbose"])
def test_a_string_is_not_a_boolean(flag):
    """Before: standardize="no" was read as True."""
    with pytest.raises(ValueError, match=f"{flag} must be True, False or None"):
        dl.FlowDensity(epochs=1, **{flag: "no"}).fit(np.random.default_rng(0).normal(size=(20, 2)))


def test_sample_sizes_must_be_positive_integers():
    """Before: sample(2.5) and sample("3") failed inside torch."""
    x = np.random.default_rng(0).normal(size=(40, 2))
    for model in (dl.FlowDensity(n_layers=1, hidden=(4,), epochs=1).fit(x), dl.KDE().fit(x),
                  dl.AutoDensity(candidates=["gaussian-mixture"]).fit(x)):
        for n in (2.5, "3", 0, True):
            with pytest.raises(ValueError, match="n_samples must be an integer"):
                model.sample(n)
        assert model.sample(3).shape == (3, 2)
