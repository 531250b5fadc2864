"""The named experiments of densitylab: every study of the source documents, runnable by name.

``names()`` lists them, ``describe(name)`` says what each asks, and ``run(name, out)`` runs one
into its own directory (``outcome.json`` plus ``figures/``), which the report reads.

Example:
    >>> from densitylab import experiments
    >>> "kde-bandwidth" in experiments.names()
    True
    >>> outcome = experiments.run("kde-bandwidth", "runs/kde", quick=True)  # doctest: +SKIP
    >>> print(outcome.findings)  # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from multiprocessing import get_context
from pathlib import Path

from densitylab._files import output_directory
from densitylab.experiments.claims import check_findings, with_findings
from densitylab.experiments.flow_studies import FLOW_STUDIES
from densitylab.experiments.outcome import Outcome
from densitylab.experiments.spec import CustomExperiment, FlowExperiment

Experiment = FlowExperiment | CustomExperiment


def _custom() -> tuple[CustomExperiment, ...]:
    from densitylab.experiments.custom import CUSTOM_STUDIES

    return CUSTOM_STUDIES


def registry() -> dict[str, Experiment]:
    """Every experiment by name, in report order."""
    studies = list(_custom())
    first = [s for s in studies if s.name in ("datasets", "kde-bandwidth")]
    last = [s for s in studies if s not in first]
    return {e.name: e for e in (*first, *FLOW_STUDIES, *last)}


def names() -> list[str]:
    return list(registry())


def get(name: str) -> Experiment:
    experiments = registry()
    if name not in experiments:
        raise ValueError(f"unknown experiment {name!r}; choose one of {', '.join(experiments)}")
    return experiments[name]


def run(name: str, out: str | os.PathLike, quick: bool = False, verbose: bool = False) -> Outcome:
    """Run one experiment into ``out`` (replaced atomically when it finishes).

    ``out`` must be new, empty or an earlier experiment's output; anything else is refused.
    """
    from densitylab.experiments.runner import run_flow_experiment  # torch: only to run one

    experiment = get(name)
    with output_directory(Path(out), "experiment") as staging:
        load = os.getloadavg()[0]  # with the end's: how shared the machine was
        if isinstance(experiment, FlowExperiment):
            outcome = run_flow_experiment(experiment, staging, quick, verbose)
        else:
            outcome = experiment.run(staging, quick)
        outcome.load = [load, os.getloadavg()[0]]
        outcome = with_findings(outcome, experiment)
        outcome.write(staging)
    return outcome


def run_all(
    selected: Sequence[str],
    out: str | os.PathLike,
    quick: bool = False,
    jobs: int = 1,
    on_progress: Callable[[list[str], list[str]], None] = lambda running, done: None,
) -> list[Outcome]:
    """Run experiments into ``out/NAME``, up to ``jobs`` at a time in worker processes.

    The experiments are independent and seeded, so their results do not depend on ``jobs``;
    the costliest start first, and those that measure speed (``exclusive``) run alone at the
    end. Returns the outcomes in the order of ``selected``. ``on_progress(running, done)`` is
    called whenever an experiment starts or ends.
    """
    experiments = {name: get(name) for name in selected}
    exclusive = [n for n in selected if experiments[n].exclusive]
    shared = [n for n in selected if n not in exclusive]
    results: dict[str, Outcome] = {}
    if jobs > 1 and len(shared) > 1:
        costliest_first = sorted(shared, key=lambda name: -experiments[name].cost)
        results |= _run_in_workers(costliest_first, Path(out), quick, jobs, on_progress)
    else:
        exclusive = shared + exclusive
    for name in exclusive:
        on_progress([name], list(results))
        results[name] = run(name, Path(out) / name, quick)
    on_progress([], list(results))
    return [results[name] for name in selected]


def _run_in_workers(
    queue: list[str], out: Path, quick: bool, jobs: int,
    on_progress: Callable[[list[str], list[str]], None],
) -> dict[str, Outcome]:
    """Run the experiments of ``queue`` in order, ``jobs`` at a time, in spawned processes."""
    queue = list(queue)
    threads = max(1, (os.cpu_count() or 1) // jobs)
    context = get_context("spawn")  # fresh interpreters: no inherited torch or OpenMP state
    results: dict[str, Outcome] = {}
    with ProcessPoolExecutor(jobs, mp_context=context, initializer=_limit_threads,
                             initargs=(threads,)) as pool:
        running: dict[Future, str] = {}
        try:
            while queue or running:
                while queue and len(running) < jobs:
                    name = queue.pop(0)
                    running[pool.submit(run, name, out / name, quick)] = name
                on_progress(list(running.values()), list(results))
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    results[running.pop(future)] = future.result()
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise
    return results


def _limit_threads(threads: int) -> None:
    """Worker set-up: share the cores between the workers instead of oversubscribing them."""
    import torch

    torch.set_num_threads(threads)


__all__ = ["Outcome", "check_findings", "get", "names", "registry", "run", "run_all"]
