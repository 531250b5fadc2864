"""Continuous normalizing flows: the divergence against autograd, the ODE against closed forms,
densities that integrate to 1, save/load, context, errors, and both training objectives."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import densitylab as dl
from densitylab.flows import ContinuousFlow, VectorField, cnf, function_evaluations


def _autograd_divergence(field: VectorField, t, x, context=None) -> torch.Tensor:
    """The trace of the field's Jacobian by D backward passes."""
    x = x.clone().requires_grad_(True)
    v = field(t, x, context)
    return sum(torch.autograd.grad(v[..., i].sum(), x, retain_graph=True)[0][..., i]
               for i in range(x.shape[-1]))


@pytest.mark.parametrize("activation, fourier", [("elu", 0), ("tanh", 0), ("softplus", 0),
                                                 ("elu", 3)])
@pytest.mark.parametrize("per_point_time", [False, True])
def test_exact_divergence_is_the_trace_of_the_autograd_jacobian(activation, fourier,
                                                                 per_point_time):
    g = torch.Generator().manual_seed(0)
    field = VectorField(3, (16, 8, 12), context=2, activation=activation, fourier=fourier,
                        n_models=2, generator=g).double()
    x = torch.randn(2, 50, 3, generator=g, dtype=torch.float64)
    c = torch.randn(2, 50, 2, generator=g, dtype=torch.float64)
    t = (torch.rand(2, 50, 1, generator=g, dtype=torch.float64) if per_point_time
         else torch.tensor(0.3, dtype=torch.float64))
    v, div = field.with_divergence(t, x, c)
    torch.testing.assert_close(v, field(t, x, c), rtol=0, atol=1e-12)
    torch.testing.assert_close(div, _autograd_divergence(field, t, x, c), rtol=0, atol=1e-8)


def test_hutchinson_estimate_is_unbiased():
    g = torch.Generator().manual_seed(1)
    field = VectorField(5, (32, 32), generator=g).double()
    point = torch.randn(1, 1, 5, generator=g, dtype=torch.float64)
    t = torch.tensor(0.6, dtype=torch.float64)
    exact = field.with_divergence(t, point)[1].item()
    k = 4000
    probes = 2.0 * torch.randint(0, 2, (1, k, 5), generator=g).double() - 1.0
    estimates = field.with_divergence(t, point.expand(1, k, 5), probe=probes)[1][0]
    se = estimates.std().item() / np.sqrt(k)
    assert abs(estimates.mean().item() - exact) < 3 * se
    assert estimates.std() > 0  # a real estimate, not the exact value in disguise


def test_hutchinson_probe_through_fourier_features_is_the_jacobian_vector_product():
    g = torch.Generator().manual_seed(2)
    field = VectorField(3, (16, 16), fourier=4, n_models=2, generator=g).double()
    x = torch.randn(2, 7, 3, generator=g, dtype=torch.float64)
    probe = torch.randn(2, 7, 3, generator=g, dtype=torch.float64)
    t = torch.tensor(0.4, dtype=torch.float64)
    _, estimate = field.with_divergence(t, x, probe=probe)
    jvp = torch.func.jvp(lambda y: field(t, y), (x,), (probe,))[1]  # J e per point
    torch.testing.assert_close(estimate, (jvp * probe).sum(-1), rtol=0, atol=1e-10)


def _tight(dim=2, **options):
    return cnf(dim, hidden=(16, 16), rtol=1e-8, atol=1e-8, seed=3, **options).double()


