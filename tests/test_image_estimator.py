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
