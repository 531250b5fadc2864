"""``train`` on a table with categorical columns (text, or declared ``categorical``):
:class:`densitylab.AutoDensity`, which models it as ``P(category) x p(rest | category)`` (a
:class:`densitylab.CategoricalDensity`); the default model restricts the rest's candidates to
the tabular flow, ``--model auto`` compares them all."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer


def categorical_table(data: str, missing: str, declare: Callable[[list[str] | None], Any]
                      ) -> Any:
    """``(table, declarations)``: the user's file read with its text columns as labels, where
    it has a text column or the declarations (``declare(column names)``, from
    ``--column-types``) make one categorical; else ``None`` (the numeric path)."""
    from densitylab.cli._data import is_builtin
    from densitylab.datasets import load_table

    if is_builtin(data):
        return None
    table = load_table(data, allow_missing=missing == "drop", text=True)
    declared = declare(table.names)
    categorical = isinstance(declared, dict) and any(
        spec.strip().lower() == "categorical" for spec in declared.values())
    return (table, declared) if table.labels or categorical else None


def train_by_category(table: Any, declared: Any, data: str, out: Path, seed: int,
                      test_fraction: float, threads: int | None, environment: dict,
                      split: Callable, quantiles: Callable, candidates: tuple[str, ...] | None,
                      quiet: bool = True) -> None:
    """Fit :class:`densitylab.AutoDensity` (a :class:`densitylab.CategoricalDensity` inside)
    on a train split of ``table`` (``split``: ``train``'s split keeping copies together) with
    the rest's ``candidates`` (``None``: AutoDensity's; ``("flow",)``: the tabular recipe);
    write the model, its strategy table (``model_selection.csv``), config, metrics (test NLL,
    the training ``quantiles`` for ``score --contamination``), a samples figure, and print
    each column's type."""
    import numpy as np

    from densitylab import plots
    from densitylab._files import output_directory
    from densitylab.auto import AutoDensity
    from densitylab.io import save

    for note in table.notes:
        typer.echo(f"note: {note}", err=True)
    names = table.names or [f"x{j + 1}" for j in range(table.x.shape[1])]
    numeric = [j for j in range(table.x.shape[1]) if j not in table.labels]
    incomplete = np.isnan(table.x[:, numeric]).any(axis=1) | np.array(
        [any(cells[i] is None for cells in table.labels.values())
         for i in range(len(table.x))], dtype=bool)
    rows = table.rows()[~incomplete]
    if incomplete.any():
        typer.echo(f"note: dropped {int(incomplete.sum())} of {len(incomplete)} rows with "
                   f"missing values (--missing drop); fitting on {len(rows)}", err=True)
    surrogate = table.x[~incomplete].copy()  # numbers standing for the rows: copies found
    for j, cells in table.labels.items():  # by label codes as well
        surrogate[:, j] = np.unique(np.asarray(cells, dtype=object)[~incomplete].astype(str),
                                    return_inverse=True)[1]
    fit_rows, test_rows = split(surrogate, test_fraction, seed, rows=rows)
    auto = AutoDensity(candidates=candidates, column_types=declared, random_state=seed,
                       threads=threads, verbose=False if quiet else None)
    auto.fit(_frame(fit_rows, names))
    test = _frame(test_rows, names)
    log_p = auto.score_samples(test)
    unseen = np.isneginf(log_p)  # a label that only the test rows hold: probability 0
    if unseen.all():
        raise ValueError(f"{data}: every test row holds a label the training rows lack")
    if unseen.any():
        typer.echo(f"note: {int(unseen.sum())} test row(s) hold a label the training rows lack "
                   "(log-probability -inf); the test NLL is over the others", err=True)
    model = auto.best_estimator_
    types = dict(zip(names, auto.describe_columns(), strict=True))
    metrics = {"test_nll": float(-np.mean(log_p[~unseen])),
               "test_rows_with_unseen_labels": int(unseen.sum()), "chosen": auto.best_name_,
               "strategy": model.strategy_,
               "cv_mean_log_likelihood": dict(zip(auto.cv_results_["candidate"],
                                                  auto.cv_results_["mean_log_likelihood"],
                                                  strict=True)),
               "categories": {names[j]: model.categories_[k]
                              for k, j in enumerate(model.categorical_columns_)},
               "choices": model.choices_, "column_types": types,
               "train_log_density_quantiles": quantiles(auto.oof_score_samples_)}
    config = {"command": "train", "data": data, "model": "auto" if candidates is None
              else "tabular", "seed": seed, "n_train": len(fit_rows), "threads": threads,
              "params": auto.get_params(), "environment": environment, "columns": table.names}
    title = f"Test data and samples of P(category) x p(rest | category) ({model.strategy_})"
    figure = plots.samples(auto, test.iloc[:2000], seed=seed, title=title)
    with output_directory(out, "train") as staging:
        (staging / "config.json").write_text(json.dumps(config, indent=2))
        (staging / "metrics.json").write_text(json.dumps(metrics, indent=2))
        (staging / "model_selection.csv").write_text(auto.results_csv())
        save(auto, staging / "model")
        plots.save_figures(staging / "figures", {"samples": figure})
    for name, described in types.items():
        typer.echo(f"column {name}: {described}")
    typer.echo(f"wrote {out}: P(category) x p(rest | category) by {model.strategy_} (chosen by "
               f"{auto.cv}-fold cross-validation, see model_selection.csv), test NLL "
               f"{metrics['test_nll']:.4f}")


def _frame(rows: Any, names: list[str]) -> Any:
    """Rows of labels and numbers as a DataFrame of the table's column names (numbers as
    numbers)."""
    import pandas as pd

    return pd.DataFrame(rows, columns=names).infer_objects()
