"""Findings sentences computed from an experiment's own numbers (never canned conclusions).

One rule decides every "better", "worse", "best" and "easier" on the report page:
:func:`compare`. Two estimates differ only when their difference exceeds :data:`Z` standard
errors of that difference; otherwise the page says "within noise". When both were measured on
the same test points, that standard error is the *paired* one, of the mean of the per-point
differences (:func:`paired_se`; studies store it in their metrics); only where the points
differ is it the *unpaired* one, the two standard errors added in quadrature (which ignores
the correlation of two models' scores on shared points, and is far wider). The sentences say
which. Quantities that cannot be negative (an energy distance, a KL divergence) are
compared after clipping their unbiased estimates at 0: two samplers whose estimates are both
at or below 0 are equally close to the data, and the closest is the one nearest 0, never the
most negative.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

Metrics = dict[str, dict[str, Any]]
Paired = Mapping[str, Mapping[str, float]]  # {a: {b: paired standard error of a - b}}
Z = 2.0  # a difference is real when it exceeds Z standard errors of the difference


def difference_se(se_a: float, se_b: float, paired: float | None = None) -> float:
    """Standard error of ``a - b``: ``paired`` (that of the mean per-point difference, when
    both were measured on the same points) where given, else the independent estimates'
    standard errors added in quadrature."""
    if paired is not None and math.isfinite(paired):
        return float(paired)
    return math.hypot(float(se_a), float(se_b))


def paired_se(log_p_a: np.ndarray, log_p_b: np.ndarray) -> float:
    """Standard error of the difference of two mean log-densities measured on the same
    points: the standard error of the mean of the per-point differences."""
    a, b = np.asarray(log_p_a, dtype=float), np.asarray(log_p_b, dtype=float)
    if a.shape != b.shape or a.ndim != 1 or a.size < 2:
        raise ValueError(f"paired scores need two 1-D arrays of one length >= 2, got shapes "
                         f"{a.shape} and {b.shape}")
    return float(np.std(a - b, ddof=1) / math.sqrt(a.size))


def paired_table(log_p: Mapping[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """``{a: {b: paired standard error of a - b}}`` for every two labels scored on the same
    points (the arrays of ``log_p`` are per-point log-densities on one set of points)."""
    return {a: {b: paired_se(log_p[a], log_p[b]) for b in log_p if b != a} for a in log_p}


def se_kind(paired: float | None) -> str:
    """How a comparison's standard error was formed, for the sentence that reports it."""
    used = paired is not None and math.isfinite(paired)  # as difference_se decides
    return "paired: the same test points" if used else "unpaired"


def compare(
    a: float, se_a: float, b: float, se_b: float, *, lower_is_better: bool = True,
    floor: float | None = None, paired: float | None = None,
) -> int:
    """``-1`` when ``a`` is better beyond noise, ``+1`` when ``b`` is, ``0`` within noise.

    ``floor``: the quantity cannot go below it (0 for a distance), so estimates under it
    count as it. ``paired``: the standard error of ``a - b`` from per-point differences
    (:func:`paired_se`), used instead of the unpaired combination of ``se_a`` and ``se_b``.
    """
    if floor is not None:
        a, b = max(a, floor), max(b, floor)
    finite_a, finite_b = math.isfinite(a), math.isfinite(b)
    if not (finite_a and finite_b):  # a non-finite estimate (a diverged model) is the worse
        return 0 if finite_a == finite_b else (-1 if finite_a else 1)
    diff = a - b
    if abs(diff) <= Z * difference_se(se_a, se_b, paired):
        return 0
    a_better = diff < 0 if lower_is_better else diff > 0
    return -1 if a_better else 1


def best_group(
    estimates: Mapping[str, tuple[float, float]], *, lower_is_better: bool = True,
    floor: float | None = None, paired: Paired | None = None,
) -> list[str]:
    """The best label first, then every label within noise of it (by :func:`compare`, on the
    paired standard error where ``paired`` has the pair)."""
    def key(label: str) -> float:
        value = estimates[label][0]
        if floor is not None:
            value = max(value, floor)
        return value if lower_is_better else -value

    order = sorted(estimates, key=key)
    best = order[0]
    return [best] + [
        label for label in order[1:]
        if compare(*estimates[best], *estimates[label], lower_is_better=lower_is_better,
                   floor=floor, paired=pair(paired, best, label)) == 0
    ]


def paired_runs(metrics: Metrics, names: Mapping[str, str], rule: str = "") -> Paired:
    """The runs' stored paired standard errors (``paired_se``, or ``final_paired_se`` with
    ``rule="final_"``) under the short ``names`` ``{short: run label}`` a sentence uses."""
    return {a: {b: metrics[la][f"{rule}paired_se"][lb] for b, lb in names.items()
                if b != a and lb in metrics[la].get(f"{rule}paired_se", {})}
            for a, la in names.items()}


def pair(paired: Paired | None, a: str, b: str) -> float | None:
    """The paired standard error of ``a - b`` if ``paired`` holds it (else ``None``)."""
    return None if paired is None else paired.get(a, {}).get(b)


