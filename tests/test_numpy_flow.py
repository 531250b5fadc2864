"""The NumPy RealNVP against the PyTorch one: same densities, same gradients (autograd and
finite differences), same training trajectory, same errors; plus its own round trips."""

from __future__ import annotations

import inspect
import math
import warnings

import numpy as np
import pytest
import torch

import densitylab as dl
from densitylab import flows
from densitylab import numpy_flow as nf
from densitylab.numpy_flow import Adam, NumpyRealNVP

# (dim, separate_nets, scale, activation, n_models): every dim, both net layouts, both scalings,
# every activation and stacked models, without the full product
CASES = [
    (2, True, "factor", "leaky_relu", 1),
    (2, False, "tanh", "tanh", 3),
    (3, True, "tanh", "relu", 3),
    (3, False, "factor", "leaky_relu", 1),
    (8, True, "factor", "tanh", 3),
    (8, False, "tanh", "leaky_relu", 1),
    (8, True, "tanh", "leaky_relu", 1),
    (3, True, "factor", "leaky_relu", 3),
]
CASE_IDS = [f"D{d}-{'sep' if s else 'one'}-{sc}-{a}-M{m}" for d, s, sc, a, m in CASES]


def torch_flow(dim, separate, scale, activation, n_models, seed=0, standardize=False):
    """A float64 torch RealNVP with every parameter moved off its initial value (so the scale
    factor is not 0 and no coupling is the identity), optionally behind a Standardize."""
    flow = flows.realnvp(
        dim,
        n_layers=3,
        hidden=(16, 8),
        separate_nets=separate,
        scale=scale,
        activation=activation,
        n_models=n_models,
        seed=seed,
    ).double()
    if standardize:
        flow = flows.standardized(flow).double()
    generator = torch.Generator().manual_seed(seed + 100)
    with torch.no_grad():
        for parameter in flow.parameters():
            parameter.add_(
                0.2 * torch.randn(parameter.shape, generator=generator, dtype=torch.float64)
            )
        if standardize:
            flow.transforms[0].mean.normal_(generator=generator)
            flow.transforms[0].log_std.normal_(generator=generator)
    return flow


def data(n, dim, n_models=None, seed=0):
    shape = (n, dim) if n_models is None else (n_models, n, dim)
    return np.random.default_rng(seed).normal(size=shape)


def gaussian_data(n=300, seed=0):
    rng = np.random.default_rng(seed)
    return rng.multivariate_normal([1.0, -2.0], [[1.0, 0.8], [0.8, 1.0]], size=n)


def to_numpy(tensor):
    return tensor.detach().numpy()


def torch_fit(fit, *args, **kwargs):
    """``densitylab.fit`` / ``fit_many`` on its torch (autograd) engine: the reference, whatever
    engine ``fit`` would pick by default."""
    if "engine" in inspect.signature(fit).parameters:
        kwargs["engine"] = "torch"
    return fit(*args, verbose=False, **kwargs)


# -- same weights, same numbers -------------------------------------------------------------------
@pytest.mark.parametrize(
    ("dim", "separate", "scale", "activation", "n_models"), CASES, ids=CASE_IDS
)
@pytest.mark.parametrize("standardize", [False, True])
def test_same_weights_same_densities_and_maps(
    dim, separate, scale, activation, n_models, standardize
):
    flow = torch_flow(dim, separate, scale, activation, n_models, standardize=standardize)
    model = NumpyRealNVP.from_torch(flow)
    for x in (data(40, dim), data(40, dim, n_models, seed=1)):  # shared and per-model input
        xt = torch.as_tensor(x)
        np.testing.assert_allclose(
            model.log_prob(x), to_numpy(flow.log_prob(xt)), rtol=0, atol=1e-10
        )
        for ours, theirs in (
            (model.to_latent(x), flow.to_latent(xt)),
            (model.to_data(x), flow.to_data(xt)),
        ):
            assert ours[0].shape == tuple(theirs[0].shape)
            np.testing.assert_allclose(ours[0], to_numpy(theirs[0]), rtol=0, atol=1e-10)
            np.testing.assert_allclose(ours[1], to_numpy(theirs[1]), rtol=0, atol=1e-10)
        for ours, theirs in zip(model.trace_to_latent(x), flow.trace_to_latent(xt), strict=True):
            np.testing.assert_allclose(ours, to_numpy(theirs), rtol=0, atol=1e-10)
        for ours, theirs in zip(model.trace_to_data(x), flow.trace_to_data(xt), strict=True):
            np.testing.assert_allclose(ours, to_numpy(theirs), rtol=0, atol=1e-10)


