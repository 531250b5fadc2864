"""What the compiled engines share: the compile-and-cache decorator, the activation codes, the
guarded Adam step and the parts of a flat-parameter stack that do not depend on the flow's
layers."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np
from numba.typed import List

from densitylab.flat_realnvp import adam_update

ACTIVATION_CODES = {"leaky_relu": 0, "relu": 1, "tanh": 2}

warnings.filterwarnings("ignore", category=numba.NumbaPerformanceWarning)


def jit(**options) -> Callable[[Callable], Callable]:
    """numba's ``njit``, compiled once and then loaded from the disk cache."""
    return numba.njit(cache=True, **options)


@jit()
def list_like(array):
    """An empty typed list for arrays of ``array``'s type (known to type inference)."""
    items = List()
    items.append(array)
    items.pop()
    return items


@jit()
def adam_step(theta, grad, m1, m2, count, nll, lr, t, total_steps, schedule, clip, bad):
    """Adam step ``t`` (counted from 0) after one batch's loss ``nll`` and gradient ``grad``,
    under the driver's rules: the rate is constant (``schedule`` 0) or cosine-annealed over
    ``total_steps``; a non-finite loss or gradient skips the step and adds one to the count of
    consecutive bad steps ``bad``, which is returned (0 after a good step); the gradient norm
    is clipped to ``clip`` when positive. ``count`` holds the number of steps taken."""
    square = 0.0
    for g in grad:
        square += g * g
    norm = math.sqrt(square)
    if not (np.isfinite(nll) and np.isfinite(norm)):
        return bad + 1
    if clip > 0 and norm > clip:
        grad *= clip / (norm + 1e-6)
    rate = lr if schedule == 0 else lr * 0.5 * (1.0 + math.cos(math.pi * t / total_steps))
    count[0] += 1.0
    adam_update(theta, grad, m1, m2, count[0], rate)
    return 0


class FlatStack:
    """Base of the compiled engines' stacks (``M`` models' parameters as an ``(M, P)`` array):
    subclasses set ``standardize`` (the flow's :class:`Standardize` or ``None``),
    ``n_models``, ``n_params`` (``P``) and ``dtype``, and define ``epoch`` (their compiled
    epoch of one model) and ``kernel_args(m)`` (its arguments after the data)."""

    def standardized(self, x: np.ndarray) -> np.ndarray:
        """Data as the first layer sees it: ``(x - mean) / std`` per model, ``(M, n, D)``."""
        x = np.asarray(x, dtype=self.dtype)
        if self.standardize is not None:  # as Standardize computes it, in the flow's precision
            mean = self.standardize.mean.detach().cpu().numpy().astype(self.dtype)
            log_std = self.standardize.log_std.detach().cpu().numpy().astype(self.dtype)
            x = (x - mean) * np.exp(-log_std)
        return np.ascontiguousarray(x, dtype=self.dtype)

    def log_det_offset(self) -> np.ndarray:
        """Per model, the standardisation's constant log-determinant ``-sum(log std)``."""
        if self.standardize is None:
            return np.zeros(self.n_models)
        return -self.standardize.log_std.detach().double().cpu().numpy().sum(axis=(1, 2))

    def run_epoch(self, theta, adam, x, order, batch_size, lr, total_steps, step, schedule,
                  clip, bad, active, threads: int = 1) -> np.ndarray:
        """One epoch for every active model, ``threads`` models at a time (the compiled epoch
        releases the GIL, and each model's arithmetic is its own, so the results do not
        depend on ``threads``); returns per-model sums of batch NLLs and updates ``bad``
        (consecutive non-finite steps per model) in place."""
        sums = np.zeros(self.n_models)

        def one(m: int) -> None:
            grad = np.zeros(self.n_params, dtype=self.dtype)
            sums[m], bad[m] = self.epoch(
                theta[m], adam["m1"][m], adam["m2"][m], adam["count"][m], grad, x[m], order[m],
                batch_size, lr, total_steps, step, schedule, clip, bad[m], *self.kernel_args(m),
            )

        models = np.flatnonzero(active)
        if threads > 1 and len(models) > 1:
            with ThreadPoolExecutor(min(threads, len(models))) as pool:
                list(pool.map(one, models))
        else:
            for m in models:
                one(m)
        return sums

    def new_adam(self) -> dict[str, np.ndarray]:
        """Zeroed Adam state per model: first and second moments and the step count."""
        zeros = np.zeros((self.n_models, self.n_params), dtype=self.dtype)
        return {"m1": zeros, "m2": zeros.copy(), "count": np.zeros((self.n_models, 1))}
