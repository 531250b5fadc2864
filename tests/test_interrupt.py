"""Ctrl-C in model selection stops it and says so; a resumed run can be given more epochs; a
tampered progress file is refused."""

from __future__ import annotations

import json
import signal
import threading

import numpy as np
import pytest

import densitylab as dl
from densitylab import auto as auto_module
from densitylab.estimators import FlowDensity


def data(n: int = 120, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(n, 2))
    x[:, 1] += x[:, 0] ** 2
    return x


def test_ctrl_c_during_a_candidate_stops_model_selection_and_records_it(monkeypatch):
    """Before: the interrupted candidate's folds were cut short, selection went on and its
    truncated score (-1.50 instead of -1.11) was compared as if complete."""

    def interrupted_flow(seed: int) -> FlowDensity:  # Ctrl-C half a second into its training
        threading.Timer(0.5, signal.raise_signal, (signal.SIGINT,)).start()
        return FlowDensity(n_layers=1, hidden=(4,), epochs=10**6, patience=10**6,
                           random_state=seed)

    monkeypatch.setitem(auto_module.CANDIDATES, "flow", interrupted_flow)
    # Python's own Ctrl-C handler, whatever an earlier test in this process left installed
    # (an event loop's SIGINT handler swallows the signal instead of raising KeyboardInterrupt)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    selector = dl.AutoDensity(candidates=["gaussian-mixture", "flow", "kde"], random_state=0)
    try:
        with pytest.warns(UserWarning,
                          match="interrupted during flow: chose among gaussian-mixture"):
            selector.fit(data())
    finally:
        signal.signal(signal.SIGINT, previous)
    assert selector.interrupted_ == "flow" and selector.best_name_ == "gaussian-mixture"
    results = selector.cv_results_
    assert results["note"][1].startswith("interrupted") and results["note"][2].startswith(
        "not run")
    assert results["mean_log_likelihood"][1] == results["mean_log_likelihood"][2] == -np.inf


def test_ctrl_c_before_any_candidate_is_done_propagates(monkeypatch):
    def interrupted(seed: int):
        raise KeyboardInterrupt

    monkeypatch.setitem(auto_module.CANDIDATES, "kde", interrupted)
    with pytest.raises(KeyboardInterrupt):
        dl.AutoDensity(candidates=["kde", "gaussian-mixture"]).fit(data())


def test_resume_with_more_epochs_extends_the_run(tmp_path):
    """Before: a larger epoch budget made the checkpoint 'belong to other options'."""
    options = dict(batch_size=40, verbose=False, seed=3, checkpoint=tmp_path / "c",
                   checkpoint_every=1, engine="torch")
    dl.fit(dl.flows.realnvp(2, 2, seed=1), data(), epochs=2, **options)
    extended = dl.fit(dl.flows.realnvp(2, 2, seed=1), data(), epochs=4, resume=True, **options)
    straight = dl.fit(dl.flows.realnvp(2, 2, seed=1), data(), epochs=4,
                      **(options | {"checkpoint": tmp_path / "other"}))
    assert len(extended.history.val_nll) == 4
    np.testing.assert_allclose(extended.history.val_nll, straight.history.val_nll, rtol=1e-6)


@pytest.mark.parametrize("edit", [
    lambda p: p.update(epoch=10**9),  # claims a finished run: would train nothing
    lambda p: p.update(stop_reason=["finished"]),
    lambda p: p.update(best_epoch=[7]),
    lambda p: p["histories"][0].update(seconds=[]),
])
def test_a_tampered_progress_file_is_refused(tmp_path, edit):
    options = dict(batch_size=40, verbose=False, checkpoint=tmp_path / "c", checkpoint_every=1)
    dl.fit(dl.flows.realnvp(2, 2, seed=1), data(), epochs=2, **options)
    path = tmp_path / "c" / "progress.json"
    progress = json.loads(path.read_text())
    edit(progress)
    path.write_text(json.dumps(progress))
    with pytest.raises(ValueError, match="damaged or tampered"):
        dl.fit(dl.flows.realnvp(2, 2, seed=1), data(), epochs=3, resume=True, **options)
