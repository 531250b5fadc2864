"""`densitylab reproduce --quick` writes a report a browser renders completely, offline."""

from __future__ import annotations

import html
import re
import shutil

import pytest
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
        assert outcome.findings and html.escape(outcome.findings) in page
    assert page.count("<img") >= len(experiments.names())
    assert "http://" not in page.replace("http://www.w3.org/1998/Math/MathML", "")
    assert "https://" not in page
    assert len(re.findall(r"<math ", page)) >= 10
    assert 'id="derivations"' in page and 'id="environment"' in page
    assert "whole run (" in page


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
    """Equal structure and values (floats to 1e-9), timings aside."""
    if isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for key in a:
            if not any(word in key for word in ("seconds", "time")):
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
        math_height = driver.execute_script(
            "return Math.max(...Array.from(document.querySelectorAll('math'))"
            ".map(m => m.getBoundingClientRect().height))"
        )
        driver.save_screenshot(str(report.parent / "report-top.png"))
    finally:
        driver.quit()
    assert images and all(complete and width > 0 for complete, width, _ in images), images
    assert set(experiments.names()) <= set(sections)
    assert math_height > 20  # MathML laid out as mathematics, not collapsed text


def layer_metrics(moons_gap: float, circles_gap: float, se: float) -> dict:
    entropy = {"moons": 1.0, "circles": 1.2}
    gaps = {"moons": moons_gap, "circles": circles_gap}
    return {
        f"{data} K={k}": {"test_nll": entropy[data] + gaps[data], "entropy_gap": gaps[data],
                          "test_nll_se": se, "hidden": [512]}
        for data in ("moons", "circles") for k in (1, 3, 5)
    }


def test_layers_findings_call_a_dataset_easier_only_beyond_the_noise():
    from densitylab.experiments.flow_studies import _layers_135

    assert "circles was the easier" in _layers_135(layer_metrics(0.40, 0.20, se=0.01))
    assert "moons was the easier" in _layers_135(layer_metrics(0.20, 0.40, se=0.01))
    assert "about equally hard" in _layers_135(layer_metrics(0.406, 0.403, se=0.04))


def test_limits_scores_every_distribution_against_its_entropy(report):
    from densitylab import datasets
    from densitylab.experiments.limits import MODELS

    outcome = experiments.runner.Outcome.read(report.parent / "limits")
    expected = {d.label: d.entropy() for d in datasets.catalogue()}
    assert set(outcome.metrics) == set(expected) and len(expected) == 13
    for dist, scores in outcome.metrics.items():
        assert scores["entropy"] == pytest.approx(expected[dist], abs=1e-12)
        for model in MODELS:
            s = scores[model]
            assert s["entropy_gap"] == pytest.approx(s["test_nll"] - expected[dist], abs=1e-12)
            assert s["test_nll_se"] > 0 and s["train_seconds"] > 0
    assert set(outcome.figures) == {"gaps.png", "density.png"}
    assert len(outcome.tables[0].rows) == 13


def limit_scores(gaps: dict[str, dict[str, float]]) -> dict:
    return {dist: {"entropy": 1.0, **{m: {"entropy_gap": g, "test_nll": 1.0 + g,
                                          "test_nll_se": 0.01, "train_seconds": 2.0}
                                      for m, g in per_model.items()}}
            for dist, per_model in gaps.items()}


def test_limits_findings_count_what_was_measured():
    from densitylab.experiments.limits import MODELS, _findings

    gaps = {f"d{i}": dict(zip(MODELS, (0.3, 0.2, 0.01 * i, 0.045), strict=True))
            for i in range(1, 8)}
    text = _findings(limit_scores(gaps))
    # recommended gaps 0.01..0.07: five within 0.05; largest d7 (0.070) and d6 (0.060)
    assert "recommended: within 0.05 nats of the entropy on 5 of 7 distributions" in text
    assert "largest on d7 (0.070) and d6 (0.060)" in text
    assert "KDE (CV): within 0.05 nats of the entropy on 7 of 7" in text
    assert "The recommended model has the smallest gap on 4 of 7 distributions" in text
    assert "d7 is the hardest to reach" in text
