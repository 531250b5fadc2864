"""Tables with categorical columns, modelled by conditioning: ``p(category) x p(rest | category)``.

A column of labels (text such as ``"east"``, or a few numeric codes declared ``categorical``)
has no density; its values have probabilities. :class:`CategoricalDensity` gives the
categorical columns (jointly: a category is one combination of their labels) their empirical
frequencies, smoothed by ``smoothing`` pseudo-rows per combination, and the other columns
("the rest") a density given the category:

- **pooled**: one :class:`~densitylab.AutoDensity` of the rest on all rows (the rest taken
  as independent of the category), or
- **own**: an :class:`~densitylab.AutoDensity` fitted on the category's rows only, tried where
  a category holds at least ``min_rows`` rows and kept where its out-of-fold (cross-validated)
  log-likelihood on those rows beats the pooled model's out-of-fold log-likelihood on them.

A row's log-likelihood is ``log P(category) + log p(rest | category)``: a log-probability
plus the rest's log-density (or log-mass, for its discrete columns). Samples draw a category
from the smoothed frequencies, then the rest from that category's model, and carry the
original labels.

Example:
    >>> import pandas as pd, numpy as np
    >>> rng = np.random.default_rng(0)
    >>> df = pd.DataFrame({"region": rng.choice(["east", "west"], 200),
    ...                    "price": rng.normal(size=200)})
    >>> model = CategoricalDensity(candidates=["gaussian-mixture"]).fit(df)
    >>> model.categories_
    [['east', 'west']]
    >>> sorted(set(model.sample(50, random_state=0)["region"]))
    ['east', 'west']
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from sklearn.base import BaseEstimator, DensityMixin
from sklearn.exceptions import NotFittedError

from densitylab._labels import table_rows, text_columns

Label = str | float


def _labels_of(column: np.ndarray, text: bool, where: str) -> list[Label]:
    """A column's cells as labels: strings for a text column, floats for a numeric one."""
    if text:
        return [v.decode() if isinstance(v, bytes) else str(v) for v in column]
    try:
        labels = [float(v) for v in column]
    except (TypeError, ValueError):
        raise ValueError(f"column {where} mixes text and numbers in a numeric category column"
                         ) from None
    if any(math.isnan(v) for v in labels):
        raise ValueError(f"column {where} has a missing category (NaN): drop or fill that row")
    return labels


def _numeric(rows: np.ndarray, columns: list[int], names: list[str] | None) -> np.ndarray:
    """The rest columns as float64; a text cell is a one-line error naming its row and column."""
    out = np.empty((len(rows), len(columns)))
    for k, j in enumerate(columns):
        for i, value in enumerate(rows[:, j]):
            try:
                out[i, k] = float(value)
            except (TypeError, ValueError):
                name = "" if names is None else f" ({names[j]!r})"
                raise ValueError(f"row {i}, column {j}{name} holds text ({value!r}) in a column "
                                 "not declared categorical") from None
    return out


