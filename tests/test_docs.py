"""Documentation that runs: every ``>>>`` example in the package's docstrings is a doctest."""

from __future__ import annotations

import doctest
import importlib
import os
from pathlib import Path

import pytest

import densitylab

PACKAGE = Path(densitylab.__file__).parent


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
