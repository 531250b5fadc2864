"""Tables with a categorical column: what modelling the rest given the category gains.

Data (shipped inside scikit-learn, nothing is downloaded): iris (4 measurements rounded to
0.1 cm, the species as a text column) and wine (13 measurements, the cultivar as a text
column). Protocol: 3 outer folds stratified by the label (seed 0); on each training part

  by-category  dl.AutoDensity(): P(label) x p(rest | label), the rest's strategy (one shared
               AutoDensity, one per label of at least 50 rows, a conditional flow given the
               label) chosen by its own 3-fold cross-validation on the training part only
  ignore       dl.CategoricalDensity(strategies=["ignore-category"]): the same smoothed
               P(label) times one AutoDensity of the rest, whatever the label

and the held-out part is scored: mean log-likelihood in nats per row (a log-probability of
the label, plus the rest's log-density, log-mass in the rounded columns: the same units for
both), +- the standard error over the folds. Usage:

    OMP_NUM_THREADS=1 python benchmarks/categorical_tables.py [CANDIDATES]

CANDIDATES: AutoDensity's, comma-separated (default: its defaults).
"""

from __future__ import annotations

import sys
import time

import numpy as np
import pandas as pd
from sklearn import datasets
from sklearn.model_selection import StratifiedKFold

import densitylab as dl


def table(name: str) -> pd.DataFrame:
    data = getattr(datasets, f"load_{name}")()
    frame = pd.DataFrame(data.data, columns=[str(c) for c in data.feature_names])
    frame.insert(0, "label", np.asarray(data.target_names)[data.target])
    return frame


def main(candidates: list[str] | None) -> None:
    for name in ("iris", "wine"):
        frame = table(name)
        scores: dict[str, list[float]] = {"by-category": [], "ignore": []}
        chosen, start = [], time.perf_counter()
        folds = StratifiedKFold(3, shuffle=True, random_state=0).split(frame, frame["label"])
        for train, test in folds:
            fit, held_out = frame.iloc[train], frame.iloc[test]
            auto = dl.AutoDensity(candidates=candidates, random_state=0).fit(fit)
            chosen.append(auto.best_estimator_.strategy_)
            scores["by-category"].append(float(auto.score_samples(held_out).mean()))
            ignore = dl.CategoricalDensity(candidates=candidates,
                                           strategies=["ignore-category"]).fit(fit)
            scores["ignore"].append(float(ignore.score_samples(held_out).mean()))
        print(f"{name} ({len(frame)} rows, {frame.shape[1] - 1} numeric columns + label), "
              f"candidates {candidates or 'default'}: chosen {chosen}, "
              f"{time.perf_counter() - start:.0f} s")
        for method, values in scores.items():
            v = np.array(values)
            print(f"  {method:12s} {v.mean():8.3f} +- {v.std(ddof=1) / np.sqrt(len(v)):.3f}"
                  f"   folds {np.round(v, 3).tolist()}")


if __name__ == "__main__":
    main(sys.argv[1].split(",") if len(sys.argv) > 1 else None)
