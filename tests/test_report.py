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