def test_agreement_check_is_not_vacuous():
    """Moving one weight by 1e-6 must break the agreement the test above asserts."""
    flow = torch_flow(2, True, "factor", "leaky_relu", 1)
    model = NumpyRealNVP.from_torch(flow)
    x = data(40, 2)
    model.views(model.params)[1].weights[1][0, 1, 3, 2] += 1e-6  # second coupling, t net
    difference = np.abs(model.log_prob(x) - to_numpy(flow.log_prob(torch.as_tensor(x))))
    assert difference.max() > 1e-9


# -- gradients ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("dim", "separate", "scale", "activation", "n_models"), CASES, ids=CASE_IDS
)
def test_gradients_match_autograd(dim, separate, scale, activation, n_models):
    flow = torch_flow(dim, separate, scale, activation, n_models, standardize=dim == 3)
    model = NumpyRealNVP.from_torch(flow)
    x = data(50, dim, n_models if n_models > 1 else None)
    log_p = flow.log_prob(torch.as_tensor(x)).reshape(n_models, -1)
    nll_torch = -log_p.mean(dim=1)
    nll_torch.sum().backward()  # every model gets the gradient of its own mean NLL

    nll, grad = model.nll_and_grad(x)
    np.testing.assert_allclose(nll, to_numpy(nll_torch), rtol=0, atol=1e-10)
    ours = model.named(grad)
    theirs = dict(flow.named_parameters())
    assert set(ours) == set(theirs)
    for name, parameter in theirs.items():
        assert ours[name].shape == tuple(parameter.shape), name
        np.testing.assert_allclose(ours[name], to_numpy(parameter.grad), rtol=0, atol=1e-8)
        assert np.abs(ours[name]).sum() > 0, name  # every parameter gets a gradient


@pytest.mark.parametrize(("dim", "separate", "scale", "activation", "n_models"), CASES[:4])
def test_gradients_match_finite_differences(dim, separate, scale, activation, n_models):
    model = NumpyRealNVP.from_torch(torch_flow(dim, separate, scale, activation, n_models))
    x = data(30, dim)
    _, grad = model.nll_and_grad(x)
    rng = np.random.default_rng(dim)
    coordinates = rng.choice(model.params.size, size=8, replace=False)
    coordinates[0] = model.n_params - 1  # a scale factor (the last number of model 0)
    step = 1e-6
    for i in coordinates:
        m = i // model.n_params
        saved = model.params[i]
        model.params[i] = saved + step
        up = model.nll_and_grad(x)[0][m]
        model.params[i] = saved - step
        down = model.nll_and_grad(x)[0][m]
        model.params[i] = saved
        assert grad[i] == pytest.approx((up - down) / (2 * step), rel=1e-6, abs=1e-8)


def test_adam_equals_torch_adam():
    rng = np.random.default_rng(0)
    start = rng.normal(size=50)
    params = start.copy()
    adam = Adam(params, lr=1e-2)
    tensor = torch.tensor(start, requires_grad=True)
    optimizer = torch.optim.Adam([tensor], lr=1e-2)
    for step in range(30):
        grad = rng.normal(size=50) * (10.0 if step % 7 == 0 else 0.1)
        adam.step(grad)
        tensor.grad = torch.as_tensor(grad.copy())
        optimizer.step()
        np.testing.assert_allclose(params, to_numpy(tensor), rtol=0, atol=1e-14)


