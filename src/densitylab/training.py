"""Maximum-likelihood fitting of flows: one flow (:func:`fit`) or many at once (:func:`fit_many`).

Both run the same loop. ``fit_many`` stacks M flows of one architecture into a single batched
model (every parameter has a leading model dimension), so one optimiser step updates all of
them; the loss is the *sum* of the per-model mean NLLs, which gives every model exactly the
gradient it would get alone, and Adam is element-wise, so each model follows its own
trajectory. Data stay in tensors: a batch is an index into them, never a per-sample loader.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from numpy.typing import ArrayLike
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

from densitylab import distributed as distributed_
from densitylab._devices import resolve_device
from densitylab._files import atomic_directory
from densitylab._validation import as_points, check_positive_float, check_positive_int
from densitylab.flows import Flow, compiled, compiled_spline, stack, standardized, unstack

SCHEDULES = (None, "cosine")
MAX_BAD_STEPS = 20  # consecutive non-finite steps before a model is declared diverged


@dataclass
class History:
    """Per-epoch record of one model: mean train NLL, validation NLL, cumulative seconds."""

    train_nll: list[float] = field(default_factory=list)
    val_nll: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)

    def rows(self) -> Iterator[dict[str, float]]:
        """One dict per epoch (epoch counted from 1), e.g. for ``history.csv``."""
        columns = zip(self.train_nll, self.val_nll, self.seconds, strict=True)
        for epoch, (train, val, seconds) in enumerate(columns, 1):
            yield {"epoch": epoch, "train_nll": train, "val_nll": val, "seconds": seconds}


@dataclass
class FitResult:
    """What :func:`fit` returns: the best model by validation NLL and how training went."""

    flow: Flow
    history: History
    best_epoch: int
    best_val_nll: float
    wall_time: float
    stop_reason: str  # "completed", "early-stopping", "diverged" or "interrupted"
    train_indices: np.ndarray
    val_indices: np.ndarray

    @property
    def epochs_run(self) -> int:
        return len(self.history.train_nll)


def fit(
    flow: Flow,
    x: ArrayLike,
    *,
    context: ArrayLike | None = None,
    context_val: ArrayLike | None = None,
    epochs: int = 1000,
    batch_size: int = 64,
    lr: float = 1e-3,
    val_fraction: float = 0.1,
    x_val: ArrayLike | None = None,
    seed: int = 8,
    patience: int | None = None,
    clip_grad: float | None = None,
    schedule: str | None = None,
    ema: float | None = None,
    standardize: bool = False,
    threads: int | None = 1,
    verbose: bool | None = None,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: int = 25,
    resume: bool = False,
    engine: str = "auto",
    device: str | torch.device | None = None,
    distributed: bool = False,
) -> FitResult:
    """Fit ``flow`` to data ``x`` of shape ``(n, D)`` by minimising the NLL with Adam.

    Args:
        context: for a conditional flow (built with ``context=C``), the ``(n, C)`` conditioning
            values beside ``x``, one row per point: it then learns ``p(x | c)``. The rows of
            ``x`` and ``context`` are split and batched together.
        context_val: the context of ``x_val``.
        epochs: passes over the training data (the optimisation budget).
        batch_size: points per Adam step; batches are shuffled every epoch.
        lr: Adam's learning rate (the peak rate under ``schedule="cosine"``).
        val_fraction: part of ``x`` held out for validation, split by ``seed``; ignored
            when ``x_val`` is given. The model kept is the one with the lowest validation NLL.
        seed: seeds the split and the batch order; the same seed gives the same result.
        patience: stop after this many epochs without a better validation NLL.
        clip_grad: clip the gradient norm (per model) to this value.
        schedule: ``None`` (constant ``lr``) or ``"cosine"`` (annealed to 0 over training).
        ema: keep an exponential moving average of the weights, updated after every epoch
            with this decay (e.g. ``0.9``: roughly the last ten epochs); validation, the
            best-model rule and the returned model then use the averaged weights, which
            smooths out the noise of small-batch Adam steps.
        standardize: put a fitted :class:`~densitylab.flows.Standardize` in front of the flow,
            so it learns on standardised data while densities stay in the user's units.
        threads: torch threads while training (restored afterwards). One thread is fastest
            for small flows and immune to oversubscription on a busy machine; ``None`` keeps
            torch's setting.
        verbose: progress bar; by default only when stderr is a terminal.
        checkpoint: a directory where the full training state is saved every
            ``checkpoint_every`` epochs. Ctrl-C stops training and returns the best model
            so far; ``resume`` then continues from the last checkpoint.
        resume: continue from ``checkpoint`` if it exists; the data and options must match.
        engine: ``"torch"`` (autograd, any flow, any device), ``"compiled"`` (a numba-compiled
            epoch with hand-derived gradients for RealNVP flows, in float64, and for spline
            flows, in the flow's precision, on the CPU: the same model, batches and
            Adam updates, several times faster), or ``"auto"``: compiled where supported and
            faster (RealNVP: small networks, at most 4 models trained together, since it runs
            stacked models one by one; spline flows: always), else torch.
        device: ``"cpu"``, ``"cuda"`` or ``"auto"`` (CUDA when available); ``None`` keeps the
            flow where it is. Model, data batches and the returned flow live there.
        distributed: data-parallel training over the processes of a running
            ``torch.distributed`` process group (see :mod:`densitylab.distributed`; launch with
            torchrun). Every process passes the same data and seed and gets the same result,
            the one a single process would get, up to float rounding; only rank 0 shows
            progress and writes checkpoints. Uses the torch engine.

    Example:
        >>> import densitylab as dl
        >>> moons = dl.datasets.get("moons")
        >>> x, x_test = moons.sample(500, seed=0), moons.sample(100, seed=1)
        >>> result = fit(dl.flows.realnvp(dim=2), x, epochs=3, seed=0, verbose=False)
        >>> result.flow.log_prob(x_test).shape      # exact log p(x), a torch tensor
        torch.Size([100])
    """
    return fit_many(
        [flow], x, context=context, context_val=context_val, epochs=epochs,
        batch_size=batch_size, lr=lr, val_fraction=val_fraction,
        x_val=x_val, seed=seed, patience=patience, clip_grad=clip_grad, schedule=schedule, ema=ema,
        standardize=standardize, threads=threads, verbose=verbose, checkpoint=checkpoint,
        checkpoint_every=checkpoint_every, resume=resume, engine=engine, device=device,
        distributed=distributed,
    )[0]


def fit_many(
    flows: Sequence[Flow],
    x: ArrayLike,
    *,
    context: ArrayLike | None = None,
    context_val: ArrayLike | None = None,
    epochs: int = 1000,
    batch_size: int = 64,
    lr: float = 1e-3,
    val_fraction: float = 0.1,
    x_val: ArrayLike | None = None,
    seed: int | Sequence[int] = 8,
    patience: int | None = None,
    clip_grad: float | None = None,
    schedule: str | None = None,
    ema: float | None = None,
    standardize: bool = False,
    threads: int | None = 1,
    verbose: bool | None = None,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: int = 25,
    resume: bool = False,
    engine: str = "auto",
    device: str | torch.device | None = None,
    distributed: bool = False,
) -> list[FitResult]:
    """Fit M flows of one architecture in one vectorised computation.

    ``x`` is one data set ``(n, D)`` shared by all flows or a sequence of M data sets of equal
    size; ``seed`` is one seed or one per flow. Each flow gets the result :func:`fit` would
    give it alone with the same data and seed, up to float rounding. Arguments as in :func:`fit`.
    """
    n_models = len(flows)
    if n_models == 0:
        raise ValueError("fit_many needs at least one flow")
    options = _check_options(
        epochs, batch_size, lr, val_fraction, patience, clip_grad, schedule, ema
    )
    check_positive_int(checkpoint_every, "checkpoint_every")
    seeds = [seed] * n_models if isinstance(seed, int | np.integer) else list(seed)
    if len(seeds) != n_models:
        raise ValueError(f"got {len(seeds)} seeds for {n_models} flows")
    dim = flows[0].dim + flows[0].context_features  # rows [x | c] for a conditional flow
    x, x_val = _with_context(flows[0], x, context), _with_context(flows[0], x_val, context_val)
    data = _per_model(x, n_models, dim, "x")
    splits = [_split(len(d), val_fraction, s) for d, s in zip(data, seeds, strict=True)]
    if x_val is None:
        train = [d[t] for d, (t, _) in zip(data, splits, strict=True)]
        val = [d[v] for d, (_, v) in zip(data, splits, strict=True)]
    else:
        splits = [(np.arange(len(d)), np.arange(0)) for d in data]
        train, val = data, _per_model(x_val, n_models, dim, "x_val")
    if len({len(t) for t in train}) != 1 or len({len(v) for v in val}) != 1:
        raise ValueError("fit_many needs data sets of equal size; fit them separately")

    if distributed and not distributed_.is_initialized():
        raise ValueError(
            "distributed=True needs a running process group: launch with torchrun and train "
            "inside `with densitylab.distributed.process_group(): ...`"
        )
    model = stack([standardized(f) if standardize else f for f in flows])
    if device is not None:
        model = model.to(resolve_device(device, distributed))
    x_train = torch.as_tensor(np.stack(train), dtype=model.dtype, device=model.device)
    x_valid = torch.as_tensor(np.stack(val), dtype=model.dtype, device=model.device)
    if standardize:
        model.transforms[0].fit(x_train[..., : model.dim])

    with torch_threads(threads):
        fast = _use_compiled(engine, model, distributed, options.batch_size)
        loop = _Loop(model, x_train, x_valid, seeds, options, fast, distributed)
        if checkpoint is not None:
            loop.checkpoint = _Checkpoint(Path(checkpoint), checkpoint_every)
            if resume and loop.checkpoint.exists():
                loop.checkpoint.restore(loop)
        loop.run(_progress_enabled(verbose) and distributed_.is_main_process())
    return loop.results(splits)


@dataclass(frozen=True)
class _Options:
    epochs: int
    batch_size: int
    lr: float
    patience: int | None
    clip_grad: float | None
    schedule: str | None
    ema: float | None = None


def _check_options(
    epochs, batch_size, lr, val_fraction, patience, clip_grad, schedule, ema=None
) -> _Options:
    check_positive_int(epochs, "epochs")
    check_positive_int(batch_size, "batch_size")
    lr = check_positive_float(lr, "lr")
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must lie strictly between 0 and 1, got {val_fraction!r}")
    if patience is not None:
        check_positive_int(patience, "patience")
    if clip_grad is not None and not clip_grad > 0:
        raise ValueError(f"clip_grad must be positive, got {clip_grad!r}")
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; choose one of {list(SCHEDULES)}")
    if ema is not None and not 0 <= ema < 1:
        raise ValueError(f"ema must lie in [0, 1), got {ema!r}")
    return _Options(epochs, batch_size, lr, patience, clip_grad, schedule, ema)


def _with_context(flow: Flow, x: ArrayLike | None, context: ArrayLike | None):
    """``x``, or the rows ``[x | context]`` a conditional flow trains on (per data set when
    ``x`` is a sequence); a clear error where the context is missing or does not fit."""
    if x is None or not flow.context_features:
        if context is not None:
            raise ValueError("context was given but this flow is not conditional (build it "
                             "with context=C)")
        return x
    if context is None:
        raise ValueError(f"this flow is conditional: pass context= with "
                         f"{flow.context_features} column(s), one row per point")
    if isinstance(x, list | tuple):
        return [_with_context(flow, part, c) for part, c in zip(x, context, strict=True)]
    points = as_points(x, name="x", dim=flow.dim)
    given = as_points(context, name="context", dim=flow.context_features)
    if len(points) != len(given):
        raise ValueError(f"context has {len(given)} rows for {len(points)} points")
    return np.hstack([points, given])


def _per_model(x, n_models: int, dim: int, name: str) -> list[np.ndarray]:
    """One float64 ``(n, dim)`` array per model from a shared array or a sequence of arrays."""
    if isinstance(x, list | tuple):
        if len(x) != n_models:
            raise ValueError(f"got {len(x)} data sets for {n_models} flows")
        return [as_points(d, name=f"{name}[{i}]", dim=dim, min_rows=2) for i, d in enumerate(x)]
    shared = as_points(x, name=name, dim=dim, min_rows=2)
    return [shared] * n_models


def _split(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Random train/validation index split; both parts get at least one point."""
    n_val = min(max(1, round(n * val_fraction)), n - 1)
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[n_val:]), np.sort(order[:n_val])


@contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run with ``threads`` intra-op threads, restoring the previous count afterwards."""
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(check_positive_int(threads, "threads"))
    try:
        yield
    finally:
        torch.set_num_threads(previous)


ENGINES = ("auto", "torch", "compiled")
AUTO_COMPILED_MAX_MODELS = 4
AUTO_COMPILED_MAX_UNITS = 256  # hidden units per s/t network
AUTO_COMPILED_MAX_BATCH_MACS = 300_000  # multiply-adds of one network over one batch


def _use_compiled(engine: str, model: Flow, distributed: bool, batch_size: int) -> bool:
    """Resolve ``engine`` for this model; ``"compiled"`` on an unsupported model is an error."""
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; choose one of {list(ENGINES)}")
    if engine == "compiled" and distributed:
        raise ValueError("distributed training uses the torch engine; use engine='auto' or 'torch'")
    if engine == "torch" or distributed:
        return False
    ok = (compiled.available() and (compiled.supports(model) or compiled_spline.supports(model))
          and model.device.type == "cpu" and not model.context_features)
    if engine == "compiled" and not ok:
        raise ValueError(
            "the compiled engine needs numba and an unconditional RealNVP flow (affine "
            "couplings with contiguous masks) or spline coupling flow on the CPU; use "
            "engine='torch'"
        )
    if engine == "compiled":
        return ok
    return ok and _compiled_is_faster(model, batch_size)


def _compiled_is_faster(model: Flow, batch_size: int) -> bool:
    """Measured on one thread (``benchmarks/RESULTS.md``): the compiled engine wins where
    per-operation overhead dominates, small networks on small batches; torch's float32
    kernels win for wide networks (512 units; 2 x 128), large batches (the (32, 32)
    coursework nets from about 1024 points, (64, 64) nets from 256), and five or more
    stacked models, since the compiled engine runs stacked models one after another.
    Spline flows: the compiled engine won every case measured (1.15x for (256, 256) networks
    on 16 columns in batches of 1024, 1.3x in batches of 4096, 2-5x elsewhere, 16 stacked
    models included), since torch spends most of a spline step in small elementwise
    operations."""
    if compiled_spline.supports(model):
        return True
    hidden = [int(h) for h in model.config.get("hidden", [])]
    widths = [model.dim, *hidden, model.dim]
    macs = sum(a * b for a, b in zip(widths, widths[1:], strict=False))
    return (
        model.n_models <= AUTO_COMPILED_MAX_MODELS
        and sum(hidden) <= AUTO_COMPILED_MAX_UNITS
        and batch_size * macs <= AUTO_COMPILED_MAX_BATCH_MACS
    )


def _progress_enabled(verbose: bool | None) -> bool:
    return sys.stderr.isatty() if verbose is None else verbose


class _Loop:
    """The training loop over a stacked model; state per model is a tensor of length M."""

    def __init__(
        self, model: Flow, x_train: Tensor, x_val: Tensor, seeds, options: _Options, fast: bool,
        distributed: bool = False,
    ):
        self.model, self.x_train, self.x_val, self.options = model, x_train, x_val, options
        # data-parallel: gradients are averaged over processes by DDP (parameters are
        # broadcast from rank 0 on construction); None trains in this process alone
        self.ddp = _data_parallel(model) if distributed else None
        self.n_models = model.n_models
        self.generators = [torch.Generator().manual_seed(int(s)) for s in seeds]
        self.params = [p for p in model.parameters() if p.requires_grad]
        # fused Adam: one kernel per step instead of dozens of small ops (torch engine only)
        self.optimizer = None if fast else torch.optim.Adam(self.params, lr=options.lr, fused=True)
        self.histories = [History() for _ in range(self.n_models)]
        self.best_val = torch.full((self.n_models,), math.inf, dtype=torch.float64)
        self.best_epoch = [0] * self.n_models
        self.best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        self.bad_steps = torch.zeros(self.n_models, dtype=torch.long)
        self.stop_reason = ["completed"] * self.n_models
        self.wall_time = 0.0
        self.epoch = self.step = 0  # completed so far; a resumed run starts after them
        self.checkpoint: _Checkpoint | None = None
        self.fast = _CompiledEpochs(self) if fast else None
        self.writes = distributed_.is_main_process()  # only rank 0 writes checkpoints
        self.averaged: list[Tensor] | None = None  # moving average of params (option ema)

    def fingerprint(self) -> str:
        """Identifies the data, model shape and options a checkpoint belongs to."""
        digest = hashlib.sha256()
        for tensor in (self.x_train, self.x_val):
            digest.update(tensor.detach().cpu().numpy().tobytes())
        digest.update(json.dumps([asdict(self.options), self.model.config], default=str).encode())
        return digest.hexdigest()

    # -- one epoch ---------------------------------------------------------------------------
    def _batches(self) -> Tensor:
        """Shuffled batch indices ``(n_batches, M, batch)``; the last batch may be shorter."""
        n = self.x_train.shape[1]
        order = torch.stack([torch.randperm(n, generator=g) for g in self.generators])
        return order.to(self.x_train.device).split(self.options.batch_size, dim=1)

    def _train_epoch(self, total_steps: int) -> Tensor:
        """One pass over the training data; returns the per-model sum of batch NLLs."""
        if self.fast is not None:
            return self.fast.epoch(total_steps)
        train_sum = torch.zeros(self.n_models, dtype=torch.float64)
        for index in self._batches():
            train_sum += self._step(index, self.step, total_steps).double()
            self.step += 1
        return train_sum

    def _step(self, index: Tensor, step: int, total_steps: int) -> Tensor:
        """One Adam step on every model; returns the per-model batch NLL (detached)."""
        loss, nll = self._batch_loss(index)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        finite = self._finite(nll)
        if self.options.schedule == "cosine":
            for group in self.optimizer.param_groups:
                group["lr"] = self.options.lr * 0.5 * (1 + math.cos(math.pi * step / total_steps))
        if bool(finite.all()):
            self.optimizer.step()
            self.bad_steps.zero_()
        else:
            self._step_finite_models_only(finite)
        return nll

    def _gather(self, index: Tensor) -> Tensor:
        return self.x_train.gather(1, index.unsqueeze(-1).expand(-1, -1, self.x_train.shape[2]))

    def _batch_loss(self, index: Tensor) -> tuple[Tensor, Tensor]:
        """The loss to differentiate and the per-model NLL of the (global) batch, detached."""
        if self.ddp is None:
            nll = -self.model._log_prob(self._gather(index)).mean(dim=1)
            return nll.sum(), nll.detach()
        # Each process scores its shard; DDP averages gradients over the processes, so
        # scaling the shard's sum by world_size / batch gives the global batch mean's gradient.
        batch_size = index.shape[1]
        shard_sum = self.ddp(self._gather(distributed_.shard(index, dim=1))).sum(dim=1)
        loss = -shard_sum.sum() * (distributed_.world_size() / batch_size)
        return loss, distributed_.all_reduce_sum(-shard_sum.detach()) / batch_size

    def _per_model(self, tensor: Tensor) -> Tensor:
        """View a parameter-shaped tensor as ``(M, -1)``: rows are grouped by model."""
        return tensor.reshape(self.n_models, -1)

    def _finite(self, nll: Tensor) -> Tensor:
        """Models whose loss and gradient are finite; clips gradients per model if asked.

        The common case costs one fused norm over all gradients; per-model norms are only
        computed when clipping or when something is not finite.
        """
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in self.params]
        if self.options.clip_grad is None:
            total = torch.nn.utils.get_total_norm(grads, foreach=True)
            if bool(torch.isfinite(total)) and bool(torch.isfinite(nll).all()):
                return torch.ones(self.n_models, dtype=torch.bool)
        norms = sum(self._per_model(g).double().square().sum(dim=1) for g in grads).sqrt()
        if self.options.clip_grad is not None:
            factor = (self.options.clip_grad / (norms + 1e-6)).clamp(max=1.0)
            for g in grads:
                self._per_model(g).mul_(factor.to(g.dtype).unsqueeze(1))
        return torch.isfinite(nll).cpu() & torch.isfinite(norms).cpu()

    @torch.no_grad()
    def _step_finite_models_only(self, finite: Tensor) -> None:
        """Skip the update for models whose loss or gradient is not finite."""
        self.bad_steps = torch.where(finite, 0, self.bad_steps + 1)
        for p in self.params:
            if p.grad is not None:
                self._per_model(p.grad)[~finite] = 0.0
        saved = [self._per_model(p)[~finite].clone() for p in self.params]
        self.optimizer.step()
        for p, old in zip(self.params, saved, strict=True):
            self._per_model(p)[~finite] = old

    @torch.no_grad()
    def _validate(self) -> Tensor:
        """Per-model validation NLL; data-parallel, each process scores a shard."""
        self.model.eval()
        log_p = self.model._log_prob(distributed_.shard(self.x_val, dim=1)).double().sum(dim=1)
        nll = -distributed_.all_reduce_sum(log_p) / self.x_val.shape[1]
        self.model.train()
        return torch.nan_to_num(nll, nan=math.inf).cpu()

    @torch.no_grad()
    def _keep_best(self, val_nll: Tensor, epoch: int) -> None:
        improved = val_nll < self.best_val
        if not improved.any():
            return
        self.best_val = torch.where(improved, val_nll, self.best_val)
        for m in improved.nonzero().flatten().tolist():
            self.best_epoch[m] = epoch
        for key, value in self.model.state_dict().items():
            if value.dim() == 0:
                self.best_state[key] = value.clone()
            else:
                rows = self._per_model(self.best_state[key])
                rows[improved] = self._per_model(value)[improved]

    # -- the whole run -----------------------------------------------------------------------
    def run(self, show_progress: bool) -> None:
        options = self.options
        n_batches = math.ceil(self.x_train.shape[1] / options.batch_size)
        total_steps = options.epochs * n_batches
        active = torch.ones(self.n_models, dtype=torch.bool)
        if self.epoch:  # resumed: models that had stopped stay stopped
            active &= ~self._stopped(self.epoch)
        start = time.perf_counter() - self.wall_time
        self.model.train()
        with _progress(show_progress, options.epochs, self.n_models) as advance:
            try:
                for epoch in range(self.epoch + 1, options.epochs + 1):
                    if not active.any():
                        break
                    train_sum = self._train_epoch(total_steps)
                    with self._averaged_weights():
                        val_nll = self._validate()
                        self._keep_best(val_nll, epoch)
                    self.wall_time = time.perf_counter() - start
                    for m, history in enumerate(self.histories):
                        history.train_nll.append(float(train_sum[m]) / n_batches)
                        history.val_nll.append(float(val_nll[m]))
                        history.seconds.append(self.wall_time)
                    self.epoch = epoch
                    active &= ~self._stopped(epoch)
                    advance(epoch, self.histories)
                    if self.checkpoint and epoch % self.checkpoint.every == 0 and self.writes:
                        self.checkpoint.save(self)
            except KeyboardInterrupt:  # resume restarts from the last periodic checkpoint
                self.stop_reason = ["interrupted"] * self.n_models
                warnings.warn("training interrupted: keeping the best model so far", stacklevel=3)
        self.wall_time = time.perf_counter() - start
        self.model.load_state_dict(self.best_state)
        self.model.eval()

    @contextmanager
    def _averaged_weights(self) -> Iterator[None]:
        """With ``ema``: update the weights' moving average and put it in the model for the
        duration (validation and best-model bookkeeping), then restore the training weights."""
        decay = self.options.ema
        if decay is None:
            yield
            return
        with torch.no_grad():
            if self.averaged is None:  # starts from the first epoch's weights, not the init
                self.averaged = [p.detach().clone() for p in self.params]
            else:
                for average, p in zip(self.averaged, self.params, strict=True):
                    average.lerp_(p, 1.0 - decay)
            training = [p.detach().clone() for p in self.params]
            for p, average in zip(self.params, self.averaged, strict=True):
                p.copy_(average)
        try:
            yield
        finally:
            with torch.no_grad():
                for p, weights in zip(self.params, training, strict=True):
                    p.copy_(weights)

    def _stopped(self, epoch: int) -> Tensor:
        """Models that should stop now: persistently diverged, or out of patience."""
        stopped = torch.zeros(self.n_models, dtype=torch.bool)
        for m in range(self.n_models):
            if self.stop_reason[m] != "completed":
                stopped[m] = True
            elif self.bad_steps[m] >= MAX_BAD_STEPS:
                self.stop_reason[m] = "diverged"
                warnings.warn(
                    f"training diverged at epoch {epoch} (non-finite loss or gradient); "
                    f"keeping the best model, from epoch {self.best_epoch[m]}",
                    RuntimeWarning,
                    stacklevel=4,
                )
                stopped[m] = True
            elif self.options.patience and epoch - self.best_epoch[m] >= self.options.patience:
                self.stop_reason[m] = "early-stopping"
                stopped[m] = True
        return stopped

    def results(self, splits) -> list[FitResult]:
        flows = unstack(self.model)
        return [
            FitResult(
                flow=flow.eval(),
                history=self.histories[m],
                best_epoch=self.best_epoch[m],
                best_val_nll=float(self.best_val[m]),
                wall_time=self.wall_time,
                stop_reason=self.stop_reason[m],
                train_indices=splits[m][0],
                val_indices=splits[m][1],
            )
            for m, flow in enumerate(flows)
        ]


def _data_parallel(model: Flow) -> torch.nn.parallel.DistributedDataParallel:
    """Wrap ``model`` for data-parallel training on its device (one GPU or the CPU)."""
    device_ids = [model.device] if model.device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=device_ids)


class _CompiledEpochs:
    """Epochs run by :mod:`densitylab.flows.compiled` (or :mod:`~densitylab.flows.compiled_spline`)
    on a NumPy copy of the parameters.

    The torch model is refreshed after every epoch, so validation, best-model tracking and
    checkpoints are shared with the torch path; Adam's state lives here as NumPy arrays.
    """

    def __init__(self, loop: _Loop) -> None:
        self.loop = loop
        spline = compiled_spline.supports(loop.model)
        self.stack = (compiled_spline.CompiledSplineStack if spline else compiled.CompiledStack)(
            loop.model)
        self.theta = self.stack.pack()
        self.adam = self.stack.new_adam()
        x = loop.x_train.detach().double().cpu().numpy()
        self.x = self.stack.standardized(x)
        self.offset = self.stack.log_det_offset()  # NLL(x) = NLL(standardised x) - offset
        self.bad = np.zeros(loop.n_models, dtype=np.int64)

    def epoch(self, total_steps: int) -> Tensor:
        loop, options = self.loop, self.loop.options
        order = torch.stack([torch.randperm(self.x.shape[1], generator=g) for g in loop.generators])
        sums = self.stack.run_epoch(
            self.theta, self.adam, self.x, order.numpy(), options.batch_size, options.lr,
            total_steps, loop.step, int(options.schedule == "cosine"), options.clip_grad or 0.0,
            self.bad,
        )
        n_batches = math.ceil(self.x.shape[1] / options.batch_size)
        loop.step += n_batches
        loop.bad_steps = torch.from_numpy(self.bad.copy())
        self.stack.unpack(self.theta)
        return torch.from_numpy(sums - n_batches * self.offset)

    def state(self) -> dict[str, Tensor]:
        return {f"compiled.{k}": torch.from_numpy(v) for k, v in self.adam.items()}

    def restore(self, tensors: dict[str, Tensor]) -> None:
        self.theta = self.stack.pack()
        self.adam = {k: tensors[f"compiled.{k}"].numpy().copy() for k in self.adam}
        self.bad = self.loop.bad_steps.numpy().astype(np.int64).copy()


class _Checkpoint:
    """The whole training state in a directory: tensors in safetensors, the rest in JSON."""

    def __init__(self, path: Path, every: int) -> None:
        self.path, self.every = path, every

    def exists(self) -> bool:
        return (self.path / "progress.json").is_file()

    def save(self, loop: _Loop) -> None:
        tensors = {f"model.{k}": v for k, v in loop.model.state_dict().items()}
        tensors |= {f"best.{k}": v for k, v in loop.best_state.items()}
        tensors |= {f"rng.{m}": g.get_state() for m, g in enumerate(loop.generators)}
        if loop.averaged is not None:
            tensors |= {f"ema.{i}": a for i, a in enumerate(loop.averaged)}
        if loop.fast is not None:
            tensors |= loop.fast.state()
        else:
            for index, state in loop.optimizer.state_dict()["state"].items():
                tensors |= {f"adam.{index}.{name}": value for name, value in state.items()}
        progress = {
            "fingerprint": loop.fingerprint(), "epoch": loop.epoch, "step": loop.step,
            "wall_time": loop.wall_time, "best_epoch": loop.best_epoch,
            "best_val": loop.best_val.tolist(), "bad_steps": loop.bad_steps.tolist(),
            "histories": [asdict(h) for h in loop.histories],
        }
        with atomic_directory(self.path) as staging:
            save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()},
                      staging / "state.safetensors")
            (staging / "progress.json").write_text(json.dumps(progress))

    def restore(self, loop: _Loop) -> None:
        """Continue from the checkpoint; a damaged or foreign one is a one-line ``ValueError``."""
        damaged = (OSError, ValueError, KeyError, TypeError, RuntimeError, SafetensorError)
        try:
            progress = json.loads((self.path / "progress.json").read_text())
            fingerprint = progress["fingerprint"]
        except damaged as err:
            raise self._damaged(err) from err
        if fingerprint != loop.fingerprint():
            raise ValueError(
                f"checkpoint {self.path} belongs to other data, model or options; "
                "remove it or start without resume"
            )
        try:
            self._restore(loop, progress)
        except damaged as err:
            raise self._damaged(err) from err

    def _damaged(self, err: Exception) -> ValueError:
        return ValueError(f"checkpoint {self.path} is damaged ({type(err).__name__}); "
                          "remove it or start without resume")

    def _restore(self, loop: _Loop, progress: dict) -> None:
        tensors = load_file(self.path / "state.safetensors")

        def part(prefix: str) -> dict[str, Tensor]:
            return {k.removeprefix(prefix): v for k, v in tensors.items() if k.startswith(prefix)}

        loop.model.load_state_dict(part("model."))
        loop.best_state = part("best.")
        if "ema.0" in tensors:
            loop.averaged = [tensors[f"ema.{i}"] for i in range(len(loop.params))]
        for m, generator in enumerate(loop.generators):
            generator.set_state(tensors[f"rng.{m}"])
        if loop.optimizer is not None:
            optimizer = loop.optimizer.state_dict()
            adam = part("adam.")
            optimizer["state"] = {
                int(i): {name: adam[f"{i}.{name}"] for name in ("step", "exp_avg", "exp_avg_sq")}
                for i in {key.split(".")[0] for key in adam}
            }
            loop.optimizer.load_state_dict(optimizer)
        loop.epoch, loop.step = progress["epoch"], progress["step"]
        loop.wall_time = progress["wall_time"]
        loop.best_epoch = progress["best_epoch"]
        loop.best_val = torch.tensor(progress["best_val"], dtype=torch.float64)
        loop.bad_steps = torch.tensor(progress["bad_steps"], dtype=torch.long)
        loop.histories = [History(**h) for h in progress["histories"]]
        if loop.fast is not None:
            loop.fast.restore(tensors)


@contextmanager
def _progress(enabled: bool, epochs: int, n_models: int):
    """A rich progress bar (epoch, losses, ETA) or a silent no-op."""
    if not enabled:
        yield lambda epoch, histories: None
        return
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (
        TextColumn("[bold]training[/]"),
        BarColumn(),
        TextColumn("epoch {task.completed}/{task.total}"),
        TextColumn("{task.fields[losses]}"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, transient=False) as progress:
        task = progress.add_task("fit", total=epochs, losses="")

        def advance(epoch: int, histories: list[History]) -> None:
            h = histories[0]
            label = f"train {h.train_nll[-1]:.4f}  val {h.val_nll[-1]:.4f}"
            if n_models > 1:
                label += f"  (+{n_models - 1} models)"
            progress.update(task, completed=epoch, losses=label)

        yield advance
