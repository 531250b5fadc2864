"""RealNVP's parameters as one flat float64 vector: the layout shared by the NumPy teaching
flow (:mod:`densitylab.numpy_flow`) and the compiled engine
(:mod:`densitylab.training.compiled_realnvp`), with the masks, the architecture checks, the
packing to and from a torch flow's state, and Adam.

The parameters of all ``M`` models live in ONE vector, model-major (``M`` rows of ``P``
numbers). Within a row, coupling after coupling: the weights of every linear layer
``(k, fan_in, fan_out)``, then the biases ``(k, 1, fan_out)``, then the scale factor
``(1, D_b)``, where ``k = 2`` for separate s and t networks and ``k = 1`` for one network with
both outputs (s first). Reshaped to ``(M * k, ...)`` these are exactly the torch tensors
``net.weights.l`` and friends, ordered model-major ``[m0_s, m0_t, m1_s, ...]``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numba
import numpy as np

from densitylab._validation import check_choice, check_flow_dim, check_positive_int, check_widths

ACTIVATION_NAMES = ("leaky_relu", "relu", "tanh")
SCALINGS = ("factor", "tanh")
BETAS, EPS = (0.9, 0.999), 1e-8  # Adam's defaults, PyTorch's


def check_architecture(
    dim: int, n_layers: int, hidden: Sequence[int], activation: str, scale: str
) -> tuple[int, ...]:
    """The checks of :func:`densitylab.flows.realnvp`, with the same messages; the widths."""
    check_flow_dim(dim)
    check_positive_int(n_layers, "n_layers")
    widths = check_widths(hidden)
    check_choice(activation, ACTIVATION_NAMES, "activation")
    check_choice(scale, SCALINGS, "scale")
    return widths


def _as_index(positions: np.ndarray) -> slice | np.ndarray:
    """A contiguous run of coordinates as a slice (a view, no copy), otherwise an index array."""
    if np.array_equal(positions, np.arange(positions[0], positions[0] + len(positions))):
        return slice(int(positions[0]), int(positions[0]) + len(positions))
    return positions


@dataclass(frozen=True)
class CouplingLayout:
    """Static layout of one coupling: which coordinates, which widths, where in the vector."""

    mask: np.ndarray  # True = conditioning coordinate
    cond: slice | np.ndarray
    trans: slice | np.ndarray
    d_b: int
    k: int  # networks per model: 2 (separate s, t) or 1 (one net, outputs [s, t])
    widths: tuple[int, ...]  # d_a, hidden..., out
    offset: int  # start of this coupling's parameters within one model's row of P numbers
    s_out: tuple  # index of the raw scale r in the conditioner output (M, k, n, out)
    t_out: tuple  # index of the shift t in it

    def shapes(self, n_models: int) -> list[tuple[str, tuple[int, ...], tuple[int, ...]]]:
        """``(torch name, view shape, torch shape)`` of every parameter, in the vector's order."""
        m, k, pairs = n_models, self.k, list(zip(self.widths[:-1], self.widths[1:], strict=True))
        weights = [
            (f"net.weights.{j}", (m, k, i, o), (m * k, i, o)) for j, (i, o) in enumerate(pairs)
        ]
        biases = [
            (f"net.biases.{j}", (m, k, 1, o), (m * k, 1, o)) for j, (_, o) in enumerate(pairs)
        ]
        return [*weights, *biases, ("scale_factor", (m, 1, self.d_b), (m, 1, self.d_b))]

    def size(self) -> int:
        """Numbers per model."""
        return sum(math.prod(shape[1:]) for _, shape, _ in self.shapes(1))


@dataclass
class Views:
    """Named views of one coupling's parameters (or gradients) inside a flat vector."""

    weights: list[np.ndarray]  # (M, k, fan_in, fan_out)
    biases: list[np.ndarray]  # (M, k, 1, fan_out)
    scale_factor: np.ndarray  # (M, 1, d_b)


