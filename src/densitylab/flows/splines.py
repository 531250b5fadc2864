"""Rational-quadratic spline couplings (Neural Spline Flows) with linear tails.

Inside ``[-bound, bound]`` each transformed coordinate passes through a monotone piecewise
rational-quadratic function with ``bins`` pieces whose knots and knot derivatives are outputs
of the conditioner network; outside, the map is the identity (the "linear tails"), so the
transform is defined, and invertible, on the whole real line.

On bin ``k`` with knots ``(x_k, y_k)``, width ``w``, height ``h``, slope ``s = h / w`` and knot
derivatives ``d_k, d_{k+1}``, with ``xi = (x - x_k) / w`` in ``[0, 1]``:

    y = y_k + h (s xi^2 + d_k xi (1 - xi)) / (s + (d_k + d_{k+1} - 2 s) xi (1 - xi))

    dy/dx = s^2 (d_{k+1} xi^2 + 2 s xi (1 - xi) + d_k (1 - xi)^2)
            / (s + (d_k + d_{k+1} - 2 s) xi (1 - xi))^2  > 0,

and the inverse solves a quadratic in ``xi`` by its cancellation-free root. Boundary knot
derivatives are 1, so value and slope are continuous where the tails begin.

References:
    Durkan, Bekasov, Murray & Papamakarios (2019), "Neural Spline Flows", NeurIPS.
    Gregory & Delbourgo (1982), "Piecewise rational quadratic interpolation to monotonic data".
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from densitylab.flows.transforms import Coupling, Transform, with_context

MIN_BIN_WIDTH = 1e-3  # fraction of the interval; keeps every bin's slope finite
MIN_BIN_HEIGHT = 1e-3
MIN_DERIVATIVE = 1e-3
# softplus(IDENTITY_SHIFT) + MIN_DERIVATIVE == 1: a zero network output gives the identity map
IDENTITY_SHIFT = math.log(math.expm1(1.0 - MIN_DERIVATIVE))


def _knots(raw: Tensor, bound: float, minimum: float) -> tuple[Tensor, Tensor]:
    """Knot positions ``(..., bins + 1)`` from exactly ``-bound`` to exactly ``bound``, and bin
    sizes ``(..., bins)``, from unnormalised ``raw`` (softmax, with a floor on every bin)."""
    bins = raw.shape[-1]
    fractions = minimum + (1 - minimum * bins) * torch.softmax(raw, dim=-1)
    inner = 2 * bound * torch.cumsum(fractions, dim=-1)[..., :-1] - bound
    end = torch.full_like(inner[..., :1], bound)
    knots = torch.cat([-end, inner, end], dim=-1)
    return knots, knots[..., 1:] - knots[..., :-1]


def _bin_of(knots: Tensor, values: Tensor) -> Tensor:
    """Index ``(..., 1)`` of the bin holding each value, clamped to a valid bin (ends included)."""
    index = torch.searchsorted(knots[..., 1:-1].contiguous(), values.unsqueeze(-1), right=True)
    return index.clamp(0, knots.shape[-1] - 2)


def _take(table: Tensor, index: Tensor) -> Tensor:
    return table.gather(-1, index).squeeze(-1)


def rational_quadratic(
    values: Tensor, raw: Tensor, bound: float, inverse: bool = False
) -> tuple[Tensor, Tensor]:
    """Apply the spline elementwise; returns ``(output, log|d output / d input|)``.

    ``values``: ``(...)``; ``raw``: ``(..., 3 * bins - 1)`` unnormalised widths, heights and
    interior knot derivatives. Values outside ``[-bound, bound]`` pass unchanged (log-det 0).
    """
    bins = (raw.shape[-1] + 1) // 3
    raw_w, raw_h, raw_d = raw[..., :bins], raw[..., bins : 2 * bins], raw[..., 2 * bins :]
    x_knots, widths = _knots(raw_w, bound, MIN_BIN_WIDTH)
    y_knots, heights = _knots(raw_h, bound, MIN_BIN_HEIGHT)
    interior = MIN_DERIVATIVE + F.softplus(raw_d + IDENTITY_SHIFT)
    ones = torch.ones_like(interior[..., :1])
    derivatives = torch.cat([ones, interior, ones], dim=-1)

    inside = (values >= -bound) & (values <= bound)
    v = values.clamp(-bound, bound)  # tails are handled below; keep the algebra finite there
    k = _bin_of(y_knots if inverse else x_knots, v)
    x_k, y_k, w, h = (_take(table, k) for table in (x_knots, y_knots, widths, heights))
    d_k, d_k1 = _take(derivatives, k), _take(derivatives, k + 1)
    slope = h / w
    curvature = d_k + d_k1 - 2 * slope

    if inverse:
        dy = v - y_k
        a = h * (slope - d_k) + dy * curvature
        b = h * d_k - dy * curvature
        c = -slope * dy
        discriminant = (b.square() - 4 * a * c).clamp_min(0)
        xi = (2 * c / (-b - discriminant.sqrt())).clamp(0, 1)
    else:
        xi = ((v - x_k) / w).clamp(0, 1)
    mix = xi * (1 - xi)
    denominator = slope + curvature * mix
    numerator = slope.square() * (d_k1 * xi.square() + 2 * slope * mix + d_k * (1 - xi).square())
    log_derivative = torch.log(numerator) - 2 * torch.log(denominator)
    if inverse:
        out, log_derivative = x_k + xi * w, -log_derivative
    else:
        out = y_k + h * (slope * xi.square() + d_k * mix) / denominator
    out = torch.where(inside, out.clamp(-bound, bound), values)  # rounding stays inside
    return out, torch.where(inside, log_derivative, torch.zeros_like(log_derivative))


def _check_spline(bins: int, bound: float) -> None:
    if isinstance(bins, bool) or not isinstance(bins, int) or bins < 2:
        raise ValueError(f"bins must be an integer >= 2, got {bins!r}")
    if not (isinstance(bound, int | float) and math.isfinite(bound) and bound > 0):
        raise ValueError(f"bound must be a positive number, got {bound!r}")


class ElementwiseSpline(Transform):
    """A rational-quadratic spline per coordinate with learned, unconditional parameters.

    The flow layer for one-dimensional data, where a coupling has nothing to condition on:
    each coordinate passes through its own monotone spline of ``bins`` pieces on
    ``[-bound, bound]``, identity outside. Stacked layers compose into one finer monotone map.
    It starts as the identity unless ``generator`` perturbs it.
    """

    def __init__(
        self, dim: int, bins: int = 8, bound: float = 4.0, n_models: int = 1,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__(dim, n_models)
        _check_spline(bins, bound)
        self.bins, self.bound = bins, float(bound)
        raw = torch.zeros(n_models, 1, dim, 3 * bins - 1)
        if generator is not None:  # small random knots: layers of a stack start different
            raw = 0.01 * torch.randn(raw.shape, generator=generator)
        self.raw = torch.nn.Parameter(raw)

    def _spline(self, values: Tensor, inverse: bool) -> tuple[Tensor, Tensor]:
        raw = self.raw.expand(values.shape[0], values.shape[1], -1, -1)
        out, log_derivative = rational_quadratic(values, raw, self.bound, inverse)
        return out, log_derivative.sum(-1)

    def _to_latent(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self._spline(x, inverse=False)

    def _to_data(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self._spline(z, inverse=True)


class SplineCoupling(Coupling):
    """Coupling whose transformed coordinates pass through rational-quadratic splines
    conditioned on ``x_a`` (Neural Spline Flows), identity outside ``[-bound, bound]``.

    Far more flexible per layer than an affine coupling: each coordinate gets a monotone
    function with ``bins`` pieces instead of a line. The Jacobian is still triangular (identity
    block, diagonal of spline slopes), and the inverse is exact (a quadratic root per value).

    Args:
        mask: length-``D`` booleans; ``True`` marks the conditioning coordinates ``x_a``.
        hidden: hidden widths of the conditioner network (one network for all spline
            parameters).
        activation: the conditioner's activation, ``"leaky_relu"``, ``"relu"`` or ``"tanh"``.
        bins: spline pieces per coordinate.
        bound: half-width of the interval the splines cover; put the data inside it (e.g.
            standardise, see ``fit(..., standardize=True)``).
        zero_init: zero the conditioner's output layer so the coupling starts as the identity.
        fourier: octaves of Fourier features of ``x_a`` fed to the network (0: none).
        context: columns of a context ``c`` fed to the network beside ``x_a`` (0: none).
    """

    def __init__(
        self,
        mask: Sequence[bool] | Tensor,
        hidden: Sequence[int] = (32, 32),
        activation: str = "leaky_relu",
        bins: int = 8,
        bound: float = 4.0,
        zero_init: bool = True,
        n_models: int = 1,
        generator: torch.Generator | None = None,
        fourier: int = 0,
        context: int = 0,
    ) -> None:
        super().__init__(mask, n_models)
        _check_spline(bins, bound)
        self.bins, self.bound = bins, float(bound)
        self._conditioner(n_models, len(self.trans_idx) * (3 * bins - 1), context,
                          hidden=hidden, activation=activation, zero_init_output=zero_init,
                          generator=generator, fourier=fourier)

    def _spline(self, x_a: Tensor, values: Tensor, inverse: bool, context: Tensor | None
                ) -> tuple[Tensor, Tensor]:
        raw = self.net(with_context(x_a, context)).unflatten(
            -1, (values.shape[-1], 3 * self.bins - 1))
        out, log_derivative = rational_quadratic(values, raw, self.bound, inverse)
        return out, log_derivative.sum(-1)

    def _to_latent(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        x_a, x_b = self._split(x)
        z_b, logdet = self._spline(x_a, x_b, inverse=False, context=context)
        return self._merge(x_a, z_b), logdet

    def _to_data(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        z_a, z_b = self._split(z)
        x_b, logdet = self._spline(z_a, z_b, inverse=True, context=context)
        return self._merge(z_a, x_b), logdet