def best_sentence(
    estimates: Mapping[str, tuple[float, float]], what: str, *, lower_is_better: bool = True,
    floor: float | None = None, digits: int = 3, paired: Paired | None = None,
) -> str:
    """"X has the best WHAT (v ± se)" or "A, B and C are within noise of each other"."""
    group = best_group(estimates, lower_is_better=lower_is_better, floor=floor,
                       paired=paired)
    if len(estimates) == 1:
        return ""
    best = group[0]
    value, se = estimates[best]
    kind = se_kind(pair(paired, best, next(lb for lb in estimates if lb != best)))
    if len(group) == 1:
        return (f"{best} has the best {what} ({value:.{digits}f} ± {se:.{digits}f}), beyond "
                f"noise ({Z:g} standard errors, {kind})")
    names = ", ".join(group[:-1]) + " and " + group[-1]
    every = " (all of them)" if len(group) == len(estimates) else ""
    return (f"{names}{every} are within noise of each other on {what} "
            f"(the best {value:.{digits}f} ± {se:.{digits}f}; differences under {Z:g} "
            f"standard errors, {kind})")


def versus(
    label_a: str, a: float, se_a: float, label_b: str, b: float, se_b: float, what: str, *,
    lower_is_better: bool = True, floor: float | None = None, unit: str = "nats",
    digits: int = 3, paired: float | None = None,
) -> str:
    """One comparison sentence decided by :func:`compare` (``paired``: as there)."""
    outcome = compare(a, se_a, b, se_b, lower_is_better=lower_is_better, floor=floor,
                      paired=paired)
    diff = abs(a - b)
    noise = Z * difference_se(se_a, se_b, paired)
    errors = f"{Z:g} standard errors ({se_kind(paired)}) = {noise:.{digits}f}"
    if outcome == 0:
        return (f"{label_a} and {label_b} are within noise on {what} (difference "
                f"{diff:.{digits}f} {unit}, {errors})")
    winner, loser = (label_a, label_b) if outcome < 0 else (label_b, label_a)
    return (f"{winner} is better than {loser} on {what} by {diff:.{digits}f} {unit} "
            f"(beyond {errors})")


RECALL_SE_FLOOR = 0.01  # k-NN supports of 2000 points: recall wobbles about this much by seed


def recall_se(recall: float, n: int = 2000) -> float:
    """Standard error of a support precision or recall of ``n`` points: the binomial one,
    floored at :data:`RECALL_SE_FLOOR` (near 1 the binomial error vanishes, while the k-NN
    estimate of a support still varies from sample to sample)."""
    return max(math.sqrt(max(recall * (1 - recall), 0.0) / n), RECALL_SE_FLOOR)


def ranked(metrics: Metrics, key: str = "entropy_gap") -> list[tuple[str, float]]:
    """Labels sorted by a metric, lowest first (ties are for :func:`best_group` to call)."""
    return sorted(((label, float(m[key])) for label, m in metrics.items()), key=lambda p: p[1])


def overfit(m: dict[str, Any]) -> float:
    """Final validation NLL minus final training NLL: positive and growing means overfitting."""
    history = m["history"]
    return history["val_nll"][-1] - history["train_nll"][-1]


def describe(label: str, m: dict[str, Any]) -> str:
    return (
        f"{label}: test NLL {m['test_nll']:.3f} ± {m['test_nll_se']:.3f}, "
        f"KL(true || model) {m['entropy_gap']:.3f} (entropy {m['entropy']:.3f})"
    )


def against_gaussian(label: str, m: dict[str, Any]) -> str:
    """How a run compares with the single full-covariance Gaussian on its own data."""
    g = m["gaussian"]
    outcome = compare(m["test_nll"], m["test_nll_se"], g["test_nll"], g["test_nll_se"],
                      paired=g.get("paired_se"))
    verdict = {-1: "beats", 1: "is worse than", 0: "is within noise of"}[outcome]
    return (f"{label} {verdict} the single Gaussian ({m['test_nll']:.3f} against "
            f"{g['test_nll']:.3f} ± {g['test_nll_se']:.3f})")


def weight_rules(label: str, m: dict[str, Any]) -> str:
    """Test NLL under the two weight-keeping rules: the best validation epoch (densitylab's)
    and the final epoch (the coursework's ``train()`` with fewer than 500 validation points),
    decided on the paired standard error of their difference (the same test points)."""
    best = (m["test_nll"], m["test_nll_se"])
    final = (m["final_test_nll"], m["final_test_nll_se"])
    if m["best_epoch"] == m["epochs_run"]:
        return (f"{label}: the best-validation weights are the final ones (epoch "
                f"{m['best_epoch']}), test NLL {best[0]:.3f}")
    # one model against another on the same test points: the paired standard error
    paired = m["final_minus_best_se"]
    outcome = compare(*best, *final, paired=paired)
    verdict = {0: "within noise", -1: "best-validation better", 1: "final better"}[outcome]
    kind = "paired" if se_kind(paired).startswith("paired") else "unpaired"
    noise = f"{Z:g} {kind} SE = {Z * difference_se(best[1], final[1], paired):.3f}"
    if final[1] > HEAVY_TAIL * best[1]:
        noise += (f"; the final weights' SE {final[1]:.3f} is over {HEAVY_TAIL:g} times the "
                  "best's: a few test points given almost no density carry their mean")
    return (f"{label}: best-validation weights (epoch {m['best_epoch']}) {best[0]:.3f}, final "
            f"(epoch {m['epochs_run']}) {final[0]:.3f}: {verdict} ({noise})")


