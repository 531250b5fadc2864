"""Tables with categorical columns, modelled by conditioning: ``p(category) x p(rest | category)``.

A column of labels (text such as ``"east"``, or a few numeric codes declared ``categorical``)
has no density; its values have probabilities. :class:`CategoricalDensity` gives the
categorical columns (jointly: a category is one combination of their labels) their empirical
frequencies, smoothed by ``smoothing`` pseudo-rows per combination, and the other columns
("the rest") a density given the category, by one of three strategies chosen by
cross-validated (out-of-fold) likelihood of the rest on the training rows (``cv_results_``):

- ``"ignore-category"``: one :class:`~densitylab.AutoDensity` of the rest on all rows (the
  rest taken as independent of the category);
- ``"per-category"``: an AutoDensity of its own for every category holding at least
  ``min_rows`` rows (the shared one for the others), where data are plentiful;
- ``"conditional-flow"``: one conditional flow (:class:`~densitylab.ConditionalFlowDensity`)
  of the rest given the category (one-hot), sharing its strength across categories; tried
  when the candidates include a flow, the table holds two categories or more and the rows are
  unweighted. It sees the rest through the shared AutoDensity's column maps (bounds,
  dequantised lattices) and standardisation, whose Jacobian it counts.

:class:`~densitylab.AutoDensity` fits this model by itself on a table with a text column or a
column declared ``categorical``. A row's log-likelihood is ``log P(category) + log p(rest |
category)``: a log-probability (mass) plus the rest's log-density (log-mass for its discrete
columns). Samples draw a category from the smoothed frequencies, then the rest from its
model, and carry the original labels.

Example:
    >>> import pandas as pd, numpy as np
    >>> rng = np.random.default_rng(0)
    >>> df = pd.DataFrame({"region": rng.choice(["east", "west"], 200),
    ...                    "price": rng.normal(size=200)})
    >>> model = CategoricalDensity(candidates=["gaussian-mixture"]).fit(df)
    >>> model.categories_
    [['east', 'west']]
    >>> model.strategy_
    'ignore-category'
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
STRATEGIES = ("ignore-category", "per-category", "conditional-flow")
"""The models of the rest given the category, compared by cross-validation (see the module's
docstring); the first of equal scores wins."""
MISSING = -3
"""The code of a missing label (scored by summing over the labels it could hold)."""
MAX_COMPLETIONS = 10_000
"""The most combinations of labels a row's missing labels may be integrated over."""


def is_missing(value: Any) -> bool:
    """A missing cell: ``None`` or a NaN."""
    return value is None or (isinstance(value, float | np.floating) and math.isnan(value))


def _where(i: int, j: int, names: list[str] | None) -> str:
    return f"row {i}, column {j}" + ("" if names is None else f" ({names[j]!r})")


def _labels_of(column: np.ndarray, text: bool, where: str) -> list[Label]:
    """A column's cells as labels: strings for a text column, floats for a numeric one."""
    for i, v in enumerate(column):
        if is_missing(v):
            raise ValueError(f"row {i} of column {where} has a missing category: drop or fill "
                             "that row (missing='drop' drops it when fitting)")
    if text:
        return [v.decode() if isinstance(v, bytes) else str(v) for v in column]
    try:
        return [float(v) for v in column]
    except (TypeError, ValueError):
        raise ValueError(f"column {where} mixes text and numbers in a numeric category column"
                         ) from None


def _numeric(rows: np.ndarray, columns: list[int], names: list[str] | None) -> np.ndarray:
    """The rest columns as float64 (a missing cell: NaN); a text cell is a one-line error
    naming its row and column."""
    out = np.empty((len(rows), len(columns)))
    for k, j in enumerate(columns):
        for i, value in enumerate(rows[:, j]):
            try:
                out[i, k] = math.nan if value is None else float(value)
            except (TypeError, ValueError):
                raise ValueError(f"{_where(i, j, names)} holds text ({value!r}) in a column "
                                 "not declared categorical") from None
    return out


