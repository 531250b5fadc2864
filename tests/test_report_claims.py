"""The report's claims follow from its numbers: findings recomputed from metrics, a VAE that
does not collapse, sample quality that sees support and modes, readable figure layouts."""

from __future__ import annotations

import copy
import re

import numpy as np
import pytest

from densitylab import experiments, metrics
from densitylab.experiments.runner import Outcome


def run_metrics(test_nll: float, se: float = 0.01, entropy: float = 2.0, final: float | None = None,
                gaussian: float = 3.0) -> dict:
    """The metrics of one trained flow, as the runner saves them (only what findings read)."""
    final = test_nll if final is None else final
    return {
        "test_nll": test_nll, "test_nll_se": se, "entropy": entropy,
        "entropy_gap": test_nll - entropy, "final_test_nll": final, "final_test_nll_se": se,
        "final_entropy_gap": final - entropy, "final_minus_best_se": se / 4, "best_epoch": 120,
        "epochs_run": 250, "epochs": 250, "data": "gaussians-rot",
        "gaussian": {"test_nll": gaussian, "test_nll_se": se, "entropy_gap": gaussian - entropy},
        "sample_quality": {"low_density_fraction": 0.05, "precision": 0.9, "recall": 0.97},
        "history": {"val_nll": [3.0, 2.5, 2.4], "train_nll": [3.0, 2.4, 2.3]},
    }


def depth_outcome() -> Outcome:
    measured = {"K=2": run_metrics(2.40), "K=4": run_metrics(2.20, final=2.45)}
    experiment = experiments.get("depth")
    return Outcome("depth", "t", "q", experiment.findings(measured), metrics=measured)


def test_findings_are_recomputed_from_the_metrics_and_a_hand_edit_fails():
    outcome = depth_outcome()
    experiments.check_findings(outcome)  # as computed: passes
    text = " ".join(outcome.findings)
    assert "K=4 fits better" in text and "final-weights rule says instead" in text
    for old, new in (("2.200", "2.100"),  # a number
                     ("K=4 fits better", "K=2 fits better"),  # a verdict
                     ("beats the single Gaussian", "is worse than the single Gaussian")):
        edited = copy.deepcopy(outcome)
        index = next(i for i, line in enumerate(edited.findings) if old in line)
        edited.findings[index] = edited.findings[index].replace(old, new, 1)
        with pytest.raises(ValueError, match="does not follow from its metrics"):
            experiments.check_findings(edited)
    shorter = copy.deepcopy(outcome)
    shorter.findings.pop()
    with pytest.raises(ValueError, match="findings"):
        experiments.check_findings(shorter)


def test_a_difference_within_noise_is_never_called_better():
    measured = {"K=2": run_metrics(2.21, se=0.02), "K=4": run_metrics(2.20, se=0.02)}
    text = " ".join(experiments.get("depth").findings(measured))
    assert "depth makes no difference beyond noise" in text
    assert "fits better" not in text


def test_the_report_refuses_a_page_whose_text_was_edited(tmp_path):
    from densitylab.experiments.runner import Table
    from densitylab.report import render

    outcome = depth_outcome()
    outcome.findings[0] = outcome.findings[0].replace("K=4 fits better", "K=2 fits better")
    (tmp_path / "depth" / "figures").mkdir(parents=True)
    table = Table("t", ["a"], [])
    with pytest.raises(ValueError, match="depth: finding 1"):
        render([outcome], tmp_path, True, table, table)


def test_a_summary_longer_than_three_sentences_is_refused():
    from densitylab.report import _text, sentences

    assert sentences("K=4 fits better (test NLL 2.524 against 2.638). Both agree.") == 2
    assert sentences("Does depth help? Yes. Measured twice. Done.") == 4
    outcome = depth_outcome()
    assert _text(outcome)[0] == outcome.findings[0]
    outcome.findings[0] += " One more. And another."
    with pytest.raises(ValueError, match="depth: its summary has 5 sentences"):
        _text(outcome)


# -- sample quality that sees support and modes ------------------------------------------------
GRID = np.array([(a, b) for a in range(5) for b in range(5)], dtype=float)