HEAVY_TAIL = 10.0  # an SE this many times another's: the mean is carried by a few points


def run_pair(metrics: Metrics, first: str, second: str, rule: str = "") -> float | None:
    """The paired standard error of two runs' test NLL difference under a weight rule
    (``""`` or ``"final_"``), where both were tested on the same points (else ``None``)."""
    return metrics[first].get(f"{rule}paired_se", {}).get(second)


def verdict_under(metrics: Metrics, first: str, second: str, rule: str) -> int:
    """:func:`compare` of two runs' test NLL under a weight rule (``""`` or ``"final_"``),
    paired where they share their test points."""
    a, b = metrics[first], metrics[second]
    return compare(a[f"{rule}test_nll"], a[f"{rule}test_nll_se"], b[f"{rule}test_nll"],
                   b[f"{rule}test_nll_se"], paired=run_pair(metrics, first, second, rule))


def rules_agree(metrics: Metrics, first: str, second: str) -> str:
    """Whether the comparison of two runs reads the same under both weight-keeping rules."""
    words = {-1: f"{first} better", 1: f"{second} better", 0: "within noise"}
    best, final = (verdict_under(metrics, first, second, r) for r in ("", "final_"))
    if best == final:
        return f"Both weight-keeping rules give the same verdict ({words[best]})."
    return (f"The weight-keeping rules disagree: best-validation weights say {words[best]}, "
            f"the coursework's final weights say {words[final]}.")


def pairwise(metrics: Metrics, first: str, second: str, factor: str) -> str:
    """Compare two runs on test NLL (same truth, so the same as the gap), naming the factor."""
    a, b = metrics[first], metrics[second]
    outcome = verdict_under(metrics, first, second, "")
    verdict = versus(first, a["test_nll"], a["test_nll_se"], second, b["test_nll"],
                     b["test_nll_se"], "test NLL", paired=run_pair(metrics, first, second))
    if outcome == 0:
        verdict += f": at this budget {factor} made no measurable difference"
    return f"{verdict}."


def gap_estimates(metrics: Metrics) -> dict[str, tuple[float, float]]:
    """``{label: (gap to the entropy, its standard error)}`` (the entropy is exact)."""
    return {label: (float(m["entropy_gap"]), float(m["test_nll_se"]))
            for label, m in metrics.items()}


def easiest_and_hardest(metrics: Metrics) -> str:
    order = ranked(metrics)
    listing = ", ".join(f"{label} {gap:.3f} ± {metrics[label]['test_nll_se']:.3f}"
                        for label, gap in order)
    gaps = gap_estimates(metrics)
    easiest = best_group(gaps)
    hardest = best_group(gaps, lower_is_better=False)
    text = (f"Gap between test NLL and the true entropy (nats): {listing} (compared on "
            "unpaired standard errors: each law has its own test points). ")
    if len(easiest) == len(metrics):
        return text + "All are within noise of each other."
    return text + (f"Easiest to fit: {' / '.join(easiest)}"
                   + (" (within noise of each other)" if len(easiest) > 1 else "")
                   + f"; hardest: {' / '.join(hardest)}"
                   + (" (within noise of each other)" if len(hardest) > 1 else "") + ".")


def epochs_to_reach(values: list[float], target: float) -> int | None:
    """The first epoch (1-based) whose value is at or below ``target``; ``None`` if never."""
    for epoch, value in enumerate(values, start=1):
        if value <= target:
            return epoch
    return None


def budget_note(metrics: Metrics, labels: list[str] | None = None) -> str:
    """Which runs were still improving when their fixed budget ran out (best validation epoch
    in its last tenth), so a verdict between them is one at this budget, not at convergence."""
    labels = list(metrics) if labels is None else labels
    late = [lb for lb in labels if metrics[lb]["best_epoch"] >= 0.9 * metrics[lb]["epochs"]]
    if not late:
        listing = ", ".join(f"{lb} {metrics[lb]['best_epoch']} of {metrics[lb]['epochs']}"
                            for lb in labels)
        return ("Every run's best validation epoch came before the last tenth of its budget "
                f"({listing}).")
    return ("Still improving when the fixed budget ran out (best validation epoch in its last "
            "tenth): " + ", ".join(f"{lb} ({metrics[lb]['best_epoch']} of "
                                   f"{metrics[lb]['epochs']})" for lb in late)
            + f"; {len(late)} of {len(labels)} runs, so the verdicts here hold for this budget, "
            "not at convergence.")
