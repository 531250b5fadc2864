"""Equal-weight mixtures of isotropic Gaussians (closed-form log-density)."""

from __future__ import annotations

import numpy as np
from scipy.special import logsumexp

from densitylab._validation import check_positive_int
from densitylab.datasets._base import Distribution, positive_float
from densitylab.grids import Bounds

_SQUARE = np.array([[0.0, 0.0], [0.0, 2.0], [2.0, 0.0], [2.0, 2.0]])


class GaussianMixture(Distribution):
    """Equal-weight mixture of ``N(centre_k, std^2 I)``; the log-density is exact.

    Entropy (no closed form for mixtures): ``H = -mean_k E_{N_k}[log p(X)]``, each expectation
    by an 80 x 80 tensor Gauss-Hermite rule, which is exact for a single Gaussian, accurate to
    ~1e-7 nats for the built-in mixtures and costs the same whatever ``std`` is.
    """

    hermite_order = 80

    def __init__(
        self,
        name: str,
        centres: np.ndarray,
        std: float,
        *,
        params: dict | None = None,
        description: str = "",
        reference: str = "",
    ) -> None:
        super().__init__(name, params, description, reference)
        self.centres = np.asarray(centres, dtype=np.float64)
        self.std = positive_float(std, "std")

    @property
    def length_scale(self) -> float:
        return self.std

    def _sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        k = rng.integers(len(self.centres), size=n)
        return self.centres[k] + self.std * rng.standard_normal((n, 2))

    def _log_prob(self, x: np.ndarray) -> np.ndarray:
        sq = ((x[:, None, :] - self.centres[None, :, :]) ** 2).sum(axis=2)
        log_norm = np.log(2.0 * np.pi * self.std**2 * len(self.centres))
        return logsumexp(-0.5 * sq / self.std**2, axis=1) - log_norm

    def _compute_entropy(self) -> float:
        u, w = np.polynomial.hermite_e.hermegauss(self.hermite_order)  # weight exp(-u^2 / 2)
        w = w / np.sqrt(2.0 * np.pi)
        uu, vv = np.meshgrid(u, u, indexing="ij")
        offsets = self.std * np.column_stack([uu.ravel(), vv.ravel()])
        weights = np.outer(w, w).ravel()
        total = sum(float(weights @ self._log_prob(c + offsets)) for c in self.centres)
        return -total / len(self.centres)

    def bounds(self) -> Bounds:
        lo = self.centres.min(axis=0) - 6.0 * self.std
        hi = self.centres.max(axis=0) + 6.0 * self.std
        return ((float(lo[0]), float(hi[0])), (float(lo[1]), float(hi[1])))


def gaussians_grid() -> GaussianMixture:
    """Four Gaussians (std 0.5) at the corners of the square ``{0, 2}^2`` (coursework
    ``GaussiansGrid``, the population of ``make_blobs`` with those centres)."""
    return GaussianMixture(
        "gaussians-grid",
        _SQUARE,
        0.5,
        description="4 Gaussians on a square (coursework)",
        reference="coursework GaussiansGrid (sklearn make_blobs)",
    )


def gaussians_rot(num_gaussians: int = 5) -> GaussianMixture:
    """``num_gaussians`` Gaussians (variance 0.1) evenly spaced on the circle of radius 2.5
    (coursework ``GaussiansRot``)."""
    k = check_positive_int(num_gaussians, "num_gaussians")
    angles = 2.0 * np.pi * np.arange(k) / k
    centres = 2.5 * np.column_stack([np.cos(angles), np.sin(angles)])
    return GaussianMixture(
        "gaussians-rot",
        centres,
        np.sqrt(0.1),
        params={"num_gaussians": k},
        description=f"{k} Gaussians on a circle (coursework)",
        reference="coursework GaussiansRot (sklearn make_blobs)",
    )


def gmm(sigma: float = 0.5) -> GaussianMixture:
    """Four Gaussians with standard deviation ``sigma`` at the corners of ``{0, 2}^2``
    (the coursework's KDE mixtures use sigma 0.5 and 1)."""
    sigma = positive_float(sigma, "sigma")
    return GaussianMixture(
        "gmm",
        _SQUARE,
        sigma,
        params={"sigma": sigma},
        description="4 Gaussians on a square, KDE part (coursework)",
        reference="coursework KDE mixture",
    )


def eight_gaussians() -> GaussianMixture:
    """FFJORD's eight Gaussians: centres ``4 (cos, sin)(k pi / 4)``, std 0.5, all divided by
    1.414 (as in the reference code, not sqrt(2))."""
    angles = np.pi * np.arange(8) / 4.0
    centres = 4.0 * np.column_stack([np.cos(angles), np.sin(angles)]) / 1.414
    return GaussianMixture(
        "8gaussians",
        centres,
        0.5 / 1.414,
        description="8 Gaussians on a circle (FFJORD)",
        reference="Grathwohl et al. 2019 (FFJORD)",
    )
