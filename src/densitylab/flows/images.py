"""Invertible transforms of images: squeeze, ActNorm per channel, the 1x1 convolution, affine
coupling with checkerboard or channel masks, and the elementwise pre-processing (rescaling,
logit) of pixel values.

Direction as everywhere in :mod:`densitylab.flows`: ``to_latent`` is x -> z, ``to_data`` is
z -> x, each returning ``(output, log|det J|)`` per example.

Shapes: an image transform reads the first ``C*H*W`` coordinates of a flat row ``(M, n, D)`` as an
image ``(C, H, W)`` (its ``shape``) and passes the rest through unchanged. A flat row is what
the training driver batches; in a multi-scale flow the coordinates behind the prefix are the
latents already factored out, so "split" costs nothing: later transforms simply read a shorter
prefix (``shape`` with half the channels). The public ``to_latent`` / ``to_data`` of a transform
whose prefix is the whole row also take and return images ``(n, C, H, W)``.

References:
    Dinh, Sohl-Dickstein & Bengio (2017), "Density estimation using Real NVP", ICLR.
    Kingma & Dhariwal (2018), "Glow: Generative Flow with Invertible 1x1 Convolutions".
"""

from __future__ import annotations

import math
from abc import abstractmethod
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from densitylab.flows.transforms import Transform, as_input, lift

MASKS = ("checkerboard", "channel")


def check_image_shape(shape: Sequence[int]) -> tuple[int, int, int]:
    """``(C, H, W)`` of positive integers; a one-line error otherwise."""
    try:
        values = tuple(int(s) for s in shape)
    except (TypeError, ValueError):
        raise ValueError(f"image shape must be (C, H, W) integers, got {shape!r}") from None
    if len(values) != 3 or min(values) < 1 or any(v != s for v, s in zip(values, shape,
                                                                           strict=True)):
        raise ValueError(f"image shape must be (C, H, W) positive integers, got {shape!r}")
    return values  # type: ignore[return-value]


