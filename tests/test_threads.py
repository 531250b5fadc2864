"""The thread budget: counts chosen from work and cores, every pool set inside a call, and the
caller's settings (torch, threadpoolctl limits, numba) the same after every public call."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numba
import numpy as np
import pytest
import torch
from sklearn.mixture import GaussianMixture  # noqa: F401  (loads scikit-learn's OpenMP library)
from threadpoolctl import ThreadpoolController

import densitylab as dl
from densitylab import compiling, threads


def pool_sizes() -> dict[str, int]:
    return {lib["filepath"]: lib["num_threads"] for lib in ThreadpoolController().info()}


@pytest.fixture
def user_settings():
    """The user's own, unusual settings: 3 torch threads, BLAS and OpenMP limited to 3, numba's
    threading layer started with 1 thread. Restored after the test."""
    torch_before, numba_before = torch.get_num_threads(), numba.get_num_threads()
    controller = ThreadpoolController()
    with controller.limit(limits=3):
        torch.set_num_threads(3)
        numba.set_num_threads(1)
        try:
            yield threads.settings()
        finally:
            torch.set_num_threads(torch_before)
            numba.set_num_threads(numba_before)


def test_budget_sets_every_pool_and_restores_them(user_settings):
    with threads.budget(2) as n:
        assert n == 2
        assert torch.get_num_threads() == 2 and numba.get_num_threads() == 2
        assert set(pool_sizes().values()) == {2}
        with threads.budget(1):  # nested: one thread inside, the outer count again after
            assert torch.get_num_threads() == 1 and set(pool_sizes().values()) == {1}
        assert torch.get_num_threads() == 2 and set(pool_sizes().values()) == {2}
    assert threads.settings() == user_settings
    with pytest.raises(RuntimeError), threads.budget(1):
        raise RuntimeError("the body failed")
    assert threads.settings() == user_settings


def test_count_follows_the_callers_choice_the_work_and_the_ceiling(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert threads.count(5) == 5  # the caller's choice, whatever the cores
    assert threads.count(work=10, grain=100) == 1  # too little work for a second thread
    assert threads.count(work=1e9, grain=1) == threads.idle_cores() <= threads.cores()
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the user's ceiling
    assert threads.count(work=1e9) == 1
    monkeypatch.delenv("OMP_NUM_THREADS")
    with threads.budget(1):  # an enclosing budget's count, chosen: also the workers' ceiling
        assert threads.limit() == 1 and threads.count(work=1e9) == 1
        assert threads.workers(work=1e9) == 1
    with threads.budget(work=1, grain=10):  # an automatic one leaves the workers the cores
        assert threads.workers(work=1e9) == threads.cores()
    with pytest.raises(ValueError, match="threads"):
        threads.count(0)


def test_load_of_other_processes_leaves_fewer_idle_cores(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads, "cores", lambda: 4)
    monkeypatch.setattr(threads.os, "getloadavg", lambda: (1.0, 0.0, 0.0))  # this process alone
    assert threads.idle_cores() == 4
    monkeypatch.setattr(threads.os, "getloadavg", lambda: (3.1, 0.0, 0.0))  # two others busy
    assert threads.idle_cores() == 2
    monkeypatch.setattr(threads.os, "getloadavg", lambda: (9.0, 0.0, 0.0))
    assert threads.idle_cores() == 1 and threads.count(work=1e9) == 1
    assert threads.workers(work=1e9) == 4  # independent threads: a busy core slows only one


def test_every_public_call_leaves_the_callers_settings(user_settings):
    x = dl.datasets.get("moons").sample(300, seed=0)
    checks = {
        "fit, compiled spline": lambda: dl.fit(dl.flows.nsf(2, 2, (8,)), x, epochs=1,
                                               standardize=True, verbose=False),
        "fit, torch": lambda: dl.fit(dl.flows.realnvp(2, 2, (8,)), x, epochs=1,
                                     engine="torch", verbose=False),
        "fit_many, compiled": lambda: dl.fit_many([dl.flows.realnvp(2, 2, (8,))] * 2, x,
                                                  epochs=1, engine="compiled", verbose=False),
        "flow log_prob and sample": lambda: (dl.flows.recommended(2).log_prob(
            torch.zeros(40000, 2)), dl.flows.recommended(2).sample(100)),
        "FlowDensity": lambda: dl.FlowDensity(epochs=1).fit(x).score_samples(x),
        "KDE": lambda: dl.KDE(bandwidth="cv").fit(x).score_samples(x),
        "KDE grid and sample": lambda: (dl.KDE((0.2, 0.3)).fit(x).evaluate_grid(
            dl.grids.make_grid(((-2, 3), (-2, 2)), 10)), dl.KDE().fit(x).sample(5)),
        "AutoDensity": lambda: dl.AutoDensity(candidates=["kde", "gaussian-mixture"]).fit(x),
    }
    for name, call in checks.items():
        call()
        assert threads.settings() == user_settings, name


def test_the_count_used_is_recorded_and_results_do_not_depend_on_it():
    x = dl.datasets.get("moons").sample(200, seed=1)
    options = dict(epochs=2, standardize=True, verbose=False, seed=3)
    one = dl.fit_many([dl.flows.nsf(2, 2, (8,))] * 2, x, threads=1, **options)
    two = dl.fit_many([dl.flows.nsf(2, 2, (8,))] * 2, x, threads=2, **options)
    assert [r.threads for r in one] == [1, 1] and [r.threads for r in two] == [2, 2]
    assert one[1].history.val_nll == two[1].history.val_nll
    small = dl.fit(dl.flows.realnvp(2, 2, (8,)), x, engine="torch", epochs=1, verbose=False)
    assert small.threads == 1  # a small network: one thread, whatever the cores


def test_kde_threads_share_the_sums_exactly():
    x = np.random.default_rng(0).normal(size=(3000, 2))
    q = np.random.default_rng(1).normal(size=(3000, 2))
    np.testing.assert_array_equal(dl.KDE(threads=1).fit(x).score_samples(q),
                                  dl.KDE(threads=2).fit(x).score_samples(q))


def test_a_compiled_path_announces_its_first_compilation(tmp_path, monkeypatch, capsys):
    module = tmp_path / "fresh_kernels.py"
    module.write_text(textwrap.dedent("""
        import numba

        @numba.njit(cache=True)
        def twice(v):
            return 2 * v
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setitem(compiling.PATHS, "fresh", compiling.CompiledPath(
        "a fresh kernel", "fresh_kernels", ("twice",), 1))
    assert not compiling.is_cached("fresh")
    compiling.announce("fresh")
    assert "compiling a fresh kernel once (about 1 s" in capsys.readouterr().err
    import fresh_kernels

    fresh_kernels.twice(1.0)
    assert compiling.is_cached("fresh")
    compiling.announce("fresh")  # once per process
    assert capsys.readouterr().err == ""