def _one_hot(combination: np.ndarray, k: int) -> np.ndarray:
    """``(n, k - 1)`` indicators of combinations ``1..k-1`` (combination 0: all zero), the
    conditional flow's context."""
    return (combination[:, None] == np.arange(1, k)[None, :]).astype(np.float64)


def _mean_and_error(scores: np.ndarray, weights: np.ndarray) -> tuple[float, float]:
    """Weighted mean of per-row held-out scores and its standard error over the rows."""
    mean = float(np.average(scores, weights=weights))
    if not math.isfinite(mean):
        return -math.inf, math.nan
    variance = float(np.average((scores - mean) ** 2, weights=weights))
    return mean, math.sqrt(variance / max(int(np.count_nonzero(weights)) - 1, 1))


class CategoricalDensity(DensityMixin, BaseEstimator):
    """``P(category) x p(rest | category)``: categorical columns by their smoothed
    frequencies, the rest by the strategy of :data:`STRATEGIES` with the best cross-validated
    likelihood (see the module's docstring).

    Args:
        column_types: ``"auto"`` or a dict (column index or DataFrame name -> type). Columns
            declared ``"categorical"`` and every column holding text are categorical; the
            other declarations go to the models of the rest (``"integer"``, ``"positive"``...).
        smoothing: pseudo-rows added to every combination of labels (additive smoothing; a
            combination never seen gets ``smoothing / (n + smoothing * K)`` of ``K``
            combinations). ``0``: the empirical frequencies (unseen combinations: ``-inf``).
        min_rows: the fewest rows of a category for which a model of its own is fitted.
        candidates: the candidates of every :class:`~densitylab.AutoDensity` (``None``: its
            defaults); a flow among them brings the conditional flow in.
        cv: the folds of every cross-validation.
        random_state: seeds every model, the folds and the samples' labels.
        threads: the most threads of every AutoDensity's candidates.
        missing: ``"error"`` (a missing cell is a ``ValueError`` naming it) or ``"drop"`` (fit
            on the complete rows; ``n_dropped_`` counts the others).
        strategies: the strategies compared (names from :data:`STRATEGIES`; ``None``: all).

    Attributes:
        categorical_columns_: indices of the categorical columns; ``rest_columns_``: the others.
        categories_: the labels of each categorical column (sorted; strings for text).
        column_types_: a :class:`~densitylab.columns.ColumnType` per column (``"categorical"``
            for the categorical ones, the shared AutoDensity's for the rest).
        combinations_: ``(m, c)`` label indices of the combinations seen in training;
            ``counts_``: their (weighted) row counts.
        cv_results_: per strategy: ``candidate``, ``mean_log_likelihood`` (out-of-fold mean
            log-likelihood of the rest given the category, per row), ``std_error`` (over the
            rows), ``seconds``, ``rank``, ``note`` (why one was not run).
        strategy_: the chosen strategy.
        pooled_: the shared AutoDensity of the rest on all rows (``None`` without rest
            columns); ``own_``: combination index -> its own AutoDensity (``"per-category"``);
            ``conditional_``: the conditional flow (``"conditional-flow"``), else ``None``.
        choices_: per category of at least ``min_rows`` rows: ``category``, ``rows``, ``own``
            and ``pooled`` (out-of-fold mean log-likelihoods of the rest on its rows),
            ``chosen`` (the model its rows get).
        oof_score_samples_: each training row's log-likelihood with the rest scored
            out-of-fold (what an outlier threshold is set from).
    """

    def __init__(self, column_types: Any = "auto", smoothing: float = 0.5, min_rows: int = 50,
                 candidates: Sequence[str] | None = None, cv: int = 3, random_state: int = 0,
                 threads: int | None = None, missing: str = "error",
                 strategies: Sequence[str] | None = None) -> None:
        self.column_types = column_types
        self.smoothing = smoothing
        self.min_rows = min_rows
        self.candidates = candidates
        self.cv = cv
        self.random_state = random_state
        self.threads = threads
        self.missing = missing
        self.strategies = strategies

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

    def _codes(self, rows: np.ndarray, missing_ok: bool = False) -> np.ndarray:
        """``(n, c)`` label indices of the categorical cells; ``-1`` for an unknown label,
        :data:`MISSING` for a missing one (``missing_ok``; else a ``ValueError``)."""
        codes = np.empty((len(rows), len(self.categorical_columns_)), dtype=np.int64)
        for k, (j, labels) in enumerate(zip(self.categorical_columns_, self.categories_,
                                            strict=True)):
            text = isinstance(labels[0], str)
            index = {label: i for i, label in enumerate(labels)}
            absent = np.array([missing_ok and is_missing(v) for v in rows[:, j]], dtype=bool)
            cells = _labels_of(rows[~absent, j], text, str(j))
            codes[~absent, k] = [index.get(v, -1) for v in cells]
            codes[absent, k] = MISSING
        return codes

    def _auto(self, types: dict) -> Any:
        from densitylab.auto import AutoDensity

        return AutoDensity(candidates=self.candidates, cv=self.cv,
                           random_state=self.random_state, threads=self.threads,
                           column_types=types or "auto")

    def _complete(self, rows: np.ndarray, weights: np.ndarray, columns: list[int],
                  names: list[str] | None) -> tuple[np.ndarray, np.ndarray]:
        """The rows (and weights) without missing cells: dropped under ``missing="drop"``
        (counted in ``n_dropped_``), else a ``ValueError`` naming the first."""
        from densitylab._validation import MISSING_CHOICES, check_choice

        check_choice(self.missing, MISSING_CHOICES, "missing")
        holes = np.array([[is_missing(v) for v in row] for row in rows], dtype=bool).reshape(
            rows.shape)
        incomplete = holes.any(axis=1)
        self.n_dropped_ = int(incomplete.sum()) if self.missing == "drop" else 0
        if not incomplete.any():
            return rows, weights
        if self.missing == "error":
            i, j = (int(v) for v in np.argwhere(holes)[0])
            raise ValueError(f"X has {int(incomplete.sum())} row(s) with missing cells; the "
                             f"first is {_where(i, j, names)}. Pass missing='drop' to fit on "
                             "the complete rows")
        if (~incomplete).sum() < 2:
            raise ValueError(f"only {int((~incomplete).sum())} row(s) of X are complete: too "
                             "few to fit")
        return rows[~incomplete], weights[~incomplete]

    # -- fitting -------------------------------------------------------------------------
    def fit(self, X: Any, y: Any = None, sample_weight: ArrayLike | None = None
            ) -> CategoricalDensity:
        """Fit the frequencies and the models of the rest on ``X`` (a DataFrame or a 2-D
        array; ``y`` ignored); ``sample_weight``: non-negative row weights (the frequencies
        count them; the AutoDensities take them; the conditional flow, which takes none, is
        then not tried)."""
        from densitylab._labels import table_digest
        from densitylab._validation import check_positive_int

        if isinstance(self.smoothing, bool) or not isinstance(
                self.smoothing, int | float) or not self.smoothing >= 0:
            raise ValueError(f"smoothing must be a number >= 0, got {self.smoothing!r}")
        check_positive_int(self.min_rows, "min_rows")
        strategies = self._strategy_names()
        rows, names = table_rows(X)
        columns, rest_types = self._split_columns(rows, names)
        weights = np.ones(len(rows)) if sample_weight is None else np.asarray(
            sample_weight, dtype=np.float64)
        if weights.shape != (len(rows),) or not np.all(np.isfinite(weights)) or np.any(
                weights < 0) or not weights.sum() > 0:
            raise ValueError("sample_weight must hold one finite non-negative weight per row, "
                             "of positive sum")
        rows, weights = self._complete(rows, weights, columns, names)
        self._training_digest = table_digest(rows)
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
        self.pooled_, self.own_, self.conditional_ = None, {}, None
        self.choices_ = {"category": [], "rows": [], "own": [], "pooled": [], "chosen": []}
        log_frequency = self._log_frequency(inverse)
        if not self.rest_columns_:
            self.strategy_, self.cv_results_ = "ignore-category", _results(
                {"ignore-category": (0.0, math.nan, 0.0, "no columns besides the categories")})
            self.column_types_ = self._types()
            self.oof_score_samples_ = log_frequency
            return self
        rest = _numeric(rows, self.rest_columns_, names)
        weighted = None if sample_weight is None else weights
        tried = self._strategies(rest, inverse, weights, weighted, rest_types, strategies)
        self.cv_results_ = _results({name: (*_mean_and_error(oof, weights), seconds, note)
                                     if oof is not None else (-math.inf, math.nan, seconds, note)
                                     for name, (oof, seconds, note, _) in tried.items()})
        means = self.cv_results_["mean_log_likelihood"]
        self.strategy_ = self.cv_results_["candidate"][int(np.argmax(means))]
        if not math.isfinite(max(means)):
            raise ValueError("no model of the rest could fit these data: " + "; ".join(
                f"{n}: {note}" for n, note in zip(self.cv_results_["candidate"],
                                                  self.cv_results_["note"], strict=True)))
        oof, _, _, finish = tried[self.strategy_]
        finish()
        self.choices_["chosen"] = ["own" if self.strategy_ == "per-category" else "pooled"
                                   ] * len(self.choices_["category"])
        self.column_types_ = self._types()
        self.oof_score_samples_ = log_frequency + oof
        return self

    def _strategy_names(self) -> list[str]:
        names = list(STRATEGIES if self.strategies is None else self.strategies)
        unknown = [s for s in names if s not in STRATEGIES]
        if unknown or not names or len(set(names)) != len(names):
            raise ValueError(f"strategies must be distinct names among {list(STRATEGIES)}, "
                             f"got {self.strategies!r}")
        return names

    def _strategies(self, rest: np.ndarray, inverse: np.ndarray, weights: np.ndarray,
                    weighted: np.ndarray | None, rest_types: dict, names: list[str]
                    ) -> dict[str, tuple]:
        """Per strategy of ``names``: ``(out-of-fold log-likelihood of the rest per row or
        None, seconds, note, finish)``; ``finish()`` sets the fitted models of that strategy.
        The shared model is fitted whatever the names: it maps the rest for the conditional
        flow, and models the categories too small for their own."""
        import time

        start = time.perf_counter()
        self.pooled_ = self._auto(rest_types).fit(rest, sample_weight=weighted)
        pooled_oof = self.pooled_.oof_score_samples_
        tried = {"ignore-category": (pooled_oof, time.perf_counter() - start, "",
                                     lambda: None)}
        if "per-category" not in names:
            return self._only(tried, names, rest, inverse, weighted)
        start = time.perf_counter()
        own, own_oof = {}, pooled_oof.copy()
        for m in range(len(self.combinations_)):
            members = np.flatnonzero(inverse == m)
            if len(members) < self.min_rows:
                continue
            own[m] = self._auto(rest_types).fit(
                rest[members], sample_weight=None if weighted is None else weighted[members])
            own_oof[members] = own[m].oof_score_samples_
            w = weights[members]
            for key, value in (("category", self._label(m)), ("rows", len(members)),
                               ("own", float(np.average(own_oof[members], weights=w))),
                               ("pooled", float(np.average(pooled_oof[members], weights=w)))):
                self.choices_[key].append(value)
        tried["per-category"] = (
            own_oof if own else None, time.perf_counter() - start,
            "" if own else f"not run: no category holds min_rows={self.min_rows} rows",
            lambda: setattr(self, "own_", own))
        return self._only(tried, names, rest, inverse, weighted)

    def _only(self, tried: dict[str, tuple], names: list[str], rest: np.ndarray,
              inverse: np.ndarray, weighted: np.ndarray | None) -> dict[str, tuple]:
        """``tried`` and the conditional flow, restricted to ``names`` (in that order)."""
        import time

        if "conditional-flow" in names:
            start = time.perf_counter()
            oof, note, finish = self._conditional(rest, inverse, weighted)
            tried["conditional-flow"] = (oof, time.perf_counter() - start, note, finish)
        return {name: tried[name] for name in names}

    def _conditional(self, rest: np.ndarray, inverse: np.ndarray, weighted: np.ndarray | None
                     ) -> tuple[np.ndarray | None, str, Any]:
        """Out-of-fold scores of a conditional flow of the rest given the category (the
        folds of AutoDensity), a note, and how to refit it on every row."""
        from densitylab.auto import DEFAULT_CANDIDATES, FLOW_CANDIDATES, equal_folds

        names = DEFAULT_CANDIDATES if self.candidates is None else self.candidates
        if not any(c in FLOW_CANDIDATES for c in names):
            return None, "not run: no flow among the candidates", lambda: None
        if len(self.combinations_) < 2:
            return None, "not run: a single category", lambda: None
        if weighted is not None:
            return None, "not run: the conditional flow takes no sample_weight", lambda: None
        from densitylab._ties import tie_groups
        from densitylab.runtime import torch_threads

        auto, k, seed = self.pooled_, len(self.combinations_), self.random_state
        z = auto._standardised_for_fitting(rest, seed)
        scored, log_jacobian = auto._mapped(rest)
        context = _one_hot(inverse, k)
        oof = np.full(len(rest), -math.inf)
        try:
            with torch_threads(self.threads):
                for train, test in equal_folds(len(z), self.cv, seed, tie_groups(rest)):
                    flow = self._flow().fit(context[train], z[train])
                    oof[test] = flow.score_samples(context[test], scored[test]) \
                        + log_jacobian[test]
        except ValueError as err:
            return None, f"failed: {err}", lambda: None

        def finish() -> None:
            with torch_threads(self.threads):
                self.conditional_ = self._flow().fit(context, z)

        return oof, "", finish

    def _flow(self) -> Any:
        from densitylab.estimators import ConditionalFlowDensity

        return ConditionalFlowDensity(random_state=self.random_state)

    def _types(self) -> list[Any]:
        from densitylab.columns import ColumnType

        rest = iter([] if self.pooled_ is None else self.pooled_.column_types_)
        return [ColumnType("categorical") if j in self.categorical_columns_ else next(rest)
                for j in range(self.n_features_in_)]

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

    def _table(self, X: Any) -> tuple[np.ndarray, list[str] | None]:
        rows, names = table_rows(X)
        if rows.shape[1] != self.n_features_in_:
            raise ValueError(f"X has {rows.shape[1]} columns; the model was fitted on "
                             f"{self.n_features_in_}")
        fitted = getattr(self, "feature_names_in_", None)
        if names is not None and fitted is not None and names != list(fitted):
            raise ValueError(f"X's columns {names} differ from the fitted {list(fitted)}")
        return rows, names

    def score_samples(self, X: Any) -> np.ndarray:
        """``log P(category) + log p(rest | category)`` of each row; ``-inf`` for a label
        never seen in training. Missing cells are integrated out exactly: a missing label by
        summing over the labels it could hold (``log sum_c P(c, observed labels) p(rest | c)``),
        a missing cell of the rest where the model of the rest can (a KDE or a Gaussian
        mixture)."""
        self._check_fitted()
        rows, names = self._table(X)
        codes = self._codes(rows, missing_ok=True)
        rest = None if self.pooled_ is None else _numeric(rows, self.rest_columns_, names)
        absent = (codes == MISSING).any(axis=1)
        out = np.empty(len(rows))
        if not absent.all():
            out[~absent] = self._joint(codes[~absent], None if rest is None else rest[~absent])
        if absent.any():  # every row beside each combination it could hold, scored at once
            rows_absent = np.flatnonzero(absent)
            completions: dict[tuple, np.ndarray] = {}
            parts = [completions.setdefault(tuple(codes[i]), self._completions(codes[i]))
                     for i in rows_absent]
            sizes = np.array([len(part) for part in parts])
            owner = np.repeat(rows_absent, sizes)
            joint = self._joint(np.concatenate(parts), None if rest is None else rest[owner])
            starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
            top = np.maximum.reduceat(joint, starts)
            top = np.where(np.isfinite(top), top, 0.0)
            with np.errstate(divide="ignore"):
                out[rows_absent] = top + np.log(np.add.reduceat(
                    np.exp(joint - np.repeat(top, sizes)), starts))
        return out

    def _joint(self, codes: np.ndarray, rest: np.ndarray | None) -> np.ndarray:
        """``log P(category) + log p(rest | category)`` of rows with every label given."""
        combination = self._combination_of(codes)
        log_p = self._log_frequency(combination)
        if rest is None:
            return log_p
        rest_log_p = np.empty(len(codes))
        for m, model in self._models_by_row(combination):
            if model is self.conditional_:
                rest_log_p[m] = self._conditional_score(rest[m], combination[m])
            else:
                rest_log_p[m] = model.score_samples(rest[m])
        return log_p + rest_log_p

    def _completions(self, codes: np.ndarray) -> np.ndarray:
        """Every combination of labels that a row's codes with missing entries could hold."""
        import itertools

        choices = [range(len(labels)) if c == MISSING else [c]
                   for c, labels in zip(codes.tolist(), self.categories_, strict=True)]
        count = math.prod(len(c) for c in choices)
        if count > MAX_COMPLETIONS:
            raise ValueError(f"a row's missing labels could hold {count} combinations; "
                             f"integrating out more than {MAX_COMPLETIONS} is refused")
        return np.array(list(itertools.product(*choices)), dtype=np.int64)

    def _conditional_score(self, rest: np.ndarray, combination: np.ndarray) -> np.ndarray:
        """The conditional flow's log-likelihood of the rest, in the data's units."""
        if np.isnan(rest).any():
            i, k = (int(v) for v in np.argwhere(np.isnan(rest))[0])
            raise ValueError(f"X has a missing cell in column {self.rest_columns_[k]}; the "
                             "chosen conditional flow cannot integrate it out: drop or fill it")
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            z, log_jacobian = self.pooled_._mapped(rest)
        reach = np.all(np.isfinite(z), axis=1) & np.isfinite(log_jacobian)
        out = np.full(len(rest), -math.inf)
        if reach.any():
            context = _one_hot(combination[reach], len(self.combinations_))
            out[reach] = self.conditional_.score_samples(context, z[reach]) + log_jacobian[reach]
        return out

    def _models_by_row(self, combination: np.ndarray) -> list[tuple[np.ndarray, Any]]:
        """``(rows, model of the rest)`` groups: the conditional flow for every seen category
        where it was chosen; a category's own model; else the shared one."""
        if self.conditional_ is not None:
            seen = combination >= 0
            groups = [(np.flatnonzero(seen), self.conditional_),
                      (np.flatnonzero(~seen), self.pooled_)]
        else:
            own = np.isin(combination, list(self.own_))
            groups = [(np.flatnonzero(combination == m), model)
                      for m, model in self.own_.items()]
            groups.append((np.flatnonzero(~own), self.pooled_))
        return [(rows, model) for rows, model in groups if len(rows)]

    def score(self, X: Any, y: Any = None) -> float:
        """Total log-likelihood of ``X``."""
        return float(np.sum(self.score_samples(X)))

    def recorded_out_of_fold(self, X: Any) -> np.ndarray | None:
        """``oof_score_samples_`` when ``X`` is the training data, else ``None`` (also when
        not fitted: nothing was recorded)."""
        from densitylab._labels import table_digest

        if not hasattr(self, "combinations_"):
            return None
        recorded = getattr(self, "oof_score_samples_", None)
        rows, _ = self._table(X)
        if recorded is None or table_digest(rows) != getattr(self, "_training_digest", None):
            return None
        return recorded.copy()

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
                if model is self.conditional_:
                    context = _one_hot(combination[rows], len(self.combinations_))
                    drawn = self.pooled_._to_data(model.sample(context, random_state=seed))
                else:
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
        return [f"categorical ({len(self.categories_[self.categorical_columns_.index(j)])} "
                "labels), log-probability" if j in self.categorical_columns_
                else t.describe() for j, t in enumerate(self.column_types_)]


