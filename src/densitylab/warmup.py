"""Compile and cache every compiled path ahead of use (``densitylab warmup``).

Each path of :data:`densitylab.compiling.PATHS` runs once on a few hundred points, the way a
user's first call would run it, so numba compiles its kernels and writes them to its disk cache;
a path already cached loads in about a second. ``make test`` and ``make report`` call it, so no
test or experiment waits on a compilation in silence.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np


def _points() -> np.ndarray:
    from densitylab import datasets

    return datasets.get("moons").sample(400, seed=0)


def _kde() -> None:
    from densitylab.kde import KDE

    x = _points()
    KDE(bandwidth="cv").fit(x).score_samples(x)


def _spline() -> None:
    from densitylab.estimators import FlowDensity

    FlowDensity(epochs=1).fit(_points())  # the tabular recipe: the spline engine, float64


def _spline_log_prob() -> None:
    import torch

    from densitylab import flows
    from densitylab.training.compiled_spline import COMPILED_LOG_PROB_MIN_POINTS

    x = torch.zeros(COMPILED_LOG_PROB_MIN_POINTS, 2)
    for dtype in (torch.float32, torch.float64):  # flows of both precisions
        with torch.no_grad():
            flows.recommended(2).to(dtype).eval().log_prob(x.to(dtype))


def _realnvp() -> None:
    from densitylab import flows
    from densitylab.training import fit

    fit(flows.realnvp(dim=2), _points(), epochs=1, engine="compiled", verbose=False)


WARMUPS: dict[str, Callable[[], None]] = {
    "kde": _kde, "spline": _spline, "spline-log-prob": _spline_log_prob, "realnvp": _realnvp,
}


def warmup(on_path: Callable[[str, float], None] = lambda name, seconds: None
           ) -> dict[str, float]:
    """Run every compiled path once (compiling what is not cached); returns the seconds each
    took and reports each to ``on_path(name, seconds)`` as it finishes."""
    seconds = {}
    for name, run in WARMUPS.items():
        start = time.perf_counter()
        run()
        seconds[name] = time.perf_counter() - start
        on_path(name, seconds[name])
    return seconds


__all__ = ["WARMUPS", "warmup"]
