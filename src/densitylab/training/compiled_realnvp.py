"""The compiled engine: training epochs for RealNVP coupling stacks (numba), no Python work
per step.

Small flows spend their time in per-operation overhead, not arithmetic: a coursework step is
~300 tiny torch operations. Here a whole epoch (batch gather, forward pass, the hand-derived
backward pass, gradient checks, clipping and Adam) is one compiled call over a flat parameter
vector per model, in float64. The mathematics is the PyTorch flow's; ``tests/test_compiled.py``
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

import numpy as np
import torch

from densitylab.flat_realnvp import FlatLayout
from densitylab.flows import AffineCoupling, Flow, Standardize, StandardNormal
from densitylab.training.numba_kernels import ACTIVATION_CODES, FlatStack, adam_step, jit, list_like

SCALE_CODES = {"factor": 0, "tanh": 1}
LOG_2PI = math.log(2 * math.pi)
_jit = jit()


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


class CompiledStack(FlatStack):
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
        self.dtype, self.n_params = np.float64, self.layout.n_params

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

    def epoch(self, *arguments) -> tuple[float, int]:
        return _epoch(*arguments)

    def kernel_args(self, m: int) -> tuple:
        """The compiled kernels' arguments after the data: the layout (the same for every
        model)."""
        k = self.kernel
        return (k["cond_first"], k["widths"], k["split"], k["w_off"], k["b_off"], k["f_off"],
                k["nets"], self.activation, self.scale)


# --------------------------------------------------------------------------------------------
# compiled kernels (numba): plain loops and np.dot on contiguous arrays of the flow's dtype
# --------------------------------------------------------------------------------------------
SMALL = 4  # a matrix product with this few inputs or outputs runs as a loop, not a BLAS call


@_jit
def _matmul(a, w, bias, theta, bias_at):
    """``a @ w`` (plus ``theta[bias_at:]`` when ``bias``): a loop for thin matrices, where a BLAS
    call costs more than its arithmetic."""
    n, fan_in = a.shape
    fan_out = w.shape[1]
    if fan_in <= SMALL or fan_out <= SMALL:
        out = np.empty((n, fan_out), a.dtype)
        for i in range(n):
            for j in range(fan_out):
                v = theta[bias_at + j] if bias else 0.0
                for q in range(fan_in):
                    v += a[i, q] * w[q, j]
                out[i, j] = v
        return out
    out = np.dot(a, w)
    if bias:
        for i in range(n):
            for j in range(fan_out):
                out[i, j] += theta[bias_at + j]
    return out


@_jit
def _net_forward(theta, x_a, k, g, widths, w_off, b_off, act, outs):
    """Forward through net ``g`` of coupling ``k``; keeps every layer's output for backward
    (an activation's derivative is a function of its output)."""
    n_layers = widths.shape[1] - 1
    a = x_a
    for layer in range(n_layers):
        fan_in, fan_out = widths[k, layer], widths[k, layer + 1]
        start = w_off[k, g, layer]
        w = theta[start : start + fan_in * fan_out].reshape(fan_in, fan_out)
        a = _matmul(a, w, True, theta, b_off[k, g, layer])
        if layer < n_layers - 1:
            for i in range(a.shape[0]):
                for j in range(fan_out):
                    v = a[i, j]
                    if act == 0:
                        a[i, j] = v if v > 0 else 0.01 * v
                    elif act == 1:
                        a[i, j] = v if v > 0 else 0.0
                    else:
                        a[i, j] = np.tanh(v)
        outs.append(a)
    return a


@_jit
def _net_backward(theta, grad, x_a, g_out, k, g, widths, w_off, b_off, act, outs, base,
                  need_input):
    """Back-propagate ``g_out`` through net ``g``; accumulates into ``grad``, returns g_x_a
    (``None``-like zeros unless ``need_input``)."""
    n_layers = widths.shape[1] - 1
    g_a = g_out
    for layer in range(n_layers - 1, -1, -1):
        fan_in, fan_out = widths[k, layer], widths[k, layer + 1]
        if layer < n_layers - 1:  # g_a is this function's own array: scale it in place
            out = outs[base + layer]
            for i in range(g_a.shape[0]):
                for j in range(fan_out):
                    if act == 2:
                        g_a[i, j] *= 1.0 - out[i, j] * out[i, j]
                    elif not out[i, j] > 0:
                        g_a[i, j] *= 0.01 if act == 0 else 0.0
        below = x_a if layer == 0 else outs[base + layer - 1]
        wo, bo = w_off[k, g, layer], b_off[k, g, layer]
        if fan_in <= SMALL or fan_out <= SMALL:
            for i in range(g_a.shape[0]):
                for q in range(fan_in):
                    v = below[i, q]
                    row = wo + q * fan_out
                    for j in range(fan_out):
                        grad[row + j] += v * g_a[i, j]
        else:
            grad[wo : wo + fan_in * fan_out] += np.dot(below.T, g_a).ravel()
        for i in range(g_a.shape[0]):
            for j in range(fan_out):
                grad[bo + j] += g_a[i, j]
        if layer > 0 or need_input:
            w = theta[wo : wo + fan_in * fan_out].reshape(fan_in, fan_out)
            g_a = _matmul(g_a, w.T, False, theta, 0)
    return g_a


@_jit
def _nll_and_grad(theta, grad, x, cond_first, widths, split, w_off, b_off, f_off, nets,
                 act, scale):
    """Mean NLL of a batch ``x`` (n, D) and its gradient (written into ``grad``).

    Arrays have ``x``'s dtype; the coupling's elementwise steps are fused loops (no
    temporaries), scalar arithmetic in float64."""
    n, dim = x.shape
    n_couplings = widths.shape[0]
    grad[:] = 0.0
    h = x.copy()
    inputs, raws, scales, outs = list_like(h), list_like(h), list_like(h), list_like(h)
    logdet = np.zeros(n)
    for k in range(n_couplings):
        s0 = split[k]
        a0, b0 = (0, s0) if cond_first[k] else (s0, 0)
        d_a = s0 if cond_first[k] else dim - s0
        d_b = dim - d_a
        x_a = np.ascontiguousarray(h[:, a0 : a0 + d_a])
        if nets == 2:
            raw = _net_forward(theta, x_a, k, 0, widths, w_off, b_off, act, outs)
            shift = _net_forward(theta, x_a, k, 1, widths, w_off, b_off, act, outs)
            t0 = 0
        else:
            raw = _net_forward(theta, x_a, k, 0, widths, w_off, b_off, act, outs)
            shift = raw
            t0 = d_b  # one net: [raw scale | shift] side by side
        fo = f_off[k]
        e = np.empty((n, d_b), h.dtype)
        out = h.copy()
        for i in range(n):
            total = 0.0
            for j in range(d_b):
                r = raw[i, j]
                s = theta[fo + j] * (r if scale == 0 else np.tanh(r))
                e[i, j] = np.exp(s)
                out[i, b0 + j] = h[i, b0 + j] * e[i, j] + shift[i, t0 + j]
                total += s
            logdet[i] += total
        inputs.append(h)
        raws.append(raw)
        scales.append(e)
        h = out
    square = 0.0
    for i in range(n):
        for j in range(dim):
            square += h[i, j] * h[i, j]
    nll = 0.5 * square / n + 0.5 * dim * 1.8378770664093453 - logdet.sum() / n
    g_h = np.empty_like(h)
    for i in range(n):
        for j in range(dim):
            g_h[i, j] = h[i, j] / n
    per_net = widths.shape[1] - 1
    for k in range(n_couplings - 1, -1, -1):
        h_in, raw, e = inputs[k], raws[k], scales[k]
        s0 = split[k]
        a0, b0 = (0, s0) if cond_first[k] else (s0, 0)
        d_a = s0 if cond_first[k] else dim - s0
        d_b = dim - d_a
        x_a = np.ascontiguousarray(h_in[:, a0 : a0 + d_a])
        fo = f_off[k]
        g_new = np.empty_like(g_h)
        g_raw = np.empty((n, d_b), h.dtype)
        g_shift = np.empty((n, d_b), h.dtype)
        for i in range(n):
            for j in range(d_b):
                g_zb = g_h[i, b0 + j]
                g_new[i, b0 + j] = g_zb * e[i, j]
                g_s = g_zb * h_in[i, b0 + j] * e[i, j] - 1.0 / n
                r = raw[i, j]
                squashed = r if scale == 0 else np.tanh(r)
                grad[fo + j] += g_s * squashed
                g_raw[i, j] = g_s * theta[fo + j] * (1.0 if scale == 0
                                                     else 1.0 - squashed * squashed)
                g_shift[i, j] = g_zb
        base = k * nets * per_net
        need = k > 0  # the first coupling's input is the data: no gradient needed
        if nets == 2:
            g_xa = _net_backward(theta, grad, x_a, g_raw, k, 0, widths, w_off, b_off, act,
                                 outs, base, need)
            g_t = _net_backward(theta, grad, x_a, g_shift, k, 1, widths, w_off, b_off, act,
                                outs, base + per_net, need)
            if need:
                g_xa += g_t
        else:
            g_out = np.concatenate((g_raw, g_shift), axis=1)
            g_xa = _net_backward(theta, grad, x_a, g_out, k, 0, widths, w_off, b_off, act,
                                 outs, base, need)
        if not need:
            break
        for i in range(n):
            for j in range(d_a):
                g_new[i, a0 + j] = g_xa[i, j] + g_h[i, a0 + j]
        g_h = g_new
    return nll


@jit(nogil=True)  # stacked models' epochs may run in threads (FlatStack.run_epoch)
def _epoch(theta, m1, m2, count, grad, x, order, batch_size, lr, total_steps, step, schedule,
          clip, bad, cond_first, widths, split, w_off, b_off, f_off, nets, act,
          scale):
    """One epoch of guarded Adam steps (:func:`~.numba_kernels.adam_step`) over ``order``;
    returns the sum of batch NLLs and the count of consecutive skipped steps."""
    total = 0.0
    for start in range(0, order.shape[0], batch_size):
        nll = _nll_and_grad(theta, grad, x[order[start : start + batch_size]], cond_first, widths,
                            split, w_off, b_off, f_off, nets, act, scale)
        total += nll
        bad = adam_step(theta, grad, m1, m2, count, nll, lr, step + start // batch_size,
                        total_steps, schedule, clip, bad)
    return total, bad


def nll_and_grad(
    stack: CompiledStack, theta: np.ndarray, x: np.ndarray
) -> tuple[float, np.ndarray]:
    """Mean NLL of ``x`` under one packed model and its gradient (for tests and inspection)."""
    grad = np.zeros(stack.layout.n_params)
    nll = _nll_and_grad(theta, grad, np.ascontiguousarray(x, dtype=np.float64),
                        *stack.kernel_args(0))
    return nll, grad