def _results(rows: dict[str, tuple[float, float, float, str]]) -> dict[str, list]:
    """``cv_results_`` (AutoDensity's columns) of ``{strategy: (mean, se, seconds, note)}``,
    ranked by mean (ties: the order of :data:`STRATEGIES`)."""
    names = list(rows)
    means = [rows[n][0] for n in names]
    order = sorted(range(len(names)), key=lambda i: -means[i])
    ranks = np.empty(len(names), dtype=int)
    ranks[order] = np.arange(1, len(names) + 1)
    return {"candidate": names, "mean_log_likelihood": means,
            "std_error": [rows[n][1] for n in names], "seconds": [rows[n][2] for n in names],
            "rank": [int(r) for r in ranks], "note": [rows[n][3] for n in names]}


# -- save / load (through densitylab.save / densitylab.load: safetensors + JSON) ----------------
def to_state(model: CategoricalDensity, auto_state: Any, flow_state: Any
             ) -> tuple[dict[str, Any], dict]:
    """The fitted ``model`` as ``(torch tensors, JSON config)``; ``auto_state`` saves each
    AutoDensity of the rest, ``flow_state`` the conditional flow."""
    import torch

    from densitylab.auto import json_number

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
    conditional = None
    if model.conditional_ is not None:
        inner, conditional = flow_state(model.conditional_)
        tensors |= {f"conditional.{k}": v for k, v in inner.items()}
    params = {k: list(v) if isinstance(v, tuple) else v for k, v in model.get_params().items()}
    results = {k: [json_number(x) if isinstance(x, float) else x for x in v]
               for k, v in model.cv_results_.items()}
    return tensors, {"params": params, "categorical_columns": model.categorical_columns_,
                     "categories": model.categories_, "n_features_in": model.n_features_in_,
                     "choices": model.choices_, "rest": rest, "strategy": model.strategy_,
                     "cv_results": results, "conditional": conditional,
                     "training_digest": getattr(model, "_training_digest", None),
                     "feature_names": None if getattr(model, "feature_names_in_", None) is None
                     else [str(n) for n in model.feature_names_in_]}