def mixture(n: int, std: float, seed: int, weights=None) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return GRID[rng.choice(len(GRID), n, p=weights)] + std * rng.normal(size=(n, 2))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_support_recall_ranks_a_collapsed_sampler_below_a_faithful_one(seed):
    """25 modes of std 0.1. The faithful sampler covers every mode at the right width, with
    unequal mode weights; the collapsed one squeezes every mode to 40% of its width. Energy
    distance prefers the collapsed sampler; support recall sees the missing mass."""
    data = mixture(2000, 0.1, seed)
    weights = np.where(np.arange(25) % 2 == 0, 4.0, 1.0)
    faithful = mixture(2000, 0.1, seed + 20, weights / weights.sum())
    collapsed = mixture(2000, 0.04, seed + 10)
    energy = {name: metrics.energy_distance(s, data) for name, s in
              (("faithful", faithful), ("collapsed", collapsed))}
    assert energy["collapsed"] < energy["faithful"]  # the distance is fooled
    good = metrics.support_precision_recall(faithful, data)
    bad = metrics.support_precision_recall(collapsed, data)
    assert bad["recall"] < good["recall"] - 0.2
    assert good["precision"] > 0.95 and good["recall"] > 0.95
    quality = metrics.sample_quality(collapsed, data)
    assert quality["recall"] == pytest.approx(bad["recall"])


def test_support_precision_sees_samples_off_the_data():
    data = mixture(1000, 0.1, 0)
    smeared = mixture(1000, 0.3, 1)
    assert metrics.support_precision_recall(smeared, data)["precision"] < 0.8
    with pytest.raises(ValueError, match="k"):
        metrics.support_precision_recall(data[:4], data[:4])


# -- the VAE: collapse detected, and repaired --------------------------------------------------
def test_collapse_diagnosis_rule():
    from densitylab.baselines import collapse_diagnosis

    collapsed = collapse_diagnosis(4.014, 4.013, 0.004, 4.010, 0.002)
    assert collapsed["collapsed"] and collapsed["bound_gap"] == pytest.approx(0.001)
    healthy = collapse_diagnosis(3.37, 2.98, 0.007, 4.01, 0.002)
    assert not healthy["collapsed"] and healthy["margin"] == pytest.approx(1.03)


@pytest.mark.slow
def test_plain_vae_collapses_and_free_bits_repairs_it():
    """Seven rotated Gaussians, 800 training points: the plain ELBO VAE is no better than one
    Gaussian (the detector fires); with free bits its IW NLL is far below it."""
    import torch

    from densitylab import datasets
    from densitylab.baselines import VAE, collapse_diagnosis, fit_vae
    from densitylab.evaluation import gaussian_reference

    truth = datasets.get("gaussians-rot", num_gaussians=7)
    x, val, test = truth.sample(800, seed=0), truth.sample(1000, seed=2), truth.sample(2000, seed=1)
    reference = gaussian_reference(x, test)
    verdicts = {}
    for free_bits in (0.0, 0.5):
        vae = fit_vae(VAE(2, seed=8), x, x_val=val, epochs=120, standardize=True,
                      free_bits=free_bits, verbose=False).model
        with torch.no_grad():
            iw, _ = vae.log_prob_iw(test, k=200, seed=2)
            elbo = vae.elbo(test, seed=3)
        iw_nll, iw_se = metrics.nll_with_error(iw.double().numpy())
        verdicts[free_bits] = collapse_diagnosis(float(-elbo.mean()), iw_nll, iw_se,
                                                 reference["test_nll"], reference["test_nll_se"])
    assert verdicts[0.0]["collapsed"], verdicts
    assert not verdicts[0.5]["collapsed"] and verdicts[0.5]["margin"] > 0.5, verdicts
    assert verdicts[0.0]["bound_gap"] < 0.05 < verdicts[0.5]["bound_gap"]


def test_kl_warmup_and_free_bits_are_checked():
    from densitylab.baselines import VAE, fit_vae

    x = np.random.default_rng(0).normal(size=(50, 2))
    with pytest.raises(ValueError, match="kl_warmup"):
        fit_vae(VAE(2), x, kl_warmup=2.0)
    with pytest.raises(ValueError, match="free_bits"):
        fit_vae(VAE(2), x, free_bits=-1.0)


