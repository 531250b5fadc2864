"""Continuous normalizing flows: one transform, an ODE ``dx/dt = v(t, x)`` solved by torchdiffeq.

Time runs from the base (``t = 0``, the latent ``z``) to the data (``t = 1``), the convention of
flow matching. Along a path the log-density changes by the divergence of the field
(instantaneous change of variables), so ``log|det dx/dz| = int_0^1 div v(t, x(t)) dt`` is
integrated beside the points. The divergence is exact (``"exact"``: the trace of the
field's Jacobian, computed in forward mode layer by layer, about ``D`` extra forward passes of
the network and no backward pass) or Hutchinson's unbiased estimate ``e^T J e`` with one
Rademacher probe per solve (``"hutchinson"``: one extra forward pass, for many columns).

The vector field is an MLP of ``[x, c, cos(k pi t), sin(k pi t)]`` (``k = 1..frequencies``)
with smooth activations, ``x`` optionally expanded into Fourier features ``sin(2^k x)``,
``cos(2^k x)`` (``k < fourier``) so that a small field can bend sharply (thin rings, spirals,
the checkerboard's edges); like every densitylab network it holds ``M`` stacked models.

References:
    Chen, Rubanova, Bettencourt & Duvenaud (2018), "Neural Ordinary Differential Equations".
    Grathwohl, Chen, Bettencourt, Sutskever & Duvenaud (2019), "FFJORD: Free-form Continuous
    Dynamics for Scalable Reversible Generative Models", ICLR.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
import torchdiffeq
from torch import Tensor, nn

from densitylab._validation import check_choice, check_positive_int, check_widths
from densitylab.flows.nets import MAX_OCTAVES, fourier_features
from densitylab.flows.transforms import Transform

Activation = tuple[Callable[[Tensor], Tensor], Callable[[Tensor, Tensor], Tensor]]
ACTIVATIONS: dict[str, Activation] = {
    # name: (activation, its derivative from the pre-activation and the activation)
    "elu": (F.elu, lambda pre, out: (out + 1.0).clamp(max=1.0)),  # exp(pre) below 0, else 1
    "tanh": (torch.tanh, lambda pre, out: 1.0 - out.square()),
    "softplus": (F.softplus, lambda pre, out: torch.sigmoid(pre)),
}
"""Smooth activations (an ODE solver needs a smooth field) with their derivatives, which the
forward-mode divergence multiplies in layer by layer."""
DIVERGENCES = ("exact", "hutchinson")
ADAPTIVE_SOLVERS = ("dopri5", "bosh3", "adaptive_heun", "dopri8")
FIXED_SOLVERS = ("rk4", "midpoint", "euler")
EXACT_MAX_DIM = 32
"""The most columns the exact divergence is computed for: its cost grows with ``D`` (a
``(D, width)`` Jacobian per point and layer); beyond it use Hutchinson's estimate."""
MAX_STEPS = 10_000  # most fixed steps or snapshots: bounds what a saved configuration can ask


