"""Objectives: what a model minimises, how it is validated, and which weights are kept.

The driver and the autograd engine are the same for every model; an objective supplies the
per-point loss of a batch (a flow's negative log-likelihood, the VAE's negative ELBO) or a whole
step (the GAN's two-player update). Flow objectives are registered by name in ``OBJECTIVES``;
a new objective is a subclass in its own module plus one entry there.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from densitylab import distributed as distributed_
from densitylab.flows import function_evaluations
from densitylab.training.result import History


class Objective(ABC):
    """What a model minimises: one update on a batch, the validation score, which weights are
    kept and the progress text; ``engine`` below is the
    :class:`~densitylab.training.autograd.TorchEngine` running the step."""

    train_columns: tuple[str, ...] = ("train_nll",)
    val_column = "val_nll"
    extra_columns: tuple[str, ...] = ()  # measured after validation, see :meth:`extras`
    keep_best = True  # keep the best validation epoch (else: the last with finite weights)
    betas = (0.9, 0.999)  # Adam's

    def __init__(self, seeds: Sequence[int] = (0,), model: nn.Module | None = None) -> None:
        """How the registry builds an objective: one seed per stacked model (for objectives
        that draw noise) and the stacked model (for those that read its architecture)."""
        self.seeds = [int(s) for s in seeds]

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

    def extras(self, engine) -> dict[str, np.ndarray]:
        """Per-model values ``(M,)`` of :attr:`extra_columns` after an epoch's validation
        (e.g. a continuous flow's function evaluations); none by default."""
        return {}

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


class EvaluationCount:
    """Function evaluations (NFE) of a continuous flow's vector field per training step and per
    validation pass, as history columns ``train_nfe`` and ``val_nfe``; nothing for a model
    without a continuous transform."""

    def __init__(self, model: nn.Module | None) -> None:
        self.counted = model is not None and function_evaluations(model) is not None
        self.validation = 0

    def columns(self, train: tuple[str, ...]) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """The training and extra columns, with the counts where the model has any."""
        return ((*train, "train_nfe"), ("val_nfe",)) if self.counted else (train, ())

    def step(self, model: nn.Module, run) -> Tensor:
        """``run()``'s ``(M, k)`` columns, with the evaluations it made beside them."""
        before = function_evaluations(model) if self.counted else 0
        columns = run()
        if not self.counted:
            return columns
        made = function_evaluations(model) - before
        return torch.cat([columns, torch.full_like(columns[:, :1], made)], dim=1)

    def validate(self, model: nn.Module, run) -> Tensor:
        before = function_evaluations(model) if self.counted else 0
        scores = run()
        if self.counted:
            self.validation = function_evaluations(model) - before
        return scores

    def extras(self, n_models: int) -> dict[str, np.ndarray]:
        return {"val_nfe": np.full(n_models, float(self.validation))} if self.counted else {}


class NLL(Likelihood):
    """A flow's negative log-likelihood, ``-log p(x)``, or ``-log p(x | c)`` for a conditional
    flow, whose rows are ``[x | c]``: maximum likelihood. For a continuous flow the likelihood
    is solved through the ODE (FFJORD) and the history counts the solver's function
    evaluations."""

    def __init__(self, seeds: Sequence[int] = (0,), model: nn.Module | None = None) -> None:
        super().__init__(seeds, model)
        self.count = EvaluationCount(model)
        self.train_columns, self.extra_columns = self.count.columns(("train_nll",))

    def point_losses(self, model: nn.Module, batch: Tensor) -> Tensor:
        return -model(batch)

    def train_step(self, engine, batch: Tensor) -> Tensor:
        return self.count.step(engine.model, lambda: super(NLL, self).train_step(engine, batch))

    def validate(self, engine) -> Tensor:
        return self.count.validate(engine.model, lambda: super(NLL, self).validate(engine))

    def extras(self, engine) -> dict[str, np.ndarray]:
        return self.count.extras(engine.n_models)


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

    def __init__(self, seeds: Sequence[int] = (0,), model: nn.Module | None = None) -> None:
        super().__init__(seeds, model)
        self._seed = self.seeds[0]
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
"""Flow objectives by name; each is built as ``cls(seeds, model)`` (one seed per stacked
model, and the stacked model, for objectives that draw noise or read the architecture)."""


def objective_named(name: str, seeds: Sequence[int] = (0,),
                    model: nn.Module | None = None) -> Objective:
    if name not in OBJECTIVES:
        raise ValueError(f"unknown objective {name!r}; choose one of {sorted(OBJECTIVES)}")
    return OBJECTIVES[name](seeds, model)
