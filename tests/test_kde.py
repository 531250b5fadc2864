"""densitylab.KDE: agreement with scipy / scikit-learn / brute force, exactness, rules, sampling,
input errors, the figure and the ``densitylab kde`` command."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.linalg import solve_triangular
from scipy.special import logsumexp
from scipy.stats import gaussian_kde, multivariate_normal
from sklearn.base import clone
from sklearn.neighbors import KernelDensity

from densitylab.grids import make_grid
from densitylab.kde import BANDWIDTH_RULES, KDE, leave_one_out_log_likelihood

CENTRES = np.array([[0.0, 0.0], [0.0, 2.0], [2.0, 0.0], [2.0, 2.0]])


def mixture(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return CENTRES[rng.integers(0, 4, n)] + 0.5 * rng.standard_normal((n, 2))


def brute_log_density(x: np.ndarray, w: np.ndarray, h: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Direct sum over every kernel: log sum_i w_i N(q; x_i, H H^T), w normalised."""
    chol = np.linalg.cholesky(h @ h.T)
    diff = (q[:, None, :] - x[None, :, :]).reshape(-1, x.shape[1])
    z = solve_triangular(chol, diff.T, lower=True).T.reshape(len(q), len(x), -1)
    log_k = -0.5 * np.sum(z**2, axis=-1) - 0.5 * x.shape[1] * math.log(2 * math.pi)
    log_k -= np.sum(np.log(np.diag(chol)))
    return logsumexp(log_k + np.log(w / w.sum()), axis=1)


@pytest.fixture(scope="module")
def data() -> np.ndarray:
    return mixture(400)


@pytest.fixture(scope="module")
def queries(data: np.ndarray) -> np.ndarray:
    rng = np.random.default_rng(1)
    return np.vstack([data[:100] + 0.05 * rng.standard_normal((100, 2)), mixture(200, seed=2)])


# --------------------------------------------------------------------------------------------
# Agreement with other implementations
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("rule", ["scott", "silverman"])
@pytest.mark.parametrize("weighted", [False, True])
def test_rules_match_scipy(data, queries, rule, weighted):
    w = np.random.default_rng(3).uniform(0.2, 2.0, len(data)) if weighted else None
    ref = gaussian_kde(data.T, bw_method=rule, weights=w)
    kde = KDE(bandwidth=rule).fit(data, sample_weight=w)
    assert kde.factor_ == pytest.approx(ref.factor, rel=1e-14)
    np.testing.assert_allclose(kde.covariance_, ref.covariance, rtol=1e-13)
    np.testing.assert_allclose(kde.bandwidth_, ref.cho_cov, rtol=1e-13, atol=1e-15)
    # |log a - log b| <= 1e-10 is a relative difference of the densities below ~1e-10
    expected = ref.logpdf(queries.T)
    np.testing.assert_allclose(kde.score_samples(queries), expected, rtol=0, atol=1e-10)


def test_explicit_matrix_matches_scipy(data, queries):
    ref = gaussian_kde(data.T, bw_method=0.3)
    kde = KDE(bandwidth=ref.cho_cov).fit(data)  # H = factor * chol(cov), H H^T = scipy's cov
    np.testing.assert_allclose(kde.covariance_, ref.covariance, rtol=1e-14)
    density = np.exp(kde.score_samples(queries))
    np.testing.assert_allclose(density, ref.evaluate(queries.T), rtol=1e-10)


@pytest.mark.parametrize("h", [0.1, 0.3, 1.0])
def test_scalar_bandwidth_matches_sklearn(data, queries, h):
    ref = KernelDensity(kernel="gaussian", bandwidth=h).fit(data).score_samples(queries)
    ours = KDE(bandwidth=h).fit(data).score_samples(queries)
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-10)


def test_full_matrix_matches_sklearn_on_transformed_data(data, queries):
    h = np.array([[0.3, 0.0], [0.1, 0.2]])
    ref = KernelDensity(bandwidth=1.0).fit(data @ np.linalg.inv(h).T)
    expected = ref.score_samples(queries @ np.linalg.inv(h).T) - math.log(abs(np.linalg.det(h)))
    np.testing.assert_allclose(KDE(bandwidth=h).fit(data).score_samples(queries), expected,
                               rtol=0, atol=1e-10)


