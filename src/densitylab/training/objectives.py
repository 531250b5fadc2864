"""Objectives: what a model minimises, how it is validated, and which weights are kept.

The driver and the autograd engine are the same for every model; an objective supplies the
per-point loss of a batch (a flow's negative log-likelihood, the VAE's negative ELBO) or a whole
step (the GAN's two-player update). Flow objectives are registered by name in ``OBJECTIVES``;
a new objective is a subclass in its own module plus one entry there.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import torch
from torch import Tensor, nn

from densitylab import distributed as distributed_
from densitylab.training.result import History


class Objective(ABC):
    """What a model minimises: one update on a batch, the validation score, which weights are
    kept and the progress text; ``engine`` below is the
    :class:`~densitylab.training.autograd.TorchEngine` running the step."""

    train_columns: tuple[str, ...] = ("train_nll",)
    val_column = "val_nll"
    keep_best = True  # keep the best validation epoch (else: the last with finite weights)
    betas = (0.9, 0.999)  # Adam's

    def seed(self, seeds: list[int]) -> None:
        """Seed whatever noise the objective draws from the run's seeds (one per model);
        objectives that draw none ignore them."""
        del seeds  # nothing to seed

    def parameter_groups(self, model: nn.Module) -> list[list[nn.Parameter]]:
        """Parameters updated together by one Adam; one group unless a game needs more."""
        return [[p for p in model.parameters() if p.requires_grad]]

    @abstractmethod
    def train_step(self, engine, batch: Tensor) -> Tensor:
        """One update on a batch ``(M, b, D)``; returns the step's training columns,
        ``(M, k)``."""

    @abstractmethod
    def validate(self, engine) -> Tensor:
        """Per-model validation score ``(M,)``, lower is better."""

    def label(self, history: History) -> str:
        """The progress bar's text after an epoch."""
        return f"train {history.train_nll[-1]:.4f}  val {history.val_nll[-1]:.4f}"


class Likelihood(Objective):
    """A likelihood-style objective: minimise the mean per-point loss, keep the weights with
    the lowest validation loss. Subclasses define :meth:`point_losses`."""

    @abstractmethod
    def point_losses(self, model: nn.Module, batch: Tensor) -> Tensor:
        """Differentiable loss of every point, ``(M, b)``, for a batch ``(M, b, D)``."""

    def val_point_losses(self, model: nn.Module, points: Tensor) -> Tensor:
        """The validation loss of every point; by default the training loss."""
        return self.point_losses(model, points)

    def train_step(self, engine, batch: Tensor) -> Tensor:
        loss, reported = engine.batch_mean(self.point_losses(engine.forward_model, batch))
        engine.descend(loss, reported)
        return reported.unsqueeze(1)

    def validate(self, engine) -> Tensor:
        """Per-model validation loss (``inf`` where not finite)."""
        loss = engine.mean_over_validation(lambda x: self.val_point_losses(engine.model, x))
        return torch.nan_to_num(loss, nan=math.inf)


class NLL(Likelihood):
    """A flow's negative log-likelihood, ``-log p(x)``, or ``-log p(x | c)`` for a conditional
    flow, whose rows are ``[x | c]``: maximum likelihood."""

    def point_losses(self, model: nn.Module, batch: Tensor) -> Tensor:
        return -model(batch)


class WeightedNLL(Likelihood):
    """The weighted negative log-likelihood ``-w log p(x)`` of rows ``[x | w]`` (the weight
    is the last column; for a conditional flow, ``[x | c | w]``): with weights of mean 1 over
    the data, a batch's mean is an unbiased estimate of the mean NLL of the data with each row
    repeated ``w`` times, and exactly that mean where the batch's weights sum to its size. A
    point of weight 0 adds nothing; validation is weighted alike."""

    def point_losses(self, model: nn.Module, batch: Tensor) -> Tensor:
        return -model(batch[..., :-1]) * batch[..., -1]


class DequantizedNLL(Objective):
    """The negative dequantized lower bound on ``log P(x)`` of integer images (rows of pixel
    values): ``-(log p(x + u) - log q(u | x))`` with ``u`` drawn by the model's dequantizer
    (see :mod:`densitylab.flows.dequantization`), one draw per image and step. The noise comes
    from a generator seeded by the run; validation uses the same draws every epoch, so epochs
    are compared on equal terms. Noise is drawn for the whole batch and sharded like it, so
    data-parallel training draws what one process would."""

    def __init__(self) -> None:
        self.seed([0])

    def seed(self, seeds: list[int]) -> None:
        self._seed = int(seeds[0])
        self.generator = torch.Generator().manual_seed(self._seed)

    @staticmethod
    def _noise(engine, shape: tuple[int, ...], generator: torch.Generator) -> Tensor:
        """Base noise for the global rows of ``shape``, this process's shard of it."""
        return distributed_.shard(engine.model.dequantizer.noise(shape, generator), dim=1)

    def train_step(self, engine, batch: Tensor) -> Tensor:
        """One Adam step on the mean negative bound of the batch's images."""
        m, _, d = batch.shape
        noise = self._noise(engine, (m, engine.global_batch_size, d), self.generator)
        loss, reported = engine.batch_mean(-engine.forward_model(batch, noise))
        engine.descend(loss, reported)
        return reported.unsqueeze(1)

    def validate(self, engine) -> Tensor:
        """Mean negative bound over the validation images, with the same draws every epoch."""
        noise = self._noise(engine, tuple(engine.x_val.shape),
                            torch.Generator().manual_seed(self._seed + 1))
        loss = engine.mean_over_validation(lambda x: -engine.model(x, noise))
        return torch.nan_to_num(loss, nan=math.inf)


OBJECTIVES: dict[str, type[Objective]] = {"nll": NLL, "weighted-nll": WeightedNLL,
                                          "dequantized": DequantizedNLL}


def objective_named(name: str) -> Objective:
    if name not in OBJECTIVES:
        raise ValueError(f"unknown objective {name!r}; choose one of {sorted(OBJECTIVES)}")
    return OBJECTIVES[name]()
