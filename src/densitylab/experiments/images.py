"""The ``images`` study: multi-scale Glow, multi-scale RealNVP and a single-scale flow of the
same parameter count on the 8x8 digits (fixed split), each trained with early stopping; uniform
against variational dequantization; per-pixel categorical and full-covariance Gaussian
reference rows; likelihoods for novelty. Every number in the findings comes from the run."""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np

from densitylab import datasets, plots
from densitylab.experiments.findings import (
    Z,
    best_sentence,
    compare,
    difference_se,
    pair,
    paired_table,
    se_kind,
    versus,
)
from densitylab.experiments.runner import Outcome, Table
from densitylab.image_estimator import ImageFlow
from densitylab.image_figures import dequantization_noise, image_figures
from densitylab.plots import images as image_plots

LEVELS = 17
LEFT_OUT = 7  # the digit class the novelty model never sees
HIDDEN = 32
VARIATIONAL = "multi-scale Glow, variational dequantization"


def _parameters(est_or_flow) -> int:
    flow = getattr(est_or_flow, "flow_", est_or_flow)
    return sum(p.numel() for p in flow.parameters())


def _models(quick: bool) -> dict[str, ImageFlow]:
    """The compared flows; the single-scale one gets the step count whose size is closest to
    the multi-scale Glow's."""
    budget = dict(epochs=4 if quick else 150, patience=None if quick else 8, hidden=HIDDEN,
                  pixel_levels=LEVELS, random_state=0)
    glow = ImageFlow(model="glow", levels=2, steps=2, **budget)
    target = _parameters(glow.build((1, 8, 8), LEVELS))
    steps = min(range(1, 9), key=lambda k: abs(_parameters(
        ImageFlow(model="glow", levels=1, steps=k, **budget).build((1, 8, 8), LEVELS)) - target))
    return {
        "multi-scale Glow": glow,
        "multi-scale RealNVP": ImageFlow(model="realnvp", levels=2, steps=1, **budget),
        "single-scale Glow": ImageFlow(model="glow", levels=1, steps=steps, **budget),
        VARIATIONAL: ImageFlow(model="glow", levels=2, steps=2, dequantization="variational",
                               **budget),
    }


def couplings(est: ImageFlow) -> int:
    """Affine couplings in a flow: one per Glow step; per scale, RealNVP's ``steps``
    checkerboard and ``steps`` channel couplings."""
    return est.levels * est.steps * (2 if est.model == "realnvp" else 1)


def _fewer_couplings(metrics: dict, bpd: dict) -> str:
    """The RealNVP/Glow project's claim that RealNVP needs fewer coupling layers, against the
    multi-scale pair: their couplings, bits/dim and epochs (and seconds) to the target."""
    r, g = "multi-scale RealNVP", "multi-scale Glow"
    count = metrics.get("couplings") or {k: couplings(est) for k, est in _models(False).items()}
    epochs, seconds = metrics["epochs_to_target"], metrics.get("seconds_to_target", {})

    def reach(k):
        if not epochs.get(k):
            return "never"
        return f"epoch {epochs[k]}" + (f" ({seconds[k]:.1f} s)" if seconds.get(k) else "")
    paired = pair(metrics.get("paired_se"), r, g)
    outcome = compare(*bpd[r], *bpd[g], paired=paired)
    verdict = {-1: "better", 1: "worse", 0: "within noise"}[outcome]
    # fewer couplings for as good a fit, or as many for a better one; worse with as many or
    # more refutes it; anything else this pair cannot decide
    if (outcome <= 0 and count[r] < count[g]) or (outcome < 0 and count[r] <= count[g]):
        claim = "holds here."
    elif outcome > 0 and count[r] >= count[g]:
        claim = "does not hold here."
    else:
        claim = "is neither supported nor refuted by this pair."
    return (f"The project's claim that RealNVP needs fewer coupling layers: the multi-scale "
            f"RealNVP has {count[r]} couplings, the multi-scale Glow {count[g]} (each after a "
            f"1x1 convolution); the RealNVP is {verdict} on test bits/dim ({bpd[r][0]:.3f} "
            f"against {bpd[g][0]:.3f}; {Z:g} standard errors, {se_kind(paired)}) and reaches "
            f"the target at {reach(r)} against {reach(g)}: the claim {claim}")