# -- training ---------------------------------------------------------------------------------
def assert_same_run(ours, theirs, rtol=1e-8):
    np.testing.assert_allclose(ours.history.train_nll, theirs.history.train_nll, rtol=rtol)
    np.testing.assert_allclose(ours.history.val_nll, theirs.history.val_nll, rtol=rtol)
    assert ours.best_epoch == theirs.best_epoch
    assert ours.best_val_nll == pytest.approx(theirs.best_val_nll, rel=rtol)
    np.testing.assert_array_equal(ours.train_indices, theirs.train_indices)
    np.testing.assert_array_equal(ours.val_indices, theirs.val_indices)
    trained = NumpyRealNVP.from_torch(theirs.flow)
    np.testing.assert_allclose(ours.model.params, trained.params, rtol=0, atol=1e-7)


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"clip_grad": 0.5, "schedule": "cosine", "batch_size": 50},
        {"standardize": True},
    ],
    ids=["plain", "clip-cosine", "standardize"],
)
def test_fit_follows_torch_fit_step_for_step(options):
    """Same initial weights, same split and batches: 20 epochs x 5 batches = 100 Adam steps."""
    x = gaussian_data(300)
    flow = flows.realnvp(2, n_layers=4, hidden=(16, 16), seed=1).double()
    if options.get("standardize"):
        # flows.standardized() returns a flow whose dtype reads float32, which would make
        # dl.fit train in float32; a standardised float64 flow avoids that
        flow = flows.standardized(flow).double()
    model = NumpyRealNVP.from_torch(flow)
    kwargs = {"epochs": 20, "batch_size": 64, "lr": 5e-3, "seed": 3, **options}
    theirs = torch_fit(dl.fit, flow, x, **kwargs)
    ours = nf.fit(model, x, **kwargs)
    assert ours.epochs_run == 20 and ours.stop_reason == "completed"
    assert ours.history.train_nll[-1] < ours.history.train_nll[0] - 0.1  # it does learn
    assert_same_run(ours, theirs)
    assert np.array_equal(model.params, NumpyRealNVP.from_torch(flow).params)  # input untouched


def test_fit_many_models_at_once_follows_fit_many():
    x = [gaussian_data(200, seed=0), gaussian_data(200, seed=1)]
    singles = [flows.realnvp(2, n_layers=2, hidden=(8, 8), seed=s).double() for s in (1, 2)]
    model = NumpyRealNVP.from_torch(flows.stack(singles))
    kwargs = {"epochs": 8, "batch_size": 40, "lr": 1e-2, "seed": [3, 4], "patience": 3}
    theirs = torch_fit(dl.fit_many, singles, x, **kwargs)
    ours = nf.fit_many(model, x, **kwargs)
    for m, result in enumerate(theirs):
        np.testing.assert_allclose(ours[m].history.train_nll, result.history.train_nll, rtol=1e-8)
        np.testing.assert_allclose(ours[m].history.val_nll, result.history.val_nll, rtol=1e-8)
        assert ours[m].best_epoch == result.best_epoch
        assert ours[m].stop_reason == result.stop_reason
        trained = NumpyRealNVP.from_torch(result.flow)
        np.testing.assert_allclose(ours[m].model.params, trained.params, rtol=0, atol=1e-7)
    with pytest.raises(ValueError, match="holds 2"):
        nf.fit(model, x, **kwargs)


def test_divergence_is_handled_like_torch():
    x = gaussian_data(300) * 1e3  # unstandardised and a huge learning rate: overflow
    flow = flows.realnvp(2, n_layers=2, hidden=(8, 8), seed=1).double()
    kwargs = {"epochs": 30, "lr": 1.0, "seed": 3}
    with pytest.warns(RuntimeWarning, match="diverged"):
        theirs = torch_fit(dl.fit, flow, x, **kwargs)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ours = nf.fit(NumpyRealNVP.from_torch(flow), x, **kwargs)
    assert [str(w.message)[:28] for w in caught] == ["training diverged at epoch 5"]
    assert ours.stop_reason == theirs.stop_reason == "diverged"
    assert ours.epochs_run == theirs.epochs_run < 30
    assert np.isfinite(ours.model.params).all()  # non-finite updates were never applied


