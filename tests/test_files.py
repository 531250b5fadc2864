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


# -- round two: ownership by content, at every depth; links, pipes and devices -------------------
@pytest.mark.parametrize("command", ["kde", "train"])
def test_a_users_files_nested_inside_an_output_are_kept_byte_for_byte(
    tmp_path, monkeypatch, capsys, command
):
    out = tmp_path / "out"
    assert cli(capsys, monkeypatch, *with_out(command, str(out)))[0] == 0
    nested = out / "figures" / "mine.txt" if command == "kde" else out / "model" / "notes"
    nested.write_bytes(b"the user's own \\x00 bytes\n")
    before = snapshot(tmp_path)
    code, output = cli(capsys, monkeypatch, *with_out(command, str(out)))
    assert code == 2 and nested.relative_to(out).as_posix() in output, output
    assert snapshot(tmp_path) == before
    nested.unlink()
    (out / "config.json").write_text("{}")  # a file of ours, edited by the user
    code, output = cli(capsys, monkeypatch, *with_out(command, str(out)))
    assert code == 2 and "config.json (changed)" in output, output
    assert (out / "config.json").read_text() == "{}"


def test_a_users_empty_folder_inside_an_output_is_kept(tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    assert cli(capsys, monkeypatch, *with_out("kde", str(out)))[0] == 0
    (out / "figures" / "drafts").mkdir()
    code, output = cli(capsys, monkeypatch, *with_out("kde", str(out)))
    assert code == 2 and "figures/drafts" in output
    assert (out / "figures" / "drafts").is_dir()


def test_the_marker_records_every_file_at_every_depth_with_its_checksum(
    tmp_path, monkeypatch, capsys
):
    out = tmp_path / "out"
    assert cli(capsys, monkeypatch, *with_out("train", str(out)))[0] == 0
    files = _files.read_marker(out)["files"]
    expected = {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in out.rglob("*") if p.is_file() and p.name != _files.MARKER} | {
        "model/.densitylab": hashlib.sha256((out / "model/.densitylab").read_bytes()).hexdigest()}
    assert files == expected and "model/model.safetensors" in files


@pytest.mark.parametrize("command", FILE_COMMANDS)
def test_a_matching_header_does_not_make_a_file_densitylabs(
    tmp_path, monkeypatch, capsys, model_run, command
):
    mine = tmp_path / "my_measurements.csv"
    mine.write_text("x1,x2\n1,2\n" if command == "sample" else "log_density\n-1.5\n")
    before = mine.read_bytes()
    code, output = cli(capsys, monkeypatch, *with_out(command, str(mine), *model_run))
    assert code == 2 and "not written by densitylab" in output
    assert mine.read_bytes() == before
    ours = tmp_path / "ours.csv"
    for _ in range(2):  # its own output, unchanged: replaced
        assert cli(capsys, monkeypatch, *with_out(command, str(ours), *model_run))[0] == 0
    with open(ours, "a") as handle:  # ... until the user edits it
        handle.write("1,2\n")
    edited = ours.read_bytes()
    code, output = cli(capsys, monkeypatch, *with_out(command, str(ours), *model_run))
    assert code == 2 and ours.read_bytes() == edited


def test_a_link_as_output_is_followed_never_renamed(tmp_path, monkeypatch, capsys, model_run):
    folder, link = tmp_path / "users-empty-folder", tmp_path / "link"
    folder.mkdir()
    link.symlink_to(folder)
    for _ in range(2):
        assert cli(capsys, monkeypatch, *with_out("kde", str(link)))[0] == 0
        assert link.is_symlink() and os.readlink(link) == str(folder)
        assert (folder / "config.json").is_file() and _files.read_marker(folder)["kind"] == "kde"
    assert staging_left(tmp_path) == []
    target, file_link = tmp_path / "samples.csv", tmp_path / "samples-link.csv"
    file_link.symlink_to(target)
    for _ in range(2):
        assert cli(capsys, monkeypatch, *with_out("sample", str(file_link), *model_run))[0] == 0
        assert file_link.is_symlink() and len(target.read_text().splitlines()) == 21


def test_out_dash_writes_csv_to_standard_output(tmp_path, model_run):
    from typer.testing import CliRunner

    from densitylab.cli import app

    run, points = model_run
    result = CliRunner().invoke(app, ["sample", str(run), "-n", "4", "--seed", "3", "--out", "-"])
    assert result.exit_code == 0, result.output
    rows = result.stdout.strip().splitlines()
    assert rows[0] == "x1,x2" and len(rows) == 5 and "wrote" not in result.stdout
    result = CliRunner().invoke(app, ["score", str(run), str(points), "--out", "-"])
    assert result.stdout.splitlines()[0] == "log_density" and len(result.stdout.split()) == 11
    assert list(tmp_path.iterdir()) == []


def test_a_fifo_is_written_never_read(tmp_path, monkeypatch, capsys, model_run):
    import threading
    import time

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()), daemon=True)
    reader.start()
    start = time.perf_counter()
    code, output = cli(capsys, monkeypatch, *with_out("sample", str(fifo), *model_run))
    reader.join(10)
    assert code == 0, output
    assert time.perf_counter() - start < 10 and not reader.is_alive()
    assert received[0].decode().splitlines()[0] == "x1,x2" and fifo.exists()
    assert staging_left(tmp_path) == []


def test_dev_stdout_is_written_through_the_descriptor(capfd, monkeypatch, model_run):
    run, points = model_run
    monkeypatch.setattr(sys, "argv", ["densitylab", "score", str(run), str(points),
                                      "--out", "/dev/stdout"])
    with pytest.raises(SystemExit) as done:
        main()
    assert done.value.code in (0, None)
    captured = capfd.readouterr()
    assert captured.out.splitlines()[0] == "log_density" and len(captured.out.split()) == 11
    assert "wrote 10 log-densities" in captured.err


@pytest.mark.slow
def test_a_dev_stdout_pipe_into_head_finishes_within_seconds(model_run):
    import subprocess

    run, _ = model_run
    shell = (f"{sys.executable} -m densitylab sample {run} -n 200000 --out /dev/stdout "
             "| head -n 2")
    done = subprocess.run(shell, shell=True, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.stdout.splitlines()[0] == "x1,x2" and len(done.stdout.splitlines()) == 2
    assert "Traceback" not in done.stderr
