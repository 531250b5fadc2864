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
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import ArrayLike
from torch import Tensor

from densitylab._validation import check_positive_int
from densitylab.baselines._common import (
    MLP,
    Seed,
    StandardizedModel,
    all_finite,
    batches,
    check_nonnegative,
    check_seed,
    check_widths,
    params_finite,
    randn,
    rng_from,
    training_data,
    warn_diverged,
)
from densitylab.training import MAX_BAD_STEPS, _check_options, _progress_enabled, torch_threads

VAL_MAX_POINTS = 1000  # cap on each set in the per-epoch validation energy distance


class GAN(StandardizedModel):
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

    def __init__(
        self,
        dim: int,
        latent_dim: int = 2,
        hidden: Sequence[int] = (64, 64),
        activation: str = "leaky_relu",
        seed: int = 0,
    ) -> None:
        super().__init__(dim)
        self.latent_dim = check_positive_int(latent_dim, "latent_dim")
        widths = check_widths(hidden)
        rng = torch.Generator().manual_seed(check_seed(seed))
        self.generator = MLP(self.latent_dim, widths, dim, activation, rng)
        self.discriminator = MLP(dim, widths, 1, activation, rng)
        self.config = {"dim": self.dim, "latent_dim": self.latent_dim, "hidden": list(widths),
                       "activation": activation, "seed": int(seed)}

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


@dataclass
class GANHistory:
    """Per-epoch means of the two losses, the validation energy distance, cumulative seconds.

    ``discriminator_loss`` is the classification part of ``L_D`` (``2 log 2 ~ 1.386`` when ``D``
    cannot tell real from generated), ``r1_penalty`` the mean ``|grad_x D|^2`` on real batches,
    ``val_energy`` the energy distance between held-out data and generated points (fixed latent
    draws every epoch), ``nan`` when fewer than two validation points exist.
    """

    discriminator_loss: list[float] = field(default_factory=list)
    generator_loss: list[float] = field(default_factory=list)
    r1_penalty: list[float] = field(default_factory=list)
    val_energy: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)

    def rows(self) -> Iterator[dict[str, float]]:
        """One dict per epoch (epoch counted from 1), e.g. for ``history.csv``."""
        columns = zip(self.discriminator_loss, self.generator_loss, self.r1_penalty,
                      self.val_energy, self.seconds, strict=True)
        for epoch, (d, g, r1, energy, seconds) in enumerate(columns, 1):
            yield {"epoch": epoch, "discriminator_loss": d, "generator_loss": g,
                   "r1_penalty": r1, "val_energy": energy, "seconds": seconds}


@dataclass
class GANFitResult:
    """What :func:`fit_gan` returns: the model after the last finite epoch and its history.

    There is no "best epoch": GAN losses do not measure sample quality, so the final model is
    kept (``history.val_energy`` shows how the samples evolved).
    """

    model: GAN
    history: GANHistory
    wall_time: float
    stop_reason: str  # "completed", "diverged" or "interrupted"
    train_indices: np.ndarray
    val_indices: np.ndarray

    @property
    def epochs_run(self) -> int:
        return len(self.history.generator_loss)