def test_fit_keeps_the_best_validation_model():
    x = gaussian_data(400)
    result = nf.fit(NumpyRealNVP(2, n_layers=2, seed=0), x, epochs=15, lr=2e-2, seed=5)
    assert result.best_val_nll == pytest.approx(min(result.history.val_nll))
    assert result.best_epoch == 1 + int(np.argmin(result.history.val_nll))
    val = x[result.val_indices]
    assert -result.model.log_prob(val).mean() == pytest.approx(result.best_val_nll, rel=1e-12)
    entropy = 0.5 * math.log(np.linalg.det(2 * math.pi * math.e * np.array([[1, 0.8], [0.8, 1]])))
    assert result.best_val_nll < entropy + 0.5


# -- the model on its own -----------------------------------------------------------------------
@pytest.mark.parametrize("n_models", [1, 2])
def test_round_trips_and_traces(n_models):
    model = NumpyRealNVP(3, n_layers=3, scale="tanh", seed=4, n_models=n_models)
    model.params += np.random.default_rng(0).normal(scale=0.3, size=model.params.size)
    model.set_standardization(np.full(3, 1.5), np.full(3, -0.5))
    x = data(25, 3)
    z, logdet = model.to_latent(x)
    back, logdet_back = model.to_data(z)
    np.testing.assert_allclose(back, np.broadcast_to(x, back.shape), atol=1e-12)
    np.testing.assert_allclose(logdet_back, -logdet, atol=1e-12)
    trace = model.trace_to_latent(x)
    assert len(trace) == 1 + 1 + 3  # data, standardised, after each coupling
    np.testing.assert_allclose(trace[-1], z)
    assert not np.allclose(trace[1], trace[-1])


def test_sampling_is_seeded_and_consistent():
    model = NumpyRealNVP(2, seed=1)
    model.params += np.random.default_rng(1).normal(scale=0.2, size=model.params.size)
    x, log_p = model.sample_with_log_prob(100, seed=7)
    assert x.shape == (100, 2)
    np.testing.assert_array_equal(model.sample(100, seed=7), x)
    assert not np.allclose(model.sample(100, seed=8), x)
    np.testing.assert_allclose(log_p, model.log_prob(x), atol=1e-10)
    trace = model.trace_to_data(100, seed=7)
    np.testing.assert_array_equal(trace[0], model.sample_latent(100, seed=7)[0])
    np.testing.assert_allclose(trace[-1], x)


def test_initialisation_and_views():
    model = NumpyRealNVP(4, n_layers=2, hidden=(64, 16), seed=3)
    views = model.views(model.params)
    for coupling in views:
        for weight, bias in zip(coupling.weights, coupling.biases, strict=True):
            bound = weight.shape[-2] ** -0.5
            assert np.abs(weight).max() <= bound and np.abs(bias).max() <= bound
            assert np.shares_memory(weight, model.params)
        assert not coupling.scale_factor.any()  # "factor" starts at 0: volume-preserving
    x = data(10, 4)
    np.testing.assert_array_equal(model.to_latent(x)[1], np.zeros(10))
    np.testing.assert_array_equal(NumpyRealNVP(4, 2, (64, 16), seed=3).params, model.params)
    assert not np.array_equal(NumpyRealNVP(4, 2, (64, 16), seed=4).params, model.params)
    assert model.params.size == 2 * (2 * (2 * 64 + 64 + 64 * 16 + 16 + 16 * 2 + 2) + 2)
    identity = NumpyRealNVP(4, n_layers=2, zero_init=True, scale="tanh")  # s = t = 0
    np.testing.assert_array_equal(identity.to_latent(x)[0], x)


