"""One self-contained HTML page from the experiments' outcomes: opens offline, images inline.

The page is a Jinja2 template (``templates/report.html.j2``, autoescaped) filled from the
outcomes; figures are inline palette PNGs, and the derivations are typeset to SVG by
matplotlib's mathtext (:mod:`densitylab.plots.typeset`), so brackets and determinant bars
stretch in every browser, with no script, font or network access.
"""

from __future__ import annotations

import base64
import io
import os
import platform
import re
from functools import cache
from pathlib import Path
from typing import Any

from densitylab._files import output_file
from densitylab.derivations import ANCHORS, CODE, DERIVATIONS, DIAGRAMS, STUDIES, TASKS
from densitylab.experiments import check_findings
from densitylab.experiments.findings import Z
from densitylab.experiments.runner import Outcome, Table

REPORT_FILE = "report.html"
TEMPLATE = "report.html.j2"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


@cache
def _formula(latex: str) -> dict[str, str]:
    from densitylab.plots.typeset import formula_svg

    return {"latex": latex, "data": _b64(formula_svg(latex).encode("utf-8"))}


def _diagram(name: str) -> dict[str, str]:
    from densitylab.plots.diagrams import coupling_inverse_graph

    figures = {"coupling-inverse": (
        coupling_inverse_graph,
        "Task 2: the inverse x = f^-1(z) as a computational graph (the coursework's y is this "
        "page's z). z_a passes through unchanged and feeds the s and t networks, which are "
        "only evaluated, never inverted; z_b is shifted by -t(z_a), then scaled elementwise "
        "by exp(-s(z_a)).")}
    draw, caption = figures[name]
    buffer = io.BytesIO()
    draw().savefig(buffer, format="svg", metadata={"Date": None})
    return {"caption": caption, "data": _b64(buffer.getvalue())}


def _derivations(present: set[str]) -> list[dict[str, Any]]:
    """The derivations with their code sketches, and a link to the study measuring each, or
    a note that the study is not in this build (``present``: the sections on the page)."""
    out = []
    for heading, steps in DERIVATIONS:
        study = None
        if heading in STUDIES:
            name, what = STUDIES[heading]
            study = {"name": name, "what": what, "present": name in present}
        out.append({"id": ANCHORS[heading], "heading": heading,
                    "steps": [(prose, _formula(latex) if latex else None)
                              for prose, latex in steps],
                    "code": CODE.get(heading), "study": study,
                    "diagram": _diagram(DIAGRAMS[heading]) if heading in DIAGRAMS else None})
    return out


_NUMBER = re.compile(r"^[-+]?[\d.,]+(e[-+]?\d+)?( ± [\d.,]+(e[-+]?\d+)?)?( \(.*\))?$")


def _number_like(value: Any) -> bool:
    """Numbers, and numbers with a ± error or a parenthesised remark, align right."""
    return isinstance(value, int | float) or bool(_NUMBER.match(str(value)))


def _figures(outcome: Outcome, directory: Path) -> list[dict[str, str]]:
    """The figures of a section; the layer-by-layer traces fold away (one per run)."""
    return [{"caption": caption, "folded": name.startswith("layers-"),
             "data": _b64((directory / "figures" / name).read_bytes())}
            for name, caption in outcome.figures.items()]


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


MAX_SUMMARY_SENTENCES = 3
_SENTENCE_END = re.compile(r"(?<=[.?!])\s+(?=[A-Z(])")


def sentences(text: str) -> int:
    """How many sentences ``text`` holds (a full stop, question or exclamation mark followed
    by a capital starts a new one; decimals such as 2.524 do not)."""
    return len(_SENTENCE_END.split(text.strip())) if text.strip() else 0


def _text(outcome: Outcome) -> tuple[str, list[str]]:
    """The section's plain-language summary and its bullets (an outcome of another build may
    carry one paragraph: then it is the summary). A summary of this build's experiments longer
    than :data:`MAX_SUMMARY_SENTENCES` sentences is refused."""
    if isinstance(outcome.findings, str):
        return outcome.findings, []
    if not outcome.findings:
        return "", []
    from densitylab.experiments import registry

    summary = outcome.findings[0]
    if outcome.name in registry() and sentences(summary) > MAX_SUMMARY_SENTENCES:
        raise ValueError(f"{outcome.name}: its summary has {sentences(summary)} sentences, "
                         f"at most {MAX_SUMMARY_SENTENCES} fit the top of a section")
    return summary, list(outcome.findings[1:])


def reconciliation(outcomes: list[Outcome]) -> Table | None:
    """The same data, architecture and seed trained in more than one section: every result
    side by side, with the reason they may differ, computed from the runs' settings."""
    from densitylab.experiments.findings import compare

    seen: dict[str, list[tuple[str, str, dict]]] = {}
    for o in outcomes:
        for label, m in _runs_of(o):
            seen.setdefault(_model_key(m["run_key"]), []).append((o.name, label, m))
    rows = []
    for entries in seen.values():
        if len({name for name, _, _ in entries}) < 2:
            continue
        one_setting = len({m["run_key"] for _, _, m in entries}) == 1
        best = min((m for _, _, m in entries), key=lambda m: m["test_nll"])
        for name, label, m in entries:
            rows.append([f"{m.get('data_label', m.get('data', ''))}", f"{name}: {label}",
                         m.get("epochs", "—"), m.get("best_epoch", "—"),
                         f"{m['test_nll']:.3f} ± {m['test_nll_se']:.3f}",
                         _why(m, best, one_setting, compare)])
    if not rows:
        return None
    return Table("One model, several sections: the same data, architecture and seed wherever "
                 "they recur", ["law", "section: run", "epochs", "best epoch", "test NLL ± SE",
                                "why the numbers may differ"], rows, folded=True)


