"""Outputs never destroy anything: every command, every shape of output path, concurrent writers."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from densitylab import _files
from densitylab.cli import main

TRAIN = ["train", "moons", "-n", "200", "--n-test", "200", "--epochs", "2", "--layers", "2",
         "--hidden", "8", "-q"]
DIRECTORY_COMMANDS = {
    "kde": ["kde", "moons", "-n", "200", "--resolution", "20"],
    "train": TRAIN,
    "run": ["run", "depth", "--quick", "-q"],
    "reproduce": ["reproduce", "--quick", "--only", "depth"],
    "datasets": ["datasets"],  # --plot DIR
}
FILE_COMMANDS = ("sample", "score")


def cli(capsys, monkeypatch, *args: str) -> tuple[int, str]:
    """Run the ``densitylab`` entry point in-process: exit code and everything it printed."""
    monkeypatch.setattr(sys, "argv", ["densitylab", *args])
    try:
        main()
        code = 0
    except SystemExit as done:
        code = done.code if isinstance(done.code, int) else 0
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def snapshot(root: Path) -> dict[str, str]:
    """Every path under ``root`` with a digest of its bytes (``dir`` for directories)."""
    found = {}
    for path in sorted(root.rglob("*")):
        key = str(path.relative_to(root))
        found[key] = "dir" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def staging_left(root: Path) -> list[str]:
    return [str(p) for p in root.rglob(f"{_files._STAGING_PREFIX}*")]


def with_out(command: str, out: str, run: Path | None = None, points: Path | None = None):
    if command in DIRECTORY_COMMANDS:
        flag = "--plot" if command == "datasets" else "--out"
        return [*DIRECTORY_COMMANDS[command], flag, out]
    if command == "sample":
        return ["sample", str(run), "-n", "20", "--out", out]
    return ["score", str(run), str(points), "--out", out]


@pytest.fixture(scope="module")
def model_run(tmp_path_factory):
    """A trained run and a CSV of points, outside the folders the tests below inspect."""
    root = tmp_path_factory.mktemp("model")
    from typer.testing import CliRunner

    from densitylab.cli import app

    result = CliRunner().invoke(app, [*TRAIN, "--out", str(root / "run")])
    assert result.exit_code == 0, result.output
    points = root / "points.csv"
    np.savetxt(points, np.random.default_rng(0).normal(size=(10, 2)), delimiter=",")
    return root / "run", points


def user_folder(root: Path) -> Path:
    """A folder of the user's own files (a data file and a notes file in a subfolder)."""
    folder = root / "victim"
    (folder / "notes").mkdir(parents=True)
    np.savetxt(folder / "mydata.csv", np.ones((5, 2)), delimiter=",")
    (folder / "notes" / "todo.txt").write_text("keep me\n")
    return folder


REFUSED_SHAPES = ("existing-file", "foreign-folder", "under-a-file", "dot", "dot-dot",
                  "protected")


@pytest.mark.parametrize("shape", REFUSED_SHAPES)
@pytest.mark.parametrize("command", [*DIRECTORY_COMMANDS, *FILE_COMMANDS])
def test_foreign_outputs_are_refused_and_left_intact(
    tmp_path, monkeypatch, capsys, model_run, command, shape
):
    if command in FILE_COMMANDS and shape == "foreign-folder":
        shape = "folder"  # a file command given a folder: refused as well
    work = tmp_path / "work"
    folder = user_folder(work)
    (work / "report.txt").write_text("the user's report\n")
    monkeypatch.chdir(folder)
    out = {
        "existing-file": str(work / "report.txt"),
        "foreign-folder": str(folder),
        "folder": str(folder),
        "under-a-file": str(work / "report.txt" / "out"),
        "dot": ".",
        "dot-dot": "..",
        "protected": "/proc/densitylab-cannot-write-here/out",
    }[shape]
    if command in FILE_COMMANDS and shape == "existing-file":
        out = str(folder / "mydata.csv")  # a user's data file is never overwritten
    before = snapshot(work)
    code, output = cli(capsys, monkeypatch, *with_out(command, out, *model_run))
    assert code == 2, output
    lines = output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "Traceback" not in output
    assert snapshot(work) == before
    assert staging_left(work) == [] and staging_left(tmp_path) == []


