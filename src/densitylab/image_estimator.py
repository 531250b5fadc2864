"""``ImageFlow``: a multi-scale flow of integer images with the scikit-learn estimator habits.

``fit(X)`` trains a multi-scale Glow or RealNVP (:mod:`densitylab.flows.image_builders`)
through the one training driver on the dequantized objective; ``score_samples(X)`` is each
image's bits per dimension (lower is better: the importance-weighted bound of
:mod:`densitylab.flows.dequantization`, an upper bound on the model's true bits/dim);
``sample(n, temperature=)`` draws integer images.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from numpy.typing import ArrayLike
from sklearn.base import BaseEstimator

from densitylab._validation import check_positive_int
from densitylab.datasets import check_images, image_levels
from densitylab.estimators import check_fitted
from densitylab.flows import MultiScaleFlow, bits_per_dim, discrete_log_likelihood
from densitylab.flows.image_builders import glow_image, realnvp_image
from densitylab.runtime import torch_threads
from densitylab.training import fit

IMAGE_MODELS: dict[str, Callable[..., MultiScaleFlow]] = {
    "glow": glow_image, "realnvp": realnvp_image,
}
SCORE_CHUNK = 512  # images scored at once


class ImageFlow(BaseEstimator):
    """Density of integer images ``(N, C, H, W)`` (or ``(N, H, W)``) by a multi-scale flow.

    Args:
        model: ``"glow"`` or ``"realnvp"``.
        levels: scales of the multi-scale flow.
        steps: flow steps per scale.
        hidden: channels of the conditioners' convolutions.
        pixel_levels: grey levels (``None``: detected, the largest pixel value + 1).
        dequantization: ``"uniform"`` or ``"variational"`` (a small conditional flow for the
            noise, trained with the model).
        logit: the logit pre-processing of pixel values (its Jacobian counted).
        alpha: the logit's margin: pixels are squeezed into ``[alpha, 1 - alpha]`` first.
        learned_prior: Glow's learned conditional prior at each split.
        epochs: the most passes over the training images.
        batch_size: images per Adam step.
        lr: Adam's learning rate.
        patience: epochs without a better validation bound before stopping (``None``: never).
        val_fraction: share of the training images held out for early stopping (``X_val`` in
            :meth:`fit` replaces this random validation split).
        draws: noise draws of the importance-weighted estimate behind :meth:`score_samples`.
        random_state: seeds the architecture, the split, the batches and the noise.
        threads: torch threads for fitting and scoring (restored afterwards).
        device: ``"cpu"``, ``"cuda"`` or ``"auto"``; ``None`` trains on the CPU.
        distributed: data-parallel training over a running process group (torchrun; see
            :func:`densitylab.fit`): every process gets the model one process would train.

    Example:
        >>> import densitylab as dl
        >>> x = dl.datasets.images("digits")[:300]
        >>> est = ImageFlow(steps=1, hidden=8, epochs=1).fit(x)
        >>> est.score_samples(x[:2]).shape, est.sample(2, temperature=0.7).shape
        ((2,), (2, 1, 8, 8))
    """

    def __init__(
        self, model: str = "glow", levels: int = 2, steps: int = 4, hidden: int = 64,
        pixel_levels: int | None = None, dequantization: str = "uniform", logit: bool = True,
        alpha: float = 1e-3, learned_prior: bool = True, epochs: int = 200,
        batch_size: int = 64, lr: float = 1e-3, patience: int | None = 20,
        val_fraction: float = 0.1, draws: int = 10, random_state: int = 0,
        threads: int | None = 1, device: str | None = None, verbose: bool | None = None,
        distributed: bool = False,
    ) -> None:
        self.model = model
        self.levels = levels
        self.steps = steps
        self.hidden = hidden
        self.pixel_levels = pixel_levels
        self.dequantization = dequantization
        self.logit = logit
        self.alpha = alpha
        self.learned_prior = learned_prior
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.patience = patience
        self.val_fraction = val_fraction
        self.draws = draws
        self.random_state = random_state
        self.threads = threads
        self.device = device
        self.verbose = verbose
        self.distributed = distributed

    def build(self, shape: tuple[int, int, int], pixel_levels: int) -> MultiScaleFlow:
        """The untrained flow these hyper-parameters describe, for images of ``shape``."""
        if self.model not in IMAGE_MODELS:
            raise ValueError(f"unknown image model {self.model!r}; choose one of "
                             f"{sorted(IMAGE_MODELS)}")
        return IMAGE_MODELS[self.model](
            shape, self.levels, self.steps, self.hidden, pixel_levels=pixel_levels,
            logit=self.logit, alpha=self.alpha, learned_prior=self.learned_prior,
            dequantization=self.dequantization, seed=self.random_state)

    def fit(self, X: ArrayLike, y: Any = None, X_val: ArrayLike | None = None) -> ImageFlow:
        """Train on integer images ``X`` (validation: ``X_val`` or a ``val_fraction`` split)."""
        x = check_images(X, "X")
        levels = self._levels(x if X_val is None else np.concatenate(
            [x.reshape(len(x), -1), check_images(X_val, "X_val").reshape(len(X_val), -1)]))
        check_positive_int(self.draws, "draws")
        flow = self.build(tuple(x.shape[1:]), levels)
        rows = x.reshape(len(x), -1).astype(np.float64)
        val = None if X_val is None else self._rows(X_val, flow)
        result = fit(flow, rows, x_val=val, epochs=self.epochs, batch_size=self.batch_size,
                     lr=self.lr, val_fraction=self.val_fraction, seed=self.random_state,
                     patience=self.patience, threads=self.threads, verbose=self.verbose,
                     device=self.device, distributed=self.distributed,
                     objective="dequantized")
        self.restore(result.flow, {"best_epoch": result.best_epoch,
                                   "best_val_nll": result.best_val_loss})
        self.history_ = result.history
        self.wall_time_ = result.wall_time
        return self

    def _levels(self, x: np.ndarray) -> int:
        if self.pixel_levels is None:
            return max(image_levels(x), 2)
        check_positive_int(self.pixel_levels, "pixel_levels")
        if x.max() >= self.pixel_levels:
            raise ValueError(f"pixel values reach {int(x.max())}, outside pixel_levels="
                             f"{self.pixel_levels}")
        return self.pixel_levels

    def restore(self, flow: MultiScaleFlow, summary: dict[str, Any]) -> None:
        """Set the fitted state (used by :meth:`fit` and by :func:`densitylab.load`)."""
        self.flow_ = flow.eval()
        self.image_shape_ = flow.image_shape
        self.pixel_levels_ = flow.levels
        self.n_features_in_ = flow.dim
        self.best_epoch_ = int(summary["best_epoch"])
        self.best_val_nll_ = summary["best_val_nll"]

    def fitted_summary(self) -> dict[str, Any]:
        return {"best_epoch": self.best_epoch_, "best_val_nll": self.best_val_nll_}

    def _rows(self, X: ArrayLike, flow: MultiScaleFlow) -> np.ndarray:
        x = check_images(X, "X")
        if tuple(x.shape[1:]) != flow.image_shape:
            raise ValueError(f"X holds images of shape {tuple(x.shape[1:])}; the model was "
                             f"fitted on {flow.image_shape}")
        if x.max() >= flow.levels:
            raise ValueError(f"pixel values reach {int(x.max())}, outside the model's "
                             f"{flow.levels} levels")
        return x.reshape(len(x), -1).astype(np.float64)

    def log_likelihood(self, X: ArrayLike) -> np.ndarray:
        """Lower bound on ``log P(x)`` of each integer image, in nats (importance-weighted
        over ``draws`` dequantization draws; fixed draws, so repeated calls agree)."""
        check_fitted(self)
        rows = self._rows(X, self.flow_)
        flow = self.flow_
        with torch_threads(self.threads):
            parts = [discrete_log_likelihood(
                flow, torch.as_tensor(chunk, dtype=flow.dtype, device=flow.device),
                self.draws, seed=self.random_state + k)
                for k, chunk in enumerate(np.array_split(rows, max(1, -(-len(rows)
                                                                        // SCORE_CHUNK))))]
        return torch.cat(parts).double().cpu().numpy()

    def score_samples(self, X: ArrayLike) -> np.ndarray:
        """Bits per dimension of each image (lower is better), from :meth:`log_likelihood`."""
        ll = torch.as_tensor(self.log_likelihood(X))
        return bits_per_dim(ll, self.n_features_in_).numpy()

    def score(self, X: ArrayLike, y: Any = None) -> float:
        """Mean log-likelihood bound per image in nats: higher is better (scikit-learn's
        convention for model selection)."""
        return float(self.log_likelihood(X).mean())

    def sample(self, n_samples: int = 1, temperature: float = 1.0,
               random_state: int | None = None) -> np.ndarray:
        """``n_samples`` integer images ``(n, C, H, W)`` at ``temperature`` (0: the mode's
        image, 1: the model itself; Glow's samples look cleaner at 0.5-0.7)."""
        check_fitted(self)
        check_positive_int(n_samples, "n_samples")
        with torch.no_grad(), torch_threads(self.threads):
            images = self.flow_.sample_images(n_samples, temperature, seed=random_state)
        return images.cpu().numpy()
