"""The compiled engine: training epochs for RealNVP coupling stacks (numba), no Python work
per step.

Small flows spend their time in per-operation overhead, not arithmetic: a coursework step is
~300 tiny torch operations. Here a whole epoch (batch gather, forward pass, the hand-derived
backward pass, gradient checks, clipping and Adam) is one compiled call over a flat float64
parameter vector per model. The mathematics is the PyTorch flow's; ``tests/test_compiled.py``
checks gradients against ``torch.autograd`` and whole training runs against the plain path.

Backward pass of one coupling ``z_b = x_b * exp(s) + t``, ``s = f * r`` (``r`` the raw net
output; ``s = f * tanh(r)`` for the tanh scale), with ``g_y = dL/dy`` and the log-det term
``-mean(sum s)`` of the loss contributing ``-1/n`` to every ``g_s``::

    g_x_b = g_z_b * exp(s)            g_t = g_z_b
    g_s   = g_z_b * x_b * exp(s) - 1/n
    g_f   = sum_i g_s * r             g_r = g_s * f
    g_x_a = g_z_a + (back-propagation of g_r and g_t through the s and t networks)

and for a network layer ``y = act(a W + b)``: ``g_pre = g_y * act'(pre)``,
``g_W = a^T g_pre``, ``g_b = sum_i g_pre``, ``g_a = g_pre W^T``.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch

from densitylab.flat_realnvp import FlatLayout, adam_update
from densitylab.flows import AffineCoupling, Flow, Standardize, StandardNormal
from densitylab.training.autograd import TorchEngine

ACTIVATION_CODES = {"leaky_relu": 0, "relu": 1, "tanh": 2}
SCALE_CODES = {"factor": 0, "tanh": 1}
LOG_2PI = math.log(2 * math.pi)

try:  # numba is an optional accelerator: without it, training uses the plain torch loop
    import numba
    from numba import types
    from numba.typed import List

    warnings.filterwarnings("ignore", category=numba.NumbaPerformanceWarning)
    _jit = numba.njit(cache=True)  # compiled once, then loaded from __pycache__
    MATRIX = types.float64[:, ::1]
except ImportError:  # pragma: no cover - exercised only where numba is missing
    numba = None

    def _jit(function):
        return function


def available() -> bool:
    return numba is not None


def supports(flow: Flow) -> bool:
    """True for RealNVP-style flows on the standard-normal base: affine couplings with
    contiguous masks, optionally behind a :class:`Standardize` (which only shifts and scales
    the data)."""
    if type(flow.base) is not StandardNormal:
        return False
    body = list(flow.transforms)
    if body and isinstance(body[0], Standardize):
        body = body[1:]
    return bool(body) and all(
        type(t) is AffineCoupling and t.blocks is not None and t.net.fourier == 0 for t in body
    )


class CompiledStack:
    """The couplings of an ``M``-model flow as an ``(M, P)`` float64 array in the flat layout
    of :mod:`densitylab.flat_realnvp` (the NumPy flow's), and back."""

    def __init__(self, flow: Flow) -> None:
        body = list(flow.transforms)
        self.standardize = body[0] if isinstance(body[0], Standardize) else None
        self.first = 1 if self.standardize else 0
        couplings: list[AffineCoupling] = body[self.first :]
        masks = []
        for coupling in couplings:
            mask = np.zeros(flow.dim, dtype=bool)
            mask[coupling.cond_idx.cpu().numpy()] = True
            masks.append(mask)
        net = couplings[0].net
        hidden = [int(w.shape[-1]) for w in net.weights[:-1]]
        self.layout = FlatLayout(flow.dim, masks, hidden, couplings[0].separate_nets)
        self.kernel = self.layout.kernel_offsets()
        self.activation = ACTIVATION_CODES[net.activation_name]
        self.scale = SCALE_CODES[couplings[0].scale]
        self.flow, self.n_models = flow, flow.n_models

    def pack(self) -> np.ndarray:
        """Copy the torch parameters into a new ``(M, P)`` array."""
        theta = np.zeros((self.n_models, self.layout.n_params))
        state = {k: v.detach().double().cpu().numpy() for k, v in self.flow.state_dict().items()}
        self.layout.pack(state, theta, self.first)
        return theta

    @torch.no_grad()
    def unpack(self, theta: np.ndarray) -> None:
        """Write an ``(M, P)`` array back into the torch parameters."""
        params = dict(self.flow.named_parameters())
        for key, value in self.layout.named(theta, self.n_models, self.first).items():
            params[key].copy_(torch.from_numpy(value))

    def standardized(self, x: np.ndarray) -> np.ndarray:
        """Data as the couplings see it: ``(x - mean) / std`` per model, ``(M, n, D)``."""
        if self.standardize is None:
            return np.ascontiguousarray(x, dtype=np.float64)
        mean = self.standardize.mean.detach().double().cpu().numpy()
        log_std = self.standardize.log_std.detach().double().cpu().numpy()
        return np.ascontiguousarray((x - mean) * np.exp(-log_std))  # as Standardize computes it

    def log_det_offset(self) -> np.ndarray:
        """Per model, the standardisation's constant log-determinant ``-sum(log std)``."""
        if self.standardize is None:
            return np.zeros(self.n_models)
        return -self.standardize.log_std.detach().double().cpu().numpy().sum(axis=(1, 2))

    def new_adam(self) -> dict[str, np.ndarray]:
        """Zeroed Adam state per model: first and second moments and the step count."""
        zeros = np.zeros((self.n_models, self.layout.n_params))
        return {"m1": zeros, "m2": zeros.copy(), "count": np.zeros((self.n_models, 1))}

    def run_epoch(self, theta, adam, x, order, batch_size, lr, total_steps, step, schedule,
                  clip, bad) -> np.ndarray:
        """One epoch for every model; returns per-model sums of batch NLLs and updates ``bad``
        (consecutive non-finite steps per model) in place."""
        sums = np.zeros(self.n_models)
        grad = np.zeros(self.layout.n_params)
        for m in range(self.n_models):
            sums[m], bad[m] = _epoch(
                theta[m], adam["m1"][m], adam["m2"][m], adam["count"][m], grad, x[m], order[m],
                batch_size, lr, total_steps, step, schedule, clip, bad[m], *self._kernel_args(),
            )
        return sums

    def _kernel_args(self) -> tuple:
        k = self.kernel
        return (k["cond_first"], k["widths"], k["split"], k["w_off"], k["b_off"], k["f_off"],
                k["nets"], self.activation, self.scale)


# --------------------------------------------------------------------------------------------
# compiled kernels (numba): plain loops and np.dot on contiguous float64 arrays
# --------------------------------------------------------------------------------------------
_adam_update = _jit(adam_update)  # the NumPy flow's Adam, compiled


@_jit
def _activate(pre, code):
    if code == 0:
        return np.where(pre > 0, pre, 0.01 * pre)
    if code == 1:
        return np.maximum(pre, 0.0)
    return np.tanh(pre)

@_jit
def _activation_grad(pre, out, code):
    if code == 0:
        return np.where(pre > 0, 1.0, 0.01)
    if code == 1:
        return np.where(pre > 0, 1.0, 0.0)
    return 1.0 - out * out

@_jit
def _net_forward(theta, x_a, k, g, widths, w_off, b_off, act, pres, outs):
    """Forward through net ``g`` of coupling ``k``; keeps pre-activations for backward."""
    n_layers = widths.shape[1] - 1
    a = x_a
    for layer in range(n_layers):
        fan_in, fan_out = widths[k, layer], widths[k, layer + 1]
        start = w_off[k, g, layer]
        w = theta[start : start + fan_in * fan_out].reshape(fan_in, fan_out)
        b = theta[b_off[k, g, layer] : b_off[k, g, layer] + fan_out]
        pre = np.dot(a, w) + b
        pres.append(pre)
        a = _activate(pre, act) if layer < n_layers - 1 else pre
        outs.append(a)
    return a

@_jit
def _net_backward(theta, grad, x_a, g_out, k, g, widths, w_off, b_off, act, pres, outs, base):
    """Back-propagate ``g_out`` through net ``g``; accumulates into ``grad``, returns g_x_a."""
    n_layers = widths.shape[1] - 1
    g_a = g_out
    for layer in range(n_layers - 1, -1, -1):
        fan_in, fan_out = widths[k, layer], widths[k, layer + 1]
        pre, out = pres[base + layer], outs[base + layer]
        g_pre = g_a if layer == n_layers - 1 else g_a * _activation_grad(pre, out, act)
        below = x_a if layer == 0 else outs[base + layer - 1]
        wo, bo = w_off[k, g, layer], b_off[k, g, layer]
        grad[wo : wo + fan_in * fan_out] += np.dot(below.T, g_pre).ravel()
        grad[bo : bo + fan_out] += g_pre.sum(axis=0)
        w = theta[wo : wo + fan_in * fan_out].reshape(fan_in, fan_out)
        g_a = np.dot(g_pre, w.T)
    return g_a

@_jit
def _nll_and_grad(theta, grad, x, cond_first, widths, split, w_off, b_off, f_off, nets,
                 act, scale):
    """Mean NLL of a batch ``x`` (n, D) and its gradient (written into ``grad``)."""
    n, dim = x.shape
    n_couplings = widths.shape[0]
    grad[:] = 0.0
    h = x.copy()
    inputs, raws = List.empty_list(MATRIX), List.empty_list(MATRIX)
    shifts, pres = List.empty_list(MATRIX), List.empty_list(MATRIX)
    outs = List.empty_list(MATRIX)
    logdet = np.zeros(n)
    for k in range(n_couplings):
        first, second = h[:, : split[k]], h[:, split[k] :]
        x_a, x_b = (first, second) if cond_first[k] else (second, first)
        x_a = np.ascontiguousarray(x_a)
        if nets == 2:
            raw = _net_forward(theta, x_a, k, 0, widths, w_off, b_off, act, pres, outs)
            shift = _net_forward(theta, x_a, k, 1, widths, w_off, b_off, act, pres, outs)
        else:
            both = _net_forward(theta, x_a, k, 0, widths, w_off, b_off, act, pres, outs)
            d_b = both.shape[1] // 2
            raw, shift = both[:, :d_b].copy(), both[:, d_b:].copy()
        d_b = raw.shape[1]
        factor = theta[f_off[k] : f_off[k] + d_b]
        s = factor * (raw if scale == 0 else np.tanh(raw))
        z_b = x_b * np.exp(s) + shift
        logdet += s.sum(axis=1)
        inputs.append(h)
        raws.append(raw)
        shifts.append(np.exp(s))
        h = np.empty_like(h)
        if cond_first[k]:
            h[:, : split[k]] = x_a
            h[:, split[k] :] = z_b
        else:
            h[:, : split[k]] = z_b
            h[:, split[k] :] = x_a
    nll = 0.5 * (h * h).sum() / n + 0.5 * dim * 1.8378770664093453 - logdet.sum() / n
    g_h = h / n
    per_net = widths.shape[1] - 1
    for k in range(n_couplings - 1, -1, -1):
        h_in = inputs[k]
        first_in, second_in = h_in[:, : split[k]], h_in[:, split[k] :]
        g_first, g_second = g_h[:, : split[k]], g_h[:, split[k] :]
        if cond_first[k]:
            x_a, x_b, g_za, g_zb = first_in, second_in, g_first, g_second
        else:
            x_a, x_b, g_za, g_zb = second_in, first_in, g_second, g_first
        x_a = np.ascontiguousarray(x_a)
        e, raw = shifts[k], raws[k]
        d_b = raw.shape[1]
        fo = f_off[k]
        factor = theta[fo : fo + d_b]
        g_xb = g_zb * e
        g_s = g_zb * x_b * e - 1.0 / n
        squashed = raw if scale == 0 else np.tanh(raw)
        grad[fo : fo + d_b] += (g_s * squashed).sum(axis=0)
        g_raw = g_s * factor if scale == 0 else g_s * factor * (1.0 - squashed * squashed)
        g_shift = np.ascontiguousarray(g_zb)
        base = k * nets * per_net
        if nets == 2:
            g_xa = _net_backward(theta, grad, x_a, np.ascontiguousarray(g_raw), k, 0, widths,
                                w_off, b_off, act, pres, outs, base)
            g_xa += _net_backward(theta, grad, x_a, g_shift, k, 1, widths, w_off, b_off, act,
                                 pres, outs, base + per_net)
        else:
            g_out = np.concatenate((g_raw, g_shift), axis=1)
            g_xa = _net_backward(theta, grad, x_a, g_out, k, 0, widths, w_off, b_off, act,
                                pres, outs, base)
        g_xa += g_za
        g_h = np.empty_like(g_h)
        if cond_first[k]:
            g_h[:, : split[k]] = g_xa
            g_h[:, split[k] :] = g_xb
        else:
            g_h[:, : split[k]] = g_xb
            g_h[:, split[k] :] = g_xa
    return nll

@_jit
def _epoch(theta, m1, m2, count, grad, x, order, batch_size, lr, total_steps, step, schedule,
          clip, bad, cond_first, widths, split, w_off, b_off, f_off, nets, act,
          scale):
    """One epoch of Adam (:func:`~densitylab.flat_realnvp.adam_update`) over ``order``.

    Returns the sum of batch NLLs and the number of consecutive non-finite steps at the
    end (``bad`` carries the count in from the previous epoch); such steps are skipped.
    """
    n = order.shape[0]
    total = 0.0
    t = step
    for start in range(0, n, batch_size):
        idx = order[start : start + batch_size]
        batch = x[idx]
        nll = _nll_and_grad(theta, grad, batch, cond_first, widths, split, w_off, b_off, f_off,
                           nets, act, scale)
        total += nll
        norm = np.sqrt((grad * grad).sum())
        rate = lr if schedule == 0 else lr * 0.5 * (1.0 + np.cos(np.pi * t / total_steps))
        t += 1
        if not (np.isfinite(nll) and np.isfinite(norm)):
            bad += 1
            continue
        bad = 0
        if clip > 0 and norm > clip:
            grad *= clip / (norm + 1e-6)
        count[0] += 1.0
        _adam_update(theta, grad, m1, m2, count[0], rate)
    return total, bad




def nll_and_grad(
    stack: CompiledStack, theta: np.ndarray, x: np.ndarray
) -> tuple[float, np.ndarray]:
    """Mean NLL of ``x`` under one packed model and its gradient (for tests and inspection)."""
    grad = np.zeros(stack.layout.n_params)
    nll = _nll_and_grad(theta, grad, np.ascontiguousarray(x, dtype=np.float64),
                        *stack._kernel_args())
    return nll, grad


class CompiledEngine(TorchEngine):
    """Epochs run by the compiled kernels on a float64 copy of the parameters.

    The torch model is refreshed after every epoch, so validation, the kept weights and
    checkpoints are the autograd engine's; Adam's state lives here as NumPy arrays.
    """

    def __init__(self, model: Flow, objective, x_train, x_val, options) -> None:
        super().__init__(model, objective, x_train, x_val, options)
        self.stack = CompiledStack(model)
        self.theta = self.stack.pack()
        self.adam = self.stack.new_adam()
        x = x_train.detach().double().cpu().numpy()
        self.x = self.stack.standardized(x)
        self.offset = self.stack.log_det_offset()  # NLL(x) = NLL(standardised x) - offset

    def _new_optimizers(self) -> list:
        return []

    def train_epoch(self, order, step: int, total_steps: int) -> np.ndarray:
        options = self.options
        sums = self.stack.run_epoch(
            self.theta, self.adam, self.x, order.numpy(), options.batch_size, options.lr,
            total_steps, step, int(options.schedule == "cosine"), options.clip_grad or 0.0,
            self.bad_steps,
        )
        self.stack.unpack(self.theta)
        n_batches = math.ceil(self.x.shape[1] / options.batch_size)
        return (sums - n_batches * self.offset)[:, None]

    def load_state(self, state) -> None:
        super().load_state(state)
        self.theta = self.stack.pack()

    def optimizer_state(self) -> dict[str, torch.Tensor]:
        return {k: torch.from_numpy(v) for k, v in self.adam.items()}

    def load_optimizer_state(self, tensors) -> None:
        self.adam = {k: tensors[k].numpy().copy() for k in self.adam}