def fit_gan(
    model: GAN,
    x: ArrayLike,
    *,
    epochs: int = 1000,
    batch_size: int = 64,
    lr: float = 1e-3,
    val_fraction: float = 0.1,
    x_val: ArrayLike | None = None,
    seed: int = 8,
    r1_gamma: float = 1.0,
    betas: tuple[float, float] = (0.5, 0.999),
    standardize: bool = False,
    threads: int | None = 1,
    verbose: bool | None = None,
) -> GANFitResult:
    """Train ``model`` on ``x`` ``(n, dim)``: per batch one discriminator step, then one
    generator step, each with its own Adam (``lr``, ``betas``); trained in place.

    ``r1_gamma`` weighs the R1 penalty (0 switches it off). ``val_fraction`` / ``x_val`` give
    the held-out points of ``history.val_energy``; ``seed`` fixes the split, batch order and
    latent draws, so the same seed gives the same result. ``standardize`` fits the model's
    ``loc`` / ``scale`` buffers to the training data first. A non-finite loss or gradient skips
    the step; ``MAX_BAD_STEPS`` in a row stop training with a ``RuntimeWarning`` and restore the
    parameters from the end of the last epoch whose parameters were all finite.

    References:
        Goodfellow, I. et al. (2014). Generative adversarial nets. NeurIPS.
        Mescheder, L., Geiger, A. and Nowozin, S. (2018). Which training methods for GANs do
        actually converge? ICML.
    """
    if not isinstance(model, GAN):
        raise ValueError(f"fit_gan needs a GAN, got {type(model).__name__}")
    options = _check_options(epochs, batch_size, lr, val_fraction, None, None, None)
    seed = check_seed(seed)
    gamma = check_nonnegative(r1_gamma, "r1_gamma")
    if len(betas) != 2 or not all(isinstance(b, int | float) and 0 <= b < 1 for b in betas):
        raise ValueError(f"betas must be two numbers in [0, 1), got {betas!r}")
    train, val, train_idx, val_idx = training_data(model, x, x_val, val_fraction, seed)
    if standardize:
        model._fit_standardization(train)
    u_train = model._standardize(train)
    val_np = val.cpu().numpy().astype(np.float64)

    rng = torch.Generator().manual_seed(seed)
    g_params = list(model.generator.parameters())
    d_params = list(model.discriminator.parameters())
    g_opt = torch.optim.Adam(g_params, lr=options.lr, betas=tuple(betas), fused=True)
    d_opt = torch.optim.Adam(d_params, lr=options.lr, betas=tuple(betas), fused=True)
    history = GANHistory()
    last_good = {k: v.detach().clone() for k, v in model.state_dict().items()}
    stop_reason, bad_steps = "completed", 0
    start = time.perf_counter()
    model.train()
    with (
        torch_threads(threads),
        _gan_progress(_progress_enabled(verbose), options.epochs) as advance,
    ):
        try:
            for epoch in range(1, options.epochs + 1):
                sums, counted = np.zeros(3), 0
                for index in batches(len(u_train), options.batch_size, rng, model.device):
                    losses = _step(model, u_train[index], gamma, rng, d_opt, g_opt)
                    if losses is None:
                        bad_steps += 1
                        if bad_steps >= MAX_BAD_STEPS:
                            break
                    else:
                        bad_steps = 0
                        sums, counted = sums + losses, counted + 1
                d_loss, g_loss, r1 = sums / counted if counted else (math.nan,) * 3
                history.discriminator_loss.append(float(d_loss))
                history.generator_loss.append(float(g_loss))
                history.r1_penalty.append(float(r1))
                history.val_energy.append(_val_energy(model, val_np, seed))
                history.seconds.append(time.perf_counter() - start)
                advance(epoch, history)
                if bad_steps >= MAX_BAD_STEPS:
                    stop_reason = "diverged"
                    warn_diverged(epoch, "the parameters of the last finite epoch")
                    break
                if params_finite(model):
                    last_good = {k: v.detach().clone() for k, v in model.state_dict().items()}
        except KeyboardInterrupt:
            stop_reason = "interrupted"
            warnings.warn("training interrupted: keeping the last finite model", stacklevel=2)
    model.load_state_dict(last_good)
    model.eval()
    return GANFitResult(
        model=model, history=history, wall_time=time.perf_counter() - start,
        stop_reason=stop_reason, train_indices=train_idx, val_indices=val_idx,
    )


def _step(
    model: GAN,
    real: Tensor,
    gamma: float,
    rng: torch.Generator,
    d_opt: torch.optim.Optimizer,
    g_opt: torch.optim.Optimizer,
) -> np.ndarray | None:
    """One discriminator and one generator update; ``None`` (and no update) if not finite."""
    d_params = list(model.discriminator.parameters())
    g_params = list(model.generator.parameters())
    real = real.detach().requires_grad_(gamma > 0)
    d_real = model.discriminator(real).squeeze(-1)
    with torch.no_grad():
        fake = model.generator(model._latent(len(real), rng))
    d_fake = model.discriminator(fake).squeeze(-1)
    d_loss = F.softplus(-d_real).mean() + F.softplus(d_fake).mean()
    if gamma > 0:
        (grad,) = torch.autograd.grad(d_real.sum(), real, create_graph=True)
        r1 = grad.square().sum(-1).mean()
    else:
        r1 = d_loss.new_zeros(())
    d_opt.zero_grad()
    (d_loss + 0.5 * gamma * r1).backward(inputs=d_params)
    if not all_finite([d_loss, r1], d_params):
        return None
    d_opt.step()

    g_loss = F.softplus(-model.discriminator(model.generator(model._latent(len(real), rng)))).mean()
    g_opt.zero_grad()
    g_loss.backward(inputs=g_params)
    if not all_finite([g_loss], g_params):
        return None
    g_opt.step()
    return torch.stack([d_loss, g_loss, r1]).detach().double().numpy()


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


@contextmanager
def _gan_progress(enabled: bool, epochs: int):
    """A rich progress bar (epoch, D and G losses, validation energy, ETA) or a no-op."""
    if not enabled:
        yield lambda epoch, history: None
        return
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn("[bold]training GAN[/]"), BarColumn(),
               TextColumn("epoch {task.completed}/{task.total}"),
               TextColumn("{task.fields[losses]}"), TimeRemainingColumn())
    with Progress(*columns, transient=False) as progress:
        task = progress.add_task("fit", total=epochs, losses="")

        def advance(epoch: int, h: GANHistory) -> None:
            label = (f"D {h.discriminator_loss[-1]:.3f}  G {h.generator_loss[-1]:.3f}  "
                     f"val energy {h.val_energy[-1]:.4f}")
            progress.update(task, completed=epoch, losses=label)

        yield advance
