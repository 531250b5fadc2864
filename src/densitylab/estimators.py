"""scikit-learn estimators around the flows, so pipelines and ``GridSearchCV`` just work."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from numpy.typing import ArrayLike
from sklearn.base import BaseEstimator, DensityMixin, clone
from sklearn.exceptions import NotFittedError
from sklearn.utils.validation import validate_data

from densitylab._rounding import dequantise, rounding_steps
from densitylab._validation import check_positive_int, complete_rows
from densitylab.evaluation import flow_log_prob, in_float64
from densitylab.flows import Flow, build
from densitylab.flows.recipes import TABULAR_MODELS, settings, split, tabular_budget
from densitylab.guard import Guard, guard_weight
from densitylab.runtime import torch_threads
from densitylab.training import fit, fit_many


def check_fitted(estimator: BaseEstimator) -> None:
    if not hasattr(estimator, "flow_"):
        raise NotFittedError(f"this {type(estimator).__name__} is not fitted yet; call fit first")


SHIFT_ABOVE = 100.0
"""A column whose mean lies further than this many standard deviations from 0 is shifted to
mean 0 in float64 before the data meet the flow's float32 arithmetic (timestamps, coordinates in
metres: at 1e7 float32 rounds to whole units). The shift is part of the estimator, a
translation without Jacobian; columns nearer 0 are left as they are."""


def float64_shift(x: np.ndarray) -> np.ndarray:
    """The per-column shift of :data:`SHIFT_ABOVE` for data ``x`` ``(n, d)``, in float64."""
    mean, std = x.mean(axis=0), x.std(axis=0)
    return np.where(np.abs(mean) > SHIFT_ABOVE * std, mean, 0.0)


def checked_shift(summary: dict[str, Any], dim: int) -> np.ndarray:
    """The shift of a fitted summary (zeros when absent: saved before shifts existed)."""
    shift = np.asarray(summary.get("shift", [0.0] * dim), dtype=np.float64)
    if shift.shape != (dim,) or not np.all(np.isfinite(shift)):
        raise ValueError(f"'shift' must be {dim} finite numbers")
    return shift


class _FlowRecipe:
    """What both flow estimators share: a fit's recipe from the hyper-parameters they store."""

    def _settings(self, n: int) -> dict[str, Any]:
        """Builder, architecture and budget of a fit on ``n`` points: the values set, the
        model's defaults (:mod:`densitylab.flows.recipes`) for those left at ``None``."""
        for flag in ("standardize", "dequantize", "verbose"):  # "no" is not False
            value = getattr(self, flag, None)
            if value is not None and not isinstance(value, bool | np.bool_):
                raise ValueError(f"{flag} must be True, False or None, got {value!r}")
        chosen = {name: getattr(self, name) for name in
                  ("n_layers", "hidden", "epochs", "batch_size", "lr", "schedule", "standardize")}
        return settings(self.model, n, self.val_fraction, **chosen)

    def _recipe(self, n: int) -> tuple[str, dict[str, Any], dict[str, Any], int | None]:
        """``(builder, architecture, fit options, patience)`` of a fit on ``n`` points; the
        tabular recipe's patience grows with its budget."""
        builder, architecture, fit_options = split(self._settings(n))
        patience = self.patience
        if patience is None and self.model in TABULAR_MODELS:
            patience = tabular_budget(n, self.val_fraction)["patience"]
        return builder, architecture, fit_options, patience


