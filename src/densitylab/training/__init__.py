"""Training: one driver for every model, with pluggable objectives and engines.

- :func:`fit` / :func:`fit_many`: maximum-likelihood fitting of flows (one, or many at once).
- :mod:`~densitylab.training.driver`: the one epoch loop (split, batches, divergence guard,
  early stopping, kept weights, moving average, checkpoints, progress, interruption).
- :mod:`~densitylab.training.objectives`: what is minimised (a flow's NLL; the baselines
  add the VAE's negative ELBO and the GAN's two-player step).
- engines: :mod:`~densitylab.training.autograd` (any torch model, any device, data-parallel),
  :mod:`~densitylab.training.compiled_realnvp` (numba epochs for small RealNVP flows); the
  NumPy teaching flow brings its own.
"""

from __future__ import annotations

from densitylab.training.fitting import fit, fit_many
from densitylab.training.options import MAX_BAD_STEPS, Options
from densitylab.training.result import FitResult, History

__all__ = ["MAX_BAD_STEPS", "FitResult", "History", "Options", "fit", "fit_many"]
