"""Baselines to compare the flows with: a VAE (ELBO and importance-weighted log-likelihood)
and a GAN (samples only, no likelihood).

Both share the flows' conventions: ``(n, dim)`` inputs (arrays or tensors), tensors out,
explicit seeds, training on :func:`densitylab.fit`'s driver (their objectives plug into it),
and ``densitylab.save`` / ``densitylab.load`` persistence.

Example:
    >>> import densitylab as dl
    >>> moons = dl.datasets.get("moons")
    >>> x, x_test = moons.sample(500, seed=0), moons.sample(100, seed=1)
    >>> vae = dl.baselines.fit_vae(dl.baselines.VAE(dim=2), x, epochs=3, verbose=False).model
    >>> log_p, se = vae.log_prob_iw(x_test, k=100, seed=0)   # log p(x) per point, its std. error
    >>> gan = dl.baselines.fit_gan(dl.baselines.GAN(dim=2), x, epochs=3, verbose=False).model
    >>> gan.sample(1000, seed=0).shape                       # a GAN has samples, no density
    torch.Size([1000, 2])
"""

from __future__ import annotations

from densitylab.baselines.gan import GAN, AdversarialGame, fit_gan
from densitylab.baselines.vae import VAE, NegativeELBO, collapse_diagnosis, fit_vae

__all__ = ["GAN", "VAE", "AdversarialGame", "NegativeELBO", "collapse_diagnosis", "fit_gan",
           "fit_vae"]
