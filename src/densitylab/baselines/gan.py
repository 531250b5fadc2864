"""Generative adversarial network: a sampler with no density.

A generator ``G`` maps ``z ~ N(0, I_L)`` to data space; a discriminator ``D`` scores points
as real or generated. The model defines samples only: ``G`` pushes a ``latent_dim``-dimensional
Gaussian through a non-invertible map, so there is no tractable ``log p(x)`` (for
``latent_dim < dim`` none exists at all). ``GAN`` therefore has no ``log_prob``; compare it with
the flows by sample-based metrics (``densitylab.metrics.energy_distance``, ``mmd``).

Objective: the non-saturating GAN loss with the R1 gradient penalty on real data,
``L_D = E softplus(-D(x)) + E softplus(D(G(z))) + (gamma / 2) E |grad_x D(x)|^2`` and
``L_G = E softplus(-D(G(z)))``, which Mescheder et al. (2018) show converges locally where the
unregularised game oscillates.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import ArrayLike
from torch import Tensor, nn

from densitylab._validation import check_positive_int
from densitylab.baselines._common import (
    MLP,
    LatentVariableModel,
    Seed,
    check_nonnegative,
    check_seed,
    fit_baseline,
    randn,
    rng_from,
)
from densitylab.training import FitResult, Options
from densitylab.training.objectives import Objective

VAL_MAX_POINTS = 1000  # cap on each set in the per-epoch validation energy distance


class GAN(LatentVariableModel):
    """MLP generator ``latent_dim -> hidden -> dim`` and discriminator ``dim -> hidden -> 1``.

    Samples only: there is deliberately no ``log_prob`` (a GAN defines no tractable density).
    Parameters are initialised from ``seed``.

    Example:
        >>> import densitylab as dl
        >>> x = dl.datasets.get("moons").sample(500, seed=0)
        >>> result = fit_gan(GAN(dim=2), x, epochs=3, verbose=False)
        >>> result.model.sample(1000, seed=0).shape
        torch.Size([1000, 2])

    References:
        Goodfellow, I. et al. (2014). Generative adversarial nets. NeurIPS.
        Mescheder, L., Geiger, A. and Nowozin, S. (2018). Which training methods for GANs do
        actually converge? ICML.
    """

    def _build(self, widths: tuple[int, ...], activation: str, rng: torch.Generator) -> None:
        self.generator = MLP(self.latent_dim, widths, self.dim, activation, rng)
        self.discriminator = MLP(self.dim, widths, 1, activation, rng)

    def _latent(self, n: int, rng: torch.Generator) -> Tensor:
        return randn((n, self.latent_dim), rng, self.loc)

    @torch.no_grad()
    def sample(self, n: int, seed: Seed = None) -> Tensor:
        """``n`` generated points ``G(z)`` in the user's units, ``(n, dim)``.

        ``seed`` is an int, a ``torch.Generator`` or ``None`` (fresh entropy, not torch's
        global generator).
        """
        n = check_positive_int(n, "number of samples")
        return self._unstandardize(self.generator(self._latent(n, rng_from(seed))))

    @torch.no_grad()
    def discriminate(self, x: ArrayLike | Tensor) -> Tensor:
        """Discriminator logits ``D(x)``, ``(n,)``: positive means "looks real". Not a density."""
        return self.discriminator(self._standardize(self._as_input(x))).squeeze(-1)


class AdversarialGame(Objective):
    """The GAN's two-player step: per batch one discriminator update, then one generator
    update, each with its own Adam. GAN losses do not measure sample quality, so the weights
    kept are the last finite ones; validation records the energy distance between held-out
    data and generated points (fixed latent draws every epoch)."""

    train_columns = ("discriminator_loss", "generator_loss", "r1_penalty")
    val_column = "val_energy"
    keep_best = False

    def __init__(self, r1_gamma: float, betas: tuple[float, float], seed: int) -> None:
        self.gamma, self.betas, self.seed = r1_gamma, tuple(betas), seed
        self.rng = torch.Generator().manual_seed(seed)

    def parameter_groups(self, model: GAN) -> list[list[nn.Parameter]]:
        return [list(model.discriminator.parameters()), list(model.generator.parameters())]

    def train_step(self, engine, batch: Tensor) -> Tensor:
        """Non-saturating losses with the R1 penalty on real data; a step whose loss or
        gradient is not finite updates nothing (and the generator is not updated after a
        failed discriminator step)."""
        model, gamma = engine.model, self.gamma
        real = model._standardize(batch[0]).detach().requires_grad_(gamma > 0)
        d_real = model.discriminator(real).squeeze(-1)
        with torch.no_grad():
            fake = model.generator(model._latent(len(real), self.rng))
        d_fake = model.discriminator(fake).squeeze(-1)
        d_loss = F.softplus(-d_real).mean() + F.softplus(d_fake).mean()
        if gamma > 0:
            (grad,) = torch.autograd.grad(d_real.sum(), real, create_graph=True)
            r1 = grad.square().sum(-1).mean()
        else:
            r1 = d_loss.new_zeros(())
        failed = torch.full((1, 3), math.nan, dtype=torch.float64)
        d_total = (d_loss + 0.5 * gamma * r1).reshape(1)
        if not engine.descend(d_total, (d_loss + r1).detach().reshape(1), group=0).all():
            return failed
        latent = model._latent(len(real), self.rng)
        g_loss = F.softplus(-model.discriminator(model.generator(latent))).mean().reshape(1)
        if not engine.descend(g_loss, g_loss.detach(), group=1).all():
            return failed
        return torch.stack([d_loss, g_loss[0], r1]).detach().double().reshape(1, 3)

    def validate(self, engine) -> Tensor:
        val = engine.x_val[0].cpu().double().numpy()
        return torch.tensor([_val_energy(engine.model, val, self.seed)])

    def label(self, history) -> str:
        return (f"D {history.discriminator_loss[-1]:.3f}  G {history.generator_loss[-1]:.3f}"
                f"  val energy {history.val_energy[-1]:.4f}")


def fit_gan(
    model: GAN,
    x: ArrayLike,
    *,
    x_val: ArrayLike | None = None,
    seed: int = 8,
    r1_gamma: float = 1.0,
    betas: tuple[float, float] = (0.5, 0.999),
    standardize: bool = False,
    threads: int | None = 1,
    verbose: bool | None = None,
    **options,
) -> FitResult:
    """Train ``model`` on ``x`` ``(n, dim)`` with :class:`AdversarialGame` on the training
    driver of :func:`densitylab.fit`; trained in place.

    ``options`` are the driver's budget (:class:`densitylab.training.Options`: ``epochs``,
    ``batch_size``, ``lr``, ``val_fraction``, ...). ``r1_gamma`` weighs the R1 penalty (0
    switches it off); ``lr`` and ``betas`` are both players' Adam settings. ``val_fraction``
    / ``x_val`` give the held-out points of ``history.val_energy`` (``nan`` with fewer than
    two); ``seed`` fixes the split, batch order and latent draws, so the same seed gives the
    same result. ``standardize`` fits the model's ``loc`` / ``scale`` buffers to the training
    data first. A non-finite loss or gradient skips the step; ``MAX_BAD_STEPS`` in a row stop
    training with a ``RuntimeWarning``. The model returned has the parameters of the last
    epoch whose parameters were all finite.

    References:
        Goodfellow, I. et al. (2014). Generative adversarial nets. NeurIPS.
        Mescheder, L., Geiger, A. and Nowozin, S. (2018). Which training methods for GANs do
        actually converge? ICML.
    """
    if not isinstance(model, GAN):
        raise ValueError(f"fit_gan needs a GAN, got {type(model).__name__}")
    options = Options(**options)
    gamma = check_nonnegative(r1_gamma, "r1_gamma")
    if len(betas) != 2 or not all(isinstance(b, int | float) and 0 <= b < 1 for b in betas):
        raise ValueError(f"betas must be two numbers in [0, 1), got {betas!r}")
    game = AdversarialGame(gamma, betas, check_seed(seed))
    return fit_baseline(model, game, x, x_val, options, seed, standardize=standardize,
                        threads=threads, verbose=verbose)


def _val_energy(model: GAN, val: np.ndarray, seed: int) -> float:
    """Energy distance between held-out data and ``max(len(val), 256)`` generated points."""
    from densitylab.metrics import energy_distance

    if len(val) < 2:
        return math.nan
    with torch.no_grad():
        generated = model.sample(min(max(len(val), 256), VAL_MAX_POINTS), seed=seed)
    if not torch.isfinite(generated).all():
        return math.nan
    return energy_distance(generated.cpu().double().numpy(), val, VAL_MAX_POINTS, seed=seed)
