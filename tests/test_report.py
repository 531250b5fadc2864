"""`densitylab reproduce --quick` writes a report a browser renders completely, offline."""

from __future__ import annotations

import re
import shutil

import pytest
from markupsafe import escape  # the template's autoescaping
from typer.testing import CliRunner

from densitylab import experiments
from densitylab.cli import app


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    result = CliRunner().invoke(app, ["reproduce", "--out", str(out), "--quick"])
    assert result.exit_code == 0, result.output
    return out / "report.html"


@pytest.mark.slow
def test_report_has_every_section_figure_and_derivation(report):
    page = report.read_text()
    for name in experiments.names():
        assert f'<section id="{name}">' in page
        outcome = experiments.runner.Outcome.read(report.parent / name)
        assert outcome.findings
        for line in outcome.findings:  # the summary and every bullet, as computed
            assert str(escape(line)) in page
        experiments.check_findings(outcome)
        summary = outcome.findings[0]  # plain language, at most three sentences
        assert len(re.findall(r"[.?!](?:\s|$)", summary)) <= 3, summary
    assert page.count("<img") >= len(experiments.names())
    assert "http://" not in page  # formulas and diagrams are base64 SVG: nothing to fetch
    assert "https://" not in page
    assert len(re.findall(r'<img class="formula"', page)) >= 10
    assert 'id="derivations"' in page and 'id="environment"' in page
    assert "whole run (" in page
    # every link inside the page lands on an element of the page
    ids = set(re.findall(r'id="([^"]+)"', page))
    targets = set(re.findall(r'href="#([^"]*)"', page))
    assert targets <= ids, targets - ids
    assert page.count('href="#top"') >= len(experiments.names())  # back to the contents
    assert "<details>" in page  # settings tables fold away
    assert "densitylab-only-in-quick" not in page


@pytest.mark.slow
def test_experiments_in_parallel_give_the_results_of_one_at_a_time(tmp_path):
    names = ["depth", "kde-bandwidth", "numpy-vs-torch"]  # the last one runs alone, at the end
    seen = []
    apart = experiments.run_all(names, tmp_path / "apart", quick=True, jobs=2,
                                on_progress=lambda running, done: seen.append((running, done)))
    alone = experiments.run_all(names, tmp_path / "alone", quick=True, jobs=1)
    assert [o.name for o in apart] == names
    assert seen[-2] == (["numpy-vs-torch"], ["depth", "kde-bandwidth"]) or seen[-2] == (
        ["numpy-vs-torch"], ["kde-bandwidth", "depth"])
    assert seen[-1][0] == [] and sorted(seen[-1][1]) == sorted(names)
    for a, b in zip(apart, alone, strict=True):
        assert_same_numbers(a.metrics, b.metrics)
        assert (tmp_path / "apart" / a.name / "outcome.json").is_file()


