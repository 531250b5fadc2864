"""Conditioner networks: many independent MLPs of one shape, evaluated as one batched computation.

A coupling layer needs a scale network s and a shift network t; a sweep needs the same coupling
for M models. Both are "many small MLPs of the same shape", so their weights are stacked along a
leading group dimension G and evaluated with one ``baddbmm`` per layer instead of 2M small
``Linear`` calls. The networks stay mathematically separate: no weight is shared across groups.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from densitylab._validation import check_choice, check_widths

ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "leaky_relu": F.leaky_relu,
    "relu": F.relu,
    "tanh": torch.tanh,
}
# in-place twins, for the fresh layer outputs of StackedMLP (autograd supports all three)
_IN_PLACE: dict[str, Callable[[Tensor], Tensor]] = {
    "leaky_relu": F.leaky_relu_,
    "relu": F.relu_,
    "tanh": torch.tanh_,
}


def check_activation(name: str) -> Callable[[Tensor], Tensor]:
    """Look up an activation by name; the error lists the valid names."""
    return ACTIVATIONS[check_choice(name, ACTIVATIONS, "activation")]


MAX_OCTAVES = 20
"""Most Fourier octaves a network takes: ``sin(2^k x)`` of a standardised input has lost every
significant digit of float32 well before ``k = 24`` (and ``2^k`` overflows at 128)."""


def fourier_features(x: Tensor, octaves: int) -> Tensor:
    """``[x, sin(2^k x), cos(2^k x)]`` for ``k < octaves`` along the last dimension.

    The positional encoding of neural radiance fields: sinusoids of doubling frequency let a
    small network represent sharp, high-frequency functions of its input.
    """
    if octaves == 0:
        return x
    frequencies = 2.0 ** torch.arange(octaves, dtype=x.dtype, device=x.device)
    angles = (x.unsqueeze(-1) * frequencies).flatten(-2)
    return torch.cat([x, torch.sin(angles), torch.cos(angles)], dim=-1)


class StackedMLP(nn.Module):
    """``n_nets`` independent MLPs ``in_features -> hidden... -> out_features``.

    Layer ``l`` holds ``weight`` of shape ``(n_nets, fan_in, fan_out)`` and ``bias`` of shape
    ``(n_nets, 1, fan_out)``; ``forward`` maps ``(n_nets, n, in_features)`` to
    ``(n_nets, n, out_features)``. Initialisation matches ``torch.nn.Linear`` (uniform in
    ``+-1/sqrt(fan_in)``), drawn from an explicit generator. With ``fourier > 0`` the input
    first passes through :func:`fourier_features` with that many octaves. ``masks`` (one
    ``(fan_in, fan_out)`` 0/1 matrix per layer) cut connections, as MADE does.
    """

    def __init__(
        self,
        n_nets: int,
        in_features: int,
        hidden: Sequence[int],
        out_features: int,
        activation: str = "leaky_relu",
        zero_init_output: bool = False,
        generator: torch.Generator | None = None,
        fourier: int = 0,
        masks: Sequence[Tensor] | None = None,
    ) -> None:
        super().__init__()
        if isinstance(fourier, bool) or not isinstance(fourier, int) or not (
                0 <= fourier <= MAX_OCTAVES):
            raise ValueError(f"fourier must be an integer in 0..{MAX_OCTAVES} (octaves beyond "
                             f"float precision are noise), got {fourier!r}")
        check_activation(activation)
        self.activation_name = activation
        self.fourier = fourier
        widths = (in_features * (1 + 2 * fourier), *check_widths(hidden), out_features)
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for layer, (fan_in, fan_out) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
            bound = fan_in**-0.5
            weight = torch.empty(n_nets, fan_in, fan_out)
            bias = torch.empty(n_nets, 1, fan_out)
            weight.uniform_(-bound, bound, generator=generator)
            bias.uniform_(-bound, bound, generator=generator)
            if zero_init_output and layer == len(widths) - 2:
                weight.zero_()
                bias.zero_()
            self.weights.append(nn.Parameter(weight))
            self.biases.append(nn.Parameter(bias))
        # connectivity masks (MADE): rebuilt from the architecture, never saved
        self.masks = None if masks is None else list(masks)
        if self.masks is not None:
            for layer, mask in enumerate(self.masks):
                if tuple(mask.shape) != tuple(self.weights[layer].shape[1:]):
                    raise ValueError(f"mask {layer} has shape {tuple(mask.shape)}, the layer "
                                     f"{tuple(self.weights[layer].shape[1:])}")
                self.register_buffer(f"mask_{layer}", mask.to(torch.get_default_dtype()),
                                     persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        x = fourier_features(x, self.fourier)
        last = len(self.weights) - 1
        activate = _IN_PLACE[self.activation_name]
        for layer, (weight, bias) in enumerate(zip(self.weights, self.biases, strict=True)):
            if self.masks is not None:
                weight = weight * getattr(self, f"mask_{layer}")
            if weight.shape[1] == 1:  # one input: an outer product, one fused pass
                x = torch.addcmul(bias, x, weight)
            elif weight.shape[2] == 1:  # one output: BLAS is ~3.5x faster at w^T x^T than at x w
                n_nets, n, fan_in = x.shape  # (views, so gradients keep the parameters' layout)
                x = torch.baddbmm(bias, weight.view(n_nets, 1, fan_in), x.mT).view(n_nets, n, 1)
            else:
                x = torch.baddbmm(bias, x, weight)
            if layer < last:
                x = activate(x)
        return x