# -- both weight-keeping rules ------------------------------------------------------------------
def test_fit_keeps_the_final_weights_beside_the_best_when_asked():
    import torch

    from densitylab import datasets
    from densitylab.flows import realnvp
    from densitylab.training import fit

    x = datasets.get("moons").sample(300, seed=0)
    result = fit(realnvp(2, 2, (8, 8), seed=0), x, epochs=6, seed=0, verbose=False,
                 keep_final=True, lr=5e-2)
    assert result.final_model is not None
    points = torch.as_tensor(x[:50], dtype=result.flow.dtype)
    with torch.no_grad():
        best, final = result.flow.log_prob(points), result.final_model.log_prob(points)
    assert torch.equal(best, final) == (result.best_epoch == 6)
    plain = fit(realnvp(2, 2, (8, 8), seed=0), x, epochs=6, seed=0, verbose=False, lr=5e-2)
    assert plain.final_model is None
    with torch.no_grad():
        assert torch.equal(plain.flow.log_prob(points), best)  # the kept model is unchanged


# -- layout rules --------------------------------------------------------------------------------
def test_layer_plots_never_strand_a_lone_panel():
    from densitylab.plots._layout import layout_problems
    from densitylab.plots.flows import balanced_grid, trace_panels

    assert [balanced_grid(n) for n in (2, 3, 4, 5, 6, 9)] == [
        (2, 1), (3, 1), (4, 1), (3, 2), (3, 2), (3, 3)]
    trace = [np.random.default_rng(i).normal(size=(50, 2)) for i in range(5)]
    fig = trace_panels(trace, [f"l{i}" for i in range(5)], "five panels")
    assert layout_problems(fig) == []
    from densitylab.plots._figure import Figure

    stranded = Figure(figsize=(8, 5), layout="constrained")
    axes = stranded.subplots(2, 4)
    for ax in axes[1, 1:]:
        ax.set_visible(False)
    assert any("lone panel" in p for p in layout_problems(stranded))


def test_two_plus_one_is_a_lone_panel_and_three_loss_panels_share_one_row():
    from densitylab.plots._figure import Figure
    from densitylab.plots._layout import layout_problems
    from densitylab.plots.flows import loss_curves
    from densitylab.training.result import History

    two_plus_one = Figure(figsize=(8, 6), layout="constrained")
    axes = two_plus_one.subplots(2, 2)
    axes[1, 1].set_visible(False)
    assert any("lone panel" in p for p in layout_problems(two_plus_one))
    histories = {lb: History({"train_nll": [2.0, 1.5], "val_nll": [2.1, 1.6]}, [0.1, 0.2])
                 for lb in "abc"}
    fig = loss_curves(histories, groups={lb: (lb,) for lb in "abc"})
    assert layout_problems(fig) == []
    rows = {ax.get_subplotspec().rowspan.start for ax in fig.axes if ax.get_visible()}
    assert rows == {0}


def test_loss_curves_keep_one_colour_per_run_across_panels():
    from densitylab.plots.flows import loss_curves
    from densitylab.training.result import History

    histories = {lb: History({"train_nll": [2.0, 1.5], "val_nll": [2.1, 1.6]}, [0.1, 0.2])
                 for lb in ("a", "b", "c")}
    fig = loss_curves(histories, groups={"one": ("a", "b"), "two": ("c", "b")})
    colours = {}
    for ax in fig.axes:
        for line in ax.get_lines():
            label = line.get_label().split(" ")[0]
            colours.setdefault(label, set()).add(line.get_color())
    assert all(len(c) == 1 for lb, c in colours.items() if lb in "abc"), colours