@pytest.mark.slow
@pytest.mark.parametrize("command", ["kde", "train", *FILE_COMMANDS])
def test_own_outputs_are_replaced_and_long_names_fit(
    tmp_path, monkeypatch, capsys, model_run, command
):
    out = tmp_path / ("r" * 250 + (".csv" if command in FILE_COMMANDS else ""))
    for _ in range(2):  # the second run replaces the first, its own output of the same kind
        code, output = cli(capsys, monkeypatch, *with_out(command, str(out), *model_run))
        assert code == 0, output
    assert staging_left(tmp_path) == []
    if command in FILE_COMMANDS:
        assert out.is_file()
    else:
        assert _files.read_marker(out)["kind"] == command
        assert (out / "config.json").is_file()


def test_an_output_of_another_kind_is_refused(tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    code, output = cli(capsys, monkeypatch, *with_out("kde", str(out)))
    assert code == 0, output
    before = snapshot(tmp_path)
    code, output = cli(capsys, monkeypatch, *with_out("train", str(out)))
    assert code == 2 and "kde output" in output
    assert snapshot(tmp_path) == before


def test_a_file_added_to_a_run_protects_it(tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    assert cli(capsys, monkeypatch, *with_out("kde", str(out)))[0] == 0
    (out / "my-notes.txt").write_text("mine\n")
    code, output = cli(capsys, monkeypatch, *with_out("kde", str(out)))
    assert code == 2 and "my-notes.txt" in output
    assert (out / "my-notes.txt").read_text() == "mine\n"


def test_a_failed_command_leaves_no_directory(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code, output = cli(capsys, monkeypatch, "kde", "missing.csv", "--out", "new")
    assert code == 2 and "missing.csv" in output
    assert list(tmp_path.iterdir()) == []


def _hold(path: str, started, release) -> None:
    with _files.claimed_directory(path, "train"):
        started.set()
        release.wait(30)


def test_a_second_writer_is_refused_while_the_first_holds_the_directory(tmp_path):
    out = tmp_path / "run"
    context = multiprocessing.get_context("fork")
    started, release = context.Event(), context.Event()
    holder = context.Process(target=_hold, args=(str(out), started, release))
    holder.start()
    try:
        assert started.wait(30)
        with pytest.raises(ValueError, match="another densitylab process"), \
                _files.claimed_directory(out, "train"):
            pass
    finally:
        release.set()
        holder.join(30)
    with _files.claimed_directory(out, "train"):  # free again once the first is done
        pass


@pytest.mark.slow
def test_concurrent_train_runs_leave_one_complete_run(tmp_path):
    """Two real ``densitylab train`` processes on one --out: one refuses, one run is complete."""
    import subprocess

    out = tmp_path / "run"
    command = [sys.executable, "-m", "densitylab", "train", "moons", "-n", "200", "--n-test",
               "200", "--epochs", "30", "--layers", "2", "--hidden", "8", "-q", "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    first = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    second = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    results = [(p.wait(300), p.stderr.read()) for p in (first, second)]
    codes = sorted(code for code, _ in results)
    # both may succeed one after the other; when they overlap, exactly one refuses
    assert codes in ([0, 0], [0, 2]), results
    if codes == [0, 2]:
        assert any("another densitylab process" in err for _, err in results)
    names = {p.name for p in out.iterdir()}
    assert names == {".densitylab", "config.json", "metrics.json", "history.csv", "model",
                     "figures"}
    assert json.loads((out / "metrics.json").read_text())["trained"] is True
    assert staging_left(tmp_path) == []


def test_save_refuses_a_foreign_folder(tmp_path):
    import densitylab as dl

    folder = user_folder(tmp_path)
    before = snapshot(tmp_path)
    with pytest.raises(ValueError, match="did not write"):
        dl.save(dl.flows.realnvp(2, 2), folder)
    assert snapshot(tmp_path) == before