def _mean_se(values: np.ndarray) -> tuple[float, float]:
    return float(values.mean()), float(values.std(ddof=1) / math.sqrt(len(values)))


def _categorical_bpd(train: np.ndarray, test: np.ndarray) -> np.ndarray:
    """Independent per-pixel categorical (add-one smoothed histogram): exact discrete bits."""
    rows, cols = train.reshape(len(train), -1), test.reshape(len(test), -1)
    counts = np.stack([np.bincount(rows[:, j], minlength=LEVELS) for j in range(rows.shape[1])])
    probs = (counts + 1.0) / (len(rows) + LEVELS)
    return -np.log2(probs[np.arange(cols.shape[1]), cols]).mean(axis=1)


def _gaussian_bpd(train: np.ndarray, test: np.ndarray, draws: int = 10) -> np.ndarray:
    """Full-covariance Gaussian fitted to uniformly dequantized pixels; the importance-weighted
    dequantization bound with ``draws`` draws, as for the flows."""
    rng = np.random.default_rng(0)
    rows = train.reshape(len(train), -1) + rng.random((len(train), 64))
    mean, cov = rows.mean(axis=0), np.cov(rows, rowvar=False)
    chol = np.linalg.cholesky(cov)
    log_norm = -0.5 * 64 * math.log(2 * math.pi) - np.log(np.diag(chol)).sum()
    values = []
    for _ in range(draws):
        centred = test.reshape(len(test), -1) + rng.random((len(test), 64)) - mean
        solved = np.linalg.solve(chol, centred.T)
        values.append(log_norm - 0.5 * (solved ** 2).sum(axis=0))
    stacked = np.stack(values)
    top = stacked.max(axis=0)
    ll = top + np.log(np.exp(stacked - top).mean(axis=0))
    return -ll / (64 * math.log(2))


def _to_target(history, target: float) -> tuple[int | None, float | None]:
    """First epoch (and its wall time) whose validation bound reaches ``target`` bits/dim."""
    for epoch, (val, seconds) in enumerate(zip(history.val_nll, history.seconds, strict=True), 1):
        if val / (64 * math.log(2)) <= target:
            return epoch, seconds
    return None, None


