"""FFJORD's pinwheel: Gaussians bent by an angle that grows with the radius.

Per class ``k`` (of 5, equal mass), ``f ~ N((1, 0), diag(0.3^2, 0.1^2))`` is rotated by
``-a`` with ``a = 2 pi k / 5 + 0.25 exp(f_1)`` and doubled. The map keeps ``|y| = 2 |f|``, so a
point ``y`` pulls back to the circle ``|f| = |y| / 2``; on it, ``f = |f| (cos b, sin b)`` is a
preimage when ``G(b) = b - 0.25 exp(|f| cos b)`` equals ``angle(y) + 2 pi k / 5`` modulo
``2 pi``. The circle splits into at most three arcs on which ``G`` is monotone (its folds are
found in closed form plus bisection), so every root is bracketed and polished by safeguarded
Newton, and the density sums ``N(f) / |det J|`` over all of them, with
``|det J| = 4 |1 + 0.25 exp(f_1) f_2| = 4 |G'(b)|``.
"""

from __future__ import annotations

import numpy as np
from scipy.special import logsumexp

from densitylab.datasets._base import Distribution
from densitylab.grids import Bounds


class Pinwheel(Distribution):
    """Five curved Gaussian arms (FFJORD pinwheel); log-density by change of variables.

    The density is exact (every preimage found, roots to machine precision) wherever an arc
    holds at most ``max_roots`` preimages, which covers ``|y| < 11`` (``bounds()`` is
    ``|y| < 6.2``). Farther out the preimages crowd together and their sum is replaced by its
    average over the arc, a finite approximation of a density below ``exp(-100)``.
    Entropy: midpoint rule on a grid (see ``Distribution._compute_entropy``).

    References:
        Grathwohl et al., "FFJORD", ICLR 2019 (``toy_data.py``); Johnson et al., "Composing
        graphical models with neural networks", NeurIPS 2016 (the original pinwheel).
    """

    description = "5 curved Gaussian arms (FFJORD)"
    reference = "Grathwohl et al. 2019 (FFJORD)"
    radial_std = 0.3
    tangential_std = 0.1
    num_classes = 5
    rate = 0.25
    max_roots = 64  # listed exactly per monotone piece; beyond, averaged

    def __init__(self) -> None:
        super().__init__("pinwheel")

    @property
    def length_scale(self) -> float:
        return 2.0 * self.tangential_std

    def _sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        k = rng.integers(self.num_classes, size=n)
        f = rng.standard_normal((n, 2)) * np.array([self.radial_std, self.tangential_std])
        f[:, 0] += 1.0
        a = 2.0 * np.pi * k / self.num_classes + self.rate * np.exp(f[:, 0])
        cos, sin = np.cos(a), np.sin(a)
        return 2.0 * np.column_stack(
            [f[:, 0] * cos + f[:, 1] * sin, -f[:, 0] * sin + f[:, 1] * cos]
        )

    def _turns(
        self, b: np.ndarray, radius: np.ndarray, psi: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """``v(b) = K (G(b) - psi) / (2 pi)`` and its derivative; the class-``k`` preimages are
        where ``v`` crosses an integer ``c`` with ``c = k (mod K)``."""
        k = self.num_classes / (2.0 * np.pi)
        with np.errstate(over="ignore", invalid="ignore"):  # inf far away: handled by callers
            bend = self.rate * np.exp(radius * np.cos(b))
            value = k * (b - bend - psi)
            slope = k * (1.0 + bend * radius * np.sin(b))
        return value, slope

    def _log_normal(self, radius: np.ndarray, b: np.ndarray) -> np.ndarray:
        """``log N(f) - log K`` at ``f = radius (cos b, sin b)`` (class prior included)."""
        f0, f1 = radius * np.cos(b), radius * np.sin(b)
        norm = np.log(2.0 * np.pi * self.radial_std * self.tangential_std * self.num_classes)
        return (
            -0.5 * ((f0 - 1.0) / self.radial_std) ** 2
            - 0.5 * (f1 / self.tangential_std) ** 2
            - norm
        )

    def _folds(self, radius: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Split points ``-pi <= b1 <= b2 <= 0`` of the circle into pieces where ``G`` is monotone.

        ``G'(b) = 1 + rate radius h(b)`` with ``h(b) = sin(b) exp(radius cos b)``; on
        ``(-pi, 0)`` ``h`` falls from 0 to its minimum at ``b*`` (``cos b*`` solves
        ``radius c^2 + c - radius = 0``) and rises back, so ``G'`` has two zeros or none.
        Without a fold both split points sit at ``b*`` (an empty middle piece).
        """
        r = np.maximum(radius, 1e-300)
        c = (np.sqrt(1.0 + 4.0 * r**2) - 1.0) / (2.0 * r)
        b_star = -np.arccos(np.clip(c, -1.0, 1.0))

        def g_prime(b: np.ndarray) -> np.ndarray:
            with np.errstate(over="ignore"):
                return 1.0 + self.rate * r * np.sin(b) * np.exp(r * np.cos(b))

        folded = g_prime(b_star) < 0
        b1, b2 = b_star.copy(), b_star.copy()
        if np.any(folded):
            rf, bs = r[folded], b_star[folded]
            # bisection on each monotone branch of h: G' > 0 at the ends, < 0 at b*
            for lo, hi, out, sign in ((-np.pi + 0 * bs, bs, b1, 1.0), (bs, 0 * bs, b2, -1.0)):
                for _ in range(64):
                    mid = 0.5 * (lo + hi)
                    with np.errstate(over="ignore"):
                        gp = 1.0 + self.rate * rf * np.sin(mid) * np.exp(rf * np.cos(mid))
                    left = (gp > 0) if sign > 0 else (gp < 0)
                    lo, hi = np.where(left, mid, lo), np.where(left, hi, mid)
                out[folded] = 0.5 * (lo + hi)
        return b1, b2

    def _log_prob(self, x: np.ndarray, chunk: int = 4096) -> np.ndarray:
        parts = [self._log_prob_chunk(x[i : i + chunk]) for i in range(0, len(x), chunk)]
        return np.concatenate(parts) if parts else np.empty(0)

    def _log_prob_chunk(self, y: np.ndarray) -> np.ndarray:
        n = len(y)
        radius = 0.5 * np.hypot(y[:, 0], y[:, 1])
        psi = np.arctan2(y[:, 1], y[:, 0])
        b1, b2 = self._folds(radius)
        # three monotone pieces per point: [-pi, b1], [b1, b2], [b2, pi]
        ends = np.column_stack([np.full(n, -np.pi), b1, b2, np.full(n, np.pi)])
        v = self._turns(ends, radius[:, None], psi[:, None])[0]
        lo_v, hi_v = np.minimum(v[:, :-1], v[:, 1:]), np.maximum(v[:, :-1], v[:, 1:])
        with np.errstate(invalid="ignore"):
            count = np.floor(hi_v) - np.floor(lo_v)
        dense = ~(count <= self.max_roots)  # also catches inf/nan far away
        count = np.where(dense, 0, count).astype(np.int64)

        # exact preimages: one per integer crossed inside a monotone piece
        rows, piece = np.nonzero(count)
        reps = count[rows, piece]
        rows, piece = np.repeat(rows, reps), np.repeat(piece, reps)
        first = np.floor(lo_v[rows, piece]) + 1.0
        target = first + np.arange(len(rows)) - np.repeat(np.cumsum(reps) - reps, reps)
        b = self._solve(ends[rows, piece], ends[rows, piece + 1], radius[rows], psi[rows], target)
        slope = self._turns(b, radius[rows], psi[rows])[1]
        # |det J| = 4 |G'| and G' = (2 pi / K) v'
        log_jac = np.log(4.0 * (2.0 * np.pi / self.num_classes) * np.abs(slope))
        terms = [self._log_normal(radius[rows], b) - log_jac]
        owners = [rows]

        # far from the data the preimages are too dense to list: average over the piece,
        # sum_roots N / (4 |G'| K) ~ (1 / (8 pi)) ∫ N(f(b)) db (log-space Gauss-Legendre)
        d_rows, d_piece = np.nonzero(dense)
        if len(d_rows):
            nodes, weights = np.polynomial.legendre.leggauss(64)
            a, c = ends[d_rows, d_piece][:, None], ends[d_rows, d_piece + 1][:, None]
            half = 0.5 * (c - a)
            bb = 0.5 * (a + c) + half * nodes
            with np.errstate(divide="ignore"):
                log_w = np.log(half * weights) - np.log(8.0 * np.pi / self.num_classes)
            vals = self._log_normal(radius[d_rows, None], bb) + log_w
            terms.append(logsumexp(vals, axis=1))
            owners.append(d_rows)

        owner = np.concatenate(owners)
        term = np.concatenate(terms)
        order = np.argsort(owner, kind="stable")
        owner, term = owner[order], term[order]
        starts = np.flatnonzero(np.r_[True, owner[1:] != owner[:-1]])
        peak = np.maximum.reduceat(term, starts)
        sizes = np.diff(np.r_[starts, len(term)])
        with np.errstate(invalid="ignore"):
            total = np.add.reduceat(np.exp(term - np.repeat(peak, sizes)), starts)
        return peak + np.log(total)

    def _solve(
        self,
        lo: np.ndarray,
        hi: np.ndarray,
        radius: np.ndarray,
        psi: np.ndarray,
        target: np.ndarray,
        iterations: int = 100,
    ) -> np.ndarray:
        """The root of ``v(b) = target`` in ``[lo, hi]``, where ``v`` is monotone: Newton steps,
        bisection whenever a step would leave the bracket; converged entries drop out."""
        rising = self._turns(hi, radius, psi)[0] >= self._turns(lo, radius, psi)[0]
        b = 0.5 * (lo + hi)
        result = b.copy()
        active = np.arange(len(b))
        for _ in range(iterations):
            if len(active) == 0:
                break
            value, slope = self._turns(b, radius[active], psi[active])
            value -= target[active]
            below = (value < 0) == rising[active]
            lo_a = np.where(below, b, lo[active])
            hi_a = np.where(below, hi[active], b)
            with np.errstate(divide="ignore", invalid="ignore"):
                step = b - value / slope
            new = np.where((step > lo_a) & (step < hi_a), step, 0.5 * (lo_a + hi_a))
            done = (np.abs(new - b) <= 4e-16 * (1.0 + np.abs(b))) | (hi_a - lo_a <= 1e-15)
            result[active] = new
            keep = ~done
            active, b = active[keep], new[keep]
            lo[active], hi[active] = lo_a[keep], hi_a[keep]
        return result

    def bounds(self) -> Bounds:
        r = 2.0 * (1.0 + 6.0 * self.radial_std) + 6.0 * self.tangential_std
        return ((-r, r), (-r, r))
