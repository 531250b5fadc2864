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