STATE_KEYS = {"params", "categorical_columns", "categories", "n_features_in", "choices", "rest"}
"""What every saved CategoricalDensity holds; :data:`NEW_KEYS` were added in the second version
(a file without them, whose categories chose their own models one by one, still loads)."""
NEW_KEYS = {"strategy", "cv_results", "conditional", "training_digest", "feature_names"}


def from_state(tensors: dict[str, Any], config: Any, device: Any, auto_restore: Any,
               flow_restore: Any) -> CategoricalDensity:
    """Rebuild what :func:`to_state` wrote, checking every piece (an untrusted folder):
    ``ValueError`` otherwise. ``auto_restore`` rebuilds an AutoDensity, ``flow_restore`` the
    conditional flow, from their tensors and configurations."""
    from densitylab._schema import checked_arguments, conforms
    from densitylab.auto import checked_results

    if not isinstance(config, dict) or set(config) not in (STATE_KEYS, STATE_KEYS | NEW_KEYS):
        raise ValueError(f"the CategoricalDensity's configuration needs {sorted(STATE_KEYS)} "
                         f"and may hold {sorted(NEW_KEYS)}")
    if set(config) == STATE_KEYS:  # the first version: no strategy table, no flow
        config = config | {"strategy": "per-category" if any(
            k.startswith("own.") for k in config.get("rest") or {}) else "ignore-category",
            "cv_results": None, "conditional": None, "training_digest": None,
            "feature_names": None}
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
            and labels == sorted(labels) for labels in categories)):
        raise ValueError("the CategoricalDensity's categories must be, per column, a sorted "
                         "list of distinct strings or of distinct finite numbers")
    own_tensors = {"combinations", "counts", "oof"}
    missing = own_tensors - set(tensors)
    if missing:
        raise ValueError(f"the CategoricalDensity lacks tensors {sorted(missing)}")
    combinations = tensors["combinations"].cpu().numpy().astype(np.int64)
    counts = tensors["counts"].cpu().double().numpy()
    oof = tensors["oof"].cpu().double().numpy()
    sizes = np.array([len(labels) for labels in categories])
    if combinations.ndim != 2 or combinations.shape[1] != len(columns) or np.any(
            combinations < 0) or np.any(combinations >= sizes) or len(np.unique(
            combinations, axis=0)) != len(combinations) or counts.shape != (
            len(combinations),) or not np.all(np.isfinite(counts)) or np.any(
            counts <= 0) or oof.ndim != 1 or np.any(np.isnan(oof)) or np.any(oof == np.inf):
        raise ValueError("the CategoricalDensity's combinations, counts and scores do not fit "
                         "its categories (distinct combinations of known labels, positive "
                         "counts)")
    model.categorical_columns_ = list(columns)
    model.rest_columns_ = [j for j in range(d) if j not in columns]
    model.categories_ = [[float(v) if not isinstance(v, str) else v for v in labels]
                         for labels in categories]
    model.combinations_, model.counts_, model.n_features_in_ = combinations, counts, d
    model.oof_score_samples_ = oof
    names = config["feature_names"]
    if names is not None:
        if not (isinstance(names, list) and len(names) == d
                and all(isinstance(n, str) for n in names)):
            raise ValueError("the CategoricalDensity's feature_names must list one name per "
                             "column")
        model.feature_names_in_ = np.asarray(names, dtype=object)
    if isinstance(config["training_digest"], str):
        model._training_digest = config["training_digest"]
    strategy, rest = config["strategy"], config["rest"]
    if strategy not in STRATEGIES:
        raise ValueError(f"the CategoricalDensity names an unknown strategy {strategy!r}")
    if not isinstance(rest, dict) or (bool(model.rest_columns_) != ("pooled" in rest)):
        raise ValueError("the CategoricalDensity's models of the rest do not fit its columns")
    model.pooled_, model.own_, model.conditional_ = None, {}, None
    for key, inner_config in rest.items():
        index = key.removeprefix("own.")
        if key != "pooled" and not (strategy == "per-category" and key.startswith("own.")
                                    and index.isdigit() and int(index) < len(combinations)):
            raise ValueError(f"the CategoricalDensity names an unknown model {key!r}")
        inner = {k.removeprefix(f"{key}."): v for k, v in tensors.items()
                 if k.startswith(f"{key}.")}
        auto = auto_restore(inner, inner_config, device)
        if auto.n_features_in_ != len(model.rest_columns_) or auto.categorical_columns_:
            raise ValueError("a model of the rest does not fit the rest's columns")
        if key == "pooled":
            model.pooled_ = auto
        else:
            model.own_[int(index)] = auto
    inner = {k.removeprefix("conditional."): v for k, v in tensors.items()
             if k.startswith("conditional.")}
    if (strategy == "conditional-flow") != (config["conditional"] is not None) or (
            config["conditional"] is None and inner):
        raise ValueError("the CategoricalDensity's conditional flow does not fit its strategy")
    if config["conditional"] is not None:
        flow = flow_restore(inner, config["conditional"], device)
        if (flow.n_features_in_, flow.n_outputs_) != (len(combinations) - 1,
                                                      len(model.rest_columns_)):
            raise ValueError("the CategoricalDensity's conditional flow does not fit its "
                             "categories and columns")
        model.conditional_ = flow
    known = own_tensors | {k for k in tensors if k.split(".")[0] in ("pooled", "own",
                                                                      "conditional")}
    if set(tensors) != known:
        raise ValueError(f"the CategoricalDensity holds unknown tensors "
                         f"{sorted(set(tensors) - known)}")
    choices = config["choices"]
    if not (isinstance(choices, dict) and set(choices) == {"category", "rows", "own", "pooled",
                                                            "chosen"}
            and len({len(v) if isinstance(v, list) else -1 for v in choices.values()}) == 1):
        raise ValueError("the CategoricalDensity's choices must be lists of one length under "
                         "category, rows, own, pooled and chosen")
    model.choices_ = choices
    model.cv_results_ = _results({}) if config["cv_results"] is None else checked_results(
        config["cv_results"])
    if model.cv_results_["candidate"] and strategy not in model.cv_results_["candidate"]:
        raise ValueError("the CategoricalDensity's strategy is not among its cv_results")
    model.strategy_ = strategy
    model.column_types_ = model._types()
    return model