def _why(m: dict, best: dict, one_setting: bool, compare) -> str:
    """Why a recurring run's result may differ from the best of its kind, from its numbers."""
    if one_setting:
        return "identical settings: one model, retrained"
    if compare(m["test_nll"], m["test_nll_se"], best["test_nll"], best["test_nll_se"]) == 0:
        return "within noise of the best of these runs"
    epochs, best_epoch = m.get("epochs"), m.get("best_epoch")
    if epochs and best_epoch and best_epoch >= 0.9 * epochs:
        longer = best.get("epochs") and best["epochs"] > epochs
        return (f"still improving when its {epochs}-epoch budget ran out (best epoch "
                f"{best_epoch})" + (f"; the best run here, with {best['epochs']} epochs, went "
                                    "further" if longer else ""))
    return ("converged earlier than its budget, worse beyond noise: training noise (batching "
            "and float rounding make the trajectories of one seed diverge)")


def _runs_of(outcome: Outcome):
    """``(label, metrics)`` of every trained flow of an outcome that records its settings."""
    for label, m in outcome.metrics.items():
        if isinstance(m, dict) and "run_key" in m:
            yield label, m
        elif isinstance(m, dict):
            for inner, n in m.items():
                if isinstance(n, dict) and "run_key" in n:
                    yield f"{label} | {inner}", n


def _model_key(run_key: str) -> str:
    """A run's settings less its budget: what makes two runs the same model."""
    return re.sub(r"Budget\(epochs=\d+", "Budget(", re.sub(r"patience=\w+", "", run_key))


def render(outcomes: list[Outcome], out: Path, quick: bool, environment_table: Table,
           timing: Table) -> str:
    """The page's HTML from the outcomes (whose figures live in ``out/<name>/figures``)."""
    from jinja2 import Environment, PackageLoader, select_autoescape

    env = Environment(loader=PackageLoader("densitylab", "templates"),
                      autoescape=select_autoescape(["html", "j2"]), keep_trailing_newline=True)
    env.tests["number_like"] = _number_like
    sections = []
    for o in outcomes:
        check_findings(o)
        section = dict(vars(o))
        section["summary"], section["bullets"] = _text(o)
        section["figure_list"] = _figures(o, out / o.name)
        sections.append(section)
    present = {o.name for o in outcomes}
    link_labels = ({o.name: o.title for o in outcomes}
                   | {ANCHORS[h]: f"Derivations: {h}" for h in ANCHORS})
    tasks = [(source, task, asks, target if target[1:] in link_labels else None,
              target[1:]) for source, task, asks, target in TASKS]
    from densitylab.experiments import registry

    return env.get_template(TEMPLATE).render(
        registered=set(registry()), outcomes=sections, quick=quick, z=f"{Z:g}", tasks=tasks,
        derivations=_derivations(present), link_labels=link_labels,
        environment=environment_table, timing=timing, reconciliation=reconciliation(outcomes),
    )


def write_report(
    out: Path, outcomes: list[Outcome], quick: bool, wall_seconds: float | None = None,
    jobs: int = 1,
) -> Path:
    """Write ``out/report.html`` from outcomes whose files live in ``out/<name>/``.

    ``wall_seconds``: the whole run's wall time, with ``jobs`` experiments at a time.
    """
    env = environment() | {"experiments at once": jobs}
    total = sum(o.seconds for o in outcomes)
    rows = [[o.name, f"{o.seconds:.1f}", " / ".join(f"{v:.1f}" for v in o.load) or "—"]
            for o in outcomes] + [["sum", f"{total:.1f}", ""]]
    if wall_seconds is not None:
        rows.append([f"whole run ({jobs} at once)", f"{wall_seconds:.1f}", ""])
    from densitylab.experiments import registry

    timed = [o.name for o in outcomes if o.name in registry() and registry()[o.name].exclusive]
    timing = Table("Wall time per experiment (seconds)",
                   ["experiment", "seconds", "load average at start / end"], rows,
                   note=(f"Studies whose findings compare timings ({', '.join(timed)}) ran "
                         "alone, after the others, whatever the number of experiments at once; "
                         "their load average (one-minute, all processes) says whether other "
                         f"users still shared the machine's {os.cpu_count() or 1} cores (about "
                         "1 when a study ran alone on an idle machine)."
                         if timed else ""))
    env_table = Table("Environment", ["item", "value"], [[k, v] for k, v in env.items()])
    page = render(outcomes, out, quick, env_table, timing)
    path = out / REPORT_FILE
    with output_file(path) as staging:
        staging.write_text(page, encoding="utf-8")
    return path
