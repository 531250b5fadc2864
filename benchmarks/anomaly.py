"""Anomaly detection on real data that ships with scikit-learn: densities against the detectors.

Each task trains on normal points only (novelty detection) and scores a held-out test set of
normal points and anomalies; the measure is ROC-AUC of the detectors' ``score_samples``
(higher = more normal), mean and standard error over ``--splits`` random splits, every method
on the same splits. Features are standardised on the training part of each split.

Tasks:
- breast cancer: benign cases are normal, malignant cases the anomalies (30 features);
- digits: one digit class is normal, the other nine the anomalies (64 pixels, PCA to 16
  dimensions fitted on the normal training points), for digits 0-9 (10 tasks);
- wine: cultivar 0 is normal, cultivars 1 and 2 the anomalies (13 features).

Methods: densitylab's KDE with a cross-validated bandwidth and a spline flow (4 rational-quadratic
couplings of (64, 64), standardised, early stopping on validation) inside
:class:`densitylab.OutlierDetector`; scikit-learn's IsolationForest,
LocalOutlierFactor(novelty=True) and OneClassSVM at their defaults.

    OMP_NUM_THREADS=1 python benchmarks/anomaly.py [--splits 5] [--quick]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Iterator

import numpy as np
import torch
from sklearn.datasets import load_breast_cancer, load_digits, load_wine
from sklearn.decomposition import PCA
from sklearn.ensemble import IsolationForest
from sklearn.metrics import roc_auc_score
from sklearn.neighbors import LocalOutlierFactor
from sklearn.preprocessing import StandardScaler
from sklearn.svm import OneClassSVM

import densitylab as dl

Task = tuple[str, np.ndarray, np.ndarray, bool]  # name, normal rows, anomalous rows, PCA?


def tasks(quick: bool) -> Iterator[Task]:
    cancer = load_breast_cancer()
    yield "breast cancer", cancer.data[cancer.target == 1], cancer.data[cancer.target == 0], False
    wine = load_wine()
    yield "wine (cultivar 0)", wine.data[wine.target == 0], wine.data[wine.target != 0], False
    digits = load_digits()
    rng = np.random.default_rng(0)
    pixels = digits.data + rng.uniform(0, 1, size=digits.data.shape)  # dequantise the 0-16 steps
    for digit in range(2 if quick else 10):
        normal, other = pixels[digits.target == digit], pixels[digits.target != digit]
        yield f"digits ({digit} normal)", normal, other, True


def detectors(seed: int) -> dict[str, Callable[[], object]]:
    flow = dl.FlowDensity(model="nsf", n_layers=4, hidden=(64, 64), epochs=200, batch_size=64,
                          lr=1e-3, patience=20, random_state=seed)
    return {
        "densitylab KDE (cv)": lambda: dl.OutlierDetector(dl.KDE(bandwidth="cv")),
        "densitylab spline flow": lambda: dl.OutlierDetector(flow),
        "IsolationForest": lambda: IsolationForest(random_state=seed),
        "LocalOutlierFactor": lambda: LocalOutlierFactor(novelty=True),
        "OneClassSVM": lambda: OneClassSVM(gamma="scale"),
    }


def split(task: Task, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Train on 70% of the normal rows; test on the rest and as many anomalies (at most)."""
    _, normal, anomalous, reduce = task
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(normal))
    n_train = int(0.7 * len(normal))
    train, normal_test = normal[order[:n_train]], normal[order[n_train:]]
    anomalies = anomalous[rng.permutation(len(anomalous))[: len(normal_test)]]
    test = np.vstack([normal_test, anomalies])
    is_normal = np.r_[np.ones(len(normal_test)), np.zeros(len(anomalies))]
    scaler = StandardScaler().fit(train)
    train, test = scaler.transform(train), scaler.transform(test)
    if reduce:
        pca = PCA(n_components=16, random_state=seed).fit(train)
        train, test = pca.transform(train), pca.transform(test)
    return train, test, is_normal


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--splits", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="two digit tasks, two splits")
    args = parser.parse_args()
    torch.set_num_threads(1)
    splits = 2 if args.quick else args.splits
    names = list(detectors(0))
    print("| task | " + " | ".join(names) + " |")
    print("|---" * (len(names) + 1) + "|")
    wins, count = 0, 0
    seconds = dict.fromkeys(names, 0.0)
    for task in tasks(args.quick):
        aucs: dict[str, list[float]] = {name: [] for name in names}
        for seed in range(splits):
            train, test, is_normal = split(task, seed)
            for name, make in detectors(seed).items():
                start = time.perf_counter()
                detector = make().fit(train)
                aucs[name].append(roc_auc_score(is_normal, detector.score_samples(test)))
                seconds[name] += time.perf_counter() - start
        means = {n: np.mean(a) for n, a in aucs.items()}
        ours = max(means[n] for n in names if n.startswith("densitylab"))
        theirs = max(means[n] for n in names if not n.startswith("densitylab"))
        wins += ours >= theirs
        count += 1
        cells = [f"{means[n]:.3f} ± {np.std(a, ddof=1) / np.sqrt(len(a)):.3f}"
                 for n, a in aucs.items()]
        best = max(means.values())
        cells = [f"**{c}**" if means[n] == best else c for n, c in zip(names, cells, strict=True)]
        print(f"| {task[0]} | " + " | ".join(cells) + " |", flush=True)
    print(f"\ndensitylab's best detector >= the best scikit-learn detector on {wins} of {count} "
          f"tasks (mean ROC-AUC over {splits} splits).")
    print("seconds, all tasks and splits: "
          + ", ".join(f"{n} {s:.1f}" for n, s in seconds.items()))


if __name__ == "__main__":
    main()
