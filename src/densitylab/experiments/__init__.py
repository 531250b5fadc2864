"""The named experiments of densitylab: every study of the source documents, runnable by name.

``names()`` lists them, ``describe(name)`` says what each asks, and ``run(name, out)`` runs one
into its own directory (``outcome.json`` plus ``figures/``), which the report reads.

Example:
    >>> from densitylab import experiments
    >>> outcome = experiments.run("depth", "runs/depth", quick=True)
    >>> print(outcome.findings)
"""

from __future__ import annotations

import os
from pathlib import Path

from densitylab._files import atomic_directory
from densitylab.experiments.flow_studies import FLOW_STUDIES
from densitylab.experiments.runner import Outcome, run_flow_experiment
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
    """Run one experiment into ``out`` (replaced atomically when it finishes)."""
    experiment = get(name)
    with atomic_directory(Path(out)) as staging:
        if isinstance(experiment, FlowExperiment):
            outcome = run_flow_experiment(experiment, staging, quick, verbose)
        else:
            outcome = experiment.run(staging, quick)
        outcome.write(staging)
    return outcome


__all__ = ["Outcome", "get", "names", "registry", "run"]
