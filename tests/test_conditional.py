"""Conditional flows p(x | c): exact round trips and log-determinants with a context, densities
that integrate to 1 for every fixed context, training on a law with a known conditional entropy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import densitylab as dl
from densitylab import flows
from densitylab.flows import AffineCoupling, MaskedAutoregressive, SplineCoupling

CONTEXT = 2
CONDITIONAL = {
    "realnvp": lambda d, s: flows.realnvp(d, n_layers=2, hidden=(16,), context=CONTEXT, seed=s),
    "realnvp-triangular": lambda d, s: flows.realnvp(d, n_layers=2, hidden=(16,), triangular=True,
                                                     context=CONTEXT, seed=s),
    "glow": lambda d, s: flows.glow(d, n_layers=2, hidden=(16,), context=CONTEXT, seed=s),
    "nsf": lambda d, s: flows.nsf(d, n_layers=2, hidden=(16,), bins=5, bound=3.0,
                                  context=CONTEXT, seed=s),
    "maf": lambda d, s: flows.maf(d, n_layers=2, hidden=(16,), context=CONTEXT, seed=s),
    "iaf-spline": lambda d, s: flows.maf(d, n_layers=2, hidden=(16,), transform="spline", bins=5,
                                         bound=3.0, inverse=True, context=CONTEXT, seed=s),
    # the context through an embedding network first (hidden 8, embedded size 3 or 4)
    "nsf-embedded": lambda d, s: flows.nsf(d, n_layers=2, hidden=(16,), bins=5, bound=3.0,
                                           context=CONTEXT, embedding=(8, 3), seed=s),
    "realnvp-embedded": lambda d, s: flows.realnvp(d, n_layers=2, hidden=(16,), context=CONTEXT,
                                                   embedding=(8, 4), seed=s),
}
NEEDS_TWO = {"realnvp", "realnvp-triangular", "glow", "realnvp-embedded"}


def perturbed(flow, seed: int, scale: float = 0.1):
    flow = flow.double()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in flow.parameters():
            parameter.add_(scale * torch.randn(parameter.shape, generator=generator,
                                               dtype=parameter.dtype))
    return flow


def randn(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def cases():
    for name in CONDITIONAL:
        for dim in (1, 2, 5):
            if dim == 1 and name in NEEDS_TWO:
                continue
            yield pytest.param(name, dim, id=f"{name}-D{dim}")


@pytest.mark.parametrize(("name", "dim"), list(cases()))
def test_round_trip_and_logdet_against_autograd_with_context(name, dim):
    flow = perturbed(CONDITIONAL[name](dim, 0), 3)
    x, c = randn(12, dim, seed=1), randn(12, CONTEXT, seed=2)
    flow.train()
    flow.log_prob(x, c)  # ActNorm's data-dependent initialisation
    flow.eval()
    z, logdet = flow.to_latent(x, c)
    x_back, logdet_back = flow.to_data(z, c)
    torch.testing.assert_close(x_back, x, atol=1e-10, rtol=0)
    torch.testing.assert_close(logdet_back, -logdet, atol=1e-10, rtol=0)
    for i in range(3):
        jac = torch.autograd.functional.jacobian(
            lambda v, i=i: flow.to_latent(v[None], c[i : i + 1])[0][0], x[i])
        assert torch.linalg.slogdet(jac).logabsdet.item() == pytest.approx(logdet[i].item(),
                                                                           abs=1e-8)
    # the context matters: another context gives another density
    other = flow.log_prob(x, c + 1.0)
    assert not torch.allclose(other, flow.log_prob(x, c))


@pytest.mark.parametrize("name", list(CONDITIONAL))
def test_density_integrates_to_one_for_every_fixed_context(name):
    flow = perturbed(CONDITIONAL[name](2, 1), 5, scale=0.05)
    flow.train()
    flow.log_prob(randn(64, 2, seed=0), randn(64, CONTEXT, seed=9))
    flow.eval()
    edges = torch.linspace(-8.0, 8.0, 401, dtype=torch.float64)
    centres = (edges[1:] + edges[:-1]) / 2
    xx, yy = torch.meshgrid(centres, centres, indexing="xy")
    grid = torch.stack([xx.ravel(), yy.ravel()], 1)
    for c in ([0.0, 0.0], [1.5, -0.7]):
        context = torch.tensor([c], dtype=torch.float64).expand(len(grid), -1)
        with torch.no_grad():
            mass = flow.log_prob(grid, context).exp().sum().item() * (16 / 400) ** 2
        assert mass == pytest.approx(1.0, abs=3e-3), c


def test_gradients_reach_every_parameter_with_context():
    for make in (lambda: AffineCoupling([True, False, False], hidden=(8,), context=2),
                 lambda: SplineCoupling([True, False], hidden=(8,), bins=4, context=2,
                                        zero_init=False),
                 lambda: MaskedAutoregressive(3, hidden=(8,), context=2)):
        transform = perturbed(make(), 0)
        z, logdet = transform.to_latent(randn(10, transform.dim, seed=1), randn(10, 2, seed=2))
        (z.square().sum() - logdet.sum()).backward()
        for pname, parameter in transform.named_parameters():
            assert parameter.grad is not None and parameter.grad.abs().sum() > 0, pname


def test_an_embedding_network_learns_saves_and_stacks(tmp_path):
    """The embedding is part of the model: gradients reach it, it is saved and loaded, stacked
    and unstacked with the rest; a bad embedding is a clear error."""
    flow = perturbed(CONDITIONAL["nsf-embedded"](2, 0), 1)
    assert flow.context_features == CONTEXT and flow.transforms[0].context_features == 3
    x, c = randn(16, 2, seed=1), randn(16, CONTEXT, seed=2)
    (-flow.log_prob(x, c).sum()).backward()
    assert all(p.grad.abs().sum() > 0 for p in flow.embedding.parameters())
    dl.save(flow, tmp_path / "embedded")
    loaded = dl.load(tmp_path / "embedded")
    torch.testing.assert_close(loaded.log_prob(x, c).double(), flow.log_prob(x, c).detach())
    other = perturbed(CONDITIONAL["nsf-embedded"](2, 5), 2)
    stacked = flows.stack([flow, other])
    for single, alone in zip(flows.unstack(stacked), (flow, other), strict=True):
        torch.testing.assert_close(single.log_prob(x, c), alone.log_prob(x, c).detach())
    with pytest.raises(ValueError, match="embedding needs context"):
        flows.nsf(2, embedding=(8, 3))
    with pytest.raises(ValueError, match="at least two widths"):
        flows.nsf(2, context=2, embedding=(3,))


@pytest.mark.parametrize("name", ["nsf", "maf", "iaf-spline", "nsf-embedded"])
def test_samples_follow_their_context(name):
    """Samples given c carry the density log p(x | c) that log_prob gives them, and differ
    between contexts; one context row serves n samples."""
    flow = perturbed(CONDITIONAL[name](2, 0), 4, scale=0.2).eval()
    c = randn(6, CONTEXT, seed=3)
    x, log_p = flow.sample_with_log_prob(6, seed=0, context=c)
    torch.testing.assert_close(log_p, flow.log_prob(x, c), atol=1e-9, rtol=0)
    assert not torch.allclose(flow.sample(6, seed=0, context=c + 2.0), x)
    single = flow.sample(4, seed=0, context=c[:1])
    torch.testing.assert_close(single, flow.sample(4, seed=0, context=c[:1].expand(4, -1)))
    trace = flow.trace_to_data(4, seed=0, context=c[:1])
    torch.testing.assert_close(trace[-1], single)


def test_bad_context_is_a_clear_error():
    flow = flows.realnvp(2, n_layers=2, context=2)
    x = torch.zeros(4, 2)
    with pytest.raises(ValueError, match="conditional: pass a context of 2"):
        flow.log_prob(x)
    with pytest.raises(ValueError, match=r"shape \(n, 2\)"):
        flow.log_prob(x, torch.zeros(4, 3))
    with pytest.raises(ValueError, match="3 rows for 4 points"):
        flow.log_prob(x, torch.zeros(3, 2))
    with pytest.raises(ValueError, match="not conditional"):
        flows.realnvp(2).log_prob(x, torch.zeros(4, 2))
    with pytest.raises(ValueError, match="conditional: pass context="):
        dl.fit(flow, np.zeros((20, 2)), epochs=1, verbose=False)
    with pytest.raises(ValueError, match="not conditional"):
        dl.fit(flows.realnvp(2), np.zeros((20, 2)), context=np.zeros((20, 2)), epochs=1)
    with pytest.raises(ValueError, match="context has 19 rows"):
        dl.fit(flow, np.zeros((20, 2)), context=np.zeros((19, 2)), epochs=1)
    with pytest.raises(ValueError, match="context must be a non-negative integer"):
        flows.realnvp(2, context=-1)


def heteroscedastic(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """y | c ~ N(sin 3c, (0.1 + 0.2 c^2)^2), c ~ U(-1, 1)."""
    rng = np.random.default_rng(seed)
    c = rng.uniform(-1.0, 1.0, size=(n, 1))
    return np.sin(3 * c) + (0.1 + 0.2 * c**2) * rng.normal(size=(n, 1)), c


@pytest.mark.slow
def test_fit_learns_a_known_conditional_law_and_saves(tmp_path):
    y, c = heteroscedastic(4000, 0)
    y_test, c_test = heteroscedastic(20000, 1)
    entropy = float(np.mean(0.5 * np.log(2 * math.pi * math.e * (0.1 + 0.2 * c_test**2) ** 2)))
    flow = flows.maf(1, n_layers=3, hidden=(64, 64), context=1, seed=0)
    result = dl.fit(flow, y, context=c, epochs=40, batch_size=256, lr=3e-3, schedule="cosine",
                    standardize=True, seed=0, verbose=False)
    nll = -result.flow.log_prob(y_test, c_test).double().mean().item()
    assert nll - entropy < 0.05
    dl.save(result.flow, tmp_path / "model")
    loaded = dl.load(tmp_path / "model")
    assert loaded.context_features == 1
    torch.testing.assert_close(loaded.log_prob(y_test[:50], c_test[:50]),
                               result.flow.log_prob(y_test[:50], c_test[:50]))


def test_conditional_estimator_learns_saves_and_checks_its_input(tmp_path):
    y, c = heteroscedastic(2000, 0)
    y_test, c_test = heteroscedastic(5000, 1)
    entropy = float(np.mean(0.5 * np.log(2 * math.pi * math.e * (0.1 + 0.2 * c_test**2) ** 2)))
    est = dl.ConditionalFlowDensity(model="maf", n_layers=3, hidden=(32, 32), epochs=40,
                                    batch_size=128, lr=3e-3, schedule="cosine",
                                    standardize=True, random_state=0)
    est.fit(c * 50.0 - 7.0, y[:, 0])  # the condition's units do not matter: standardised inside
    log_p = est.score_samples(c_test * 50.0 - 7.0, y_test)
    assert -log_p.mean() - entropy < 0.08
    draws = est.sample(np.full((3000, 1), 0.5 * 50.0 - 7.0), random_state=0)
    sigma = 0.1 + 0.2 * 0.25
    assert draws.mean() == pytest.approx(math.sin(1.5), abs=4 * sigma / math.sqrt(3000) + 0.03)
    dl.save(est, tmp_path / "est")
    loaded = dl.load(tmp_path / "est")
    np.testing.assert_array_equal(loaded.score_samples(c_test[:20] * 50.0 - 7.0, y_test[:20]),
                                  log_p[:20])
    with pytest.raises(ValueError, match="X has 5 rows but y has 4"):
        est.score_samples(np.zeros((5, 1)), np.zeros((4, 1)))
    with pytest.raises(ValueError, match="must have 1 columns"):
        est.score_samples(np.zeros((5, 2)), np.zeros((5, 1)))


def test_conditional_estimator_with_an_embedding_network(tmp_path):
    y, c = heteroscedastic(2000, 0)
    y_test, c_test = heteroscedastic(5000, 1)
    entropy = float(np.mean(0.5 * np.log(2 * math.pi * math.e * (0.1 + 0.2 * c_test**2) ** 2)))
    est = dl.ConditionalFlowDensity(model="maf", n_layers=3, hidden=(32, 32), epochs=40,
                                    batch_size=128, lr=3e-3, schedule="cosine",
                                    standardize=True, random_state=0, embedding=(16, 4))
    log_p = est.fit(c, y).score_samples(c_test, y_test)
    assert est.flow_.embedding is not None and est.flow_.transforms[-1].context_features == 4
    assert -log_p.mean() - entropy < 0.1
    dl.save(est, tmp_path / "est")
    np.testing.assert_array_equal(dl.load(tmp_path / "est").score_samples(c_test[:20],
                                                                          y_test[:20]),
                                  log_p[:20])


def test_train_condition_on_then_score_and_sample_given(tmp_path):
    from typer.testing import CliRunner

    from densitylab.cli import app

    y, c = heteroscedastic(600, 0)
    np.savetxt(tmp_path / "data.csv", np.hstack([c, y]), delimiter=",")
    np.savetxt(tmp_path / "given.csv", [[0.5], [-0.5]], delimiter=",")
    runner = CliRunner()
    result = runner.invoke(app, ["train", str(tmp_path / "data.csv"), "--condition-on", "0",
                                 "--model", "maf", "--epochs", "5", "--out",
                                 str(tmp_path / "run"), "-q"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["sample", str(tmp_path / "run"), "--given",
                                 str(tmp_path / "given.csv"), "--out", str(tmp_path / "s.csv")])
    assert result.exit_code == 0, result.output
    drawn = np.loadtxt(tmp_path / "s.csv", delimiter=",", skiprows=1)
    assert drawn.shape == (2, 2) and drawn[:, 0].tolist() == [0.5, -0.5]
    result = runner.invoke(app, ["score", str(tmp_path / "run"), str(tmp_path / "s.csv"),
                                 "--out", str(tmp_path / "scores.csv")])
    assert result.exit_code == 0, result.output
    est = dl.load(tmp_path / "run" / "model")
    np.testing.assert_allclose(np.loadtxt(tmp_path / "scores.csv", skiprows=1),
                               est.score_samples(drawn[:, :1], drawn[:, 1:]), rtol=1e-9)
    for bad, message in (("0,0", "distinct"), ("0,1", "no column"), ("a", "column indices")):
        result = runner.invoke(app, ["train", str(tmp_path / "data.csv"), "--condition-on", bad,
                                     "--out", str(tmp_path / "bad")])
        assert isinstance(result.exception, ValueError) and message in str(result.exception)