class FlowDensity(_FlowRecipe, DensityMixin, BaseEstimator):
    """A normalizing-flow density estimator with the scikit-learn contract.

    ``fit(X)`` trains a flow by maximum likelihood (see :func:`densitylab.fit`);
    ``score_samples(X)`` is the log-density per row, ``score(X)`` its sum, and
    ``sample(n, random_state)`` draws new points. NumPy in, NumPy out.

    ``model`` is ``"tabular"`` (the default: the recipe for real data of
    :data:`densitylab.flows.recipes.TABULAR`, a bounded spline flow of 4 layers of (64, 64)
    with a learned linear map before each, whose batch and number of steps grow with the data,
    about 2 steps per point between 200 and 1500, with early stopping on validation),
    ``"tabular-mixture"`` (the same flow on a Gaussian-mixture base fitted to the data, for
    clusters or classes: :data:`densitylab.flows.recipes.TABULAR_MIXTURE`),
    ``"tabular-maf"`` / ``"tabular-maf-spline"`` (the same recipe with 5 masked autoregressive
    layers, affine or spline: :data:`densitylab.flows.recipes.TABULAR_MAF`),
    ``"realnvp"``, ``"glow"``, ``"nsf"``, ``"maf"`` or ``"recommended"`` (the spline flow of
    :func:`densitylab.flows.recommended` trained with its recipe). Hyper-parameters left at
    ``None`` take the model's default: 4 layers of (32, 32), 1000 epochs, batches of 64, Adam
    1e-3 at a constant rate for ``realnvp``, ``glow``, ``nsf``, ``maf`` (the coursework's setting);
    6 layers of (64, 64), about 1000 steps (:func:`~densitylab.flows.recommended_epochs`),
    batches of 256, Adam 3e-3 on a cosine schedule for ``"recommended"``. ``"cnf"`` and
    ``"cnf-fm"`` are continuous flows (:func:`densitylab.flows.cnf`) trained by maximum
    likelihood through the ODE solver and by flow matching (:data:`~densitylab.flows.recipes.CNF`,
    :data:`~densitylab.flows.recipes.CNF_FM`); for ``"cnf-fm"``, ``best_val_nll_`` is the kept
    model's validation NLL computed after training (it was validated by the flow-matching loss)
    and ``history_`` counts function evaluations for ``"cnf"``.

    Columns of rounded measurements (at most half of their values distinct, see
    :func:`densitylab._rounding.rounding_steps`) are found in ``fit`` and listed in
    ``rounded_columns_``. With ``dequantize`` (``None``: on for the tabular recipes, off otherwise)
    they are spread by uniform noise of one rounding step before training, so the flow cannot
    collapse onto the repeated values; off, a ``UserWarning`` names them.

    ``missing``: rows with missing cells (NaN) in ``fit``: ``"error"`` (a message naming the
    first one's column and row) or ``"drop"`` (trained on the complete rows; their number in
    ``n_dropped_``).

    ``threads``: threads while training (``None``: chosen from the work and the idle cores,
    :mod:`densitylab.threads`); :meth:`fit_together` trains that many of its data sets at a
    time on the compiled engine (see :func:`densitylab.fit_many`).

    ``guard``: the weight ``eps`` of a defensive component (:mod:`densitylab.guard`): the
    density is ``(1 - eps) flow + eps N(mean, diag((2 sd)^2))`` with the training data's mean
    and standard deviations, so no point's log-density falls absurdly low off the data (a flow's
    tails can be far thinner than the data's), at a cost of at most ``-log(1 - eps)`` nats
    anywhere; sampling draws from the Gaussian with probability ``eps``. ``None``: 0.01 for
    the tabular recipes (real tables: on digits-64, wine and breast-cancer the worst held-out
    values rise by hundreds of nats and the means with them, ``benchmarks/RESULTS.md`` #34),
    0 for the others, whose coursework log-likelihoods stay those of the flow itself.
    ``guard_weight_`` is the weight in use.

    Example:
        >>> import densitylab as dl
        >>> x = dl.datasets.get("moons").sample(500, seed=0)
        >>> est = FlowDensity(model="recommended", epochs=2).fit(x)
        >>> est.score_samples(x[:5]).shape
        (5,)
    """

    def __init__(
        self,
        model: str = "tabular",
        n_layers: int | None = None,
        hidden: Sequence[int] | None = None,
        epochs: int | None = None,
        batch_size: int | None = None,
        lr: float | None = None,
        val_fraction: float = 0.1,
        standardize: bool = True,
        schedule: str | None = None,  # None: the model's default; "constant" or "cosine"
        patience: int | None = None,
        random_state: int = 0,
        verbose: bool | None = False,  # None: a progress bar when stderr is a terminal
        device: str = "cpu",
        dequantize: bool | None = None,
        threads: int | None = None,
        missing: str = "error",
        guard: float | None = None,
    ) -> None:
        self.model = model
        self.n_layers = n_layers
        self.hidden = hidden
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.val_fraction = val_fraction
        self.standardize = standardize
        self.schedule = schedule
        self.patience = patience
        self.random_state = random_state
        self.verbose = verbose
        self.device = device
        self.dequantize = dequantize
        self.threads = threads
        self.missing = missing
        self.guard = guard

    def fit(self, X: ArrayLike, y: Any = None,
            sample_weight: ArrayLike | None = None) -> FlowDensity:
        """Train a new flow on ``X`` of shape ``(n, n_features)``; ``y`` is ignored.
        ``sample_weight``: non-negative row weights, minimised as the weighted NLL (each
        point's loss times its weight, in the one training driver: objective
        ``"weighted-nll"``); whole numbers train as repeated rows would, in expectation over
        the batches."""
        self._fit_together([self], [X], sample_weight)
        return self

    def fit_together(self, datasets: Sequence[ArrayLike]) -> list[FlowDensity]:
        """One fitted copy of this estimator per data set, trained together as one batched
        computation (:func:`densitylab.fit_many`): cross-validation folds, bootstrap
        resamples. Each copy is what :meth:`fit` makes of its data set alone, up to float
        rounding; the data sets need the same number of rows.

        Example:
            >>> import numpy as np
            >>> x = np.random.default_rng(0).normal(size=(200, 2))
            >>> folds = FlowDensity(epochs=2).fit_together([x[:100], x[100:]])
            >>> len(folds), folds[1].score_samples(x[:3]).shape
            (2, (3,))
        """
        estimators = [clone(self) for _ in datasets]
        self._fit_together(estimators, datasets)
        return estimators

    def _fit_together(self, estimators: list[FlowDensity], datasets: Sequence[ArrayLike],
                      sample_weight: ArrayLike | None = None) -> None:
        self._settings(1)  # unknown model or schedule: fail before looking at the data
        eps = guard_weight(self.guard, self.model in TABULAR_MODELS)
        xs = [validate_data(est, X, dtype=np.float64, ensure_min_samples=2,
                            ensure_all_finite=False)
              for est, X in zip(estimators, datasets, strict=True)]
        weights = None
        if sample_weight is not None:  # (one estimator: fit) the weights of the rows kept
            from sklearn.utils.validation import _check_sample_weight

            weights = _check_sample_weight(sample_weight, xs[0], ensure_non_negative=True)
            weights = weights[~np.isnan(xs[0]).any(axis=1)]
        for i, est in enumerate(estimators):  # rows with missing cells: an error, or dropped
            xs[i], est.n_dropped_ = complete_rows(xs[i], self.missing,
                                                  getattr(est, "feature_names_in_", None))
        if len({x.shape for x in xs}) != 1:
            raise ValueError("data sets fitted together need the same shape, got "
                             f"{sorted({x.shape for x in xs})}")
        seed = int(np.random.default_rng(self.random_state).integers(2**31))
        prepared = [self._dequantised(x, seed) for x in xs]
        shifts = [float64_shift(x) for x in xs]
        builder, architecture, fit_options, patience = self._recipe(len(xs[0]))
        flows = [build(builder, dim=xs[0].shape[1], seed=seed, **architecture) for _ in xs]
        results = fit_many(
            flows, [x - shift for (x, _), shift in zip(prepared, shifts, strict=True)],
            **fit_options, val_fraction=self.val_fraction,
            seed=seed, patience=patience, verbose=self.verbose, device=self.device,
            threads=self.threads, sample_weight=weights,
        )
        for est, result, raw, (x, rounding), shift in zip(estimators, results, xs, prepared,
                                                          shifts, strict=True):
            guard = Guard.of_data(raw, eps, weights=weights).summary() if eps > 0 else None
            est.restore(result.flow, {"best_epoch": result.best_epoch,
                                      "best_val_nll": _validation_nll(result, x - shift,
                                                                      fit_options),
                                      **rounding, "shift": shift.tolist(), "guard": guard})
            est.history_, est.stop_reason_ = result.history, result.stop_reason

    def _dequantised(self, x: np.ndarray, seed: int) -> tuple[np.ndarray, dict[str, Any]]:
        """``x`` with its rounded columns spread by one rounding step of noise (or a warning
        naming them), and what was found, for the fitted summary."""
        steps = rounding_steps(x)
        rounded = [int(j) for j in np.flatnonzero(steps)]
        dequantize = (self.model in TABULAR_MODELS if self.dequantize is None
                      else bool(self.dequantize))
        if rounded and dequantize:
            x = dequantise(x, steps, seed)
        elif rounded:
            warnings.warn(f"columns {rounded} hold rounded values (few distinct values); the "
                          "flow may collapse onto them: consider dequantize=True",
                          UserWarning, stacklevel=4)
        return x, {"rounded_columns": rounded,
                   "rounding_steps": [float(steps[j]) for j in rounded],
                   "dequantized": bool(rounded) and dequantize}

    def restore(self, flow: Flow, summary: dict[str, Any]) -> None:
        """Set the fitted state (used by :meth:`fit` and by :func:`densitylab.load`)."""
        self.flow_ = flow.eval()
        self._flow64: Flow | None = None  # float64 copy for scoring, made on first use
        self.n_features_in_ = flow.dim
        self.best_epoch_ = summary["best_epoch"]
        self.best_val_nll_ = summary["best_val_nll"]
        self.rounded_columns_ = list(summary.get("rounded_columns", []))
        self.rounding_steps_ = list(summary.get("rounding_steps", []))
        self.dequantized_ = bool(summary.get("dequantized", False))
        self.shift_ = checked_shift(summary, flow.dim)
        self._guard = Guard.from_summary(summary.get("guard"), flow.dim)  # None: saved before
        self.guard_weight_ = 0.0 if self._guard is None else self._guard.weight

    def fitted_summary(self) -> dict[str, Any]:
        guard = getattr(self, "_guard", None)
        return {"best_epoch": self.best_epoch_, "best_val_nll": self.best_val_nll_,
                "rounded_columns": self.rounded_columns_, "rounding_steps": self.rounding_steps_,
                "dequantized": self.dequantized_, "shift": self.shift_.tolist(),
                "guard": None if guard is None else guard.summary()}

    def score_samples(self, X: ArrayLike) -> np.ndarray:
        """Log-density of each row of ``X``, in nats, in the units of the training data.

        Evaluated by a float64 copy of the flow: each row's value then does not depend on the
        other rows of the batch (float32 matrix products round differently by batch), and far
        points keep a finite value where float32 would overflow. With a guard, the defensive
        mixture's log-density (:mod:`densitylab.guard`)."""
        check_fitted(self)
        x = validate_data(self, X, dtype=np.float64, reset=False, copy=True)  # writable
        if getattr(self, "_flow64", None) is None:
            self._flow64 = in_float64(self.flow_)
        with torch.no_grad(), torch_threads(1):
            log_p = self._flow64.log_prob(x - self.shift_).double().cpu().numpy()
        guard = getattr(self, "_guard", None)
        return log_p if guard is None else guard.mix(log_p, x)

    def score(self, X: ArrayLike, y: Any = None) -> float:
        """Total log-likelihood of ``X``: higher is better, what ``GridSearchCV`` maximises."""
        return float(self.score_samples(X).sum())

    def sample(self, n_samples: int = 1, random_state: int | None = None) -> np.ndarray:
        """``n_samples`` new points, shape ``(n_samples, n_features)``: the flow's, each
        replaced with probability ``guard_weight_`` by a draw of the guard's Gaussian."""
        check_fitted(self)
        n_samples = check_positive_int(n_samples, "n_samples")
        with torch.no_grad():
            z = self.flow_.sample(n_samples, seed=random_state).double().cpu().numpy()
        guard = getattr(self, "_guard", None)
        if guard is None:
            return z + self.shift_
        return guard.sample_into(z + self.shift_, np.random.default_rng(random_state))