class CategoricalDensity(DensityMixin, BaseEstimator):
    """``P(category) x p(rest | category)``: categorical columns by their smoothed
    frequencies, the rest by a pooled or per-category :class:`~densitylab.AutoDensity`, chosen
    per category by cross-validated likelihood (see the module's docstring).

    Args:
        column_types: ``"auto"`` or a dict (column index or DataFrame name -> type). Columns
            declared ``"categorical"`` and every column holding text are categorical; the
            other declarations go to the models of the rest (``"integer"``, ``"positive"``...).
        smoothing: pseudo-rows added to every combination of labels (additive smoothing; a
            combination never seen gets ``smoothing / (n + smoothing * K)`` of ``K``
            combinations). ``0``: the empirical frequencies (unseen combinations: ``-inf``).
        min_rows: the fewest rows of a category for which a model of its own is tried.
        candidates: the candidates of every :class:`~densitylab.AutoDensity` (``None``: its
            defaults).
        cv: the folds of every AutoDensity's cross-validation.
        random_state: seeds every AutoDensity and the samples' labels.
        threads: the most threads of every AutoDensity's candidates.

    Attributes:
        categorical_columns_: indices of the categorical columns; ``rest_columns_``: the others.
        categories_: the labels of each categorical column (sorted; strings for text).
        combinations_: ``(m, c)`` label indices of the combinations seen in training;
            ``counts_``: their (weighted) row counts.
        pooled_: the AutoDensity of the rest on all rows (``None`` without rest columns).
        own_: combination index -> the AutoDensity of its own rows, where that won.
        choices_: per combination tried: ``category``, ``rows``, ``own`` and ``pooled``
            (out-of-fold mean log-likelihood of the rest on its rows), ``chosen``.
        oof_score_samples_: each training row's log-likelihood with the rest scored
            out-of-fold (what an outlier threshold is set from).
    """

    def __init__(self, column_types: Any = "auto", smoothing: float = 0.5, min_rows: int = 50,
                 candidates: Sequence[str] | None = None, cv: int = 3, random_state: int = 0,
                 threads: int | None = None) -> None:
        self.column_types = column_types
        self.smoothing = smoothing
        self.min_rows = min_rows
        self.candidates = candidates
        self.cv = cv
        self.random_state = random_state
        self.threads = threads

    # -- the columns ---------------------------------------------------------------------
    def _split_columns(self, rows: np.ndarray, names: list[str] | None) -> tuple[list[int], dict]:
        """``(categorical column indices, declarations for the rest by rest index)``."""
        from densitylab.columns import column_index

        declared = self.column_types
        if isinstance(declared, str) and declared == "auto":
            declared = {}
        if not isinstance(declared, dict):
            raise ValueError("column_types must be 'auto' or a dict of column -> type, got "
                             f"{declared!r}")
        by_index = {column_index(k, rows.shape[1], names): v for k, v in declared.items()}
        categorical = set(text_columns(rows))
        categorical |= {j for j, v in by_index.items()
                        if isinstance(v, str) and v.strip().lower() == "categorical"}
        for j in sorted(categorical):
            spec = by_index.get(j)
            if spec is not None and spec.strip().lower() != "categorical":
                name = "" if names is None else f" ({names[j]!r})"
                raise ValueError(f"column {j}{name} holds text but is declared {spec!r}: text "
                                 "columns are categorical")
        columns = sorted(categorical)
        if not columns:
            raise ValueError("no categorical column: declare one (column_types={'region': "
                             "'categorical'}) or fit an AutoDensity")
        rest = [j for j in range(rows.shape[1]) if j not in categorical]
        return columns, {rest.index(j): v for j, v in by_index.items() if j in rest}

    def _codes(self, rows: np.ndarray) -> np.ndarray:
        """``(n, c)`` label indices of the categorical cells; ``-1`` for an unknown label."""
        codes = np.empty((len(rows), len(self.categorical_columns_)), dtype=np.int64)
        for k, (j, labels) in enumerate(zip(self.categorical_columns_, self.categories_,
                                            strict=True)):
            text = isinstance(labels[0], str)
            index = {label: i for i, label in enumerate(labels)}
            cells = _labels_of(rows[:, j], text, str(j))
            codes[:, k] = [index.get(v, -1) for v in cells]
        return codes

    def _auto(self, types: dict) -> Any:
        from densitylab.auto import AutoDensity

        return AutoDensity(candidates=self.candidates, cv=self.cv,
                           random_state=self.random_state, threads=self.threads,
                           column_types=types or "auto")

    # -- fitting -------------------------------------------------------------------------
    def fit(self, X: Any, y: Any = None, sample_weight: ArrayLike | None = None
            ) -> CategoricalDensity:
        """Fit the frequencies and the models of the rest on ``X`` (a DataFrame or a 2-D
        array; ``y`` ignored); ``sample_weight``: non-negative row weights (the frequencies
        count them; the AutoDensities take them)."""
        from densitylab._validation import check_positive_int

        if isinstance(self.smoothing, bool) or not isinstance(
                self.smoothing, int | float) or not self.smoothing >= 0:
            raise ValueError(f"smoothing must be a number >= 0, got {self.smoothing!r}")
        check_positive_int(self.min_rows, "min_rows")
        rows, names = table_rows(X)
        columns, rest_types = self._split_columns(rows, names)
        weights = np.ones(len(rows)) if sample_weight is None else np.asarray(
            sample_weight, dtype=np.float64)
        if weights.shape != (len(rows),) or not np.all(np.isfinite(weights)) or np.any(
                weights < 0) or not weights.sum() > 0:
            raise ValueError("sample_weight must hold one finite non-negative weight per row, "
                             "of positive sum")
        kept = weights > 0  # a row of weight 0 is no row: its labels are not levels either
        rows, weights = rows[kept], weights[kept]
        self.categorical_columns_ = columns
        self.rest_columns_ = [j for j in range(rows.shape[1]) if j not in columns]
        text = set(text_columns(rows))
        self.categories_ = [sorted(set(_labels_of(rows[:, j], j in text, str(j))))
                            for j in columns]
        codes = self._codes(rows)
        self.combinations_, inverse = np.unique(codes, axis=0, return_inverse=True)
        inverse = np.ravel(inverse)
        self.counts_ = np.bincount(inverse, weights=weights, minlength=len(self.combinations_))
        self.n_features_in_ = rows.shape[1]
        if names is not None:
            self.feature_names_in_ = np.asarray(names, dtype=object)
        elif hasattr(self, "feature_names_in_"):
            del self.feature_names_in_
        self.pooled_, self.own_, self.choices_ = None, {}, {
            "category": [], "rows": [], "own": [], "pooled": [], "chosen": []}
        oof = self._log_frequency(inverse)
        if not self.rest_columns_:
            self.oof_score_samples_ = oof
            return self
        rest = _numeric(rows, self.rest_columns_, names)
        weighted = None if sample_weight is None else weights
        self.pooled_ = self._auto(rest_types).fit(rest, sample_weight=weighted)
        rest_oof = self.pooled_.oof_score_samples_.copy()
        for m in range(len(self.combinations_)):
            members = np.flatnonzero(inverse == m)
            if len(members) < self.min_rows:
                continue
            own = self._auto(rest_types).fit(
                rest[members], sample_weight=None if weighted is None else weighted[members])
            w = weights[members]
            own_mean = float(np.average(own.oof_score_samples_, weights=w))
            pooled_mean = float(np.average(rest_oof[members], weights=w))
            chosen = "own" if own_mean > pooled_mean else "pooled"
            if chosen == "own":
                self.own_[m] = own
                rest_oof[members] = own.oof_score_samples_
            for key, value in (("category", self._label(m)), ("rows", len(members)),
                               ("own", own_mean), ("pooled", pooled_mean), ("chosen", chosen)):
                self.choices_[key].append(value)
        self.oof_score_samples_ = oof + rest_oof
        return self

    def _label(self, m: int) -> str:
        return "/".join(str(self.categories_[k][i]) for k, i in enumerate(self.combinations_[m]))

    def _log_frequency(self, combination: np.ndarray) -> np.ndarray:
        """``log P(category)`` of combination indices (``-1``: a combination not seen in
        training but of known labels; ``-2``: an unknown label)."""
        total = float(self.counts_.sum())
        k = float(np.prod([len(labels) for labels in self.categories_]))
        denominator = total + self.smoothing * k
        with np.errstate(divide="ignore"):
            seen = np.log(self.counts_ + self.smoothing) - math.log(denominator)
            unseen = math.log(self.smoothing) - math.log(denominator) if self.smoothing > 0 \
                else -math.inf
        out = np.where(combination >= 0, seen[np.maximum(combination, 0)], unseen)
        return np.where(combination == -2, -math.inf, out)

    def _combination_of(self, codes: np.ndarray) -> np.ndarray:
        """Combination index of each row's codes (``-1`` unseen, ``-2`` unknown label)."""
        lookup = {tuple(c): m for m, c in enumerate(self.combinations_.tolist())}
        out = np.array([lookup.get(tuple(c), -1) for c in codes.tolist()], dtype=np.int64)
        return np.where((codes < 0).any(axis=1), -2, out)

    # -- scoring and sampling ------------------------------------------------------------
    def _check_fitted(self) -> None:
        if not hasattr(self, "combinations_"):
            raise NotFittedError("this CategoricalDensity is not fitted yet; call fit first")

    def score_samples(self, X: Any) -> np.ndarray:
        """``log P(category) + log p(rest | category)`` of each row; ``-inf`` for a label
        never seen in training."""
        self._check_fitted()
        rows, names = table_rows(X)
        if rows.shape[1] != self.n_features_in_:
            raise ValueError(f"X has {rows.shape[1]} columns; the model was fitted on "
                             f"{self.n_features_in_}")
        fitted = getattr(self, "feature_names_in_", None)
        if names is not None and fitted is not None and names != list(fitted):
            raise ValueError(f"X's columns {names} differ from the fitted {list(fitted)}")
        combination = self._combination_of(self._codes(rows))
        log_p = self._log_frequency(combination)
        if self.pooled_ is None:
            return log_p
        rest = _numeric(rows, self.rest_columns_, names)
        rest_log_p = np.empty(len(rows))
        for m, model in self._models_by_row(combination):
            rest_log_p[m] = model.score_samples(rest[m])
        return log_p + rest_log_p

    def _models_by_row(self, combination: np.ndarray) -> list[tuple[np.ndarray, Any]]:
        """``(rows, model of the rest)`` groups: a category's own model, else the pooled one."""
        own = np.isin(combination, list(self.own_))
        groups = [(np.flatnonzero(combination == m), model) for m, model in self.own_.items()]
        groups.append((np.flatnonzero(~own), self.pooled_))
        return [(rows, model) for rows, model in groups if len(rows)]

    def score(self, X: Any, y: Any = None) -> float:
        """Total log-likelihood of ``X``."""
        return float(np.sum(self.score_samples(X)))

    def sample(self, n_samples: int = 1, random_state: int | None = None) -> Any:
        """``n_samples`` rows with the original labels in the categorical columns: a DataFrame
        of the training columns when fitted on one, else an object array ``(n, d)``."""
        self._check_fitted()
        from densitylab._validation import check_positive_int

        check_positive_int(n_samples, "n_samples")
        rng = np.random.default_rng(random_state)
        total = float(self.counts_.sum())
        sizes = [len(labels) for labels in self.categories_]
        smoothed = self.smoothing * float(np.prod(sizes))
        # the smoothed law: seen rows in proportion to n, uniform combinations to smoothing*K
        uniform = rng.random(n_samples) < smoothed / (total + smoothed)
        codes = self.combinations_[rng.choice(len(self.counts_), n_samples,
                                              p=self.counts_ / total)]
        codes[uniform] = np.column_stack([rng.integers(0, s, int(uniform.sum())) for s in sizes])
        combination = self._combination_of(codes)
        out = np.empty((n_samples, self.n_features_in_), dtype=object)
        for k, j in enumerate(self.categorical_columns_):
            out[:, j] = np.asarray(self.categories_[k], dtype=object)[codes[:, k]]
        if self.pooled_ is not None:
            for rows, model in self._models_by_row(combination):
                seed = int(rng.integers(2**31))
                drawn = model.sample(len(rows), random_state=seed)
                for k, j in enumerate(self.rest_columns_):
                    out[rows, j] = drawn[:, k]
        names = getattr(self, "feature_names_in_", None)
        if names is None:
            return out
        import pandas as pd

        frame = pd.DataFrame(out, columns=list(names))
        for j in self.rest_columns_:
            frame[names[j]] = frame[names[j]].astype(np.float64)
        return frame

    def describe_columns(self) -> list[str]:
        """One line per column: ``categorical (k labels), log-probability`` or the rest's type."""
        self._check_fitted()
        out: list[str] = []
        rest = iter([] if self.pooled_ is None else self.pooled_.column_types_)
        for j in range(self.n_features_in_):
            if j in self.categorical_columns_:
                labels = self.categories_[self.categorical_columns_.index(j)]
                out.append(f"categorical ({len(labels)} labels), log-probability")
            else:
                out.append(next(rest).describe())
        return out


