"""Units never matter: data offset by up to 1e12 or scaled by 1e-30..1e30 give the same
log-densities up to the Jacobian, for every estimator; far but finite points give finite
values or -inf, never an error."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

import densitylab as dl
from densitylab.estimators import ConditionalFlowDensity

TRANSFORMS = [(1e7, 1.0), (1e12, 1.0), (0.0, 1e-30), (0.0, 1e30), (-3e4, 1e-6)]
SMALL_FLOW = {"n_layers": 2, "hidden": (8,), "epochs": 4}
ESTIMATORS = {
    "kde": lambda: dl.KDE(bandwidth="cv"),
    "flow": lambda: dl.FlowDensity(**SMALL_FLOW),
    "auto": lambda: dl.AutoDensity(candidates=["kde", "gaussian-mixture"]),
}


def curved(n: int = 120) -> np.ndarray:
    x = np.random.default_rng(0).normal(size=(n, 2))
    x[:, 1] += x[:, 0] ** 2
    return x


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n == "auto" else n
                                  for n in ESTIMATORS])  # auto: 5 s (its mixture's BIC search)
def test_offsets_and_scales_change_log_densities_by_the_jacobian_only(name):
    x = curved()
    points = x[:15] + 0.05
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = ESTIMATORS[name]().fit(x).score_samples(points)
        for offset, scale in TRANSFORMS:
            moved = ESTIMATORS[name]().fit(offset + scale * x)
            log_p = moved.score_samples(offset + scale * points) + 2 * math.log(scale)
            # float64 holds 1e12 + x to 1.2e-4 (the data themselves are that coarse), and the
            # KDE's width search stops at 0.1%
            np.testing.assert_allclose(log_p, reference, atol=2e-3,
                                       err_msg=f"{name}, offset {offset}, scale {scale}")


def test_the_conditional_flow_is_indifferent_to_the_units_of_y():
    rng = np.random.default_rng(1)
    c = rng.uniform(-1, 1, size=(150, 1))
    y = np.sin(3 * c) + 0.1 * rng.normal(size=(150, 1))
    est = ConditionalFlowDensity(**SMALL_FLOW)
    reference = est.fit(c, y).score_samples(c[:10], y[:10])
    for offset, scale in TRANSFORMS:
        moved = ConditionalFlowDensity(**SMALL_FLOW).fit(c, offset + scale * y)
        log_p = moved.score_samples(c[:10], offset + scale * y[:10]) + math.log(scale)
        np.testing.assert_allclose(log_p, reference, atol=2e-3 if offset >= 1e12 else 1e-4)


@pytest.mark.parametrize("candidate", ["kde", "gaussian-mixture"])
def test_far_finite_points_are_finite_or_minus_infinity(candidate):
    """Before: a ValueError (the standardised point overflowed to inf)."""
    x = curved(60) * 0.1
    auto = dl.AutoDensity(candidates=[candidate]).fit(x)
    far = np.array([[1.7e308, 0.0], [-1.7e308, 1.7e308], [1e200, 0.0], [0.0, 0.0]])
    log_p = auto.score_samples(far)
    assert np.all(np.isfinite(log_p) | (log_p == -np.inf)) and np.isfinite(log_p[-1])
