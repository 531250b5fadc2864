"""Honest evaluation of density models: NumPy arrays in, plain Python floats out.

Everything here is model-agnostic. Functions take arrays of points ``(n, dim)``, arrays of
log-densities ``(n,)``, or callables ``log_prob(points) -> log_densities`` (nats), so a KDE, a
flow, a VAE or a closed-form toy distribution are all scored the same way.

Three families of numbers:

- likelihood: :func:`nll`, :func:`nll_with_error`, :func:`entropy_gap` (how far the test NLL is
  above the lowest achievable value, the true entropy);
- densities on a grid (2-D, where the truth is known): :func:`grid_divergences` (KL, total
  variation, integrated squared error, plus the mass each density puts inside the box);
- samples: :func:`energy_distance`, :func:`mmd`, :func:`two_sample_test`,
  :func:`sample_quality`, :func:`mode_coverage`, :func:`support_precision_recall` (which
  sees the support and the modes a sampler misses, where a distance averages them away),
  and :func:`latent_normality` for the latent codes of a flow (they should look like draws
  from ``N(0, I)``).

Example:
    >>> import numpy as np
    >>> from densitylab import metrics
    >>> rng = np.random.default_rng(0)
    >>> x, y = rng.normal(size=(500, 2)), rng.normal(size=(500, 2))
    >>> metrics.two_sample_test(x, y, seed=0)["p_value"] > 0.01
    True
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats
from scipy.spatial.distance import cdist

from densitylab._validation import as_points, check_positive_int
from densitylab.grids import Bounds, make_grid

LogProb = Callable[[np.ndarray], np.ndarray]
_Gram = tuple[np.ndarray, float, dict[str, float]]

#: Floor applied to model log-densities before they enter a logarithmic ratio. ``exp(-700)`` is
#: about ``1e-304``, still a normal float64, so a model that underflows to zero density where the
#: truth has mass gets a finite but very large KL instead of ``inf`` or ``nan``.
LOG_DENSITY_FLOOR = -700.0

#: Pairwise computations work on row blocks holding at most this many distances (32 MiB).
_CHUNK_ENTRIES = 1 << 22

#: The median heuristic looks at the pairwise distances of at most this many pooled points.
_MEDIAN_MAX_POINTS = 1000

#: Points evaluated per call when a log-density callable is applied to a grid.
_EVAL_CHUNK = 1 << 16

__all__ = [
    "LOG_DENSITY_FLOOR",
    "energy_distance",
    "entropy_gap",
    "grid_divergences",
    "latent_normality",
    "mmd",
    "mode_coverage",
    "nll",
    "nll_with_error",
    "sample_quality",
    "support_precision_recall",
    "two_sample_test",
]


# --------------------------------------------------------------------------------------------
# Likelihood
# --------------------------------------------------------------------------------------------


def _as_log_probs(
    values: ArrayLike, name: str = "log_prob_values", min_size: int = 1
) -> np.ndarray:
    """Return finite log-densities as a float64 vector, or raise a ``ValueError`` saying why."""
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be numeric, got {type(values).__name__}") from err
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of log-densities, got shape {arr.shape}")
    if arr.size < min_size:
        raise ValueError(f"{name} needs at least {min_size} values, got {arr.size}")
    if np.any(np.isnan(arr)):
        first = int(np.flatnonzero(np.isnan(arr))[0])
        raise ValueError(f"{name} contains NaN (first at index {first})")
    if np.any(arr == -np.inf):
        bad = np.flatnonzero(arr == -np.inf)
        raise ValueError(
            f"{name} contains -inf at {bad.size} point(s) (first at index {int(bad[0])}): the "
            "model gives zero density to those test points, so the NLL is infinite"
        )
    if np.any(arr == np.inf):
        first = int(np.flatnonzero(arr == np.inf)[0])
        raise ValueError(
            f"{name} contains +inf (first at index {first}): the density is degenerate"
        )
    return arr


def nll(log_prob_values: ArrayLike) -> float:
    """Mean negative log-likelihood, in nats per point.

    Args:
        log_prob_values: log-densities ``(n,)`` of held-out points under the model.

    Raises:
        ValueError: on empty input, NaN, or ``-inf`` (the model gives a test point zero density).

    Example:
        >>> nll([-1.0, -3.0])
        2.0
    """
    return float(-np.mean(_as_log_probs(log_prob_values)))


def nll_with_error(log_prob_values: ArrayLike) -> tuple[float, float]:
    """Mean NLL and its standard error ``std(ddof=1) / sqrt(n)``, both in nats per point.

    The standard error says how much of a difference between two models is sampling noise of
    the test set (for paired comparisons on one test set, difference the log-densities first).

    Raises:
        ValueError: as :func:`nll`, and with fewer than two values (no spread to estimate).
    """
    arr = _as_log_probs(log_prob_values, min_size=2)
    return float(-np.mean(arr)), float(np.std(arr, ddof=1) / math.sqrt(arr.size))


def entropy_gap(test_nll: float, entropy: float) -> float:
    """Test NLL minus the true entropy (nats): the excess over the best achievable value.

    The expected NLL of any model ``q`` under data from ``p`` is ``H(p) + KL(p || q)``, so the
    gap estimates ``KL(p || q)``: zero for a perfect model, positive otherwise, up to the
    sampling noise of the test set (see :func:`nll_with_error`), which can push it below zero.
    """
    test_nll, entropy = float(test_nll), float(entropy)
    if not (math.isfinite(test_nll) and math.isfinite(entropy)):
        raise ValueError(f"test_nll and entropy must be finite, got {test_nll} and {entropy}")
    return test_nll - entropy


# --------------------------------------------------------------------------------------------
# Densities on a grid
# --------------------------------------------------------------------------------------------


def _evaluate_on(log_prob: LogProb, points: np.ndarray, name: str) -> np.ndarray:
    """Call ``log_prob`` on ``points`` in chunks and check what comes back."""
    parts = []
    for start in range(0, len(points), _EVAL_CHUNK):
        chunk = points[start : start + _EVAL_CHUNK]
        out = np.asarray(log_prob(chunk), dtype=np.float64).reshape(-1)
        if out.shape != (len(chunk),):
            raise ValueError(
                f"{name} must return one log-density per point: got {out.size} values "
                f"for {len(chunk)} points"
            )
        parts.append(out)
    values = np.concatenate(parts)
    if np.any(np.isnan(values)):
        raise ValueError(f"{name} returned NaN at {int(np.isnan(values).sum())} point(s)")
    if np.any(values == np.inf):
        raise ValueError(f"{name} returned +inf at {int((values == np.inf).sum())} point(s)")
    return values


def grid_divergences(
    true_log_prob: LogProb,
    model_log_prob: LogProb,
    bounds: Bounds,
    resolution: int = 200,
    renormalize: bool = False,
) -> dict[str, float]:
    """KL, total variation and integrated squared error between two 2-D densities on a box.

    Both callables are evaluated at the cell centres of ``make_grid(bounds, resolution)`` and
    the integrals use the midpoint rule (sum times cell area). Cells where the true density is
    zero contribute nothing to KL (``0 log 0 = 0``); model log-densities are clipped below at
    :data:`LOG_DENSITY_FLOOR`, so a model that underflows where the truth has mass gets a
    finite but very large KL.

    Mass outside the box is ignored, so the integrals are those of the densities restricted to
    the box; ``true_mass`` and ``model_mass`` report how much each puts inside, which shows when
    the box truncates a density (then ``kl`` can even be slightly negative). With
    ``renormalize=True`` both densities are first rescaled to integrate to one over the box.

    Args:
        true_log_prob: log-density of the reference ``p``, ``(n, 2) -> (n,)``; ``-inf`` allowed.
        model_log_prob: log-density of the model ``q``, same contract.
        bounds: ``((xmin, xmax), (ymin, ymax))``.
        resolution: cells per axis.
        renormalize: rescale both densities to unit mass on the box before comparing.

    Returns:
        ``{"kl": KL(p || q), "tv": 0.5 * int |p - q|, "ise": int (p - q)^2, "true_mass",
        "model_mass"}`` as floats.
    """
    resolution = check_positive_int(resolution, "resolution", minimum=2)
    grid = make_grid(bounds, resolution)
    points = grid.points
    log_p = _evaluate_on(true_log_prob, points, "true_log_prob")
    log_q = np.maximum(_evaluate_on(model_log_prob, points, "model_log_prob"), LOG_DENSITY_FLOOR)
    area = grid.cell_area
    p, q = np.exp(log_p), np.exp(log_q)
    true_mass, model_mass = float(p.sum() * area), float(q.sum() * area)
    if true_mass <= 0.0:
        raise ValueError(f"true_log_prob puts no mass on the grid over {grid.bounds}")
    if renormalize:
        p, q = p / true_mass, q / model_mass
        log_p, log_q = log_p - math.log(true_mass), log_q - math.log(model_mass)
    support = p > 0.0
    kl = float(np.sum(p[support] * (log_p[support] - log_q[support])) * area)
    tv = float(0.5 * np.sum(np.abs(p - q)) * area)
    ise = float(np.sum((p - q) ** 2) * area)
    return {"kl": kl, "tv": tv, "ise": ise, "true_mass": true_mass, "model_mass": model_mass}


# --------------------------------------------------------------------------------------------
# Latent normality
# --------------------------------------------------------------------------------------------


def latent_normality(z: ArrayLike) -> dict[str, object]:
    """How much latent codes ``z`` look like draws from ``N(0, I)``.

    A trained flow should map data to its standard normal base. This reports the sample mean
    and covariance (``ddof=1``) with their worst deviations from ``0`` and ``I``, and three
    tests:

    - ``ks_*``: Kolmogorov-Smirnov test of the squared norms ``|z|^2`` against ``chi^2(dim)``,
      their law under ``N(0, I)``; it reacts to a wrong location or scale.
    - ``mardia_skewness_*``: Mardia's multivariate skewness ``b1``; the statistic ``n b1 / 6`` is
      compared with ``chi^2(dim (dim + 1) (dim + 2) / 6)``.
    - ``mardia_kurtosis_*``: Mardia's kurtosis ``b2``; ``(b2 - dim (dim + 2)) /
      sqrt(8 dim (dim + 2) / n)`` is compared with ``N(0, 1)``, two-sided.

    Mardia's tests standardise by the sample mean and covariance, so they test normality of any
    mean and covariance (shape, not location); the KS test and the summaries cover the rest.
    P-values are asymptotic (large ``n``). ``b1`` is computed exactly from third moments,
    ``sum_ijk m_ijk^2`` of the whitened sample, which costs ``O(n dim^3)`` rather than ``O(n^2)``.

    Returns:
        A JSON-serialisable dict of floats, ints and lists.

    References:
        Mardia, K. V. (1970). Measures of multivariate skewness and kurtosis with applications.
        Biometrika 57(3), 519-530.
    """
    z = as_points(z, name="z")
    n, dim = z.shape
    if n <= dim + 1:
        raise ValueError(f"z needs more than dim + 1 = {dim + 1} rows, got {n}")
    mean = z.mean(axis=0)
    cov = np.atleast_2d(np.cov(z, rowvar=False))

    ks = stats.kstest(np.sum(z**2, axis=1), "chi2", args=(dim,))

    centred = z - mean
    cov_ml = centred.T @ centred / n
    try:
        chol = np.linalg.cholesky(cov_ml)
    except np.linalg.LinAlgError as err:
        raise ValueError(
            "z has a singular covariance matrix: a latent direction is constant"
        ) from err
    white = np.linalg.solve(chol, centred.T).T  # rows y_i with y_i . y_j = c_i' S^-1 c_j
    b1 = 0.0
    for i in range(dim):
        m_i = (white * white[:, i : i + 1]).T @ white / n  # m_ijk for fixed i
        b1 += float(np.sum(m_i**2))
    b2 = float(np.mean(np.sum(white**2, axis=1) ** 2))
    skew_stat = n * b1 / 6.0
    skew_df = dim * (dim + 1) * (dim + 2) / 6.0
    kurt_stat = (b2 - dim * (dim + 2)) / math.sqrt(8.0 * dim * (dim + 2) / n)

    return {
        "n": int(n),
        "dim": int(dim),
        "mean": mean.tolist(),
        "cov": cov.tolist(),
        "max_abs_mean": float(np.max(np.abs(mean))),
        "max_abs_cov_minus_identity": float(np.max(np.abs(cov - np.eye(dim)))),
        "ks_statistic": float(ks.statistic),
        "ks_pvalue": float(ks.pvalue),
        "mardia_skewness": b1,
        "mardia_skewness_statistic": float(skew_stat),
        "mardia_skewness_pvalue": float(stats.chi2.sf(skew_stat, skew_df)),
        "mardia_kurtosis": b2,
        "mardia_kurtosis_statistic": float(kurt_stat),
        "mardia_kurtosis_pvalue": float(2.0 * stats.norm.sf(abs(kurt_stat))),
    }


# --------------------------------------------------------------------------------------------
# Two-sample distances
# --------------------------------------------------------------------------------------------


def _paired_points(
    x: ArrayLike, y: ArrayLike, max_points: int, seed: int | None
) -> tuple[np.ndarray, np.ndarray]:
    """Validate two samples of one dimension; subsample each to ``max_points`` rows (seeded)."""
    x = as_points(x, name="x", min_rows=2)
    y = as_points(y, name="y", dim=x.shape[1], min_rows=2)
    max_points = check_positive_int(max_points, "max_points", minimum=2)
    rng = np.random.default_rng(seed)
    if len(x) > max_points:
        x = x[np.sort(rng.choice(len(x), size=max_points, replace=False))]
    if len(y) > max_points:
        y = y[np.sort(rng.choice(len(y), size=max_points, replace=False))]
    return x, y


def _block_sum(a: np.ndarray, b: np.ndarray, fn: Callable[[np.ndarray], np.ndarray]) -> float:
    """``sum_ij fn(|a_i - b_j|)``, computed in row blocks so memory stays bounded."""
    rows = max(1, _CHUNK_ENTRIES // max(1, len(b)))
    total = 0.0
    for start in range(0, len(a), rows):
        total += float(np.sum(fn(cdist(a[start : start + rows], b))))
    return total


def _u_statistic(x: np.ndarray, y: np.ndarray, fn: Callable[[np.ndarray], np.ndarray]) -> float:
    """Unbiased ``E k(X,X') + E k(Y,Y') - 2 E k(X,Y)`` for ``k(u, v) = fn(|u - v|)``.

    Within-sample means run over ordered pairs ``i != j`` (divide by ``n (n - 1)``); the cross
    term over all ``n m`` pairs.
    """
    n, m = len(x), len(y)
    diag = float(fn(np.zeros(1))[0])
    sxx = _block_sum(x, x, fn) - n * diag
    syy = _block_sum(y, y, fn) - m * diag
    sxy = _block_sum(x, y, fn)
    return sxx / (n * (n - 1)) + syy / (m * (m - 1)) - 2.0 * sxy / (n * m)


def energy_distance(
    x: ArrayLike, y: ArrayLike, max_points: int = 5000, seed: int | None = 0
) -> float:
    """Multivariate energy distance ``2 E|X - Y| - E|X - X'| - E|Y - Y'|`` (Euclidean norm).

    Zero exactly when the two distributions are equal (for finite first moments), positive
    otherwise. Computed exactly over all pairs, in bounded-memory blocks, after subsampling each
    set to at most ``max_points`` rows with ``np.random.default_rng(seed)``. The within-sample
    terms are U-statistics (mean over pairs ``i != j``) and the cross term is the mean over all
    pairs, so the estimate is unbiased: near zero, and possibly slightly negative, for two
    samples of one distribution. (The V-statistic that ``scipy.stats.energy_distance`` reports
    in 1-D is a different quantity: its square root, with biased within terms.)

    Args:
        x: ``(n, dim)`` sample; y: ``(m, dim)`` sample of the same dimension.
        max_points: cap per set; cost is ``O(max_points^2 dim)``.
        seed: seed for the subsampling.

    References:
        Szekely, G. J. and Rizzo, M. L. (2013). Energy statistics: a class of statistics based
        on distances. Journal of Statistical Planning and Inference 143(8), 1249-1272.
    """
    x, y = _paired_points(x, y, max_points, seed)
    return float(-_u_statistic(x, y, lambda d: d))


def _median_bandwidth(pooled: np.ndarray, seed: int | None) -> float:
    """Median of ``|z_i - z_j|`` over pairs ``i < j`` of the pooled sample (see :func:`mmd`)."""
    if len(pooled) > _MEDIAN_MAX_POINTS:
        rng = np.random.default_rng(seed)
        pooled = pooled[rng.choice(len(pooled), size=_MEDIAN_MAX_POINTS, replace=False)]
    dist = cdist(pooled, pooled)
    h = float(np.median(dist[np.triu_indices(len(pooled), k=1)]))
    if not h > 0.0:
        raise ValueError("median heuristic gave bandwidth 0: most pooled points coincide")
    return h


def _resolve_bandwidth(bandwidth: float | str, pooled: np.ndarray, seed: int | None) -> float:
    if isinstance(bandwidth, str):
        if bandwidth != "median":
            raise ValueError(f"bandwidth must be 'median' or a positive float, got {bandwidth!r}")
        return _median_bandwidth(pooled, seed)
    h = float(bandwidth)
    if not (math.isfinite(h) and h > 0.0):
        raise ValueError(f"bandwidth must be a positive finite float, got {bandwidth!r}")
    return h


def _gaussian_kernel(h: float) -> Callable[[np.ndarray], np.ndarray]:
    scale = -0.5 / h**2
    return lambda d: np.exp(scale * d**2)


def mmd(
    x: ArrayLike,
    y: ArrayLike,
    bandwidth: float | str = "median",
    max_points: int = 5000,
    seed: int | None = 0,
) -> float:
    """Squared maximum mean discrepancy with the Gaussian kernel, unbiased estimator.

    The kernel is ``k(u, v) = exp(-|u - v|^2 / (2 h^2))``. With ``bandwidth="median"``, ``h`` is
    the median of the Euclidean distances ``|z_i - z_j|``, ``i < j``, over the pooled sample
    ``z = (x, y)`` (after subsampling to ``max_points`` per set); when the pool has more than
    1000 points, over a random subset of 1000 of them drawn with ``seed``. A float sets ``h``.

    The estimate is the U-statistic ``MMD_u^2``: within-sample kernel means over pairs
    ``i != j``, cross mean over all pairs. It is unbiased, so it can be slightly negative when
    the distributions agree. Computed exactly in bounded-memory blocks after subsampling each
    set to at most ``max_points`` rows with ``np.random.default_rng(seed)``.

    References:
        Gretton, A., Borgwardt, K. M., Rasch, M. J., Schoelkopf, B. and Smola, A. (2012).
        A kernel two-sample test. Journal of Machine Learning Research 13, 723-773.
    """
    x, y = _paired_points(x, y, max_points, seed)
    h = _resolve_bandwidth(bandwidth, np.concatenate([x, y]), seed)
    return float(_u_statistic(x, y, _gaussian_kernel(h)))


def two_sample_test(
    x: ArrayLike,
    y: ArrayLike,
    statistic: str = "energy",
    n_permutations: int = 200,
    seed: int | None = 0,
    max_points: int = 1000,
    bandwidth: float | str = "median",
) -> dict[str, float | int | str]:
    """Permutation test of ``H0: x and y come from the same distribution``.

    The statistic (``"energy"``: :func:`energy_distance`; ``"mmd"``: :func:`mmd`, whose median
    bandwidth is computed once from the pooled sample, which every permutation shares) is
    recomputed after randomly reassigning the pooled points to two groups of the original
    sizes. The p-value is ``(1 + #{permuted >= observed}) / (1 + n_permutations)``, valid at any
    sample size. The pooled distance matrix is built once, so each set is subsampled to at most
    ``max_points`` rows (seeded); memory is ``(2 max_points)^2`` floats.

    Returns:
        ``{"statistic": name, "value": observed statistic, "p_value", "n_permutations",
        "n_x", "n_y"}`` (plus ``"bandwidth"`` for MMD).

    References:
        Szekely, G. J. and Rizzo, M. L. (2013). Energy statistics. JSPI 143(8), 1249-1272.
        Gretton, A. et al. (2012). A kernel two-sample test. JMLR 13, 723-773.
    """
    if statistic not in _TEST_STATISTICS:
        raise ValueError(
            f"unknown statistic {statistic!r}; choose one of {sorted(_TEST_STATISTICS)}"
        )
    n_permutations = check_positive_int(n_permutations, "n_permutations")
    x, y = _paired_points(x, y, max_points, seed)
    n, m = len(x), len(y)
    result: dict[str, float | int | str] = {"statistic": statistic}
    gram, sign, extra = _TEST_STATISTICS[statistic](np.concatenate([x, y]), bandwidth, seed)
    result.update(extra)
    diag = np.diag(gram).copy()
    row_sums = gram.sum(axis=1)
    total = float(row_sums.sum())

    def stat(masks: np.ndarray) -> np.ndarray:
        # masks: (n + m, k) indicators of the x-group, one column per labelling.
        sxx_full = np.einsum("ik,ik->k", masks, gram @ masks)
        sxy = masks.T @ row_sums - sxx_full
        syy = total - sxx_full - 2.0 * sxy - (diag.sum() - masks.T @ diag)
        sxx = sxx_full - masks.T @ diag
        return sign * (sxx / (n * (n - 1)) + syy / (m * (m - 1)) - 2.0 * sxy / (n * m))

    observed_mask = np.zeros((n + m, 1))
    observed_mask[:n] = 1.0
    observed = float(stat(observed_mask)[0])
    rng = np.random.default_rng(seed)
    exceed, batch = 0, 64
    for start in range(0, n_permutations, batch):
        k = min(batch, n_permutations - start)
        masks = np.zeros((n + m, k))
        for col in range(k):
            masks[rng.permutation(n + m)[:n], col] = 1.0
        # Tiny tolerance: permutations equal to the observed split must count as ties.
        exceed += int(np.sum(stat(masks) >= observed - 1e-12 * max(1.0, abs(observed))))
    result.update(
        value=observed,
        p_value=(1.0 + exceed) / (1.0 + n_permutations),
        n_permutations=n_permutations,
        n_x=n,
        n_y=m,
    )
    return result


def _energy_gram(pooled: np.ndarray, bandwidth: float | str, seed: int | None) -> _Gram:
    return cdist(pooled, pooled), -1.0, {}


def _mmd_gram(pooled: np.ndarray, bandwidth: float | str, seed: int | None) -> _Gram:
    h = _resolve_bandwidth(bandwidth, pooled, seed)
    return _gaussian_kernel(h)(cdist(pooled, pooled)), 1.0, {"bandwidth": h}


#: Permutation-test statistics: pooled sample -> (pairwise kernel matrix ``K``, sign, extras),
#: the statistic being ``sign * (mean K_xx' + mean K_yy' - 2 mean K_xy)`` (U-statistic form).
_TEST_STATISTICS: dict[str, Callable[[np.ndarray, float | str, int | None], _Gram]] = {
    "energy": _energy_gram,
    "mmd": _mmd_gram,
}


# --------------------------------------------------------------------------------------------
# Sample quality for generative models
# --------------------------------------------------------------------------------------------


def sample_quality(
    samples: ArrayLike,
    reference: ArrayLike,
    true_log_prob: LogProb | None = None,
    low_density_quantile: float = 0.01,
    max_points: int = 5000,
    seed: int | None = 0,
) -> dict[str, float]:
    """Distances from model samples to reference data, and how often samples land off-support.

    Always reports :func:`energy_distance`, :func:`mmd` (median bandwidth) and the
    :func:`support_precision_recall` (``precision``, ``recall``) to ``reference``.
    With the true log-density it also reports ``mean_true_log_prob`` of the samples (``-H(p)``
    in expectation for a perfect sampler; log-densities clipped below at
    :data:`LOG_DENSITY_FLOOR`), ``zero_density_fraction`` (samples where the truth is exactly
    zero), and ``low_density_fraction``: the share of samples whose true log-density falls below
    the ``low_density_quantile`` quantile of the reference points' true log-densities
    (``low_density_threshold``). A perfect sampler scores about ``low_density_quantile``; a
    sampler that smears mass between modes scores more. It is a precision-style number: it says
    nothing about modes the sampler misses (see :func:`mode_coverage` for that).
    """
    samples = as_points(samples, name="samples", min_rows=2)
    reference = as_points(reference, name="reference", dim=samples.shape[1], min_rows=2)
    out = {
        "energy_distance": energy_distance(samples, reference, max_points=max_points, seed=seed),
        "mmd": mmd(samples, reference, max_points=max_points, seed=seed),
        **support_precision_recall(samples, reference, seed=seed),
    }
    if true_log_prob is None:
        return out
    quantile = float(low_density_quantile)
    if not 0.0 < quantile < 1.0:
        raise ValueError(f"low_density_quantile must be in (0, 1), got {low_density_quantile!r}")
    lp_samples = _evaluate_on(true_log_prob, samples, "true_log_prob")
    lp_reference = _evaluate_on(true_log_prob, reference, "true_log_prob")
    threshold = float(np.quantile(np.maximum(lp_reference, LOG_DENSITY_FLOOR), quantile))
    out.update(
        mean_true_log_prob=float(np.mean(np.maximum(lp_samples, LOG_DENSITY_FLOOR))),
        zero_density_fraction=float(np.mean(lp_samples == -np.inf)),
        low_density_threshold=threshold,
        low_density_fraction=float(np.mean(lp_samples < threshold)),
    )
    return out


def _knn_radii(points: np.ndarray, k: int) -> np.ndarray:
    """Distance from every point to its ``k``-th nearest other point of the same set."""
    from scipy.spatial import cKDTree

    distances, _ = cKDTree(points).query(points, k=k + 1)  # the first neighbour is the point
    return distances[:, -1]


def _inside_any_ball(points: np.ndarray, centres: np.ndarray, radii: np.ndarray) -> np.ndarray:
    """For every point, whether it lies within ``radii[j]`` of some ``centres[j]``."""
    rows = max(1, _CHUNK_ENTRIES // len(centres))
    inside = np.zeros(len(points), dtype=bool)
    for start in range(0, len(points), rows):
        block = cdist(points[start : start + rows], centres) <= radii
        inside[start : start + rows] = block.any(axis=1)
    return inside


def support_precision_recall(
    samples: ArrayLike, reference: ArrayLike, k: int = 5, max_points: int = 2000,
    seed: int | None = 0,
) -> dict[str, float]:
    """Precision and recall of supports: does a sampler stay on the data and cover all of it?

    Each set's support is estimated as the union of balls around its points reaching their
    ``k``-th nearest neighbour in the same set. ``precision`` is the share of samples inside the
    reference's support (low: samples off the data, e.g. bridges between modes); ``recall`` the
    share of reference points inside the samples' support (low: modes or regions the sampler
    misses, i.e. mode collapse). A faithful sampler scores near 1 on both; energy distance and
    MMD average both failures into one number and can rank a collapsed sampler above a
    faithful but noisy one. Both sets are subsampled to ``max_points`` (seeded), equal sizes
    keep the two numbers comparable.

    References:
        Kynkaanniemi, T., Karras, T., Laine, S., Lehtinen, J. and Aila, T. (2019). Improved
        precision and recall metric for assessing generative models. NeurIPS.
    """
    k = check_positive_int(k, "k")
    x, y = _paired_points(samples, reference, max_points, seed)
    if min(len(x), len(y)) <= k:
        raise ValueError(f"support_precision_recall needs more than k={k} points in each set")
    precision = _inside_any_ball(x, y, _knn_radii(y, k)).mean()
    recall = _inside_any_ball(y, x, _knn_radii(x, k)).mean()
    return {"precision": float(precision), "recall": float(recall)}


def mode_coverage(
    samples: ArrayLike, centres: ArrayLike, radius: float, min_count: int = 1
) -> dict[str, object]:
    """Which modes of a mixture a sampler reaches, and how many samples land near any mode.

    ``counts[k]`` is the number of samples within Euclidean distance ``radius`` of centre ``k``
    (a sample inside two overlapping balls counts for both). A mode is covered when
    ``counts[k] >= min_count``.

    Returns:
        ``{"coverage": covered modes / modes (recall-style), "precision": fraction of samples
        within radius of some centre, "n_covered", "n_modes", "counts": [int], "covered":
        [bool]}``, JSON-serialisable.
    """
    samples = as_points(samples, name="samples")
    centres = as_points(centres, name="centres", dim=samples.shape[1])
    radius = float(radius)
    if not (math.isfinite(radius) and radius > 0.0):
        raise ValueError(f"radius must be a positive finite float, got {radius!r}")
    min_count = check_positive_int(min_count, "min_count")
    rows = max(1, _CHUNK_ENTRIES // len(centres))
    counts = np.zeros(len(centres), dtype=np.int64)
    near_any = 0
    for start in range(0, len(samples), rows):
        inside = cdist(samples[start : start + rows], centres) <= radius
        counts += inside.sum(axis=0)
        near_any += int(inside.any(axis=1).sum())
    covered = counts >= min_count
    return {
        "coverage": float(covered.mean()),
        "precision": near_any / len(samples),
        "n_covered": int(covered.sum()),
        "n_modes": len(centres),
        "counts": [int(c) for c in counts],
        "covered": [bool(c) for c in covered],
    }
