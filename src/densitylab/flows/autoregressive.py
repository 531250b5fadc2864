"""Masked autoregressive transforms (MAF, and its inverse IAF) with MADE conditioners.

Each coordinate ``i`` (in the layer's ``order``) is transformed given the coordinates before
it: ``z_i = f(x_i; theta_i(x_<i))`` with ``f`` an affine map or a rational-quadratic spline. One
masked network (MADE) computes every ``theta_i`` in a single pass, its connections cut so that
``theta_i`` sees only ``x_<i``; the Jacobian is then triangular and its log-determinant the sum
of the elementwise ones.

Directions: a MAF layer evaluates densities (``to_latent``) in one pass and samples
(``to_data``) in ``D`` sequential passes, one coordinate fixed per pass; an IAF layer
(``inverse=True``) is the same map turned around: one-pass sampling, sequential densities.

References:
    Germain, Gregor, Murray & Larochelle (2015), "MADE: Masked Autoencoder for Distribution
    Estimation", ICML.
    Papamakarios, Pavlakou & Murray (2017), "Masked Autoregressive Flow for Density
    Estimation", NeurIPS.
    Kingma, Salimans, Jozefowicz, Chen, Sutskever & Welling (2016), "Improved Variational
    Inference with Inverse Autoregressive Flow", NeurIPS.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from densitylab._validation import check_widths
from densitylab.flows.nets import StackedMLP
from densitylab.flows.splines import _check_spline, rational_quadratic
from densitylab.flows.transforms import Transform, check_context, with_context

ELEMENTWISE = ("affine", "spline")


def made_masks(order: Tensor, hidden: Sequence[int], per_output: int, context: int = 0
               ) -> list[Tensor]:
    """MADE's connectivity masks for inputs taken in ``order`` (a permutation of ``0..D-1``),
    followed by ``context`` inputs that every unit may see.

    Input ``j`` gets degree ``rank of j in order + 1`` (context inputs degree 0); hidden units
    cycle through degrees ``1..D-1`` (``0..D-1`` with a context, so some units read the context
    alone: the only inputs the first coordinate's parameters may depend on); a hidden unit sees
    the inputs of degree at most its own, and the ``per_output`` outputs of input ``i`` see
    only hidden units of degree below ``i``'s.
    """
    dim = len(order)
    inputs = torch.zeros(dim + context, dtype=torch.long, device="cpu")
    inputs[order] = torch.arange(1, dim + 1, device="cpu")
    degrees = [inputs]
    lowest = 0 if context else 1
    for width in check_widths(hidden):
        degrees.append(torch.arange(width, device="cpu") % max(1, dim - lowest) + lowest)
    masks = [(later[None, :] >= earlier[:, None]).float()
             for earlier, later in zip(degrees[:-1], degrees[1:], strict=True)]
    outputs = inputs[:dim].repeat_interleave(per_output)
    masks.append((outputs[None, :] > degrees[-1][:, None]).float())
    return masks


class MaskedAutoregressive(Transform):
    """An autoregressive layer: affine (``z_i = x_i exp(s_i) + t_i``, bounded ``s_i``) or
    spline (rational-quadratic, identity outside ``[-bound, bound]``) in each coordinate, its
    parameters from a MADE network of the coordinates before it in ``order``.

    Args:
        dim: number of coordinates.
        hidden: hidden widths of the MADE network.
        activation: its activation.
        transform: ``"affine"`` or ``"spline"``.
        bins: the spline's pieces (``transform="spline"``).
        bound: half-width of the interval the spline covers; identity outside.
        inverse: ``False`` for MAF (one-pass densities), ``True`` for IAF (one-pass samples).
        reverse: take the coordinates in reverse order (alternate it between stacked layers).
        context: columns of a context ``c`` every parameter may depend on (0: none).
    """

    def __init__(
        self,
        dim: int,
        hidden: Sequence[int] = (64, 64),
        activation: str = "leaky_relu",
        transform: str = "affine",
        bins: int = 8,
        bound: float = 4.0,
        inverse: bool = False,
        reverse: bool = False,
        n_models: int = 1,
        generator: torch.Generator | None = None,
        context: int = 0,
    ) -> None:
        super().__init__(dim, n_models)
        self.context_features = check_context(context)
        if transform not in ELEMENTWISE:
            raise ValueError(f"unknown transform {transform!r}; choose one of {list(ELEMENTWISE)}")
        if transform == "spline":
            _check_spline(bins, bound)
        self.transform, self.bins, self.bound = transform, bins, float(bound)
        self.inverse = inverse
        self.per_output = 2 if transform == "affine" else 3 * bins - 1
        order = torch.arange(dim, device="cpu")
        self.order = order.flip(0) if reverse else order
        self.net = StackedMLP(
            n_nets=n_models, in_features=dim + self.context_features, hidden=hidden,
            out_features=dim * self.per_output, activation=activation, zero_init_output=True,
            generator=generator, masks=made_masks(self.order, hidden, self.per_output, context),
        )
        if transform == "affine":
            self.scale_factor = nn.Parameter(torch.ones(n_models, 1, dim))

    def _elementwise(self, values: Tensor, conditioner_input: Tensor, backward: bool,
                     context: Tensor | None) -> tuple[Tensor, Tensor]:
        """``f`` (or its inverse) of every coordinate with parameters from the MADE network of
        ``conditioner_input`` (and the context); returns the output and
        ``log|d output / d values|`` summed."""
        raw = self.net(with_context(conditioner_input, context)).unflatten(
            -1, (self.dim, self.per_output))
        if self.transform == "spline":
            out, log_derivative = rational_quadratic(values, raw, self.bound, backward)
            return out, log_derivative.sum(-1)
        s = self.scale_factor * torch.tanh(raw[..., 0])
        if backward:
            return (values - raw[..., 1]) * torch.exp(-s), -s.sum(-1)
        return values * torch.exp(s) + raw[..., 1], s.sum(-1)

    def _parallel(self, source: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        """The one-pass direction: every parameter depends on ``source`` (and context) alone."""
        return self._elementwise(source, source, False, context)

    def _sequential(self, target: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        """The other direction, one coordinate per pass in ``order``: find ``source`` with
        ``_parallel(source) == target``."""
        source = torch.zeros_like(target)
        for i in self.order.tolist():
            solved, _ = self._elementwise(target, source, True, context)
            source = torch.where(torch.arange(self.dim, device=target.device) == i, solved,
                                 source)
        _, logdet = self._elementwise(target, source, True, context)
        return source, logdet

    def _to_latent(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self._sequential(x, context) if self.inverse else self._parallel(x, context)

    def _to_data(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self._parallel(z, context) if self.inverse else self._sequential(z, context)