def run_python(code: str) -> str:
    completed = subprocess.run([sys.executable, "-c", textwrap.dedent(code)],
                               capture_output=True, text=True, timeout=120, check=True)
    return completed.stdout


@pytest.mark.parametrize("command", [["--help"], ["datasets"], ["experiments"],
                                     ["train", "--help"], ["sample", "--help"]])
def test_light_commands_import_no_torch_and_no_numba(command):
    out = run_python(f"""
        import sys
        from typer.testing import CliRunner
        from densitylab.cli import app
        result = CliRunner().invoke(app, {command!r})
        assert result.exit_code == 0, result.output
        print(sorted({{"torch", "numba"}} & set(sys.modules)))
    """)
    assert out.strip() == "[]"


@pytest.mark.slow  # a fresh interpreter: the full run's
def test_sampling_a_saved_flow_imports_neither_numba_nor_scikit_learn(tmp_path):
    dl.save(dl.flows.recommended(2), tmp_path / "model")
    out = run_python(f"""
        import sys
        from typer.testing import CliRunner
        from densitylab.cli import app
        result = CliRunner().invoke(app, ["sample", {str(tmp_path / "model")!r}, "-n", "10",
                                          "--out", {str(tmp_path / "s.csv")!r}])
        assert result.exit_code == 0, result.output
        print(sorted({{"numba", "sklearn"}} & set(sys.modules)))
    """)
    assert out.strip() == "[]"
    assert len((tmp_path / "s.csv").read_text().splitlines()) == 11


def test_the_cli_records_the_thread_count_in_the_run(tmp_path):
    from typer.testing import CliRunner

    from densitylab.cli import app

    result = CliRunner().invoke(app, ["kde", "moons", "-n", "300", "--resolution", "20",
                                      "--threads", "2", "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    assert '"threads": 2' in (tmp_path / "run" / "config.json").read_text()
    bad = CliRunner().invoke(app, ["kde", "moons", "--threads", "0", "--out", str(tmp_path / "x")])
    assert "--threads" in str(bad.exception) and not (tmp_path / "x").exists()
