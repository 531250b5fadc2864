"""Every sentence of the report computed from results: findings written from an outcome's
saved metrics, and checked against them again when the page is built.

An experiment's ``findings(metrics)`` returns its text (a plain-language summary, then short
bullets). :func:`with_findings` applies it to the metrics *as saved* (after a JSON round trip),
so :func:`check_findings` can recompute exactly the same sentences from ``outcome.json`` and
refuse any that was edited by hand or went stale.
"""

from __future__ import annotations

import json
from typing import Any

from densitylab.experiments.outcome import Outcome


def _saved(metrics: dict[str, Any]) -> dict[str, Any]:
    """The metrics as ``outcome.json`` holds them."""
    return json.loads(json.dumps(metrics, default=float))


def _lines(findings: str | list[str]) -> list[str]:
    """Findings as a list of sentences (a study may still write one paragraph)."""
    return [findings] if isinstance(findings, str) else list(findings)


def with_findings(outcome: Outcome, experiment: Any) -> Outcome:
    """The outcome with its text computed from its metrics as saved (after a JSON round trip,
    so the report's check recomputes exactly the same sentences)."""
    if getattr(experiment, "findings", None) is None:
        return outcome
    outcome.metrics = _saved(outcome.metrics)
    outcome.findings = experiment.findings(outcome.metrics)
    return outcome


def check_findings(outcome: Outcome) -> None:
    """Refuse an outcome whose text does not follow from its metrics: every sentence, number
    and verdict is recomputed by the experiment's findings function from the saved metrics.

    Raises ValueError naming the first sentence that differs (hand-edited, or stale)."""
    from densitylab.experiments import registry

    experiment = registry().get(outcome.name)
    if experiment is None:
        return  # an experiment of another build: nothing to recompute it with
    if getattr(experiment, "findings", None) is None:
        return
    expected = _lines(experiment.findings(_saved(outcome.metrics)))
    found = _lines(outcome.findings)
    for index, (want, have) in enumerate(zip(expected, found, strict=False)):
        if want != have:
            raise ValueError(f"{outcome.name}: finding {index + 1} does not follow from its "
                             f"metrics: {have!r} (recomputed: {want!r})")
    if len(expected) != len(found):
        raise ValueError(f"{outcome.name}: {len(found)} findings, its metrics give "
                         f"{len(expected)}")


