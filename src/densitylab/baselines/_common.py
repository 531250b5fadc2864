"""Pieces shared by the VAE and the GAN: seeded MLPs, input checks, standardisation buffers,
and training on the one driver."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence

import numpy as np
import torch
from numpy.typing import ArrayLike
from torch import Tensor, nn

from densitylab._validation import check_positive_int, check_widths, column_statistics
from densitylab.flows.nets import check_activation
from densitylab.flows.transforms import as_input
from densitylab.runtime import torch_threads
from densitylab.training import FitResult, Options
from densitylab.training.autograd import TorchEngine
from densitylab.training.data import prepare, seeds_of
from densitylab.training.driver import train
from densitylab.training.objectives import Objective

Seed = int | torch.Generator | None


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
        return as_input(x, self.loc, self.dim, beyond_range, stacked=False)

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


class LatentVariableModel(StandardizedModel, ABC):
    """Base of the VAE and the GAN: a ``latent_dim``-dimensional standard-normal latent
    variable and MLPs of ``hidden`` widths (``()``: linear maps) with ``activation``,
    initialised from ``seed``. Subclasses build their networks in :meth:`_build`."""

    def __init__(
        self,
        dim: int,
        latent_dim: int = 2,
        hidden: Sequence[int] = (64, 64),
        activation: str = "leaky_relu",
        seed: int = 0,
    ) -> None:
        super().__init__(dim)
        self.latent_dim = check_positive_int(latent_dim, "latent_dim")
        widths = check_widths(hidden, allow_empty=True)
        self._build(widths, activation, torch.Generator().manual_seed(check_seed(seed)))
        self.config = {"dim": self.dim, "latent_dim": self.latent_dim, "hidden": list(widths),
                       "activation": activation, "seed": int(seed)}

    @abstractmethod
    def _build(self, widths: tuple[int, ...], activation: str, rng: torch.Generator) -> None:
        """Create the networks (``hidden`` widths, ``activation``, initialised from ``rng``)."""


def fit_baseline(
    model: StandardizedModel, objective: Objective, x: ArrayLike, x_val: ArrayLike | None,
    options: Options, seed: int, *, standardize: bool, threads: int | None,
    verbose: bool | None,
) -> FitResult:
    """Train a baseline in place with the training driver (the split, batches, divergence
    guard and kept weights of :func:`densitylab.fit`); ``standardize`` first fits the model's
    ``loc`` / ``scale`` to the training points."""
    seeds = seeds_of(seed, 1)
    data = prepare(x, x_val, n_models=1, dim=model.dim, val_fraction=options.val_fraction,
                   seeds=seeds)
    x_train = torch.as_tensor(data.train, dtype=model.dtype, device=model.device)
    x_valid = torch.as_tensor(data.val, dtype=model.dtype, device=model.device)
    if standardize:
        model._fit_standardization(x_train[0])
    with torch_threads(threads):
        engine = TorchEngine(model, objective, x_train, x_valid, options)
        driver = train(engine, objective, options, seeds, data, model.config, verbose=verbose)
    model.eval()
    return driver.results([model], data.splits)[0]


def check_nonnegative(value: float, name: str) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not (math.isfinite(value) and value >= 0)
    ):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)