def test_one_model_in_several_sections_is_reconciled():
    from densitylab.experiments.spec import Budget, Data, Model, Run
    from densitylab.report import reconciliation

    def run(epochs: int) -> str:
        from densitylab.experiments.runner import run_key

        return run_key(Run("r", Data("gaussians-rot"), Model(), Budget(epochs)))

    task9 = Outcome("flows-per-dataset", "t", "q", [], metrics={
        "rot": run_metrics(2.78) | {"run_key": run(500), "data_label": "rot"}})
    task11 = Outcome("data-size", "t", "q", [], metrics={
        "N=1500": run_metrics(2.73) | {"run_key": run(400), "data_label": "rot"},
        "N=3000": run_metrics(2.60) | {"run_key": run(400).replace("1350", "2700")}})
    table = reconciliation([task9, task11])
    assert [row[1] for row in table.rows] == ["flows-per-dataset: rot", "data-size: N=1500"]
    # 0.05 apart with SE 0.01, best epoch 120 of 250: the worse one is training noise
    assert "within noise of the best" in table.rows[1][-1]
    assert "training noise" in table.rows[0][-1]
    late = copy.deepcopy(task9)
    late.metrics["rot"]["best_epoch"] = 249
    assert "still improving" in reconciliation([late, task11]).rows[0][-1]
    same = Outcome("depth", "t", "q", [], metrics={
        "K=4": run_metrics(2.779) | {"run_key": run(250), "data_label": "rot"}})
    assert all("within noise" in row[-1] for row in reconciliation([task9, same]).rows)
    assert reconciliation([task9]) is None


# -- the images and continuous-flows studies: summary, bullets, every number checked ----------
def images_metrics(blank: float = 1.60) -> dict:
    """The saved metrics of the images study (only what its findings read)."""
    bpd = {"multi-scale Glow": [2.50, 0.01], "multi-scale RealNVP": [2.56, 0.01],
           "single-scale Glow": [2.62, 0.01],
           "multi-scale Glow, variational dequantization": [2.44, 0.01],
           "per-pixel categorical": [2.70, 0.01], "full-covariance Gaussian": [3.10, 0.01]}
    return {"bits_per_dim": bpd, "target": 2.66,
            "epochs_to_target": {"multi-scale Glow": 3, "multi-scale RealNVP": 4,
                                 "single-scale Glow": None,
                                 "multi-scale Glow, variational dequantization": 2},
            "novelty": {"held-out digits (seen classes)": [2.50, 0.02],
                        "left-out class 7": [2.53, 0.03], "uniform noise images": [4.64, 0.01],
                        "blank images with sparse noise": [blank, 0.02]}}


def continuous_flows_metrics() -> dict:
    """The saved metrics of the continuous-flows study: three laws, four models."""
    def row(gap: float, seconds: float, nfe: float | None = None) -> dict:
        out = {"test_nll": 2.0 + gap, "test_nll_se": 0.005, "entropy_gap": gap,
               "train_seconds": seconds, "score_seconds": seconds / 100, "best_epoch": 10}
        if nfe is not None:
            out |= {"nfe_per_solve": nfe, "train_nfe_first_last": [20.0, 50.0]}
        return out

    models = ("recommended spline", "coursework RealNVP", "CNF (max. likelihood)",
              "CNF (flow matching)")
    gaps = {"moons": (0.01, 0.20, 0.03, 0.08), "rings": (0.02, 0.30, 0.10, 0.04),
            "spiral": (0.04, 0.40, 0.20, 0.20)}
    seconds = {"CNF (max. likelihood)": 30.0, "CNF (flow matching)": 10.0}
    nfe = {"CNF (max. likelihood)": 80.0, "CNF (flow matching)": 30.0}
    return {law: {"entropy": 2.0} | {m: row(g, seconds.get(m, 2.0), nfe.get(m))
                                     for m, g in zip(models, values, strict=True)}
            for law, values in gaps.items()}


