"""One self-contained HTML page from the experiments' outcomes: opens offline, images inline.

Mathematics is converted from LaTeX to MathML when the page is written, so a browser renders
it natively with no script and no network access.
"""

from __future__ import annotations

import base64
import html
import os
import platform
from pathlib import Path
from typing import Any

from latex2mathml.converter import convert

from densitylab._files import output_file
from densitylab.derivations import DERIVATIONS
from densitylab.experiments.runner import Outcome, Table

REPORT_FILE = "report.html"
DOCTYPE = "<!DOCTYPE html>"

STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em;
       line-height: 1.5; color: #222; }
h1 { border-bottom: 2px solid #444; } h2 { border-bottom: 1px solid #bbb; margin-top: 2.5em; }
.question { color: #555; font-style: italic; }
.findings { background: #eef5ee; border-left: 4px solid #3a7d44; padding: 0.6em 1em; }
table { border-collapse: collapse; font-size: 0.85em; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.5em; text-align: right; }
th { background: #f2f2f2; } td:first-child, th:first-child { text-align: left; }
figure { margin: 1.5em 0; } figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption { color: #555; font-size: 0.9em; }
math[display="block"] { margin: 0.6em 0; overflow-x: auto; }
nav ol { columns: 2; }
"""


def _table(table: Table) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in table.columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row) + "</tr>"
        for row in table.rows
    )
    return (
        f"<p><strong>{html.escape(table.title)}</strong></p>"
        f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    )


def _figure(path: Path, caption: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return (
        f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{data}">'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )


def _experiment(outcome: Outcome, directory: Path) -> str:
    parts = [
        f'<section id="{outcome.name}"><h2>{html.escape(outcome.title)}</h2>',
        f'<p class="question">{html.escape(outcome.question)}</p>',
        f'<div class="findings"><strong>Findings (computed from this run):</strong> '
        f"{html.escape(outcome.findings)}</div>",
        *(_table(t) for t in outcome.tables),
        *(
            _figure(directory / "figures" / name, caption)
            for name, caption in outcome.figures.items()
        ),
        f"<p><small>Wall time: {outcome.seconds:.1f} s.</small></p></section>",
    ]
    return "\n".join(parts)


def _derivations() -> str:
    parts = ['<section id="derivations"><h2>Derivations</h2>']
    for heading, steps in DERIVATIONS:
        parts.append(f"<h3>{html.escape(heading)}</h3>")
        for prose, latex in steps:
            parts.append(f"<p>{html.escape(prose)}</p>")
            if latex:
                parts.append(convert(latex, display="block"))
    parts.append("</section>")
    return "\n".join(parts)


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment() -> dict[str, Any]:
    """Versions and machine, for the report and the run records."""
    import numpy
    import scipy
    import sklearn
    import torch

    from densitylab import __version__

    return {
        "densitylab": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "scipy": scipy.__version__,
        "scikit-learn": sklearn.__version__,
        "cpu": _cpu(),
        "cores": os.cpu_count(),
        "torch threads": torch.get_num_threads(),
        "platform": platform.platform(),
    }


def write_report(
    out: Path, outcomes: list[Outcome], quick: bool, wall_seconds: float | None = None,
    jobs: int = 1,
) -> Path:
    """Write ``out/report.html`` from outcomes whose files live in ``out/<name>/``.

    ``wall_seconds``: the whole run's wall time, with ``jobs`` experiments at a time.
    """
    env = environment() | {"experiments at once": jobs}
    total = sum(o.seconds for o in outcomes)
    rows = [[o.name, f"{o.seconds:.1f}"] for o in outcomes] + [["sum", f"{total:.1f}"]]
    if wall_seconds is not None:
        rows.append([f"whole run ({jobs} at once)", f"{wall_seconds:.1f}"])
    contents = "".join(f'<li><a href="#{o.name}">{html.escape(o.title)}</a></li>' for o in outcomes)
    timing = Table(
        "Wall time per experiment (seconds)",
        ["experiment", "seconds"],
        rows,
    )
    env_table = Table("Environment", ["item", "value"], [[k, v] for k, v in env.items()])
    budget = ("at quick, reduced budgets: a preview, not the studies' numbers" if quick
              else "at the budgets the source documents set")
    page = f"""{DOCTYPE}
<html lang="en"><head><meta charset="utf-8"><title>densitylab report</title>
<style>{STYLE}</style></head><body>
<h1>densitylab: density estimation with normalizing flows and KDE</h1>
<p>Every study of the source documents, rerun by <code>densitylab reproduce</code>
{html.escape(budget)}. Negative log-likelihoods are in nats per point; for the
built-in distributions the true entropy is the lowest test NLL any model can reach, so the
gap to it measures how far a model is from the truth.</p>
<nav><h2>Contents</h2><ol>{contents}<li><a href="#derivations">Derivations</a></li>
<li><a href="#environment">Environment and timings</a></li></ol></nav>
{"".join(_experiment(o, out / o.name) for o in outcomes)}
{_derivations()}
<section id="environment"><h2>Environment and timings</h2>
{_table(env_table)}{_table(timing)}</section>
</body></html>"""
    path = out / REPORT_FILE
    with output_file(path, DOCTYPE) as staging:
        staging.write_text(page, encoding="utf-8")
    return path
