"""Loading the model of a run or model directory for ``score`` and ``sample``."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np


def read_rows(path: Path) -> np.ndarray:
    """A points file as rows ``(n, dim)``; missing cells stay NaN for the model to judge."""
    from densitylab.datasets import load_table

    return load_table(path, allow_missing=True).x


@dataclass(frozen=True)
class LoadedModel:
    """What ``score`` and ``sample`` need of any saved density model.

    ``dim`` counts every column of a point; a conditional model reads the columns ``given``
    as its condition (``log_density`` of whole rows is then ``log p(rest | given)``) and
    samples the other columns for given condition rows.
    """

    dim: int
    log_density: Callable[[np.ndarray], np.ndarray]
    sample: Callable[[int, int], np.ndarray]
    read: Callable[[Path], np.ndarray] = read_rows  # the points file as rows (n, dim)
    given: tuple[int, ...] = ()
    sample_given: Callable[[np.ndarray, int], np.ndarray] | None = None
    names: tuple[str, ...] | None = None
    training_scores: np.ndarray | None = None
    marginalises: bool = False  # scores rows with missing cells by their observed ones


def model_dir(run: Path) -> Path:
    """A run directory holds its model in ``model/``; a model directory is itself."""
    return run / "model" if (run / "model" / "config.json").is_file() else run


def load_model(run: Path, allow_untrained: bool = False) -> LoadedModel:
    """The model saved in ``run`` (a ``train`` run or a ``dl.save`` directory of a flow or an
    estimator); a run marked untrained (its training diverged at once) is refused unless asked."""
    from densitylab._schema import read_json
    from densitylab.datasets import load_images
    from densitylab.evaluation import flow_log_prob, flow_samples
    from densitylab.flows import Flow
    from densitylab.io import load

    metrics = run / "metrics.json"
    if not allow_untrained and metrics.is_file():
        try:
            trained = read_json(metrics).get("trained", True)
        except (ValueError, AttributeError):
            raise ValueError(f"{metrics} is not a valid metrics file") from None
        if trained is False:
            raise ValueError(f"{run} holds an untrained model (its training diverged); "
                             "pass --allow-untrained to use it anyway")
    model = load(model_dir(run))
    estimators = sys.modules.get("densitylab.estimators")  # loaded if load() made an estimator:
    if estimators and isinstance(model, estimators.ConditionalFlowDensity):  # (scikit-learn: 1 s)
        return conditional(model, run)
    images = sys.modules.get("densitylab.image_estimator")  # (likewise)
    if images and isinstance(model, images.ImageFlow):  # rows are flattened images; log P(x) in nats
        return LoadedModel(model.n_features_in_,
                           lambda x: model.log_likelihood(x.reshape(-1, *model.image_shape_)),
                           lambda n, seed: model.sample(n, random_state=seed).reshape(n, -1),
                           lambda path: load_images(path, model.pixel_levels_)[0].reshape(
                               -1, model.n_features_in_))
    names = column_names(run, model)
    if getattr(getattr(model, "estimator_", model), "categorical_columns_", None):
        return by_category(model, names)  # (or an AutoDensity, or a detector, of such a table)
    if isinstance(model, Flow):
        return LoadedModel(model.dim, lambda x: flow_log_prob(model, x),
                           lambda n, seed: flow_samples(model, n, seed), names=names)
    if hasattr(model, "score_samples"):
        inner = getattr(model, "estimator_", model)  # an OutlierDetector samples by its model
        scores = getattr(model, "training_scores_", getattr(model, "oof_score_samples_", None))
        return LoadedModel(model.n_features_in_, named(model, model.score_samples),
                           lambda n, seed: sampler(inner, run)(n, random_state=seed),
                           names=names, training_scores=scores,
                           marginalises=marginalises(inner))
    raise ValueError(f"{run} holds a {type(model).__name__}, which has no density to score")


def marginalises(model) -> bool:
    """Whether ``model`` scores rows with missing cells (a KDE, a Gaussian mixture, or an
    AutoDensity that chose one)."""
    from densitylab.auto import MARGINALISING, AutoDensity, GaussianMixtureBIC
    from densitylab.kde import KDE

    if isinstance(model, AutoDensity):
        return model.best_name_ in MARGINALISING
    return isinstance(model, KDE | GaussianMixtureBIC)


def sampler(model, run: Path) -> Callable:
    if not hasattr(model, "sample"):
        raise ValueError(f"{run} holds a {type(model).__name__}, which cannot draw samples")
    return model.sample


def named(model, method: Callable) -> Callable:
    """``method`` of a model fitted with column names, called with a DataFrame of those
    names (so scikit-learn does not warn that the array has none)."""
    names = getattr(model, "feature_names_in_", None)
    if names is None:
        return method

    def call(x: np.ndarray):
        import pandas as pd

        return method(pd.DataFrame(x, columns=list(names)))

    return call


def column_names(run: Path, model) -> tuple[str, ...] | None:
    """The data's column names: the model's own, else those its ``train``/``kde`` run recorded."""
    names = getattr(model, "feature_names_in_", None)
    if names is not None:
        return tuple(str(n) for n in names)
    config = run / "config.json"
    if (run / "model").is_dir() and config.is_file():
        from densitylab._schema import read_json

        try:
            recorded = read_json(config).get("columns")
        except (ValueError, AttributeError):
            raise ValueError(f"{config} is not a valid run configuration") from None
        if isinstance(recorded, list) and all(isinstance(n, str) for n in recorded):
            return tuple(recorded)
    return None


def training_offset(run: Path, contamination: float, model: LoadedModel) -> float:
    """The outlier threshold of a run: the ``contamination`` quantile of its training
    log-densities, recorded in ``metrics.json`` (``train`` and ``kde`` runs) or by the model
    itself (a saved ``OutlierDetector``, or ``AutoDensity`` with its out-of-fold scores)."""
    from densitylab.outliers import check_contamination, offset_from_quantiles, outlier_offset

    check_contamination(contamination)
    if model.training_scores is not None:
        return outlier_offset(model.training_scores, contamination)
    from densitylab._schema import read_json

    try:
        quantiles = read_json(run / "metrics.json")["train_log_density_quantiles"]
        if not (isinstance(quantiles, list)
                and all(isinstance(q, float | int) and not isinstance(q, bool) for q in quantiles)):
            raise TypeError
    except (OSError, ValueError, KeyError, TypeError):
        raise ValueError(
            f"{run} records no training log-densities (`densitylab train` and `kde` runs and "
            "saved AutoDensity or OutlierDetector models do); fit a dl.OutlierDetector in Python"
        ) from None
    return offset_from_quantiles(quantiles, contamination)


def conditional(model, run: Path) -> LoadedModel:
    """A conditional estimator over whole rows: the condition columns are those its ``train``
    run recorded (``--condition-on``), or the first ones for a bare ``dl.save`` directory."""
    width = model.n_features_in_ + model.n_outputs_
    given = list(range(model.n_features_in_))
    config = run / "config.json"
    if (run / "model").is_dir() and config.is_file():
        from densitylab._schema import read_json

        try:
            given = [int(j) for j in read_json(config)["condition_on"]]
        except (ValueError, KeyError, TypeError):
            raise ValueError(f"{config} does not say which columns are the condition") from None
    rest = [j for j in range(width) if j not in given]
    if len(given) != model.n_features_in_ or sorted(given + rest) != list(range(width)):
        raise ValueError(f"{config}: the condition columns do not fit the model")

    def log_density(x: np.ndarray) -> np.ndarray:
        return model.score_samples(x[:, given], x[:, rest])

    def sample_given(condition: np.ndarray, seed: int) -> np.ndarray:
        rows = np.empty((len(condition), width))
        rows[:, given], rows[:, rest] = condition, model.sample(condition, random_state=seed)
        return rows

    def sample(n: int, seed: int) -> np.ndarray:
        raise ValueError("a conditional model samples given its condition: pass --given FILE "
                         f"with the columns {given} of each point to draw")

    return LoadedModel(width, log_density, sample, given=tuple(given), sample_given=sample_given)


def by_category(model, names: tuple[str, ...] | None) -> LoadedModel:
    """A :class:`~densitylab.CategoricalDensity` (or an AutoDensity holding one, or an
    OutlierDetector around either): points files are read with its text columns as labels,
    and samples carry the labels (object arrays)."""
    from densitylab.datasets import load_table

    inner = getattr(model, "estimator_", model)
    fitted = getattr(inner, "feature_names_in_", None)
    names = names or (None if fitted is None else tuple(str(n) for n in fitted))
    text = [j for j, labels in zip(inner.categorical_columns_, inner.categories_, strict=True)
            if isinstance(labels[0], str)]

    def read(path: Path) -> np.ndarray:
        return load_table(path, allow_missing=True, text=True, as_text=text).rows()

    def sample(n: int, seed: int) -> np.ndarray:
        drawn = inner.sample(n, random_state=seed)
        return drawn.to_numpy(dtype=object) if hasattr(drawn, "to_numpy") else drawn

    scores = getattr(model, "training_scores_", inner.oof_score_samples_)
    by_labels = getattr(inner, "best_estimator_", inner)  # the CategoricalDensity
    rest = [] if by_labels.pooled_ is None else [by_labels.pooled_, *by_labels.own_.values()]
    return LoadedModel(inner.n_features_in_, named(inner, model.score_samples), sample,
                       read=read, names=names, training_scores=scores,
                       marginalises=by_labels.conditional_ is None  # missing labels: always
                       and all(marginalises(m) for m in rest))


def missing_cells(x: np.ndarray) -> np.ndarray:
    """Where ``x`` (numbers, or an object array with labels) has missing (NaN) cells."""
    if x.dtype != object:
        return np.isnan(x)
    return np.array([[v is None or (isinstance(v, float) and v != v) for v in row]
                     for row in x], dtype=bool)
