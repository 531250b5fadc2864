"""Findings sentences computed from an experiment's own numbers (never canned conclusions)."""

from __future__ import annotations

from typing import Any

Metrics = dict[str, dict[str, Any]]


def ranked(metrics: Metrics, key: str = "entropy_gap") -> list[tuple[str, float]]:
    """Labels sorted by a metric, best (lowest) first."""
    return sorted(((label, float(m[key])) for label, m in metrics.items()), key=lambda p: p[1])


def overfit(m: dict[str, Any]) -> float:
    """Final validation NLL minus final training NLL: positive and growing means overfitting."""
    history = m["history"]
    return history["val_nll"][-1] - history["train_nll"][-1]


def describe(label: str, m: dict[str, Any]) -> str:
    return (
        f"{label} reached a test NLL of {m['test_nll']:.3f} nats "
        f"({m['entropy_gap']:.3f} above the entropy {m['entropy']:.3f})"
    )


def pairwise(metrics: Metrics, better: str, worse: str, factor: str) -> str:
    """Compare two runs on gap to entropy and on KL, naming the factor that differs."""
    a, b = metrics[better], metrics[worse]
    gap = b["entropy_gap"] - a["entropy_gap"]
    if abs(gap) < 2 * max(a["test_nll_se"], b["test_nll_se"]):
        verdict = (
            f"The difference, {abs(gap):.3f} nats, is within two standard errors of the "
            f"test estimate: at this budget {factor} made no measurable difference"
        )
    elif gap > 0:
        verdict = f"{better} fits better by {gap:.3f} nats of test NLL"
    else:
        verdict = f"{worse} fits better by {-gap:.3f} nats of test NLL"
    kl = ""
    if "grid" in a and "grid" in b:
        kl = (
            f" On the grid, KL(true || model) is {a['grid']['kl']:.3f} for {better} and "
            f"{b['grid']['kl']:.3f} for {worse}."
        )
    return f"{describe(better, a)}; {describe(worse, b)}. {verdict}.{kl}"


def easiest_and_hardest(metrics: Metrics) -> str:
    order = ranked(metrics)
    listing = ", ".join(f"{label} {gap:.3f}" for label, gap in order)
    return (
        f"Gap between test NLL and the true entropy (nats): {listing}. "
        f"Easiest to fit: {order[0][0]}; hardest: {order[-1][0]}."
    )
