"""VAE and GAN baselines: the VAE's likelihood estimates reach the truth where the model family
contains it, the GAN's samples move onto the data, and seeds, persistence, bad options and
divergence behave as in ``densitylab.fit``."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import multivariate_normal

import densitylab as dl
from densitylab.baselines import GAN, VAE, fit_gan, fit_vae
from densitylab.metrics import energy_distance

MU = np.array([1.0, -2.0])
SIGMA = np.array([[4.0, 1.6], [1.6, 1.0]])  # std (2, 1): standardisation's Jacobian is -log 2


def gaussian(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).multivariate_normal(MU, SIGMA, size=n)


def parameters(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


@pytest.fixture(scope="module")
def linear_vae() -> tuple[VAE, np.ndarray]:
    """A linear-Gaussian VAE (the family holds N(MU, SIGMA) exactly) fitted to it."""
    result = fit_vae(VAE(2, latent_dim=2, hidden=(), seed=0), gaussian(1000, 0), epochs=30,
                     batch_size=100, lr=2e-2, seed=0, standardize=True, verbose=False)
    assert result.stop_reason == "completed" and result.epochs_run == 30
    return result.model, gaussian(1000, 1)


def test_iw_estimate_reaches_the_true_log_density(linear_vae):
    vae, test = linear_vae
    truth = multivariate_normal(MU, SIGMA).logpdf(test).mean()
    untrained, _ = VAE(2, hidden=(), seed=0).log_prob_iw(test, k=1000, seed=0)
    assert abs(untrained.mean().item() - truth) > 0.5  # the check below can fail
    log_p, se = vae.log_prob_iw(test, k=1000, seed=0)
    elbo = vae.elbo(test, seed=0)
    assert log_p.shape == se.shape == elbo.shape == (1000,)
    assert log_p.mean().item() == pytest.approx(truth, abs=0.05)
    assert log_p.mean().item() >= elbo.mean().item()  # IWAE bound >= ELBO
    assert elbo.mean().item() <= truth + 0.01  # a lower bound, up to test-sample noise
    assert se.mean().item() < 0.02


def test_iw_standard_error_shrinks_like_one_over_sqrt_k(linear_vae):
    vae, test = linear_vae
    _, se_100 = vae.log_prob_iw(test[:200], k=100, seed=1)
    _, se_1000 = vae.log_prob_iw(test[:200], k=1000, seed=1)
    assert 2.0 < se_100.mean().item() / se_1000.mean().item() < 5.0  # sqrt(10) ~ 3.2


def test_vae_samples_follow_the_data(linear_vae):
    vae, test = linear_vae
    samples = vae.sample(2000, seed=0).numpy()
    np.testing.assert_allclose(samples.mean(0), MU, atol=0.15)
    np.testing.assert_allclose(np.cov(samples.T), SIGMA, atol=0.3)


def test_gan_samples_move_toward_the_data():
    mu, cov = np.array([2.0, -1.0]), np.array([[1.0, 0.6], [0.6, 0.5]])
    x = np.random.default_rng(0).multivariate_normal(mu, cov, size=1000)
    test = np.random.default_rng(1).multivariate_normal(mu, cov, size=1000)
    gan = GAN(2, latent_dim=2, hidden=(32, 32), seed=0)
    before = energy_distance(gan.sample(1000, seed=0).numpy(), test)
    result = fit_gan(gan, x, epochs=30, batch_size=100, lr=2e-3, seed=0, verbose=False)
    after = energy_distance(result.model.sample(1000, seed=0).numpy(), test)
    assert before > 1.0 and after < 0.1 * before
    history = result.history
    assert len(history.generator_loss) == len(history.val_energy) == result.epochs_run == 30
    assert history.val_energy[-1] < 0.1 * history.val_energy[0]
    assert history.discriminator_loss[-1] == pytest.approx(2 * math.log(2), abs=0.1)
    assert not hasattr(gan, "log_prob")  # samples only: a GAN defines no density


def test_best_vae_by_validation_is_returned():
    x = gaussian(300, 2)
    result = fit_vae(VAE(2, hidden=(8,), seed=1), x, epochs=8, lr=1e-2, seed=3, verbose=False)
    assert result.best_val_loss == pytest.approx(min(result.history.val_nll))
    assert result.best_epoch == 1 + int(np.argmin(result.history.val_nll))
    assert len(result.val_indices) == 30 and set(result.val_indices).isdisjoint(
        result.train_indices
    )


@pytest.mark.parametrize(
    ("make", "fit"),
    [
        (lambda: VAE(2, hidden=(8, 8), seed=4), fit_vae),
        (lambda: GAN(2, hidden=(8, 8), seed=4), fit_gan),
    ],
    ids=["vae", "gan"],
)
def test_same_seed_is_reproducible(make, fit):
    x = gaussian(200, 3)
    runs = [fit(make(), x, epochs=3, lr=1e-2, seed=5, verbose=False) for _ in range(2)]
    assert torch.equal(parameters(runs[0].model), parameters(runs[1].model))
    rows = [[{k: v for k, v in r.items() if k != "seconds"} for r in run.history.rows()]
            for run in runs]
    assert rows[0] == rows[1]
    other = fit(make(), x, epochs=3, lr=1e-2, seed=6, verbose=False)
    assert not torch.equal(parameters(other.model), parameters(runs[0].model))
    assert torch.equal(runs[0].model.sample(50, seed=0), runs[1].model.sample(50, seed=0))


def test_global_torch_rng_is_never_touched():
    state = torch.random.get_rng_state()
    vae = fit_vae(VAE(2, hidden=(8,)), gaussian(100, 0), epochs=2, verbose=False).model
    vae.sample(10, seed=0), vae.elbo(gaussian(10, 1)), vae.log_prob_iw(gaussian(10, 1), k=10)
    fit_gan(GAN(2, hidden=(8,)), gaussian(100, 0), epochs=2, verbose=False).model.sample(10)
    assert torch.equal(state, torch.random.get_rng_state())


def test_vae_save_load_round_trip(tmp_path):
    x = gaussian(200, 4)
    vae = fit_vae(VAE(2, latent_dim=3, hidden=(8, 8), seed=2), x, epochs=3, lr=1e-2,
                  standardize=True, verbose=False).model
    dl.save(vae, tmp_path / "vae")
    loaded = dl.load(tmp_path / "vae")
    assert isinstance(loaded, VAE) and loaded.config == vae.config
    assert torch.equal(loaded.scale, vae.scale) and not torch.equal(vae.scale, torch.ones(2))
    assert torch.equal(loaded.elbo(x, seed=3), vae.elbo(x, seed=3))
    for a, b in zip(loaded.log_prob_iw(x, k=50), vae.log_prob_iw(x, k=50), strict=True):
        assert torch.equal(a, b)
    assert torch.equal(loaded.sample(100, seed=7), vae.sample(100, seed=7))


def test_gan_save_load_round_trip(tmp_path):
    x = gaussian(200, 5)
    gan = fit_gan(GAN(2, hidden=(8,), seed=2).double(), x, epochs=2, standardize=True,
                  verbose=False).model
    dl.save(gan, tmp_path / "gan")
    loaded = dl.load(tmp_path / "gan")
    assert isinstance(loaded, GAN) and loaded.dtype == torch.float64
    assert torch.equal(loaded.sample(100, seed=7), gan.sample(100, seed=7))
    assert torch.equal(loaded.discriminate(x), gan.discriminate(x))


def test_tampered_baseline_config_is_refused(tmp_path):
    dl.save(VAE(2, hidden=(8,)), tmp_path / "vae")
    config = tmp_path / "vae" / "config.json"
    config.write_text(config.read_text().replace('"latent_dim": 2', '"latent_dim": 5'))
    with pytest.raises(ValueError, match="do not fit"):
        dl.load(tmp_path / "vae")


@pytest.mark.parametrize(
    "build",
    [
        lambda: VAE(0),
        lambda: VAE(2, latent_dim=0),
        lambda: VAE(2, hidden=(8, 0)),
        lambda: VAE(2, hidden=(8.5,)),
        lambda: VAE(2, activation="swishy"),
        lambda: GAN(2, seed=-1),
        lambda: GAN(2, hidden=(True,)),
    ],
)
def test_bad_model_options_raise(build):
    with pytest.raises(ValueError):
        build()


X = np.random.default_rng(0).normal(size=(50, 2))
BAD_FITS = {
    "epochs": lambda: fit_vae(VAE(2), X, epochs=0),
    "batch_size": lambda: fit_gan(GAN(2), X, batch_size=0),
    "lr": lambda: fit_vae(VAE(2), X, lr=-1.0),
    "lr-nan": lambda: fit_gan(GAN(2), X, lr=math.nan),
    "val_fraction": lambda: fit_vae(VAE(2), X, val_fraction=1.0),
    "r1_gamma": lambda: fit_gan(GAN(2), X, r1_gamma=-0.5),
    "betas": lambda: fit_gan(GAN(2), X, betas=(1.0, 0.9)),
    "wrong-model": lambda: fit_vae(GAN(2), X),
    "nan-data": lambda: fit_vae(VAE(2), np.where(X > 2, np.nan, X)),
    "wrong-dim": lambda: fit_gan(GAN(3), X),
    "k": lambda: VAE(2).log_prob_iw(X, k=0),
    "n_samples": lambda: VAE(2).elbo(X, n_samples=0),
    "sample-n": lambda: GAN(2).sample(0),
    "input-shape": lambda: VAE(2).elbo(X[:, :1]),
    "latent-shape": lambda: VAE(2).decode(X[:, :1]),
}


@pytest.mark.parametrize("call", BAD_FITS.values(), ids=BAD_FITS.keys())
def test_bad_hyper_parameters_and_inputs_raise(call):
    with pytest.raises(ValueError):
        call()


@pytest.mark.parametrize(
    ("make", "fit"),
    [
        (lambda: VAE(2, hidden=(16, 16)), fit_vae),
        (lambda: GAN(2, hidden=(16, 16)), fit_gan),
    ],
    ids=["vae", "gan"],
)
def test_divergence_is_caught_and_a_finite_model_kept(make, fit):
    x = gaussian(300, 6)
    with pytest.warns(RuntimeWarning, match=r"diverged at epoch \d+"):
        result = fit(make(), x, epochs=100, lr=1e8, verbose=False)
    assert result.stop_reason == "diverged"
    assert result.epochs_run < 100
    assert all(torch.isfinite(p).all() for p in result.model.parameters())
    assert torch.isfinite(result.model.sample(100, seed=0)).all()