def test_pruned_sum_is_exact_for_small_bandwidths():
    """Well-separated clusters and a tiny bandwidth: most kernel blocks are skipped, and the
    result still equals the direct sum to rounding, near the data and far from it."""
    rng = np.random.default_rng(4)
    x = np.vstack([c * 10 + 0.3 * rng.standard_normal((500, 2)) for c in CENTRES])
    w = rng.uniform(0.0, 1.0, len(x))
    q = np.vstack([x[::20] + 0.01, rng.uniform(-20, 40, (200, 2))])
    for h in (np.diag([0.02, 0.05]), np.array([[0.05, 0.0], [0.03, 0.02]])):
        ours = KDE(bandwidth=h, chunk_size=5000).fit(x, sample_weight=w).score_samples(q)
        np.testing.assert_allclose(ours, brute_log_density(x, w, h, q), rtol=1e-13, atol=1e-11)


@settings(max_examples=25, deadline=None)
@given(
    d=st.integers(1, 4),
    n=st.integers(1, 60),
    m=st.integers(1, 40),
    seed=st.integers(0, 2**16),
    scale=st.floats(0.05, 3.0),
)
def test_any_shape_matches_brute_force(d, n, m, seed, scale):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)) * rng.uniform(0.5, 3, d)
    w = rng.uniform(0.1, 1.0, n)
    h = scale * (np.eye(d) + 0.3 * np.tril(rng.standard_normal((d, d)), -1))
    q = rng.standard_normal((m, d)) * 4
    ours = KDE(bandwidth=h).fit(x, sample_weight=w).score_samples(q)
    np.testing.assert_allclose(ours, brute_log_density(x, w, h, q), rtol=1e-12, atol=1e-11)


def test_compiled_exponential_is_accurate_to_about_one_ulp():
    from densitylab.kde.kernels import _exp

    x = np.concatenate([np.linspace(-708.0, 709.0, 20001), [0.0, -1e-300, 1e-300, 0.5, -0.5]])
    ours = np.array([_exp(v) for v in x])
    np.testing.assert_allclose(ours, np.exp(x), rtol=3.4e-16, atol=0)  # ~1.5 ulp, np.exp included
    assert _exp(-709.0) == 0.0 and _exp(-np.inf) == 0.0  # below the range: exactly nothing


@pytest.mark.parametrize("d", [1, 2, 3])
def test_compiled_sums_agree_with_log_sum_exp(d):
    from densitylab.kde.kernels import _expanded_sum, _leaf_sum

    rng = np.random.default_rng(11)
    u = rng.standard_normal((300, d)) * 3
    log_w = rng.uniform(-8.0, -5.0, len(u))
    a = rng.standard_normal(d)
    terms = log_w - 0.5 * np.sum((a - u) ** 2, axis=1)
    shift = logsumexp(terms) + 3.0
    u_t, buf = np.ascontiguousarray(u.T), np.empty(len(u))
    direct = _leaf_sum(u_t, log_w, 0, len(u), a, shift, -1, buf)
    c = log_w - 0.5 * np.sum(u * u, axis=1)
    expanded = _expanded_sum(u_t, c, 0, len(u), a, shift + 0.5 * a @ a, buf)
    np.testing.assert_allclose([direct, expanded], np.exp(logsumexp(terms) - shift), rtol=1e-13)
    left_out = _leaf_sum(u_t, log_w, 0, len(u), a, shift, 7, buf)  # leave-one-out: term 7
    np.testing.assert_allclose(left_out, np.exp(logsumexp(np.delete(terms, 7)) - shift),
                               rtol=1e-13)


# --------------------------------------------------------------------------------------------
# Exactness properties
# --------------------------------------------------------------------------------------------