def run_images(out: Path, quick: bool) -> Outcome:
    start = time.perf_counter()
    pixels, labels = datasets.images("digits"), _labels()
    train, val, test = datasets.image_split(len(pixels))
    if quick:
        train, val = train[:400], val[:60]
    fitted, rows, results, per_image = {}, [], {}, {}
    for label, est in _models(quick).items():
        est.fit(pixels[train], X_val=pixels[val])
        fitted[label] = est
        bpd = per_image[label] = est.score_samples(pixels[test])
        epochs = len(est.history_.val_nll)
        results[label] = {"bpd": _mean_se(bpd), "parameters": _parameters(est),
                          "epochs": epochs, "best_epoch": est.best_epoch_,
                          "seconds": est.wall_time_, "history": est.history_}
    target = max(min(r["history"].val_nll) for r in results.values()) / (64 * math.log(2))
    for r in results.values():
        r["epochs_to_target"], r["seconds_to_target"] = _to_target(r["history"], target)
    per_image["per-pixel categorical"] = _categorical_bpd(pixels[train], pixels[test])
    per_image["full-covariance Gaussian"] = _gaussian_bpd(pixels[train], pixels[test])
    references = {k: _mean_se(per_image[k])
                  for k in ("per-pixel categorical", "full-covariance Gaussian")}
    for label, r in results.items():
        mean, se = r["bpd"]
        reach = ("-" if r["epochs_to_target"] is None else
                 f"{r['epochs_to_target']} / {r['seconds_to_target']:.1f} s")
        rows.append([label, f"{mean:.3f} ± {se:.3f}", f"{r['parameters']:,}",
                     f"{r['best_epoch']} of {r['epochs']}", f"{r['seconds']:.1f}", reach])
    for label, (mean, se) in references.items():
        rows.append([label + " (reference)", f"{mean:.3f} ± {se:.3f}", "-", "-", "-", "-"])

    # likelihoods for novelty: a Glow that never saw one class, scored on four groups
    novelty_est = _models(quick)["multi-scale Glow"]
    seen = train[labels[train] != LEFT_OUT]
    novelty_est.fit(pixels[seen], X_val=pixels[val[labels[val] != LEFT_OUT]])
    rng = np.random.default_rng(1)
    groups = {
        "held-out digits (seen classes)": pixels[test[labels[test] != LEFT_OUT]],
        f"left-out class {LEFT_OUT}": pixels[test[labels[test] == LEFT_OUT]],
        "uniform noise images": rng.integers(0, LEVELS, (100, 1, 8, 8)),
        "blank images with sparse noise": (rng.random((100, 1, 8, 8)) < 0.05) * rng.integers(
            0, LEVELS, (100, 1, 8, 8)),
    }
    novelty = {name: novelty_est.score_samples(images) for name, images in groups.items()}

    glow = fitted["multi-scale Glow"]
    figures = image_figures(glow, pixels[test], seed=0)
    figures["dequantization"] = dequantization_noise(
        fitted[VARIATIONAL], pixels[test], seed=0)
    figures["loss"] = plots.loss({k: r["history"] for k, r in results.items()},
                                 title="Dequantized NLL per epoch (nats per image)")
    figures["novelty"] = image_plots.score_histograms(
        novelty, f"Bits/dim under a Glow trained without digit {LEFT_OUT}")
    figures["single-scale-samples"] = image_plots.grids(
        {f"{k}, T = 0.7": fitted[k].sample(36, temperature=0.7, random_state=0)
         for k in ("multi-scale RealNVP", "single-scale Glow")}, "Samples of the other flows",
        LEVELS)
    plots.save_figures(out / "figures", figures, strict=True)

    estimates = {k: r["bpd"] for k, r in results.items()} | references
    novel = {k: _mean_se(v) for k, v in novelty.items()}
    table = Table("Test bits/dim on the 397 test digits (± standard error)",
                  ["model", "test bits/dim", "parameters", "best epoch of run", "seconds",
                   f"epoch / time to {target:.3f}"], rows,
                  note="Split: numpy default_rng(0) shuffle, first 1,400 train (last 140 of "
                  "them validation), 397 test" + (" (quick: 400 train, 60 validation)"
                                                  if quick else "") + ". The flows' bits/dim "
                  "are importance-weighted dequantization bounds (10 draws): upper bounds on "
                  "each model's true bits/dim.")
    metrics = {"bits_per_dim": {k: list(v) for k, v in estimates.items()},
               "parameters": {k: r["parameters"] for k, r in results.items()},
               "epochs": {k: r["epochs"] for k, r in results.items()},
               "seconds": {k: r["seconds"] for k, r in results.items()},
               "target": target,
               "epochs_to_target": {k: r["epochs_to_target"] for k, r in results.items()},
               "seconds_to_target": {k: r["seconds_to_target"] for k, r in results.items()},
               "couplings": {k: couplings(est) for k, est in _models(quick).items()},
               # every model scored on the same test digits: paired errors of the differences
               "paired_se": paired_table(per_image),
               "novelty": {k: list(v) for k, v in novel.items()}}
    captions = {
        "samples.png": "Test digits and multi-scale Glow samples at temperatures 0.5, 0.7, 1.0.",
        "interpolation.png": "Decoded straight line between the latents of two test digits.",
        "scales.png": "One digit with the latents of the finest scales drawn afresh.",
        "dequantization.png": "The learned (variational) dequantization noise of eight test "
        "digits.",
        "layers.png": "One test digit after every transform of the Glow, x -> z.",
        "loss.png": "Training and validation bound per epoch of every flow.",
        "novelty.png": f"Bits/dim of four groups under a Glow trained without digit {LEFT_OUT}.",
        "single-scale-samples.png": "Samples of the RealNVP and the single-scale Glow.",
    }
    return Outcome(name="images", title="Images: multi-scale RealNVP and Glow on 8x8 digits",
                   question="Glow's invertible 1x1 convolutions and multi-scale architecture on "
                   "images: bits/dim, speed, samples, dequantization and novelty.",
                   findings=images_findings(metrics), figures=captions, tables=[table],
                   metrics=metrics,                   seconds=time.perf_counter() - start)


