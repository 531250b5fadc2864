"""Maximum-likelihood fitting of flows: one flow (:func:`fit`) or many at once (:func:`fit_many`).

``fit_many`` stacks M flows of one architecture into a single batched model (every parameter
has a leading model dimension), so one optimiser step updates all of them and each gets the
result it would get alone. Both run the one driver of :mod:`densitylab.training.driver` with
the flow's negative log-likelihood as objective, on the autograd or the compiled engine.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
from collections.abc import Sequence

import torch
from numpy.typing import ArrayLike

from densitylab import distributed as distributed_
from densitylab import threads as threads_
from densitylab._validation import check_positive_int
from densitylab.flows import (
    ActNorm,
    Flow,
    GaussianMixtureBase,
    ImageActNorm,
    stack,
    standardized,
    unstack,
)
from densitylab.runtime import resolve_device
from densitylab.training import (
    compiled,
    compiled_spline,
    flow_matching,  # noqa: F401  (registers its objectives)
)
from densitylab.training.autograd import TorchEngine
from densitylab.training.data import prepare, seeds_of, with_context, with_weights
from densitylab.training.driver import train
from densitylab.training.objectives import NLL, Objective, objective_named
from densitylab.training.options import Options
from densitylab.training.result import FitResult


def fit(flow: Flow, x: ArrayLike, **options) -> FitResult:
    """Fit ``flow`` to data ``x`` of shape ``(n, D)`` by minimising the NLL with Adam.

    Keyword options are those of :func:`fit_many` (epochs, batch size, learning rate,
    validation split, seed, early stopping, schedule, moving average, standardisation,
    threads, progress, checkpoints, engine, device, data-parallel training, context).

    Example:
        >>> import densitylab as dl
        >>> moons = dl.datasets.get("moons")
        >>> x, x_test = moons.sample(500, seed=0), moons.sample(100, seed=1)
        >>> result = fit(dl.flows.realnvp(dim=2), x, epochs=3, seed=0, verbose=False)
        >>> result.flow.log_prob(x_test).shape      # exact log p(x), a torch tensor
        torch.Size([100])
    """
    return fit_many([flow], x, **options)[0]


def fit_many(
    flows: Sequence[Flow],
    x: ArrayLike,
    *,
    context: ArrayLike | None = None,
    context_val: ArrayLike | None = None,
    sample_weight: ArrayLike | Sequence[ArrayLike] | None = None,
    epochs: int = 1000,
    batch_size: int = 64,
    lr: float = 1e-3,
    val_fraction: float = 0.1,
    x_val: ArrayLike | None = None,
    seed: int | Sequence[int] = 8,
    patience: int | None = None,
    clip_grad: float | None = None,
    schedule: str = "constant",
    ema: float | None = None,
    standardize: bool = False,
    threads: int | None = None,
    verbose: bool | None = None,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: int = 25,
    resume: bool = False,
    engine: str = "auto",
    device: str | torch.device | None = None,
    distributed: bool = False,
    objective: str = "nll",
    keep_final: bool = False,
) -> list[FitResult]:
    """Fit M flows of one architecture in one vectorised computation.

    ``x`` is one data set ``(n, D)`` shared by all flows or a sequence of M data sets of equal
    size; ``seed`` is one seed or one per flow. Each flow gets the result :func:`fit` would
    give it alone with the same data and seed, up to float rounding.

    Args:
        context: for a conditional flow (built with ``context=C``), the ``(n, C)`` conditioning
            values beside ``x``, one row per point: it then learns ``p(x | c)``. The rows of
            ``x`` and ``context`` are split and batched together.
        context_val: the context of ``x_val``.
        sample_weight: non-negative row weights of ``x`` (one ``(n,)`` vector, or one per
            data set): the loss becomes the weighted NLL (objective ``"weighted-nll"``, the
            weights rescaled to mean 1 and batched beside their rows; an ``x_val`` given apart
            has weight 1). Whole-number weights train as rows repeated that many times would,
            in expectation over the batches. Needs ``objective="nll"``; the torch engine.
        epochs: passes over the training data (the optimisation budget).
        batch_size: points per Adam step; batches are shuffled every epoch.
        lr: Adam's learning rate (the peak rate under ``schedule="cosine"``).
        val_fraction: part of ``x`` held out for validation, split by ``seed``; ignored
            when ``x_val`` is given. The model kept is the one with the lowest validation NLL.
        seed: seeds the split and the batch order; the same seed gives the same result.
        patience: stop after this many epochs without a better validation NLL.
        clip_grad: clip the gradient norm (per model) to this value.
        schedule: ``"constant"`` (``lr`` throughout) or ``"cosine"`` (annealed to 0 over
            training), the vocabulary of :data:`densitylab.flows.recipes.SCHEDULES`.
        ema: keep an exponential moving average of the weights, updated after every epoch
            with this decay (e.g. ``0.9``: roughly the last ten epochs); validation, the
            best-model rule and the returned model then use the averaged weights, which
            smooths out the noise of small-batch Adam steps.
        standardize: put a fitted :class:`~densitylab.flows.Standardize` in front of the flow,
            so it learns on standardised data while densities stay in the user's units.
        threads: threads while training, in every pool (torch, BLAS, OpenMP, numba; the
            caller's settings are restored afterwards, :mod:`densitylab.threads`); the compiled
            engine trains that many stacked models at a time instead, each on one thread
            (folds, seeds: on ``k`` cores ``k`` of them cost about one). ``None`` (default):
            chosen from the work: one thread per ``TORCH_MACS_PER_THREAD`` multiply-adds of a
            step (batch size x parameters) on the torch engine (so one for the small flows of
            these studies, the fastest and immune to a busy machine), one per stacked model on
            the compiled engine (independent threads: at most the cores), at most the cores
            other processes leave idle on torch. The count used is ``result.threads``.
        verbose: progress bar; by default only when stderr is a terminal.
        checkpoint: a directory where the full training state is saved every
            ``checkpoint_every`` epochs. Ctrl-C stops training and returns the best model
            so far; ``resume`` then continues from the last checkpoint.
        resume: continue from ``checkpoint`` if it exists; the data and options must match.
        engine: ``"torch"`` (autograd, any flow, any device), ``"compiled"`` (a numba-compiled
            epoch with hand-derived gradients, in float64, for RealNVP flows on the CPU: the
            same model, batches and Adam updates, several times faster for small flows), or
            ``"auto"``: compiled where supported and faster (small networks, at most 4 models
            trained together: it runs stacked models one by one), else torch.
        device: ``"cpu"``, ``"cuda"`` or ``"auto"`` (CUDA when available); ``None`` keeps the
            flow where it is. Model, data batches and the returned flow live there.
        distributed: data-parallel training over the processes of a running
            ``torch.distributed`` process group (see :mod:`densitylab.distributed`; launch with
            torchrun). Every process passes the same data and seed and gets the same result,
            the one a single process would get, up to float rounding; only rank 0 shows
            progress and writes checkpoints. Uses the torch engine.
        objective: the loss minimised, by name: ``"nll"`` (maximum likelihood; through the ODE
            solver for a continuous flow), ``"dequantized"`` (the dequantized bound of an image
            flow on integer pixels), or for a continuous flow ``"flow-matching"`` /
            ``"ot-flow-matching"`` (:class:`~densitylab.training.flow_matching.FlowMatching`:
            simulation-free regression of its vector field; the same loss recorded on
            validation draws, the last epoch kept). A
            continuous flow's history also counts the solver's function evaluations
            (``train_nfe`` per step, ``val_nfe`` per validation).
        keep_final: also return the last epoch's weights, as ``FitResult.final_model`` (the
            rule of code that keeps the final weights, for a report to compare with the
            best-validation weights it keeps).
    """
    if len(flows) == 0:
        raise ValueError("fit_many needs at least one flow")
    options = Options(epochs, batch_size, lr, val_fraction, patience, clip_grad, schedule, ema)
    check_positive_int(checkpoint_every, "checkpoint_every")
    seeds = seeds_of(seed, len(flows))
    first = flows[0]
    rows = first.dim + first.context_features  # rows [x | c] for a conditional flow
    points = with_context(first.context_features, first.dim, x, context)
    points_val = with_context(first.context_features, first.dim, x_val, context_val)
    if sample_weight is not None:  # rows [x | c | w] for the weighted NLL
        if objective != "nll":
            raise ValueError(f"sample_weight weights the NLL; objective {objective!r} takes none")
        points, points_val = with_weights(points, sample_weight, rows), with_weights(
            points_val, None, rows)
        objective = "weighted-nll"
    data = prepare(
        points, points_val, n_models=len(flows), dim=rows + (sample_weight is not None),
        val_fraction=val_fraction, seeds=seeds,
    )
    if distributed and not distributed_.is_initialized():
        raise ValueError(
            "distributed=True needs a running process group: launch with torchrun and train "
            "inside `with densitylab.distributed.process_group(): ...`"
        )
    with threads_.budget(1 if threads is None else threads):  # small set-up work
        model = stack([standardized(f) if standardize else f for f in flows])
        if device is not None:
            model = model.to(resolve_device(device, distributed))
        x_train = torch.as_tensor(data.train, dtype=model.dtype, device=model.device)
        x_valid = torch.as_tensor(data.val, dtype=model.dtype, device=model.device)
        if standardize:
            model.transforms[0].fit(x_train[..., : model.dim])
        if isinstance(model.base, GaussianMixtureBase):
            # the mixture the flow starts from, fitted to all of x (validation only chooses the
            # transforms' epoch; the base stays fixed); an x_val given apart stays held out
            points = x_train if x_val is not None else torch.cat([x_train, x_valid], dim=1)
            points = points[..., :rows]  # (not the weights)
            with torch.no_grad():
                model.eval()  # (no data-dependent initialisation of ActNorm from all points)
                model.base.fit(model._to_latent(*model._split_rows(points))[0], seeds)
                model.train()
        if distributed:  # ActNorm's first-batch statistics over the whole batch, not a shard
            for module in model.modules():
                if isinstance(module, ActNorm | ImageActNorm):
                    module.sum_statistics = distributed_.all_reduce_sum
    goal = objective_named(objective, seeds, model)
    if patience and not goal.keep_best:
        raise ValueError(f"patience (early stopping) does not apply to objective "
                         f"{objective!r}: it keeps its last epoch")
    on_compiled = use_compiled(engine, model, distributed, options.batch_size, goal)
    if on_compiled:  # stacked models in Python threads, each on one thread of every pool
        workers = threads_.workers(threads, work=len(flows))
        pool_threads = 1
    else:
        workers = pool_threads = threads_.count(
            threads, work=options.batch_size * sum(p.numel() for p in model.parameters()),
            grain=TORCH_MACS_PER_THREAD)
    with threads_.budget(pool_threads):
        runner = (compiled.CompiledEngine(model, goal, x_train, x_valid, options, threads=workers)
                  if on_compiled
                  else TorchEngine(model, goal, x_train, x_valid, options, distributed))
        driver = train(runner, goal, options, seeds, data, model.config, verbose=verbose,
                       checkpoint=checkpoint, checkpoint_every=checkpoint_every, resume=resume)
    model.eval()
    results = driver.results([f.eval() for f in unstack(model)], data.splits)
    if keep_final:
        runner.load_state(driver.final_state)
        for result, final in zip(results, unstack(model), strict=True):
            result.final_model = final.eval()
        runner.load_state(driver.best_state)
    return [dataclasses.replace(r, threads=workers, engine=runner.name) for r in results]


fit.__signature__ = inspect.signature(fit_many).replace(
    parameters=[inspect.Parameter("flow", inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                  annotation=Flow),
                *list(inspect.signature(fit_many).parameters.values())[1:]],
    return_annotation=FitResult,
)


ENGINES = ("auto", "torch", "compiled")
# a second torch thread pays off only for steps of several million multiply-adds (wide networks,
# large batches; a step costs about batch size x parameters); below, synchronisation costs more
# than the arithmetic it shares
TORCH_MACS_PER_THREAD = 4_000_000
AUTO_COMPILED_MAX_MODELS = 4
AUTO_COMPILED_MAX_UNITS = 256  # hidden units per s/t network
AUTO_COMPILED_MAX_BATCH_MACS = 300_000  # multiply-adds of one network over one batch


def use_compiled(engine: str, model: Flow, distributed: bool, batch_size: int,
                 objective: Objective | None = None) -> bool:
    """Resolve ``engine`` for this model and objective (the compiled kernels minimise the NLL
    only); ``"compiled"`` on an unsupported model is an error."""
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; choose one of {list(ENGINES)}")
    if engine == "compiled" and distributed:
        raise ValueError("distributed training uses the torch engine; use engine='auto' or 'torch'")
    if engine == "torch" or distributed:
        return False
    ok = (compiled.supports(model) and model.device.type == "cpu" and not model.context_features
          and (objective is None or type(objective) is NLL))
    if engine == "compiled" and not ok:
        raise ValueError(
            "the compiled engine needs the NLL objective and an unconditional RealNVP "
            "flow (affine couplings with contiguous masks) or spline coupling flow on the CPU; "
            "use engine='torch'"
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