@pytest.mark.parametrize("name, measured, old, new", [
    ("images", images_metrics(), "2.440 ± 0.010", "2.400 ± 0.010"),
    ("images", images_metrics(), "likelier than real digits", "less likely than real digits"),
    ("continuous-flows", continuous_flows_metrics(), "takes 3.0 times", "takes 0.3 times"),
    ("continuous-flows", continuous_flows_metrics(), "median gap 0.100", "median gap 0.050"),
])
def test_new_studies_findings_are_a_summary_and_bullets_checked_from_metrics(name, measured, old,
                                                                            new):
    findings = experiments.get(name).findings(measured)
    assert isinstance(findings, list) and len(findings) >= 3
    summary, bullets = findings[0], findings[1:]
    assert len(re.findall(r"[.?!](?:\s|$)", summary)) <= 3 and not summary.startswith("- ")
    assert not any(b.startswith("- ") or "\n" in b for b in bullets)
    outcome = Outcome(name, "t", "q", findings, metrics=measured)
    experiments.check_findings(outcome)
    edited = copy.deepcopy(outcome)
    index = next(i for i, line in enumerate(edited.findings) if old in line)
    edited.findings[index] = edited.findings[index].replace(old, new, 1)
    with pytest.raises(ValueError, match=f"{name}: finding {index + 1} does not follow"):
        experiments.check_findings(edited)


def test_images_novelty_verdict_follows_the_numbers():
    likelier = experiments.get("images").findings(images_metrics(blank=1.60))
    assert "known failure of likelihoods for novelty" in likelier[0]
    tied = experiments.get("images").findings(images_metrics(blank=2.51))
    assert "cannot tell them apart" in tied[0] and "known failure" not in tied[0]


def test_the_page_links_the_images_and_continuous_flows_answers(tmp_path):
    """The 1x1-convolution / multi-scale and continuous-flow questions of the source documents
    point at the two sections, whose summary and bullets the page shows."""
    from markupsafe import escape

    from densitylab.derivations import ANCHORS
    from densitylab.experiments.runner import Table
    from densitylab.report import render

    outcomes = [Outcome(name, "title " + name, "q", experiments.get(name).findings(m), metrics=m)
                for name, m in (("images", images_metrics()),
                                ("continuous-flows", continuous_flows_metrics()))]
    table = Table("t", ["a"], [])
    page = render(outcomes, tmp_path, True, table, table)
    rows = re.findall(r"<tr><td>([^<]*)</td><td>([^<]*)</td><td>([^<]*)</td>\s*<td>(.*?)</td>",
                      page)
    where = {asks: cell for _, _, asks, cell in rows}
    glow = ANCHORS["Glow's extra layers"]
    assert f'href="#{glow}"' in where["invertible (1x1) convolutions, multi-scale features"]
    assert 'href="#images"' in where["RealNVP needs fewer coupling layers"]
    assert 'href="#continuous-flows"' in where["continuous normalizing flows (Neural ODEs)"]
    assert 'Measured in <a href="#images">' in page  # from the derivation of Glow's layers
    assert 'Measured in <a href="#continuous-flows">' in page
    for outcome in outcomes:
        assert f'<p class="summary"><strong>In short:</strong> {escape(outcome.findings[0])}' \
            in page
        assert all(f"<li>{escape(b)}</li>" in page for b in outcome.findings[1:])
    alone = render(outcomes[:1], tmp_path, True, table, table)
    assert "the study <code>continuous-flows</code> was not run" in alone


def test_numpy_speed_explanation_only_where_size_separates_wins_from_losses():
    from densitylab.experiments.engines import _where

    configs = [(64, 32), (256, 32), (64, 128), (64, 512)]
    se = {e: [0.0001] * 4 for e in ("NumPy", "torch (autograd)")}
    clean = {"NumPy": [0.01, 0.01, 0.04, 0.4], "torch (autograd)": [0.03, 0.02, 0.03, 0.1]}
    assert "up to 8192 and loses at every one from 8192" not in _where(configs, clean, se)
    assert "wins at every setting with batch x width up to 8192" not in _where(configs, clean, se)
    separated = {"NumPy": [0.01, 0.01, 0.04, 0.4], "torch (autograd)": [0.03, 0.02, 0.05, 0.1]}
    assert "up to 8192 and loses at every one from 32768" in _where(configs, separated, se)
    tie = {"NumPy": [0.01, 0.01, 0.04, 0.4], "torch (autograd)": [0.03, 0.02, 0.04, 0.1]}
    assert _where(configs, tie, se) == ""  # 64 x 128 = 8192 is a tie: no size separates them