FLOWS = ("multi-scale Glow", "multi-scale RealNVP", "single-scale Glow")
HELD = "held-out digits (seen classes)"
BLANK = "blank images with sparse noise"


def images_findings(metrics: dict) -> list[str]:
    """The section's text from its saved metrics: a short summary, then bullets."""
    bpd = {k: tuple(v) for k, v in metrics["bits_per_dim"].items()}
    paired = metrics.get("paired_se")
    novel = {k: tuple(v) for k, v in metrics["novelty"].items()}
    left_out = f"left-out class {LEFT_OUT}"
    scale = versus("the multi-scale Glow", *bpd["multi-scale Glow"], "the single-scale Glow of "
                   "about the same size", *bpd["single-scale Glow"], "test bits/dim",
                   unit="bits/dim", paired=pair(paired, "multi-scale Glow", "single-scale Glow"))
    blank = compare(*novel[BLANK], *novel[HELD])
    novelty = {-1: "blank images with sparse noise get a higher likelihood than real digits, "
               "the known failure of likelihoods for novelty",
               0: "blank images with sparse noise score within noise of real digits, so "
               "likelihood cannot tell them apart",
               1: "blank images with sparse noise get a lower likelihood than real digits"}[blank]
    best = best_sentence(bpd, "test bits/dim, the lowest", paired=paired)
    summary = (f"{_capital(best)}. "
               f"{_capital(scale)}. As a novelty score, {novelty}.")
    seconds = metrics.get("seconds_to_target", {})
    reached = [f"{k} at epoch {e}" + (f" ({seconds[k]:.1f} s)" if k in seconds else "")
               for k, e in metrics["epochs_to_target"].items() if e]
    missed = [k for k, e in metrics["epochs_to_target"].items() if not e]
    return [
        summary,
        _capital(best_sentence({k: bpd[k] for k in FLOWS}, "bits/dim among the three flows",
                               paired=paired))
        + ".",
        "Dequantization: " + versus("uniform", *bpd["multi-scale Glow"], "variational",
                                    *bpd[VARIATIONAL], "the multi-scale Glow's test bits/dim",
                                    unit="bits/dim",
                                    paired=pair(paired, "multi-scale Glow", VARIATIONAL)) + ".",
        f"Speed to {metrics['target']:.3f} bits/dim (the worst best validation bound of the four "
        f"flows): reached by {', '.join(reached) or 'none'}"
        + (f"; not reached by {', '.join(missed)}" if missed else "") + ".",
        _fewer_couplings(metrics, bpd),
        _novelty(left_out, novel[left_out], novel[HELD]),
        _novelty("blank images with sparse noise", novel[BLANK], novel[HELD]),
        f"Uniform noise images score {novel['uniform noise images'][0]:.2f} bits/dim under the "
        f"Glow trained without digit {LEFT_OUT}.",
    ]


def _novelty(label: str, group: tuple[float, float], held: tuple[float, float]) -> str:
    """How likely a group of images is, against held-out digits, under the novelty Glow."""
    outcome = compare(*group, *held)
    noise = Z * difference_se(group[1], held[1])
    verdict = {-1: "likelier than real digits beyond noise", 0: "within noise of real digits",
               1: "less likely than real digits beyond noise"}[outcome]
    return (f"Novelty, {label}: {group[0]:.3f} ± {group[1]:.3f} bits/dim against "
            f"{held[0]:.3f} ± {held[1]:.3f} for held-out digits of seen classes: {verdict} "
            f"({Z:g} standard errors of the difference = {noise:.3f}).")


def _capital(sentence: str) -> str:
    return sentence[0].upper() + sentence[1:]


def _labels() -> np.ndarray:
    from sklearn.datasets import load_digits

    return load_digits().target