def _validation_nll(result, x: np.ndarray, fit_options: dict[str, Any]) -> float:
    """The kept model's validation NLL: the one training measured, or, for an objective that
    validates by another loss (flow matching), computed once at the end."""
    if fit_options.get("objective", "nll") == "nll":
        return result.best_val_nll
    return float(-np.mean(flow_log_prob(result.flow, x[result.val_indices])))


class ConditionalFlowDensity(_FlowRecipe, BaseEstimator):
    """A conditional density ``p(y | X)`` by a conditional flow, in scikit-learn's shape.

    ``fit(X, y)`` takes the conditioning columns ``X`` ``(n, C)`` and the modelled columns ``y``
    ``(n, D)`` (or ``(n,)``), as a regressor would; ``score_samples(X, y)`` is
    ``log p(y_i | X_i)`` per row in ``y``'s units, and ``sample(X)`` draws one ``y`` per row of
    ``X``. The conditioning columns are standardised inside the model, the modelled ones too
    when ``standardize``. ``model`` and the hyper-parameters are those of :class:`FlowDensity`
    (default ``"tabular"``: a bounded spline flow whose budget grows with the data, early
    stopping; one modelled column gets autoregressive splines computed from ``X``).
    ``embedding`` (e.g. ``(32, 8)``: hidden widths, then the embedded size) passes ``X``
    through a small network shared by all layers before their conditioners read it.
    ``guard``: as :class:`FlowDensity`'s, ``(1 - eps) p(y | X) + eps N(y; m, diag((2 sd)^2))``
    with the mean and standard deviations of the training ``y`` (a density of ``y`` for every
    ``X``; ``None``: 0.01 for the tabular recipes, 0 for the others).

    Example:
        >>> import numpy as np
        >>> c = np.random.default_rng(0).uniform(-1, 1, size=(300, 1))
        >>> y = np.sin(3 * c[:, 0]) + 0.1 * np.random.default_rng(1).normal(size=300)
        >>> est = ConditionalFlowDensity(n_layers=2, hidden=(16,), epochs=5).fit(c, y)
        >>> est.sample([[0.5], [-0.5]], random_state=0).shape
        (2, 1)
    """

    def __init__(
        self,
        model: str = "tabular",
        n_layers: int | None = None,
        hidden: Sequence[int] | None = None,
        epochs: int | None = None,
        batch_size: int | None = None,
        lr: float | None = None,
        val_fraction: float = 0.1,
        standardize: bool | None = None,
        schedule: str | None = None,
        patience: int | None = None,
        random_state: int = 0,
        verbose: bool | None = False,  # None: a progress bar when stderr is a terminal
        device: str = "cpu",
        embedding: Sequence[int] | None = None,
        guard: float | None = None,
    ) -> None:
        self.model = model
        self.n_layers = n_layers
        self.hidden = hidden
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.val_fraction = val_fraction
        self.standardize = standardize
        self.schedule = schedule
        self.patience = patience
        self.random_state = random_state
        self.verbose = verbose
        self.device = device
        self.embedding = embedding
        self.guard = guard

    def fit(self, X: ArrayLike, y: ArrayLike) -> ConditionalFlowDensity:
        """Train a conditional flow of ``y`` given ``X``."""
        self._settings(1)  # unknown model or schedule: fail before looking at the data
        eps = guard_weight(self.guard, self.model in TABULAR_MODELS)
        context, targets = self._checked(X, y, reset=True)
        seed = int(np.random.default_rng(self.random_state).integers(2**31))
        builder, architecture, fit_options, patience = self._recipe(len(targets))
        from densitylab._validation import column_statistics

        mean, std = column_statistics(torch.as_tensor(context))
        self.context_mean_, self.context_scale_ = mean.numpy()[0], std.numpy()[0]
        flow = build(builder, dim=targets.shape[1], context=context.shape[1], seed=seed,
                     embedding=self.embedding, **architecture)
        shift = float64_shift(targets)
        result = fit(flow, targets - shift, context=self._scaled(context), **fit_options,
                     val_fraction=self.val_fraction, seed=seed, patience=patience,
                     verbose=self.verbose, device=self.device)
        self.restore(result.flow, {"best_epoch": result.best_epoch,
                                   "best_val_nll": result.best_val_nll,
                                   "context_mean": self.context_mean_.tolist(),
                                   "context_scale": self.context_scale_.tolist(),
                                   "shift": shift.tolist(),
                                   "guard": Guard.of_data(targets, eps).summary() if eps > 0
                                   else None})
        self.history_ = result.history
        return self

    def _checked(self, X: ArrayLike, y: ArrayLike | None, reset: bool = False):
        from densitylab._validation import as_points, estimator_points

        context = estimator_points(self, X, reset=reset, min_rows=2 if reset else 1)
        if y is None:
            return context, None
        targets = np.asarray(y, dtype=np.float64)
        targets = as_points(targets[:, None] if targets.ndim == 1 else targets, name="y",
                            dim=None if reset else self.n_outputs_)
        if len(targets) != len(context):
            raise ValueError(f"X has {len(context)} rows but y has {len(targets)}")
        if reset and len(targets) < 2:
            raise ValueError(f"fit needs at least 2 rows, got {len(targets)}")
        return context, targets

    def _scaled(self, context: np.ndarray) -> np.ndarray:
        return (context - self.context_mean_) / self.context_scale_

    def restore(self, flow: Flow, summary: dict[str, Any]) -> None:
        """Set the fitted state (used by :meth:`fit` and by :func:`densitylab.load`)."""
        self.flow_ = flow.eval()
        self.n_features_in_, self.n_outputs_ = flow.context_features, flow.dim
        self.context_mean_ = np.asarray(summary["context_mean"], dtype=np.float64)
        self.context_scale_ = np.asarray(summary["context_scale"], dtype=np.float64)
        shape = (flow.context_features,)
        if not (self.context_mean_.shape == self.context_scale_.shape == shape
                and np.all(np.isfinite(self.context_mean_))
                and np.all(np.isfinite(self.context_scale_)) and np.all(self.context_scale_ > 0)):
            raise ValueError(f"'context_mean' and 'context_scale' must be {shape[0]} finite "
                             "numbers, the scales positive")
        self.best_epoch_, self.best_val_nll_ = summary["best_epoch"], summary["best_val_nll"]
        self.shift_ = checked_shift(summary, flow.dim)
        self._guard = Guard.from_summary(summary.get("guard"), flow.dim)  # None: saved before
        self.guard_weight_ = 0.0 if self._guard is None else self._guard.weight

    def fitted_summary(self) -> dict[str, Any]:
        guard = getattr(self, "_guard", None)
        return {"best_epoch": self.best_epoch_, "best_val_nll": self.best_val_nll_,
                "context_mean": self.context_mean_.tolist(),
                "context_scale": self.context_scale_.tolist(), "shift": self.shift_.tolist(),
                "guard": None if guard is None else guard.summary()}

    def score_samples(self, X: ArrayLike, y: ArrayLike) -> np.ndarray:
        """``log p(y_i | X_i)`` in nats for every row, in the units of ``y``."""
        check_fitted(self)
        context, targets = self._checked(X, y)
        with torch.no_grad(), torch_threads(1):
            log_p = self.flow_.log_prob(targets - self.shift_, self._scaled(context),
                                        dtype=torch.float64).cpu().numpy()
        guard = getattr(self, "_guard", None)
        return log_p if guard is None else guard.mix(log_p, targets)

    def score(self, X: ArrayLike, y: ArrayLike) -> float:
        """Total conditional log-likelihood: higher is better."""
        return float(self.score_samples(X, y).sum())

    def sample(self, X: ArrayLike, random_state: int | None = None) -> np.ndarray:
        """One draw of ``y`` for every row of ``X``, shape ``(n_rows, n_outputs)``."""
        check_fitted(self)
        context, _ = self._checked(X, None)
        with torch.no_grad():
            draws = self.flow_.sample(len(context), seed=random_state,
                                      context=self._scaled(context))
        draws = draws.double().cpu().numpy() + self.shift_
        guard = getattr(self, "_guard", None)
        return draws if guard is None else guard.sample_into(draws,
                                                             np.random.default_rng(random_state))
