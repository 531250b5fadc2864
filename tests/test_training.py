"""The fitting loop: it learns, it is reproducible, batched training equals separate training,
and divergence, early stopping and bad options behave as promised."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import densitylab as dl
from densitylab import flows
from densitylab.training.autograd import TorchEngine


def gaussian_data(n: int = 600, seed: int = 0, scale: float = 1.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    cov = np.array([[1.0, 0.8], [0.8, 1.0]])
    return scale * (rng.multivariate_normal([1.0, -2.0], cov, size=n))


def gaussian_entropy(scale: float = 1.0) -> float:
    cov = scale**2 * np.array([[1.0, 0.8], [0.8, 1.0]])
    return 0.5 * math.log(np.linalg.det(2 * math.pi * math.e * cov))


def parameters(flow) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in flow.parameters()])


def test_fit_learns_a_correlated_gaussian_to_its_entropy():
    x, test = gaussian_data(1000), gaussian_data(5000, seed=1)
    result = dl.fit(flows.realnvp(2, n_layers=4, seed=1), x, epochs=60, lr=5e-3, verbose=False)
    test_nll = -result.flow.log_prob(test).mean().item()
    assert test_nll == pytest.approx(gaussian_entropy(), abs=0.05)
    assert result.history.train_nll[-1] < result.history.train_nll[0]
    assert len(result.history.val_nll) == result.epochs_run == 60
    assert result.stop_reason == "completed"


def test_best_model_by_validation_is_returned():
    x = gaussian_data(400)
    result = dl.fit(flows.realnvp(2, n_layers=2, seed=0), x, epochs=15, lr=2e-2, verbose=False)
    val = x[result.val_indices]
    assert result.best_val_nll == pytest.approx(min(result.history.val_nll))
    assert result.best_epoch == 1 + int(np.argmin(result.history.val_nll))
    assert -result.flow.log_prob(val).mean().item() == pytest.approx(result.best_val_nll, rel=1e-5)
    assert len(result.val_indices) == 40 and len(result.train_indices) == 360
    assert set(result.val_indices).isdisjoint(result.train_indices)


def test_same_seed_is_bit_for_bit_reproducible():
    x = gaussian_data(300)
    runs = [dl.fit(flows.glow(2, 2, seed=3), x, epochs=4, seed=5, verbose=False) for _ in range(2)]
    assert torch.equal(parameters(runs[0].flow), parameters(runs[1].flow))
    assert runs[0].history.train_nll == runs[1].history.train_nll
    other = dl.fit(flows.glow(2, 2, seed=3), x, epochs=4, seed=6, verbose=False)
    assert not torch.equal(parameters(other.flow), parameters(runs[0].flow))


@pytest.mark.parametrize("builder", ["realnvp", "glow"])
def test_fit_many_equals_fitting_each_alone(builder):
    seeds = [0, 1, 2]
    datasets = [gaussian_data(256, seed=s) for s in seeds]
    make = [lambda s=s: flows.build(builder, dim=2, n_layers=2, seed=s).double() for s in seeds]
    options = dict(epochs=3, batch_size=32, lr=1e-2, verbose=False, standardize=True)
    together = dl.fit_many([m() for m in make], datasets, seed=seeds, **options)
    for m, seed in enumerate(seeds):
        alone = dl.fit(make[m](), datasets[m], seed=seed, **options)
        torch.testing.assert_close(parameters(together[m].flow), parameters(alone.flow))
        np.testing.assert_allclose(together[m].history.val_nll, alone.history.val_nll, rtol=1e-10)
        assert together[m].best_epoch == alone.best_epoch


@pytest.mark.parametrize("engine", ["torch", "compiled"])
def test_models_trained_together_stop_early_as_they_would_alone(engine):
    """A stacked model that runs out of patience keeps the weights, history and stop it
    would have alone, however long the others go on."""
    seeds = [0, 1, 2]
    datasets = [gaussian_data(120, seed=s) for s in seeds]
    make = [lambda s=s: flows.realnvp(2, 2, hidden=(8,), seed=s).double() for s in seeds]
    options = dict(epochs=30, batch_size=16, lr=3e-2, patience=2, verbose=False, engine=engine)
    together = dl.fit_many([m() for m in make], datasets, seed=seeds, **options)
    stops = [len(r.history.val_nll) for r in together]
    assert len(set(stops)) > 1 and min(stops) < options["epochs"]  # the case is exercised
    for m, seed in enumerate(seeds):
        alone = dl.fit(make[m](), datasets[m], seed=seed, **options)
        assert together[m].stop_reason == alone.stop_reason == "early-stopping"
        assert together[m].best_epoch == alone.best_epoch
        np.testing.assert_allclose(together[m].history.val_nll, alone.history.val_nll, rtol=1e-10)
        torch.testing.assert_close(parameters(together[m].flow), parameters(alone.flow))


def test_standardization_keeps_densities_in_user_units():
    x = gaussian_data(300)
    small = dl.fit(flows.realnvp(2, 2).double(), x, epochs=3, standardize=True, verbose=False)
    large = dl.fit(flows.realnvp(2, 2).double(), 100 * x, epochs=3, standardize=True, verbose=False)
    points = gaussian_data(50, seed=9)
    log_small = small.flow.log_prob(points)
    log_large = large.flow.log_prob(100 * points)
    torch.testing.assert_close(log_large, log_small - 2 * math.log(100))
    assert small.flow.config["standardize"] is True


def test_divergence_is_caught_and_the_best_model_kept():
    x = gaussian_data(200)
    with pytest.warns(RuntimeWarning, match=r"diverged at epoch \d+"):
        result = dl.fit(flows.realnvp(2, 2, seed=0), x, epochs=200, lr=1e4, verbose=False)
    assert result.stop_reason == "diverged"
    assert result.epochs_run < 200
    assert torch.isfinite(result.flow.log_prob(x)).all()


def test_patience_stops_when_validation_stalls():
    x = gaussian_data(200)
    result = dl.fit(flows.realnvp(2, 2), x, epochs=100, lr=1e-12, patience=3, verbose=False)
    assert result.stop_reason == "early-stopping"
    assert result.epochs_run == result.best_epoch + 3


def test_clipping_and_cosine_schedule_change_the_updates():
    x = gaussian_data(200)
    start = parameters(flows.realnvp(2, 2))
    clipped = dl.fit(flows.realnvp(2, 2), x, epochs=2, lr=1e-2, clip_grad=1e-9, verbose=False)
    free = dl.fit(flows.realnvp(2, 2), x, epochs=2, lr=1e-2, verbose=False)
    cosine = dl.fit(flows.realnvp(2, 2), x, epochs=2, lr=1e-2, schedule="cosine", verbose=False)
    moved = {name: (parameters(r.flow) - start).abs().max().item()
             for name, r in [("clipped", clipped), ("free", free), ("cosine", cosine)]}
    assert moved["free"] > 1e-3
    assert 0 < moved["clipped"] < moved["free"]  # Adam normalises, so clipping slows not stops
    assert not torch.equal(parameters(cosine.flow), parameters(free.flow))


def test_threads_are_restored():
    before = torch.get_num_threads()
    dl.fit(flows.realnvp(2, 1), gaussian_data(100), epochs=1, threads=1, verbose=False)
    assert torch.get_num_threads() == before


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(epochs=0), "epochs"),
        (dict(batch_size=0), "batch_size"),
        (dict(lr=-1.0), "lr"),
        (dict(lr=float("nan")), "lr"),
        (dict(val_fraction=1.0), "val_fraction"),
        (dict(patience=0), "patience"),
        (dict(schedule="step"), "schedule"),
        (dict(clip_grad=0.0), "clip_grad"),
    ],
)
def test_bad_options_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        dl.fit(flows.realnvp(2, 1), gaussian_data(50), **kwargs)


def test_bad_data_raises():
    with pytest.raises(ValueError, match="NaN"):
        dl.fit(flows.realnvp(2, 1), np.array([[0.0, 1.0], [np.nan, 0.0], [1.0, 1.0]]))
    with pytest.raises(ValueError, match="2 columns"):
        dl.fit(flows.realnvp(2, 1), np.zeros((10, 3)))
    with pytest.raises(ValueError, match="equal size"):
        dl.fit_many([flows.realnvp(2, 1)] * 2, [gaussian_data(50), gaussian_data(60)], epochs=1)


@pytest.mark.parametrize("ema", [None, 0.8])
def test_interrupted_run_resumes_to_the_same_result(tmp_path, monkeypatch, ema):
    x = gaussian_data(200)
    options = dict(epochs=6, batch_size=32, lr=1e-2, verbose=False, schedule="cosine", ema=ema)
    straight = dl.fit(flows.glow(2, 2, seed=1), x, **options)

    validate, calls = TorchEngine.validate, []

    def interrupt_in_epoch_five(loop):
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return validate(loop)

    monkeypatch.setattr(TorchEngine, "validate", interrupt_in_epoch_five)
    with pytest.warns(UserWarning, match="interrupted"):
        stopped = dl.fit(flows.glow(2, 2, seed=1), x, **options,
                         checkpoint=tmp_path / "ckpt", checkpoint_every=3)
    monkeypatch.undo()
    assert stopped.stop_reason == "interrupted" and stopped.epochs_run == 4
    assert torch.isfinite(stopped.flow.log_prob(x)).all()

    resumed = dl.fit(flows.glow(2, 2, seed=1), x, **options, checkpoint=tmp_path / "ckpt",
                     resume=True)
    assert resumed.epochs_run == 6 and resumed.stop_reason == "completed"
    assert torch.equal(parameters(resumed.flow), parameters(straight.flow))
    assert resumed.history.val_nll == straight.history.val_nll

    with pytest.raises(ValueError, match="other data"):
        dl.fit(flows.glow(2, 2, seed=1), 2 * x, **options, checkpoint=tmp_path / "ckpt",
               resume=True)


@pytest.mark.parametrize("engine", ["torch", "compiled"])
def test_ema_validates_the_moving_average_of_the_epoch_weights(monkeypatch, engine):
    seen: list[torch.Tensor] = []
    validate = TorchEngine.validate

    def record(loop):
        seen.append(parameters(loop.model).clone())
        return validate(loop)

    monkeypatch.setattr(TorchEngine, "validate", record)
    x = gaussian_data(300)
    options = dict(epochs=5, batch_size=32, lr=1e-2, verbose=False, engine=engine)
    dl.fit(flows.realnvp(2, 2, seed=1).double(), x, **options)
    weights = list(seen)  # the training weights after each epoch
    seen.clear()
    averaged = dl.fit(flows.realnvp(2, 2, seed=1).double(), x, ema=0.7, **options)
    expected = weights[0]
    for epoch, w in enumerate(weights):
        expected = expected if epoch == 0 else 0.7 * expected + 0.3 * w
        torch.testing.assert_close(seen[epoch], expected, rtol=1e-12, atol=1e-12)
    assert not torch.equal(seen[-1], weights[-1])
    torch.testing.assert_close(parameters(averaged.flow), seen[averaged.best_epoch - 1])


def test_ema_must_be_a_decay():
    with pytest.raises(ValueError, match="ema"):
        dl.fit(flows.realnvp(2, 1), gaussian_data(50), epochs=1, ema=1.0)


def test_device_choice():
    x = gaussian_data(100)
    result = dl.fit(flows.realnvp(2, 1), x, epochs=1, device="auto", verbose=False)
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert result.flow.device.type == expected
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device"):
            dl.fit(flows.realnvp(2, 1), x, epochs=1, device="cuda")


def test_a_new_objective_is_one_class_and_one_registry_entry(monkeypatch):
    """A tempered likelihood, -log p(x) / 2, plugged in by name: the driver, split, batches and
    best-model rule are untouched, and the reported losses are the new objective's."""
    from densitylab.training import objectives

    class HalfNLL(objectives.Likelihood):
        def point_losses(self, model, batch):
            return -0.5 * model(batch)

    monkeypatch.setitem(objectives.OBJECTIVES, "half-nll", HalfNLL)
    x = gaussian_data(200)
    options = dict(epochs=3, batch_size=32, lr=1e-2, verbose=False)  # auto: the torch engine
    half = dl.fit(flows.realnvp(2, 2, seed=1).double(), x, objective="half-nll", **options)
    val = torch.as_tensor(x[half.val_indices])
    assert half.best_val_loss == pytest.approx(-0.5 * half.flow.log_prob(val).mean().item())
    with pytest.raises(ValueError, match="NLL objective"):
        dl.fit(flows.realnvp(2, 2), x, objective="half-nll", engine="compiled", epochs=1)
    with pytest.raises(ValueError, match="unknown objective"):
        dl.fit(flows.realnvp(2, 2), x, objective="elbo", **options)


def test_the_result_records_the_engine_auto_picked():
    """engine='auto' resolves per model (compiled for small RealNVPs, torch for Glow): the
    result says which trained it, so a report can state it rather than assume it."""
    x = dl.datasets.get("moons").sample(128, seed=0)
    picked = {name: dl.fit(build, x, epochs=1, batch_size=64, verbose=False).engine
              for name, build in (("realnvp", flows.realnvp(2, 2, (8, 8), seed=0)),
                                  ("glow", flows.build("glow", dim=2, n_layers=2,
                                                       hidden=(8, 8), seed=0)))}
    assert picked == {"realnvp": "compiled", "glow": "torch"}
    forced = dl.fit(flows.realnvp(2, 2, (8, 8), seed=0), x, epochs=1, engine="torch",
                    verbose=False)
    assert forced.engine == "torch"