def test_integrates_to_one(data):
    kde = KDE(bandwidth=(0.2, 0.15)).fit(data[:200])
    lo, hi = data[:200].min(0) - 2.0, data[:200].max(0) + 2.0  # > 10 bandwidths of margin
    grid = make_grid(((lo[0], hi[0]), (lo[1], hi[1])), 300)
    mass = kde.evaluate_grid(grid).sum() * grid.cell_area
    # the midpoint rule is spectrally accurate for Gaussians sampled at < h/2 spacing
    assert abs(mass - 1.0) < 1e-8


def test_weights_equal_repeated_points(data):
    counts = np.random.default_rng(5).integers(0, 4, 150)
    x = data[:150]
    repeated = np.repeat(x, counts, axis=0)
    q = mixture(50, seed=6)
    for h in (0.2, (0.3, 0.1), [[0.3, 0.0], [0.1, 0.2]]):
        weighted = KDE(bandwidth=h).fit(x, sample_weight=counts).score_samples(q)
        np.testing.assert_allclose(weighted, KDE(bandwidth=h).fit(repeated).score_samples(q),
                                   rtol=1e-12)


@pytest.mark.parametrize("h", [(0.1, 0.1), (0.3, 0.15), [[0.2, 0.0], [0.1, 0.3]]])
def test_grid_equals_pointwise(data, h):
    kde = KDE(bandwidth=h).fit(data)
    grid = make_grid(((-2.0, 4.0), (-1.5, 3.5)), 60)
    image = kde.evaluate_grid(grid)
    assert image.shape == grid.shape == (60, 60)
    pointwise = np.exp(kde.score_samples(grid.points)).reshape(grid.shape)
    np.testing.assert_allclose(image, pointwise, rtol=1e-12)
    np.testing.assert_allclose(kde.evaluate_grid(grid, log=True), np.log(pointwise), atol=1e-12)


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_grid_threads_share_the_chunks_exactly(data, threads):
    kde = KDE(bandwidth=(0.2, 0.3), chunk_size=4000, threads=threads).fit(data)  # 100-pt chunks
    grid = make_grid(((-2.0, 4.0), (-1.5, 3.5)), 40)
    image = kde.evaluate_grid(grid)
    pointwise = np.exp(kde.score_samples(grid.points)).reshape(grid.shape)
    np.testing.assert_allclose(image, pointwise, rtol=1e-12)


def test_grid_far_from_data_stays_exact(data):
    """Cells where the separable product underflows are recomputed in log space."""
    kde = KDE(bandwidth=(0.05, 0.05)).fit(data)
    grid = make_grid(((30.0, 40.0), (-40.0, -35.0)), 20)
    log_image = kde.evaluate_grid(grid, log=True)
    assert np.all(np.isfinite(log_image))
    np.testing.assert_allclose(log_image.ravel(), kde.score_samples(grid.points), rtol=1e-13)


def test_far_cluster_is_kept_when_its_bound_dwarfs_the_near_sum():
    # A query group between two clusters 188 widths apart: a leaf's bound can exceed the
    # query's near sum by hundreds of nats, past the compiled exponential's range. Found in
    # review: that leaf was once dropped, 724 nats off.
    rng = np.random.default_rng(0)
    x = np.concatenate([-90.3 - 0.01 * rng.random(64), 98 + 0.05 * rng.random(576)])[:, None]
    q = np.array([[0.0], [8.0]])
    expected = brute_log_density(x, np.ones(len(x)), np.eye(1), q)
    np.testing.assert_allclose(KDE(bandwidth=1.0).fit(x).score_samples(q), expected, rtol=1e-13)
    w = np.exp(rng.uniform(-700, np.log(100), len(x)))  # leave-one-out, weights over 300 decades
    loo = leave_one_out_log_likelihood(x, 1.0, sample_weight=w)
    terms = -0.5 * (x - x.T) ** 2 + np.log(w)[None, :] - 0.5 * np.log(2 * np.pi)
    np.fill_diagonal(terms, -np.inf)
    w_norm = w / w.sum()
    reference = np.dot(w_norm, logsumexp(terms, axis=1) - np.log(w.sum() - w))
    np.testing.assert_allclose(loo, reference, rtol=1e-12)


