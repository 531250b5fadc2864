"""The tutorials run top to bottom in a real Jupyter kernel and draw their figures; importing
densitylab there leaves matplotlib's inline backend alone."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
jupytext = pytest.importorskip("jupytext")
pytest.importorskip("ipykernel")

ROOT = Path(__file__).resolve().parents[1]
TUTORIALS = sorted((ROOT / "docs" / "tutorials").glob("*.py"))
SOURCE = str(ROOT / "src")


def execute(notebook, directory: Path, timeout: int = 240):
    """Run ``notebook`` in a fresh python3 kernel with ``directory`` as its working directory,
    this checkout's ``src`` first on the path and the tutorials' quick budgets."""
    env = dict(os.environ, DENSITYLAB_DOCS_QUICK="1", OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join(filter(None, [SOURCE, os.environ.get("PYTHONPATH")])))
    env.pop("MPLBACKEND", None)  # the kernel chooses, as in a user's Jupyter
    client = nbclient.NotebookClient(notebook, timeout=timeout, kernel_name="python3",
                                     resources={"metadata": {"path": str(directory)}})
    client.execute(env=env)
    return notebook


def outputs(notebook) -> list[dict]:
    return [out for cell in notebook.cells if cell.cell_type == "code" for out in cell.outputs]


def test_there_are_four_tutorials():
    assert [p.stem for p in TUTORIALS] == ["coupling_flows", "flow_families", "kde", "your_data"]


@pytest.mark.slow
@pytest.mark.parametrize("path", TUTORIALS, ids=[p.stem for p in TUTORIALS])
def test_tutorial_runs_and_draws(path, tmp_path):
    notebook = jupytext.read(path)
    start = time.perf_counter()
    execute(notebook, tmp_path)
    seconds = time.perf_counter() - start
    images = [out for out in outputs(notebook) if "image/png" in out.get("data", {})]
    errors = [out for out in outputs(notebook) if out.get("output_type") == "error"]
    assert not errors
    assert len(images) >= 3, f"{path.name} drew {len(images)} figures"
    print(f"{path.name}: {seconds:.1f} s, {len(images)} figures")


@pytest.mark.slow
def test_backend_unchanged_and_figures_render_in_jupyter(tmp_path):
    cells = [
        "import matplotlib\nbefore = matplotlib.get_backend()\nprint(before)",
        "import densitylab as dl\nimport densitylab.plots, densitylab.plots.models\n"
        "assert matplotlib.get_backend() == before, matplotlib.get_backend()\nprint('unchanged')",
        "import matplotlib.pyplot as plt\nplt.plot([0, 1], [1, 0])\nplt.show()",
        "import numpy as np\nx = np.random.default_rng(0).normal(size=(200, 2))\n"
        "dl.plots.density(dl.KDE(bandwidth=0.4).fit(x), data=x, resolution=20)",
    ]
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    execute(notebook, tmp_path, timeout=120)
    texts = ["".join(o.get("text", "")) for o in notebook.cells[0].outputs]
    assert "inline" in "".join(texts)  # the kernel's own backend
    assert "unchanged" in "".join(o.get("text", "") for o in notebook.cells[1].outputs)
    for cell in notebook.cells[2:]:  # pyplot's figure and densitylab's figure both render
        assert any("image/png" in o.get("data", {}) for o in cell.outputs), cell.source