# -- paired standard errors: two models on the same test points -------------------------------
def correlated_scores(n: int = 20_000, shift: float = 0.02, seed: int = 0):
    """Two models' per-point log-densities on one test set: they share the points' large
    spread (hard points are hard for both) and differ by a small, consistent ``shift``."""
    rng = np.random.default_rng(seed)
    common = rng.normal(-2.0, 1.5, n)
    return common + shift + rng.normal(0, 0.05, n), common + rng.normal(0, 0.05, n)


def test_paired_and_unpaired_errors_disagree_and_the_rule_uses_the_paired_one():
    from densitylab.experiments.findings import compare, paired_se, versus

    a, b = correlated_scores()
    (nll_a, se_a), (nll_b, se_b) = metrics.nll_with_error(a), metrics.nll_with_error(b)
    paired = paired_se(a, b)
    assert paired < se_a / 10  # the shared spread cancels in the per-point differences
    assert compare(nll_a, se_a, nll_b, se_b) == 0  # unpaired: 0.02 is within noise
    assert compare(nll_a, se_a, nll_b, se_b, paired=paired) == -1  # paired: a is better
    text = versus("A", nll_a, se_a, "B", nll_b, se_b, "test NLL", paired=paired)
    assert text.startswith("A is better than B") and "paired: the same test points" in text
    unpaired = versus("A", nll_a, se_a, "B", nll_b, se_b, "test NLL")
    assert "within noise" in unpaired and "(unpaired)" in unpaired
    with pytest.raises(ValueError, match="one length"):
        paired_se(a, b[:-1])


def test_runs_on_the_same_test_points_are_compared_paired():
    """The depth study's two runs share their test points: the stored paired error decides,
    and editing the verdict by hand still fails the check."""
    from densitylab.experiments.findings import paired_se

    a, b = correlated_scores()
    (nll_a, se_a), (nll_b, se_b) = metrics.nll_with_error(a), metrics.nll_with_error(b)
    measured = {"K=4": run_metrics(nll_a, se=se_a), "K=2": run_metrics(nll_b, se=se_b)}
    unpaired = " ".join(experiments.get("depth").findings(copy.deepcopy(measured)))
    assert "depth makes no difference beyond noise" in unpaired
    for rule in ("paired_se", "final_paired_se"):
        measured["K=4"][rule] = {"K=2": paired_se(a, b)}
        measured["K=2"][rule] = {"K=4": paired_se(b, a)}
    outcome = Outcome("depth", "t", "q", experiments.get("depth").findings(measured),
                      metrics=measured)
    text = " ".join(outcome.findings)
    assert "K=4 fits better" in text and "paired: the same test points" in text
    experiments.check_findings(outcome)
    edited = copy.deepcopy(outcome)
    edited.findings[0] = edited.findings[0].replace("K=4 fits better", "depth makes no "
                                                    "difference beyond noise")
    with pytest.raises(ValueError, match="does not follow from its metrics"):
        experiments.check_findings(edited)


def test_real_data_methods_on_the_same_folds_are_compared_paired():
    """Fold means that move together (an easy and a hard fold for every method): the paired
    error of AutoDensity minus the baseline is small and the verdict is 'better'."""
    from densitylab.experiments.real_data import METHODS, real_data_findings

    folds = np.array([-10.0, -14.0, -12.0])  # the folds differ far more than the methods
    shift = {m: 0.0 for m in METHODS} | {"dl.AutoDensity()": 0.5,
                                         "sklearn GaussianMixture (BIC)": -1.0}
    cells = {}
    for m in METHODS:
        means = folds + shift[m] + np.array([0.01, -0.01, 0.0])
        cells[m] = {"fold_means": means.tolist(), "mean": float(means.mean()),
                    "se": float(means.std(ddof=1) / np.sqrt(3))}
    text = " ".join(real_data_findings({"set": cells | {"auto_picked": ["kde"]}}))
    assert "is better than the better scikit-learn baseline" in text  # unpaired: within noise
    assert "paired: every method on the same folds" in text
