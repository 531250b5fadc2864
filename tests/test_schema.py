"""Model directories are untrusted input: every tampered one is a quick one-line ValueError."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np
import pytest

import densitylab as dl
from densitylab.baselines import VAE


def edit(path: Path, change) -> None:
    header = json.loads((path / "config.json").read_text())
    change(header)
    (path / "config.json").write_text(json.dumps(header))


def set_flow(key, value):
    return lambda header: header["config"].__setitem__(key, value)


TAMPERED_FLOWS = {
    "hanging layer count": set_flow("n_layers", 10_000_000),
    "huge networks": set_flow("hidden", [200_000, 200_000]),
    "unknown key": set_flow("colour", "red"),
    "bad dtype": set_flow("dtype", "float16x"),
    "null config": lambda header: header.__setitem__("config", None),
    "list config": lambda header: header.__setitem__("config", [1, 2]),
    "unknown builder": set_flow("builder", "os.system"),
    "string flag": set_flow("standardize", "yes"),
    "text widths": set_flow("hidden", ["a", "b"]),
    "negative width": set_flow("hidden", [-4, 8]),
    "boolean layers": set_flow("n_layers", True),
    "wrong dim": set_flow("dim", 3),
    "missing dim": lambda header: header["config"].pop("dim"),
}


@pytest.fixture(scope="module")
def saved_flow(tmp_path_factory):
    path = tmp_path_factory.mktemp("flow") / "model"
    dl.save(dl.flows.realnvp(2, 3, hidden=(8, 8), seed=1), path)
    return path


def copy_of(path: Path, into: Path) -> Path:
    target = into / "copy"
    target.mkdir()
    for item in path.iterdir():
        (target / item.name).write_bytes(item.read_bytes())
    return target


def assert_refused_quickly(path: Path, match: str | None = None) -> str:
    start = time.perf_counter()
    with pytest.raises(ValueError) as info:
        dl.load(path)
    assert time.perf_counter() - start < 5.0  # typically 0.01 s; a hang or a 320 GB allocation not
    message = str(info.value)
    assert "\n" not in message and ("config.json" in message or "safetensors" in message)
    if match:
        assert match in message
    return message


@pytest.mark.parametrize("case", TAMPERED_FLOWS)
def test_tampered_flow_configurations_are_refused(tmp_path, saved_flow, case):
    path = copy_of(saved_flow, tmp_path)
    edit(path, TAMPERED_FLOWS[case])
    assert_refused_quickly(path)


def test_an_untouched_copy_loads(tmp_path, saved_flow):
    flow = dl.load(copy_of(saved_flow, tmp_path))
    assert flow.config["n_layers"] == 3


def test_a_truncated_tensor_file_with_a_matching_checksum_is_refused(tmp_path, saved_flow):
    path = copy_of(saved_flow, tmp_path)
    tensors = path / "model.safetensors"
    tensors.write_bytes(tensors.read_bytes()[:100])
    edit(path, lambda h: h.__setitem__("sha256", hashlib.sha256(tensors.read_bytes()).hexdigest()))
    assert_refused_quickly(path, "safetensors")


def test_tampered_estimator_and_baseline_are_refused(tmp_path):
    x = np.random.default_rng(0).normal(size=(60, 2))
    est = dl.FlowDensity(model="realnvp", n_layers=2, hidden=(8,), epochs=1).fit(x)
    dl.save(est, tmp_path / "est")
    edit(tmp_path / "est", lambda h: h["config"]["params"].__setitem__("colour", "red"))
    assert_refused_quickly(tmp_path / "est", "colour")
    dl.save(est, tmp_path / "est2")
    edit(tmp_path / "est2", lambda h: h["config"].__setitem__("fitted", {}))
    assert_refused_quickly(tmp_path / "est2", "fitted")
    dl.save(VAE(2, hidden=(8,)), tmp_path / "vae")
    edit(tmp_path / "vae", lambda h: h["config"].__setitem__("latent_dim", 10**9))
    assert_refused_quickly(tmp_path / "vae", "latent_dim")


def test_a_damaged_checkpoint_is_a_clear_error(tmp_path):
    x = np.random.default_rng(0).normal(size=(100, 2))
    options = {"epochs": 4, "batch_size": 32, "checkpoint": tmp_path / "ckpt",
               "checkpoint_every": 2, "verbose": False}
    dl.fit(dl.flows.realnvp(2, 2, hidden=(8,)), x, **options)
    state = tmp_path / "ckpt" / "state.safetensors"
    state.write_bytes(state.read_bytes()[:50])
    with pytest.raises(ValueError, match="is damaged"):
        dl.fit(dl.flows.realnvp(2, 2, hidden=(8,)), x, **options, resume=True)
    (tmp_path / "ckpt" / "progress.json").write_text("{not json")
    with pytest.raises(ValueError, match="is damaged"):
        dl.fit(dl.flows.realnvp(2, 2, hidden=(8,)), x, **options, resume=True)


def test_every_saved_estimator_works_with_score_and_sample(tmp_path):
    """The README's recipe, ``dl.save(FlowDensity(...))``, then the command line."""
    from typer.testing import CliRunner

    from densitylab.cli import app

    x = np.random.default_rng(0).normal(size=(80, 2))
    est = dl.FlowDensity(model="realnvp", n_layers=2, hidden=(8,), epochs=2,
                         lr=np.float32(1e-3)).fit(x)
    dl.save(est, tmp_path / "est")
    np.savetxt(tmp_path / "points.csv", x[:7], delimiter=",")
    runner = CliRunner()
    result = runner.invoke(app, ["score", str(tmp_path / "est"), str(tmp_path / "points.csv"),
                                 "--out", str(tmp_path / "scores.csv")])
    assert result.exit_code == 0, result.output
    scores = np.loadtxt(tmp_path / "scores.csv", skiprows=1)
    np.testing.assert_allclose(scores, est.score_samples(x[:7]), rtol=1e-6)
    result = runner.invoke(app, ["sample", str(tmp_path / "est"), "-n", "9",
                                 "--out", str(tmp_path / "samples.csv")])
    assert result.exit_code == 0, result.output
    assert np.loadtxt(tmp_path / "samples.csv", delimiter=",", skiprows=1).shape == (9, 2)
