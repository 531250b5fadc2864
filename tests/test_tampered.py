"""Tampered model folders and hostile data files: a one-line error, never NaN scores, a
traceback or an allocation the file's size does not justify."""

from __future__ import annotations

import hashlib
import json
import os
import zipfile

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

import densitylab as dl
from densitylab.datasets import _load
from densitylab.estimators import ConditionalFlowDensity


def points(n: int = 80, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(n, 2))
    x[:, 1] += x[:, 0] ** 2
    return x


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """One saved AutoDensity per winner kind, and a saved conditional flow."""
    root = tmp_path_factory.mktemp("saved")
    for name in ("kde", "gaussian-mixture"):
        dl.save(dl.AutoDensity(candidates=[name]).fit(points()), root / name)
    c = points()[:, :1]
    dl.save(ConditionalFlowDensity(n_layers=1, hidden=(4,), epochs=1).fit(c, c[:, 0] ** 2),
            root / "conditional")
    return root


def tamper(source, target, tensors=None, config=None):
    """A copy of the model folder ``source`` with tensors and/or the configuration changed
    and the checksum brought up to date (what a careful attacker does)."""
    target.mkdir()
    state = load_file(source / "model.safetensors")
    header = json.loads((source / "config.json").read_text())
    if tensors:
        tensors(state)
    if config:
        config(header["config"])
    save_file(state, target / "model.safetensors")
    header["sha256"] = hashlib.sha256((target / "model.safetensors").read_bytes()).hexdigest()
    (target / "config.json").write_text(json.dumps(header))
    return target


def _set(key, value):
    def change(state):
        state[key] = value(state[key])
    return change


MIXTURE_TAMPERING = {
    "negative weights": ({"tensors": _set("best.weights_", lambda w: -w)}, "weights"),
    "NaN precisions": ({"tensors": _set("best.precisions_cholesky_",
                                         lambda p: p * torch.nan)}, "finite"),
    "negated scale": ({"tensors": _set("scale", lambda s: -s)}, "scale"),
    "unknown covariance type": ({"config": lambda c: c["best"].update(covariance_type="cubic")},
                                "covariance type"),
    "unknown params": ({"config": lambda c: c["best"]["params"].update(evil=1)}, "evil"),
    "cv_results a list": ({"config": lambda c: c.update(cv_results=[1, 2])}, "cv_results"),
    "unknown candidate": ({"config": lambda c: c["params"].update(candidates=["rm -rf"])},
                          "candidate"),
}


@pytest.mark.parametrize("case", MIXTURE_TAMPERING)
def test_a_tampered_mixture_winner_is_refused(saved, tmp_path, case):
    """Before: NaN scores with exit 0, or a traceback."""
    change, message = MIXTURE_TAMPERING[case]
    folder = tamper(saved / "gaussian-mixture", tmp_path / "m", **change)
    with pytest.raises(ValueError, match=message) as refused:
        dl.load(folder)
    assert "\n" not in str(refused.value) and "config.json" in str(refused.value)


@pytest.mark.parametrize("key, value", [("best.weights", lambda w: -w),
                                        ("best.data", lambda d: d * torch.nan),
                                        ("best.bandwidth", lambda h: h * 0)])
def test_a_tampered_kde_winner_is_refused(saved, tmp_path, key, value):
    folder = tamper(saved / "kde", tmp_path / "m", tensors=_set(key, value))
    with pytest.raises(ValueError):
        dl.load(folder)


def test_a_tampered_conditional_flow_is_refused(saved, tmp_path):
    folder = tamper(saved / "conditional", tmp_path / "m",
                    config=lambda c: c["fitted"].update(context_scale=[-1.0]))
    with pytest.raises(ValueError, match="context_scale"):
        dl.load(folder)


def test_the_untouched_folders_still_load_and_score(saved):
    for name in ("kde", "gaussian-mixture"):
        assert np.all(np.isfinite(dl.load(saved / name).score_samples(points(5, seed=1))))


def test_a_deeply_nested_configuration_is_one_line_error(saved, tmp_path):
    """Before: a RecursionError traceback."""
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes((saved / "kde" / "model.safetensors").read_bytes())
    (folder / "config.json").write_text("[" * 200_000 + "]" * 200_000)
    with pytest.raises(ValueError, match="nests deeper"):
        dl.load(folder)


def test_a_huge_tensor_file_is_refused_before_it_is_read(saved, tmp_path):
    """Before: 20 GB read whole into memory (a MemoryError traceback)."""
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "config.json").write_text((saved / "kde" / "config.json").read_text())
    with open(folder / "model.safetensors", "wb") as handle:
        handle.truncate(20 * 2**30)  # sparse: no disk space, no time
    with pytest.raises(ValueError, match="more than densitylab loads"):
        dl.load(folder)


def test_an_npy_header_claiming_a_huge_shape_is_refused(tmp_path):
    """Before: an attempt to allocate 14.6 TiB."""
    header = np.lib.format.header_data_from_array_1_0(np.zeros((2, 2)))
    header["shape"] = (10**12, 2)
    with open(tmp_path / "big.npy", "wb") as handle:
        np.lib.format.write_array_header_1_0(handle, header)
        handle.write(b"\0" * 100)
    with pytest.raises(ValueError, match="header claims shape"):
        dl.datasets.load(tmp_path / "big.npy")
    header["shape"] = (1000, 2)  # small, but more than the file holds
    with open(tmp_path / "short.npy", "wb") as handle:
        np.lib.format.write_array_header_1_0(handle, header)
        handle.write(b"\0" * 100)
    with pytest.raises(ValueError, match="more data than the file holds"):
        dl.datasets.load(tmp_path / "short.npy")


def test_an_npz_that_expands_too_far_is_refused(tmp_path, monkeypatch):
    """Before: a 6 MB archive expanded to 6 GB. The bound scaled down: 1 MiB here."""
    monkeypatch.setattr(_load, "MAX_ARRAY_BYTES", 2**20)
    np.savez_compressed(tmp_path / "bomb.npz", x=np.zeros((2**18, 2)))  # 4 MiB of zeros
    assert os.path.getsize(tmp_path / "bomb.npz") < 2**15
    with pytest.raises(ValueError, match="expands to"):
        dl.datasets.load(tmp_path / "bomb.npz")
    np.savez_compressed(tmp_path / "fine.npz", x=np.ones((100, 2)))
    assert dl.datasets.load(tmp_path / "fine.npz").shape == (100, 2)


def test_random_bytes_and_objects_never_get_pickle_advice(tmp_path):
    (tmp_path / "noise.npy").write_bytes(os.urandom(200))
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with zipfile.ZipFile(tmp_path / "objects.npz", "w") as archive:
        archive.write(tmp_path / "objects.npy", "x.npy")
    for name in ("noise.npy", "objects.npy", "objects.npz"):
        with pytest.raises(ValueError) as refused:
            dl.datasets.load(tmp_path / name)
        assert "allow_pickle" not in str(refused.value)
