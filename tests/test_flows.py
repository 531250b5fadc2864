"""Flow core checked against mathematics: round trips, autograd Jacobians, normalisation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from densitylab import flows
from densitylab.flows import (
    ActNorm,
    AffineCoupling,
    ElementwiseSpline,
    InvertibleLinear,
    MaskedAutoregressive,
    Permutation,
    SplineCoupling,
    TriangularCoupling,
)

DIMS = (2, 3, 8)
SEEDS = (0, 1)


def perturbed(module: torch.nn.Module, seed: int, scale: float = 0.1) -> torch.nn.Module:
    """Float64 copy with every parameter moved randomly, so no map is trivially the identity."""
    module = module.double()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            noise = torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype)
            parameter.add_(scale * noise)
    return module


TRANSFORMS = {
    "coupling": lambda d, g: AffineCoupling(flows.builders.half_mask(d, False), generator=g),
    "coupling-flipped-one-net-tanh": lambda d, g: AffineCoupling(
        flows.builders.half_mask(d, True), hidden=(16,), separate_nets=False, scale="tanh",
        activation="tanh", generator=g,
    ),
    "coupling-relu-zero-init": lambda d, g: AffineCoupling(
        torch.arange(d) % 2 == 0, activation="relu", zero_init=True, generator=g
    ),
    "triangular-coupling": lambda d, g: TriangularCoupling(
        flows.builders.half_mask(d, False), generator=g
    ),
    "reverse": lambda d, g: Permutation.reverse(d),
    "permutation": lambda d, g: Permutation.random(d, generator=g),
    "actnorm": lambda d, g: ActNorm(d),
    "invertible-linear": lambda d, g: InvertibleLinear(d, generator=g),
    # bound 2.5: the standard-normal test points fall both inside the splines and in the tails
    "spline-coupling": lambda d, g: SplineCoupling(
        flows.builders.half_mask(d, False), hidden=(16,), bins=5, bound=2.5, generator=g
    ),
    "spline-coupling-odd-mask-fourier": lambda d, g: SplineCoupling(
        torch.arange(d) % 2 == 1, activation="tanh", bins=3, bound=1.5, zero_init=False,
        fourier=2, generator=g,
    ),
    "elementwise-spline": lambda d, g: ElementwiseSpline(d, bins=5, bound=2.5, generator=g),
    "maf-affine": lambda d, g: MaskedAutoregressive(d, hidden=(16, 16), generator=g),
    "iaf-spline-reversed": lambda d, g: MaskedAutoregressive(
        d, hidden=(16,), transform="spline", bins=5, bound=2.5, inverse=True, reverse=True,
        generator=g),
    "coupling-fourier": lambda d, g: AffineCoupling(
        flows.builders.half_mask(d, False), hidden=(16,), fourier=3, generator=g
    ),
}

FLOWS = {
    "realnvp": lambda d, s: flows.realnvp(d, n_layers=3, hidden=(16, 16), seed=s),
    "realnvp-reverse": lambda d, s: flows.realnvp(d, n_layers=3, mixing="reverse", seed=s),
    "realnvp-permute": lambda d, s: flows.realnvp(d, n_layers=3, mixing="permute", seed=s),
    "realnvp-triangular": lambda d, s: flows.realnvp(d, n_layers=2, triangular=True, seed=s),
    "glow": lambda d, s: flows.glow(d, n_layers=2, hidden=(16,), seed=s),
    "nsf": lambda d, s: flows.nsf(d, n_layers=2, hidden=(16,), bins=6, bound=3.0, seed=s),
    "nsf-linear": lambda d, s: flows.nsf(d, n_layers=2, hidden=(16,), mixing="linear", seed=s),
    "realnvp-fourier": lambda d, s: flows.realnvp(d, n_layers=2, hidden=(16,), fourier=2, seed=s),
    "maf": lambda d, s: flows.maf(d, n_layers=2, hidden=(16,), seed=s),
    "maf-spline": lambda d, s: flows.maf(d, n_layers=2, hidden=(16,), transform="spline",
                                         bins=5, bound=3.0, seed=s),
}


def make_transform(name: str, dim: int, seed: int):
    module = TRANSFORMS[name](dim, torch.Generator().manual_seed(seed))
    return perturbed(module, seed + 100)


def make_flow(name: str, dim: int, seed: int):
    return perturbed(FLOWS[name](dim, seed), seed + 100)


def points(dim: int, n: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def every_case():
    for dim in DIMS:
        for seed in SEEDS:
            for name in TRANSFORMS:
                yield pytest.param(make_transform, name, dim, seed, id=f"{name}-D{dim}-s{seed}")
            for name in FLOWS:
                yield pytest.param(make_flow, name, dim, seed, id=f"flow-{name}-D{dim}-s{seed}")


@pytest.mark.parametrize(("factory", "name", "dim", "seed"), list(every_case()))
def test_round_trip_and_logdet_against_autograd(factory, name, dim, seed):
    module = factory(name, dim, seed)
    x = points(dim, seed=seed)
    module.to_latent(x)  # ActNorm's data-dependent initialisation happens on this first call
    module.eval()

    z, logdet_latent = module.to_latent(x)
    x_back, logdet_data = module.to_data(z)
    torch.testing.assert_close(x_back, x, atol=1e-10, rtol=0)
    torch.testing.assert_close(logdet_data, -logdet_latent, atol=1e-10, rtol=0)
    z_again, _ = module.to_latent(module.to_data(x)[0])
    torch.testing.assert_close(z_again, x, atol=1e-10, rtol=0)

    jacobian = torch.autograd.functional.jacobian
    for i in range(3):
        jac_latent = jacobian(lambda v: module.to_latent(v[None])[0][0], x[i])
        jac_data = jacobian(lambda v: module.to_data(v[None])[0][0], z[i])
        assert torch.linalg.slogdet(jac_latent).logabsdet.item() == pytest.approx(
            logdet_latent[i].item(), abs=1e-8
        )
        assert torch.linalg.slogdet(jac_data).logabsdet.item() == pytest.approx(
            logdet_data[i].item(), abs=1e-8
        )


@pytest.mark.parametrize("name", list(TRANSFORMS) + [f"flow-{n}" for n in FLOWS])
def test_gradients_reach_every_parameter(name):
    factory = make_flow if name.startswith("flow-") else make_transform
    module = factory(name.removeprefix("flow-"), 3, seed=0)
    if any(p.requires_grad for p in module.parameters()):
        module.train()
        z, logdet = module.to_latent(points(3, n=64))
        (z.square().sum() - logdet.sum()).backward()
        for pname, parameter in module.named_parameters():
            if parameter.numel() == 0:  # e.g. the empty strictly-lower part of a 1x1 matrix
                continue
            assert parameter.grad is not None and parameter.grad.abs().sum() > 0, pname


def grid_integral(flow, half_width: float = 7.0, resolution: int = 500) -> float:
    edges = torch.linspace(-half_width, half_width, resolution + 1, dtype=torch.float64)
    centres = (edges[1:] + edges[:-1]) / 2
    xx, yy = torch.meshgrid(centres, centres, indexing="xy")
    with torch.no_grad():
        density = flow.log_prob(torch.stack([xx.ravel(), yy.ravel()], 1)).exp()
    return density.sum().item() * (2 * half_width / resolution) ** 2


# nsf-linear is nsf with Glow's linear map, whose log-det glow checks here already; its own
# log-det is checked against autograd above (this test costs ~20 s per flow)
@pytest.mark.slow
@pytest.mark.parametrize("name", [name for name in FLOWS if name != "nsf-linear"])
def test_density_integrates_to_one_untrained_and_trained(name):
    flow = FLOWS[name](2, 0).double()
    data = torch.tensor(
        np.random.default_rng(0).normal(size=(512, 2)) * [1.0, 0.5] + [0.5, 0.0],
        dtype=torch.float64,
    )
    flow.train()
    flow.log_prob(data)  # data-dependent initialisation where the flow has one
    flow.eval()
    assert grid_integral(flow) == pytest.approx(1.0, abs=2e-3)

    optimizer = torch.optim.Adam(flow.parameters(), lr=1e-2)
    for _ in range(200):
        optimizer.zero_grad()
        (-flow.log_prob(data).mean()).backward()
        optimizer.step()
    trained_nll = -flow.log_prob(data).mean().item()
    assert trained_nll < 0.5 * math.log(2 * math.pi * math.e) * 2  # it learned something
    assert grid_integral(flow) == pytest.approx(1.0, abs=2e-3)


@pytest.mark.parametrize("name", list(FLOWS))
def test_sampling_agrees_with_log_prob_and_traces(name):
    flow = make_flow(name, 2, seed=3)
    flow.log_prob(points(2, n=64))
    flow.eval()
    x, log_p = flow.sample_with_log_prob(200, seed=5)
    torch.testing.assert_close(log_p, flow.log_prob(x), atol=1e-9, rtol=0)
    torch.testing.assert_close(flow.sample(200, seed=5), x)

    trace = flow.trace_to_data(200, seed=5)
    assert len(trace) == len(flow.transforms) + 1
    torch.testing.assert_close(trace[0], flow.sample_latent(200, seed=5)[0])
    torch.testing.assert_close(trace[-1], x)
    latent_trace = flow.trace_to_latent(x)
    torch.testing.assert_close(latent_trace[0], x)
    torch.testing.assert_close(latent_trace[-1], flow.to_latent(x)[0])


@pytest.mark.parametrize("n_models", [1, 2])
def test_large_inputs_in_slices_equal_one_pass(monkeypatch, n_models):
    from densitylab.flows import flow as flow_module

    flow = flows.stack([make_flow("glow", 2, seed=s) for s in range(n_models)])
    flow.log_prob(points(2, n=64))  # ActNorm initialised in training mode, from all 64 points
    flow.eval()
    x = points(2, n=1000)
    whole = flow.log_prob(x), flow.to_latent(x), flow.sample_with_log_prob(1000, seed=2)
    monkeypatch.setattr(flow_module, "INFERENCE_CHUNK", 96)  # 11 slices, the last one short
    sliced = flow.log_prob(x), flow.to_latent(x), flow.sample_with_log_prob(1000, seed=2)
    torch.testing.assert_close(sliced, whole, atol=1e-12, rtol=0)


def test_sampling_leaves_global_rng_alone():
    flow = flows.realnvp(2)
    before = torch.random.get_rng_state()
    flow.sample(10, seed=1)
    flow.sample(10)
    assert torch.equal(before, torch.random.get_rng_state())
    assert not torch.equal(flow.sample(5, seed=1), flow.sample(5, seed=2))


@pytest.mark.parametrize("builder", ["realnvp", "glow"])
def test_stacked_models_equal_their_singles(builder):
    singles = [flows.build(builder, dim=3, n_layers=2, seed=s) for s in range(3)]
    singles = [perturbed(f, 7 + i) for i, f in enumerate(singles)]
    x = points(3, n=32)
    for f in singles:
        f.train()
        f.log_prob(x)
    stacked = flows.stack(singles)
    stacked.eval()
    batched = stacked.log_prob(x)
    assert batched.shape == (3, 32)
    for m, single in enumerate(singles):
        single.eval()
        torch.testing.assert_close(batched[m], single.log_prob(x), atol=1e-12, rtol=0)
    for original, recovered in zip(singles, flows.unstack(stacked), strict=True):
        recovered.eval()
        torch.testing.assert_close(recovered.log_prob(x), original.log_prob(x), atol=1e-12, rtol=0)


def test_stack_rejects_different_architectures():
    with pytest.raises(ValueError, match="same architecture"):
        flows.stack([flows.realnvp(2, n_layers=2), flows.realnvp(2, n_layers=3)])


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: flows.realnvp(2, n_layers=0), "n_layers"),
        (lambda: flows.glow(2, n_layers=-1), "n_layers"),
        (lambda: flows.realnvp(2, hidden=()), "hidden"),
        (lambda: flows.realnvp(2, hidden=(0,)), "hidden"),
        (lambda: flows.realnvp(1), "dim"),
        (lambda: flows.glow(1), "dim"),
        (lambda: flows.realnvp(2, activation="swish"), "activation"),
        (lambda: flows.realnvp(2, mixing="shuffle"), "mixing"),
        (lambda: flows.realnvp(2, scale="exp"), "scale"),
        (lambda: flows.build("spam", dim=2), "realnvp"),
        (lambda: AffineCoupling([True, True]), "mask"),
        (lambda: flows.realnvp(2).log_prob(torch.zeros(4, 3)), r"shape \(n, 2\)"),
        (lambda: flows.realnvp(2).log_prob(torch.tensor([[0.0, float("nan")]])), "NaN"),
        (lambda: flows.realnvp(2).to_data(torch.tensor([[float("inf"), 0.0]])), "NaN"),
        (lambda: flows.realnvp(2).sample(0), "samples"),
    ],
)
def test_bad_input_names_the_problem(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_float32_and_numpy_input():
    flow = flows.realnvp(2)
    x = np.random.default_rng(0).normal(size=(10, 2))
    log_p = flow.log_prob(x)
    assert log_p.dtype == torch.float32 and log_p.shape == (10,)


def test_standardized_flow_keeps_dtype():
    flow = flows.standardized(flows.realnvp(2).double())
    assert flow.dtype == torch.float64
    assert flow.log_prob(torch.zeros(1, 2, dtype=torch.float64)).dtype == torch.float64


def test_recommended_is_a_spline_flow_with_its_recipe():
    flow = flows.recommended(3, seed=1)
    assert flow.config["builder"] == "nsf" and flow.config["n_layers"] == 6
    assert flow.config["bins"] == 10 and flow.config["hidden"] == [64, 64]
    assert flow.config["fourier"] == 3
    assert flow.log_prob(torch.zeros(2, 3)).shape == (2,)
    assert flows.RECOMMENDED_FIT["standardize"] is True


@pytest.mark.parametrize("n", [1, 300, 1500, 10_000, 1_000_000])
def test_recommended_budget_is_counted_in_optimizer_steps(n):
    epochs = flows.recommended_epochs(n)
    train = n - round(0.1 * n)
    steps = epochs * math.ceil(max(train, 1) / flows.RECOMMENDED_FIT["batch_size"])
    assert steps >= flows.RECOMMENDED_STEPS
    assert epochs == 1 or steps - math.ceil(max(train, 1) / 256) < flows.RECOMMENDED_STEPS


def test_recipes_fill_in_what_the_user_left_unset():
    from densitylab.flows.recipes import settings

    coursework = settings("glow", 1500)
    assert coursework == {"builder": "glow", "n_layers": 4, "hidden": (32, 32), "epochs": 1000,
                          "batch_size": 64, "lr": 1e-3, "schedule": "constant",
                          "standardize": False}
    best = settings("recommended", 300, hidden=[16], schedule="constant", epochs=None)
    assert best["builder"] == "nsf" and best["hidden"] == (16,) and best["schedule"] == "constant"
    assert best["epochs"] == flows.recommended_epochs(300) == 500  # 2 steps per epoch
    assert best["standardize"] is True and best["fourier"] == 3
    with pytest.raises(ValueError, match="unknown model 'spam'"):
        settings("spam", 10)
    with pytest.raises(ValueError, match="unknown schedule"):
        settings("realnvp", 10, schedule="step")


def test_fourier_features_encode_the_conditioner_input():
    from densitylab.flows.nets import StackedMLP, fourier_features

    x = torch.tensor([[[0.5, -1.0]]], dtype=torch.float64)
    encoded = fourier_features(x, 2)
    expected = [0.5, -1.0, math.sin(0.5), math.sin(1.0), math.sin(-1.0), math.sin(-2.0),
                math.cos(0.5), math.cos(1.0), math.cos(-1.0), math.cos(-2.0)]
    torch.testing.assert_close(encoded[0, 0], torch.tensor(expected, dtype=torch.float64))
    assert StackedMLP(1, 2, (8,), 1, fourier=2).weights[0].shape == (1, 10, 8)
    with pytest.raises(ValueError, match="fourier"):
        StackedMLP(1, 2, (8,), 1, fourier=-1)
    from densitylab.training import compiled_realnvp as compiled

    assert not compiled.supports(flows.realnvp(2, fourier=1))


ONE_DIMENSIONAL = {
    "nsf": lambda: flows.nsf(1, n_layers=3, bins=6, bound=3.0, seed=0),
    "maf-spline": lambda: flows.maf(1, n_layers=2, hidden=(8,), transform="spline", bins=6,
                                    bound=3.0, seed=0),
    "iaf": lambda: flows.maf(1, n_layers=2, hidden=(8,), inverse=True, seed=0),
}


@pytest.mark.parametrize("name", ONE_DIMENSIONAL)
def test_one_dimensional_flows_are_exact(name):
    """D = 1: round trip, log-det against autograd, and a density that integrates to 1 before
    and after training on a skewed law."""
    flow = perturbed(ONE_DIMENSIONAL[name](), 7)
    x = points(1, n=32)
    z, logdet = flow.to_latent(x)
    x_back, logdet_back = flow.to_data(z)
    torch.testing.assert_close(x_back, x, atol=1e-10, rtol=0)
    torch.testing.assert_close(logdet_back, -logdet, atol=1e-10, rtol=0)
    for i in range(5):
        slope = torch.autograd.functional.jacobian(lambda v: flow.to_latent(v[None])[0][0], x[i])
        assert math.log(abs(slope.item())) == pytest.approx(logdet[i].item(), abs=1e-8)
    grid = torch.linspace(-12.0, 12.0, 40001, dtype=torch.float64)[:, None]

    def integral() -> float:
        with torch.no_grad():
            return torch.trapezoid(flow.log_prob(grid).exp(), grid[:, 0]).item()

    assert integral() == pytest.approx(1.0, abs=1e-6)
    data = torch.tensor(np.random.default_rng(0).gamma(2.0, size=(800, 1)) - 2.0)
    optimizer = torch.optim.Adam(flow.parameters(), lr=2e-2)
    start = -flow.log_prob(data).mean().item()
    for _ in range(150):
        optimizer.zero_grad()
        (-flow.log_prob(data).mean()).backward()
        optimizer.step()
    assert -flow.log_prob(data).mean().item() < start - 0.05
    assert integral() == pytest.approx(1.0, abs=1e-6)


def test_one_dimensional_data_needs_a_spline_flow():
    with pytest.raises(ValueError, match="use nsf or maf"):
        flows.realnvp(1)
