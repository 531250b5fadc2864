"""THE training loop. Every model and engine of densitylab trains here.

The driver owns what is the same for all of them: epochs, the batch order, the divergence
guard, early stopping, the kept weights (best validation loss, or last finite), the moving
average of the weights, history, progress, interruption and checkpoints. An *engine* runs
the batches of one epoch (autograd, the compiled RealNVP epoch, the NumPy teaching flow) and
an *objective* says what is minimised (see :mod:`densitylab.training.objectives`). State per
model is an array of length ``M``: stacked models train side by side, each by its own rules.

An engine provides ``name`` (recorded in checkpoints), ``n_models``, ``bad_steps``
(consecutive non-finite steps per model), ``train_epoch(order, step, total_steps, active)``
(per-model sums of the objective's training columns; models not ``active`` have stopped: an
engine may skip them, the driver ignores them from then on, so each model gets the result it
would get alone), ``validate()``, ``weights()``, ``weights_finite()``, ``state()`` /
``load_state()`` (arrays with a leading model dimension) and ``optimizer_state()`` /
``load_optimizer_state()``.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from typing import Any

import numpy as np
import torch

from densitylab import distributed as distributed_
from densitylab.runtime import progress_enabled
from densitylab.training.checkpoint import Checkpoint
from densitylab.training.data import TrainingData
from densitylab.training.objectives import Objective
from densitylab.training.options import MAX_BAD_STEPS, Options
from densitylab.training.progress import progress_bar
from densitylab.training.result import FitResult, History


def train(
    engine, objective: Objective, options: Options, seeds: list[int], data: TrainingData,
    config: Any, *, verbose: bool | None = None, checkpoint=None, checkpoint_every: int = 25,
    resume: bool = False,
) -> Driver:
    """Run ``engine`` on ``data`` until done; the returned driver holds the histories and the
    kept weights are in the engine. ``checkpoint`` is a directory for the run's state (every
    ``checkpoint_every`` epochs), continued from with ``resume``. Under data-parallel
    training only the first process shows progress and writes checkpoints."""
    driver = Driver(engine, objective, options, seeds, n_train=data.train.shape[1])
    saver = None
    if checkpoint is not None:
        fingerprint = driver.fingerprint([data.train, data.val], config)
        saver = Checkpoint(checkpoint, checkpoint_every, fingerprint)
        if resume and saver.exists():
            saver.restore(driver)
    main = distributed_.is_main_process()
    driver.run(progress_enabled(verbose) and main, saver, writes=main)
    return driver


class Driver:
    """One run: an engine, an objective, options and one seed per model."""

    def __init__(self, engine, objective: Objective, options: Options, seeds: list[int],
                 n_train: int) -> None:
        self.engine, self.objective, self.options = engine, objective, options
        self.n_models = m = engine.n_models
        self.n_train = n_train
        self.generators = [torch.Generator().manual_seed(int(s)) for s in seeds]
        columns = (*objective.train_columns, objective.val_column, *objective.extra_columns)
        self.histories = [History.of(columns) for _ in range(m)]
        self.best_val = np.full(m, math.inf)
        self.best_epoch = [0] * m
        self.best_state = _copy(engine.state())
        self.stop_reason = ["completed"] * m
        self.wall_time = 0.0
        self.epoch = self.step = 0  # completed so far; a resumed run starts after them
        self.averaged: list[Any] | None = None  # moving average of the weights (option ema)

    def fingerprint(self, data: list[np.ndarray], config: Any) -> str:
        """Identifies the data, model shape and options a checkpoint belongs to; not the
        number of epochs, so a resumed run may be given a larger budget."""
        digest = hashlib.sha256()
        for array in data:
            digest.update(np.ascontiguousarray(array).tobytes())
        options = asdict(self.options) | {"epochs": None}
        digest.update(json.dumps([options, config], default=str).encode())
        return digest.hexdigest()

    def run(self, show_progress: bool = False, checkpoint=None, writes: bool = True) -> None:
        """Train until the budget is spent or every model has stopped; then put the kept
        weights in the engine. Ctrl-C stops early, keeping the best weights so far."""
        options, m = self.options, self.n_models
        n_batches = math.ceil(self.n_train / options.batch_size)
        total_steps = options.epochs * n_batches
        active = np.ones(m, dtype=bool)
        if self.epoch:  # resumed: models that had stopped stay stopped
            active &= ~self._stopped(self.epoch)
        start = time.perf_counter() - self.wall_time
        label = self.objective.label
        with progress_bar(show_progress, options.epochs, m, label) as advance:
            try:
                for epoch in range(self.epoch + 1, options.epochs + 1):
                    if not active.any():
                        break
                    sums = self.engine.train_epoch(self._order(), self.step, total_steps,
                                                   active)
                    self.step += n_batches
                    with self._averaged_weights():
                        val = self.engine.validate()
                        extras = self.objective.extras(self.engine)
                        self._keep(val, epoch, active)
                    self.wall_time = time.perf_counter() - start
                    for k in np.flatnonzero(active):
                        train = dict(zip(self.objective.train_columns, sums[k] / n_batches,
                                         strict=True))
                        self.histories[k].append({**train, self.objective.val_column: val[k],
                                                  **{c: v[k] for c, v in extras.items()}},
                                                 self.wall_time)
                    self.epoch = epoch
                    active &= ~self._stopped(epoch)
                    advance(epoch, self.histories)
                    if checkpoint and epoch % checkpoint.every == 0 and writes:
                        checkpoint.save(self)
            except KeyboardInterrupt:  # resume restarts from the last periodic checkpoint
                self.stop_reason = ["interrupted"] * m
                warnings.warn("training interrupted: keeping the best model so far",
                              stacklevel=3)
        self.wall_time = time.perf_counter() - start
        self.final_state = _copy(self.engine.state())  # the last epoch's weights, for reports
        self.engine.load_state(self.best_state)

    def results(self, models: list[Any], splits) -> list[FitResult]:
        """One result per model, given the trained models one by one."""
        return [
            FitResult(
                model=model,
                history=self.histories[k],
                best_epoch=self.best_epoch[k],
                best_val_loss=float(self.best_val[k]),
                wall_time=self.wall_time,
                stop_reason=self.stop_reason[k],
                train_indices=splits[k][0],
                val_indices=splits[k][1],
            )
            for k, model in enumerate(models)
        ]

    # -- the rules ---------------------------------------------------------------------------
    def _order(self) -> torch.Tensor:
        """This epoch's shuffled point order per model, ``(M, n)``, from the models' seeds."""
        return torch.stack([torch.randperm(self.n_train, generator=g) for g in self.generators])

    def _keep(self, val: np.ndarray, epoch: int, active: np.ndarray) -> None:
        """Copy the weights of active models that improved (lower validation loss; or, for an
        objective that keeps the last finite weights, whose weights are finite)."""
        if self.objective.keep_best:
            improved = val < self.best_val
        else:
            improved = self.engine.weights_finite()
        improved &= active
        if not improved.any():
            return
        self.best_val = np.where(improved, val, self.best_val)
        for k in np.flatnonzero(improved):
            self.best_epoch[k] = epoch
        for key, value in self.engine.state().items():
            _copy_rows(self.best_state, key, value, improved)

    def _stopped(self, epoch: int) -> np.ndarray:
        """Models that should stop now: persistently diverged, or out of patience."""
        stopped = np.zeros(self.n_models, dtype=bool)
        for k in range(self.n_models):
            if self.stop_reason[k] != "completed":
                stopped[k] = True
            elif self.engine.bad_steps[k] >= MAX_BAD_STEPS:
                self.stop_reason[k] = "diverged"
                kept = (f"the best model, from epoch {self.best_epoch[k]}" if self.best_epoch[k]
                        else "the initial parameters (no finite epoch)")
                warnings.warn(
                    f"training diverged at epoch {epoch} (non-finite loss or gradient for "
                    f"{MAX_BAD_STEPS} steps in a row); keeping {kept}",
                    RuntimeWarning,
                    stacklevel=4,
                )
                stopped[k] = True
            elif (self.objective.keep_best and self.options.patience
                  and epoch - self.best_epoch[k] >= self.options.patience):
                self.stop_reason[k] = "early-stopping"
                stopped[k] = True
        return stopped

    @contextmanager
    def _averaged_weights(self) -> Iterator[None]:
        """With ``ema``: update the weights' moving average and put it in the model for the
        duration (validation and best-model bookkeeping), then restore the training weights."""
        decay = self.options.ema
        if decay is None:
            yield
            return
        weights = self.engine.weights()
        with torch.no_grad():
            if self.averaged is None:  # starts from the first epoch's weights, not the init
                self.averaged = [_clone(w) for w in weights]
            else:
                for average, w in zip(self.averaged, weights, strict=True):
                    average += (1.0 - decay) * (w - average)
            training = [_clone(w) for w in weights]
            for w, average in zip(weights, self.averaged, strict=True):
                w[...] = average
        try:
            yield
        finally:
            with torch.no_grad():
                for w, saved in zip(weights, training, strict=True):
                    w[...] = saved


def _clone(value):
    return value.detach().clone() if isinstance(value, torch.Tensor) else value.copy()


def _copy(state: dict[str, Any]) -> dict[str, Any]:
    return {key: _clone(value) for key, value in state.items()}


def _copy_rows(state: dict[str, Any], key: str, value, models: np.ndarray) -> None:
    """``state[key][models] = value[models]`` with rows grouped by model (model-major)."""
    if value.ndim == 0:
        state[key] = _clone(value)
        return
    rows, target = value.reshape(len(models), -1), state[key].reshape(len(models), -1)
    mask = torch.from_numpy(models).to(value.device) if isinstance(value, torch.Tensor) else models
    target[mask] = rows[mask]
