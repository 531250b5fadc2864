"""Compiled training epochs for spline flows (numba): Neural Spline Flows without Python per step.

The spline twin of :mod:`densitylab.training.compiled_realnvp`, with the same interface
(:class:`CompiledSplineStack` for ``CompiledStack``), so the training loop drives either.
One call runs a whole epoch for one model: batch gather, the forward pass, the hand-derived
backward pass, gradient checks, clipping and Adam on a flat parameter vector. Supported: a
:class:`~densitylab.flows.Standardize` in front (a fixed change of units), then rational-quadratic
:class:`~densitylab.flows.splines.SplineCoupling` layers with contiguous masks (Fourier features
of the conditioner input allowed), each optionally preceded by an
:class:`~densitylab.flows.transforms.InvertibleLinear` (the ``mixing="linear"`` of :func:`nsf`),
or :class:`~densitylab.flows.splines.ElementwiseSpline` layers (one-dimensional data): the
recommended model and the tabular recipe on any number of columns. Arrays have the flow's
precision (float32 matrix products are twice as fast as float64 ones); scalar spline and Adam
arithmetic is float64. :func:`compiled_log_prob` is the same forward pass for evaluation.
``tests/test_compiled_spline.py`` checks gradients against ``torch.autograd`` and whole
training runs and log-densities against the plain path.

Backward pass of one spline value (the forward formulas are in :mod:`densitylab.flows.splines`),
for bin ``k`` with ``s = h / w``, ``xi = (x - x_k) / w``, ``mix = xi (1 - xi)``,
``A = s xi^2 + d_k mix``, ``den = s + (d_k + d_{k+1} - 2 s) mix``, ``out = y_k + h A / den`` and
``log dy/dx = log(s^2 P) - 2 log(den)``, ``P = d_{k+1} xi^2 + 2 s mix + d_k (1 - xi)^2``; with
``g_o = dL/d out`` and ``g_l = dL/d log dy/dx`` (``-1/n`` from the mean NLL)::

    g_y_k = g_o        g_h = g_o A / den      g_A = g_o h / den
    g_den = -g_o h A / den^2 - 2 g_l / den    g_P = g_l / P
    g_s   = 2 g_l / s + 2 g_P mix + g_den + g_A xi^2 - 2 g_c     (g_c = g_den mix)
    g_xi  = g_P (2 d_{k+1} xi - 2 d_k (1 - xi)) + 2 g_A s xi + g_mix (1 - 2 xi)
    g_x   = g_xi / w   g_x_k = -g_xi / w      g_w = -g_xi xi / w - g_s s / w    g_h += g_s / w

Knot positions are cumulative sums of floored softmax fractions, so ``g_x_k`` and ``g_w`` reach
the unnormalised widths through the cumsum (suffix sums) and the softmax Jacobian
``g_r = u (g_u - <u, g_u>)``; the two knot derivatives used reach theirs through the softplus
(``sigmoid``). Outside ``[-bound, bound]`` the map is the identity: ``g_x = g_o``, nothing else.
An :class:`InvertibleLinear` ``z = x W^T``, ``W = P L U``: ``g_x = g_z W``, ``g_W = g_z^T x``,
``g_L = P^T g_W U^T`` (strictly lower part), ``g_U = L^T P^T g_W`` (strictly upper part; the
diagonal ``sign exp(log_s)`` gives ``g_log_s = g_U_ii U_ii - 1``, the -1 from its log-det).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from densitylab import compiling
from densitylab.flows.bases import GaussianMixtureBase, StandardNormal
from densitylab.flows.flow import FAST_LOG_PROB, Flow
from densitylab.flows.splines import (
    IDENTITY_SHIFT,
    MIN_BIN_HEIGHT,
    MIN_BIN_WIDTH,
    MIN_DERIVATIVE,
    ElementwiseSpline,
    SplineCoupling,
)
from densitylab.flows.transforms import InvertibleLinear, Standardize, Transform
from densitylab.training.numba_kernels import ACTIVATION_CODES, FlatStack, adam_step, jit, list_like

LOG_2PI = math.log(2 * math.pi)
_jit = jit(error_model="numpy")


def _layers(flow: Flow) -> tuple[Standardize | None, list[tuple[InvertibleLinear | None,
                                                                 Transform]]] | None:
    """The flow as ``(standardize, [(linear or None, spline layer), ...])``, or ``None`` if it
    holds anything else."""
    body = list(flow.transforms)
    first = body[0] if body and isinstance(body[0], Standardize) else None
    body = body[1:] if first is not None else body
    layers, linear = [], None
    for t in body:
        if type(t) is InvertibleLinear and linear is None:
            linear = t
        elif type(t) is SplineCoupling and t.blocks is not None and not t.context_features:
            layers.append((linear, t))
            linear = None
        elif type(t) is ElementwiseSpline and linear is None:
            layers.append((None, t))
        else:
            return None
    if not layers or linear is not None:
        return None
    kinds = {type(t) for _, t in layers}
    if len(kinds) != 1 or len({(t.bins, t.bound) for _, t in layers}) != 1:
        return None
    if kinds == {SplineCoupling}:
        shape = {(c.net.fourier, c.net.activation_name, len(c.net.weights),
                  tuple(w.shape[-1] for w in c.net.weights[:-1]), c.net.masks is None)
                 for _, c in layers}
        if len(shape) != 1 or len({lin is None for lin, _ in layers}) != 1:
            return None
    return first, layers


def supports(flow: Flow) -> bool:
    """True for spline coupling flows: :class:`SplineCoupling` layers with contiguous masks
    (any Fourier octaves, no context), each optionally after an :class:`InvertibleLinear`, or
    :class:`ElementwiseSpline` layers (the one-dimensional spline flow); optionally behind a
    :class:`Standardize`; on the standard-normal or a Gaussian-mixture base."""
    return (type(flow.base) in (StandardNormal, GaussianMixtureBase)
            and _layers(flow) is not None)


def _mixture_arrays(base, m: int, dtype) -> tuple[np.ndarray, ...]:
    """Model ``m``'s base as the kernels take it: log-weights ``(K,)``, means ``(K, D)``,
    inverse Cholesky factors ``(K, D, D)`` and ``log det L`` ``(K,)`` of the mixture's used
    components; ``K = 0`` for the standard normal."""
    if not isinstance(base, GaussianMixtureBase):
        d = base.dim
        return (np.zeros(0, dtype), np.zeros((0, d), dtype), np.zeros((0, d, d), dtype),
                np.zeros(0, dtype))
    used = torch.isfinite(base.log_weights[m])
    chol = base.chol[m, used].detach().double().cpu().numpy()
    return (base.log_weights[m, used].detach().cpu().numpy().astype(dtype),
            base.means[m, used].detach().cpu().numpy().astype(dtype),
            np.linalg.inv(chol).astype(dtype),
            np.log(np.diagonal(chol, axis1=1, axis2=2)).sum(axis=1).astype(dtype))


@dataclass
class Layout:
    """Where each parameter of one model lives in the flat vector, and the network shapes."""

    size: int
    cond_first: np.ndarray  # (K,) int64, 1 where the conditioning block comes first
    split: np.ndarray  # (K,) width of the first block of the mask
    widths: np.ndarray  # (K, L + 1) layer widths, network input (after Fourier features) first
    w_off: np.ndarray  # (K, L) offsets of weight matrices (row-major fan_in x fan_out)
    b_off: np.ndarray  # (K, L)
    lin_off: np.ndarray  # (K, 3) offsets of lower, upper, log_s of the linear maps (-1: none)
    e_off: np.ndarray  # (K,) offsets of the raw knots of elementwise splines (-1: a coupling)
    activation: int
    bins: int
    bound: float
    fourier: int


def layout_of(layers: list[tuple[InvertibleLinear | None, Transform]], dim: int) -> Layout:
    first = layers[0][1]
    coupling = isinstance(first, SplineCoupling)
    n_layers = len(first.net.weights) if coupling else 0
    k_total = len(layers)
    widths = np.zeros((k_total, n_layers + 1), dtype=np.int64)
    w_off = np.zeros((k_total, n_layers), dtype=np.int64)
    b_off = np.zeros_like(w_off)
    lin_off = np.full((k_total, 3), -1, dtype=np.int64)
    e_off = np.full(k_total, -1, dtype=np.int64)
    n_tri = dim * (dim - 1) // 2
    offset = 0
    for k, (linear, c) in enumerate(layers):
        if linear is not None:
            lin_off[k] = offset, offset + n_tri, offset + 2 * n_tri
            offset += 2 * n_tri + dim
        if not coupling:
            e_off[k], offset = offset, offset + dim * (3 * c.bins - 1)
            continue
        shapes = [tuple(w.shape[1:]) for w in c.net.weights]
        widths[k] = [shapes[0][0], *(s[1] for s in shapes)]
        for layer, (fan_in, fan_out) in enumerate(shapes):
            w_off[k, layer], offset = offset, offset + fan_in * fan_out
            b_off[k, layer], offset = offset, offset + fan_out
    return Layout(
        size=offset,
        cond_first=np.array([int(c.blocks[0]) if coupling else 0 for _, c in layers],
                            dtype=np.int64),
        split=np.array([c.blocks[1][0] if coupling else 0 for _, c in layers], dtype=np.int64),
        widths=widths, w_off=w_off, b_off=b_off, lin_off=lin_off, e_off=e_off,
        activation=ACTIVATION_CODES[first.net.activation_name] if coupling else 0,
        bins=first.bins, bound=first.bound, fourier=first.net.fourier if coupling else 0,
    )


class CompiledSplineStack(FlatStack):
    """The layers of an ``M``-model spline flow as an ``(M, P)`` array, and back.

    The arrays have the flow's precision: a float32 flow trains in float32 (as the torch
    engine trains it; float32 matrix products are twice as fast), a float64 one in float64.
    """

    def __init__(self, flow: Flow) -> None:
        parts = _layers(flow)
        if parts is None:
            raise ValueError("not a spline coupling flow the compiled engine supports")
        self.standardize, self.layers = parts
        self.dim = flow.dim
        self.layout = layout_of(self.layers, flow.dim)
        self.n_models = flow.n_models
        self.dtype = np.float32 if flow.dtype == torch.float32 else np.float64
        self.n_params = self.layout.size
        k_total, d = len(self.layers), flow.dim
        # the linear maps' fixed permutation and signs (buffers), per model
        self.perm = np.zeros((self.n_models, k_total, d, d), dtype=self.dtype)
        self.sign = np.ones((self.n_models, k_total, d), dtype=self.dtype)
        for k, (linear, _) in enumerate(self.layers):
            if linear is not None:
                self.perm[:, k] = linear.perm.detach().cpu().numpy()
                self.sign[:, k] = linear.sign.detach().cpu().numpy()
        self.base = [_mixture_arrays(flow.base, m, self.dtype) for m in range(self.n_models)]

    def _slots(self):
        """``(parameter tensor, model-row getter, offset)`` for every packed parameter."""
        lay = self.layout
        for k, (linear, c) in enumerate(self.layers):
            if linear is not None:
                for tensor, at in zip((linear.lower, linear.upper, linear.log_s),
                                      lay.lin_off[k], strict=True):
                    yield tensor, int(at)
            if isinstance(c, ElementwiseSpline):
                yield c.raw, int(lay.e_off[k])
                continue
            for layer, (w, b) in enumerate(zip(c.net.weights, c.net.biases, strict=True)):
                yield w, int(lay.w_off[k, layer])
                yield b, int(lay.b_off[k, layer])

    def pack(self) -> np.ndarray:
        """Copy the torch parameters into a new ``(M, P)`` array."""
        theta = np.zeros((self.n_models, self.layout.size), dtype=self.dtype)
        for tensor, at in self._slots():
            rows = tensor.detach().cpu().numpy().reshape(self.n_models, -1)
            theta[:, at : at + rows.shape[1]] = rows
        return theta

    @torch.no_grad()
    def unpack(self, theta: np.ndarray) -> None:
        """Write an ``(M, P)`` array back into the torch parameters."""
        for tensor, at in self._slots():
            size = tensor[0].numel()
            values = torch.from_numpy(np.ascontiguousarray(theta[:, at : at + size]))
            tensor.copy_(values.reshape(tensor.shape).to(dtype=tensor.dtype,
                                                          device=tensor.device))

    def epoch(self, *arguments) -> tuple[float, int]:
        return _epoch(*arguments)

    def kernel_args(self, m: int) -> tuple:
        """The compiled kernels' arguments after the data: the layout and model ``m``'s
        permutations."""
        lay = self.layout
        return (lay.cond_first, lay.split, lay.widths, lay.w_off, lay.b_off, lay.lin_off,
                lay.e_off, self.perm[m], self.sign[m], lay.activation, lay.bins, lay.bound,
                lay.fourier, *self.base[m])

    def log_prob(self, theta: np.ndarray, x: np.ndarray) -> np.ndarray:
        """``log p`` of standardised points ``x`` ``(M, n, D)`` under the packed models
        (without the standardisation's constant, see :meth:`log_det_offset`), ``(M, n)``."""
        out = np.empty(x.shape[:2], dtype=self.dtype)
        for m in range(self.n_models):
            out[m] = _log_prob(theta[m], np.ascontiguousarray(x[m], dtype=self.dtype),
                               *self.kernel_args(m))
        return out


# Below this many points the torch path takes well under a second, less than a new process's
# loading of the compiled code from the disk cache (0.5 s; the first compilation ever, 6 s).
COMPILED_LOG_PROB_MIN_POINTS = 32_768


def compiled_log_prob(flow: Flow, rows: torch.Tensor) -> torch.Tensor | None:
    """``log p`` of ``(M, n, D)`` rows by the compiled forward pass, or ``None`` where it does
    not apply: an unsupported flow or device, few points, or gradients wanted (grad
    mode on and parameters that require them: the torch path keeps the graph).

    The same arithmetic as the torch flow, fused: one pass over cache-sized slices instead of
    ~30 tensor operations per coupling (torch's softmax over 10 bins alone is a third of its
    time); it agrees with the torch path to float rounding (``tests/test_compiled_spline.py``).
    Used from :meth:`Flow.log_prob` for at least ``COMPILED_LOG_PROB_MIN_POINTS`` points.
    """
    if (rows.device.type != "cpu" or rows.dtype not in (torch.float32, torch.float64)
            or rows.shape[-2] * rows.shape[0] < COMPILED_LOG_PROB_MIN_POINTS
            or rows.shape[-1] != flow.dim or rows.requires_grad or not supports(flow)
            or (torch.is_grad_enabled() and any(p.requires_grad for p in flow.parameters()))):
        return None
    compiling.announce("spline-log-prob")
    stack = CompiledSplineStack(flow)
    x = stack.standardized(rows.numpy())
    log_p = stack.log_prob(stack.pack(), x) + stack.log_det_offset()[:, None]
    return torch.from_numpy(log_p).to(flow.dtype)


def nll_and_grad(
    stack: CompiledSplineStack, theta: np.ndarray, x: np.ndarray, model: int = 0
) -> tuple[float, np.ndarray]:
    """Mean NLL of standardised ``x`` under one packed model and its gradient (for tests)."""
    grad = np.zeros(stack.layout.size, dtype=theta.dtype)
    nll = _nll_and_grad(theta, grad, np.ascontiguousarray(x, dtype=theta.dtype),
                        *stack.kernel_args(model))
    return nll, grad


# --------------------------------------------------------------------------------------------
# compiled kernels (numba): plain loops and np.dot on contiguous arrays of the flow's dtype;
# scalar arithmetic (spline values, Adam) in float64
# --------------------------------------------------------------------------------------------
@_jit
def _softplus(v):
    return v if v > 20.0 else math.log1p(math.exp(v))  # torch's threshold 20


@_jit
def _sigmoid_of_softplus_input(v):
    return 1.0 if v > 20.0 else 1.0 / (1.0 + math.exp(-v))


@_jit
def _knots(raw, start, bins, bound, minimum, u, knots):
    """Softmax ``u`` of ``raw[start : start + bins]`` and the knots ``knots`` (bins + 1) of the
    floored fractions, computed as :func:`densitylab.flows.splines._knots` does."""
    top = raw[start]
    for j in range(1, bins):
        top = max(top, raw[start + j])
    total = 0.0
    for j in range(bins):
        u[j] = math.exp(raw[start + j] - top)
        total += u[j]
    scale = 1.0 - minimum * bins
    knots[0] = -bound
    cumulative = 0.0
    for j in range(bins):
        u[j] = u[j] / total
        cumulative += minimum + scale * u[j]
        if j < bins - 1:
            knots[j + 1] = 2.0 * bound * cumulative - bound
    knots[bins] = bound


@_jit
def _bin_of(knots, bins, v):
    """Number of interior knots <= v (torch.searchsorted(..., right=True))."""
    k = 0
    for j in range(1, bins):
        if knots[j] <= v:
            k = j
        else:
            break
    return k


# one cache row per spline value: the softmax of widths and heights, then these fields
_K, _XK, _W, _YK, _H, _DK, _DK1, _SK, _SK1, _IN = range(10)
CACHE_FIELDS = 10


@_jit
def _spline_forward(raw, start, value, bins, bound, xk, yk, cache, row):
    """``(out, log slope)`` of one value through the spline of ``raw[start : start + 3B-1]``;
    keeps what the backward pass needs in ``cache[row]``."""
    c = cache[row]
    at = 2 * bins
    if value < -bound or value > bound:
        c[at + _IN] = 0.0
        return value, 0.0
    _knots(raw, start, bins, bound, MIN_BIN_WIDTH, c[:bins], xk)
    _knots(raw, start + bins, bins, bound, MIN_BIN_HEIGHT, c[bins:at], yk)
    k = _bin_of(xk, bins, value)
    x_k, w = xk[k], xk[k + 1] - xk[k]
    y_k, h = yk[k], yk[k + 1] - yk[k]
    base = start + 2 * bins
    d_k, d_k1, sig_k, sig_k1 = 1.0, 1.0, 0.0, 0.0
    if k > 0:
        d_k = MIN_DERIVATIVE + _softplus(raw[base + k - 1] + IDENTITY_SHIFT)
        sig_k = _sigmoid_of_softplus_input(raw[base + k - 1] + IDENTITY_SHIFT)
    if k < bins - 1:
        d_k1 = MIN_DERIVATIVE + _softplus(raw[base + k] + IDENTITY_SHIFT)
        sig_k1 = _sigmoid_of_softplus_input(raw[base + k] + IDENTITY_SHIFT)
    c[at + _K], c[at + _XK], c[at + _W], c[at + _YK], c[at + _H] = k, x_k, w, y_k, h
    c[at + _DK], c[at + _DK1], c[at + _SK], c[at + _SK1], c[at + _IN] = d_k, d_k1, sig_k, sig_k1, 1
    slope = h / w
    curvature = d_k + d_k1 - 2.0 * slope
    xi = min(max((value - x_k) / w, 0.0), 1.0)
    mix = xi * (1.0 - xi)
    den = slope + curvature * mix
    num = slope * slope * (d_k1 * xi * xi + 2.0 * slope * mix + d_k * (1.0 - xi) * (1.0 - xi))
    out = y_k + h * (slope * xi * xi + d_k * mix) / den
    return min(max(out, -bound), bound), math.log(num) - 2.0 * math.log(den)


@_jit
def _softmax_backward(raw_grad, start, bins, bound, minimum, u, k, g_knot_k, g_knot_k1):
    """Gradient of the knots ``k`` and ``k + 1`` reaching the unnormalised sizes."""
    scale = 2.0 * bound * (1.0 - minimum * bins)
    # knot j (1 <= j <= B-1) = 2 b cumsum(f)[j-1] - b: fraction i reaches knots j > i
    g_low = g_knot_k if 1 <= k <= bins - 1 else 0.0
    g_high = g_knot_k1 if k + 1 <= bins - 1 else 0.0
    dot = 0.0
    for i in range(k + 1):
        g_f = (g_low if i <= k - 1 else 0.0) + g_high
        dot += u[i] * g_f
    for i in range(bins):
        g_f = (g_low if i <= k - 1 else 0.0) + (g_high if i <= k else 0.0)
        raw_grad[start + i] = scale * u[i] * (g_f - dot)


@_jit
def _spline_backward(cache, row, raw_grad, start, value, g_out, g_log, bins, bound):
    """Write the gradient of ``raw[start : start + 3B-1]`` into ``raw_grad`` (zeros outside the
    interval) and return the gradient of the value."""
    c = cache[row]
    at = 2 * bins
    if c[at + _IN] == 0.0:
        for j in range(3 * bins - 1):
            raw_grad[start + j] = 0.0
        return g_out
    k = int(c[at + _K])
    x_k, w, y_k, h = c[at + _XK], c[at + _W], c[at + _YK], c[at + _H]
    d_k, d_k1 = c[at + _DK], c[at + _DK1]
    slope = h / w
    curvature = d_k + d_k1 - 2.0 * slope
    xi_raw = (value - x_k) / w
    xi = min(max(xi_raw, 0.0), 1.0)
    mix = xi * (1.0 - xi)
    den = slope + curvature * mix
    poly = d_k1 * xi * xi + 2.0 * slope * mix + d_k * (1.0 - xi) * (1.0 - xi)
    a = slope * xi * xi + d_k * mix
    out = y_k + h * a / den
    g_o = g_out if -bound <= out <= bound else 0.0
    # out = y_k + h a / den;  log slope = log(s^2 poly) - 2 log(den)
    g_yk = g_o
    g_h = g_o * a / den
    g_a = g_o * h / den
    g_den = -g_o * h * a / (den * den) - 2.0 * g_log / den
    g_poly = g_log / poly
    g_s = 2.0 * g_log / slope
    g_dk1 = g_poly * xi * xi
    g_s += g_poly * 2.0 * mix
    g_mix = g_poly * 2.0 * slope
    g_dk = g_poly * (1.0 - xi) * (1.0 - xi)
    g_xi = g_poly * (2.0 * d_k1 * xi - 2.0 * d_k * (1.0 - xi))
    g_s += g_den  # den = s + c mix
    g_c = g_den * mix
    g_mix += g_den * curvature
    g_s += g_a * xi * xi  # a = s xi^2 + d_k mix
    g_xi += g_a * 2.0 * slope * xi
    g_dk += g_a * mix
    g_mix += g_a * d_k
    g_xi += g_mix * (1.0 - 2.0 * xi)
    g_dk += g_c  # c = d_k + d_k1 - 2 s
    g_dk1 += g_c
    g_s -= 2.0 * g_c
    g_value, g_xk, g_w = 0.0, 0.0, 0.0
    if 0.0 <= xi_raw <= 1.0:
        g_value = g_xi / w
        g_xk = -g_value
        g_w = -g_xi * xi_raw / w
    g_h += g_s / w  # s = h / w
    g_w -= g_s * slope / w
    # knots: x_k = knot k, w = knot k+1 - knot k (the same for y)
    _softmax_backward(raw_grad, start, bins, bound, MIN_BIN_WIDTH, c[:bins], k, g_xk - g_w, g_w)
    _softmax_backward(raw_grad, start + bins, bins, bound, MIN_BIN_HEIGHT, c[bins:at], k,
                      g_yk - g_h, g_h)
    base = start + 2 * bins
    for j in range(bins - 1):
        raw_grad[base + j] = 0.0
    if k > 0:
        raw_grad[base + k - 1] = g_dk * c[at + _SK]
    if k < bins - 1:
        raw_grad[base + k] = g_dk1 * c[at + _SK1]
    return g_value


@_jit
def _fourier(x_a, octaves, width):
    """``[x, sin(2^l x), cos(2^l x)]`` as :func:`densitylab.flows.nets.fourier_features`."""
    n, d_a = x_a.shape
    out = np.empty((n, width), x_a.dtype)
    for i in range(n):
        for j in range(d_a):
            out[i, j] = x_a[i, j]
            for o in range(octaves):
                angle = x_a[i, j] * 2.0**o
                out[i, d_a + j * octaves + o] = math.sin(angle)
                out[i, d_a + d_a * octaves + j * octaves + o] = math.cos(angle)
    return out


@_jit
def _fourier_backward(x_a, g_features, octaves):
    n, d_a = x_a.shape
    g = np.empty((n, d_a), x_a.dtype)
    for i in range(n):
        for j in range(d_a):
            total = g_features[i, j]
            for o in range(octaves):
                frequency = 2.0**o
                angle = x_a[i, j] * frequency
                total += frequency * (g_features[i, d_a + j * octaves + o] * math.cos(angle)
                                      - g_features[i, d_a + d_a * octaves + j * octaves + o]
                                      * math.sin(angle))
            g[i, j] = total
    return g


@_jit
def _dense(a, theta, w_at, b_at, fan_in, fan_out, activate, act):
    w = theta[w_at : w_at + fan_in * fan_out].reshape(fan_in, fan_out)
    out = np.dot(a, w)
    n = out.shape[0]
    for i in range(n):
        for j in range(fan_out):
            v = out[i, j] + theta[b_at + j]
            if activate:
                if act == 0:
                    v = v if v > 0 else 0.01 * v
                elif act == 1:
                    v = v if v > 0 else 0.0
                else:
                    v = math.tanh(v)
            out[i, j] = v
    return out


@_jit
def _activation_backward(g, out, act):
    n, width = g.shape
    for i in range(n):
        for j in range(width):
            if act == 0:
                if not out[i, j] > 0:
                    g[i, j] *= 0.01
            elif act == 1:
                if not out[i, j] > 0:
                    g[i, j] = 0.0
            else:
                g[i, j] *= 1.0 - out[i, j] * out[i, j]


@_jit
def _linear_weight(theta, lin_off, k, perm, sign, dim):
    """``W = P L U`` of linear map ``k`` and its factors ``L``, ``U`` (``(D, D)`` each)."""
    lower = np.eye(dim, dtype=theta.dtype)
    upper = np.zeros((dim, dim), theta.dtype)
    e = 0
    for r in range(dim):
        for c in range(r):
            lower[r, c] = theta[lin_off[k, 0] + e]
            upper[c, r] = theta[lin_off[k, 1] + e]
            e += 1
    for i in range(dim):
        upper[i, i] = sign[k, i] * math.exp(theta[lin_off[k, 2] + i])
    return np.dot(perm[k], np.dot(lower, upper)), lower, upper


@_jit
def _linear_backward(grad, lin_off, k, perm, dim, x_in, g_z, lower, upper, w):
    """Accumulate the gradients of linear map ``k`` (``z = x W^T``); return ``g_x``."""
    g_w = np.dot(g_z.T, x_in)
    g_lu = np.dot(perm[k].T, g_w)
    g_lower = np.dot(g_lu, upper.T)
    g_upper = np.dot(lower.T, g_lu)
    e = 0
    for r in range(dim):
        for c in range(r):
            grad[lin_off[k, 0] + e] += g_lower[r, c]
            grad[lin_off[k, 1] + e] += g_upper[c, r]
            e += 1
    for i in range(dim):
        grad[lin_off[k, 2] + i] += g_upper[i, i] * upper[i, i] - 1.0
    return np.dot(g_z, w)


@_jit
def _coupling_forward(theta, h, k, cond_first, split, widths, w_off, b_off, act, bins, bound,
                      octaves, outs, logdet, xk, yk, cache):
    """``h`` through coupling ``k``: returns the new ``h``; appends the network's layer outputs
    (input features first) to ``outs``; adds the log-slopes to ``logdet``; keeps each spline
    value's intermediates in ``cache`` (row ``i * d_b + j``)."""
    n, dim = h.shape
    s = split[k]
    if cond_first[k]:
        x_a = np.ascontiguousarray(h[:, :s])
        b0, d_b = s, dim - s
    else:
        x_a = np.ascontiguousarray(h[:, s:])
        b0, d_b = 0, s
    n_layers = widths.shape[1] - 1
    a = _fourier(x_a, octaves, widths[k, 0]) if octaves > 0 else x_a
    outs.append(a)
    for layer in range(n_layers):
        a = _dense(a, theta, w_off[k, layer], b_off[k, layer], widths[k, layer],
                   widths[k, layer + 1], layer < n_layers - 1, act)
        outs.append(a)
    size = 3 * bins - 1
    out = h.copy()
    for i in range(n):
        for j in range(d_b):
            z, ld = _spline_forward(a[i], j * size, h[i, b0 + j], bins, bound, xk, yk, cache,
                                    i * d_b + j)
            out[i, b0 + j] = z
            logdet[i] += ld
    return out


@_jit
def _elementwise_forward(theta, h, at, bins, bound, logdet, xk, yk, cache):
    """``h`` through an elementwise spline layer whose raw knots start at ``theta[at]``."""
    n, dim = h.shape
    size = 3 * bins - 1
    out = h.copy()
    for i in range(n):
        for j in range(dim):
            z, ld = _spline_forward(theta, at + j * size, h[i, j], bins, bound, xk, yk, cache,
                                    i * dim + j)
            out[i, j] = z
            logdet[i] += ld
    return out


@_jit
def _elementwise_backward(grad, h_in, g_h, g_log, at, bins, bound, cache):
    """Accumulate an elementwise spline layer's gradient (summed over the points); return the
    gradient of its input."""
    n, dim = h_in.shape
    size = 3 * bins - 1
    g_raw = np.empty(size)
    g_in = np.empty_like(h_in)
    for i in range(n):
        for j in range(dim):
            g_in[i, j] = _spline_backward(cache, i * dim + j, g_raw, 0, h_in[i, j], g_h[i, j],
                                          g_log, bins, bound)
            for q in range(size):
                grad[at + j * size + q] += g_raw[q]
    return g_in


@_jit
def _nll_and_grad(theta, grad, x, cond_first, split, widths, w_off, b_off, lin_off, e_off, perm,
                  sign, act, bins, bound, octaves, log_w, means, inv_chol, log_det):
    """Mean NLL of a batch ``x`` (n, D) and its gradient (written into ``grad``)."""
    n, dim = x.shape
    k_total = widths.shape[0]
    n_layers = widths.shape[1] - 1
    grad[:] = 0.0
    xk, yk = np.empty(bins + 1), np.empty(bins + 1)
    h = x.copy()
    inputs = list_like(h)  # each coupling's input
    linear_inputs = list_like(h)
    outs = list_like(h)  # network layer outputs, input features first
    factors = list_like(h)  # W, L, U of the linear maps
    caches = list_like(np.empty((0, 1)))
    logdet = np.zeros(n)
    linear_logdet = 0.0
    for k in range(k_total):
        if lin_off[k, 0] >= 0:
            w, lower, upper = _linear_weight(theta, lin_off, k, perm, sign, dim)
            factors.append(w)
            factors.append(lower)
            factors.append(upper)
            linear_inputs.append(h)
            h = np.dot(h, w.T)
            for i in range(dim):
                linear_logdet += theta[lin_off[k, 2] + i]
        inputs.append(h)
        if e_off[k] >= 0:
            cache = np.empty((n * dim, 2 * bins + CACHE_FIELDS))
            caches.append(cache)
            h = _elementwise_forward(theta, h, e_off[k], bins, bound, logdet, xk, yk, cache)
            continue
        d_b = dim - split[k] if cond_first[k] else split[k]
        cache = np.empty((n * d_b, 2 * bins + CACHE_FIELDS))
        caches.append(cache)
        h = _coupling_forward(theta, h, k, cond_first, split, widths, w_off, b_off, act, bins,
                              bound, octaves, outs, logdet, xk, yk, cache)
    g_h = np.empty_like(h)
    if log_w.shape[0] == 0:  # the standard normal
        base_nll = 0.5 * (h * h).sum() / n + 0.5 * dim * LOG_2PI
        for i in range(n):
            for j in range(dim):
                g_h[i, j] = h[i, j] / n
    else:
        base_nll = -_mixture_log_prob(h, log_w, means, inv_chol, log_det, g_h, 1.0 / n).sum() / n
    nll = base_nll - logdet.sum() / n - linear_logdet
    g_log = -1.0 / n
    size = 3 * bins - 1
    per = n_layers + 1
    for k in range(k_total - 1, -1, -1):
        h_in = inputs[k]
        if e_off[k] >= 0:
            g_h = _elementwise_backward(grad, h_in, g_h, g_log, e_off[k], bins, bound, caches[k])
            continue
        s = split[k]
        if cond_first[k]:
            a0, b0, d_a, d_b = 0, s, s, dim - s
        else:
            a0, b0, d_a, d_b = s, 0, dim - s, s
        raw = outs[k * per + n_layers]
        cache = caches[k]
        g_raw = np.empty_like(raw)
        g_in = np.empty_like(h_in)
        for i in range(n):
            for j in range(d_b):
                g_in[i, b0 + j] = _spline_backward(cache, i * d_b + j, g_raw[i], j * size,
                                                   h_in[i, b0 + j], g_h[i, b0 + j], g_log,
                                                   bins, bound)
        # the first layer's input needs no gradient when it is the data itself
        needs_input = k > 0 or lin_off[k, 0] >= 0
        g_a = g_raw
        for layer in range(n_layers - 1, -1, -1):
            fan_in, fan_out = widths[k, layer], widths[k, layer + 1]
            if layer < n_layers - 1:
                _activation_backward(g_a, outs[k * per + layer + 1], act)
            below = outs[k * per + layer]
            wo, bo = w_off[k, layer], b_off[k, layer]
            grad[wo : wo + fan_in * fan_out] += np.dot(below.T, g_a).ravel()
            grad[bo : bo + fan_out] += g_a.sum(axis=0)
            if layer > 0 or needs_input:
                w = theta[wo : wo + fan_in * fan_out].reshape(fan_in, fan_out)
                g_a = np.dot(g_a, w.T)
        if needs_input:
            x_a = np.ascontiguousarray(h_in[:, a0 : a0 + d_a])
            g_xa = _fourier_backward(x_a, g_a, octaves) if octaves > 0 else g_a
            for i in range(n):
                for j in range(d_a):
                    g_in[i, a0 + j] = g_xa[i, j] + g_h[i, a0 + j]
        g_h = g_in
        if lin_off[k, 0] >= 0:
            at = len(linear_inputs) - 1
            w, lower, upper = factors[3 * at], factors[3 * at + 1], factors[3 * at + 2]
            g_h = _linear_backward(grad, lin_off, k, perm, dim, linear_inputs[at], g_h, lower,
                                   upper, w)
            linear_inputs.pop()
            for _ in range(3):
                factors.pop()
    return nll


@_jit
def _log_prob(theta, x, cond_first, split, widths, w_off, b_off, lin_off, e_off, perm, sign, act,
              bins, bound, octaves, log_w, means, inv_chol, log_det):
    """``log p`` of every row of ``x`` (n, D), in slices that stay in cache."""
    n, dim = x.shape
    k_total = widths.shape[0]
    xk, yk = np.empty(bins + 1), np.empty(bins + 1)
    result = np.empty(n)
    chunk = 1024
    cache = np.empty((chunk * dim, 2 * bins + CACHE_FIELDS))
    for start in range(0, n, chunk):
        h = np.ascontiguousarray(x[start : start + chunk])
        m = h.shape[0]
        logdet = np.zeros(m)
        for k in range(k_total):
            if lin_off[k, 0] >= 0:
                w, _, _ = _linear_weight(theta, lin_off, k, perm, sign, dim)
                h = np.dot(h, w.T)
                for i in range(dim):
                    logdet += theta[lin_off[k, 2] + i]
            if e_off[k] >= 0:
                h = _elementwise_forward(theta, h, e_off[k], bins, bound, logdet, xk, yk, cache)
                continue
            outs = list_like(h)
            h = _coupling_forward(theta, h, k, cond_first, split, widths, w_off, b_off, act,
                                  bins, bound, octaves, outs, logdet, xk, yk, cache)
        if log_w.shape[0] == 0:  # the standard normal
            for i in range(m):
                square = 0.0
                for j in range(dim):
                    square += h[i, j] * h[i, j]
                result[start + i] = -0.5 * (square + dim * LOG_2PI) + logdet[i]
        else:
            base = _mixture_log_prob(h, log_w, means, inv_chol, log_det, h[:0], 0.0)
            for i in range(m):
                result[start + i] = base[i] + logdet[i]
    return result


@_jit
def _mixture_log_prob(z, log_w, means, inv_chol, log_det, g_z, scale):
    """``log sum_k w_k N(z_i; mu_k, L_k L_k^T)`` per row of ``z`` (n, D); where ``g_z`` has
    rows, ``scale`` times the gradient of ``-log p`` goes there:
    ``sum_k r_k L_k^-T L_k^-1 (z - mu_k)`` with ``r_k`` the component's responsibility."""
    n, dim = z.shape
    k_total = log_w.shape[0]
    out = np.empty(n)
    white = np.empty((k_total, dim))
    diff = np.empty(dim)
    a = np.empty(k_total)
    for i in range(n):
        top = -np.inf
        for k in range(k_total):
            for c in range(dim):
                diff[c] = z[i, c] - means[k, c]
            square = 0.0
            for r in range(dim):
                value = 0.0
                for c in range(r + 1):
                    value += inv_chol[k, r, c] * diff[c]
                white[k, r] = value
                square += value * value
            a[k] = log_w[k] - log_det[k] - 0.5 * (square + dim * LOG_2PI)
            top = max(top, a[k])
        total = 0.0
        for k in range(k_total):
            total += math.exp(a[k] - top)
        out[i] = top + math.log(total)
        if g_z.shape[0] == 0:
            continue
        for c in range(dim):
            g_z[i, c] = 0.0
        for k in range(k_total):
            weight = scale * math.exp(a[k] - out[i])  # the responsibility, scaled
            for r in range(dim):
                for c in range(r + 1):
                    g_z[i, c] += weight * inv_chol[k, r, c] * white[k, r]
    return out


@jit(error_model="numpy", nogil=True)  # stacked models may run in threads (FlatStack.run_epoch)
def _epoch(theta, m1, m2, count, grad, x, order, batch_size, lr, total_steps, step, schedule,
           clip, bad, cond_first, split, widths, w_off, b_off, lin_off, e_off, perm, sign, act,
           bins, bound, octaves, log_w, means, inv_chol, log_det):
    """One epoch of guarded Adam steps (:func:`~.numba_kernels.adam_step`) over ``order``;
    returns the sum of batch NLLs and the count of consecutive skipped steps."""
    total = 0.0
    for start in range(0, order.shape[0], batch_size):
        nll = _nll_and_grad(theta, grad, x[order[start : start + batch_size]], cond_first, split,
                            widths, w_off, b_off, lin_off, e_off, perm, sign, act, bins, bound,
                            octaves, log_w, means, inv_chol, log_det)
        total += nll
        bad = adam_step(theta, grad, m1, m2, count, nll, lr, step + start // batch_size,
                        total_steps, schedule, clip, bad)
    return total, bad


FAST_LOG_PROB.append(compiled_log_prob)  # Flow.log_prob tries it first