def test_far_point_is_finite_and_exact():
    h = np.array([[0.3, 0.0], [0.1, 0.2]])
    x1 = np.array([[1.0, 2.0]])
    pts = np.array([[1.0, 2.0], [1e3, -5e2], [50.0, 50.0], [-1e4, 3e4]])
    out = KDE(bandwidth=h).fit(x1).score_samples(pts)
    assert np.all(np.isfinite(out))
    np.testing.assert_allclose(out, multivariate_normal(x1[0], h @ h.T).logpdf(pts), rtol=1e-12)


def test_one_and_three_dimensions():
    rng = np.random.default_rng(7)
    x1 = rng.standard_normal(300)
    kde1 = KDE(bandwidth="scott").fit(x1[:, None])
    ref1 = gaussian_kde(x1)
    grid1 = np.linspace(-4, 4, 50)
    np.testing.assert_allclose(kde1.score_samples(grid1), ref1.logpdf(grid1), atol=1e-10)
    assert kde1.bandwidth_.shape == (1, 1)
    x3 = rng.standard_normal((300, 3)) @ np.array([[1, 0, 0], [0.5, 1, 0], [0, 0.3, 2]])
    kde3 = KDE(bandwidth="silverman").fit(x3)
    ref3 = gaussian_kde(x3.T, bw_method="silverman")
    q3 = rng.standard_normal((40, 3))
    np.testing.assert_allclose(kde3.score_samples(q3), ref3.logpdf(q3.T), atol=1e-10)
    assert kde3.sample(5, random_state=0).shape == (5, 3)


def test_chunking_does_not_change_results(data, queries):
    full = KDE(bandwidth=0.2).fit(data).score_samples(queries)
    chunked = KDE(bandwidth=0.2, chunk_size=64).fit(data).score_samples(queries)
    np.testing.assert_allclose(chunked, full, rtol=1e-13)


@pytest.mark.parametrize("chunk_size", [None, 97])  # one block / many row and column blocks
def test_device_path_matches_scipy_and_the_tree_path(data, queries, chunk_size):
    """The dense torch path (what runs on a GPU), exercised on the CPU."""
    far = np.array([[40.0, -30.0], [1e3, 1e3]])
    points = np.vstack([queries, far])
    dense = KDE(bandwidth="scott", chunk_size=chunk_size, device="cpu").fit(data)
    ours = dense.score_samples(points)
    assert np.all(np.isfinite(ours))
    np.testing.assert_allclose(ours, KDE(bandwidth="scott").fit(data).score_samples(points),
                               rtol=1e-12)
    np.testing.assert_allclose(ours[: len(queries)], gaussian_kde(data.T).logpdf(queries.T),
                               rtol=1e-10)
    grid = make_grid(((-1.5, 3.5), (-1.5, 3.5)), 30)
    np.testing.assert_allclose(dense.evaluate_grid(grid, log=True).ravel(),
                               dense.score_samples(grid.points), rtol=1e-12)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda_is_a_clear_error(data):
    with pytest.raises(ValueError, match="no CUDA device"):
        KDE(device="cuda").fit(data)


def test_score_is_sum_of_score_samples(data, queries):
    kde = KDE(bandwidth=0.3).fit(data)
    assert kde.score(queries) == pytest.approx(kde.score_samples(queries).sum(), rel=1e-14)


# --------------------------------------------------------------------------------------------
# Bandwidth selection
# --------------------------------------------------------------------------------------------


def test_rule_registry_lists_rules():
    assert set(BANDWIDTH_RULES) == {"scott", "silverman", "cv"}


def test_leave_one_out_matches_brute_force():
    rng = np.random.default_rng(8)
    x, w = rng.standard_normal((40, 2)), rng.uniform(0.1, 1.0, 40)
    h = np.array([[0.4, 0.0], [0.1, 0.3]])
    expected = 0.0
    for i in range(len(x)):
        others = np.arange(len(x)) != i
        log_f = brute_log_density(x[others], w[others], h, x[i : i + 1])[0]
        expected += w[i] / w.sum() * log_f
    assert leave_one_out_log_likelihood(x, h, sample_weight=w) == pytest.approx(expected, rel=1e-12)