def assert_same_numbers(a, b, path="metrics"):
    """Equal structure and values (floats to 1e-9), timings and the machine's load aside."""
    if isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for key in a:
            if not any(word in key for word in ("seconds", "time", "load_average")):
                assert_same_numbers(a[key], b[key], f"{path}.{key}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same_numbers(x, y, f"{path}[{i}]")
    elif isinstance(a, float):
        assert a == pytest.approx(b, rel=1e-9, abs=1e-12, nan_ok=True), path
    else:
        assert a == b, path


@pytest.mark.skipif(not shutil.which("chromium") or not shutil.which("chromedriver"),
                    reason="Debian's chromium and chromium-driver are not installed")
@pytest.mark.slow
def test_report_renders_in_headless_chromium(report, tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    try:
        driver.set_window_size(1200, 900)
        driver.get(report.as_uri())
        images = driver.execute_script(
            "return Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.alt])"
        )
        sections = driver.execute_script(
            "return Array.from(document.querySelectorAll('section')).map(s => s.id)"
        )
        formula_height = driver.execute_script(
            "return Math.max(...Array.from(document.querySelectorAll('img.formula'))"
            ".map(m => m.getBoundingClientRect().height))"
        )
        shapes = driver.execute_script(
            "return Array.from(document.querySelectorAll('figure img'))"
            ".map(i => [i.naturalWidth, i.naturalHeight, i.alt])"
        )
        # open every folded part (settings, layer plots) and measure every figure as shown
        shown = driver.execute_script(
            "document.querySelectorAll('details').forEach(d => d.open = true);"
            "const column = document.body.getBoundingClientRect().width;"
            "return Array.from(document.querySelectorAll('figure img')).map(i => {"
            " const r = i.getBoundingClientRect();"
            " return [r.width, r.height, column, i.alt]; })"
        )
        driver.save_screenshot(str(report.parent / "report-top.png"))
    finally:
        driver.quit()
    assert images and all(complete and width > 0 for complete, width, _ in images), images
    assert set(experiments.names()) <= set(sections)
    assert formula_height > 30  # the matrices' formulas are typeset several lines high
    too_wide = [(w, h, alt[:60]) for w, h, alt in shapes if w > 4.05 * h]
    assert shapes and not too_wide, too_wide
    # every figure, the layer plots included: inside the text column, tall enough to read
    assert len(shown) == len(shapes)
    unreadable = [(w, h, alt[:60]) for w, h, column, alt in shown
                  if w > column + 1 or h < 150 or w > 4.05 * h]
    assert not unreadable, unreadable


def layer_metrics(moons_gap: float, circles_gap: float, se: float) -> dict:
    entropy = {"moons": 1.0, "circles": 1.2}
    gaps = {"moons": moons_gap, "circles": circles_gap}
    latent = {"ks_statistic": 0.05, "ks_pvalue": 0.2, "mardia_kurtosis_pvalue": 0.3}
    return {
        f"{data} K={k}": {"test_nll": entropy[data] + gaps[data], "entropy_gap": gaps[data],
                          "test_nll_se": se, "hidden": [512], "latent_normality": latent,
                          "sample_quality": {"low_density_fraction": 0.02, "recall": 0.98},
                          "history": {"val_nll": [2.0] * 12, "train_nll": [2.0] * 12},
                          "best_val_nll": 1.9, "best_epoch": 11, "epochs": 12,
                          "gaussian": {"test_nll": 3.0, "test_nll_se": se}}
        for data in ("moons", "circles") for k in (1, 3, 5)
    }


def test_layers_findings_call_a_dataset_easier_only_beyond_the_noise():
    from densitylab.experiments.flow_studies import _layers_135

    assert "K=1: moons 0.400 vs circles 0.200 (circles easier)" in " ".join(_layers_135(
        layer_metrics(0.40, 0.20, se=0.01)))
    assert "K=3: moons 0.200 vs circles 0.400 (moons easier)" in " ".join(_layers_135(
        layer_metrics(0.20, 0.40, se=0.01)))
    text = " ".join(_layers_135(layer_metrics(0.406, 0.403, se=0.04)))
    assert "K=5: moons 0.406 vs circles 0.403 (within noise)" in text
    assert "moons K=1 0.050" in text
    assert "within noise of each other at every depth" in text
    assert "No better than a single Gaussian" not in text
    mixed = layer_metrics(0.40, 0.20, se=0.01)
    mixed["moons K=3"]["test_nll"] = 3.5  # worse than the single Gaussian's 3.0
    text = " ".join(_layers_135(mixed))
    assert "No better than a single Gaussian beyond noise: moons K=3 is worse" in text
    assert "circles is the easier data set at every depth; moons is never easier" in text


@pytest.mark.slow
def test_limits_scores_every_distribution_against_its_entropy(report):
    from densitylab.experiments.limits import MODELS, distinct_laws

    outcome = experiments.runner.Outcome.read(report.parent / "limits")
    laws, dropped = distinct_laws()
    expected = {d.label: d.entropy() for d in laws}
    # gmm (sigma 0.5) is the coursework's gaussians-grid: one law, counted once
    assert dropped == {"gmm (sigma=0.5)": "gaussians-grid"}
    assert set(outcome.metrics) == set(expected) and len(expected) == 12
    for dist, scores in outcome.metrics.items():
        assert scores["entropy"] == pytest.approx(expected[dist], abs=1e-12)
        for model in MODELS:
            s = scores[model]
            assert s["entropy_gap"] == pytest.approx(s["test_nll"] - expected[dist], abs=1e-12)
            assert s["test_nll_se"] > 0 and s["train_seconds"] > 0
    assert set(outcome.figures) == {"gaps.png", "density.png"}
    assert len(outcome.tables[0].rows) == 12


def limit_scores(gaps: dict[str, dict[str, float]], se: float = 0.001) -> dict:
    from densitylab.experiments.limits import GAUSSIAN

    return {dist: {"entropy": 1.0, GAUSSIAN: {"test_nll": 2.0, "test_nll_se": se},
                   **{m: {"entropy_gap": g, "test_nll": 1.0 + g, "test_nll_se": se,
                          "train_seconds": 2.0} for m, g in per_model.items()}}
            for dist, per_model in gaps.items()}


def test_limits_findings_count_what_was_measured():
    from densitylab.experiments.limits import MODELS, _findings

    gaps = {f"d{i}": dict(zip(MODELS, (0.3, 0.2, 0.01 * i, 0.045), strict=True))
            for i in range(1, 8)}
    text = " ".join(_findings(limit_scores(gaps)))
    # recommended gaps 0.01..0.07 (SE 0.001): five within 0.05; largest d7 and d6
    assert ("recommended: gap to the entropy at most 0.05 nats, or above it by less than 2 "
            "standard errors, on 5 of 7 distributions") in text
    assert "largest on d7 (0.070) and d6 (0.060)" in text
    assert "KDE (CV): gap to the entropy at most 0.05 nats, or above it by less than 2 " \
        "standard errors, on 7 of 7" in text
    # d1..d4: recommended below KDE's 0.045 beyond noise; d5..d7: KDE below it
    assert ("The recommended model has the smallest gap alone on 4 of 7 distributions and "
            "shares it, within noise, on 0 more") in text
    assert "d7 is the hardest to reach" in text
    # with large standard errors a 0.07 gap is not shown to exceed 0.05, and all tie
    noisy = " ".join(_findings(limit_scores(gaps, se=0.05)))
    assert "recommended: gap to the entropy at most 0.05 nats, or above it by less than 2 " \
        "standard errors, on 7 of 7" in noisy
    assert "smallest gap alone on 0 of 7" in noisy


def test_limits_setting_lists_the_left_out_laws_without_a_dangling_separator():
    from densitylab.experiments.limits import _setting

    text = _setting(1000, 20000, {"gmm (sigma=0.5)": "gaussians-grid"})
    assert text == ("1000 training points; 20000 fresh test points; gmm (sigma=0.5) is left "
                    "out: it is the same law as gaussians-grid")
    assert _setting(1000, 20000, {}) == "1000 training points; 20000 fresh test points"


# -- the one rule behind every comparison on the page ------------------------------------------
def test_compare_calls_a_difference_only_beyond_two_standard_errors():
    from densitylab.experiments.findings import compare

    assert compare(1.00, 0.01, 1.10, 0.01) == -1  # 0.10 apart, 2 SE of the difference = 0.028
    assert compare(1.10, 0.01, 1.00, 0.01) == 1
    assert compare(1.00, 0.05, 1.10, 0.05) == 0  # 2 SE = 0.141: within noise
    assert compare(1.00, 0.0, 1.00, 0.0) == 0
    assert compare(2.0, 0.01, 1.0, 0.01, lower_is_better=False) == -1  # log-likelihoods
    assert compare(float("nan"), 0.0, 5.0, 1.0) == 1  # a diverged model is never better


def test_the_width_sweep_of_the_issue_is_within_noise():
    from densitylab.experiments.findings import best_group, best_sentence

    widths = {"64": (1.173, 0.044), "512": (1.203, 0.050), "1024": (1.205, 0.046)}
    assert best_group(widths) == ["64", "512", "1024"]
    assert "within noise" in best_sentence(widths, "test NLL")
    assert "beyond noise" in best_sentence({"a": (1.0, 0.01), "b": (1.5, 0.01)}, "test NLL")


def test_energy_distance_closest_is_nearest_zero_not_most_negative():
    from densitylab.experiments.findings import best_group, compare

    # unbiased estimates: -0.004 and -0.001 are both "indistinguishable from the data"
    assert compare(-0.004, 0.0001, -0.001, 0.0001, floor=0.0) == 0
    # a clearly positive distance loses to one at (or below) zero
    assert compare(-0.004, 0.0001, 0.020, 0.0001, floor=0.0) == -1
    estimates = {"GAN": (-0.010, 0.001), "VAE": (0.0005, 0.001), "Glow": (0.050, 0.001)}
    group = best_group(estimates, floor=0.0)
    assert set(group) == {"GAN", "VAE"} and "Glow" not in group
    # without the floor the most negative value would have won alone
    assert best_group(estimates) == ["GAN"]


def test_flows_vs_baselines_findings_use_the_rule():
    from densitylab.experiments.comparison import GAUSSIAN_ROW, VAE_FIXED, VAE_PLAIN
    from densitylab.experiments.comparison import comparison_findings as findings

    def row(nll, se, recall, precision=0.99, **extra):
        return {"test_nll": nll, "test_nll_se": se, "entropy_gap": nll - 1.0,
                "energy_distance": 0.001, "energy_se": 0.002, "recall": recall,
                "precision": precision, "recall_se": 0.01, "low_density_fraction": 0.02,
                "median_nll": nll, "worst_nll": 9.0, **extra}

    def vae(nll, collapsed, precision=0.99):
        return row(nll, 0.01, 0.99, precision, collapse={"collapsed": collapsed, "margin": 0.1,
                                                         "noise": 0.03, "bound_gap": 0.1})

    def gan(recall, **extra):
        return {"energy_distance": -0.006, "energy_se": 0.002, "recall": recall,
                "precision": 0.99, "recall_se": 0.01, "low_density_fraction": 0.01, **extra}

    def law(gan_row, **models):
        return {"RealNVP": row(1.10, 0.05, 0.99), "Glow": row(1.12, 0.05, 0.98),
                "KDE (CV)": row(1.50, 0.05, 0.99), VAE_PLAIN: vae(1.9, True),
                VAE_FIXED: vae(1.4, False), "GAN": gan_row,
                GAUSSIAN_ROW: {"test_nll": 1.9, "test_nll_se": 0.01, "entropy_gap": 0.9}} | models

    text = " ".join(findings({"moons": law(gan(0.6))}))
    assert "lowest test NLL RealNVP (1.100" in text and "Glow within noise" in text
    # the GAN's negative energy distance does not hide the support it misses; with no modes
    # to count, that is not called mode collapse
    assert "Support missed without a missed mode (recall below the best model's beyond " \
        "noise): moons (recall 0.600 against RealNVP's 0.990)" in text
    assert "Mode collapse (modes missed, by the mode-coverage column): on no law" in text
    assert "Collapsed (no better than one Gaussian) on moons" in text
    assert ("The plain-ELBO VAE is no better than a single Gaussian (collapsed) on every law, "
            "the VAE with free bits on no law.") in text
    # every mode reached (coverage 1.00): lower recall is missed support, never mode collapse
    text = " ".join(findings({"grid": law(gan(0.6, mode_coverage=1.0))}))
    assert "Mode collapse (modes missed, by the mode-coverage column): on no law" in text
    assert "every mode reached (coverage 1.00)" in text
    text = " ".join(findings({"grid": law(gan(0.6, mode_coverage=0.5))}))
    assert "mode-coverage column): grid (mode coverage 0.50)" in text
    assert "the GAN misses modes on 1 of the 1 laws with modes to count" in text


def test_support_f1_ranks_an_over_dispersed_sampler_below_a_faithful_one():
    """A collapsed VAE spreading samples everywhere reaches every data region (recall 1.000)
    at precision 0.55: support recall alone ranks it first, support F1 last."""
    from densitylab.experiments.comparison import GAUSSIAN_ROW, VAE_FIXED, VAE_PLAIN
    from densitylab.experiments.comparison import comparison_findings as findings

    def row(recall, precision, nll=1.5):
        return {"test_nll": nll, "test_nll_se": 0.01, "entropy_gap": nll - 1.0,
                "energy_distance": 0.001, "energy_se": 0.002, "recall": recall,
                "precision": precision, "recall_se": 0.01, "low_density_fraction": 0.02,
                "collapse": {"collapsed": True, "margin": 0.0, "noise": 0.03, "bound_gap": 0.0}}

    per_model = {"RealNVP": row(0.97, 0.97), "Glow": row(0.96, 0.96),
                 "KDE (CV)": row(0.99, 0.99, 1.2), VAE_PLAIN: row(1.0, 0.55),
                 VAE_FIXED: row(1.0, 0.55), "GAN": row(0.98, 0.97) | {"test_nll": None},
                 GAUSSIAN_ROW: {"test_nll": 1.9, "test_nll_se": 0.01, "entropy_gap": 0.9}}
    del per_model["GAN"]["test_nll"]
    bullets = findings({"moons": per_model})
    ranking = next(b for b in bullets if b.startswith("Closest samples by support F1"))
    assert ranking.split("moons: ")[1].startswith("KDE (CV) (P 0.990, R 0.990)")
    assert "VAE" not in ranking
    text = " ".join(bullets)
    assert "KDE (CV)'s samples are the closest or within noise of it on every law" in text


def test_a_heavy_tailed_mean_is_undecided_not_within_noise():
    """Glow's mean NLL carried by a few points with almost no density (13.554 ± 11.408): the
    rule would call it within noise of KDE; the page says the mean cannot decide."""
    from densitylab.experiments.comparison import _nll_bullet
    from densitylab.experiments.runner import GAUSSIAN_ROW

    def row(nll, se, median):
        return {"test_nll": nll, "test_nll_se": se, "entropy_gap": nll - 1.0,
                "median_nll": median, "worst_nll": 2.2e5}

    text = _nll_bullet("moons", {"KDE (CV)": row(1.08, 0.004, 0.95),
                                 "Glow": row(13.554, 11.408, 1.31),
                                 GAUSSIAN_ROW: {"test_nll": 1.9, "test_nll_se": 0.01}})
    assert "within noise" not in text
    assert "the mean cannot decide against Glow (13.554 ± 11.408" in text
    assert "median 1.310 against 0.950" in text


def test_figures_are_checked_for_width_panels_and_clipped_titles(tmp_path):
    from densitylab.plots._figure import Figure
    from densitylab.plots._layout import layout_problems, save_png

    wide = Figure(figsize=(20, 3))
    wide.subplots(1, 6)
    problems = layout_problems(wide)
    assert any("aspect ratio" in p for p in problems)
    assert any("6 panels in one row" in p for p in problems)
    clipped = Figure(figsize=(3, 3), layout="constrained")
    clipped.subplots()
    clipped.suptitle("a title far too long for a figure only three inches wide, clipped twice")
    assert any("clipped" in p for p in layout_problems(clipped))
    fine = Figure(figsize=(6, 4), layout="constrained")
    fine.subplots(1, 2)
    fine.suptitle("fits")
    assert layout_problems(fine) == []
    with pytest.raises(ValueError, match="clipped"):
        save_png(clipped, tmp_path / "bad.png", strict=True)
    save_png(fine, tmp_path / "good.png", strict=True)
    assert (tmp_path / "good.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_every_figure_of_the_report_passed_the_checks(report):
    """The experiments save with strict=True, so a report exists only if every figure passed;
    check the saved images' shapes too (the PNG header), without a browser."""
    import struct

    for png in report.parent.glob("*/figures/*.png"):
        width, height = struct.unpack(">II", png.read_bytes()[16:24])
        assert width <= 4.05 * height, png


def test_formulas_are_svg_with_stretchy_delimiters():
    from densitylab.plots.typeset import _segments, formula_svg

    parts = _segments(r"J = \begin{pmatrix} A & 0 \\ B & C \end{pmatrix}, x")
    assert parts[1] == [["A", "0"], ["B", "C"]]
    assert formula_svg(r"\left|\det \frac{a}{b}\right|").startswith("<svg")


def test_limits_counts_the_flows_that_hit_the_cap_and_judges_speed_by_both_clocks():
    from densitylab.experiments.limits import FLOWS, GAUSSIAN, MODELS, limits_findings

    def record(model: str, i: int) -> dict:
        best = {"coursework RealNVP": 40 + i, "Glow": 20 + i, "recommended": 30}[model]
        capped = model == "coursework RealNVP" and i < 2
        return {"entropy_gap": 0.1, "test_nll": 1.1, "test_nll_se": 0.01, "train_seconds": 9.0,
                "best_epoch": 120 if capped else best, "epochs_run": 120 if capped else best + 10,
                "epochs": 120, "patience": 10, "hit_cap": capped, "n_val": 2000,
                "stop_reason": "completed" if capped else "early-stopping",
                "seconds_to_best": {"coursework RealNVP": 1.0, "Glow": 6.0,
                                    "recommended": 3.0}[model]}

    scores = {f"d{i}": {"entropy": 1.0, "realnvp_glow_mean_abs_diff": 0.5,
                        "training_load": {"before": 2.4, "after": 2.1, "cores": 2},
                        GAUSSIAN: {"test_nll": 2.0, "test_nll_se": 0.01},
                        **{m: record(m, i) for m in FLOWS},
                        "KDE (CV)": {"entropy_gap": 0.1, "test_nll": 1.1, "test_nll_se": 0.01,
                                     "train_seconds": 1.0}}
              for i in range(5)}
    text = " ".join(limits_findings(scores))
    assert ("coursework RealNVP: converged (stopped by early stopping) on 3 of 5 distributions, "
            "hit the 120-epoch cap (still improving) on 2") in text
    assert "Glow: converged (stopped by early stopping) on 5 of 5" in text
    assert "Fewest epochs to the best (median over the 5 laws): Glow; fewest seconds: " \
        "coursework RealNVP (the clocks disagree" in text
    assert "other work shared the cores" in text
    assert "unpaired standard errors" in text  # no per-point scores stored here
    for s in scores.values():  # every model on the same points: a paired error for each pair
        for m in (*MODELS, GAUSSIAN):
            s[m]["paired_se"] = {o: 0.001 for o in (*MODELS, GAUSSIAN) if o != m}
    assert "paired standard errors: every model on the same test points" in \
        " ".join(limits_findings(scores))


def test_quick_figures_label_the_width_that_ran_and_the_engine_that_trained():
    from densitylab import experiments
    from densitylab.experiments.flow_studies import _engines
    from densitylab.experiments.runner import ran_labels

    study = experiments.get("layers-1-3-5")
    quick = [r.quick() for r in study.runs]
    shown = ran_labels(study, quick)
    widths = [shown[lb] for lb in ("moons K=5 h=64", "moons K=5", "moons K=5 h=1024")]
    assert widths == ["moons K=5 h=64", "moons K=5 (ran width 64)",
                      "moons K=5 h=1024 (ran width 64)"]
    assert ran_labels(study, list(study.runs)) == {r.label: r.label for r in study.runs}
    sizes = experiments.get("data-size")
    assert ran_labels(sizes, [r.quick() for r in sizes.runs]) == {
        "N=1500": "N=1500 (ran 1000 training points)",
        "N=3000": "N=3000 (ran 1000 training points)"}
    text = _engines({"engine": "compiled"}, {"engine": "torch"})
    assert "RealNVP on the compiled (numba) engine, Glow on the torch autograd engine" in text
    assert "implementations as much as architectures" in text
    assert "one engine" in _engines({"engine": "torch"}, {"engine": "torch"})
