"""How good is a trained flow? Held-out likelihood, distance to the truth, latent normality.

One function gathers every number a run reports, so the ``train`` command and the experiments
measure models the same way. Where the true distribution is known (the built-in toys), the
test NLL is compared with its entropy, the lowest expected NLL any model can reach.
"""

from __future__ import annotations

import copy
from typing import Any, Protocol

import numpy as np
import torch

from densitylab import metrics
from densitylab.flows import Flow


class KnownDistribution(Protocol):
    def log_prob(self, x: np.ndarray) -> np.ndarray: ...
    def entropy(self) -> float: ...
    def bounds(self) -> tuple[tuple[float, float], tuple[float, float]]: ...


def in_float64(flow: Flow) -> Flow:
    """A float64 copy for evaluation: far from the data a float32 flow's exp(s) overflows
    (beyond s = 88) where float64 still has range (up to s = 709)."""
    return flow if flow.dtype == torch.float64 else copy.deepcopy(flow).double()


def flow_log_prob(flow: Flow, x: np.ndarray, chunk: int = 65536) -> np.ndarray:
    """Log-density of NumPy points under ``flow``, computed in float64, in chunks.

    Points where even float64 overflows (``inf - inf``) get ``-inf``: the flow assigns them
    no representable density.
    """
    flow = in_float64(flow)
    with torch.no_grad():  # Flow.log_prob chooses its threads from the number of points
        parts = [
            flow.log_prob(torch.as_tensor(x[i : i + chunk], dtype=flow.dtype, device=flow.device))
            for i in range(0, len(x), chunk)
        ]
    log_p = torch.cat(parts).cpu().numpy()
    return np.where(np.isnan(log_p), -np.inf, log_p)


def flow_samples(flow: Flow, n: int, seed: int) -> np.ndarray:
    with torch.no_grad():
        return flow.sample(n, seed=seed).double().cpu().numpy()


def latent_codes(flow: Flow, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        z, _ = flow.to_latent(torch.as_tensor(x, dtype=flow.dtype, device=flow.device))
    return z.double().cpu().numpy()


def round_trip_error(flow: Flow, x: np.ndarray) -> float:
    """``max |to_data(to_latent(x)) - x|``: how exactly the flow inverts in its own dtype."""
    with torch.no_grad():
        x_t = torch.as_tensor(x, dtype=flow.dtype, device=flow.device)
        back, _ = flow.to_data(flow.to_latent(x_t)[0])
    return float((back - x_t).abs().max())


def gaussian_log_prob(fit: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Per-point log-density of the single full-covariance Gaussian fitted by maximum
    likelihood to ``fit`` (for paired comparisons with a model scored on the same points)."""
    from scipy.stats import multivariate_normal

    mean, cov = fit.mean(axis=0), np.cov(fit, rowvar=False, bias=True)
    return np.atleast_1d(multivariate_normal(mean, cov).logpdf(points))


def gaussian_reference(fit: np.ndarray, test: np.ndarray, entropy: float | None = None
                       ) -> dict[str, float]:
    """The single full-covariance Gaussian fitted by maximum likelihood to ``fit``, scored on
    ``test``: the reference row of every comparison (a model that does not beat it beyond noise
    has learned nothing a mean and a covariance do not say). Returns its test NLL and standard
    error, and with the ``entropy`` its gap ``KL(true || Gaussian) = NLL - H``."""
    nll, se = metrics.nll_with_error(gaussian_log_prob(fit, test))
    out = {"test_nll": nll, "test_nll_se": se}
    if entropy is not None:
        out["entropy_gap"] = metrics.entropy_gap(nll, entropy)
    return out


def evaluate_flow(
    flow: Flow,
    test: np.ndarray,
    truth: KnownDistribution | None = None,
    seed: int = 0,
    n_samples: int = 5000,
    grid_resolution: int = 200,
    max_points: int = 5000,
) -> dict[str, Any]:
    """Every number a run reports about ``flow`` on held-out ``test`` points (JSON-ready);
    the pairwise sample distances use at most ``max_points`` of each set."""
    flow = in_float64(flow)
    log_p = flow_log_prob(flow, test)
    test_nll, test_nll_se = metrics.nll_with_error(log_p)
    samples = flow_samples(flow, n_samples, seed)
    report: dict[str, Any] = {
        "test_nll": test_nll,
        "test_nll_se": test_nll_se,
        "n_test": len(test),
        "round_trip_error": round_trip_error(flow, test[:2000]),
        "latent_normality": metrics.latent_normality(latent_codes(flow, test[:5000])),
        "sample_quality": metrics.sample_quality(
            samples, test, truth.log_prob if truth is not None else None, max_points=max_points
        ) | {"n_samples": n_samples},
    }
    if truth is not None:
        entropy = truth.entropy()
        report["entropy"] = entropy
        report["entropy_gap"] = metrics.entropy_gap(test_nll, entropy)
        if flow.dim == 2:
            report["grid"] = metrics.grid_divergences(
                truth.log_prob, lambda x: flow_log_prob(flow, x), truth.bounds(), grid_resolution
            )
    return report
