"""Densities at every scale: far points, tiny and huge data, overflowing bandwidths. Never NaN."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import densitylab as dl
from densitylab.baselines import VAE, fit_vae

SCALES = (1e-30, 1e-15, 1.0, 1e15, 1e30)
FAR = np.array([[1e6, 1e6], [-1e10, 3.0], [1e30, -1e30], [1e38, 1e38], [1e300, 0.0],
                [-1e308, 1e308]])
FLOWS = {
    "realnvp": lambda: dl.flows.realnvp(2, 3, hidden=(16, 16), seed=3),
    "glow": lambda: dl.flows.glow(2, 3, hidden=(16, 16), seed=3),
    "nsf": lambda: dl.flows.nsf(2, 3, hidden=(16, 16), seed=3),
    "triangular": lambda: dl.flows.realnvp(2, 3, hidden=(16, 16), triangular=True,
                                           mixing="permute", seed=3),
}


@pytest.fixture(scope="module")
def data():
    return dl.datasets.get("moons").sample(300, seed=0)


def fitted_flow(name: str, x: np.ndarray):
    return dl.fit(FLOWS[name](), x, epochs=3, batch_size=64, standardize=True, seed=1,
                  verbose=False).flow


def assert_valid(log_p: np.ndarray) -> None:
    """Finite, or -inf: never NaN, never +inf."""
    assert not np.isnan(log_p).any(), log_p
    assert (np.isfinite(log_p) | (log_p == -np.inf)).all(), log_p


@pytest.mark.parametrize("name", FLOWS)
def test_flows_give_a_valid_density_far_from_the_data(data, name):
    flow = fitted_flow(name, data)
    with torch.no_grad():
        log_p = flow.log_prob(FAR).double().numpy()
    assert_valid(log_p)
    assert log_p[-1] == -np.inf  # beyond float32: no representable density
    near = flow.log_prob(data[:5]).detach().numpy()
    assert np.isfinite(near).all()


@pytest.mark.parametrize("name", FLOWS)
def test_flows_keep_exact_units_at_every_scale(data, name):
    """log p_s(s x) = log p_1(x) - D log s: the standardisation carries the units exactly."""
    reference = fitted_flow(name, data).log_prob(data[:20]).detach().double().numpy()
    for scale in SCALES:
        flow = fitted_flow(name, data * scale)
        log_p = flow.log_prob(data[:20] * scale).detach().double().numpy()
        np.testing.assert_allclose(log_p + 2 * math.log(scale), reference, atol=2e-3,
                                   err_msg=f"scale {scale}")


def test_the_estimator_and_the_command_line_agree_far_away(data, tmp_path):
    est = dl.FlowDensity(model="realnvp", n_layers=2, hidden=(8,), epochs=2).fit(data)
    assert_valid(est.score_samples(FAR))
    from densitylab.evaluation import flow_log_prob

    cli_values = flow_log_prob(est.flow_, FAR)
    assert np.array_equal(np.isfinite(cli_values), np.isfinite(est.score_samples(FAR)))


def test_the_estimator_at_tiny_scale(data):
    """FlowDensity on data times 1e-15 (once a constant 53.49 whatever the scale)."""
    base = dl.FlowDensity(model="realnvp", n_layers=2, hidden=(8,), epochs=2).fit(data)
    tiny = dl.FlowDensity(model="realnvp", n_layers=2, hidden=(8,), epochs=2).fit(data * 1e-15)
    np.testing.assert_allclose(tiny.score_samples(data[:10] * 1e-15) + 2 * math.log(1e-15),
                               base.score_samples(data[:10]), atol=2e-3)


@pytest.mark.parametrize("scale", (1e-300, 1e-30, 1.0, 1e30, 1e300))
def test_kde_is_exact_at_every_scale(data, scale):
    reference = dl.KDE().fit(data).score_samples(data[:20])
    log_p = dl.KDE().fit(data * scale).score_samples(data[:20] * scale)
    np.testing.assert_allclose(log_p + 2 * math.log(scale), reference, rtol=1e-12, atol=1e-9)


def test_kde_far_queries_are_exact_or_minus_infinity(data):
    kde = dl.KDE(bandwidth=0.1).fit(data)
    log_p = kde.score_samples(FAR)
    assert_valid(log_p)
    # a query 1e6 away: the nearest kernel dominates; compare with a direct log-sum-exp
    from scipy.special import logsumexp

    d2 = np.sum((data - FAR[0]) ** 2, axis=1) / 0.1**2
    exact = logsumexp(-0.5 * d2) - math.log(len(data)) - math.log(2 * math.pi * 0.1**2)
    assert log_p[0] == pytest.approx(exact, rel=1e-12)
    assert log_p[-1] == -np.inf


def test_kde_bandwidths_too_small_for_the_data_are_a_clear_error(data):
    with pytest.raises(ValueError, match="bandwidth too small"):
        dl.KDE(bandwidth=1e-200).fit(data)
    wide = dl.KDE(bandwidth=1e200).fit(data).score_samples(data[:3])
    np.testing.assert_allclose(wide, -math.log(2 * math.pi) - 2 * math.log(1e200), rtol=1e-12)


def test_vae_importance_weighted_density_far_away_and_at_scale(data):
    vae = fit_vae(VAE(dim=2, hidden=(16,)), data, epochs=3, standardize=True, seed=0).model
    estimate, error = vae.log_prob_iw(FAR, k=20)
    assert_valid(estimate.double().numpy())
    tiny = fit_vae(VAE(dim=2, hidden=(16,)), data * 1e-20, epochs=3, standardize=True,
                   seed=0).model
    here = vae.log_prob_iw(data[:5], k=200, seed=1)[0].double().numpy()
    there = tiny.log_prob_iw(data[:5] * 1e-20, k=200, seed=1)[0].double().numpy()
    np.testing.assert_allclose(there + 2 * math.log(1e-20), here, atol=2e-3)


def test_constant_columns_are_a_clear_error():
    x = np.column_stack([np.linspace(0, 1, 50), np.full(50, 3.0)])
    with pytest.raises(ValueError, match="column 1 of the data is constant"):
        dl.fit(dl.flows.realnvp(2, 2), x, epochs=1, standardize=True, verbose=False)
