"""Variational autoencoder: a latent-variable density model with a bound, not an exact density.

Model: ``z ~ N(0, I_L)``, ``x | z ~ N(mu(z), diag(sigma^2))`` with an MLP ``mu`` and one learned
standard deviation per data dimension, shared by all points. Inference: ``q(z | x) =
N(m(x), diag(s(x)^2))`` with an MLP encoder. ``log p(x)`` itself is an intractable integral;
the VAE reports the ELBO (a lower bound) and an importance-weighted estimate that tightens
towards ``log p(x)`` as the number of samples K grows.

Why a per-dimension variance rather than one predicted per point: a decoder that may shrink
its variance around individual training points can make the likelihood unbounded (Mattei &
Frellsen, 2018); a shared variance keeps the maximum-likelihood problem well posed, and with
``latent_dim >= dim`` and a linear decoder the model already contains every Gaussian
``N(b, W W^T + diag(sigma^2))``.
"""

from __future__ import annotations

import math

import torch
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
from densitylab.training.objectives import Likelihood

LOG_2PI = math.log(2 * math.pi)
VAL_SAMPLES = 8  # reparametrisation samples per validation point (fixed noise every epoch)
IW_CHUNK = 2**18  # points x K evaluated at once by log_prob_iw (bounds memory)


class VAE(LatentVariableModel):
    """Gaussian VAE for ``(n, dim)`` data with a ``latent_dim``-dimensional standard-normal prior.

    Encoder and decoder are MLPs with ``hidden`` widths (``()`` gives linear maps: with a
    linear decoder the model is probabilistic PCA / factor analysis); the decoder noise is one
    learned standard deviation per data dimension. Parameters are initialised from ``seed``.
    Evaluation methods take array-likes or tensors, return tensors, and build no autograd graph.

    Example:
        >>> import densitylab as dl
        >>> moons = dl.datasets.get("moons")
        >>> x, x_test = moons.sample(500, seed=0), moons.sample(100, seed=1)
        >>> vae = fit_vae(VAE(dim=2, latent_dim=2), x, epochs=3, verbose=False).model
        >>> log_p, se = vae.log_prob_iw(x_test, k=100, seed=0)
        >>> log_p.shape
        torch.Size([100])

    References:
        Kingma, D. P. and Welling, M. (2014). Auto-encoding variational Bayes. ICLR.
        Burda, Y., Grosse, R. and Salakhutdinov, R. (2016). Importance weighted autoencoders. ICLR.
        Mattei, P.-A. and Frellsen, J. (2018). Leveraging the exact likelihood of deep latent
        variable models. NeurIPS.
    """

    def _build(self, widths: tuple[int, ...], activation: str, rng: torch.Generator) -> None:
        self.encoder = MLP(self.dim, widths, 2 * self.latent_dim, activation, rng)
        self.decoder = MLP(self.latent_dim, widths, self.dim, activation, rng)
        self.decoder_log_std = nn.Parameter(torch.zeros(self.dim))

    # -- internal computations in standardised units u = (x - loc) / scale ---------------------
    def _encode(self, u: Tensor) -> tuple[Tensor, Tensor]:
        """Posterior mean and log standard deviation, each ``(n, latent_dim)``."""
        mean, log_std = self.encoder(u).chunk(2, dim=-1)
        return mean, log_std

    def _decoder_log_lik(self, u: Tensor, z: Tensor) -> Tensor:
        """``log p(u | z)`` for ``z`` ``(n, k, L)`` and ``u`` ``(n, D)``, shape ``(n, k)``."""
        residual = (u.unsqueeze(1) - self.decoder(z)) * torch.exp(-self.decoder_log_std)
        return -0.5 * (residual.square() + LOG_2PI).sum(-1) - self.decoder_log_std.sum()

    def _elbo_terms(self, u: Tensor, n_samples: int, rng: torch.Generator
                    ) -> tuple[Tensor, Tensor]:
        """Per point in standardised units: the Monte Carlo reconstruction term ``(n,)`` and
        the closed-form ``KL(q(z|u) || N(0, I))`` per latent coordinate ``(n, L)``."""
        mean, log_std = self._encode(u)
        eps = randn((len(u), n_samples, self.latent_dim), rng, u)
        z = mean.unsqueeze(1) + torch.exp(log_std).unsqueeze(1) * eps
        kl = 0.5 * (mean.square() + torch.exp(2 * log_std) - 1 - 2 * log_std)
        return self._decoder_log_lik(u, z).mean(1), kl

    def _elbo(self, u: Tensor, n_samples: int, rng: torch.Generator) -> Tensor:
        """ELBO per point in standardised units: reconstruction minus KL."""
        reconstruction, kl = self._elbo_terms(u, n_samples, rng)
        return reconstruction - kl.sum(-1)

    def _log_weights(self, u: Tensor, k: int, rng: torch.Generator) -> Tensor:
        """``log p(u, z_k) - log q(z_k | u)`` for ``k`` posterior draws per point: ``(n, k)``."""
        mean, log_std = self._encode(u)
        eps = randn((len(u), k, self.latent_dim), rng, u)
        z = mean.unsqueeze(1) + torch.exp(log_std).unsqueeze(1) * eps
        log_prior = -0.5 * (z.square() + LOG_2PI).sum(-1)
        log_q = -0.5 * (eps.square() + LOG_2PI).sum(-1) - log_std.sum(-1, keepdim=True)
        return self._decoder_log_lik(u, z) + log_prior - log_q

    # -- public API ----------------------------------------------------------------------------
    @torch.no_grad()
    def elbo(self, x: ArrayLike | Tensor, n_samples: int = 100, seed: Seed = 0) -> Tensor:
        """Evidence lower bound per point, nats in the user's units, shape ``(n,)``.

        ``E_q[log p(x|z)] - KL(q(z|x) || p(z)) <= log p(x)``; the expectation is a Monte Carlo
        average over ``n_samples`` reparametrised draws (seeded), the KL is exact.
        """
        n_samples = check_positive_int(n_samples, "n_samples")
        u = self._standardize(self._as_input(x))
        rng = rng_from(seed)
        return self._elbo(u, n_samples, rng) + self._log_jacobian()

    @torch.no_grad()
    def log_prob_iw(
        self, x: ArrayLike | Tensor, k: int = 1000, seed: Seed = 0
    ) -> tuple[Tensor, Tensor]:
        """Importance-weighted estimate of ``log p(x)`` with ``k`` samples from ``q(z|x)``.

        Returns ``(estimate, standard_error)``, both ``(n,)`` in nats in the user's units. The
        estimate ``log (1/k) sum_k p(x, z_k) / q(z_k|x)`` is the IWAE bound: its expectation is
        below ``log p(x)``, never below the ELBO, and rises to ``log p(x)`` as ``k`` grows. The
        standard error is the delta-method one, ``std(w) / (sqrt(k) mean(w))``; it ignores that
        downward bias, which is small once the error itself is small.

        References:
            Burda, Y., Grosse, R. and Salakhutdinov, R. (2016). Importance weighted autoencoders.
        """
        k = check_positive_int(k, "k")
        u = self._standardize(self._as_input(x, beyond_range=True))
        rng = rng_from(seed)
        estimates, errors = [], []
        for chunk in u.split(max(1, IW_CHUNK // k)):
            log_w = self._log_weights(chunk, k, rng)
            top = log_w.max(1, keepdim=True).values
            w = torch.exp(log_w - top)  # the largest weight is 1: no overflow
            mean_w = w.mean(1)
            estimates.append(top.squeeze(1) + torch.log(mean_w))
            var_w = w.var(1) if k > 1 else torch.full_like(mean_w, math.inf)
            errors.append(torch.sqrt(var_w / k) / mean_w)
        estimate, error = torch.cat(estimates) + self._log_jacobian(), torch.cat(errors)
        # far beyond the data the weights overflow (inf - inf): no representable density there
        overflowed = torch.isnan(estimate)
        estimate = torch.where(overflowed, -math.inf, estimate)
        return estimate, torch.where(overflowed, math.inf, error)

    @torch.no_grad()
    def encode(self, x: ArrayLike | Tensor) -> tuple[Tensor, Tensor]:
        """Posterior ``q(z|x)``: mean and standard deviation, each ``(n, latent_dim)``."""
        mean, log_std = self._encode(self._standardize(self._as_input(x)))
        return mean, torch.exp(log_std)

    @torch.no_grad()
    def decode(self, z: ArrayLike | Tensor) -> Tensor:
        """Decoder mean ``E[x | z]`` in the user's units, ``(n, dim)``."""
        z = torch.as_tensor(z, dtype=self.dtype, device=self.device)
        if z.dim() != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f"z must have shape (n, {self.latent_dim}), got {tuple(z.shape)}")
        return self._unstandardize(self.decoder(z))

    @torch.no_grad()
    def sample(self, n: int, seed: Seed = None) -> Tensor:
        """``n`` draws from ``p(x) = int p(x|z) p(z) dz`` (decoder noise included), ``(n, dim)``.

        ``seed`` is an int, a ``torch.Generator`` or ``None`` (fresh entropy, not torch's
        global generator).
        """
        n = check_positive_int(n, "number of samples")
        rng = rng_from(seed)
        z, noise = randn((n, self.latent_dim), rng, self.loc), randn((n, self.dim), rng, self.loc)
        return self._unstandardize(self.decoder(z) + torch.exp(self.decoder_log_std) * noise)


class NegativeELBO(Likelihood):
    """The VAE's objective: the negative ELBO per point in the user's units (one
    reparametrised sample per point and step, closed-form KL); validated with
    ``VAL_SAMPLES`` samples per point and the same noise every epoch, so epochs compare
    fairly.

    Two guards against posterior collapse (the encoder matching the prior, the decoder
    ignoring z, and the model shrinking to one Gaussian), on the training loss only: the KL
    term's weight rises linearly from 0 to 1 over the first ``warmup_steps`` optimizer steps
    (KL annealing, Bowman et al. 2016), and each latent coordinate's KL counts at least
    ``free_bits`` nats per point (Kingma et al. 2016), so the optimiser gains nothing by
    pushing it to 0. Validation, and the kept weights, always use the true negative ELBO.
    """

    def __init__(self, seed: int, warmup_steps: int = 0, free_bits: float = 0.0) -> None:
        self.seed = seed
        self.rng = torch.Generator().manual_seed(seed)
        self.warmup_steps = warmup_steps
        self.free_bits = free_bits
        self.steps = 0

    def point_losses(self, model: VAE, batch: Tensor) -> Tensor:
        self.steps += 1
        weight = min(1.0, self.steps / self.warmup_steps) if self.warmup_steps else 1.0
        u = model._standardize(batch[0])
        reconstruction, kl = model._elbo_terms(u, 1, self.rng)
        if self.free_bits:
            kl = kl.clamp(min=self.free_bits)
        return -(reconstruction - weight * kl.sum(-1) + model._log_jacobian()).unsqueeze(0)

    def val_point_losses(self, model: VAE, points: Tensor) -> Tensor:
        rng = torch.Generator().manual_seed(self.seed)
        return self._negative_elbo(model, points, VAL_SAMPLES, rng)

    @staticmethod
    def _negative_elbo(model: VAE, batch: Tensor, n_samples: int, rng) -> Tensor:
        """``(1, b)`` losses of a one-model batch ``(1, b, D)``."""
        u = model._standardize(batch[0])
        return -(model._elbo(u, n_samples, rng) + model._log_jacobian()).unsqueeze(0)


def fit_vae(
    model: VAE,
    x: ArrayLike,
    *,
    x_val: ArrayLike | None = None,
    seed: int = 8,
    standardize: bool = False,
    kl_warmup: float = 0.0,
    free_bits: float = 0.0,
    threads: int | None = 1,
    verbose: bool | None = None,
    **options,
) -> FitResult:
    """Fit ``model`` to ``x`` ``(n, dim)`` by maximising the ELBO with Adam (one reparametrised
    sample per point and step, closed-form KL); the model is trained in place and returned.

    Trained by :func:`densitylab.fit`'s driver, so arguments mean what they mean there, and
    ``options`` are its budget and rules (:class:`densitylab.training.Options`: ``epochs``,
    ``batch_size``, ``lr``, ``val_fraction``, ``patience``, ...): ``val_fraction`` of ``x``
    (split by ``seed``) is held out unless ``x_val`` is given, and the model kept is the one
    with the lowest validation negative ELBO. ``seed`` also fixes the
    batch order and the noise: the same seed gives the same result. ``standardize`` fits the
    model's ``loc`` / ``scale`` buffers to the training data first; densities stay in the
    user's units. ``history.train_nll`` / ``val_nll`` hold the negative ELBO per epoch (an
    upper bound on the NLL). ``kl_warmup``: the share of the optimizer steps over which
    the KL term's weight rises from 0 to 1; ``free_bits``: the least KL, in nats per point,
    each latent coordinate is charged (both against posterior collapse, see
    :class:`NegativeELBO`; 0 turns either off).

    Example:
        >>> import densitylab as dl
        >>> moons = dl.datasets.get("moons")
        >>> x, x_test = moons.sample(500, seed=0), moons.sample(100, seed=1)
        >>> result = fit_vae(VAE(dim=2), x, epochs=3, lr=1e-3, seed=0, verbose=False)
        >>> result.model.elbo(x_test).shape        # a lower bound on log p(x), per point
        torch.Size([100])

    References:
        Kingma, D. P. and Welling, M. (2014). Auto-encoding variational Bayes. ICLR.
    """
    if not isinstance(model, VAE):
        raise ValueError(f"fit_vae needs a VAE, got {type(model).__name__}")
    if not 0.0 <= kl_warmup <= 1.0:
        raise ValueError(f"kl_warmup must lie in [0, 1], got {kl_warmup!r}")
    free_bits = check_nonnegative(free_bits, "free_bits")
    fit_options = Options(**options)
    n_train = len(x) if x_val is not None else len(x) - round(fit_options.val_fraction * len(x))
    steps = fit_options.epochs * -(-max(n_train, 1) // fit_options.batch_size)
    objective = NegativeELBO(check_seed(seed), round(kl_warmup * steps), free_bits)
    return fit_baseline(model, objective, x, x_val, fit_options, seed,
                        standardize=standardize, threads=threads, verbose=verbose)


def collapse_diagnosis(
    elbo_nll: float, iw_nll: float, iw_se: float, gaussian_nll: float, gaussian_se: float,
    z: float = 2.0,
) -> dict[str, object]:
    """Has a trained VAE collapsed to (no better than) one Gaussian?

    Posterior collapse: the encoder matches the prior, the decoder ignores z, and the model is
    one Gaussian with the decoder's diagonal noise. Its two signatures, from numbers measured on
    the same test points: the importance-weighted NLL ``iw_nll`` (a near-exact likelihood) is
    not below the single full-covariance Gaussian's ``gaussian_nll`` by more than ``z``
    standard errors, and the ELBO is as tight as the IW estimate (``elbo_nll - iw_nll`` near 0:
    q(z|x) already equals a posterior that says nothing). The verdict rests on the first,
    which is what matters for ranking the VAE; the second is reported as the cause.

    Returns ``{"collapsed": bool, "margin": gaussian_nll - iw_nll, "noise": z * se of that
    difference, "bound_gap": elbo_nll - iw_nll}``.
    """
    margin = gaussian_nll - iw_nll
    noise = z * math.hypot(iw_se, gaussian_se)
    return {"collapsed": bool(margin <= noise), "margin": float(margin), "noise": float(noise),
            "bound_gap": float(elbo_nll - iw_nll)}