# -- save / load (through densitylab.save / densitylab.load: safetensors + JSON) ----------------
def to_state(model: CategoricalDensity, auto_state: Any) -> tuple[dict[str, Any], dict]:
    """The fitted ``model`` as ``(torch tensors, JSON config)``; ``auto_state`` saves each
    AutoDensity of the rest."""
    import torch

    model._check_fitted()
    tensors = {"combinations": torch.as_tensor(model.combinations_),
               "counts": torch.as_tensor(model.counts_),
               "oof": torch.as_tensor(model.oof_score_samples_)}
    rest: dict[str, Any] = {}
    for key, auto in ([("pooled", model.pooled_)] if model.pooled_ is not None else []) + [
            (f"own.{m}", a) for m, a in model.own_.items()]:
        inner, config = auto_state(auto)
        tensors |= {f"{key}.{k}": v for k, v in inner.items()}
        rest[key] = config
    params = {k: list(v) if isinstance(v, tuple) else v for k, v in model.get_params().items()}
    return tensors, {"params": params, "categorical_columns": model.categorical_columns_,
                     "categories": model.categories_, "n_features_in": model.n_features_in_,
                     "choices": model.choices_, "rest": rest}


def from_state(tensors: dict[str, Any], config: Any, device: Any, auto_restore: Any
               ) -> CategoricalDensity:
    """Rebuild what :func:`to_state` wrote, checking every piece; ``ValueError`` otherwise."""
    from densitylab._schema import checked_arguments, conforms

    keys = {"params", "categorical_columns", "categories", "n_features_in", "choices", "rest"}
    if not isinstance(config, dict) or set(config) != keys:
        raise ValueError(f"the CategoricalDensity's configuration needs {sorted(keys)}")
    params = checked_arguments(CategoricalDensity.__init__, config["params"], None,
                               "the CategoricalDensity", sized=False)
    model = CategoricalDensity(**{k: tuple(v) if isinstance(v, list) else v
                                  for k, v in params.items()})
    d, columns, categories = (config[k] for k in ("n_features_in", "categorical_columns",
                                                  "categories"))
    if not (conforms(d, int) and d >= 1 and isinstance(columns, list) and columns
            and all(conforms(j, int) and 0 <= j < d for j in columns)
            and columns == sorted(set(columns))):
        raise ValueError("the CategoricalDensity's columns must be distinct sorted indices")
    if not (isinstance(categories, list) and len(categories) == len(columns) and all(
            isinstance(labels, list) and labels and len(set(labels)) == len(labels)
            and (all(isinstance(v, str) for v in labels)
                 or all(conforms(v, float) and math.isfinite(v) for v in labels))
            for labels in categories)):
        raise ValueError("the CategoricalDensity's categories must be, per column, a list of "
                         "distinct strings or of distinct finite numbers")
    missing = {"combinations", "counts", "oof"} - set(tensors)
    if missing:
        raise ValueError(f"the CategoricalDensity lacks tensors {sorted(missing)}")
    combinations = tensors["combinations"].cpu().numpy().astype(np.int64)
    counts = tensors["counts"].cpu().double().numpy()
    sizes = np.array([len(labels) for labels in categories])
    if combinations.ndim != 2 or combinations.shape[1] != len(columns) or np.any(
            combinations < 0) or np.any(combinations >= sizes) or counts.shape != (
            len(combinations),) or np.any(counts < 0) or not counts.sum() > 0:
        raise ValueError("the CategoricalDensity's combinations and counts do not fit its "
                         "categories")
    model.categorical_columns_ = list(columns)
    model.rest_columns_ = [j for j in range(d) if j not in columns]
    model.categories_ = [[float(v) if not isinstance(v, str) else v for v in labels]
                         for labels in categories]
    model.combinations_, model.counts_, model.n_features_in_ = combinations, counts, d
    model.oof_score_samples_ = tensors["oof"].cpu().double().numpy()
    rest = config["rest"]
    if not isinstance(rest, dict) or (bool(model.rest_columns_) != ("pooled" in rest)):
        raise ValueError("the CategoricalDensity's models of the rest do not fit its columns")
    model.pooled_, model.own_ = None, {}
    for key, inner_config in rest.items():
        inner = {k.removeprefix(f"{key}."): v for k, v in tensors.items()
                 if k.startswith(f"{key}.")}
        auto = auto_restore(inner, inner_config, device)
        if auto.n_features_in_ != len(model.rest_columns_):
            raise ValueError("a model of the rest does not fit the rest's columns")
        if key == "pooled":
            model.pooled_ = auto
            continue
        index = key.removeprefix("own.")
        if not (key.startswith("own.") and index.isdigit() and int(index) < len(combinations)):
            raise ValueError(f"the CategoricalDensity names an unknown model {key!r}")
        model.own_[int(index)] = auto
    choices = config["choices"]
    if not (isinstance(choices, dict) and set(choices) == {"category", "rows", "own", "pooled",
                                                            "chosen"}
            and len({len(v) if isinstance(v, list) else -1 for v in choices.values()}) == 1):
        raise ValueError("the CategoricalDensity's choices must be lists of one length under "
                         "category, rows, own, pooled and chosen")
    model.choices_ = choices
    return model
