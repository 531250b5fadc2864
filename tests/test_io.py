"""Save/load: exact round trips, atomic writes, and clear refusals of bad files. No pickle."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import densitylab as dl
from densitylab import flows, io


def trained(builder: str, standardize: bool = False):
    x = np.random.default_rng(0).normal(size=(200, 3)) * [1.0, 2.0, 0.5]
    flow = flows.build(builder, dim=3, n_layers=2, seed=4)
    return dl.fit(flow, x, epochs=2, standardize=standardize, verbose=False).flow, x


@pytest.mark.parametrize(("builder", "standardize"), [("realnvp", False), ("glow", True)])
def test_flow_round_trip_gives_identical_log_prob(tmp_path, builder, standardize):
    flow, x = trained(builder, standardize)
    io.save(flow, tmp_path / "model")
    loaded = dl.load(tmp_path / "model")
    assert loaded.config == flow.config
    assert torch.equal(loaded.log_prob(x), flow.log_prob(x))
    assert sorted(p.name for p in (tmp_path / "model").iterdir()) == [
        ".densitylab",  # the marker that lets a later save recognise and replace it
        "config.json",
        "model.safetensors",
    ]


def test_float64_flow_round_trip(tmp_path):
    flow = flows.triangular = flows.realnvp(2, 2, triangular=True, mixing="permute").double()
    x = torch.randn(20, 2, dtype=torch.float64)
    dl.save(flow, tmp_path / "m")
    loaded = dl.load(tmp_path / "m")
    assert loaded.dtype == torch.float64
    assert torch.equal(loaded.log_prob(x), flow.log_prob(x))


def test_estimator_round_trip(tmp_path):
    x = np.random.default_rng(1).normal(size=(120, 2))
    est = dl.FlowDensity(n_layers=2, hidden=(8,), epochs=2).fit(x)
    dl.save(est, tmp_path / "est")
    loaded = dl.load(tmp_path / "est")
    assert loaded.get_params() == est.get_params()
    np.testing.assert_array_equal(loaded.score_samples(x), est.score_samples(x))
    assert loaded.best_epoch_ == est.best_epoch_


def test_saving_replaces_an_old_model_and_leaves_no_temporaries(tmp_path):
    first, x = trained("realnvp")
    second = flows.realnvp(3, 2, seed=99)
    dl.save(first, tmp_path / "m")
    dl.save(second, tmp_path / "m")
    assert torch.equal(dl.load(tmp_path / "m").log_prob(x), second.log_prob(x))
    assert [p.name for p in tmp_path.iterdir()] == ["m"]


def test_interrupted_save_keeps_the_old_model(tmp_path, monkeypatch):
    flow, x = trained("realnvp")
    dl.save(flow, tmp_path / "m")

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(io, "save_file", crash)
    with pytest.raises(KeyboardInterrupt):
        dl.save(flows.realnvp(3, 2, seed=5), tmp_path / "m")
    monkeypatch.undo()
    assert torch.equal(dl.load(tmp_path / "m").log_prob(x), flow.log_prob(x))
    assert [p.name for p in tmp_path.iterdir()] == ["m"]


def corrupt_truncate(path: Path) -> None:
    data = (path / "model.safetensors").read_bytes()
    (path / "model.safetensors").write_bytes(data[: len(data) // 2])


def corrupt_flip_byte(path: Path) -> None:
    data = bytearray((path / "model.safetensors").read_bytes())
    data[-3] ^= 0xFF
    (path / "model.safetensors").write_bytes(bytes(data))


def corrupt_version(path: Path) -> None:
    header = json.loads((path / "config.json").read_text())
    header["version"] = 99
    (path / "config.json").write_text(json.dumps(header))


def corrupt_json(path: Path) -> None:
    (path / "config.json").write_text("{not json")


def corrupt_kind(path: Path) -> None:
    header = json.loads((path / "config.json").read_text())
    header["kind"] = "pickle"
    (path / "config.json").write_text(json.dumps(header))


def corrupt_architecture(path: Path) -> None:
    header = json.loads((path / "config.json").read_text())
    header["config"]["n_layers"] = 5
    (path / "config.json").write_text(json.dumps(header))


@pytest.mark.parametrize(
    ("corrupt", "message"),
    [
        (corrupt_truncate, "truncated or modified"),
        (corrupt_flip_byte, "truncated or modified"),
        (corrupt_version, "format version 99"),
        (corrupt_json, "not valid JSON"),
        (corrupt_kind, "unknown kind"),
        (corrupt_architecture, "do not fit"),
    ],
)
def test_bad_model_files_are_refused_clearly(tmp_path, corrupt, message):
    flow, _ = trained("realnvp")
    dl.save(flow, tmp_path / "m")
    corrupt(tmp_path / "m")
    with pytest.raises(ValueError, match=message):
        dl.load(tmp_path / "m")


def test_missing_and_foreign_paths(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a model directory"):
        dl.load(tmp_path / "absent")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "config.json").write_text("{}")
    with pytest.raises(ValueError, match="not overwriting"):
        dl.save(flows.realnvp(2), tmp_path / "notes")
    with pytest.raises(ValueError, match="cannot save a dict"):
        dl.save({}, tmp_path / "x")
    with pytest.raises(ValueError, match="not fitted"):
        dl.save(dl.FlowDensity(), tmp_path / "y")


def test_no_pickle_anywhere_in_the_package():
    source = Path(dl.__file__).parent
    for path in source.rglob("*.py"):
        text = path.read_text()
        assert "import pickle" not in text and "torch.load(" not in text, path
