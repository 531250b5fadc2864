"""Documentation that runs: every ``>>>`` example in the package's docstrings is a doctest."""

from __future__ import annotations

import doctest
import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

import densitylab

PACKAGE = Path(densitylab.__file__).parent
ROOT = Path(__file__).resolve().parents[1]


def modules_with_examples() -> list[str]:
    """Dotted names of the modules whose source holds a ``>>>`` example (found without import)."""
    names = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "__main__.py" or ">>>" not in path.read_text():
            continue
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def test_examples_are_found():
    assert len(modules_with_examples()) >= 15


@pytest.mark.parametrize("name", modules_with_examples())
def test_docstring_examples_run(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # examples that write files write them here
    monkeypatch.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "1"))
    module = importlib.import_module(name)
    flags = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
    failed, attempted = doctest.testmod(module, optionflags=flags, verbose=False, report=True)
    assert attempted > 0, f"{name} has '>>>' in its source but no doctest was collected"
    assert failed == 0, f"{failed} of {attempted} examples failed in {name} (output above)"


@pytest.mark.slow
def test_documentation_builds_without_warnings(tmp_path):
    """``mkdocs build --strict`` (what ``make docs`` runs): the API reference renders from the
    docstrings and the tutorials convert, with any warning failing the build. The tutorials
    are not executed here; ``tests/test_notebooks.py`` runs them."""
    for plugin in ("mkdocs", "mkdocstrings", "mkdocs_jupyter", "material"):
        pytest.importorskip(plugin)
    env = dict(os.environ, DENSITYLAB_DOCS_EXECUTE="false", NO_MKDOCS_2_WARNING="1",
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT / "src"),
                                                        os.environ.get("PYTHONPATH")])))
    site = tmp_path / "site"
    completed = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f",
         str(ROOT / "mkdocs.yml"), "-d", str(site)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    reference = (site / "api" / "plots" / "index.html").read_text()
    assert 'id="densitylab.plots.models.density"' in reference
    for name in ("kde", "coupling_flows", "your_data", "flow_families"):
        assert (site / "tutorials" / name / "index.html").is_file()
