"""Rational-quadratic splines on their edges: knots, bounds, tails, extreme parameters."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import densitylab as dl
from densitylab.flows.splines import _knots, rational_quadratic

BOUND = 3.0
BINS = 5


def raw_parameters(n: int, scale: float, seed: int, dtype=torch.float64) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return scale * torch.randn(n, 3 * BINS - 1, generator=generator, dtype=dtype)


def test_the_spline_passes_through_its_knots_both_ways():
    raw = raw_parameters(1, 2.0, seed=0)[0]
    x_knots, _ = _knots(raw[:BINS], BOUND, 1e-3)
    y_knots, _ = _knots(raw[BINS : 2 * BINS], BOUND, 1e-3)
    assert x_knots[0] == -BOUND and x_knots[-1] == BOUND
    table = raw.expand(len(x_knots), -1)
    forward, _ = rational_quadratic(x_knots, table, BOUND)
    backward, _ = rational_quadratic(y_knots, table, BOUND, inverse=True)
    torch.testing.assert_close(forward, y_knots, rtol=0, atol=1e-12)
    torch.testing.assert_close(backward, x_knots, rtol=0, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("scale", [0.1, 3.0, 30.0])  # near-identity to near-degenerate bins
def test_inverse_never_fails_at_edges_or_in_the_tails(dtype, scale):
    eps = torch.finfo(dtype).eps
    edges = [0.0, BOUND, -BOUND, BOUND * (1 - eps), -BOUND * (1 - eps), BOUND * (1 + eps),
             -BOUND * (1 + eps), BOUND + 1e-9, 1e6, -1e6, 1e-30]
    values = torch.tensor(edges, dtype=dtype).repeat(40)
    values = torch.cat([values, torch.linspace(-BOUND, BOUND, 2001, dtype=dtype)])
    raw = raw_parameters(len(values), scale, seed=1, dtype=dtype)
    z, log_forward = rational_quadratic(values, raw, BOUND)
    back, log_inverse = rational_quadratic(z, raw, BOUND, inverse=True)
    assert torch.isfinite(z).all() and torch.isfinite(back).all()
    assert torch.isfinite(log_forward).all() and torch.isfinite(log_inverse).all()
    # A flat stretch (slope << 1) cannot be inverted more finely than rounding in z allows:
    # measure the error in x scaled by the local slope (capped at 1). A wrong bin or root
    # would show as errors of order one.
    slope = log_forward.exp().clamp(max=1.0)
    scaled_error = ((back - values).abs() * slope).max().item()
    assert scaled_error <= (1e-10 if dtype == torch.float64 else 1e-3), scaled_error
    assert (log_inverse + log_forward).abs().max().item() <= 1e-6 if dtype == torch.float64 else 1
    outside = values.abs() > BOUND
    assert torch.equal(z[outside], values[outside]) and (log_forward[outside] == 0).all()
    inside = ~outside
    assert (z[inside].abs() <= BOUND).all()


@settings(max_examples=50, deadline=None)
@given(seed=st.integers(0, 2**16), scale=st.floats(0.01, 10.0))
def test_splines_are_monotone_with_positive_slopes(seed, scale):
    values = torch.linspace(-BOUND - 1, BOUND + 1, 801, dtype=torch.float64, requires_grad=True)
    raw = raw_parameters(1, scale, seed)[0].expand(len(values), -1)
    z, log_slope = rational_quadratic(values, raw, BOUND)
    assert (z[1:] > z[:-1]).all()
    # the log-slope is the derivative of the map: compare with autograd's derivative of z (not
    # central differences: large scales make bins so narrow that the slope changes 40-fold
    # within 1e-4, as for seed 112, scale 4.18, where a difference step of 1e-6 is off by 5%)
    (derivative,) = torch.autograd.grad(z.sum(), values)
    off_edge = values.abs() != BOUND  # at ±bound the clamps that keep rounding inside stop autograd
    np.testing.assert_allclose(log_slope[off_edge].detach().exp(), derivative[off_edge],
                               rtol=1e-10, atol=1e-12)


def test_nsf_builder_round_trips_saves_and_learns(tmp_path):
    x = dl.datasets.get("moons").sample(600, seed=0)
    result = dl.fit(dl.flows.nsf(2, n_layers=2, hidden=(16,), bins=6), x, epochs=30,
                    batch_size=128, lr=5e-3, standardize=True, verbose=False)
    flow = result.flow
    assert result.history.val_nll[-1] < result.history.val_nll[0] - 0.3
    z, _ = flow.to_latent(x)
    back, _ = flow.to_data(z)
    np.testing.assert_allclose(back.detach().numpy(), x, atol=1e-4)
    dl.save(flow, tmp_path / "nsf")
    again = dl.load(tmp_path / "nsf")
    assert torch.equal(again.log_prob(x), flow.log_prob(x))


def test_bad_spline_options_raise():
    with pytest.raises(ValueError, match="bins"):
        dl.flows.nsf(2, bins=1)
    with pytest.raises(ValueError, match="bound"):
        dl.flows.nsf(2, bound=0.0)
