"""A flow: a base distribution (standard normal unless given) and an ordered list of
invertible transforms.

``transforms[0]`` is applied first on the way to the latent space, so
``log p(x) = log N(z; 0, I) + sum_k log|det dz_k/dz_{k-1}|`` with ``z_0 = x`` (the composition
rule: log-determinants of composed maps add).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from densitylab import threads
from densitylab.flows.bases import StandardNormal
from densitylab.flows.transforms import Transform, as_context, as_input, lift, with_context

INFERENCE_CHUNK = 8192  # points per slice for large inputs in evaluation mode (see Flow._chunked)
POINTS_PER_THREAD = 2 * INFERENCE_CHUNK  # log_prob and sampling: fewer points run on one thread
FAST_LOG_PROB: list[Callable[[Flow, Tensor], Tensor | None]] = []
"""Compiled evaluators that :meth:`Flow.log_prob` tries first, each ``(flow, rows) -> log p``
or ``None`` where it does not apply; the compiled engines of :mod:`densitylab.training`
register theirs (the flow layer itself imports no engine)."""


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

    def __init__(self, transforms: Sequence[Transform], config: dict[str, Any] | None = None,
                 embedding: nn.Module | None = None, base: nn.Module | None = None):
        super().__init__()
        if not transforms:
            raise ValueError("a flow needs at least one transform")
        dims = {t.dim for t in transforms}
        models = {t.n_models for t in transforms}
        if len(dims) != 1 or len(models) != 1:
            raise ValueError(f"transforms disagree on dim {dims} or model count {models}")
        self.transforms = nn.ModuleList(transforms)
        self.dim, self.n_models = dims.pop(), models.pop()
        # a conditional flow may pass its context through an embedding network first; the
        # transforms then read the embedded features, the user gives the raw columns
        self.embedding = embedding
        self.context_features = (embedding.weights[0].shape[1] if embedding is not None
                                 else max(t.context_features for t in transforms))
        self.config = dict(config or {})
        self.base = StandardNormal(self.dim) if base is None else base  # p(z)
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
    def _embed(self, context: Tensor | None) -> Tensor | None:
        """The context as the transforms read it (through the embedding network, if any)."""
        if context is None or self.embedding is None:
            return context
        return self.embedding(context)

    def _to_latent(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        context = self._embed(context)
        logdet = None
        for transform in self.transforms:
            x, step = transform._to_latent(x, context)
            logdet = step if logdet is None else logdet + step
        return x, logdet

    def _to_data(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        context = self._embed(context)
        logdet = None
        for transform in reversed(self.transforms):
            z, step = transform._to_data(z, context)
            logdet = step if logdet is None else logdet + step
        return z, logdet

    def _split_rows(self, rows: Tensor) -> tuple[Tensor, Tensor | None]:
        """Rows ``[x | c]`` -> ``(x, c)``; a flow without context reads rows as ``x``."""
        if not self.context_features:
            return rows, None
        return rows[..., : self.dim], rows[..., self.dim :]

    def _log_prob(self, rows: Tensor) -> Tensor:
        """``log p(x | c)`` of rows ``[x | c]`` (just ``x`` for a flow without context): the
        training loop batches such rows, so data and context always travel together."""
        x, context = self._split_rows(rows)
        z, logdet = self._to_latent(x, context)
        return self.base.log_prob(z) + logdet

    def forward(self, rows: Tensor) -> Tensor:
        """``(M, n, D [+ C]) -> (M, n)`` log-densities, unchecked; what DDP wraps."""
        return self._log_prob(rows)

    # -- public API ----------------------------------------------------------------------------
    def _lifted(self, x: Tensor, beyond_range: bool = False) -> tuple[Tensor, bool]:
        x = as_input(x, self._anchor, self.dim, beyond_range)
        return lift(x, self.n_models), x.dim() == 2 and self.n_models == 1

    def _rows(self, x: Tensor, context: Tensor | None, beyond_range: bool = False
              ) -> tuple[Tensor, bool]:
        """Checked, lifted rows ``[x | c]`` and whether to drop the model dimension."""
        x, squeeze = self._lifted(x, beyond_range)
        c = as_context(context, self.context_features, x, self._anchor, self.n_models)
        return with_context(x, c), squeeze

    def to_latent(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """x -> z (given the context ``c``, one row per point, for a conditional flow);
        returns ``(z, log|det dz/dx|)``."""
        rows, squeeze = self._rows(x, context)
        z, logdet = self._chunked(lambda r: self._to_latent(*self._split_rows(r)), rows)
        return (z[0], logdet[0]) if squeeze else (z, logdet)

    def to_data(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """z -> x (given the context); returns ``(x, log|det dx/dz|)``."""
        rows, squeeze = self._rows(z, context)
        x, logdet = self._chunked(lambda r: self._to_data(*self._split_rows(r)), rows)
        return (x[0], logdet[0]) if squeeze else (x, logdet)

    def log_prob(
        self, x: Tensor, context: Tensor | None = None, dtype: torch.dtype | None = None
    ) -> Tensor:
        """Exact log-density ``log p(x)`` (``log p(x | c)`` for a conditional flow, with one
        context row per point) in nats, shape ``(n,)`` (or ``(M, n)``), returned in ``dtype``
        (default: the flow's own).

        Every finite input gets a finite value or ``-inf``, never NaN: points whose computation
        overflows this flow's dtype (far from the data, or beyond a float32 range) are computed
        again in float64, and those that overflow even there have no representable density.
        Ask for ``dtype=torch.float64`` to keep such far values (-1e43) that float32 cannot hold.
        """
        rows, squeeze = self._rows(x, context, beyond_range=True)
        with threads.budget(work=rows.shape[0] * rows.shape[1], grain=POINTS_PER_THREAD):
            return self._log_prob_of_rows(x, context, rows, squeeze, dtype)

    def _log_prob_of_rows(self, x: Tensor, context: Tensor | None, rows: Tensor, squeeze: bool,
                          dtype: torch.dtype | None) -> Tensor:
        log_p = next((v for v in (fast(self, rows) for fast in FAST_LOG_PROB) if v is not None),
                     None)  # e.g. spline flows on the CPU: one fused, compiled pass
        if log_p is None:
            log_p = self._chunked(self._log_prob, rows)
        log_p = log_p.to(dtype or self.dtype)
        overflowed = ~torch.isfinite(log_p).all(dim=0)
        if overflowed.any():
            wide_rows = self._float64_rows(x, context)[:, overflowed]
            log_p[:, overflowed] = self._log_prob_in_float64(wide_rows).to(log_p.dtype)
        log_p = torch.where(torch.isnan(log_p), -math.inf, log_p)
        return log_p[0] if squeeze else log_p

    def _float64_rows(self, x: Tensor, context: Tensor | None) -> Tensor:
        def wide(a: Tensor) -> Tensor:
            return lift(torch.as_tensor(a, dtype=torch.float64, device=self.device),
                        self.n_models)

        return wide(x) if context is None else torch.cat([wide(x), wide(context)], dim=-1)

    def _log_prob_in_float64(self, rows: Tensor) -> Tensor:
        """``log p`` of float64 rows, by a float64 copy of this flow."""
        wide = self if self.dtype == torch.float64 else copy.deepcopy(self).double()
        with torch.no_grad():
            return wide._log_prob(rows)

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
        """``n`` draws from the base distribution per model, shape ``(M, n, D)``."""
        if n < 1:
            raise ValueError(f"number of samples must be >= 1, got {n}")
        generator = seed if isinstance(seed, torch.Generator) else _generator(seed, self.device)
        return self.base.sample((self.n_models, n), generator, self._anchor)

    def sample(
        self, n: int, seed: int | torch.Generator | None = None, context: Tensor | None = None
    ) -> Tensor:
        """``n`` samples ``x``, shape ``(n, D)`` (or ``(M, n, D)``); for a conditional flow,
        one sample per row of ``context`` (a single row is repeated ``n`` times)."""
        return self.sample_with_log_prob(n, seed, context)[0]

    def sample_with_log_prob(
        self, n: int, seed: int | torch.Generator | None = None, context: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Samples and their log-density from one pass: ``log p(x) = log p(z) - log|det dx/dz|``."""
        with threads.budget(work=n * self.n_models, grain=POINTS_PER_THREAD):
            return self._sample_with_log_prob(n, seed, context)

    def _sample_with_log_prob(self, n: int, seed: int | torch.Generator | None,
                              context: Tensor | None) -> tuple[Tensor, Tensor]:
        z = self.sample_latent(n, seed)
        c = self._sample_context(context, n)
        x, logdet = self._chunked(lambda r: self._to_data(*self._split_rows(r)),
                                  with_context(z, c))
        log_p = self.base.log_prob(z) - logdet
        return (x[0], log_p[0]) if self.n_models == 1 else (x, log_p)

    def _sample_context(self, context: Tensor | None, n: int) -> Tensor | None:
        if context is not None and self.context_features:
            context = torch.as_tensor(context).reshape(-1, self.context_features)
            context = context.expand(n, -1) if len(context) == 1 else context
        like = torch.empty(n, self.dim)
        return as_context(context, self.context_features, like, self._anchor, self.n_models)

    def trace_to_data(
        self, z_or_n: Tensor | int, seed: int | torch.Generator | None = None,
        context: Tensor | None = None,
    ) -> list[Tensor]:
        """Points after every transform on the way z -> x: prior first, data last (a continuous
        flow adds snapshots at evenly spaced times)."""
        if isinstance(z_or_n, int):
            z, squeeze = self.sample_latent(z_or_n, seed), self.n_models == 1
        else:
            z, squeeze = self._lifted(z_or_n)
        c = self._embed(self._sample_context(context, z.shape[1]))
        trace = [z]
        for transform in reversed(self.transforms):
            trace.extend(transform._trace_to_data(trace[-1], c))
        return [t[0] for t in trace] if squeeze else trace

    def trace_to_latent(self, x: Tensor, context: Tensor | None = None) -> list[Tensor]:
        """Points after every transform on the way x -> z: data first, latent last."""
        x, squeeze = self._lifted(x)
        c = self._embed(as_context(context, self.context_features, x, self._anchor,
                                   self.n_models))
        trace = [x]
        for transform in self.transforms:
            trace.extend(transform._trace_to_latent(trace[-1], c))
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
