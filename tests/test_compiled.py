"""The compiled engine is the torch flow's mathematics: same gradients, same training runs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import densitylab as dl
from densitylab import flows
from densitylab.training import compiled_realnvp as compiled
from densitylab.training.autograd import TorchEngine
from densitylab.training.fitting import use_compiled

CONFIGS = {
    "coursework": dict(hidden=(8, 8)),
    "one-net-tanh": dict(hidden=(8,), separate_nets=False, scale="tanh", activation="tanh"),
    "relu-three-layers": dict(hidden=(6, 5, 4), activation="relu"),
}


def perturbed_flow(dim: int, config: dict, seed: int = 0):
    flow = flows.realnvp(dim, n_layers=3, seed=seed, **config).double()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=generator, dtype=p.dtype))
    return flow


@pytest.mark.parametrize("dim", [2, 3, 5])
@pytest.mark.parametrize("config", list(CONFIGS))
def test_gradients_equal_autograd(dim, config):
    flow = perturbed_flow(dim, CONFIGS[config])
    x = torch.randn(33, dim, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    nll = -flow.log_prob(x).mean()
    nll.backward()
    stack = compiled.CompiledStack(flow)
    value, grad = compiled.nll_and_grad(stack, stack.pack()[0], x.numpy())
    with torch.no_grad():  # pack the autograd gradients with the same layout
        for p in flow.parameters():
            p.copy_(p.grad)
    expected = stack.pack()[0]
    assert value == pytest.approx(nll.item(), abs=1e-12)
    np.testing.assert_allclose(grad, expected, rtol=1e-10, atol=1e-12)


def test_pack_and_unpack_are_inverse():
    flow = perturbed_flow(3, CONFIGS["coursework"])
    stack = compiled.CompiledStack(flow)
    theta = stack.pack()
    x = torch.randn(10, 3, dtype=torch.float64)
    before = flow.log_prob(x)
    stack.unpack(np.zeros_like(theta))
    assert not torch.allclose(flow.log_prob(x), before)
    stack.unpack(theta)
    torch.testing.assert_close(flow.log_prob(x), before, rtol=0, atol=0)


def data(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 2)) @ np.array([[1.0, 0.6], [0.0, 0.5]]) + [2.0, -1.0]


@pytest.mark.parametrize(
    "options",
    [
        dict(),
        dict(standardize=True, schedule="cosine"),
        dict(clip_grad=0.5, batch_size=50),
    ],
)
def test_training_follows_the_torch_path(options):
    common = dict(epochs=6, lr=5e-3, verbose=False, **options)
    make = [lambda s=s: flows.realnvp(2, 3, (16, 16), seed=s).double() for s in (0, 1)]
    sets = [data(300, 0), data(300, 1)]
    fast = dl.fit_many([m() for m in make], sets, seed=[3, 4], engine="compiled", **common)
    slow = dl.fit_many([m() for m in make], sets, seed=[3, 4], engine="torch", **common)
    for a, b in zip(fast, slow, strict=True):
        np.testing.assert_allclose(a.history.train_nll, b.history.train_nll, rtol=1e-9)
        np.testing.assert_allclose(a.history.val_nll, b.history.val_nll, rtol=1e-9)
        assert a.best_epoch == b.best_epoch
        for p, q in zip(a.flow.parameters(), b.flow.parameters(), strict=True):
            torch.testing.assert_close(p, q, rtol=1e-7, atol=1e-9)


def test_float32_flows_train_in_float64_close_to_the_torch_path():
    options = dict(epochs=3, verbose=False, lr=5e-3)
    result = dl.fit(flows.realnvp(2, 2), data(200, 0), engine="compiled", **options)
    reference = dl.fit(flows.realnvp(2, 2), data(200, 0), engine="torch", **options)
    assert result.flow.dtype == torch.float32
    assert result.history.val_nll[-1] < result.history.val_nll[0]
    np.testing.assert_allclose(result.history.val_nll, reference.history.val_nll, rtol=1e-4)


def test_resume_with_the_compiled_engine(tmp_path, monkeypatch):
    x = data(200, 2)
    options = dict(epochs=6, batch_size=32, lr=1e-2, verbose=False, engine="compiled")
    straight = dl.fit(flows.realnvp(2, 2, seed=1).double(), x, **options)
    validate, calls = TorchEngine.validate, []

    def interrupt(loop):
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return validate(loop)

    monkeypatch.setattr(TorchEngine, "validate", interrupt)
    with pytest.warns(UserWarning, match="interrupted"):
        dl.fit(flows.realnvp(2, 2, seed=1).double(), x, **options, checkpoint=tmp_path / "c",
               checkpoint_every=2)
    monkeypatch.undo()
    resumed = dl.fit(flows.realnvp(2, 2, seed=1).double(), x, **options, checkpoint=tmp_path / "c",
                     resume=True)
    assert resumed.history.val_nll == straight.history.val_nll


def test_unsupported_models_are_refused_or_routed_to_torch():
    x = data(100, 0)
    with pytest.raises(ValueError, match="compiled engine"):
        dl.fit(flows.glow(2, 2), x, epochs=1, engine="compiled")
    with pytest.raises(ValueError, match="compiled engine"):
        dl.fit(flows.realnvp(2, 2, triangular=True), x, epochs=1, engine="compiled")
    with pytest.raises(ValueError, match="unknown engine"):
        dl.fit(flows.realnvp(2, 2), x, epochs=1, engine="jax")
    assert dl.fit(flows.glow(2, 1), x, epochs=1, verbose=False).epochs_run == 1  # auto -> torch


def test_auto_engine_batches_many_models_with_torch():
    few = flows.stack([flows.realnvp(2, 2, seed=s) for s in range(4)])
    many = flows.stack([flows.realnvp(2, 2, seed=s) for s in range(5)])
    assert use_compiled("auto", few, False, 64)
    assert not use_compiled("auto", many, False, 64)
    assert use_compiled("compiled", many, False, 64)


@pytest.mark.parametrize(("hidden", "batch", "compiled_wins"), [  # measured crossovers
    ((32, 32), 64, True), ((32, 32), 256, True), ((64, 64), 64, True), ((256,), 64, True),
    ((32, 32), 1024, False), ((64, 64), 256, False),
    ((512,), 64, False), ((128, 128), 64, False), ((1024,), 64, False),
])
def test_auto_engine_leaves_wide_networks_and_large_batches_to_torch(hidden, batch, compiled_wins):
    flow = flows.realnvp(2, 4, hidden)
    assert use_compiled("auto", flow, False, batch) is compiled_wins
    assert use_compiled("compiled", flow, False, batch)
