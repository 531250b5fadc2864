"""Dequantization and bits per dimension, in one place.

A flow has a density on continuous values; an image is a table of integers ``x`` in
``{0, ..., K-1}^D``. Dequantization adds noise ``u`` in ``[0, 1)^D`` drawn from ``q(u | x)``, and
the discrete probability of the image is bounded below (Jensen's inequality):

    log P(x) = log E_q[p(x + u) / q(u | x)] >= E_q[log p(x + u) - log q(u | x)],

with ``p`` the flow's density in pixel units (``[0, K)^D``: the flow's own rescaling to the
unit cube and its logit pre-processing are transforms inside it, their log-determinants
counted). Uniform dequantization is ``q = 1``; variational dequantization learns ``q`` with a
small flow conditioned on the image, trained jointly (Ho et al. 2019, "Flow++").
The importance-weighted estimate ``log (1/k) sum_i p(x + u_i) / q(u_i | x)`` is a tighter lower
bound in expectation (Burda et al. 2016) and reaches ``log P(x)`` as ``k`` grows.

Bits per dimension: ``-log P(x) / (D log 2)``. Reported from a lower bound on ``log P(x)``,
it is an upper bound on the model's true bits per dimension.

References:
    Theis, van den Oord & Bethge (2016), "A note on the evaluation of generative models".
    Ho, Chen, Srinivas, Duan & Abbeel (2019), "Flow++", ICML.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from densitylab.flows.images import ImageCoupling, check_image_shape


class UniformDequantization(nn.Module):
    """``u ~ U[0, 1)^D`` independent of the image: ``log q(u | x) = 0``."""

    kind = "uniform"

    def noise(self, shape: Sequence[int], generator: torch.Generator) -> Tensor:
        """The base noise the dequantizer turns into ``u`` (here ``u`` itself), on the CPU."""
        return torch.rand(tuple(shape), generator=generator, dtype=torch.float64)

    def forward(self, pixels: Tensor, noise: Tensor) -> tuple[Tensor, Tensor]:
        """``(u, log q(u | x))`` for rows of pixels ``(M, n, D)`` and their base noise."""
        return noise, noise.new_zeros(noise.shape[:-1])


class VariationalDequantization(nn.Module):
    """``u = sigmoid(f(eps; x))``, ``eps ~ N(0, I)``: a small flow of checkerboard couplings
    whose conditioners also read the image (as extra channels), then a sigmoid onto ``(0, 1)``.
    ``log q(u | x) = log N(eps) - log|det du/d eps|``. Starts as ``sigmoid`` of a Gaussian
    (the couplings start as the identity) and is trained with the flow."""

    kind = "variational"

    def __init__(self, shape: Sequence[int], levels: int, steps: int = 4, hidden: int = 32,
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.shape = check_image_shape(shape)
        self.levels = levels
        self.couplings = nn.ModuleList(
            ImageCoupling(self.shape, "checkerboard", flip=k % 2 == 1, hidden=hidden,
                          context_channels=self.shape[0], generator=generator)
            for k in range(steps))

    def noise(self, shape: Sequence[int], generator: torch.Generator) -> Tensor:
        return torch.randn(tuple(shape), generator=generator, dtype=torch.float64)

    def forward(self, pixels: Tensor, noise: Tensor) -> tuple[Tensor, Tensor]:
        lead = pixels.shape[:-1]
        context = (pixels.reshape(-1, *self.shape) + 0.5) / self.levels - 0.5
        y = noise.reshape(-1, *self.shape)
        log_q = -0.5 * (y.square() + math.log(2 * math.pi)).flatten(1).sum(1)
        for coupling in self.couplings:
            y, logdet = coupling._image_to_latent(y, context)
            log_q = log_q - logdet
        log_q = log_q - (F.logsigmoid(y) + F.logsigmoid(-y)).flatten(1).sum(1)
        return torch.sigmoid(y).reshape(*lead, -1), log_q.reshape(lead)


DEQUANTIZATIONS: dict[str, Callable[..., nn.Module]] = {
    "uniform": lambda shape, levels, generator: UniformDequantization(),
    "variational": lambda shape, levels, generator: VariationalDequantization(
        shape, levels, generator=generator),
}


def dequantizer(kind: str, shape: Sequence[int], levels: int,
                generator: torch.Generator | None = None) -> nn.Module:
    """The dequantizer named ``kind`` (a key of ``DEQUANTIZATIONS``)."""
    if kind not in DEQUANTIZATIONS:
        raise ValueError(f"unknown dequantization {kind!r}; choose one of "
                         f"{sorted(DEQUANTIZATIONS)}")
    return DEQUANTIZATIONS[kind](shape, levels, generator)


def dequantized_log_prob(log_density: Callable[[Tensor], Tensor], quantizer: nn.Module,
                         pixels: Tensor, noise: Tensor) -> Tensor:
    """One draw of the bound: ``log p(x + u) - log q(u | x)`` per image (rows ``(..., D)``)."""
    u, log_q = quantizer(pixels, noise.to(device=pixels.device, dtype=pixels.dtype))
    return log_density(pixels + u) - log_q


@torch.no_grad()
def discrete_log_likelihood(flow: nn.Module, pixels: Tensor, draws: int = 10,
                            seed: int = 0, importance_weighted: bool = True) -> Tensor:
    """Lower bound on ``log P(x)`` in nats for integer images as rows ``(n, D)``: the
    importance-weighted estimate over ``draws`` noise draws (or, without
    ``importance_weighted``, the mean of the single-draw bounds). ``flow(rows, noise)`` must
    return one draw of the bound (as :class:`~densitylab.flows.MultiScaleFlow` does)."""
    if draws < 1:
        raise ValueError(f"draws must be >= 1, got {draws}")
    generator = torch.Generator().manual_seed(int(seed))
    rows = pixels.unsqueeze(0)
    values = torch.stack([
        flow(rows, flow.dequantizer.noise(rows.shape, generator))[0] for _ in range(draws)])
    if importance_weighted:
        return torch.logsumexp(values, dim=0) - math.log(draws)
    return values.mean(dim=0)


def bits_per_dim(log_likelihood: Tensor, dim: int) -> Tensor:
    """``-log P(x) / (D log 2)``: nats of a discrete log-likelihood to bits per dimension."""
    return -log_likelihood / (dim * math.log(2.0))