def test_cv_picks_a_sensible_bandwidth():
    narrow = mixture(300, seed=10)
    wide = 3.0 * narrow
    kde = KDE(bandwidth="cv").fit(narrow)
    kde_wide = KDE(bandwidth="cv").fit(wide)
    assert np.all(np.diag(kde_wide.bandwidth_) > 2.5 * np.diag(kde.bandwidth_))
    np.testing.assert_allclose(kde_wide.covariance_, 9.0 * kde.covariance_, rtol=2e-2)
    assert kde.factor_ is None  # "cv" chooses the kernel's shape too, not only a factor
    chosen = leave_one_out_log_likelihood(narrow, kde.bandwidth_)
    for scale in (0.5, 2.0, 0.9, 1.1):
        assert chosen > leave_one_out_log_likelihood(narrow, scale * kde.bandwidth_)
    widths = np.sqrt(np.diag(kde.covariance_) / np.var(narrow, axis=0, ddof=1))
    assert np.all((0.02 < widths) & (widths < 1.0))


# --------------------------------------------------------------------------------------------
# Sampling
# --------------------------------------------------------------------------------------------


def test_samples_of_one_point_have_kernel_covariance():
    h = np.array([[0.3, 0.0], [0.2, 0.1]])
    kde = KDE(bandwidth=h).fit([[1.0, -2.0]])
    s = kde.sample(40_000, random_state=0)
    np.testing.assert_allclose(s.mean(0), [1.0, -2.0], atol=0.01)
    np.testing.assert_allclose(np.cov(s.T), h @ h.T, rtol=0.03, atol=1e-3)


def test_sampling_is_reproducible_and_weighted(data):
    kde = KDE(bandwidth=0.1).fit(data)
    np.testing.assert_array_equal(kde.sample(20, random_state=3), kde.sample(20, random_state=3))
    gen_a, gen_b = np.random.default_rng(3), np.random.default_rng(3)
    np.testing.assert_array_equal(kde.sample(5, gen_a), kde.sample(5, gen_b))
    assert not np.array_equal(kde.sample(20, random_state=3), kde.sample(20, random_state=4))
    one = KDE(bandwidth=1e-3).fit([[0.0, 0.0], [10.0, 10.0]], sample_weight=[0.0, 1.0])
    assert np.all(np.abs(one.sample(100, random_state=0) - 10.0) < 0.1)


# --------------------------------------------------------------------------------------------
# Input errors and the estimator contract
# --------------------------------------------------------------------------------------------


BAD_FITS = [
    ({"bandwidth": -0.1}, None, "must be positive"),
    ({"bandwidth": 0.0}, None, "must be positive"),
    ({"bandwidth": float("nan")}, None, "NaN"),
    ({"bandwidth": (0.1, -0.2)}, None, "per-axis values must all be positive"),
    ({"bandwidth": (0.1, 0.2, 0.3)}, None, "3 per-axis values for 2-D"),
    ({"bandwidth": [[1.0, 2.0], [2.0, 4.0]]}, None, "singular"),
    ({"bandwidth": np.eye(3)}, None, r"shape \(3, 3\), not \(2, 2\)"),
    ({"bandwidth": "scot"}, None, "'cv', 'scott', 'silverman'"),
    ({"bandwidth": True}, None, "boolean"),
    ({"bandwidth": "abc,1"}, None, "names no known rule"),
    ({"bandwidth": {"h": 1}}, None, "not numeric"),
    ({"bandwidth": 0.1, "chunk_size": 0}, None, "chunk_size"),
    ({"bandwidth": 0.1}, {"sample_weight": [1.0, -1.0, 1.0]}, "non-negative"),
    ({"bandwidth": 0.1}, {"sample_weight": [1.0, 1.0]}, r"shape \(3,\)"),
    ({"bandwidth": 0.1}, {"sample_weight": [0.0, 0.0, 0.0]}, "positive sum"),
    ({"bandwidth": 0.1}, {"sample_weight": [1.0, np.inf, 1.0]}, "NaN or infinite"),
    ({"bandwidth": "scott"}, {"sample_weight": [1.0, 0.0, 0.0]}, "at least 2 points"),
]


