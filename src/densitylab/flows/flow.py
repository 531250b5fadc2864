"""A flow: a standard-normal base distribution and an ordered list of invertible transforms.

``transforms[0]`` is applied first on the way to the latent space, so
``log p(x) = log N(z; 0, I) + sum_k log|det dz_k/dz_{k-1}|`` with ``z_0 = x`` (the composition
rule: log-determinants of composed maps add).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from densitylab.flows.transforms import Transform, as_input, lift

INFERENCE_CHUNK = 8192  # points per slice for large inputs in evaluation mode (see Flow._chunked)


def standard_normal_log_prob(z: Tensor) -> Tensor:
    """``log N(z; 0, I)`` over the last dimension."""
    return -0.5 * (z.square().sum(-1) + z.shape[-1] * math.log(2 * math.pi))


class Flow(nn.Module):
    """Normalizing flow ``x <-> z`` with a standard-normal base.

    Inputs are ``(n, D)`` tensors (array-likes are converted); a stack of ``M`` models
    (see :func:`densitylab.flows.stack`) also takes ``(M, n, D)`` and returns a leading ``M``.

    Example:
        >>> from densitylab.flows import realnvp
        >>> flow = realnvp(dim=2, n_layers=4)
        >>> x = flow.sample(100, seed=0)
        >>> flow.log_prob(x).shape
        torch.Size([100])
    """

    def __init__(self, transforms: Sequence[Transform], config: dict[str, Any] | None = None):
        super().__init__()
        if not transforms:
            raise ValueError("a flow needs at least one transform")
        dims = {t.dim for t in transforms}
        models = {t.n_models for t in transforms}
        if len(dims) != 1 or len(models) != 1:
            raise ValueError(f"transforms disagree on dim {dims} or model count {models}")
        self.transforms = nn.ModuleList(transforms)
        self.dim, self.n_models = dims.pop(), models.pop()
        self.config = dict(config or {})
        like = transforms[0]._anchor  # dtype and device follow the transforms
        self.register_buffer("_anchor", torch.zeros((), dtype=like.dtype, device=like.device),
                             persistent=False)

    @property
    def device(self) -> torch.device:
        return self._anchor.device

    @property
    def dtype(self) -> torch.dtype:
        return self._anchor.dtype

    # -- internal (M, n, D) computations, free of checks: the training loop calls these --------
    def _to_latent(self, x: Tensor) -> tuple[Tensor, Tensor]:
        logdet = None
        for transform in self.transforms:
            x, step = transform._to_latent(x)
            logdet = step if logdet is None else logdet + step
        return x, logdet

    def _to_data(self, z: Tensor) -> tuple[Tensor, Tensor]:
        logdet = None
        for transform in reversed(self.transforms):
            z, step = transform._to_data(z)
            logdet = step if logdet is None else logdet + step
        return z, logdet

    def _log_prob(self, x: Tensor) -> Tensor:
        z, logdet = self._to_latent(x)
        return standard_normal_log_prob(z) + logdet

    def forward(self, x: Tensor) -> Tensor:
        """``(M, n, D) -> (M, n)`` log-densities, unchecked; what DistributedDataParallel wraps."""
        return self._log_prob(x)

    # -- public API ----------------------------------------------------------------------------
    def _lifted(self, x: Tensor, beyond_range: bool = False) -> tuple[Tensor, bool]:
        x = as_input(x, self._anchor, self.dim, beyond_range)
        return lift(x, self.n_models), x.dim() == 2 and self.n_models == 1

    def to_latent(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """x -> z; returns ``(z, log|det dz/dx|)``."""
        x, squeeze = self._lifted(x)
        z, logdet = self._chunked(self._to_latent, x)
        return (z[0], logdet[0]) if squeeze else (z, logdet)

    def to_data(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """z -> x; returns ``(x, log|det dx/dz|)``."""
        z, squeeze = self._lifted(z)
        x, logdet = self._chunked(self._to_data, z)
        return (x[0], logdet[0]) if squeeze else (x, logdet)

    def log_prob(self, x: Tensor, dtype: torch.dtype | None = None) -> Tensor:
        """Exact log-density ``log p(x)`` in nats, shape ``(n,)`` (or ``(M, n)``), returned in
        ``dtype`` (default: the flow's own).

        Every finite input gets a finite value or ``-inf``, never NaN: points whose computation
        overflows this flow's dtype (far from the data, or beyond a float32 range) are computed
        again in float64, and those that overflow even there have no representable density.
        Ask for ``dtype=torch.float64`` to keep such far values (-1e43) that float32 cannot hold.
        """
        original = x
        x, squeeze = self._lifted(x, beyond_range=True)
        log_p = self._chunked(self._log_prob, x).to(dtype or self.dtype)
        overflowed = ~torch.isfinite(log_p).all(dim=0)
        if overflowed.any():
            log_p[:, overflowed] = self._log_prob_in_float64(original, overflowed).to(log_p.dtype)
        log_p = torch.where(torch.isnan(log_p), -math.inf, log_p)
        return log_p[0] if squeeze else log_p

    def _log_prob_in_float64(self, x: Tensor, points: Tensor) -> Tensor:
        """``log p`` of the selected ``points`` (a boolean mask over rows) in float64."""
        wide = self if self.dtype == torch.float64 else copy.deepcopy(self).double()
        x = lift(torch.as_tensor(x, dtype=torch.float64, device=self.device), self.n_models)
        with torch.no_grad():
            return wide._log_prob(x[:, points])

    def _chunked(self, function, x: Tensor):
        """``function(x)`` over ``(M, n, D)`` in slices of points, concatenated.

        In evaluation mode large inputs pass in cache-sized slices: a network's intermediate
        arrays then stay in cache instead of streaming through memory, several times faster
        for a million points. (In training mode ActNorm may initialise from the whole input,
        so it passes at once.)
        """
        if self.training or x.shape[1] <= INFERENCE_CHUNK:
            return function(x)
        parts = [function(part) for part in x.split(INFERENCE_CHUNK, dim=1)]
        if isinstance(parts[0], tuple):
            return tuple(torch.cat(column, dim=1) for column in zip(*parts, strict=True))
        return torch.cat(parts, dim=1)

    def sample_latent(self, n: int, seed: int | torch.Generator | None = None) -> Tensor:
        """``n`` draws from the base N(0, I) per model, shape ``(M, n, D)``."""
        if n < 1:
            raise ValueError(f"number of samples must be >= 1, got {n}")
        generator = seed if isinstance(seed, torch.Generator) else _generator(seed, self.device)
        shape = (self.n_models, n, self.dim)
        return torch.randn(shape, generator=generator, dtype=self.dtype, device=self.device)

    def sample(self, n: int, seed: int | torch.Generator | None = None) -> Tensor:
        """``n`` samples ``x``, shape ``(n, D)`` (or ``(M, n, D)``)."""
        return self.sample_with_log_prob(n, seed)[0]

    def sample_with_log_prob(
        self, n: int, seed: int | torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """Samples and their log-density from one pass: ``log p(x) = log N(z) - log|det dx/dz|``."""
        z = self.sample_latent(n, seed)
        x, logdet = self._chunked(self._to_data, z)
        log_p = standard_normal_log_prob(z) - logdet
        return (x[0], log_p[0]) if self.n_models == 1 else (x, log_p)

    def trace_to_data(
        self, z_or_n: Tensor | int, seed: int | torch.Generator | None = None
    ) -> list[Tensor]:
        """Points after every transform on the way z -> x: prior first, data last."""
        if isinstance(z_or_n, int):
            z, squeeze = self.sample_latent(z_or_n, seed), self.n_models == 1
        else:
            z, squeeze = self._lifted(z_or_n)
        trace = [z]
        for transform in reversed(self.transforms):
            trace.append(transform._to_data(trace[-1])[0])
        return [t[0] for t in trace] if squeeze else trace

    def trace_to_latent(self, x: Tensor) -> list[Tensor]:
        """Points after every transform on the way x -> z: data first, latent last."""
        x, squeeze = self._lifted(x)
        trace = [x]
        for transform in self.transforms:
            trace.append(transform._to_latent(trace[-1])[0])
        return [t[0] for t in trace] if squeeze else trace


def _generator(seed: int | None, device: torch.device) -> torch.Generator:
    """A private generator: seeded explicitly, or from OS entropy when no seed is given.
    Torch's global generator is never read or advanced."""
    generator = torch.Generator(device=device)
    if seed is None:
        generator.seed()
    else:
        generator.manual_seed(int(seed))
    return generator
