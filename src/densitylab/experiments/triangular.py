"""triangular-coupling: the Jacobian write-up's modification z_a = A x_a, where A can mix.

In two dimensions x_a is one coordinate, so A is a single positive number per layer and the
modification cannot show what it does. Here the data live in D = 4 and D = 8: products of 2-D
toy laws (so the density and entropy are exact) turned by a fixed random rotation, so every
coordinate carries a mixture of all of them and mixing the conditioning half is useful. The
plain and the triangular coupling flow get the same data, architecture and budget (a cosine
schedule to 0, so both end at rest), and the write-up's three questions are measured: the
Jacobian's structure, how the determinant varies and what the modification costs, and whether
the samples are richer; and its claim that a higher determinant means richer samples is tested.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.stats import ortho_group

from densitylab import datasets, metrics
from densitylab.evaluation import evaluate_flow, flow_log_prob, flow_samples, in_float64
from densitylab.experiments.findings import Z, compare, paired_se, versus
from densitylab.experiments.runner import Outcome, Table
from densitylab.experiments.timing import per_epoch, timed
from densitylab.flows import build
from densitylab.flows.transforms import TriangularCoupling
from densitylab.training import fit_many

PARTS = {4: ("moons", "gaussians-rot"), 8: ("moons", "gaussians-rot", "circles", "gaussians-grid")}
MODELS = {"plain coupling": False, "triangular coupling": True}
LAYERS, HIDDEN = 4, (32, 32)


@dataclass
class RotatedProduct:
    """``x = Q (u_1, ..., u_k)`` with independent 2-D laws ``u_i`` and a fixed rotation ``Q``:
    exact log-density (|det Q| = 1) and entropy (the sum of the parts')."""

    parts: tuple[str, ...]
    seed: int = 0

    def __post_init__(self) -> None:
        self.laws = [datasets.get(name) for name in self.parts]
        self.dim = 2 * len(self.laws)
        self.rotation = ortho_group.rvs(self.dim, random_state=self.seed)
        self.name = " x ".join(self.parts) + ", rotated"

    def sample(self, n: int, seed: int = 0) -> np.ndarray:
        u = np.hstack([law.sample(n, seed=seed + 7 * i) for i, law in enumerate(self.laws)])
        return u @ self.rotation.T

    def log_prob(self, x: np.ndarray) -> np.ndarray:
        u = np.asarray(x) @ self.rotation
        return sum(law.log_prob(u[:, 2 * i:2 * i + 2]) for i, law in enumerate(self.laws))

    def entropy(self) -> float:
        return float(sum(law.entropy() for law in self.laws))


def _measure(flow, truth: RotatedProduct, test: np.ndarray, seconds: float,
             result) -> dict[str, Any]:
    report = evaluate_flow(flow, test, truth, seed=8)
    flow64 = in_float64(flow)
    x_t = torch.as_tensor(test[:5000], dtype=torch.float64)
    with torch.no_grad():
        _, logdet = flow64.to_latent(x_t)
        z = torch.randn(100_000, truth.dim, dtype=torch.float64,
                        generator=torch.Generator().manual_seed(3))
        sample_s, sample_se = timed(lambda: flow64.to_data(z))
        density_s, density_se = timed(
            lambda: flow64.to_latent(torch.as_tensor(test, dtype=torch.float64)))
    epoch_s, epoch_se = per_epoch(result.history.seconds)
    triangular = [t for t in flow.transforms if isinstance(t, TriangularCoupling)]
    log_det_a = float(sum(t.log_diag.detach().double().sum() for t in triangular))
    mixing = [float(t.lower.detach().abs().max()) for t in triangular]
    samples = flow_samples(flow, 5000, seed=1)
    return report | {
        "logdet_mean": float(logdet.mean()), "logdet_sd": float(logdet.std()),
        "logdet_target": truth.dim / 2 * math.log(2 * math.pi * math.e) - truth.entropy(),
        "log_det_A": log_det_a, "max_offdiagonal_A": max(mixing, default=0.0),
        "sample_seconds_100k": sample_s, "sample_seconds_100k_se": sample_se,
        "density_seconds_test": density_s, "density_seconds_test_se": density_se,
        "epoch_seconds": epoch_s, "epoch_seconds_se": epoch_se, "train_seconds": seconds,
        "best_epoch": result.best_epoch,
        "epochs": len(result.history.val_nll), "history": {
            "train_nll": result.history.train_nll, "val_nll": result.history.val_nll},
        "energy_distance_5k": metrics.energy_distance(samples, test[:5000]),
    }


def run_triangular(out: Path, quick: bool) -> Outcome:
    start = time.perf_counter()
    n_fit, n_test, epochs = (800, 20000, 8) if quick else (5000, 20000, 120)
    scores: dict[str, dict[str, Any]] = {}
    rows, settings = [], []
    for dim, parts in PARTS.items():
        truth = RotatedProduct(parts)
        x, test = truth.sample(n_fit, seed=0), truth.sample(n_test, seed=1)
        log_p: dict[str, np.ndarray] = {}
        for name, triangular in MODELS.items():
            flow = build("realnvp", dim=dim, n_layers=LAYERS, hidden=HIDDEN, seed=8,
                         triangular=triangular)
            t0 = time.perf_counter()
            result = fit_many([flow], x, seed=8, epochs=epochs, batch_size=128, lr=2e-3,
                              schedule="cosine", standardize=True, val_fraction=0.1,
                              engine="torch", verbose=False)[0]
            seconds = time.perf_counter() - t0
            label = f"D={dim} {name}"
            s = _measure(result.flow, truth, test, seconds, result)
            scores[label] = s | {"dim": dim, "data": truth.name}
            log_p[name] = flow_log_prob(result.flow, test)
            rows.append([
                label, f"{s['test_nll']:.4f} ± {s['test_nll_se']:.4f}",
                f"{s['entropy_gap']:+.4f}", f"{s['logdet_mean']:.3f} ± {s['logdet_sd']:.3f}",
                f"{s['logdet_target']:.3f}", f"{s['log_det_A']:.3f}",
                f"{s['max_offdiagonal_A']:.3f}", f"{s['energy_distance_5k']:.4f}",
                f"{s['sample_quality']['low_density_fraction']:.3f}",
                f"{s['sample_seconds_100k'] * 1000:.0f} ± {s['sample_seconds_100k_se'] * 1000:.0f}",
                f"{s['epoch_seconds']:.3f} ± {s['epoch_seconds_se']:.3f}",
                f"{s['train_seconds']:.1f}",
                f"{s['best_epoch']} of {s['epochs']}",
            ])
        # both flows scored on the same test points: the paired error of their difference
        tri, plain = f"D={dim} triangular coupling", f"D={dim} plain coupling"
        scores[tri]["paired_se"] = {plain: paired_se(log_p["triangular coupling"],
                                                     log_p["plain coupling"])}
        settings.append([f"D={dim}", truth.name, n_fit, n_test])
    columns = ["run", "test NLL ± SE", "gap", "mean log|det dz/dx| ± sd", "its value for a "
               "perfect model", "log det A (all layers)", "max |A_ij|, i>j", "energy dist.",
               "samples off-support", "ms to sample 100k (median ± SE)",
               "s per epoch (median ± SE)", "train s", "best epoch"]
    note = (f"Both flows: RealNVP, K={LAYERS} couplings with alternating half masks, "
            f"{HIDDEN[0]}x{HIDDEN[1]} LeakyReLU networks, standardised data, {epochs} epochs, "
            "batch 128, Adam 2e-3 with a cosine schedule to 0 (both end at rest), seed 8, "
            "best-validation weights; the triangular flow adds A (D/2 x D/2, lower-triangular, "
            "positive diagonal) to every coupling. Test points: fresh draws from the truth.")
    return Outcome(
        name="triangular-coupling",
        title="Triangular coupling (z_a = A x_a) in 4 and 8 dimensions",
        question="The Jacobian write-up's modification: replace the identity on x_a by a "
        "learned lower-triangular A. (1) What is the Jacobian's structure? (2) How does the "
        "determinant vary, and what does the change cost the synthesis? (3) Are the samples "
        "richer? In 2-D, A is one positive number per layer, so the study runs where A mixes: "
        "D = 4 and D = 8, on rotated products of toy laws with exact densities.",
        findings=[],
        tables=[
            Table("Plain against triangular coupling: likelihood, determinant, samples, cost",
                  columns, rows, note=note),
            Table("Data", ["D", "law", "N fit", "test points"], settings, folded=True),
        ],
        metrics=scores, seconds=time.perf_counter() - start,
    )


def _paired(scores: dict[str, dict[str, Any]], dim: int) -> float | None:
    """The paired standard error of the triangular minus the plain flow's test NLL in ``dim``
    dimensions (both scored on the same test points), where it was stored."""
    return scores[f"D={dim} triangular coupling"].get("paired_se", {}).get(
        f"D={dim} plain coupling")


def _cost(what: str, tri: dict[str, Any], plain: dict[str, Any], key: str) -> str:
    """A timing of the triangular against the plain flow, decided by the page's rule on the
    medians' standard errors (a triangular flow measured faster does strictly more work, so
    that can only be timing noise)."""
    ratio = tri[key] / plain[key]
    outcome = compare(tri[key], tri[f"{key}_se"], plain[key], plain[f"{key}_se"])
    if outcome == 0:
        return f"{what} took the plain flow's time within noise ({ratio:.2f}x)"
    if outcome < 0:
        return (f"{what} measured {ratio:.2f}x the plain flow's time, which can only be timing "
                "noise (it does strictly more work)")
    return f"{what} took {ratio:.2f}x the plain flow's time (beyond {Z:g} standard errors)"


def triangular_findings(scores: dict[str, dict[str, Any]]) -> list[str]:
    """The section's text from its metrics: a computed summary, then the bullets."""
    verdicts = []
    for dim in PARTS:
        plain, tri = scores[f"D={dim} plain coupling"], scores[f"D={dim} triangular coupling"]
        outcome = compare(tri["test_nll"], tri["test_nll_se"], plain["test_nll"],
                          plain["test_nll_se"], paired=_paired(scores, dim))
        verdicts.append(f"in D={dim} it is " + {-1: "better", 1: "worse",
                                                 0: "within noise of the plain flow"}[outcome])
    summary = ("Letting the coupling mix its conditioning half (z_a = A x_a) keeps the "
               "determinant cheap; measured on test likelihood, " + " and ".join(verdicts)
               + ". A larger determinant is not a richer model: the data fix its average.")
    return [summary, *_findings(scores)]


def _findings(scores: dict[str, dict[str, Any]]) -> list[str]:
    sentences = [
        "(1) Structure: with z_a = A x_a the Jacobian stays block lower-triangular, blocks A and "
        "diag(exp(s)), so log|det| = sum_i log A_ii + sum_j s_j: the off-diagonal entries of A "
        "(which do the mixing) never enter the determinant, and A's part of it is one constant "
        "per layer, the same for every x."
    ]
    for dim in PARTS:
        plain, tri = scores[f"D={dim} plain coupling"], scores[f"D={dim} triangular coupling"]
        nll = versus("the triangular flow", tri["test_nll"], tri["test_nll_se"], "the plain flow",
                     plain["test_nll"], plain["test_nll_se"], "test NLL",
                     paired=_paired(scores, dim))
        cost = _cost("sampling 100,000 points", tri, plain, "sample_seconds_100k")
        train = _cost("a training epoch", tri, plain, "epoch_seconds")
        sentences.append(
            f"D={dim}: {nll}. Its A mixes (largest off-diagonal |A_ij| "
            f"{tri['max_offdiagonal_A']:.2f}) and contributes log det A = "
            f"{tri['log_det_A']:.2f} nats. (2) Cost (medians, warm-up dropped): {cost}"
            f"; {train}. (3) Samples: energy distance "
            f"{tri['energy_distance_5k']:.4f} against "
            f"{plain['energy_distance_5k']:.4f}, off-support share "
            f"{tri['sample_quality']['low_density_fraction']:.3f} against "
            f"{plain['sample_quality']['low_density_fraction']:.3f}."
        )
    sentences.append(
        "The write-up's claim that a higher determinant means a richer synthesis does not hold. "
        "Since log p(x) = log N(z) + log|det dz/dx|, a perfect model's average log|det dz/dx| "
        "over the data is fixed by the data alone, D/2 log(2 pi e) - H(X) ("
        + ", ".join(f"{target:.3f} for D={dim}" for dim, target in
                    {s["dim"]: s["logdet_target"] for s in scores.values()}.items())
        + "; measured: "
        + ", ".join(f"{lb} {s['logdet_mean']:.3f}" for lb, s in scores.items())
        + "), and rescaling the data by c moves it by D log c without changing what is "
        "synthesised. Richness is measured by the likelihood and the sample distances above; "
        "what A adds is mixing, through off-diagonal entries that leave the determinant as it is."
    )
    sentences.append(
        "Where the cost comes from (both flows on the torch engine): per layer the triangular "
        "flow adds a D_a x D_a matrix product to each density evaluation and a triangular "
        "solve to each sample, O(D_a^2) per point.")
    return sentences
