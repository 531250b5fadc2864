"""Pieces shared by the VAE and the GAN: seeded MLPs, input checks, standardisation buffers,
the divergence guard and the per-epoch batch order."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
import torch
from numpy.typing import ArrayLike
from torch import Tensor, nn

from densitylab._validation import as_points, check_positive_int, column_statistics
from densitylab.flows.nets import check_activation
from densitylab.training import MAX_BAD_STEPS, _split

Seed = int | torch.Generator | None


def check_widths(hidden: Sequence[int]) -> tuple[int, ...]:
    """Hidden widths: a (possibly empty) sequence of positive ints; ``()`` means a linear map."""
    widths = tuple(hidden) if isinstance(hidden, Sequence) else (hidden,)
    if any(isinstance(h, bool) or not isinstance(h, int | np.integer) or h < 1 for h in widths):
        raise ValueError(f"hidden must be a sequence of positive ints, got {hidden!r}")
    return tuple(int(h) for h in widths)


def check_seed(seed: int) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    return int(seed)


def rng_from(seed: Seed) -> torch.Generator:
    """A private generator: the one given, or a CPU one seeded with ``seed`` (``None``: fresh OS
    entropy). CPU generators make a seed give the same draws on every device. Torch's global
    generator is never read or advanced."""
    if isinstance(seed, torch.Generator):
        return seed
    rng = torch.Generator()
    if seed is None:
        rng.seed()
    else:
        rng.manual_seed(check_seed(seed))
    return rng


def randn(shape: tuple[int, ...], rng: torch.Generator, like: Tensor) -> Tensor:
    """Standard-normal draws from ``rng`` on its own device, moved to ``like``'s device and dtype
    (so a CPU generator also drives a model on a GPU)."""
    return torch.randn(shape, generator=rng, dtype=like.dtype, device=rng.device).to(like.device)


class MLP(nn.Module):
    """``in_features -> hidden... -> out_features`` with the activation between layers.

    Initialised like ``torch.nn.Linear`` (uniform in ``+-1/sqrt(fan_in)``) from an explicit
    generator; ``hidden=()`` gives a single affine map.
    """

    def __init__(
        self,
        in_features: int,
        hidden: Sequence[int],
        out_features: int,
        activation: str,
        rng: torch.Generator,
    ) -> None:
        super().__init__()
        self.activation = check_activation(activation)
        widths = (in_features, *hidden, out_features)
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for fan_in, fan_out in zip(widths[:-1], widths[1:], strict=True):
            bound = fan_in**-0.5
            self.weights.append(nn.Parameter(torch.empty(fan_in, fan_out).uniform_(
                -bound, bound, generator=rng)))
            self.biases.append(nn.Parameter(torch.empty(fan_out).uniform_(
                -bound, bound, generator=rng)))

    def forward(self, x: Tensor) -> Tensor:
        last = len(self.weights) - 1
        for layer, (weight, bias) in enumerate(zip(self.weights, self.biases, strict=True)):
            x = torch.addmm(bias, x.reshape(-1, x.shape[-1]), weight).reshape(*x.shape[:-1], -1)
            if layer < last:
                x = self.activation(x)
        return x


class StandardizedModel(nn.Module):
    """Base for the baselines: a fixed affine change of units ``u = (x - loc) / scale`` in
    buffers (identity until a fit with ``standardize=True``), so they survive save/load and
    every density stays in the user's units."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = check_positive_int(dim, "dim")
        self.register_buffer("loc", torch.zeros(dim))
        self.register_buffer("scale", torch.ones(dim))

    @property
    def device(self) -> torch.device:
        return self.loc.device

    @property
    def dtype(self) -> torch.dtype:
        return self.loc.dtype

    def _as_input(self, x: ArrayLike | Tensor, beyond_range: bool = False) -> Tensor:
        """A public ``(n, dim)`` input, checked, as a tensor in the model's dtype and device.

        Finite values beyond the dtype's range are an error, unless ``beyond_range``: then they
        become infinite, for a density method to answer ``-inf``.
        """
        x = torch.as_tensor(x, device=self.device)
        if x.dim() != 2 or x.shape[1] != self.dim:
            raise ValueError(f"input must have shape (n, {self.dim}), got {tuple(x.shape)}")
        if x.is_floating_point() and not torch.isfinite(x).all():
            raise ValueError("input contains NaN or infinite values")
        x = x.to(self.dtype)
        if not beyond_range and not torch.isfinite(x).all():
            raise ValueError(f"input values exceed the range of this model's dtype ({self.dtype})")
        return x

    def _standardize(self, x: Tensor) -> Tensor:
        return (x - self.loc) / self.scale

    def _unstandardize(self, u: Tensor) -> Tensor:
        return u * self.scale + self.loc

    def _log_jacobian(self) -> Tensor:
        """``log|det du/dx| = -sum(log scale)``: added to every density in standardised units."""
        return -torch.log(self.scale).sum()

    @torch.no_grad()
    def _fit_standardization(self, x: Tensor) -> None:
        if len(x) < 2:
            raise ValueError(f"standardize needs at least 2 training points, got {len(x)}")
        mean, std = column_statistics(x, dim=0)
        self.loc.copy_(mean.squeeze(0))
        self.scale.copy_(std.squeeze(0))


def training_data(
    model: StandardizedModel, x: ArrayLike, x_val: ArrayLike | None, val_fraction: float, seed: int
) -> tuple[Tensor, Tensor, np.ndarray, np.ndarray]:
    """Checked train / validation tensors and the indices of the split (as in ``dl.fit``)."""
    data = as_points(x, name="x", dim=model.dim, min_rows=2)
    if x_val is None:
        train_idx, val_idx = _split(len(data), val_fraction, seed)
        train, val = data[train_idx], data[val_idx]
    else:
        train_idx, val_idx = np.arange(len(data)), np.arange(0)
        train, val = data, as_points(x_val, name="x_val", dim=model.dim)
    train_t, val_t = (
        torch.as_tensor(a, dtype=model.dtype, device=model.device) for a in (train, val)
    )
    return train_t, val_t, train_idx, val_idx


def batches(n: int, batch_size: int, rng: torch.Generator, device: torch.device) -> tuple:
    """Shuffled index tensors for one epoch; the last batch may be shorter."""
    return torch.randperm(n, generator=rng).to(device).split(batch_size)


def all_finite(losses: Sequence[Tensor], params: Sequence[nn.Parameter]) -> bool:
    """Whether every loss and every gradient norm is finite (a step is skipped otherwise)."""
    grads = [p.grad for p in params if p.grad is not None]
    norms = torch.stack([*(loss.detach().reshape(()) for loss in losses),
                         *torch._foreach_norm(grads)])
    return bool(torch.isfinite(norms).all())


def params_finite(model: nn.Module) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in model.parameters())


def warn_diverged(epoch: int, kept: str) -> None:
    warnings.warn(
        f"training diverged at epoch {epoch} (non-finite loss or gradient for {MAX_BAD_STEPS} "
        f"steps in a row); keeping {kept}",
        RuntimeWarning,
        stacklevel=3,
    )


def check_nonnegative(value: float, name: str) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not (math.isfinite(value) and value >= 0)
    ):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)
