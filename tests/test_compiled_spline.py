"""The compiled spline engine is the torch spline flow's mathematics: same gradients (in the
tails and at the knots too), same log-densities, same training runs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import densitylab as dl
from densitylab import flows
from densitylab.flows import recipes, splines, transforms
from densitylab.flows.splines import _knots
from densitylab.training import compiled_spline
from densitylab.training.compiled import CompiledEngine
from densitylab.training.fitting import use_compiled

BOUND = 2.0
CONFIGS = {
    "plain": dict(dim=2, hidden=(8, 8)),
    "fourier": dict(dim=3, hidden=(8, 8), fourier=2),
    "linear-mixing": dict(dim=5, hidden=(6,), mixing="linear"),
    "tanh-three-layers": dict(dim=4, hidden=(6, 5, 4), activation="tanh"),
    "relu": dict(dim=2, hidden=(7,), activation="relu", fourier=1),
    "one-dimensional": dict(dim=1),
}


def perturbed_flow(config: dict, seed: int = 0, n_layers: int = 3):
    flow = flows.nsf(n_layers=n_layers, bins=5, bound=BOUND, seed=seed, **config).double()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=generator, dtype=p.dtype))
    return flow


def points_at_knots_and_in_tails(flow, n: int = 40, seed: int = 1,
                                 interior: bool = True) -> torch.Tensor:
    """Random points whose first transformed coordinates lie exactly on the first spline's
    knots (``interior=False``: only the end knots, ``-bound`` and ``bound``), and some beyond
    the bound on either side."""
    first = next(t for t in flow.transforms
                 if isinstance(t, splines.SplineCoupling | splines.ElementwiseSpline))
    x = 1.2 * torch.randn(n, flow.dim, generator=torch.Generator().manual_seed(seed),
                          dtype=torch.float64)
    if any(isinstance(t, transforms.InvertibleLinear) for t in flow.transforms):
        x[:4] = torch.tensor([3.0, -2.5, 7.0, -9.0], dtype=torch.float64)[:, None]  # tails
        return x
    with torch.no_grad():
        if isinstance(first, splines.ElementwiseSpline):
            raw, b = first.raw[0, 0, :1].expand(n, 1, -1), 0
        else:
            x_a, _ = first._split(x.unsqueeze(0))
            raw = first.net(x_a).unflatten(-1, (-1, 3 * first.bins - 1))[0]
            b = int(first.trans_idx[0])
        knots, _ = _knots(raw[..., : first.bins], first.bound, 1e-3)
    which = torch.arange(n) % (first.bins + 1)  # knot j of point i, ends too
    if not interior:
        which = torch.where(which % 2 == 0, 0, first.bins)
    x[:, b] = knots[torch.arange(n), 0, which]
    tails = torch.tensor([2.5, -3.0, 10.0, -2.0 - 1e-9, 2.0 + 1e-12, 5.0], dtype=torch.float64)
    x[::7, b] = tails[torch.arange(len(x[::7])) % len(tails)]
    return x


def compiled_and_autograd_gradients(flow, x: torch.Tensor) -> tuple[float, np.ndarray,
                                                                     np.ndarray]:
    """``(NLL difference, compiled gradient, autograd gradient)`` of the mean NLL of ``x``."""
    flow.zero_grad()
    nll = -flow.log_prob(x).mean()
    nll.backward()
    stack = compiled_spline.CompiledSplineStack(flow)
    theta = stack.pack()
    value, grad = compiled_spline.nll_and_grad(stack, theta[0], x.numpy())
    with torch.no_grad():  # pack the autograd gradients with the same layout
        for p in flow.parameters():
            p.copy_(p.grad)
        expected = stack.pack()[0]
        stack.unpack(theta)
    return value - nll.item(), grad, expected


@pytest.mark.parametrize("config", list(CONFIGS))
def test_gradients_equal_autograd_in_the_tails_and_at_the_end_knots(config):
    flow = perturbed_flow(CONFIGS[config])
    x = points_at_knots_and_in_tails(flow, interior=False)
    assert (x.abs() > BOUND).any() and (x.abs() == BOUND).any() or config == "linear-mixing"
    difference, grad, expected = compiled_and_autograd_gradients(flow, x)
    assert abs(difference) < 1e-12
    np.testing.assert_allclose(grad, expected, rtol=1e-9, atol=1e-11)


def with_random_mixture(flow, seed: int = 2):
    """``flow`` on a Gaussian-mixture base of three random full-covariance components (and a
    fourth unused one)."""
    flow = flows.with_mixture_base(flow, 4)
    generator = torch.Generator().manual_seed(seed)
    d = flow.dim
    chol = torch.randn(4, d, d, generator=generator, dtype=torch.float64).tril()
    chol.diagonal(dim1=-2, dim2=-1).copy_(0.5 + torch.rand(4, d, generator=generator,
                                                           dtype=torch.float64))
    with torch.no_grad():
        flow.base.log_weights[0] = torch.tensor([0.5, 0.3, 0.2, 0.0]).log()
        flow.base.means[0] = torch.randn(4, d, generator=generator, dtype=torch.float64)
        flow.base.chol[0] = chol
    return flow


@pytest.mark.parametrize("config", ["plain", "linear-mixing", "one-dimensional"])
def test_a_mixture_base_gives_the_gradients_and_log_densities_of_autograd(config):
    flow = with_random_mixture(perturbed_flow(CONFIGS[config]))
    x = points_at_knots_and_in_tails(flow, interior=False)
    difference, grad, expected = compiled_and_autograd_gradients(flow, x)
    assert abs(difference) < 1e-12
    np.testing.assert_allclose(grad, expected, rtol=1e-9, atol=1e-11)
    stack = compiled_spline.CompiledSplineStack(flow)
    fast = stack.log_prob(stack.pack(), x.numpy()[None])[0]
    np.testing.assert_allclose(fast, flow.log_prob(x).detach().numpy(), rtol=1e-12, atol=1e-12)


def test_at_interior_knots_the_gradient_is_a_one_sided_one():
    """At an interior knot the spline's value and slope are continuous, but its parameter
    gradient is one-sided: the point changes bin as the knot moves past it. Knots are network
    outputs, so which side a point exactly on one lies depends on the last bit of a matrix
    product, which differs between BLAS libraries; the compiled gradient must be one of the
    two sides' autograd gradients (points nudged by 1e-9 either way)."""
    flow = perturbed_flow(CONFIGS["plain"])
    x = points_at_knots_and_in_tails(flow, n=12)
    for point in x.split(1):
        difference, grad, _ = compiled_and_autograd_gradients(flow, point)
        assert abs(difference) < 1e-12
        sides = [compiled_and_autograd_gradients(flow, point + step)[2]
                 for step in (torch.tensor([0.0, 1e-9]), torch.tensor([0.0, -1e-9]))]
        assert any(np.allclose(grad, side, rtol=1e-6, atol=1e-7) for side in sides)


