"""Base distributions of a flow: the standard normal, or a Gaussian mixture fitted to the data.

A flow maps data ``x`` to latent codes ``z`` and scores ``log p(x) = log p_base(z) + log|det|``.
With a standard-normal base every mode of the data must be carved out of one Gaussian by the
transforms, which is why multimodal fits show thin bridges of density between modes (a
continuous bijection cannot tear the Gaussian apart). A mixture base starts where a Gaussian
mixture model ends: it is fitted (by scikit-learn, components chosen by BIC) to the latent
codes of the training data before training, then kept fixed while the transforms learn what
the mixture misses.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor, nn

from densitylab._validation import check_positive_int
from densitylab.mixtures import select_by_bic

LOG_2PI = math.log(2 * math.pi)


def standard_normal_log_prob(z: Tensor) -> Tensor:
    """``log N(z; 0, I)`` over the last dimension."""
    return -0.5 * (z.square().sum(-1) + z.shape[-1] * LOG_2PI)


class StandardNormal(nn.Module):
    """``N(0, I)`` in ``dim`` dimensions (no parameters)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim

    def log_prob(self, z: Tensor) -> Tensor:
        return standard_normal_log_prob(z)

    def sample(self, shape: tuple[int, int], generator: torch.Generator, like: Tensor) -> Tensor:
        """``(M, n, dim)`` draws in ``like``'s dtype and device."""
        return torch.randn((*shape, self.dim), generator=generator, dtype=like.dtype,
                           device=like.device)


class GaussianMixtureBase(nn.Module):
    """A Gaussian mixture of at most ``max_components`` full-covariance components per model.

    Its parameters are buffers (saved with the model, not trained): weights, means and the
    Cholesky factors of the covariances, ``(M, K)``, ``(M, K, D)``, ``(M, K, D, D)``. Unused
    components have weight 0. :meth:`fit` sets them from latent codes; until then it is the
    standard normal (one component, the others unused).
    """

    def __init__(self, dim: int, max_components: int = 10, n_models: int = 1) -> None:
        super().__init__()
        self.dim = dim
        k = self.max_components = check_positive_int(max_components, "max_components")
        log_weights = torch.full((n_models, k), -math.inf)
        log_weights[:, 0] = 0.0
        self.register_buffer("log_weights", log_weights)
        self.register_buffer("means", torch.zeros(n_models, k, dim))
        self.register_buffer("chol", torch.eye(dim).expand(n_models, k, dim, dim).clone())

    def log_prob(self, z: Tensor) -> Tensor:
        """``log sum_k w_k N(z; mu_k, L_k L_k^T)`` for ``z`` ``(M, n, D)``: ``(M, n)``."""
        diff = z.unsqueeze(2) - self.means.unsqueeze(1)  # (M, n, K, D)
        chol = self.chol.unsqueeze(1).expand(-1, z.shape[1], -1, -1, -1)
        white = torch.linalg.solve_triangular(chol, diff.unsqueeze(-1), upper=False)[..., 0]
        log_det = torch.log(torch.diagonal(self.chol, dim1=-2, dim2=-1)).sum(-1)  # (M, K)
        per_component = (-0.5 * (white.square().sum(-1) + self.dim * LOG_2PI)
                         - log_det.unsqueeze(1) + self.log_weights.unsqueeze(1))
        return torch.logsumexp(per_component, dim=-1)

    def sample(self, shape: tuple[int, int], generator: torch.Generator, like: Tensor) -> Tensor:
        n_models, n = shape
        weights = self.log_weights.exp().to(device=generator.device, dtype=torch.float64)
        component = torch.multinomial(weights, n, replacement=True, generator=generator)
        noise = torch.randn((n_models, n, self.dim), generator=generator, dtype=like.dtype,
                            device=generator.device).to(like.device)
        index = component.to(like.device)
        rows = torch.arange(n_models, device=like.device).unsqueeze(1)
        means, chol = self.means[rows, index], self.chol[rows, index]  # (M, n, D), (M, n, D, D)
        return means + (chol @ noise.unsqueeze(-1))[..., 0]

    @torch.no_grad()
    def fit(self, z: Tensor, seeds: list[int]) -> None:
        """Fit each model's mixture to its latent codes ``z`` ``(M, n, D)`` (seeded by its
        seed): scikit-learn's ``GaussianMixture`` with 1..``max_components`` components (at
        least 2 points each) and each covariance type, whichever has the lowest BIC."""
        for m, (codes, seed) in enumerate(zip(z.detach().double().cpu().numpy(), seeds,
                                              strict=True)):
            self._set(m, select_by_bic(codes, self.max_components, seed=seed)[0])

    def _set(self, m: int, mixture) -> None:
        k, cov, eye = len(mixture.weights_), mixture.covariances_, np.eye(self.dim)
        full = {"full": lambda: cov, "tied": lambda: np.broadcast_to(cov, (k, *cov.shape)),
                "diag": lambda: cov[:, :, None] * eye,
                "spherical": lambda: cov[:, None, None] * eye}[mixture.covariance_type]()
        like = self.means
        self.log_weights[m] = -math.inf
        self.log_weights[m, :k] = torch.as_tensor(np.log(mixture.weights_), dtype=like.dtype)
        self.means[m] = 0.0
        self.means[m, :k] = torch.as_tensor(mixture.means_, dtype=like.dtype)
        self.chol[m] = torch.eye(self.dim, dtype=like.dtype)
        self.chol[m, :k] = torch.as_tensor(np.linalg.cholesky(full), dtype=like.dtype)