class ImageTransform(Transform):
    """Base of image transforms: subclasses implement ``_image_to_latent`` and
    ``_image_to_data`` on ``(N, C, H, W)`` tensors, each returning ``(output, logdet (N,))``.

    Args:
        shape: ``(C, H, W)`` of the image this transform reads.
        dim: length of the whole flat row (default ``C*H*W``); coordinates beyond the image
            pass through unchanged.
    """

    def __init__(self, shape: Sequence[int], dim: int | None = None) -> None:
        self.shape = check_image_shape(shape)
        self.size = math.prod(self.shape)
        dim = self.size if dim is None else dim
        if dim < self.size:
            raise ValueError(f"a row of {dim} values cannot hold an image of shape {self.shape}")
        super().__init__(dim, 1)

    @property
    def out_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of the latent side (differs from ``shape`` for squeeze)."""
        return self.shape

    @abstractmethod
    def _image_to_latent(self, x: Tensor, context: Tensor | None = None
                         ) -> tuple[Tensor, Tensor]:
        """x -> z on images ``(N, C, H, W)``; ``context``: more image channels, if read."""

    @abstractmethod
    def _image_to_data(self, z: Tensor, context: Tensor | None = None
                       ) -> tuple[Tensor, Tensor]:
        """z -> x on images ``(N, C', H', W')`` (the ``out_shape``)."""

    def _to_latent(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self._on_prefix(self._image_to_latent, x, self.shape)

    def _to_data(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self._on_prefix(self._image_to_data, z, self.out_shape)

    def _on_prefix(self, method: Callable[..., tuple[Tensor, Tensor]], x: Tensor,
                   shape: tuple[int, int, int]) -> tuple[Tensor, Tensor]:
        """Apply ``method`` to the image prefix of rows ``(M, n, D)``; the rest passes."""
        m, n, _ = x.shape
        head, tail = x[..., : self.size], x[..., self.size :]
        out, logdet = method(head.reshape(m * n, *shape))
        out = out.reshape(m, n, self.size)
        if tail.shape[-1]:
            out = torch.cat([out, tail], dim=-1)
        return out, logdet.reshape(m, n)

    def _public(self, method, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        """Also take images ``(n, C, H, W)`` (returned in the output's image shape)."""
        x = torch.as_tensor(x)
        if x.dim() != 4:
            return super()._public(method, x, context)
        if self.dim != self.size:
            raise ValueError("this transform reads a prefix of longer rows: pass rows (n, D)")
        shape = self.shape if method == self._to_latent else self.out_shape
        if tuple(x.shape[1:]) != shape:
            raise ValueError(f"images must have shape (n, {', '.join(map(str, shape))}), "
                             f"got {tuple(x.shape)}")
        rows = as_input(x.reshape(len(x), -1), self._anchor, self.dim)
        out, logdet = method(lift(rows, 1), None)
        other = self.out_shape if method == self._to_latent else self.shape
        return out[0].reshape(len(x), *other), logdet[0]


class Squeeze(ImageTransform):
    """Space to depth: each 2x2 block of pixels becomes 4 channels, ``(C, H, W) -> (4C, H/2,
    W/2)``; a permutation of the coordinates, so log-det 0 and the inverse is exact."""

    def __init__(self, shape: Sequence[int], dim: int | None = None) -> None:
        super().__init__(shape, dim)
        c, h, w = self.shape
        if h % 2 or w % 2:
            raise ValueError(f"squeeze needs an even height and width, got shape {self.shape}")

    @property
    def out_shape(self) -> tuple[int, int, int]:
        c, h, w = self.shape
        return 4 * c, h // 2, w // 2

    def _image_to_latent(self, x: Tensor, context: Tensor | None = None
                         ) -> tuple[Tensor, Tensor]:
        n, (c, h, w) = len(x), self.shape
        out = x.reshape(n, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4)
        return out.reshape(n, 4 * c, h // 2, w // 2), x.new_zeros(n)

    def _image_to_data(self, z: Tensor, context: Tensor | None = None
                       ) -> tuple[Tensor, Tensor]:
        n, (c, h, w) = len(z), self.shape
        out = z.reshape(n, c, 2, 2, h // 2, w // 2).permute(0, 1, 4, 2, 5, 3)
        return out.reshape(n, c, h, w), z.new_zeros(n)


def _identity(tensor: Tensor) -> Tensor:
    return tensor


class ImageActNorm(ImageTransform):
    """ActNorm per channel: ``z = (x + bias_c) * exp(log_scale_c)``, log-det
    ``H * W * sum(log_scale)``.

    Data-dependent initialisation: the first ``to_latent`` in training mode sets each channel
    of that batch to zero mean and unit variance. The buffer ``initialized`` records it, so a
    saved and reloaded model is never initialised again.
    """

    def __init__(self, shape: Sequence[int], dim: int | None = None) -> None:
        super().__init__(shape, dim)
        channels = self.shape[0]
        self.log_scale = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.bias = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))
        # sums statistics over the processes of data-parallel training (set by the trainer)
        self.sum_statistics: Callable[[Tensor], Tensor] = _identity

    @torch.no_grad()
    def initialize(self, x: Tensor) -> None:
        """Bias and scale from a batch ``(N, C, H, W)``: zero mean, unit variance per channel."""
        total = self.sum_statistics
        count = total(torch.tensor(float(x.shape[0] * x.shape[2] * x.shape[3]),
                                   dtype=x.dtype, device=x.device))
        mean = total(x.sum(dim=(0, 2, 3), keepdim=True)) / count
        squares = total((x - mean).square().sum(dim=(0, 2, 3), keepdim=True))
        std = (squares / (count - 1).clamp_min(1)).sqrt()
        self.bias.copy_(-mean)
        self.log_scale.copy_(-torch.log(std.clamp_min(1e-6)))
        self.initialized.fill_(True)

    def _logdet(self, x: Tensor) -> Tensor:
        return (self.log_scale.sum() * (x.shape[2] * x.shape[3])).expand(len(x))

    def _image_to_latent(self, x: Tensor, context: Tensor | None = None
                         ) -> tuple[Tensor, Tensor]:
        if self.training and not self.initialized:
            self.initialize(x)
        return (x + self.bias) * torch.exp(self.log_scale), self._logdet(x)

    def _image_to_data(self, z: Tensor, context: Tensor | None = None
                       ) -> tuple[Tensor, Tensor]:
        return z * torch.exp(-self.log_scale) - self.bias, -self._logdet(z)


class Conv1x1(ImageTransform):
    """Glow's invertible 1x1 convolution: every pixel's channel vector is multiplied by one
    ``C x C`` matrix ``W = P L (U + diag(sign * exp(log_s)))`` (LU-parameterised: ``P`` a fixed
    permutation, ``L`` unit lower-, ``U`` strictly upper-triangular), so
    ``log|det| = H * W * sum(log_s)`` costs O(C). Starts at a random rotation (seeded).
    """

    def __init__(self, shape: Sequence[int], dim: int | None = None,
                 generator: torch.Generator | None = None) -> None:
        super().__init__(shape, dim)
        c = self.shape[0]
        gaussian = torch.randn(c, c, generator=generator, dtype=torch.float64)
        rotation, _ = torch.linalg.qr(gaussian)
        perm, lower, upper = torch.linalg.lu(rotation)
        diagonal = torch.diagonal(upper)
        self.register_buffer("perm", perm.float())
        self.register_buffer("sign", torch.sign(diagonal).float())
        self.register_buffer("lower_mask", torch.tril(torch.ones(c, c), -1))
        self.lower = nn.Parameter((lower * self.lower_mask.double()).float())
        self.upper = nn.Parameter((upper * self.lower_mask.T.double()).float())
        self.log_s = nn.Parameter(torch.log(diagonal.abs()).float())

    def _factors(self) -> tuple[Tensor, Tensor]:
        eye = torch.eye(self.shape[0], dtype=self.lower.dtype, device=self.lower.device)
        lower = self.lower * self.lower_mask + eye
        upper = self.upper * self.lower_mask.T + torch.diag(self.sign * torch.exp(self.log_s))
        return lower, upper

    def weight(self) -> Tensor:
        """``W`` of shape ``(C, C)``."""
        lower, upper = self._factors()
        return self.perm @ lower @ upper

    def inverse_weight(self) -> Tensor:
        """``W^-1 = U^-1 L^-1 P^T`` by two triangular solves."""
        lower, upper = self._factors()
        eye = torch.eye(self.shape[0], dtype=lower.dtype, device=lower.device)
        inv_lower = torch.linalg.solve_triangular(lower, eye, upper=False, unitriangular=True)
        inv_upper = torch.linalg.solve_triangular(upper, eye, upper=True)
        return inv_upper @ inv_lower @ self.perm.T

    def _logdet(self, x: Tensor) -> Tensor:
        return (self.log_s.sum() * (x.shape[2] * x.shape[3])).expand(len(x))

    def _image_to_latent(self, x: Tensor, context: Tensor | None = None
                         ) -> tuple[Tensor, Tensor]:
        return torch.einsum("ij,njhw->nihw", self.weight(), x), self._logdet(x)

    def _image_to_data(self, z: Tensor, context: Tensor | None = None
                       ) -> tuple[Tensor, Tensor]:
        return torch.einsum("ij,njhw->nihw", self.inverse_weight(), z), -self._logdet(z)


class ConvConditioner(nn.Module):
    """A small residual convolutional network in Glow's shape: 3x3 conv -> ReLU -> (1x1 conv
    -> ReLU, added to its input) -> 3x3 conv, the last layer zero-initialised so that a coupling
    built on it starts as the identity. The wide middle layer is 1x1, so its cost grows with
    the pixels, not nine times that."""

    def __init__(self, in_channels: int, hidden: int, out_channels: int,
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.first = nn.Conv2d(in_channels, hidden, 3, padding=1)
        self.mix = nn.Conv2d(hidden, hidden, 1)
        self.last = nn.Conv2d(hidden, out_channels, 3, padding=1)
        with torch.no_grad():
            for conv in (self.first, self.mix):  # seeded, not torch's global RNG
                bound = 1.0 / math.sqrt(conv.weight[0].numel())
                conv.weight.copy_(torch.rand(conv.weight.shape, generator=generator) * 2 * bound
                                  - bound)
                conv.bias.zero_()
            self.last.weight.zero_()
            self.last.bias.zero_()

    def forward(self, x: Tensor) -> Tensor:
        # channels-last: oneDNN's CPU convolutions run 1.3-1.6x faster on these small images
        h = F.relu(self.first(x.contiguous(memory_format=torch.channels_last)))
        h = h + F.relu(self.mix(h))
        return self.last(h)


class ImageCoupling(ImageTransform):
    """Affine coupling on images: ``z_b = x_b * exp(s) + t`` with ``(s, t)`` computed from the
    conditioning part ``x_a`` by a :class:`ConvConditioner` (and, for a conditional coupling,
    from ``context_channels`` more image channels); ``z_a = x_a``; log-det ``sum(s)``.

    ``mask="checkerboard"`` conditions on alternate pixels (all channels), ``"channel"`` on the
    first half of the channels (``flip``: the other pixels / the second half). The scale is
    ``s = scale_c * tanh(raw)``, bounded for stability, with a learned per-channel ``scale_c``.
    """

    def __init__(self, shape: Sequence[int], mask: str = "channel", flip: bool = False,
                 hidden: int = 64, dim: int | None = None, context_channels: int = 0,
                 generator: torch.Generator | None = None) -> None:
        super().__init__(shape, dim)
        if mask not in MASKS:
            raise ValueError(f"unknown mask {mask!r}; choose one of {list(MASKS)}")
        c, h, w = self.shape
        if mask == "channel" and c < 2:
            raise ValueError(f"a channel mask needs at least 2 channels, got shape {self.shape}")
        if mask == "checkerboard" and h * w < 2:
            raise ValueError(f"a checkerboard mask needs at least 2 pixels, got {self.shape}")
        self.mask, self.flip = mask, bool(flip)
        if mask == "channel":
            half = c // 2
            self.n_a, self.n_b = (half, c - half) if not flip else (c - half, half)
        else:
            self.n_a = self.n_b = c
            rows, cols = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
            board = ((rows + cols) % 2 == int(self.flip)).float()
            self.register_buffer("board", board.reshape(1, 1, h, w), persistent=False)
        self.net = ConvConditioner(self.n_a + context_channels, hidden, 2 * self.n_b, generator)
        self.scale = nn.Parameter(torch.ones(1, self.n_b, 1, 1))
        self.context_channels = context_channels

    def _split(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if self.mask == "checkerboard":
            return x * self.board, x
        first, second = x[:, : self.shape[0] // 2], x[:, self.shape[0] // 2 :]
        return (second, first) if self.flip else (first, second)

    def _merge(self, a: Tensor, b: Tensor) -> Tensor:
        if self.mask == "checkerboard":
            return b  # s and t vanish on the conditioning pixels, so b already holds a there
        return torch.cat([b, a] if self.flip else [a, b], dim=1)

    def scale_and_shift(self, x_a: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        """``(s, t)`` for the transformed part, each ``(N, n_b, H, W)``."""
        inputs = x_a if context is None else torch.cat([x_a, context], dim=1)
        raw, t = self.net(inputs).chunk(2, dim=1)
        s = self.scale * torch.tanh(raw)
        if self.mask == "checkerboard":
            free = 1.0 - self.board
            s, t = s * free, t * free
        return s, t

    def _image_to_latent(self, x: Tensor, context: Tensor | None = None
                         ) -> tuple[Tensor, Tensor]:
        x_a, x_b = self._split(x)
        s, t = self.scale_and_shift(x_a, context)
        return self._merge(x_a, x_b * torch.exp(s) + t), s.flatten(1).sum(1)

    def _image_to_data(self, z: Tensor, context: Tensor | None = None
                       ) -> tuple[Tensor, Tensor]:
        z_a, z_b = self._split(z)
        s, t = self.scale_and_shift(z_a, context)
        return self._merge(z_a, (z_b - t) * torch.exp(-s)), -s.flatten(1).sum(1)


class Rescale(Transform):
    """``z = x * factor`` on every coordinate (pixel values ``[0, K)`` to ``[0, 1)`` with
    ``factor = 1/K``); log-det ``D * log(factor)``, so densities stay in pixel units."""

    def __init__(self, dim: int, factor: float) -> None:
        super().__init__(dim, 1)
        if not factor > 0:
            raise ValueError(f"rescale factor must be positive, got {factor!r}")
        self.factor = float(factor)

    def _logdet(self, x: Tensor) -> Tensor:
        return x.new_full(x.shape[:-1], self.dim * math.log(self.factor))

    def _to_latent(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return x * self.factor, self._logdet(x)

    def _to_data(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return z / self.factor, -self._logdet(z)


class Logit(Transform):
    """The logit pre-processing of RealNVP: ``p = alpha + (1 - 2 alpha) x`` for ``x`` in
    ``(0, 1)``, ``z = log p - log(1 - p)``; log-det ``sum(log(1 - 2 alpha) - log p -
    log(1 - p))``, counted in every density. With ``alpha = 0`` it maps the unit cube onto all
    of R^D, so a density on z puts all its mass on the pixel range; ``alpha > 0`` keeps the
    logit finite at the faces but lets some mass fall beyond them (a sub-probability: bits/dim
    stay upper bounds)."""

    def __init__(self, dim: int, alpha: float = 1e-3) -> None:
        super().__init__(dim, 1)
        if not 0.0 <= alpha < 0.5:
            raise ValueError(f"logit alpha must lie in [0, 0.5), got {alpha!r}")
        self.alpha = float(alpha)

    def _to_latent(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        p = self.alpha + (1.0 - 2.0 * self.alpha) * x
        z = torch.log(p) - torch.log1p(-p)
        logdet = (math.log(1.0 - 2.0 * self.alpha) - torch.log(p) - torch.log1p(-p)).sum(-1)
        return z, logdet

    def _to_data(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        p = torch.sigmoid(z)
        x = (p - self.alpha) / (1.0 - 2.0 * self.alpha)
        logdet = (F.logsigmoid(z) + F.logsigmoid(-z) - math.log(1.0 - 2.0 * self.alpha)).sum(-1)
        return x, logdet