@pytest.mark.parametrize("n_models", [1, 2])
def test_to_torch_and_back(n_models):
    model = NumpyRealNVP(3, n_layers=2, separate_nets=False, seed=2, n_models=n_models)
    model.params += np.random.default_rng(2).normal(scale=0.2, size=model.params.size)
    model.set_standardization(np.ones(3), np.full(3, 0.3))
    flow = model.to_torch()
    x = data(20, 3)
    np.testing.assert_allclose(to_numpy(flow.log_prob(x)), model.log_prob(x), atol=1e-12)
    np.testing.assert_array_equal(NumpyRealNVP.from_torch(flow).params, model.params)
    singles = flows.unstack(flow)
    assert len(singles) == n_models
    for m, single in enumerate(singles):
        expected = model.log_prob(x)[m] if n_models > 1 else model.log_prob(x)
        np.testing.assert_allclose(to_numpy(single.log_prob(x)), expected, atol=1e-12)
    # into an existing flow of the same architecture, and not into another one
    target = flows.realnvp(3, n_layers=2, separate_nets=False, n_models=n_models).double()
    model.set_standardization(None, None)
    model.to_torch(target)
    np.testing.assert_allclose(to_numpy(target.log_prob(x)), model.log_prob(x), atol=1e-12)
    with pytest.raises(ValueError, match="architecture"):
        model.to_torch(flows.realnvp(3, n_layers=3, n_models=n_models))


# -- errors: the same ValueErrors as the torch flow ----------------------------------------------
@pytest.mark.parametrize(
    "call",
    [
        lambda lib: lib["model"]().log_prob(np.zeros((4, 3))),
        lambda lib: lib["model"]().log_prob(np.zeros(4)),
        lambda lib: lib["model"]().log_prob(np.array([[0.0, np.nan]])),
        lambda lib: lib["model"]().to_data(np.array([[np.inf, 0.0]])),
        lambda lib: lib["model"]().to_latent(np.zeros((3, 5, 2))),
        lambda lib: lib["model"]().sample(0),
        lambda lib: lib["model"](n_layers=0),
        lambda lib: lib["model"](hidden=()),
        lambda lib: lib["model"](hidden=(8, 0)),
        lambda lib: lib["model"](dim=1),
        lambda lib: lib["model"](activation="swish"),
        lambda lib: lib["model"](scale="exp"),
    ],
    ids=[
        "width",
        "1-d",
        "nan",
        "inf",
        "model-slices",
        "no-samples",
        "n_layers",
        "empty-hidden",
        "zero-width",
        "dim",
        "activation",
        "scale",
    ],
)
def test_bad_input_raises_the_torch_error(call):
    def torch_model(dim=2, **kwargs):
        return flows.realnvp(dim, **kwargs)

    def numpy_model(dim=2, **kwargs):
        return NumpyRealNVP(dim, **kwargs)

    with pytest.raises(ValueError) as theirs:
        call({"model": torch_model})
    with pytest.raises(ValueError) as ours:
        call({"model": numpy_model})
    assert str(ours.value) == str(theirs.value)


@pytest.mark.parametrize(
    "flow",
    [
        lambda: flows.glow(2, n_layers=2),
        lambda: flows.realnvp(2, n_layers=2, mixing="reverse"),
        lambda: flows.realnvp(2, n_layers=2, triangular=True),
    ],
    ids=["glow", "mixing", "triangular"],
)
def test_from_torch_rejects_other_transforms(flow):
    with pytest.raises(ValueError, match="affine couplings"):
        NumpyRealNVP.from_torch(flow())


def test_fit_rejects_bad_options_and_data():
    model = NumpyRealNVP(2, n_layers=1)
    x = gaussian_data(50)
    with pytest.raises(ValueError, match="batch_size"):
        nf.fit(model, x, batch_size=0)
    with pytest.raises(ValueError, match="NaN"):
        nf.fit(model, np.vstack([x, [[np.nan, 0.0]]]))
    with pytest.raises(ValueError, match="2 columns"):
        nf.fit(model, np.zeros((50, 3)))
    with pytest.raises(ValueError, match="seeds"):
        nf.fit(model, x, seed=[1, 2])