@pytest.mark.parametrize("config", list(CONFIGS))
def test_log_prob_equals_the_torch_flow(config):
    flow = perturbed_flow(CONFIGS[config])
    x = points_at_knots_and_in_tails(flow, n=3000)
    stack = compiled_spline.CompiledSplineStack(flow)
    fast = stack.log_prob(stack.pack(), x.numpy()[None])[0]
    np.testing.assert_allclose(fast, flow.log_prob(x).detach().numpy(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_flow_log_prob_takes_the_compiled_path_without_gradients(dtype, monkeypatch):
    monkeypatch.setattr(compiled_spline, "COMPILED_LOG_PROB_MIN_POINTS", 1000)
    flow = flows.standardized(perturbed_flow(CONFIGS["fourier"])).to(dtype)
    with torch.no_grad():
        flow.transforms[0].mean.fill_(0.5)
        flow.transforms[0].log_std.fill_(0.3)
    x = 2 * torch.randn(5000, 3, generator=torch.Generator().manual_seed(2), dtype=dtype)
    x[0] = torch.tensor([1e30, 0.0, 0.0], dtype=dtype)  # far beyond the data: finite or -inf
    assert compiled_spline.compiled_log_prob(flow, x[None]) is None  # gradients wanted
    with torch.no_grad():
        assert compiled_spline.compiled_log_prob(flow, x[None]) is not None
        fast = flow.log_prob(x)
    slow = flow.log_prob(x)  # parameters want gradients: the torch path
    assert slow.requires_grad and not fast.requires_grad
    tolerance = 1e-12 if dtype == torch.float64 else 1e-4
    torch.testing.assert_close(fast, slow.detach(), rtol=tolerance, atol=tolerance)


def test_pack_and_unpack_are_inverse():
    flow = perturbed_flow(CONFIGS["linear-mixing"])
    stack = compiled_spline.CompiledSplineStack(flow)
    theta = stack.pack()
    x = torch.randn(10, 5, dtype=torch.float64)
    before = flow.log_prob(x)
    stack.unpack(np.zeros_like(theta))
    assert not torch.allclose(flow.log_prob(x), before)
    stack.unpack(theta)
    torch.testing.assert_close(flow.log_prob(x), before, rtol=0, atol=0)


def data(n: int, seed: int, dim: int = 2) -> np.ndarray:
    """Correlated, heavy-tailed points: after standardisation some lie beyond the bound."""
    rng = np.random.default_rng(seed)
    mixing = np.eye(dim) + 0.5 * np.tri(dim, k=-1)
    return rng.standard_t(3, size=(n, dim)) @ mixing + np.arange(dim)


def nsf_maker(dim: int = 2, **config):
    options = dict(n_layers=3, hidden=(12, 12), bins=6, bound=BOUND, fourier=2) | config
    return lambda s: flows.nsf(dim, seed=s, **options).double()


def assert_same_runs(fast, slow, weights_rtol: float = 1e-7):
    for a, b in zip(fast, slow, strict=True):
        np.testing.assert_allclose(a.history.train_nll, b.history.train_nll, rtol=1e-9)
        np.testing.assert_allclose(a.history.val_nll, b.history.val_nll, rtol=1e-9)
        assert (a.best_epoch, a.stop_reason) == (b.best_epoch, b.stop_reason)
        for p, q in zip(a.flow.parameters(), b.flow.parameters(), strict=True):
            torch.testing.assert_close(p, q, rtol=weights_rtol, atol=1e-9)
        x = torch.as_tensor(data(50, 9, a.flow.dim))
        torch.testing.assert_close(a.flow.log_prob(x), b.flow.log_prob(x), rtol=1e-8, atol=1e-9)


@pytest.mark.parametrize(
    ("options", "maker"),
    [
        (dict(), nsf_maker(fourier=0)),
        (dict(standardize=True, schedule="cosine"), nsf_maker()),
        (dict(standardize=True, clip_grad=0.5, batch_size=50), nsf_maker(3, mixing="linear")),
        (dict(standardize=True, ema=0.5, patience=2, lr=3e-2), nsf_maker()),
        (dict(standardize=True, schedule="cosine"), nsf_maker(1)),
        (dict(standardize=True),
         lambda s: flows.with_mixture_base(nsf_maker(3, mixing="linear")(s), 3)),
    ],
    ids=["plain", "standardize-cosine", "linear-mixing-clip", "ema-early-stopping",
         "one-dimensional", "mixture-base"],
)
def test_training_follows_the_torch_path(options, maker):
    common = dict(epochs=6, lr=5e-3, verbose=False) | options
    dim = maker(0).dim
    sets = [data(300, 0, dim), data(300, 1, dim)]
    fast = dl.fit_many([maker(s) for s in (0, 1)], sets, seed=[3, 4], engine="compiled",
                       **common)
    slow = dl.fit_many([maker(s) for s in (0, 1)], sets, seed=[3, 4], engine="torch", **common)
    assert_same_runs(fast, slow)


@pytest.mark.parametrize("threads", [1, 2])  # folds one after another, or two at a time
def test_folds_trained_together_each_get_their_result_alone(threads):
    maker = nsf_maker()
    folds = [data(200, s) for s in range(3)]
    options = dict(epochs=4, batch_size=40, lr=1e-2, standardize=True, schedule="cosine",
                   verbose=False, engine="compiled")
    together = dl.fit_many([maker(s) for s in range(3)], folds, seed=[5, 6, 7], **options,
                           threads=threads)
    for s, result in enumerate(together):
        alone = dl.fit(maker(s), folds[s], seed=5 + s, **options)
        assert result.history.val_nll == alone.history.val_nll
        for p, q in zip(result.flow.parameters(), alone.flow.parameters(), strict=True):
            torch.testing.assert_close(p, q, rtol=0, atol=0)


def test_a_checkpoint_resumes_only_on_the_engine_that_wrote_it(tmp_path):
    options = dict(epochs=2, batch_size=50, verbose=False, checkpoint=tmp_path / "c",
                   checkpoint_every=1)
    dl.fit(nsf_maker()(1), data(100, 2), engine="compiled", **options)
    with pytest.raises(ValueError, match="written by the compiled engine.*engine='compiled'"):
        dl.fit(nsf_maker()(1), data(100, 2), engine="torch", resume=True, **options)
    resumed = dl.fit(nsf_maker()(1), data(100, 2), engine="compiled", resume=True, **options)
    assert len(resumed.history.val_nll) == 2


def test_resume_with_the_compiled_engine(tmp_path, monkeypatch):
    x = data(200, 2)
    options = dict(epochs=6, batch_size=32, lr=1e-2, verbose=False, engine="compiled",
                   standardize=True)
    straight = dl.fit(nsf_maker()(1), x, **options)
    torch_run = dl.fit(nsf_maker()(1), x, **(options | {"engine": "torch"}))
    np.testing.assert_allclose(straight.history.val_nll, torch_run.history.val_nll, rtol=1e-9)
    validate, calls = CompiledEngine.validate, []

    def interrupt(loop):
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return validate(loop)

    monkeypatch.setattr(CompiledEngine, "validate", interrupt)
    with pytest.warns(UserWarning, match="interrupted"):
        dl.fit(nsf_maker()(1), x, **options, checkpoint=tmp_path / "c", checkpoint_every=2)
    monkeypatch.undo()
    resumed = dl.fit(nsf_maker()(1), x, **options, checkpoint=tmp_path / "c", resume=True)
    assert resumed.history.val_nll == straight.history.val_nll


def test_float32_flows_train_in_float32_close_to_the_torch_path():
    x = data(400, 3)
    options = dict(epochs=5, batch_size=64, lr=5e-3, standardize=True, verbose=False)
    fast = dl.fit(flows.nsf(2, 3, (16, 16), bins=6, fourier=2), x, engine="compiled", **options)
    slow = dl.fit(flows.nsf(2, 3, (16, 16), bins=6, fourier=2), x, engine="torch", **options)
    assert fast.flow.dtype == torch.float32
    np.testing.assert_allclose(fast.history.val_nll, slow.history.val_nll, rtol=1e-4)


def test_non_finite_steps_are_skipped_and_counted_as_the_torch_engine_does():
    x = data(100, 4)
    x[7] = [1e30, 0.0]  # an overflowing point: every batch that holds it is non-finite
    options = dict(epochs=3, batch_size=25, lr=1e-2, verbose=False)
    fast = dl.fit(nsf_maker()(0), x, engine="compiled", **options)
    slow = dl.fit(nsf_maker()(0), x, engine="torch", **options)
    np.testing.assert_allclose(fast.history.val_nll, slow.history.val_nll, rtol=1e-9)


def test_the_recommended_and_tabular_models_are_supported_and_auto_picks_them():
    for model in (flows.recommended(2), flows.recommended(1), flows.nsf(6, **{k: v for k, v in
                  recipes.TABULAR.items() if k in ("n_layers", "hidden", "bins",
                                                            "bound", "mixing")})):
        stacked = flows.standardized(model)
        assert compiled_spline.supports(stacked)
        assert use_compiled("auto", stacked, False, 256)


def test_unsupported_spline_flows_are_refused_or_routed_to_torch():
    x = data(100, 0)
    for flow in (flows.nsf(2, 2, context=1), flows.maf(2, 2, transform="spline"),
                 flows.nsf(1, 2, context=1)):
        assert not compiled_spline.supports(flow)
    with pytest.raises(ValueError, match="compiled engine"):
        dl.fit(flows.maf(2, 1, transform="spline"), x, epochs=1, engine="compiled")


def test_stacked_flows_log_prob_takes_the_compiled_path_per_model(monkeypatch):
    monkeypatch.setattr(compiled_spline, "COMPILED_LOG_PROB_MIN_POINTS", 1000)
    stacked = flows.stack([perturbed_flow(CONFIGS["plain"], seed=s) for s in (0, 1)])
    x = torch.randn(5000, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    with torch.no_grad():
        fast = stacked.log_prob(x)
        slow = stacked._log_prob(x.expand(2, -1, -1))
    assert fast.shape == (2, 5000)
    with torch.no_grad():
        assert compiled_spline.compiled_log_prob(stacked, x.expand(2, -1, -1)) is not None
    torch.testing.assert_close(fast, slow, rtol=1e-12, atol=1e-12)