class FlatLayout:
    """Where every parameter of a RealNVP flow lives in the flat vector."""

    def __init__(self, dim: int, masks: Sequence[np.ndarray], hidden: Sequence[int],
                 separate_nets: bool) -> None:
        self.dim, self.hidden, self.separate_nets = dim, tuple(hidden), separate_nets
        self.couplings: list[CouplingLayout] = []
        offset = 0
        for mask in masks:
            coupling = self._coupling(np.asarray(mask, dtype=bool), offset)
            self.couplings.append(coupling)
            offset += coupling.size()
        self.n_params = offset  # P, per model

    def _coupling(self, mask: np.ndarray, offset: int) -> CouplingLayout:
        if mask.shape != (self.dim,):
            raise ValueError(f"a mask must have {self.dim} entries, got shape {mask.shape}")
        if mask.all() or not mask.any():
            raise ValueError("a coupling mask needs both conditioning and transformed coordinates")
        cond, trans = np.flatnonzero(mask), np.flatnonzero(~mask)
        k = 2 if self.separate_nets else 1
        d_b, every = len(trans), slice(None)
        widths = (len(cond), *self.hidden, d_b * (1 if self.separate_nets else 2))
        if self.separate_nets:  # output (M, 2, n, d_b): net 0 gives r, net 1 gives t
            s_out, t_out = (every, 0), (every, 1)
        else:  # output (M, 1, n, 2 d_b): r first, then t
            s_out = (every, 0, every, slice(0, d_b))
            t_out = (every, 0, every, slice(d_b, None))
        return CouplingLayout(
            mask, _as_index(cond), _as_index(trans), d_b, k, widths, offset, s_out, t_out
        )

    def views(self, vector: np.ndarray, n_models: int) -> list[Views]:
        """Per-coupling named views into ``vector`` (parameters or a gradient) of ``n_models``
        models: writing to a view writes to the vector."""
        if vector.size != n_models * self.n_params:
            raise ValueError(f"expected a vector of {n_models * self.n_params} numbers")
        rows = vector.reshape(n_models, self.n_params)
        out = []
        for coupling in self.couplings:
            start, parts = coupling.offset, {}
            for name, shape, _ in coupling.shapes(n_models):
                size = math.prod(shape[1:])
                parts[name] = rows[:, start : start + size].reshape(shape)
                start += size
            n_linear = len(coupling.widths) - 1
            out.append(Views([parts[f"net.weights.{j}"] for j in range(n_linear)],
                             [parts[f"net.biases.{j}"] for j in range(n_linear)],
                             parts["scale_factor"]))
        return out

    def torch_shapes(self, n_models: int, first: int) -> dict[str, tuple]:
        """``{torch state name: (view shape, torch shape)}`` in the vector's order; the couplings
        are the flow's transforms ``first, first + 1, ...`` (1 behind a ``Standardize``)."""
        return {
            f"transforms.{i + first}.{name}": (view_shape, torch_shape)
            for i, coupling in enumerate(self.couplings)
            for name, view_shape, torch_shape in coupling.shapes(n_models)
        }

    def named(self, vector: np.ndarray, n_models: int, first: int) -> dict[str, np.ndarray]:
        """``vector`` as torch-named, torch-shaped arrays (copies)."""
        rows, start, named = vector.reshape(n_models, self.n_params), 0, {}
        for key, (view_shape, torch_shape) in self.torch_shapes(n_models, first).items():
            size = math.prod(view_shape[1:])
            named[key] = rows[:, start : start + size].reshape(torch_shape).copy()
            start += size
        return named

    def pack(self, state: Mapping[str, np.ndarray], rows: np.ndarray, first: int) -> None:
        """Copy the torch-named parameters of ``state`` into ``rows`` ``(M, P)``; a missing
        name or a wrong shape is a ``ValueError``."""
        start = 0
        for key, (view_shape, torch_shape) in self.torch_shapes(len(rows), first).items():
            if key not in state:
                raise ValueError(f"state does not fit this model: {key} is missing")
            value = np.asarray(state[key], dtype=np.float64)
            if value.shape != torch_shape:
                raise ValueError(f"{key} has shape {value.shape}, expected {torch_shape}")
            size = math.prod(view_shape[1:])
            rows[:, start : start + size] = value.reshape(len(rows), size)
            start += size

    def kernel_offsets(self) -> dict[str, np.ndarray | int]:
        """The layout as the compiled kernels read it (contiguous masks only): per coupling
        whether the conditioning block comes first and where the blocks split, the layer
        widths, and the offsets of every weight matrix, bias and scale factor in a row."""
        n, n_linear = len(self.couplings), len(self.hidden) + 1
        nets = 2 if self.separate_nets else 1
        w_off = np.zeros((n, nets, n_linear), dtype=np.int64)
        b_off = np.zeros_like(w_off)
        f_off = np.zeros(n, dtype=np.int64)
        for kk, c in enumerate(self.couplings):
            pairs = list(zip(c.widths[:-1], c.widths[1:], strict=True))
            position = c.offset
            for j, (i, o) in enumerate(pairs):
                w_off[kk, :, j] = position + np.arange(nets) * i * o
                position += nets * i * o
            for j, (_, o) in enumerate(pairs):
                b_off[kk, :, j] = position + np.arange(nets) * o
                position += nets * o
            f_off[kk] = position
        return dict(
            cond_first=np.array([bool(c.mask[0]) for c in self.couplings]),
            widths=np.array([c.widths for c in self.couplings], dtype=np.int64),
            split=np.array([int(np.argmin(c.mask == c.mask[0])) for c in self.couplings],
                           dtype=np.int64),
            w_off=w_off, b_off=b_off, f_off=f_off, nets=nets,
        )


@numba.njit(cache=True)
def adam_update(params, grad, exp_avg, exp_avg_sq, step, lr) -> None:
    """PyTorch's Adam update of a flat vector, in place, for step ``step`` (counted from 1)::

        m <- b1 m + (1 - b1) g,   v <- b2 v + (1 - b2) g^2,
        theta <- theta - (lr / (1 - b1^t)) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)

    Compiled, in one pass over the numbers (twice as fast as NumPy's separate passes), for
    the NumPy flow and the compiled engines alike."""
    step_size = lr / (1.0 - BETAS[0] ** step)
    correction = math.sqrt(1.0 - BETAS[1] ** step)
    for p in range(params.shape[0]):
        g = grad[p]
        exp_avg[p] += (1.0 - BETAS[0]) * (g - exp_avg[p])
        exp_avg_sq[p] = BETAS[1] * exp_avg_sq[p] + (1.0 - BETAS[1]) * g * g
        params[p] -= step_size * (exp_avg[p] / (math.sqrt(exp_avg_sq[p]) / correction + EPS))