@pytest.mark.parametrize(("params", "fit_kwargs", "message"), BAD_FITS)
def test_bad_fit_inputs_raise_clear_errors(params, fit_kwargs, message):
    x = np.array([[0.0, 0.0], [1.0, 0.5], [0.3, 2.0]])
    with pytest.raises(ValueError, match=message):
        KDE(**params).fit(x, **(fit_kwargs or {}))


@pytest.mark.parametrize(
    ("x", "message"),
    [
        (np.array([[0.0, np.nan], [1.0, 1.0]]), "NaN or infinite"),
        (np.zeros((0, 2)), "at least 1 rows"),
        (np.zeros(5), r"shape \(n, dim\)"),
        ([["a", "b"]], "numeric"),
    ],
)
def test_bad_data_raises(x, message):
    with pytest.raises(ValueError, match=message):
        KDE(bandwidth=0.1).fit(x)


def test_rules_reject_degenerate_data():
    with pytest.raises(ValueError, match="at least 2 points"):
        KDE(bandwidth="scott").fit([[0.0, 1.0]])
    with pytest.raises(ValueError, match="covariance, which is singular"):
        KDE(bandwidth="silverman").fit([[0.0, 0.0], [1.0, 1.0], [2.0, 2.0]])


def test_bad_queries_and_sampling_arguments(data):
    kde = KDE(bandwidth=0.1).fit(data)
    with pytest.raises(ValueError, match="must have 2 columns, got 3"):
        kde.score_samples(np.zeros((4, 3)))
    with pytest.raises(ValueError, match="NaN or infinite"):
        kde.score_samples([[np.inf, 0.0]])
    with pytest.raises(ValueError, match="n_samples"):
        kde.sample(0)
    with pytest.raises(ValueError, match="random_state"):
        kde.sample(3, random_state="seed")
    with pytest.raises(ValueError, match="2-D data"):
        KDE(bandwidth=0.1).fit(np.zeros((3, 1)) + [[0], [1], [2]]).evaluate_grid(
            make_grid(((0, 1), (0, 1)), 4)
        )
    with pytest.raises(ValueError, match="not fitted"):
        KDE().score_samples(data)


def test_sklearn_contract(data):
    kde = KDE(bandwidth=(0.2, 0.1), chunk_size=1000)
    assert kde.get_params() == {"bandwidth": (0.2, 0.1), "chunk_size": 1000, "device": None,
                                "threads": None, "bounds": None, "guard": None}
    twin = clone(kde).set_params(bandwidth="silverman")
    assert twin.get_params()["bandwidth"] == "silverman"
    assert not hasattr(twin, "bandwidth_")
    kde.fit(data)
    assert kde.n_features_in_ == 2
    assert clone(kde).get_params() == kde.get_params()
    assert "bandwidth=(0.2, 0.1)" in repr(kde)


# --------------------------------------------------------------------------------------------
# Figure and command line
# --------------------------------------------------------------------------------------------


def test_density_panels_share_one_colour_scale(data):
    from densitylab.plots.kde import density_panels

    grid = make_grid(((-1.5, 3.5), (-1.5, 3.5)), 40)
    images = {f"h = {h}": KDE(bandwidth=h).fit(data).evaluate_grid(grid) for h in (0.1, 0.5, 1.0)}
    fig = density_panels(images, grid, "KDE", points=data, clip_quantile=None)
    shown = [ax for ax in fig.axes if ax.get_visible() and ax.images]
    assert len(shown) == 3
    vmax = max(image.max() for image in images.values())
    assert {ax.images[0].get_clim() for ax in shown} == {(0.0, vmax)}
    clipped = density_panels(images, grid, "KDE", clip_quantile=0.9)
    pixels = np.concatenate([image.ravel() for image in images.values()])
    tops = [ax.images[0].get_clim()[1] for ax in clipped.axes if ax.images]
    assert tops == pytest.approx([np.quantile(pixels, 0.9)] * 3)
    assert len(fig.axes) == 4  # three panels and one colorbar
    assert all(ax.get_title() for ax in shown) and shown[0].get_ylabel() == "$x_2$"
    with pytest.raises(ValueError, match="shape"):
        density_panels({"bad": np.zeros((3, 3))}, grid, "KDE")