class VectorField(nn.Module):
    """``M`` stacked MLPs ``v(t, x, c)``: ``(M, n, D)`` points (and ``(M, n, C)`` context) to
    ``(M, n, D)`` velocities, with the divergence ``sum_i dv_i/dx_i`` on request.

    Layer ``l`` holds ``weight`` ``(M, fan_in, fan_out)`` and ``bias`` ``(M, 1, fan_out)``,
    initialised like ``torch.nn.Linear`` from ``generator`` (the last layer then set to 0 with
    ``zero_init``: the field starts at 0 and the flow at the identity); the first layer's input
    rows are the features of ``x`` (``x`` itself, then with ``fourier`` octaves the sines and
    cosines of :func:`~densitylab.flows.nets.fourier_features`), then ``c``, then the time
    features.
    """

    def __init__(self, dim: int, hidden: Sequence[int], *, context: int = 0,
                 frequencies: int = 3, activation: str = "elu", fourier: int = 0,
                 zero_init: bool = False, n_models: int = 1,
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.dim, self.context_features, self.frequencies = dim, context, frequencies
        self.fourier = fourier
        self.activation, self.derivative = ACTIVATIONS[check_choice(activation, ACTIVATIONS,
                                                                    "activation")]
        self.features = dim * (1 + 2 * fourier)  # first-layer rows fed by x
        widths = (self.features + context + 2 * frequencies, *check_widths(hidden), dim)
        self.weights, self.biases = nn.ParameterList(), nn.ParameterList()
        for layer, (fan_in, fan_out) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
            bound = fan_in**-0.5
            weight = torch.empty(n_models, fan_in, fan_out).uniform_(-bound, bound,
                                                                     generator=generator)
            bias = torch.empty(n_models, 1, fan_out).uniform_(-bound, bound, generator=generator)
            if zero_init and layer == len(widths) - 2:
                weight.zero_()
                bias.zero_()
            self.weights.append(nn.Parameter(weight))
            self.biases.append(nn.Parameter(bias))
        self.register_buffer("omega", math.pi * torch.arange(1, frequencies + 1.0),
                             persistent=False)

    def _first_layer(self, t: Tensor, x: Tensor, context: Tensor | None) -> Tensor:
        """Pre-activation of the first layer. ``t`` is a scalar (one time for all points, its
        features multiplied in once) or ``(M, n, 1)`` (a time per point)."""
        weight, d, c = self.weights[0], self.features, self.context_features
        pre = torch.baddbmm(self.biases[0], fourier_features(x, self.fourier), weight[:, :d])
        if c:
            pre = pre + context @ weight[:, d : d + c]
        if self.frequencies:
            angles = t * self.omega
            features = torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)
            time_weight = weight[:, d + c :]
            pre = pre + (features @ time_weight if t.dim() else
                         (features @ time_weight).unsqueeze(1))
        return pre

    def forward(self, t: Tensor, x: Tensor, context: Tensor | None = None) -> Tensor:
        """The velocity ``v(t, x | c)``, ``(M, n, D)``."""
        out = self.activation(self._first_layer(t, x, context))
        last = len(self.weights) - 1
        for layer in range(1, last):
            out = self.activation(torch.baddbmm(self.biases[layer], out, self.weights[layer]))
        return torch.baddbmm(self.biases[last], out, self.weights[last])

    def with_divergence(self, t: Tensor, x: Tensor, context: Tensor | None = None,
                        probe: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """The velocity and its divergence ``(M, n)``: exact (the Jacobian's trace, carried
        through the layers in forward mode as ``J_l = diag(s'_l) W_l J_{l-1}``), or, given a
        ``probe`` ``e`` ``(M, n, D)``, Hutchinson's ``e^T J e`` (one Jacobian-vector product)."""
        m, n, d = x.shape
        pre = self._first_layer(t, x, context)
        out = self.activation(pre)
        slope = self.derivative(pre, out)
        first = self.weights[0][:, :self.features]  # (M, features, H)
        # tangent: J e for a probe, else the full J^T, (M, n, D, H) (row i: d h / d x_i)
        if self.fourier:
            directions = (probe if probe is not None else
                          torch.eye(d, dtype=x.dtype, device=x.device).expand(m, n, d, d))
            points = x if probe is not None else x.unsqueeze(2)
            rows = _fourier_tangent(points, directions, self.fourier)
            tangent = ((rows @ first if probe is not None
                        else (rows.reshape(m, n * d, -1) @ first).reshape(m, n, d, -1))
                       * (slope if probe is not None else slope.unsqueeze(2)))
        else:
            tangent = (probe @ first * slope if probe is not None
                       else first.unsqueeze(1) * slope.unsqueeze(2))
        last = len(self.weights) - 1
        for layer in range(1, last + 1):
            weight = self.weights[layer]
            pre = torch.baddbmm(self.biases[layer], out, weight)
            if probe is not None:
                tangent = tangent @ weight
            else:
                tangent = (tangent.reshape(m, n * d, -1) @ weight).reshape(m, n, d, -1)
            if layer < last:
                out = self.activation(pre)
                slope = self.derivative(pre, out)
                tangent = tangent * (slope if probe is not None else slope.unsqueeze(2))
        if probe is not None:
            return pre, (tangent * probe).sum(-1)
        return pre, torch.diagonal(tangent, dim1=-2, dim2=-1).sum(-1)


def _fourier_tangent(x: Tensor, direction: Tensor, octaves: int) -> Tensor:
    """The derivative of :func:`fourier_features` of ``x`` along ``direction`` (same last
    dimension ``D``): ``[e, 2^k cos(2^k x) e, -2^k sin(2^k x) e]`` in the features' order."""
    frequencies = 2.0 ** torch.arange(octaves, dtype=x.dtype, device=x.device)
    angles = x.unsqueeze(-1) * frequencies
    scaled = direction.unsqueeze(-1) * frequencies
    return torch.cat([direction, (scaled * torch.cos(angles)).flatten(-2),
                      (-scaled * torch.sin(angles)).flatten(-2)], dim=-1)


class _Dynamics(nn.Module):
    """The augmented ODE ``d(x, log|det|)/dt = (v, div v)`` for torchdiffeq, counting its
    evaluations on the transform (a module, so that the adjoint method finds the parameters)."""

    def __init__(self, owner: ContinuousFlow, context: Tensor | None, probe: Tensor | None):
        super().__init__()
        self.field = owner.field
        self.owner = [owner]  # a list: not registered as a submodule (no cycle)
        self.context, self.probe = context, probe

    def forward(self, t: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        self.owner[0].evaluations += 1
        return self.field.with_divergence(t, state[0], self.context, self.probe)


class ContinuousFlow(Transform):
    """A continuous normalizing flow as one transform: ``to_data`` solves the ODE from ``t = 0``
    to ``1``, ``to_latent`` from ``1`` back to ``0``; both return ``(output, log|det J|)``.

    ``evaluations`` counts the vector field's evaluations (NFE) since construction, over every
    solve; read it before and after a call to get that call's NFE.
    """

    def __init__(self, dim: int, hidden: Sequence[int] = (64, 64), *, context: int = 0,
                 frequencies: int = 3, activation: str = "elu", fourier: int = 0,
                 zero_init: bool = False, divergence: str = "exact",
                 solver: str = "dopri5", rtol: float = 1e-5, atol: float = 1e-5,
                 steps: int = 20, adjoint: bool = False, snapshots: int = 8,
                 train_tol: float | None = None,
                 n_models: int = 1, generator: torch.Generator | None = None,
                 seed: int = 0) -> None:
        super().__init__(dim, n_models)
        check_options(dim, divergence, solver, rtol, atol, steps, adjoint, snapshots,
                      frequencies, fourier, train_tol)
        self.context_features = context
        self.field = VectorField(dim, hidden, context=context, frequencies=frequencies,
                                 activation=activation, fourier=fourier, zero_init=zero_init,
                                 n_models=n_models, generator=generator)
        self.divergence, self.solver, self.rtol, self.atol = divergence, solver, rtol, atol
        self.steps, self.adjoint, self.snapshots = steps, adjoint, snapshots
        self.train_tol = train_tol
        self.evaluations = 0
        self._probes = torch.Generator().manual_seed(seed)  # Hutchinson's probes

    def _probe(self, x: Tensor) -> Tensor | None:
        """A Rademacher probe ``(M, n, D)`` (entries +-1) for one solve, or ``None`` (exact)."""
        if self.divergence == "exact":
            return None
        signs = torch.randint(0, 2, x.shape, generator=self._probes, dtype=torch.int8)
        return (2.0 * signs - 1.0).to(dtype=x.dtype, device=x.device)

    def _solve(self, x: Tensor, context: Tensor | None, times: Tensor
               ) -> tuple[Tensor, Tensor]:
        """The points and accumulated ``int div v dt`` at every time in ``times`` (the first is
        the start), ``(T, M, n, D)`` and ``(T, M, n)``."""
        dynamics = _Dynamics(self, context, self._probe(x))
        start = (x, torch.zeros(x.shape[:-1], dtype=x.dtype, device=x.device))
        options = ({"step_size": 1.0 / self.steps} if self.solver in FIXED_SOLVERS else None)
        rtol, atol = self._tolerances()
        if self.adjoint and torch.is_grad_enabled():
            return torchdiffeq.odeint_adjoint(
                dynamics, start, times, rtol=rtol, atol=atol, method=self.solver,
                options=options, adjoint_params=tuple(self.field.parameters()))
        return torchdiffeq.odeint(dynamics, start, times, rtol=rtol, atol=atol,
                                  method=self.solver, options=options)

    def _tolerances(self) -> tuple[float, float]:
        """``(rtol, atol)`` of this solve: ``train_tol`` for both while training (the module in
        training mode and gradients recorded), else ``rtol`` and ``atol``."""
        if self.train_tol is not None and self.training and torch.is_grad_enabled():
            return self.train_tol, self.train_tol
        return self.rtol, self.atol

    def _times(self, start: float, end: float, like: Tensor, count: int = 2) -> Tensor:
        return torch.linspace(start, end, count, dtype=like.dtype, device=like.device)

    def transport(self, x: Tensor, start: float, end: float, context: Tensor | None = None
                  ) -> tuple[Tensor, Tensor]:
        """Points at time ``start`` carried to time ``end`` (either way), ``(M, n, D)``, and
        ``log|det|`` of that map, ``int_start^end div v dt``: the density at time ``t`` is
        ``log p_t(x) = log N(z; 0, I) + log|det dz/dx|`` with ``z`` the point carried to 0."""
        if start == end:
            return x, torch.zeros(x.shape[:-1], dtype=x.dtype, device=x.device)
        path, integral = self._solve(x, context, self._times(start, end, x))
        return path[-1], integral[-1]

    def _to_data(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self.transport(z, 0.0, 1.0, context)  # log|det dx/dz| = int_0^1 div v dt

    def _to_latent(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self.transport(x, 1.0, 0.0, context)  # -int_0^1 div v dt = log|det dz/dx|

    def _trace_to_data(self, z: Tensor, context: Tensor | None = None) -> list[Tensor]:
        """The points at ``snapshots`` evenly spaced times after ``t = 0``, up to ``t = 1``."""
        path, _ = self._solve(z, context, self._times(0.0, 1.0, z, self.snapshots + 1))
        return list(path[1:])

    def _trace_to_latent(self, x: Tensor, context: Tensor | None = None) -> list[Tensor]:
        path, _ = self._solve(x, context, self._times(1.0, 0.0, x, self.snapshots + 1))
        return list(path[1:])


def check_options(dim: int, divergence: str, solver: str, rtol: float, atol: float, steps: int,
                  adjoint: bool, snapshots: int, frequencies: int, fourier: int = 0,
                  train_tol: float | None = None) -> None:
    """One-line ``ValueError`` for an option a continuous flow cannot run with."""
    check_choice(divergence, DIVERGENCES, "divergence")
    check_choice(solver, ADAPTIVE_SOLVERS + FIXED_SOLVERS, "solver")
    tolerances = [("rtol", rtol), ("atol", atol)]
    if train_tol is not None:  # (None: training solves at rtol and atol too)
        tolerances.append(("train_tol", train_tol))
    for name, value in tolerances:
        if (isinstance(value, bool) or not isinstance(value, int | float)
                or not 0 < value < 1):
            raise ValueError(f"{name} must be a tolerance in (0, 1), got {value!r}")
    check_positive_int(steps, "steps", maximum=MAX_STEPS)
    check_positive_int(snapshots, "snapshots", maximum=MAX_STEPS)
    check_positive_int(frequencies, "frequencies", minimum=0)
    check_positive_int(fourier, "fourier", minimum=0, maximum=MAX_OCTAVES)
    if not isinstance(adjoint, bool):
        raise ValueError(f"adjoint must be True or False, got {adjoint!r}")
    if divergence == "exact" and dim > EXACT_MAX_DIM:
        raise ValueError(f"the exact divergence costs a Jacobian per point: at most "
                         f"{EXACT_MAX_DIM} columns, got {dim}; use divergence='hutchinson'")


def continuous_transforms(model: nn.Module) -> list[ContinuousFlow]:
    """The continuous transforms inside a model (none for a discrete flow)."""
    return [m for m in model.modules() if isinstance(m, ContinuousFlow)]


def function_evaluations(model: nn.Module) -> int | None:
    """Evaluations of the vector fields of ``model``'s continuous transforms so far, or
    ``None`` for a model without one."""
    found = continuous_transforms(model)
    return sum(t.evaluations for t in found) if found else None
