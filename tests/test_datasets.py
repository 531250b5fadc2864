"""Tests of densitylab.datasets: every law's sampler, density and entropy agree with each other
and with independent references; user files load or fail with a precise message."""

from __future__ import annotations

import functools

import numpy as np
import pytest
from scipy import integrate, optimize, special, stats
from typer.testing import CliRunner

import densitylab as dl
from densitylab.grids import Grid, make_grid

NAMES = dl.datasets.names()
RESOLUTION = 200  # density grid; a multiple of BINS and of 4 (checkerboard squares align)
BINS = 40  # histogram bins per axis
N_HIST = 1_000_000
N_MC = 20_000


@functools.cache
def grid_density(name: str) -> tuple[Grid, np.ndarray]:
    """Density on a midpoint grid over ``bounds()``, image-shaped ``(ny, nx)``."""
    dist = dl.datasets.get(name)
    grid = make_grid(dist.bounds(), RESOLUTION)
    return grid, np.exp(dist.log_prob(grid.points)).reshape(grid.shape)


# ------------------------------------------------------------------------------- registry
def test_names_are_sorted_and_complete() -> None:
    expected = {
        "moons", "circles", "gaussians-grid", "gaussians-rot", "gmm", "spiral",
        "checkerboard", "8gaussians", "2spirals", "pinwheel", "rings", "swissroll",
    }
    assert NAMES == sorted(expected)


@pytest.mark.parametrize("name", NAMES)
def test_distribution_contract(name: str) -> None:
    dist = dl.datasets.get(name)
    assert dist.name == name
    assert dist.dim == 2
    assert isinstance(dist.params, dict)
    assert dist.description
    (x0, x1), (y0, y1) = dist.bounds()
    assert x0 < x1 and y0 < y1
    x = dist.sample(7, seed=0)
    assert x.shape == (7, 2) and x.dtype == np.float64
    lp = dist.log_prob(x)
    assert lp.shape == (7,) and np.all(np.isfinite(lp))
    assert isinstance(dist.entropy(), float)


def test_default_params() -> None:
    assert dl.datasets.get("moons").params == {"noise": 0.1}
    assert dl.datasets.get("circles").params == {"noise": 0.1, "factor": 0.8}
    assert dl.datasets.get("gaussians-rot").params == {"num_gaussians": 5}
    assert dl.datasets.get("gmm").params == {"sigma": 0.5}
    assert dl.datasets.get("gmm", sigma=1).params == {"sigma": 1.0}


