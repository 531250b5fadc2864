"""Every metric against an input whose answer is known in closed form or by construction."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest
from scipy import integrate, stats

from densitylab import metrics


def _normal_quantile_points(n: int, mean: float = 0.0, scale: float = 1.0) -> np.ndarray:
    """Deterministic ``(n, 1)`` 'sample' of N(mean, scale^2): its midpoint quantiles.

    Their empirical law converges to the normal at rate 1/n, much faster than random draws, so
    sample-based estimators can be checked against closed forms to tight tolerances.
    """
    return (mean + scale * stats.norm.ppf((np.arange(n) + 0.5) / n))[:, None]


def _expected_abs_normal(mean: float, var: float) -> float:
    """E|W| for W ~ N(mean, var) (folded normal mean)."""
    sd = math.sqrt(var)
    return sd * math.sqrt(2 / math.pi) * math.exp(-(mean**2) / (2 * var)) + mean * (
        1 - 2 * stats.norm.cdf(-mean / sd)
    )


def _energy_1d_normals(shift: float) -> float:
    """Population energy distance between N(0, 1) and N(shift, 1): X - Y ~ N(-shift, 2)."""
    return 2 * _expected_abs_normal(shift, 2.0) - 2 * _expected_abs_normal(0.0, 2.0)


def _mmd_normals(shift_norm: float, scale: float, h: float, dim: int) -> float:
    """Population MMD^2, Gaussian kernel of bandwidth h, between N(0, s^2 I) and N(d, s^2 I).

    E exp(-|W|^2 / (2 h^2)) for W ~ N(m, v I) in dim dimensions is
    (h^2 / (h^2 + v))^(dim/2) exp(-|m|^2 / (2 (h^2 + v))); here v = 2 s^2.
    """
    v = 2 * scale**2
    factor = (h**2 / (h**2 + v)) ** (dim / 2)
    return 2 * factor * (1 - math.exp(-(shift_norm**2) / (2 * (h**2 + v))))


def _gauss(mean: np.ndarray, cov: np.ndarray) -> Any:
    return stats.multivariate_normal(mean=mean, cov=cov)


# --------------------------------------------------------------------------------------------
# NLL and entropy gap
# --------------------------------------------------------------------------------------------


def test_nll_of_true_model_matches_entropy() -> None:
    dim, n = 3, 20000
    z = np.random.default_rng(0).normal(size=(n, dim))
    log_p = _gauss(np.zeros(dim), np.eye(dim)).logpdf(z)
    entropy = 0.5 * dim * math.log(2 * math.pi * math.e)
    value, err = metrics.nll_with_error(log_p)
    assert value == pytest.approx(metrics.nll(log_p))
    # -log p = const + |z|^2 / 2 has variance dim / 2.
    assert err == pytest.approx(math.sqrt(dim / 2 / n), rel=0.05)
    assert abs(metrics.entropy_gap(value, entropy)) < 4 * err


def test_nll_simple_values_and_gap_sign() -> None:
    assert metrics.nll([-1.0, -2.0, -3.0]) == pytest.approx(2.0)
    mean, err = metrics.nll_with_error([-1.0, -3.0])
    assert (mean, err) == pytest.approx((2.0, 1.0))
    assert metrics.entropy_gap(2.5, 2.0) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="finite"):
        metrics.entropy_gap(float("nan"), 1.0)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ([-1.0, -np.inf, -2.0], "zero density"),
        ([], "at least 1"),
        ([-1.0, np.nan], "NaN"),
        ([[1.0, 2.0], [3.0, 4.0]], "1-D"),
        (["a"], "numeric"),
    ],
)
def test_nll_rejects_bad_input(values: list, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        metrics.nll(values)


def test_nll_with_error_needs_two_values() -> None:
    with pytest.raises(ValueError, match="at least 2"):
        metrics.nll_with_error([-1.0])


# --------------------------------------------------------------------------------------------
# Grid divergences
# --------------------------------------------------------------------------------------------


def test_grid_kl_and_ise_match_closed_forms_for_gaussians() -> None:
    mu_p, cov_p = np.array([0.0, 0.0]), np.array([[1.0, 0.3], [0.3, 0.8]])
    mu_q, cov_q = np.array([0.5, -0.3]), np.array([[1.5, -0.2], [-0.2, 1.2]])
    p, q = _gauss(mu_p, cov_p), _gauss(mu_q, cov_q)
    inv_q = np.linalg.inv(cov_q)
    diff = mu_q - mu_p
    kl = 0.5 * (
        np.trace(inv_q @ cov_p)
        + diff @ inv_q @ diff
        - 2
        + math.log(np.linalg.det(cov_q) / np.linalg.det(cov_p))
    )
    # int (p - q)^2 = int p^2 + int q^2 - 2 int pq, with int N(a, A) N(b, B) = N(a; b, A + B).
    ise = (
        _gauss(mu_p, 2 * cov_p).pdf(mu_p)
        + _gauss(mu_q, 2 * cov_q).pdf(mu_q)
        - 2 * _gauss(mu_q, cov_p + cov_q).pdf(mu_p)
    )
    out = metrics.grid_divergences(p.logpdf, q.logpdf, ((-9.0, 9.0), (-9.0, 9.0)), 300)
    assert out["kl"] == pytest.approx(kl, abs=1e-4)
    assert out["ise"] == pytest.approx(ise, abs=1e-6)
    assert out["true_mass"] == pytest.approx(1.0, abs=1e-6)
    assert out["model_mass"] == pytest.approx(1.0, abs=1e-6)
    assert 0.0 < out["tv"] < 1.0


def test_grid_identical_densities_are_zero_apart() -> None:
    p = _gauss(np.zeros(2), np.eye(2))
    out = metrics.grid_divergences(p.logpdf, p.logpdf, ((-6.0, 6.0), (-6.0, 6.0)), 50)
    assert out["kl"] == 0.0
    assert out["tv"] == 0.0
    assert out["ise"] == 0.0


def test_grid_tv_matches_closed_form_for_shifted_gaussians() -> None:
    # Equal covariances: TV = 2 Phi(delta / 2) - 1 with delta the Mahalanobis shift.
    p, q = _gauss(np.zeros(2), np.eye(2)), _gauss(np.array([0.9, -1.2]), np.eye(2))
    out = metrics.grid_divergences(p.logpdf, q.logpdf, ((-8.0, 9.0), (-9.0, 8.0)), 400)
    assert out["tv"] == pytest.approx(2 * stats.norm.cdf(1.5 / 2) - 1, abs=1e-4)
    assert out["kl"] == pytest.approx(1.5**2 / 2, abs=1e-4)


def test_grid_tv_of_disjoint_uniforms_is_one() -> None:
    def left(pts: np.ndarray) -> np.ndarray:  # uniform on [0, 1] x [0, 1]
        inside = (pts[:, 0] > 0) & (pts[:, 0] < 1) & (pts[:, 1] > 0) & (pts[:, 1] < 1)
        return np.where(inside, 0.0, -np.inf)

    def right(pts: np.ndarray) -> np.ndarray:  # uniform on [1, 2] x [0, 1]
        return left(pts - np.array([1.0, 0.0]))

    out = metrics.grid_divergences(left, right, ((0.0, 2.0), (0.0, 1.0)), 100)
    assert out["tv"] == pytest.approx(1.0)
    assert out["ise"] == pytest.approx(2.0)
    # The model has zero density on the truth's support: KL is finite, set by the log floor.
    assert out["kl"] == pytest.approx(-metrics.LOG_DENSITY_FLOOR)
    assert all(np.isfinite(v) for v in out.values())


def test_grid_reports_truncated_mass_and_renormalizes() -> None:
    p = _gauss(np.zeros(2), np.eye(2))
    half = ((0.0, 8.0), (-8.0, 8.0))  # right half-plane: half the mass
    out = metrics.grid_divergences(p.logpdf, p.logpdf, half, 200)
    assert out["true_mass"] == pytest.approx(0.5, abs=1e-4)
    shifted = _gauss(np.array([1.0, 0.0]), np.eye(2))
    raw = metrics.grid_divergences(p.logpdf, shifted.logpdf, half, 200)
    norm = metrics.grid_divergences(p.logpdf, shifted.logpdf, half, 200, renormalize=True)
    assert raw["model_mass"] == pytest.approx(stats.norm.cdf(1.0), abs=1e-4)
    assert norm["true_mass"] == raw["true_mass"]  # masses reported before rescaling
    # Truncated N(0,1) vs truncated N(1,1) on x > 0 (y cancels), by 1-D quadrature.
    xs = np.linspace(0.0, 8.0, 200001)
    pt = stats.norm.pdf(xs) / 0.5
    qt = stats.norm.pdf(xs, 1.0) / stats.norm.cdf(1.0)
    assert norm["kl"] == pytest.approx(integrate.trapezoid(pt * np.log(pt / qt), xs), abs=1e-4)


def test_grid_underflowing_model_gives_large_finite_kl() -> None:
    p = _gauss(np.zeros(2), np.eye(2))
    far = _gauss(np.array([60.0, 0.0]), 0.01 * np.eye(2))  # log q ~ -1e5 on p's support
    out = metrics.grid_divergences(p.logpdf, far.logpdf, ((-6.0, 6.0), (-6.0, 6.0)), 60)
    assert math.isfinite(out["kl"])
    assert out["kl"] > 600


def test_grid_rejects_bad_callables() -> None:
    p = _gauss(np.zeros(2), np.eye(2))
    box = ((-1.0, 1.0), (-1.0, 1.0))
    with pytest.raises(ValueError, match="NaN"):
        metrics.grid_divergences(p.logpdf, lambda pts: np.full(len(pts), np.nan), box, 10)
    with pytest.raises(ValueError, match="one log-density per point"):
        metrics.grid_divergences(p.logpdf, lambda pts: np.zeros(3), box, 10)
    with pytest.raises(ValueError, match="resolution"):
        metrics.grid_divergences(p.logpdf, p.logpdf, box, 1)


# --------------------------------------------------------------------------------------------
# Latent normality
# --------------------------------------------------------------------------------------------


def test_latent_normality_of_standard_normal() -> None:
    z = np.random.default_rng(1).normal(size=(5000, 2))
    out = metrics.latent_normality(z)
    json.dumps(out)  # plain Python types only
    assert out["max_abs_mean"] < 4 / math.sqrt(5000)
    assert out["max_abs_cov_minus_identity"] < 0.08
    assert np.allclose(out["cov"], np.cov(z, rowvar=False))
    for key in ("ks_pvalue", "mardia_skewness_pvalue", "mardia_kurtosis_pvalue"):
        assert out[key] > 1e-3, key


def test_latent_normality_pvalues_are_calibrated_under_the_null() -> None:
    # Under N(0, I) p-values are uniform: about 5% fall below 0.05.
    pvals = np.array(
        [
            [
                out["ks_pvalue"],
                out["mardia_skewness_pvalue"],
                out["mardia_kurtosis_pvalue"],
            ]
            for seed in range(40)
            for out in [
                metrics.latent_normality(np.random.default_rng(seed).normal(size=(2000, 3)))
            ]
        ]
    )
    rejected = (pvals < 0.05).mean(axis=0)
    assert np.all(rejected <= 0.15), rejected
    assert np.all(pvals.mean(axis=0) > 0.35), pvals.mean(axis=0)


def test_latent_normality_flags_non_normal_samples() -> None:
    rng = np.random.default_rng(2)
    # Uniform with unit variance: right mean and covariance, wrong shape.
    uniform = metrics.latent_normality(rng.uniform(-math.sqrt(3), math.sqrt(3), size=(5000, 2)))
    assert uniform["ks_pvalue"] < 1e-6
    assert uniform["mardia_kurtosis_pvalue"] < 1e-6
    assert uniform["mardia_kurtosis"] < 8.0  # platykurtic: below dim (dim + 2) = 8
    # Skewed (centred exponential): Mardia skewness notices.
    skewed = metrics.latent_normality(rng.exponential(size=(3000, 2)) - 1.0)
    assert skewed["mardia_skewness_pvalue"] < 1e-6
    # Shifted normal: the norm test and the summaries notice; Mardia (affine invariant) does not.
    shifted = metrics.latent_normality(rng.normal(size=(5000, 2)) + 1.0)
    assert shifted["ks_pvalue"] < 1e-6
    assert shifted["max_abs_mean"] == pytest.approx(1.0, abs=0.1)
    assert shifted["mardia_skewness_pvalue"] > 1e-3


def test_mardia_statistics_match_pairwise_definition() -> None:
    z = np.random.default_rng(3).gamma(2.0, size=(200, 3))
    centred = z - z.mean(axis=0)
    s_inv = np.linalg.inv(centred.T @ centred / len(z))
    g = centred @ s_inv @ centred.T
    out = metrics.latent_normality(z)
    assert out["mardia_skewness"] == pytest.approx(np.mean(g**3), rel=1e-10)
    assert out["mardia_kurtosis"] == pytest.approx(np.mean(np.diag(g) ** 2), rel=1e-10)


def test_latent_normality_rejects_degenerate_input() -> None:
    with pytest.raises(ValueError, match="singular"):
        metrics.latent_normality(np.column_stack([np.arange(10.0), np.ones(10)]))
    with pytest.raises(ValueError, match="rows"):
        metrics.latent_normality(np.zeros((3, 2)))


# --------------------------------------------------------------------------------------------
# Energy distance and MMD
# --------------------------------------------------------------------------------------------


def test_identical_samples_are_near_zero_apart() -> None:
    x = np.random.default_rng(4).normal(size=(1000, 2))
    ed, sq_mmd = metrics.energy_distance(x, x), metrics.mmd(x, x)
    # U-statistics: for y = x, energy = -2 mean_{i != j} |x_i - x_j| / n exactly.
    pair_mean = np.mean(np.linalg.norm(x[:, None] - x[None], axis=-1)) * 1000 / 999
    assert ed == pytest.approx(-2 * pair_mean / 1000, rel=1e-9)
    assert abs(ed) < 5e-3
    assert abs(sq_mmd) < 2e-3


def test_energy_distance_matches_closed_form_1d() -> None:
    shift = 1.0
    x, y = _normal_quantile_points(3000), _normal_quantile_points(3000, mean=shift)
    assert metrics.energy_distance(x, y) == pytest.approx(_energy_1d_normals(shift), abs=2e-3)
    # Random draws: unbiased, so the mean over seeds sits on the closed form.
    rng = np.random.default_rng(5)
    draws = [
        metrics.energy_distance(rng.normal(size=(800, 1)), rng.normal(shift, size=(800, 1)))
        for _ in range(8)
    ]
    se = np.std(draws, ddof=1) / math.sqrt(len(draws))
    assert abs(np.mean(draws) - _energy_1d_normals(shift)) < 4 * se + 1e-3


def test_mmd_matches_closed_form_for_shifted_gaussians() -> None:
    # A product of 1-D quantile points is a low-discrepancy stand-in for N(0, s^2 I_2).
    s, h = 0.8, 1.0
    grid1d = _normal_quantile_points(60, scale=s)[:, 0]
    x = np.array(np.meshgrid(grid1d, grid1d)).reshape(2, -1).T
    shift = np.array([0.6, 0.8])
    y = x + shift
    expected = _mmd_normals(float(np.linalg.norm(shift)), s, h, dim=2)
    assert metrics.mmd(x, y, bandwidth=h) == pytest.approx(expected, abs=5e-4)


def test_energy_and_mmd_agree_with_brute_force_and_are_chunk_invariant(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rng = np.random.default_rng(6)
    x, y = rng.normal(size=(70, 3)), rng.normal(0.5, size=(50, 3))
    dxy = np.linalg.norm(x[:, None] - y[None], axis=-1)
    dxx = np.linalg.norm(x[:, None] - x[None], axis=-1)
    dyy = np.linalg.norm(y[:, None] - y[None], axis=-1)
    ed = 2 * dxy.mean() - dxx.sum() / (70 * 69) - dyy.sum() / (50 * 49)
    k = lambda d: np.exp(-(d**2) / (2 * 1.3**2))  # noqa: E731
    sq_mmd = (k(dxx).sum() - 70) / (70 * 69) + (k(dyy).sum() - 50) / (50 * 49) - 2 * k(dxy).mean()
    assert metrics.energy_distance(x, y) == pytest.approx(ed, rel=1e-10)
    assert metrics.mmd(x, y, bandwidth=1.3) == pytest.approx(sq_mmd, rel=1e-10)
    pooled = np.concatenate([x, y])
    median = np.median(
        np.linalg.norm(pooled[:, None] - pooled[None], axis=-1)[np.triu_indices(120, 1)]
    )
    assert metrics.mmd(x, y) == pytest.approx(metrics.mmd(x, y, bandwidth=float(median)))
    monkeypatch.setattr(metrics, "_CHUNK_ENTRIES", 7)  # blocks of a few rows
    assert metrics.energy_distance(x, y) == pytest.approx(ed, rel=1e-10)
    assert metrics.mmd(x, y, bandwidth=1.3) == pytest.approx(sq_mmd, rel=1e-10)


def test_subsampling_is_seeded() -> None:
    rng = np.random.default_rng(7)
    x, y = rng.normal(size=(400, 2)), rng.normal(size=(300, 2))
    a = metrics.energy_distance(x, y, max_points=100, seed=1)
    assert a == metrics.energy_distance(x, y, max_points=100, seed=1)
    assert a != metrics.energy_distance(x, y, max_points=100, seed=2)
    assert metrics.mmd(x, y, max_points=100, seed=3) == metrics.mmd(x, y, max_points=100, seed=3)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"y": np.zeros((5, 3))}, "3 columns|2 columns"),
        ({"y": np.array([[0.0, np.nan]] * 5)}, "NaN"),
        ({"y": np.zeros((1, 2))}, "at least 2 rows"),
        ({"bandwidth": -1.0}, "bandwidth"),
        ({"bandwidth": "scott"}, "'median'"),
    ],
)
def test_distances_reject_bad_input(kwargs: dict, message: str) -> None:
    x = np.random.default_rng(8).normal(size=(10, 2))
    y = kwargs.pop("y", x + 1.0)
    with pytest.raises(ValueError, match=message):
        metrics.mmd(x, y, **kwargs)


# --------------------------------------------------------------------------------------------
# Two-sample test
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("statistic", ["energy", "mmd"])
def test_two_sample_test_detects_shift_and_not_noise(statistic: str) -> None:
    rng = np.random.default_rng(9)
    x, y_same = rng.normal(size=(300, 2)), rng.normal(size=(250, 2))
    y_shift = rng.normal(size=(250, 2)) + np.array([0.5, 0.0])
    same = metrics.two_sample_test(x, y_same, statistic=statistic, seed=0)
    shift = metrics.two_sample_test(x, y_shift, statistic=statistic, seed=0)
    json.dumps(same)
    assert same["p_value"] > 0.05
    assert shift["p_value"] < 0.01
    assert shift["p_value"] >= 1 / 201  # never below the permutation resolution
    assert same == metrics.two_sample_test(x, y_same, statistic=statistic, seed=0)


def test_two_sample_test_statistic_equals_the_metric() -> None:
    rng = np.random.default_rng(10)
    x, y = rng.normal(size=(120, 2)), rng.normal(0.3, size=(90, 2))
    energy = metrics.two_sample_test(x, y, n_permutations=10)
    assert energy["value"] == pytest.approx(metrics.energy_distance(x, y), rel=1e-9)
    kernel = metrics.two_sample_test(x, y, statistic="mmd", n_permutations=10)
    assert kernel["value"] == pytest.approx(metrics.mmd(x, y), rel=1e-9)
    with pytest.raises(ValueError, match="energy"):
        metrics.two_sample_test(x, y, statistic="ks")


def test_two_sample_test_pvalues_are_calibrated_under_the_null() -> None:
    pvals = []
    for seed in range(30):
        rng = np.random.default_rng(100 + seed)
        x, y = rng.normal(size=(60, 2)), rng.normal(size=(40, 2))
        pvals.append(metrics.two_sample_test(x, y, n_permutations=99, seed=seed)["p_value"])
    pvals = np.array(pvals)
    assert (pvals < 0.05).mean() <= 0.2
    assert 0.3 < pvals.mean() < 0.7


# --------------------------------------------------------------------------------------------
# Sample quality and mode coverage
# --------------------------------------------------------------------------------------------


def test_sample_quality_on_true_and_smeared_samplers() -> None:
    dim = 2
    truth = _gauss(np.zeros(dim), np.eye(dim))
    rng = np.random.default_rng(11)
    reference = rng.normal(size=(4000, dim))
    good = metrics.sample_quality(rng.normal(size=(4000, dim)), reference, truth.logpdf, 0.05)
    json.dumps(good)
    entropy = 0.5 * dim * math.log(2 * math.pi * math.e)
    assert good["mean_true_log_prob"] == pytest.approx(-entropy, abs=0.05)
    assert good["low_density_fraction"] == pytest.approx(0.05, abs=0.015)
    # |z|^2 ~ chi^2(2): the 5% log-density quantile is at |z|^2 = chi2.ppf(0.95, 2).
    expected_threshold = -math.log(2 * math.pi) - 0.5 * stats.chi2.ppf(0.95, 2)
    assert good["low_density_threshold"] == pytest.approx(expected_threshold, abs=0.1)
    assert good["zero_density_fraction"] == 0.0
    assert abs(good["energy_distance"]) < 0.01
    # Twice the spread: P(|z|^2 > chi2.ppf(0.95, 2)) = exp(-q / 8) under N(0, 4 I).
    wide = metrics.sample_quality(2 * rng.normal(size=(4000, dim)), reference, truth.logpdf, 0.05)
    assert wide["low_density_fraction"] == pytest.approx(
        math.exp(-stats.chi2.ppf(0.95, 2) / 8), abs=0.03
    )
    assert wide["energy_distance"] > 0.1
    assert wide["mmd"] > good["mmd"] + 0.01
    assert set(metrics.sample_quality(reference[:50], reference[50:100])) == {
        "energy_distance",
        "mmd",
        "precision",
        "recall",
    }
    assert good["recall"] > 0.9 and wide["precision"] < good["precision"] - 0.1


def test_sample_quality_counts_zero_density_samples() -> None:
    def unit_square(pts: np.ndarray) -> np.ndarray:
        inside = np.all((pts > 0) & (pts < 1), axis=1)
        return np.where(inside, 0.0, -np.inf)

    rng = np.random.default_rng(12)
    reference = rng.uniform(size=(500, 2))
    samples = np.concatenate([rng.uniform(size=(300, 2)), rng.uniform(2, 3, size=(100, 2))])
    out = metrics.sample_quality(samples, reference, unit_square)
    assert out["zero_density_fraction"] == pytest.approx(0.25)
    assert out["low_density_fraction"] == pytest.approx(0.25)
    assert out["mean_true_log_prob"] == pytest.approx(0.25 * metrics.LOG_DENSITY_FLOOR)
    with pytest.raises(ValueError, match="low_density_quantile"):
        metrics.sample_quality(samples, reference, unit_square, low_density_quantile=1.5)


def test_mode_coverage_three_of_four_modes() -> None:
    centres = np.array([[0.0, 0.0], [4.0, 0.0], [0.0, 4.0], [4.0, 4.0]])
    rng = np.random.default_rng(13)
    near = np.concatenate([c + 0.1 * rng.normal(size=(30, 2)) for c in centres[:3]])
    outliers = np.tile([[2.0, 2.0]], (10, 1))  # 10 of 100 samples far from every mode
    out = metrics.mode_coverage(np.concatenate([near, outliers]), centres, radius=1.0)
    json.dumps(out)
    assert out["coverage"] == 0.75
    assert out["n_covered"] == 3
    assert out["n_modes"] == 4
    assert out["precision"] == pytest.approx(0.9)
    assert out["counts"] == [30, 30, 30, 0]
    assert out["covered"] == [True, True, True, False]
    strict = metrics.mode_coverage(near[:35], centres, radius=1.0, min_count=10)
    assert strict["counts"] == [30, 5, 0, 0]
    assert strict["coverage"] == 0.25
    with pytest.raises(ValueError, match="radius"):
        metrics.mode_coverage(near, centres, radius=0.0)
    with pytest.raises(ValueError, match="columns"):
        metrics.mode_coverage(near, centres[:, :1], radius=1.0)
