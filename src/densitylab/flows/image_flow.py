"""A flow of images: the vector :class:`~densitylab.flows.Flow` on flattened images, with its
dequantizer, the latent segments of its scales, and sampling at a temperature.

The training driver batches flat rows ``(M, n, C*H*W)`` of integer pixel values; called with
noise, the flow returns one draw of the dequantized lower bound on ``log P(x)`` (see
:mod:`densitylab.flows.dequantization`), which the ``"dequantized"`` objective maximises.
Called without noise it is the plain density in pixel units, like every flow.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from densitylab.flows.dequantization import dequantized_log_prob
from densitylab.flows.flow import Flow
from densitylab.flows.images import check_image_shape
from densitylab.flows.transforms import Transform


class MultiScaleFlow(Flow):
    """A flow on images ``(C, H, W)`` with ``levels`` pixel values (``0 .. levels-1``).

    Public methods take images ``(n, C, H, W)`` or flat rows ``(n, C*H*W)``; latents are flat
    rows whose segments ``scales`` (``(start, stop)`` per scale, finest first) hold what each
    scale factored out.

    Args:
        transforms: the transforms, first applied first on the way to the latent.
        config: the builder's arguments (``shape`` and ``pixel_levels`` among them).
        dequantizer: :class:`~densitylab.flows.dequantization.UniformDequantization` or
            :class:`~densitylab.flows.dequantization.VariationalDequantization`.
        scales: latent segments, finest scale first.
    """

    def __init__(self, transforms: Sequence[Transform], config: dict[str, Any],
                 dequantizer: nn.Module, scales: Sequence[tuple[int, int]]) -> None:
        super().__init__(transforms, config)
        self.image_shape = check_image_shape(config["shape"])
        self.dequantizer = dequantizer
        self.scales = [tuple(s) for s in scales]
        # the pixel values covered; its length also ties a saved file to its configuration
        self.register_buffer("pixel_values", torch.arange(int(config["pixel_levels"])).float())

    @property
    def levels(self) -> int:
        return len(self.pixel_values)

    def forward(self, rows: Tensor, noise: Tensor | None = None) -> Tensor:
        """``log p(rows)``, or with ``noise`` (the dequantizer's base noise, shaped like the
        rows) one draw of the bound ``log p(x + u) - log q(u | x)`` on integer rows ``x``."""
        if noise is None:
            return self._log_prob(rows)
        return dequantized_log_prob(self._log_prob, self.dequantizer, rows, noise)

    def _lifted(self, x: Tensor, beyond_range: bool = False) -> tuple[Tensor, bool]:
        x = torch.as_tensor(x)
        if x.dim() == 4:
            if tuple(x.shape[1:]) != self.image_shape:
                shape = ", ".join(map(str, self.image_shape))
                raise ValueError(f"images must have shape (n, {shape}), got {tuple(x.shape)}")
            x = x.reshape(len(x), -1)
        return super()._lifted(x, beyond_range)

    def as_images(self, rows: Tensor) -> Tensor:
        """Flat rows ``(..., C*H*W)`` viewed as images ``(..., C, H, W)``."""
        return rows.reshape(*rows.shape[:-1], *self.image_shape)

    def sample_latent_at(self, n: int, temperature: float = 1.0,
                         seed: int | torch.Generator | None = None) -> Tensor:
        """``n`` latents ``(n, D)`` from the base at ``temperature`` (its standard deviation
        scaled; Glow's learned prior is a transform, so it scales the same way; 0: the mode)."""
        if not (isinstance(temperature, int | float) and math.isfinite(temperature)
                and temperature >= 0):
            raise ValueError(f"temperature must be a finite number >= 0, got {temperature!r}")
        return self.sample_latent(n, seed)[0] * temperature

    @torch.no_grad()
    def decode(self, z: Tensor) -> Tensor:
        """Latent rows ``(n, D)`` -> continuous images ``(n, C, H, W)`` in pixel units."""
        return self.as_images(self.to_data(z)[0])

    @torch.no_grad()
    def encode(self, images: Tensor) -> Tensor:
        """Images ``(n, C, H, W)`` (pixel units) -> latent rows ``(n, D)``."""
        return self.to_latent(images)[0]

    def quantize(self, values: Tensor) -> Tensor:
        """Continuous pixel values to integer pixels: ``floor``, clipped to the levels."""
        return torch.floor(values).clamp(0, self.levels - 1).long()

    def sample_images(self, n: int, temperature: float = 1.0,
                      seed: int | torch.Generator | None = None) -> Tensor:
        """``n`` integer images ``(n, C, H, W)`` drawn at ``temperature``."""
        return self.quantize(self.decode(self.sample_latent_at(n, temperature, seed)))

    @torch.no_grad()
    def interpolate(self, first: Tensor, second: Tensor, steps: int = 8) -> Tensor:
        """Images along the straight line between the latents of two images (pixel units,
        centred in their dequantization cells): ``(steps, C, H, W)`` integer images."""
        ends = self.encode(torch.stack([torch.as_tensor(first), torch.as_tensor(second)])
                           .to(self.dtype) + 0.5)
        weights = torch.linspace(0, 1, steps, dtype=self.dtype, device=self.device)[:, None]
        return self.quantize(self.decode((1 - weights) * ends[0] + weights * ends[1]))

    @torch.no_grad()
    def resample_scales(self, image: Tensor, scale: int, n: int, temperature: float = 1.0,
                        seed: int | None = None) -> Tensor:
        """``n`` variants of ``image``: the latents of scales ``0 .. scale`` (finest first)
        drawn afresh at ``temperature``, the coarser ones kept, so the variants show what
        those scales encode. Returns integer images ``(n, C, H, W)``."""
        if not 0 <= scale < len(self.scales):
            raise ValueError(f"scale must lie in 0..{len(self.scales) - 1}, got {scale}")
        z = self.encode(torch.as_tensor(image)[None].to(self.dtype) + 0.5).expand(n, -1).clone()
        fresh = self.sample_latent_at(n, temperature, seed)
        for start, stop in self.scales[: scale + 1]:
            z[:, start:stop] = fresh[:, start:stop]
        return self.quantize(self.decode(z))

    @torch.no_grad()
    def layer_images(self, image: Tensor) -> list[tuple[str, Tensor]]:
        """One image on its way to the latent: ``(name, array)`` after every transform, the
        part still being transformed viewed as ``(C, H, W)`` channels."""
        from densitylab.flows.images import ImageTransform

        trace = self.trace_to_latent(torch.as_tensor(image).reshape(1, -1).to(self.dtype) + 0.5)
        views, shape = [("data x", self.as_images(trace[0][0]))], self.image_shape
        for transform, rows in zip(self.transforms, trace[1:], strict=True):
            if isinstance(transform, ImageTransform):
                shape = transform.out_shape
            size = math.prod(shape)
            views.append((type(transform).__name__, rows[0, :size].reshape(shape)))
        return views