def test_unknown_name_lists_valid_names() -> None:
    with pytest.raises(ValueError, match="unknown dataset 'nope'") as err:
        dl.datasets.get("nope")
    for name in NAMES:
        assert name in str(err.value)


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        ("moons", {"noise": -0.1}, "noise"),
        ("moons", {"noise": 0.0}, "noise"),
        ("moons", {"noise": float("nan")}, "noise"),
        ("moons", {"noise": "big"}, "noise"),
        ("circles", {"factor": 1.0}, "factor"),
        ("circles", {"factor": -0.5}, "factor"),
        ("gaussians-rot", {"num_gaussians": 0}, "num_gaussians"),
        ("gaussians-rot", {"num_gaussians": 2.5}, "num_gaussians"),
        ("gmm", {"sigma": -1}, "sigma"),
        ("moons", {"nois": 0.1}, "valid parameters: noise"),
        ("spiral", {"noise": 0.1}, "valid parameters: none"),
    ],
)
def test_bad_params_raise(name: str, params: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        dl.datasets.get(name, **params)


def test_log_prob_validates_input() -> None:
    dist = dl.datasets.get("moons")
    with pytest.raises(ValueError, match="2 columns"):
        dist.log_prob(np.zeros((4, 3)))
    with pytest.raises(ValueError, match="NaN"):
        dist.log_prob(np.array([[0.0, np.nan]]))
    with pytest.raises(ValueError, match="n must be"):
        dist.sample(0)


# ------------------------------------------------------------------------ normalisation
# Midpoint rule over bounds(): the smooth densities converge faster than any power of the
# step, so only the mass outside the box (< 1e-8) and rounding remain. Checkerboard: the grid
# edges fall on the square edges, so the rule is exact. Spiral: the density has an integrable
# 1/rho peak at the origin that the midpoint rule underestimates by O(step) (~4e-3 here), so
# it gets a loose bound here and a tight polar-coordinate check below.
INTEGRAL_TOL = {"spiral": 1e-2, "checkerboard": 1e-12}


@pytest.mark.parametrize("name", NAMES)
def test_density_integrates_to_one(name: str) -> None:
    grid, density = grid_density(name)
    total = density.sum() * grid.cell_area
    assert abs(total - 1.0) < INTEGRAL_TOL.get(name, 1e-6)


def _gauss_legendre(edges: np.ndarray, order: int = 16) -> tuple[np.ndarray, np.ndarray]:
    nodes, weights = np.polynomial.legendre.leggauss(order)
    half = 0.5 * np.diff(edges)[:, None]
    mid = 0.5 * (edges[:-1] + edges[1:])[:, None]
    return (mid + half * nodes).ravel(), (half * weights).ravel()


def test_spiral_integrates_to_one_in_polar_coordinates() -> None:
    # rho * p(x) is smooth in (rho, phi) away from the jumps at phi = 0 and pi (panel edges)
    rho, w_rho = _gauss_legendre(np.linspace(0.0, 2 * np.pi + 7.0, 54))
    phi, w_phi = _gauss_legendre(np.linspace(0.0, 2 * np.pi, 17))
    rr, pp = np.meshgrid(rho, phi, indexing="ij")
    points = np.column_stack([(rr * np.cos(pp)).ravel(), (rr * np.sin(pp)).ravel()])
    density = np.exp(dl.datasets.get("spiral").log_prob(points)).reshape(rr.shape)
    assert abs(np.sum(np.outer(w_rho, w_phi) * density * rr) - 1.0) < 1e-9


# ---------------------------------------------------------------------- samples vs density
@pytest.mark.parametrize("name", NAMES)
def test_histogram_matches_density(name: str) -> None:
    """Total variation between a 1e6-sample histogram and the integrated density per bin.

    Under the null the expected TV is ``0.5 sum sqrt(2 p (1 - p) / (pi N))`` (~0.005-0.011
    here) with a spread of a few percent; a wrong law or density exceeds it by far.
    """
    dist = dl.datasets.get(name)
    grid, density = grid_density(name)
    k = RESOLUTION // BINS
    p_bin = (density * grid.cell_area).reshape(BINS, k, BINS, k).sum(axis=(1, 3))
    x = dist.sample(N_HIST, seed=123)
    (x0, x1), (y0, y1) = dist.bounds()
    counts, _, _ = np.histogram2d(x[:, 1], x[:, 0], bins=BINS, range=[[y0, y1], [x0, x1]])
    outside = (N_HIST - counts.sum()) / N_HIST
    tv = 0.5 * (np.abs(counts / N_HIST - p_bin).sum() + outside)
    expected = 0.5 * np.sqrt(2 * p_bin * (1 - p_bin) / (np.pi * N_HIST)).sum()
    assert tv < 0.02
    assert tv < 1.25 * expected + 1e-3


@pytest.mark.parametrize("name", NAMES)
def test_entropy_matches_monte_carlo(name: str) -> None:
    dist = dl.datasets.get(name)
    log_p = dist.log_prob(dist.sample(N_MC, seed=2024))
    estimate = -log_p.mean()
    stderr = log_p.std(ddof=1) / np.sqrt(N_MC)
    assert abs(dist.entropy() - estimate) <= 3 * stderr + 1e-9


def test_entropy_known_values() -> None:
    single = dl.datasets.get("gaussians-rot", num_gaussians=1)
    assert single.entropy() == pytest.approx(np.log(2 * np.pi * np.e * 0.1), abs=1e-10)
    # the grid method of the base class on a single Gaussian and on the mixtures (whose own
    # method is Gauss-Hermite) agrees with the closed form / the other method
    grid_entropy = dl.datasets.Distribution._compute_entropy
    assert grid_entropy(single) == pytest.approx(single.entropy(), abs=1e-7)
    for name in ("gmm", "gaussians-rot", "8gaussians"):
        dist = dl.datasets.get(name)
        assert grid_entropy(dist) == pytest.approx(dist.entropy(), abs=1e-6)
    assert dl.datasets.get("checkerboard").entropy() == pytest.approx(np.log(32.0), abs=1e-12)
    # measured independently elsewhere
    assert dl.datasets.get("moons").entropy() == pytest.approx(1.0076, abs=1e-4)
    dist = dl.datasets.get("spiral")
    assert dist.entropy() is dist.entropy()  # cached


# --------------------------------------------------------------- independent point checks
def _quad_curve(log_integrand, pieces: np.ndarray) -> float:
    def f(t: float) -> float:
        return np.exp(log_integrand(t))

    return sum(
        integrate.quad(f, a, b, epsabs=0.0, epsrel=1e-13, limit=200)[0]
        for a, b in zip(pieces[:-1], pieces[1:], strict=True)
    )


def _moons_reference(x: np.ndarray, s: float = 0.1) -> float:
    def log_integrand(t: float, lower: bool) -> float:
        c = (
            np.array([1 - np.cos(t), 0.5 - np.sin(t)])
            if lower
            else np.array([np.cos(t), np.sin(t)])
        )
        return -np.sum((x - c) ** 2) / (2 * s**2) - np.log(2 * np.pi * s**2) + np.log(0.5 / np.pi)

    pieces = np.linspace(0.0, np.pi, 40)
    return sum(_quad_curve(lambda t, lo=lo: log_integrand(t, lo), pieces) for lo in (False, True))


def _swissroll_reference(x: np.ndarray, s: float = 0.2) -> float:
    t0, t1 = 1.5 * np.pi, 4.5 * np.pi

    def log_integrand(t: float) -> float:
        c = t * np.array([np.cos(t), np.sin(t)]) / 5
        return -np.sum((x - c) ** 2) / (2 * s**2) - np.log(2 * np.pi * s**2 * (t1 - t0))

    return _quad_curve(log_integrand, np.linspace(t0, t1, 80))


def _two_spirals_reference(x: np.ndarray, s: float = 0.1, w: float = 0.5 / 3) -> float:
    m_max = 3 * np.pi

    def log_integrand(m: float, y: np.ndarray) -> float:
        z = y - m * np.array([-np.cos(m), np.sin(m)]) / 3  # offset V / 3 ~ U[0, w]^2
        # U[0, w] + N(0, s^2) at z; symmetric about w / 2, so take the side of lower tails
        a = (0.5 * w - np.abs(z - 0.5 * w)) / s
        log_box = special.log_ndtr(a) + np.log1p(
            -np.exp(special.log_ndtr(a - w / s) - special.log_ndtr(a))
        )
        return np.sum(log_box - np.log(w)) + np.log(m / m_max**2)  # 2 m / m_max^2, times 1/2

    pieces = np.linspace(0.0, m_max, 80)
    return sum(_quad_curve(lambda m, y=y: log_integrand(m, y), pieces) for y in (x, -x))


@pytest.mark.parametrize(
    ("name", "reference"),
    [("moons", _moons_reference), ("swissroll", _swissroll_reference),
     ("2spirals", _two_spirals_reference)],
)
def test_curve_densities_match_adaptive_quadrature(name: str, reference) -> None:
    dist = dl.datasets.get(name)
    (x0, x1), (y0, y1) = dist.bounds()
    points = np.vstack(
        [dist.sample(3, seed=5), [[0.5 * (x0 + x1), 0.5 * (y0 + y1)], [x0 + 0.3, y1 - 0.2]]]
    )
    expected = np.log([reference(p) for p in points])
    np.testing.assert_allclose(dist.log_prob(points), expected, rtol=0, atol=1e-8)


def test_spiral_counts_negative_radius_preimages() -> None:
    # x = (-0.3, -0.1): rho = sqrt(0.1), phi = pi + atan(1/3), psi = phi - pi.
    # Preimages (theta, r): (phi, rho), (phi + 2pi, rho), (psi, -rho), (psi + 2pi, -rho),
    # p = sum N(r; theta / 2, 0.25) / (4 pi rho).
    rho, psi = np.sqrt(0.1), np.arctan(1 / 3)
    phi = np.pi + psi

    def normal(r: float, theta: float) -> float:
        return np.exp(-((r - theta / 2) ** 2) / 0.5) / np.sqrt(2 * np.pi * 0.25)

    positive = normal(rho, phi) + normal(rho, phi + 2 * np.pi)
    negative = normal(-rho, psi) + normal(-rho, psi + 2 * np.pi)
    expected = np.log((positive + negative) / (4 * np.pi * rho))
    got = dl.datasets.get("spiral").log_prob([[-0.3, -0.1]])[0]
    assert got == pytest.approx(expected, abs=1e-12)
    assert got - np.log(positive / (4 * np.pi * rho)) > 3.0  # the r < 0 branch dominates here


def _pinwheel_forward(f: np.ndarray, k: int) -> np.ndarray:
    """FFJORD's pinwheel map for class ``k``; ``f`` has shape ``(2, ...)``."""
    a = 2 * np.pi * k / 5 + 0.25 * np.exp(f[0])
    return 2 * np.array([f[0] * np.cos(a) + f[1] * np.sin(a), -f[0] * np.sin(a) + f[1] * np.cos(a)])


def _pinwheel_reference(y: np.ndarray) -> float:
    """Brute force change of variables: every preimage on the circle |f| = |y| / 2 is located by
    a sign change on a 20001-point angle grid plus ``brentq``; Jacobians by finite differences."""
    radius, target = np.hypot(*y) / 2, np.arctan2(y[1], y[0])

    def mismatch(b, k: int):
        image = _pinwheel_forward(radius * np.array([np.cos(b), np.sin(b)]), k)
        return np.angle(np.exp(1j * (np.arctan2(image[1], image[0]) - target)))

    total, h = 0.0, 1e-6
    grid = np.linspace(-np.pi, np.pi, 20001) + 1e-4 * np.sqrt(2)  # no root on a node
    for k in range(5):
        d = mismatch(grid, k)
        for i in np.flatnonzero((d[:-1] * d[1:] < 0) & (np.abs(d[:-1]) < 1)):
            b = optimize.brentq(mismatch, grid[i], grid[i + 1], args=(k,), xtol=1e-15)
            f = radius * np.array([np.cos(b), np.sin(b)])
            jac = np.column_stack(
                [(_pinwheel_forward(f + e, k) - _pinwheel_forward(f - e, k)) / (2 * h)
                 for e in np.eye(2) * h]
            )
            density = stats.norm.pdf(f[0], 1.0, 0.3) * stats.norm.pdf(f[1], 0.0, 0.1) / 5
            total += density / abs(np.linalg.det(jac))
    return float(np.log(total))


def test_pinwheel_matches_brute_force_change_of_variables() -> None:
    dist = dl.datasets.get("pinwheel")
    points = np.vstack(
        [
            dist.sample(4, seed=9),
            [_pinwheel_forward(np.array(f), k) for k, f in enumerate([[1.0, 0.0], [0.7, -0.1]])],
            [[0.05, -0.02], [4.8, 1.0], [-3.0, -4.0]],  # centre (arms overlap) and the tails
            [[0.2842, 5.2442]],  # where the map folds: one class has three preimages
        ]
    )
    expected = [_pinwheel_reference(y) for y in points]
    np.testing.assert_allclose(dist.log_prob(points), expected, rtol=0, atol=1e-7)


@pytest.mark.parametrize("name", NAMES)
def test_log_prob_finite_far_away(name: str) -> None:
    far = np.array([[30.0, -40.0], [1e3, 1e3], [-1e5, 3.0]])
    lp = dl.datasets.get(name).log_prob(far)
    if name == "checkerboard":
        assert np.all(lp == -np.inf)  # exact: no mass outside [-4, 4]^2
    else:
        assert np.all(np.isfinite(lp)) and np.all(lp < -100)


# ---------------------------------------------------------------------- scikit-learn laws
def _ks_pvalues(a: np.ndarray, b: np.ndarray, reference) -> list[float]:
    """KS p-values on six projections and on the reference log-density (sensitive to noise)."""
    pvalues = [stats.ks_2samp(reference.log_prob(a), reference.log_prob(b)).pvalue]
    for angle in np.arange(6) * np.pi / 6:
        u = np.array([np.cos(angle), np.sin(angle)])
        pvalues.append(stats.ks_2samp(a @ u, b @ u).pvalue)
    return pvalues


@pytest.mark.parametrize(
    ("name", "wrong"),
    [("moons", {"noise": 0.12}), ("circles", {"factor": 0.75}), ("circles", {"noise": 0.12})],
)
def test_matches_sklearn_generators(name: str, wrong: dict) -> None:
    from sklearn.datasets import make_circles, make_moons

    n = 4000
    if name == "moons":
        theirs = make_moons(n, noise=0.1, random_state=0)[0]
    else:
        theirs = make_circles(n, noise=0.1, factor=0.8, random_state=0)[0]
    reference = dl.datasets.get(name)
    assert min(_ks_pvalues(reference.sample(n, seed=0), theirs, reference)) > 1e-3
    # the same test must reject a law with the wrong noise or factor
    other = dl.datasets.get(name, **wrong).sample(n, seed=0)
    assert min(_ks_pvalues(other, theirs, reference)) < 1e-4


# --------------------------------------------------------------------------------- seeds
@pytest.mark.parametrize("name", NAMES)
def test_seeding_is_explicit(name: str) -> None:
    dist = dl.datasets.get(name)
    before = np.random.get_state()  # noqa: NPY002 (checking the legacy global state)
    a, b, c = dist.sample(50, seed=3), dist.sample(50, seed=3), dist.sample(50, seed=4)
    after = np.random.get_state()  # noqa: NPY002
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert before[0] == after[0] and np.array_equal(before[1], after[1])
    assert before[2:] == after[2:]
    gen = np.random.default_rng(3)
    first, second = dist.sample(50, seed=gen), dist.sample(50, seed=gen)
    assert not np.array_equal(first, second)  # a Generator is advanced, not re-seeded


@pytest.mark.parametrize("seed", [None, 1.5, "0", -1, True])
def test_bad_seed_raises(seed) -> None:
    with pytest.raises(ValueError, match="seed"):
        dl.datasets.get("moons").sample(5, seed=seed)


# --------------------------------------------------------------------------------- files
POINTS = np.array([[0.5, -1.25], [2.0, 3.0], [1e-3, 4e5]])


def _write(path, text: str):
    path.write_text(text)
    return path


def test_csv_with_and_without_header(tmp_path) -> None:
    plain = _write(tmp_path / "plain.csv", "0.5,-1.25\n2,3\n1e-3,4e5\n")
    header = _write(tmp_path / "header.csv", "x,y\n0.5, -1.25\n\n2,3\n1e-3,4e5\n")
    spaced = _write(tmp_path / "spaced.csv", "# comment\n0.5 -1.25\n2 3\n1e-3 4e5\n")
    for path in (plain, header, spaced):
        x = dl.datasets.load(path)
        assert x.dtype == np.float64
        np.testing.assert_array_equal(x, POINTS)


def test_npy_and_npz(tmp_path) -> None:
    np.save(tmp_path / "a.npy", POINTS.astype(np.float32))
    np.savez(tmp_path / "single.npz", whatever=POINTS)
    np.savez(tmp_path / "keyed.npz", x=POINTS, labels=np.arange(3))
    np.savez(tmp_path / "data.npz", data=POINTS, other=np.zeros(2))
    np.testing.assert_allclose(dl.datasets.load(tmp_path / "a.npy"), POINTS, rtol=1e-6)
    for name in ("single.npz", "keyed.npz", "data.npz"):
        np.testing.assert_array_equal(dl.datasets.load(str(tmp_path / name)), POINTS)


@pytest.mark.parametrize(
    ("filename", "content", "message"),
    [
        ("cell.csv", "x,y\n1,2\n3,abc\n", r"row 3, column 2 \(.y.\) holds text \(.abc.\)"),
        ("empty.csv", "1,2\n3,\n", r"row 2, column 2 is missing \(empty\)"),
        ("nan.csv", "1,2\nnan,4\n", r"row 2, column 1 is 'nan' \(NaN/inf not allowed\)"),
        ("inf.csv", "1,2\n3,-inf\n", r"row 2, column 2 is '-inf'"),
        ("ragged.csv", "1,2\n3,4,5\n", r"row 2 has 3 columns, expected 2"),
        ("short.csv", "x,y\n1,2\n", r"at least 2 rows"),
        ("blank.csv", "\n\n", r"no data rows"),
        ("points.txt", "1,2\n3,4\n", r"unsupported file type '.txt'"),
    ],
)
def test_bad_csv_files(tmp_path, filename: str, content: str, message: str) -> None:
    path = _write(tmp_path / filename, content)
    with pytest.raises(ValueError, match=message) as err:
        dl.datasets.load(path)
    assert filename in str(err.value)


def test_bad_array_files(tmp_path) -> None:
    np.save(tmp_path / "flat.npy", np.arange(6.0))
    with pytest.raises(ValueError, match=r"flat.npy: expected a 2-D array.*\(6,\)"):
        dl.datasets.load(tmp_path / "flat.npy")
    np.save(tmp_path / "cube.npy", np.zeros((2, 2, 2)))
    with pytest.raises(ValueError, match=r"2-D array.*\(2, 2, 2\)"):
        dl.datasets.load(tmp_path / "cube.npy")
    bad = POINTS.copy()
    bad[1, 0] = np.inf
    np.save(tmp_path / "inf.npy", bad)
    with pytest.raises(ValueError, match=r"inf.npy: row 2, column 1 is inf"):
        dl.datasets.load(tmp_path / "inf.npy")
    np.save(tmp_path / "one.npy", POINTS[:1])
    with pytest.raises(ValueError, match=r"one.npy: needs at least 2 rows"):
        dl.datasets.load(tmp_path / "one.npy")
    np.save(tmp_path / "text.npy", np.array([["a", "b"], ["c", "d"]]))
    with pytest.raises(ValueError, match=r"text.npy: expected a numeric array"):
        dl.datasets.load(tmp_path / "text.npy")
    np.savez(tmp_path / "many.npz", a=POINTS, b=POINTS)
    with pytest.raises(ValueError, match=r"many.npz: holds arrays \['a', 'b'\]"):
        dl.datasets.load(tmp_path / "many.npz")
    _write(tmp_path / "junk.npy", "not numpy")
    with pytest.raises(ValueError, match=r"junk.npy: cannot read"):
        dl.datasets.load(tmp_path / "junk.npy")


def test_missing_file(tmp_path) -> None:
    path = tmp_path / "absent.csv"
    with pytest.raises(FileNotFoundError, match="absent.csv"):
        dl.datasets.load(path)


def test_resolve(tmp_path) -> None:
    x, dist = dl.datasets.resolve("moons", 40, seed=1)
    assert x.shape == (40, 2) and dist is not None and dist.name == "moons"
    np.testing.assert_array_equal(x, dist.sample(40, seed=1))
    x, dist = dl.datasets.resolve("gmm:sigma=1", 10, seed=0)
    assert dist.params == {"sigma": 1.0}
    np.save(tmp_path / "mine.npy", POINTS)
    x, dist = dl.datasets.resolve(str(tmp_path / "mine.npy"), 10, seed=0)
    assert dist is None
    np.testing.assert_array_equal(x, POINTS)
    with pytest.raises(FileNotFoundError, match="neither a built-in dataset.*moons"):
        dl.datasets.resolve("mons", 10, seed=0)
    with pytest.raises(ValueError, match="valid parameters"):
        dl.datasets.resolve("moons:sigma=1", 10, seed=0)


# ---------------------------------------------------------------------------- CLI, plots
@pytest.mark.slow
def test_cli_lists_and_plots(tmp_path) -> None:
    from densitylab.cli import app

    result = CliRunner().invoke(app, ["datasets", "--plot", str(tmp_path)])
    assert result.exit_code == 0, result.output
    for name in NAMES:
        assert name in result.output
    assert "1.0076" in result.output  # moons entropy
    written = {p.name for p in tmp_path.glob("*.png")}
    expected = {f"{n}.png" for n in NAMES if n != "gmm"} | {"overview.png"}
    assert expected | {"gmm-sigma-0.5.png", "gmm-sigma-1.png"} == written


def test_plot_functions() -> None:
    from densitylab.plots import datasets as plots

    x = dl.datasets.get("moons").sample(100, seed=0)
    fig = plots.scatter(x, "moons")
    (ax,) = fig.axes
    assert ax.get_title() == "moons" and ax.get_xlabel() and ax.get_ylabel()
    assert ax.get_aspect() == 1.0
    fig = plots.overview({"a": x, "b": x, "c": x, "d": x, "e": x})
    assert sum(ax.get_visible() for ax in fig.axes) == 5
    with pytest.raises(ValueError):
        plots.overview({})


def test_cli_plot_directory_error(tmp_path) -> None:
    from densitylab.cli import app

    blocker = tmp_path / "file"
    blocker.write_text("")
    result = CliRunner().invoke(app, ["datasets", "--plot", str(blocker / "sub")])
    assert isinstance(result.exception, ValueError)
    assert "is a file, not a directory" in str(result.exception)


def test_label_names_the_law_with_its_parameters():
    assert dl.datasets.get("gmm", sigma=1.0).label == "gmm (sigma=1)"
    assert dl.datasets.get("checkerboard").label == "checkerboard"
    assert dl.datasets.get("gmm", sigma=1.0).params_text == "sigma=1"