def test_parse_bandwidth():
    from densitylab.cli.kde import parse_bandwidth

    assert parse_bandwidth("0.1") == 0.1
    assert parse_bandwidth("0.1,0.2") == (0.1, 0.2)
    assert parse_bandwidth(" CV ") == "cv"
    with pytest.raises(ValueError, match="cv, scott, silverman"):
        parse_bandwidth("wide")


@pytest.fixture(scope="module")
def have_datasets():
    datasets = pytest.importorskip("densitylab.datasets")
    if not hasattr(datasets, "resolve"):
        pytest.skip("densitylab.datasets.resolve is not available yet")
    return datasets


def test_cli_kde_on_builtin(tmp_path, have_datasets):
    from typer.testing import CliRunner

    from densitylab.cli import app

    name = "gmm" if "gmm" in have_datasets.names() else have_datasets.names()[0]
    out = tmp_path / "run"
    args = ["kde", name, "--bandwidth", "0.2,0.3", "--n", "300", "--resolution", "40"]
    result = CliRunner().invoke(app, [*args, "--out", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "metrics.json").read_text())
    assert report["bandwidth_matrix"] == [[0.2, 0.0], [0.0, 0.3]]
    for key in ("held_out_log_likelihood", "entropy"):
        assert math.isfinite(report[key])
    assert report["grid"]["kl"] > -0.05 and report["grid"]["ise"] >= 0
    assert json.loads((out / "config.json").read_text())["bandwidth"] == "0.2,0.3"
    assert (out / "figures" / "density.png").stat().st_size > 0
    on_device = CliRunner().invoke(app, [*args, "--device", "cpu", "--out", str(tmp_path / "d")])
    assert on_device.exit_code == 0, on_device.output
    dense = json.loads((tmp_path / "d" / "metrics.json").read_text())
    assert dense["held_out_log_likelihood"] == pytest.approx(report["held_out_log_likelihood"],
                                                             rel=1e-12)


def test_cli_kde_on_file_and_errors(tmp_path, have_datasets):
    from typer.testing import CliRunner

    from densitylab.cli import app

    path = tmp_path / "points.csv"
    np.savetxt(path, mixture(200), delimiter=",", header="x1,x2", comments="")
    out = tmp_path / "run"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        args = ["kde", str(path), "--bandwidth", "scott", "--out", str(out)]
        result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "metrics.json").read_text())
    assert math.isfinite(report["leave_one_out_log_likelihood"])
    assert (out / "figures" / "density.png").is_file()
    bad = tmp_path / "bad"
    for args in (["--bandwidth", "-0.1"], ["--bandwidth", "wide"], ["--resolution", "1"]):
        result = CliRunner().invoke(app, ["kde", str(path), *args, "--out", str(bad)])
        assert result.exit_code != 0
        assert isinstance(result.exception, ValueError)
        assert not bad.exists()  # nothing half-written


def test_grid_runs_on_one_thread_and_restores_the_callers_threads():
    import torch
    from threadpoolctl import threadpool_info

    from densitylab.grids import make_grid

    before = (torch.get_num_threads(), [p["num_threads"] for p in threadpool_info()])
    x = np.random.default_rng(0).normal(size=(500, 2))
    kde = KDE(bandwidth=[0.3, 0.2]).fit(x)
    grid = make_grid(((-3, 3), (-3, 3)), 20)
    np.testing.assert_allclose(kde.evaluate_grid(grid).ravel(),
                               np.exp(kde.score_samples(grid.points)), rtol=1e-12)
    assert (torch.get_num_threads(), [p["num_threads"] for p in threadpool_info()]) == before