def test_round_trip_and_log_determinants_agree():
    flow = _tight()
    x = torch.randn(200, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    with torch.no_grad():
        z, to_latent = flow.to_latent(x)
        back, to_data = flow.to_data(z)
    torch.testing.assert_close(back, x, rtol=0, atol=1e-6)
    # (ELU's second derivative jumps at 0, so the divergence is only once differentiable:
    # the solver's error estimate is looser on it than on the points)
    torch.testing.assert_close(to_data, -to_latent, rtol=0, atol=2e-5)
    assert (z - x).abs().max() > 0.05  # the field moved the points


def test_fixed_step_solver_agrees_with_the_adaptive_one():
    x = torch.randn(100, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    adaptive = _tight()
    fixed = cnf(2, hidden=(16, 16), solver="rk4", steps=50, seed=3).double()
    with torch.no_grad():
        torch.testing.assert_close(fixed.log_prob(x), adaptive.log_prob(x), rtol=0, atol=2e-5)


def test_log_prob_integrates_to_one_on_a_grid():
    flow = cnf(2, hidden=(16, 16), seed=5).double()
    edge = np.linspace(-7, 7, 141)
    grid = np.stack(np.meshgrid(edge, edge), -1).reshape(-1, 2)
    with torch.no_grad():
        density = flow.log_prob(torch.as_tensor(grid)).exp().numpy()
    assert abs(density.sum() * (edge[1] - edge[0]) ** 2 - 1.0) < 1e-2


def test_samples_carry_the_log_density_log_prob_gives_them():
    flow = _tight()
    with torch.no_grad():
        x, log_p = flow.sample_with_log_prob(300, seed=0)
        torch.testing.assert_close(flow.log_prob(x), log_p, rtol=0, atol=2e-5)


def _set_field(flow, first_weight, first_bias, last_weight, last_bias):
    field = flow.transforms[-1].field
    with torch.no_grad():
        for p in field.parameters():
            p.zero_()
        field.weights[0][0, : first_weight.shape[0]] = first_weight
        field.biases[0][0, 0] = first_bias
        field.weights[-1][0] = last_weight
        field.biases[-1][0, 0] = last_bias


def test_zero_field_is_the_identity():
    flow = cnf(3, hidden=(8,), seed=0).double()
    _set_field(flow, torch.zeros(3, 8), torch.zeros(8), torch.zeros(8, 3), torch.zeros(3))
    x = torch.randn(50, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        z, logdet = flow.to_latent(x)
    torch.testing.assert_close(z, x, rtol=0, atol=1e-14)
    assert torch.equal(logdet, torch.zeros(50, dtype=torch.float64))


def test_zero_init_starts_at_the_identity_with_the_same_hidden_layers():
    """``zero_init`` zeroes the last layer only: the density starts as the base's, the other
    layers are the random draw of the default (the seed's stream is unchanged), and the
    maximum-likelihood recipe uses it."""
    from densitylab.flows.recipes import settings, split

    start, random = cnf(2, hidden=(8, 8), zero_init=True, seed=1), cnf(2, hidden=(8, 8), seed=1)
    x = torch.randn(40, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        z, logdet = start.double().to_latent(x)
    torch.testing.assert_close(z, x, rtol=0, atol=1e-14)
    assert torch.equal(logdet, torch.zeros(40, dtype=torch.float64))
    ours, theirs = (list(f.transforms[-1].field.parameters()) for f in (start, random))
    zeroed = [not a.any() for a in ours]
    assert zeroed == [False, False, True, False, False, True]  # weights, then biases
    assert all(torch.equal(a, b) for a, b, z in zip(ours, theirs, zeroed, strict=True) if not z)
    assert start.config["zero_init"] and not random.config["zero_init"]
    _, architecture, _ = split(settings("cnf", 2000))
    assert architecture["zero_init"] is True


def test_linear_field_matches_the_matrix_exponential():
    """v(x) = A x: x(1) = expm(A) z and log|det dx/dz| = trace(A). An ELU layer kept in its
    linear part (a large bias, subtracted again after) makes the MLP exactly linear."""
    a = torch.tensor([[0.3, -1.0], [0.8, -0.2]], dtype=torch.float64)
    shift = 50.0
    flow = cnf(2, hidden=(2,), rtol=1e-9, atol=1e-9, seed=0).double()
    _set_field(flow, torch.eye(2, dtype=torch.float64), torch.full((2,), shift), a.T,
               -shift * a.sum(dim=1))
    z = torch.randn(40, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        x, logdet = flow.to_data(z)
    torch.testing.assert_close(x, z @ torch.linalg.matrix_exp(a).T, rtol=0, atol=1e-7)
    torch.testing.assert_close(logdet, torch.full((40,), a.trace().item(),
                                                  dtype=torch.float64), rtol=0, atol=1e-7)


def test_trace_snapshots_run_along_time():
    flow = _tight(snapshots=4)
    z = torch.randn(30, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        trace = flow.trace_to_data(z)
        back = flow.trace_to_latent(trace[-1])
    assert len(trace) == 5 and len(back) == 5
    torch.testing.assert_close(trace[0], z)
    torch.testing.assert_close(trace[-1], flow.to_data(z)[0].detach(), rtol=0, atol=1e-6)
    torch.testing.assert_close(back[-1], z, rtol=0, atol=1e-6)


def test_function_evaluations_are_counted():
    flow = cnf(2, hidden=(8,))
    assert function_evaluations(flow) == 0 and function_evaluations(dl.flows.realnvp(2)) is None
    with torch.no_grad():
        flow.log_prob(torch.zeros(5, 2))
    assert function_evaluations(flow) >= 6  # dopri5: at least one step of six stages


def test_save_load_round_trip(tmp_path):
    flow = cnf(2, hidden=(8, 8), solver="rk4", steps=30, context=1, seed=4)
    dl.save(flow, tmp_path / "cnf")
    loaded = dl.load(tmp_path / "cnf")
    x, c = torch.randn(20, 2), torch.randn(20, 1)
    with torch.no_grad():
        assert torch.equal(loaded.log_prob(x, c), flow.log_prob(x, c))
    assert loaded.config == flow.config


def test_conditional_cnf_uses_its_context():
    flow = cnf(2, hidden=(16,), context=1, seed=0)
    x = torch.randn(10, 2)
    with torch.no_grad():
        a = flow.log_prob(x, torch.zeros(10, 1))
        b = flow.log_prob(x, torch.ones(10, 1))
        samples = flow.sample(7, seed=0, context=torch.ones(1, 1))
    assert (a - b).abs().max() > 1e-3 and samples.shape == (7, 2)
    with pytest.raises(ValueError, match="conditional"):
        flow.log_prob(x)


@pytest.mark.parametrize("options, message", [
    (dict(rtol=0.0), "rtol must be a tolerance"),
    (dict(atol=2.0), "atol must be a tolerance"),
    (dict(rtol=float("nan")), "rtol must be a tolerance"),
    (dict(solver="leapfrog"), "unknown solver"),
    (dict(divergence="trace"), "unknown divergence"),
    (dict(steps=0), "steps must be"),
    (dict(activation="relu"), "unknown activation"),
    (dict(train_tol=1.5), "train_tol must be a tolerance"),
    (dict(fourier=-1), "fourier must be an integer >= 0"),
    (dict(fourier=30), "fourier must be at most 20"),
    (dict(dim=40, divergence="exact"), "use divergence='hutchinson'"),
])
def test_bad_options_get_one_line_errors(options, message):
    options = {"dim": 2, **options}
    with pytest.raises(ValueError, match=message) as error:
        cnf(**options)
    assert "\n" not in str(error.value)


def test_many_columns_default_to_hutchinson():
    flow = cnf(40, hidden=(8,))
    assert flow.config["divergence"] == "hutchinson"
    with torch.no_grad():
        assert torch.isfinite(flow.log_prob(torch.randn(4, 40))).all()


def _moons(n=400):
    return dl.datasets.get("moons").sample(n, seed=0)


def test_maximum_likelihood_training_records_function_evaluations():
    result = dl.fit(cnf(2, hidden=(16,)), _moons(), epochs=2, batch_size=128, verbose=False,
                    standardize=True)
    history = result.history
    assert set(history.columns) == {"train_nll", "train_nfe", "val_nll", "val_nfe"}
    assert min(history.train_nfe) >= 6 and min(history.val_nfe) >= 6
    assert history.val_nll[-1] < history.val_nll[0]


@pytest.mark.parametrize("objective", ["flow-matching", "ot-flow-matching"])
def test_flow_matching_learns_without_solving(objective):
    flow = cnf(2, hidden=(32, 32))
    result = dl.fit(flow, _moons(), epochs=15, batch_size=64, lr=3e-3, verbose=False,
                    standardize=True, objective=objective)
    history = result.history
    assert set(history.columns) == {"train_fm", "val_fm"}
    # the last epoch is kept: the loss is mostly the paths' own variance, so epochs differ by
    # less than its noise (what the field learned is checked by the NLL below)
    assert result.best_epoch == 15 and result.best_val_loss == history.val_fm[-1]
    assert function_evaluations(result.flow) == 0  # no ODE was solved in training
    moons = dl.datasets.get("moons")
    x_test = moons.sample(500, seed=1)
    with torch.no_grad():
        nll = -result.flow.log_prob(torch.as_tensor(x_test, dtype=torch.float32)).mean().item()
    assert nll - moons.entropy() < 1.0  # a Gaussian fitted to the moons is 1.2 nats off


def test_flow_matching_needs_a_continuous_flow():
    with pytest.raises(ValueError, match="flow matching trains continuous flows"):
        dl.fit(dl.flows.realnvp(2), _moons(), epochs=1, objective="flow-matching")
    with pytest.raises(ValueError, match="standard-normal base"):
        dl.fit(dl.flows.with_mixture_base(cnf(2, hidden=(8,)), 2), _moons(), epochs=1,
               objective="flow-matching")


def test_flow_matching_with_a_context():
    rng = np.random.default_rng(0)
    c = rng.uniform(-1, 1, size=(300, 1))
    y = np.hstack([c + 0.1 * rng.standard_normal((300, 1)), rng.standard_normal((300, 1))])
    result = dl.fit(cnf(2, hidden=(16,), context=1), y, context=c, epochs=3, verbose=False,
                    objective="flow-matching")
    with torch.no_grad():
        log_p = result.flow.log_prob(torch.as_tensor(y[:5], dtype=torch.float32),
                                     torch.as_tensor(c[:5], dtype=torch.float32))
    assert log_p.shape == (5,) and torch.isfinite(log_p).all()


def test_continuous_flow_is_a_transform():
    assert isinstance(cnf(2, hidden=(4,)).transforms[0], ContinuousFlow)


@pytest.mark.parametrize("model", ["cnf", "cnf-fm"])
def test_flow_density_and_outlier_detector_take_continuous_flows(model, tmp_path):
    x = dl.datasets.get("moons").sample(300, seed=0)
    est = dl.FlowDensity(model=model, epochs=2, hidden=(16,)).fit(x)
    assert est.flow_.config["builder"] == "cnf"
    assert ("train_nfe" in est.history_.columns) == (model == "cnf")
    # the maximum-likelihood recipe trains at a looser tolerance than it evaluates
    assert est.flow_.config["train_tol"] == (1e-3 if model == "cnf" else None)
    val = x[:20]
    scores = est.score_samples(val)
    assert scores.shape == (20,) and np.isfinite(scores).all()
    assert np.isfinite(est.best_val_nll_) and est.best_val_nll_ > 0  # an NLL for both
    dl.save(est, tmp_path / "est")
    np.testing.assert_allclose(dl.load(tmp_path / "est").score_samples(val), scores)
    det = dl.OutlierDetector(dl.FlowDensity(model=model, epochs=2, hidden=(16,)),
                             contamination=0.1).fit(x)
    assert det.predict([[0.5, 0.25], [8.0, 8.0]]).tolist() == [1, -1]


def test_flow_matching_refuses_patience():
    with pytest.raises(ValueError, match="patience .* does not apply to objective 'flow-matching'"):
        dl.fit(cnf(2, hidden=(8,)), _moons(), epochs=2, patience=3, verbose=False,
               objective="flow-matching")


def test_continuous_flows_are_autodensity_candidates_by_name():
    from densitylab.auto import CANDIDATES, DEFAULT_CANDIDATES

    assert {"cnf", "cnf-fm"} <= set(CANDIDATES) and "cnf" not in DEFAULT_CANDIDATES
    assert CANDIDATES["cnf-fm"](0).get_params()["model"] == "cnf-fm"


def test_recipes_count_steps_and_refuse_layers():
    from densitylab.flows.builders import BUILDERS
    from densitylab.flows.recipes import CNF_FM, settings, split

    fm = settings("cnf-fm", 2000)
    assert fm["objective"] == "ot-flow-matching" and fm["builder"] == "cnf"
    builder, architecture, _ = split(fm)  # the recipe's defaults build a valid flow
    flow = BUILDERS[builder](2, **architecture)
    assert flow.config["fourier"] == CNF_FM["fourier"] > 0
    with torch.no_grad():
        assert torch.isfinite(flow.log_prob(torch.zeros(3, 2))).all()
    assert settings("cnf", 2000)["objective"] == "nll"
    with pytest.raises(ValueError, match="no number of layers"):
        settings("cnf", 2000, n_layers=3)


@pytest.mark.slow  # the run's figures score a 150 x 150 grid through the solver
@pytest.mark.parametrize("model", ["cnf", "cnf-fm"])
def test_cli_train_score_sample(model, tmp_path):
    from typer.testing import CliRunner

    from densitylab.cli import app

    def invoke(*args):
        result = CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result.output

    out = tmp_path / "run"
    said = invoke("train", "moons", "--model", model, "--epochs", 2, "--hidden", "16", "-n", 300,
                  "--n-test", 300, "--out", out)
    assert "evaluating on 300 test points" in said  # the minutes after training are announced
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["score_nfe"] > 0 and np.isfinite(metrics["test_nll"])
    header = (out / "history.csv").read_text().splitlines()[0]
    assert header == ("epoch,train_nll,train_nfe,val_nll,val_nfe,seconds" if model == "cnf"
                      else "epoch,train_fm,val_fm,seconds")
    invoke("sample", out, "-n", 20, "--out", tmp_path / "s.csv")
    invoke("score", out, tmp_path / "s.csv", "--contamination", 0.1, "--out",
           tmp_path / "scores.csv")
    scores = np.loadtxt(tmp_path / "scores.csv", delimiter=",", skiprows=1)
    assert scores.shape == (20, 2) and np.isfinite(scores[:, 0]).all()


def test_density_along_time_integrates_to_one_and_figures_draw():
    from densitylab import views

    x = dl.datasets.get("moons").sample(300, seed=0)
    result = dl.fit(cnf(2, hidden=(16,)), x, epochs=3, verbose=False, standardize=True,
                    objective="flow-matching")
    grid, images = views.density_along_time(result, ((-5, 6), (-5, 5)), (0.0, 0.5, 1.0), 70)
    for image in images.values():
        assert abs(image.sum() * grid.cell_area - 1.0) < 1e-2
    # t = 1 is the model's own density
    with torch.no_grad():
        model = result.flow.double().log_prob(torch.as_tensor(grid.points)).exp().numpy()
    np.testing.assert_allclose(images[1.0].ravel(), model, rtol=1e-6, atol=1e-9)
    fig = dl.plots.transport(result, data=x, resolution=20)
    assert [ax.get_title() for ax in fig.axes[:4]] == ["t = 0.00", "t = 0.33", "t = 0.67",
                                                         "t = 1.00"]
    assert len(dl.plots.vector_field(result, data=x, resolution=6).axes) == 4  # 3 + colorbar
    with pytest.raises(ValueError, match="needs a continuous flow"):
        dl.plots.transport(dl.flows.realnvp(2))


def test_adjoint_gradients_match_backpropagation_through_the_solver():
    x = torch.randn(20, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    grads = []
    for adjoint in (False, True):  # tanh: the adjoint ODE needs a smooth second derivative
        flow = cnf(2, hidden=(8,), rtol=1e-7, atol=1e-7, adjoint=adjoint, activation="tanh",
                   seed=1).double()
        flow.log_prob(x).sum().backward()
        grads.append(torch.cat([p.grad.flatten() for p in flow.parameters()]))
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-5, atol=1e-4)
    assert grads[0].abs().max() > 1.0


def test_train_tol_applies_to_training_solves_only():
    x = torch.randn(30, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    tight = cnf(2, hidden=(8,), rtol=1e-8, atol=1e-8, seed=2).double()
    loose = cnf(2, hidden=(8,), rtol=1e-8, atol=1e-8, train_tol=1e-2, seed=2).double()
    loose.load_state_dict(tight.state_dict())
    counts = []
    for flow in (tight, loose):
        before = flow.transforms[-1].evaluations
        flow.log_prob(x).sum().backward()  # training: the module in train mode, with gradients
        counts.append(flow.transforms[-1].evaluations - before)
    assert counts[1] < counts[0]  # the looser training solve takes fewer steps
    with torch.no_grad():  # evaluation: the same tight solve for both
        torch.testing.assert_close(loose.log_prob(x), tight.log_prob(x), rtol=0, atol=1e-12)
    loose.eval()
    torch.testing.assert_close(loose.log_prob(x), tight.log_prob(x), rtol=0, atol=1e-12)
    assert loose.config["train_tol"] == 1e-2



@pytest.mark.parametrize("power, mean, below_half", [(1.0, 0.5, 0.5), (3.0, 0.75, 0.125)])
def test_flow_matching_draws_times_with_density_p_t_to_the_p_minus_1(power, mean, below_half):
    from densitylab.training.flow_matching import FlowMatching

    flow, times = cnf(2, hidden=(8,)), []
    flow.transforms[-1].field.register_forward_pre_hook(lambda _, args: times.append(args[0]))
    objective, n = FlowMatching(model=flow), 4000
    objective.time_power = power  # 1: uniform (the default); 3: density 3 t^2
    objective.point_losses(flow, torch.randn(1, n, 2))
    t = torch.cat(times).flatten()
    assert t.shape == (n,) and 0 <= t.min() and t.max() <= 1
    variance = power / (power + 2) - mean**2  # E t^2 - (E t)^2 for density p t^(p-1)
    assert abs(t.mean().item() - mean) < 4 * (variance / n) ** 0.5  # within 4 standard errors
    assert abs((t < 0.5).double().mean().item() - below_half) < 4 * (
        below_half * (1 - below_half) / n) ** 0.5


def test_optimal_pairs_are_a_least_cost_permutation_within_each_block():
    import itertools

    from densitylab.training import flow_matching

    generator = torch.Generator().manual_seed(0)
    x0, x1 = torch.randn(2, 12, 2, generator=generator), torch.randn(2, 12, 2, generator=generator)
    block = 6
    paired = flow_matching._paired(x0, x1, block)
    for k in range(2):
        for start in range(0, 12, block):
            rows = slice(start, start + block)
            # the same base draws, reordered within their block
            assert sorted(map(tuple, paired[k, rows].tolist())) == sorted(map(tuple,
                                                                             x0[k, rows].tolist()))
            best = min((x1[k, rows] - x0[k, rows][list(order)]).square().sum().item()
                       for order in itertools.permutations(range(block)))
            cost = (x1[k, rows] - paired[k, rows]).square().sum().item()
            assert cost == pytest.approx(best, rel=1e-9)
            assert cost < (x1[k, rows] - x0[k, rows]).square().sum().item()
