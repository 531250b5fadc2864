"""RealNVP in plain NumPy (float64) with a hand-written backward pass, checked against PyTorch.

The same model as :func:`densitylab.flows.realnvp`, written so that every equation of an
affine-coupling flow is visible, including its gradient, and fast for small flows: one NumPy
call costs about a microsecond where a torch op with autograd costs several, which is what a
``2 -> 32 -> 32 -> 2`` conditioner at batch 64 spends most of its time on.

Direction (as everywhere in densitylab): ``to_latent`` is x -> z, ``to_data`` is z -> x.

**Forward (one coupling, x -> z).** The mask splits the coordinates into the conditioning part
``a`` and the transformed part ``b``::

    h_0 = x_a,   h_l = f(h_{l-1} W_l + b_l)   (l < L),   o = h_{L-1} W_L + b_L
    (r, t) = o                      split into raw scale and shift (two nets, or one net's halves)
    s = c * r      ("factor")   or   s = c * tanh(r)   ("tanh"),   c the learned scale factor
    z_a = x_a,   z_b = x_b * exp(s) + t,   log|det dz/dx| = sum_j s_j

``f`` is LeakyReLU (slope 0.01), ReLU or tanh. A flow chains couplings (the first is applied
first), then ``log p(x) = log N(z; 0, I) + sum_k log|det_k|`` and the loss of one model is the
batch mean ``NLL = (1/n) sum_i [ |z_i|^2 / 2 + (D/2) log 2 pi - sum_k sum_j s_kij ]``.

**Backward (one coupling, given g = dNLL/dz).** With ``e = exp(s)``::

    dNLL/dt   = g_b
    dNLL/ds   = g_b * x_b * e - 1/n              (through z_b, and the log-det term)
    dNLL/dx_b = g_b * e
    dNLL/dc   = sum_i dNLL/ds * r                ("tanh": sum_i dNLL/ds * tanh(r))
    dNLL/dr   = dNLL/ds * c                      ("tanh": dNLL/ds * c * (1 - tanh(r)^2))
    MLP, with d_L = dNLL/do = (dNLL/dr, dNLL/dt):
        dNLL/dW_l = h_{l-1}^T d_l,   dNLL/db_l = sum_i d_l,   d_{l-1} = (d_l W_l^T) * f'(a_{l-1})
    dNLL/dx_a = g_a + d_1 W_1^T                  (summed over the s and t nets)

and ``dNLL/dx`` feeds the coupling before. The last coupling starts from ``g = z / n``.

**Parameters** of all ``M`` models live in ONE flat float64 vector, laid out as
:mod:`densitylab.flat_realnvp` describes (the compiled engine reads the same layout), with
named views of shape ``(M, k, fan_in, fan_out)`` (weights), ``(M, k, 1, fan_out)`` (biases)
and ``(M, 1, D_b)`` (scale factor). All M models and both nets are computed together by one
``np.matmul`` per layer on ``(M, k, n, width)`` stacks. Adam is then one pass over one array
(:func:`~densitylab.flat_realnvp.adam_update`, the one function that is compiled: the compiled
engine runs the same), and per-model bookkeeping (best state, gradient norms) is row
arithmetic on the ``(M, P)`` view.

Example:
    >>> import densitylab as dl
    >>> from densitylab.numpy_flow import NumpyRealNVP, fit
    >>> moons = dl.datasets.get("moons")
    >>> x, x_test = moons.sample(500, seed=0), moons.sample(100, seed=1)
    >>> model = NumpyRealNVP(dim=2, n_layers=4, hidden=(32, 32), seed=0)
    >>> result = fit(model, x, epochs=2, batch_size=64, lr=1e-3)
    >>> result.model.log_prob(x_test).shape
    (100,)

References:
    Dinh, Sohl-Dickstein & Bengio (2017), "Density estimation using Real NVP", ICLR.
    Kingma & Ba (2015), "Adam: A Method for Stochastic Optimization", ICLR.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike

from densitylab._masks import half_mask
from densitylab._validation import check_positive_int
from densitylab.flat_realnvp import (
    CouplingLayout,
    FlatLayout,
    Views,
    adam_update,
    check_architecture,
)

if TYPE_CHECKING:  # torch is imported only by the functions that talk to it
    from densitylab.flows import Flow
    from densitylab.training import FitResult

LEAKY_SLOPE = 0.01
LOG_2PI = math.log(2 * math.pi)


# -- activations: each maps the pre-activation a to f(a) IN PLACE and returns f'(a) ------------
def _leaky_relu(a: np.ndarray) -> np.ndarray:
    slope = np.greater(a, 0).astype(a.dtype)  # 1 where a > 0, else 0.01 (faster than np.where)
    slope *= 1.0 - LEAKY_SLOPE
    slope += LEAKY_SLOPE
    np.multiply(a, slope, out=a)
    return slope


def _relu(a: np.ndarray) -> np.ndarray:
    slope = np.greater(a, 0).astype(a.dtype)
    np.maximum(a, 0.0, out=a)
    return slope


def _tanh(a: np.ndarray) -> np.ndarray:
    np.tanh(a, out=a)
    slope = np.multiply(a, a)
    np.subtract(1.0, slope, out=slope)  # tanh' = 1 - tanh^2
    return slope


ACTIVATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "leaky_relu": _leaky_relu,
    "relu": _relu,
    "tanh": _tanh,
}


def _matmul(a: np.ndarray, b: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """``a @ b`` over stacks; an inner dimension of 1 is an outer product, done as a broadcast
    multiply (same numbers, without a BLAS call for a rank-1 product)."""
    if a.shape[-1] == 1:
        return np.multiply(a, b, out=out)
    return np.matmul(a, b, out=out)


@dataclass
class _Cache:
    """What the backward pass of one coupling needs from its forward pass."""

    inputs: list[np.ndarray]  # h_{l-1}: the input of every linear layer, h_0 = x_a as (M,1,n,d_a)
    slopes: list[np.ndarray]  # f'(a_l) of every hidden layer
    r: np.ndarray  # raw scale r, or tanh(r) for the "tanh" scaling
    out_shape: tuple[int, ...]  # (M, k, n, out) of the conditioner output
    x_b: np.ndarray | None = None
    exp_s: np.ndarray | None = None


class NumpyRealNVP:
    """RealNVP of ``n_layers`` affine couplings, ``M = n_models`` independent models at once.

    Mirrors :func:`densitylab.flows.realnvp` (alternating half masks, no mixing) and, with an
    optional fixed standardisation in front, a flow trained with ``standardize=True``.
    Initialisation draws uniform ``+-1/sqrt(fan_in)`` like ``torch.nn.Linear`` but from NumPy's
    generator, so use :meth:`from_torch` to start from exactly a torch flow's weights.

    Args:
        dim: number of coordinates ``D``; the remaining architecture arguments are those of
            :func:`densitylab.flows.realnvp`.
        n_layers: number of affine couplings.
        hidden: hidden widths of each s and t network.
        activation: ``"leaky_relu"``, ``"relu"`` or ``"tanh"``.
        separate_nets: separate s and t networks, or one network with both outputs.
        scale: ``"factor"`` or ``"tanh"`` (bounded) scaling of ``s``.
        zero_init: start every coupling as the identity.
        n_models: independent models trained side by side.
        seed: seeds the initialisation (``numpy.random.default_rng``).
        masks: one boolean mask per coupling (``True`` = conditioning); default alternating halves.

    Attributes:
        params: the flat parameter vector, ``M * P`` float64 numbers (``P`` per model).
        mean, log_std: the fixed standardisation ``(M, 1, D)``, or ``None``.

    Example:
        >>> model = NumpyRealNVP(dim=2, n_layers=4, hidden=(32, 32))
        >>> model.log_prob(np.zeros((5, 2))).shape
        (5,)
    """

    def __init__(
        self,
        dim: int,
        n_layers: int = 4,
        hidden: Sequence[int] = (32, 32),
        *,
        activation: str = "leaky_relu",
        separate_nets: bool = True,
        scale: str = "factor",
        zero_init: bool = False,
        seed: int | list[int] = 0,
        n_models: int = 1,
        masks: Sequence[ArrayLike] | None = None,
    ) -> None:
        self.hidden = check_architecture(dim, n_layers, hidden, activation, scale)
        self.n_models = check_positive_int(n_models, "n_models")
        self.dim, self.n_layers = int(dim), int(n_layers)
        self.activation, self.separate_nets, self.scale = activation, bool(separate_nets), scale
        self.zero_init, self.seed = bool(zero_init), seed
        self._act = ACTIVATIONS[activation]
        if masks is None:
            self._default_masks = True
            masks = [half_mask(self.dim, flip=layer % 2 == 1) for layer in range(self.n_layers)]
        else:
            self._default_masks = False
            if len(masks) != self.n_layers:
                raise ValueError(f"got {len(masks)} masks for {self.n_layers} couplings")
        if any(np.asarray(m).shape != (self.dim,) for m in masks):
            raise ValueError(f"a mask must have {self.dim} entries")
        self.layout = FlatLayout(self.dim, masks, self.hidden, self.separate_nets)
        self.couplings = self.layout.couplings
        self.n_params = self.layout.n_params  # P, per model
        self.mean: np.ndarray | None = None
        self.log_std: np.ndarray | None = None
        self._params = np.zeros(self.n_models * self.n_params)
        self._views = self.views(self._params)
        self._initialise(seed)

    def __repr__(self) -> str:
        return (
            f"NumpyRealNVP(dim={self.dim}, n_layers={self.n_layers}, hidden={self.hidden}, "
            f"activation={self.activation!r}, separate_nets={self.separate_nets}, "
            f"scale={self.scale!r}, n_models={self.n_models}, params per model={self.n_params})"
        )

    @property
    def params(self) -> np.ndarray:
        """The flat parameter vector: ``M`` rows of ``P`` float64 numbers, model-major. The
        named views point into it, so assigning to it copies values in place."""
        return self._params

    @params.setter
    def params(self, value: ArrayLike) -> None:
        self._params[...] = value

    def _initialise(self, seed: int | list[int]) -> None:
        """Uniform ``+-1/sqrt(fan_in)`` weights and biases, the scale factor at 0 ("factor")
        or 1 ("tanh"), the output layer zeroed with ``zero_init``."""
        rng = np.random.default_rng(seed)
        for views in self._views:
            last = len(views.weights) - 1
            for layer, (weight, bias) in enumerate(zip(views.weights, views.biases, strict=True)):
                bound = weight.shape[-2] ** -0.5
                weight[...] = rng.uniform(-bound, bound, weight.shape)
                bias[...] = rng.uniform(-bound, bound, bias.shape)
                if self.zero_init and layer == last:
                    weight[...] = bias[...] = 0.0
            views.scale_factor[...] = 0.0 if self.scale == "factor" else 1.0

    # -- the flat vector and its names ---------------------------------------------------------
    def views(self, vector: np.ndarray) -> list[Views]:
        """Per-coupling named views into ``vector`` (the parameters or a gradient): writing to a
        view writes to the vector."""
        if vector.shape != (self.n_models * self.n_params,):
            raise ValueError(f"expected a vector of {self.n_models * self.n_params} numbers")
        return self.layout.views(vector, self.n_models)

    def named(self, vector: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """``vector`` (default: the parameters) as torch-named, torch-shaped arrays (copies),
        e.g. ``"transforms.0.net.weights.1"`` of shape ``(M * k, fan_in, fan_out)``."""
        vector = self.params if vector is None else vector
        return self.layout.named(vector, self.n_models, first=0 if self.mean is None else 1)

    def state_dict(self) -> dict[str, np.ndarray]:
        """Parameters and standardisation buffers under the keys of the torch flow's state."""
        state = self.named()
        if self.mean is not None:
            state["transforms.0.mean"] = self.mean.copy()
            state["transforms.0.log_std"] = self.log_std.copy()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Copy torch-named arrays (see :meth:`state_dict`) into the model; the standardisation
        buffers are present exactly when the torch flow starts with a ``Standardize``."""
        buffers = {"transforms.0.mean", "transforms.0.log_std"}
        first = 1 if buffers & set(state) else 0
        expected = set(self.layout.torch_shapes(self.n_models, first)) | (
            buffers if first else set())
        if set(state) != expected:
            missing, extra = sorted(expected - set(state)), sorted(set(state) - expected)
            raise ValueError(
                f"state does not fit this model: missing {missing}, unexpected {extra}"
            )
        values = {key: np.asarray(value, dtype=np.float64) for key, value in state.items()}
        self.layout.pack(values, self.params.reshape(self.n_models, self.n_params), first)
        if first:
            self.set_standardization(values["transforms.0.mean"], values["transforms.0.log_std"])
        else:
            self.set_standardization(None, None)

    def set_standardization(self, mean: ArrayLike | None, log_std: ArrayLike | None) -> None:
        """Put a fixed ``u = (x - mean) / exp(log_std)`` in front of the flow (``None``: none).
        Its log-determinant ``-sum(log_std)`` is part of every density."""
        if mean is None or log_std is None:
            self.mean = self.log_std = None
            return
        shape = (self.n_models, 1, self.dim)
        try:
            self.mean = np.broadcast_to(np.asarray(mean, dtype=np.float64), shape).copy()
            self.log_std = np.broadcast_to(np.asarray(log_std, dtype=np.float64), shape).copy()
        except ValueError as err:
            raise ValueError(f"mean and log_std must broadcast to {shape}") from err

    def _architecture(self) -> dict[str, Any]:
        """The constructor's arguments (those :func:`~densitylab.flows.realnvp` shares)."""
        return dict(dim=self.dim, n_layers=self.n_layers, hidden=self.hidden,
                    activation=self.activation, separate_nets=self.separate_nets,
                    scale=self.scale, zero_init=self.zero_init)

    def _empty_like(self, n_models: int, seed: int | list[int]) -> NumpyRealNVP:
        masks = None if self._default_masks else [c.mask for c in self.couplings]
        return NumpyRealNVP(**self._architecture(), seed=seed, n_models=n_models, masks=masks)

    def copy(self) -> NumpyRealNVP:
        """An independent copy (parameters, standardisation, architecture)."""
        clone = self._empty_like(self.n_models, self.seed)
        clone.params[...] = self.params
        clone.set_standardization(self.mean, self.log_std)
        return clone

    def unstack(self) -> list[NumpyRealNVP]:
        """The ``M`` models as ``M`` one-model copies."""
        seeds = self.seed if isinstance(self.seed, list) else [self.seed] * self.n_models
        rows = self.params.reshape(self.n_models, self.n_params)
        singles = []
        for m, seed in enumerate(seeds):
            single = self._empty_like(1, seed)
            single.params[...] = rows[m]
            if self.mean is not None:
                single.set_standardization(self.mean[m], self.log_std[m])
            singles.append(single)
        return singles

    # -- torch interop -------------------------------------------------------------------------
    @classmethod
    def from_torch(cls, flow: Flow) -> NumpyRealNVP:
        """The NumPy twin of a torch ``Flow`` built by ``realnvp(...)`` (optionally stacked or
        standardised), with its weights copied as float64."""
        from densitylab.flows import AffineCoupling, Standardize, StandardNormal

        if type(flow.base) is not StandardNormal:
            raise ValueError("the NumPy RealNVP has a standard-normal base; this flow has a "
                             f"{type(flow.base).__name__}")
        transforms = list(flow.transforms)
        has_standardize = isinstance(transforms[0], Standardize)
        couplings = transforms[1:] if has_standardize else transforms
        for i, transform in enumerate(transforms):
            if i == 0 and has_standardize:
                continue
            if type(transform) is not AffineCoupling:
                raise ValueError(
                    f"the NumPy RealNVP supports affine couplings (after an optional Standardize) "
                    f"only; transform {i} is {type(transform).__name__} (from glow(), mixing= "
                    f"or triangular=?)"
                )
        if not couplings:
            raise ValueError("the flow has no coupling layers")
        first = couplings[0]
        hidden = tuple(int(w.shape[-1]) for w in first.net.weights[:-1])
        options = dict(
            activation=first.net.activation_name,
            separate_nets=first.separate_nets,
            scale=first.scale,
        )
        for coupling in couplings[1:]:
            other = dict(
                activation=coupling.net.activation_name,
                separate_nets=coupling.separate_nets,
                scale=coupling.scale,
            )
            widths = tuple(int(w.shape[-1]) for w in coupling.net.weights[:-1])
            if other != options or widths != hidden:
                raise ValueError("all couplings must share hidden widths, activation and scale")
        masks = [np.zeros(flow.dim, dtype=bool) for _ in couplings]
        for mask, coupling in zip(masks, couplings, strict=True):
            mask[coupling.cond_idx.cpu().numpy()] = True
        default = all(
            np.array_equal(m, half_mask(flow.dim, i % 2 == 1)) for i, m in enumerate(masks)
        )
        model = cls(
            flow.dim,
            len(couplings),
            hidden,
            **options,
            zero_init=bool(flow.config.get("zero_init", False)),
            seed=flow.config.get("seed", 0),
            n_models=flow.n_models,
            masks=None if default else masks,
        )
        state = {k: v.detach().cpu().double().numpy() for k, v in flow.state_dict().items()}
        model.load_state_dict(state)
        return model

    def to_torch(self, flow: Flow | None = None) -> Flow:
        """Copy the weights into ``flow`` (same architecture) or, by default, into a new float64
        ``realnvp(...)`` flow (standardised when this model is); returns the flow."""
        import torch

        from densitylab.flows import AffineCoupling, realnvp, standardized

        if flow is None:
            if not self._default_masks:
                raise ValueError("custom masks: pass a torch flow with the same masks to fill")
            seed = self.seed
            if self.n_models > 1 and not isinstance(seed, list):
                seed = [seed] * self.n_models  # what unstack() needs to split the models
            flow = realnvp(**self._architecture(), seed=seed if isinstance(seed, int) else 0,
                           n_models=self.n_models).double()
            flow.config["seed"] = seed
            if self.mean is not None:
                flow = standardized(flow).double()  # (its _anchor is new, float32)
        couplings = [t for t in flow.transforms if isinstance(t, AffineCoupling)]
        masks_agree = len(couplings) == len(self.couplings) and all(
            np.array_equal(t.cond_idx.cpu().numpy(), np.flatnonzero(c.mask))
            for t, c in zip(couplings, self.couplings, strict=False)
        )
        state = self.state_dict()
        target = flow.state_dict()
        if not masks_agree or set(state) != set(target) or flow.n_models != self.n_models:
            raise ValueError("the torch flow does not have this model's architecture")
        for key, value in state.items():
            if tuple(target[key].shape) != value.shape:
                raise ValueError(
                    f"{key}: torch shape {tuple(target[key].shape)}, ours {value.shape}"
                )
        flow.load_state_dict(
            {k: torch.as_tensor(v, dtype=target[k].dtype) for k, v in state.items()}
        )
        return flow

    # -- input handling, as the torch flow does it ---------------------------------------------
    def _lifted(self, x: ArrayLike) -> tuple[np.ndarray, bool]:
        """Check ``(n, D)`` or ``(M, n, D)`` input; return ``(M, n, D)`` and whether to squeeze."""
        x = np.asarray(x, dtype=np.float64)
        if x.ndim not in (2, 3) or x.shape[-1] != self.dim:
            raise ValueError(
                f"input must have shape (n, {self.dim}) or (M, n, {self.dim}), got {x.shape}"
            )
        if not np.isfinite(x).all():
            raise ValueError("input contains NaN or infinite values")
        if x.ndim == 2:
            return np.broadcast_to(x, (self.n_models, *x.shape)), self.n_models == 1
        if x.shape[0] != self.n_models:
            raise ValueError(
                f"input holds {x.shape[0]} model slices, the transform {self.n_models}"
            )
        return x, False

    # -- one coupling --------------------------------------------------------------------------
    def _conditioner(
        self, c: CouplingLayout, p: Views, x_a: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, _Cache]:
        """``s(x_a), t(x_a)``, each ``(M, n, d_b)``, and the cache for the backward pass."""
        h = x_a[:, None]  # (M, 1, n, d_a): the same input for the s and the t net
        inputs, slopes = [], []
        last = len(p.weights) - 1
        for layer, (weight, bias) in enumerate(zip(p.weights, p.biases, strict=True)):
            inputs.append(h)
            h = _matmul(h, weight)  # (M, k, n, fan_out)
            h += bias
            if layer < last:
                slopes.append(self._act(h))  # h <- f(h) in place
        r = h[c.s_out]
        if self.scale == "tanh":
            r = np.tanh(r)
        s = r * p.scale_factor
        return s, h[c.t_out], _Cache(inputs, slopes, r, h.shape)

    def _coupling_to_latent(
        self, c: CouplingLayout, p: Views, x: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, _Cache]:
        """``z_a = x_a``, ``z_b = x_b * exp(s) + t``; returns ``z``, ``s``, the cache."""
        x_a, x_b = x[..., c.cond], x[..., c.trans]
        s, t, cache = self._conditioner(c, p, x_a)
        exp_s = np.exp(s)
        z = x.copy()
        z_b = x_b * exp_s
        z_b += t
        z[..., c.trans] = z_b
        cache.x_b, cache.exp_s = x_b, exp_s
        return z, s, cache

    def _coupling_to_data(
        self, c: CouplingLayout, p: Views, z: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """``x_a = z_a``, ``x_b = (z_b - t) * exp(-s)``; returns ``x``, ``s``."""
        s, t, _ = self._conditioner(c, p, z[..., c.cond])
        x = z.copy()
        x_b = z[..., c.trans] - t
        x_b *= np.exp(-s)
        x[..., c.trans] = x_b
        return x, s

    def _coupling_backward(
        self,
        c: CouplingLayout,
        p: Views,
        grad: Views,
        cache: _Cache,
        g: np.ndarray,
        inv_n: float,
        input_grad: bool = True,
    ) -> np.ndarray | None:
        """Given ``g = dNLL/dz`` (overwritten), write this coupling's parameter gradients into
        ``grad`` and return ``dNLL/dx`` (if ``input_grad``). Equations in the module docstring."""
        g_b = g[..., c.trans]
        dx_b = g_b * cache.exp_s  # dNLL/dx_b = g_b * e
        ds = dx_b * cache.x_b  # dNLL/ds = g_b * x_b * e - 1/n
        ds -= inv_n
        np.add.reduce(ds * cache.r, axis=1, keepdims=True, out=grad.scale_factor)  # dNLL/dc
        d = np.empty(cache.out_shape)  # dNLL/do = (dNLL/dr, dNLL/dt)
        dr = np.multiply(ds, p.scale_factor, out=d[c.s_out])  # dNLL/dr = dNLL/ds * c
        if self.scale == "tanh":
            dr *= 1.0 - cache.r * cache.r  # ... * tanh'(r)
        d[c.t_out] = g_b  # dNLL/dt = g_b
        for layer in range(len(p.weights) - 1, -1, -1):
            # d = dNLL/da_l: dW_l = h_{l-1}^T d, db_l = sum_i d, dNLL/dh_{l-1} = d W_l^T
            np.matmul(cache.inputs[layer].swapaxes(-1, -2), d, out=grad.weights[layer])
            np.add.reduce(d, axis=-2, keepdims=True, out=grad.biases[layer])
            if layer == 0 and not input_grad:
                return None
            d = _matmul(d, p.weights[layer].swapaxes(-1, -2))
            if layer > 0:
                d *= cache.slopes[layer - 1]  # dNLL/da_{l-1} = dNLL/dh_{l-1} * f'(a_{l-1})
        # dNLL/dx_a = g_a + (d_1 W_1^T summed over the k nets), dNLL/dx_b as above
        g[..., c.cond] += np.add.reduce(d, axis=1) if c.k == 2 else d[:, 0]
        g[..., c.trans] = dx_b
        return g

    # -- the flow ------------------------------------------------------------------------------
    def _standardize(self, x: np.ndarray) -> np.ndarray:
        return x if self.mean is None else (x - self.mean) * np.exp(-self.log_std)

    def _standardize_logdet(self) -> np.ndarray:
        """``log|det du/dx| = -sum(log_std)`` per model, shape ``(M, 1)``; 0 without one."""
        if self.log_std is None:
            return np.zeros((self.n_models, 1))
        return -self.log_std.sum(-1)

    def _to_latent(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        u = self._standardize(x)
        logdet = np.zeros(x.shape[:-1]) + self._standardize_logdet()
        for c, p in zip(self.couplings, self._views, strict=True):
            u, s, _ = self._coupling_to_latent(c, p, u)
            logdet += s.sum(-1)
        return u, logdet

    def _to_data(self, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        logdet = np.zeros(z.shape[:-1])
        for c, p in zip(reversed(self.couplings), reversed(self._views), strict=True):
            z, s = self._coupling_to_data(c, p, z)
            logdet -= s.sum(-1)
        if self.mean is not None:
            z = z * np.exp(self.log_std) + self.mean
            logdet -= self._standardize_logdet()
        return z, logdet

    def to_latent(self, x: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
        """x -> z; returns ``(z, log|det dz/dx|)``, shapes ``(n, D), (n,)`` or with leading M."""
        x, squeeze = self._lifted(x)
        z, logdet = self._to_latent(x)
        return (z[0], logdet[0]) if squeeze else (z, logdet)

    def to_data(self, z: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
        """z -> x; returns ``(x, log|det dx/dz|)``."""
        z, squeeze = self._lifted(z)
        x, logdet = self._to_data(z)
        return (x[0], logdet[0]) if squeeze else (x, logdet)

    def log_prob(self, x: ArrayLike) -> np.ndarray:
        """``log p(x) = log N(z; 0, I) + log|det dz/dx|`` in nats, ``(n,)`` (or ``(M, n)``)."""
        x, squeeze = self._lifted(x)
        z, logdet = self._to_latent(x)
        log_p = -0.5 * (np.square(z).sum(-1) + self.dim * LOG_2PI) + logdet
        return log_p[0] if squeeze else log_p

    def sample_latent(self, n: int, seed: int | np.random.Generator | None = None) -> np.ndarray:
        """``n`` draws from N(0, I) per model, ``(M, n, D)``, from NumPy's generator."""
        if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
            raise ValueError(f"number of samples must be >= 1, got {n}")
        return np.random.default_rng(seed).standard_normal((self.n_models, int(n), self.dim))

    def sample_with_log_prob(
        self, n: int, seed: int | np.random.Generator | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Samples and their log-density from one pass: ``log p(x) = log N(z) - log|det dx/dz|``."""
        z = self.sample_latent(n, seed)
        x, logdet = self._to_data(z)
        log_p = -0.5 * (np.square(z).sum(-1) + self.dim * LOG_2PI) - logdet
        return (x[0], log_p[0]) if self.n_models == 1 else (x, log_p)

    def sample(self, n: int, seed: int | np.random.Generator | None = None) -> np.ndarray:
        """``n`` samples, ``(n, D)`` (or ``(M, n, D)``); the same seed gives the same samples."""
        return self.sample_with_log_prob(n, seed)[0]

    def trace_to_data(
        self, z_or_n: ArrayLike | int, seed: int | np.random.Generator | None = None
    ) -> list[np.ndarray]:
        """Points after every transform on the way z -> x: prior first, data last."""
        if isinstance(z_or_n, int | np.integer):
            z, squeeze = self.sample_latent(int(z_or_n), seed), self.n_models == 1
        else:
            z, squeeze = self._lifted(z_or_n)
        trace = [z]
        for c, p in zip(reversed(self.couplings), reversed(self._views), strict=True):
            trace.append(self._coupling_to_data(c, p, trace[-1])[0])
        if self.mean is not None:
            trace.append(trace[-1] * np.exp(self.log_std) + self.mean)
        return [t[0] for t in trace] if squeeze else trace

    def trace_to_latent(self, x: ArrayLike) -> list[np.ndarray]:
        """Points after every transform on the way x -> z: data first, latent last."""
        x, squeeze = self._lifted(x)
        trace = [x]
        if self.mean is not None:
            trace.append(self._standardize(x))
        for c, p in zip(self.couplings, self._views, strict=True):
            trace.append(self._coupling_to_latent(c, p, trace[-1])[0])
        return [t[0] for t in trace] if squeeze else trace

    # -- loss and gradient ---------------------------------------------------------------------
    def _forward(self, u: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[_Cache]]:
        """Training forward pass on standardised ``u`` ``(M, n, D)``: per-model mean NLL
        (without the standardisation's constant), ``z`` and the caches."""
        sum_s = np.zeros(self.n_models)
        caches = []
        for c, p in zip(self.couplings, self._views, strict=True):
            u, s, cache = self._coupling_to_latent(c, p, u)
            sum_s += np.add.reduce(s, axis=(1, 2))
            caches.append(cache)
        n = u.shape[1]
        nll = (0.5 * np.square(u).sum(axis=(1, 2)) - sum_s) / n + 0.5 * self.dim * LOG_2PI
        return nll, u, caches

    def _backward(self, z: np.ndarray, caches: list[_Cache], grad: list[Views]) -> None:
        """Write ``dNLL/dtheta`` into the gradient views, starting from ``dNLL/dz = z / n``."""
        inv_n = 1.0 / z.shape[1]
        g = z * inv_n  # dNLL/dz of the last coupling's output
        for i in range(len(self.couplings) - 1, -1, -1):
            g = self._coupling_backward(
                self.couplings[i], self._views[i], grad[i], caches[i], g, inv_n, input_grad=i > 0
            )

    def nll_and_grad(
        self, x: ArrayLike, out: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Per-model mean NLL ``(M,)`` of a batch and its gradient, a flat vector laid out like
        :attr:`params` (row m: the gradient of model m's own NLL). ``x``: ``(n, D)`` shared by
        all models or ``(M, n, D)``. ``out``: a vector to write the gradient into."""
        x, _ = self._lifted(x)
        grad = np.empty_like(self.params) if out is None else out
        nll, z, caches = self._forward(self._standardize(x))
        self._backward(z, caches, self.views(grad))
        return nll - self._standardize_logdet()[:, 0], grad


class Adam:
    """PyTorch's Adam on one flat vector, updated in place by
    :func:`~densitylab.flat_realnvp.adam_update` (the compiled engine's update, too)."""

    def __init__(self, params: np.ndarray, lr: float = 1e-3) -> None:
        self.params, self.lr = params, lr
        self.exp_avg = np.zeros_like(params)
        self.exp_avg_sq = np.zeros_like(params)
        self.steps = 0

    def step(self, grad: np.ndarray, lr: float | None = None) -> None:
        """One update with gradient ``grad`` (same layout as the parameters)."""
        self.steps += 1
        adam_update(self.params, grad, self.exp_avg, self.exp_avg_sq, self.steps,
                    self.lr if lr is None else lr)


def fit(model: NumpyRealNVP, x: ArrayLike, **options) -> FitResult:
    """Train a copy of a one-model ``model`` by Adam on the mean NLL, exactly as
    :func:`densitylab.fit` trains its torch twin with autograd: the same training driver
    (split, batch order, divergence handling, early stopping, best epoch by validation NLL),
    with this module's hand-derived gradients and NumPy Adam as the engine.

    Options as in :func:`fit_many`. The result's ``model`` is the trained copy.

    Example:
        >>> import densitylab as dl
        >>> x = dl.datasets.get("moons").sample(500, seed=0)
        >>> result = fit(NumpyRealNVP(dim=2, seed=0), x, epochs=2)
        >>> len(result.history.val_nll), result.model.log_prob(x[:3]).shape
        (2, (3,))
    """
    if model.n_models != 1:
        raise ValueError(f"fit trains one model, this one holds {model.n_models}; use fit_many")
    return fit_many(model, x, **options)[0]


def fit_many(
    model: NumpyRealNVP,
    x: ArrayLike | Sequence[ArrayLike],
    *,
    x_val: ArrayLike | None = None,
    seed: int | Sequence[int] = 8,
    standardize: bool = False,
    **options,
) -> list[FitResult]:
    """Train the ``M`` models of ``model`` side by side, as :func:`densitylab.fit_many` does;
    one result per model, each holding a one-model copy.

    ``x`` is ``(n, D)`` shared by all ``M`` models or a sequence of M data sets; ``seed`` one
    seed or one per model. ``options`` are the budget and rules of
    :class:`densitylab.training.Options` (``epochs``, ``batch_size``, ``lr``, ``val_fraction``,
    ``patience``, ``clip_grad``, ``schedule``, ``ema``), as in :func:`densitylab.fit`.
    """
    from densitylab.training import Options
    from densitylab.training.data import prepare, seeds_of
    from densitylab.training.driver import train
    from densitylab.training.objectives import NLL

    options = Options(**options)
    seeds = seeds_of(seed, model.n_models)
    data = prepare(x, x_val, n_models=model.n_models, dim=model.dim,
                   val_fraction=options.val_fraction, seeds=seeds)
    model = model.copy()
    if standardize:  # torch's Standardize.fit: mean and unbiased std of the training data
        std = np.maximum(data.train.std(axis=1, ddof=1, keepdims=True), 1e-12)
        model.set_standardization(data.train.mean(axis=1, keepdims=True), np.log(std))
    engine = NumpyEngine(model, data.train, data.val, options)
    config = {"architecture": repr(model), "standardize": standardize}
    with np.errstate(all="ignore"):  # non-finite losses are handled (skipped, then "diverged")
        driver = train(engine, NLL(), options, seeds, data, config, verbose=False)
    return driver.results(model.unstack(), data.splits)


class NumpyEngine:
    """This module's arithmetic as an engine of the training driver: each step is the forward
    pass, the hand-derived backward pass and one :class:`Adam` update of all models at once."""

    name = "numpy"

    def __init__(self, model: NumpyRealNVP, x_train: np.ndarray, x_val: np.ndarray,
                 options) -> None:
        # the standardisation is fixed while training: apply it once, add its constant
        self.model, self.options, self.n_models = model, options, model.n_models
        self.u_train, self.u_val = model._standardize(x_train), model._standardize(x_val)
        self.constant = -model._standardize_logdet()[:, 0]
        self.adam = Adam(model.params, lr=options.lr)
        self.grad = np.zeros_like(model.params)
        self.grad_views = model.views(self.grad)
        self.bad_steps = np.zeros(self.n_models, dtype=np.int64)
        self._rows = np.arange(self.n_models)[:, None]

    def train_epoch(self, order, step: int, total_steps: int, active) -> np.ndarray:
        """Adam steps over batches of ``order``; stacked models step together, stopped ones
        too (what they learn is ignored)."""
        order, size = order.numpy(), self.options.batch_size
        sums = np.zeros(self.n_models)
        for i, start in enumerate(range(0, order.shape[1], size)):
            lr = self.options.learning_rate(step + i, total_steps)
            sums += self._step(order[:, start : start + size], lr) + self.constant
        return sums[:, None]

    def _step(self, index: np.ndarray, lr: float) -> np.ndarray:
        """One Adam step on every model; returns the per-model batch NLL."""
        model, grad = self.model, self.grad
        nll, z, caches = model._forward(self.u_train[self._rows, index])  # (M, batch, D)
        model._backward(z, caches, self.grad_views)
        if self.options.clip_grad is None and np.isfinite(nll.sum() + grad.sum()):
            self.adam.step(grad, lr)
            self.bad_steps[:] = 0
            return nll
        rows = grad.reshape(self.n_models, -1)
        norms = np.sqrt(np.einsum("mp,mp->m", rows, rows))
        if self.options.clip_grad is not None:
            rows *= np.minimum(self.options.clip_grad / (norms + 1e-6), 1.0)[:, None]
        finite = np.isfinite(nll) & np.isfinite(norms)
        self.bad_steps = np.where(finite, 0, self.bad_steps + 1)
        if finite.all():
            self.adam.step(grad, lr)
            return nll
        # skip the update of models whose loss or gradient is not finite (as torch does)
        rows[~finite] = 0.0
        params = self._params()
        saved = params[~finite].copy()
        self.adam.step(grad, lr)
        params[~finite] = saved
        return nll

    def validate(self) -> np.ndarray:
        nll = self.model._forward(self.u_val)[0] + self.constant
        return np.nan_to_num(nll, nan=math.inf)

    def _params(self) -> np.ndarray:
        return self.model.params.reshape(self.n_models, -1)

    def weights(self) -> list[np.ndarray]:
        return [self._params()]

    def weights_finite(self) -> np.ndarray:
        return np.isfinite(self._params()).all(axis=1)

    def state(self) -> dict[str, np.ndarray]:
        return {"params": self._params()}

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        self._params()[...] = state["params"]

    def optimizer_state(self) -> dict[str, np.ndarray]:
        return {"exp_avg": self.adam.exp_avg, "exp_avg_sq": self.adam.exp_avg_sq,
                "steps": np.array([self.adam.steps])}

    def load_optimizer_state(self, state: dict[str, np.ndarray]) -> None:
        self.adam.exp_avg[...] = state["exp_avg"]
        self.adam.exp_avg_sq[...] = state["exp_avg_sq"]
        self.adam.steps = int(state["steps"][0])
