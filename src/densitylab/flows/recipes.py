"""Each model's defaults: the architecture and training budget used where a user sets none.

``realnvp``, ``glow``, ``nsf`` and ``maf`` default to the coursework's setting (4 layers of
(32, 32), 1000 epochs of batches of 64, Adam 1e-3 at a constant rate); ``"recommended"`` is the
spline flow of :func:`~densitylab.flows.recommended` with its recipe and a budget counted in
optimizer steps; ``"cnf"`` and ``"cnf-fm"`` are continuous flows trained by maximum likelihood
and by flow matching (:data:`CNF`, :data:`CNF_FM`), budgets also in steps; ``"tabular"`` is the
recipe for real data (:data:`TABULAR`), whose batch and
budget scale with the number of points, and ``"tabular-maf"`` / ``"tabular-maf-spline"`` the
same recipe with a masked autoregressive flow (:data:`TABULAR_MAF`, affine or spline layers).
The estimator and the command line both fill in their
unset values here.
"""

from __future__ import annotations

import math
from typing import Any

from densitylab.flows.builders import (
    BUILDERS,
    IMAGE_BUILDERS,
    RECOMMENDED_FIT,
    RECOMMENDED_MODEL,
    RECOMMENDED_STEPS,
    recommended_epochs,
)

MODELS = (*sorted(set(BUILDERS) - set(IMAGE_BUILDERS)), "recommended", "tabular",
          "tabular-mixture", "tabular-maf", "tabular-maf-spline", "cnf-fm")
SCHEDULES = ("constant", "cosine")
FIT_OPTIONS = ("epochs", "batch_size", "lr", "schedule", "standardize", "objective")  # the rest
# builds (a recipe without an objective trains by maximum likelihood)
COURSEWORK = {"n_layers": 4, "hidden": (32, 32), "epochs": 1000, "batch_size": 64, "lr": 1e-3,
              "schedule": "constant", "standardize": False}
RECOMMENDED = {"builder": "nsf", **RECOMMENDED_MODEL, **RECOMMENDED_FIT}
TABULAR = {"builder": "nsf", "n_layers": 4, "hidden": (64, 64), "bins": 8, "bound": 5.0,
           "mixing": "linear", "lr": 2e-3, "schedule": "cosine", "standardize": True}
"""Real data of a few to ~64 columns: a spline flow (bounded: identity beyond 5 standard
deviations, so no far point gets an absurd density) with a learned linear map before every
coupling (so correlations cost nothing), that starts as a Gaussian fitted to the standardised
data; trained on standardised data with a cosine schedule and the best validation epoch kept
(early stopping), for a budget proportional to the data. The linear maps (starting at the
identity) gained 0.3-9 nats per point on the real-data benchmark (``benchmarks/real_data.py``,
see ``benchmarks/RESULTS.md``)."""
TABULAR_MAF = {"builder": "maf", "n_layers": 5, "hidden": (64, 64), "transform": "affine",
               "lr": 2e-3, "schedule": "cosine", "standardize": True}
"""The tabular recipe with a masked autoregressive flow instead of spline couplings: 5 affine
MADE layers of (64, 64), the order reversed between layers, each starting as the identity (the
MAF paper's density model); the same budget, schedule and early stopping as :data:`TABULAR`."""
TABULAR_MAF_SPLINE = TABULAR_MAF | {"transform": "spline", "bins": 8, "bound": 5.0}
""":data:`TABULAR_MAF` with rational-quadratic spline layers (bounded like :data:`TABULAR`'s):
the best flow on the dequantised digits of ``benchmarks/real_data.py``, but 2-16x the affine
MAF's time, so not one of ``AutoDensity``'s candidates (see ``benchmarks/RESULTS.md``)."""
TABULAR_MIXTURE = TABULAR | {"mixture_base": 10}
""":data:`TABULAR` on a Gaussian-mixture base (up to 10 components, chosen by BIC, fitted to the
data before training; see :func:`~densitylab.flows.with_mixture_base`): for data in clusters or
classes. On the real-data benchmark it beats scikit-learn's BIC-selected mixture on the
15-dimensional digits (-45.09 vs -45.27 nats) and the plain tabular flow on iris, and loses to
the plain one on wine and breast cancer, so it is a separate candidate of ``AutoDensity``."""
CNF = {"builder": "cnf", "hidden": (64, 64), "zero_init": True, "train_tol": 1e-3,
       "batch_size": 256, "lr": 3e-3, "schedule": "cosine", "standardize": True,
       "objective": "nll", "steps": 400}
"""A continuous flow trained by maximum likelihood through the ODE solver (FFJORD): a (64, 64)
ELU vector field starting at 0 (``zero_init``: the flow starts as the identity), exact
divergence, dopri5, batches of 256, Adam 3e-3 cosine, about ``steps`` optimizer steps on
standardised data. Every step solves the ODE, so the budget is small and a fit takes minutes,
not seconds. The training solves run at rtol = atol = 1e-3 (``train_tol``), validation and every
later log-density at 1e-5. Against zuko's CNF of the same field at 300 steps on 5,000 points
(``benchmarks/RESULTS.md``, 12 laws, 3 seeds): 3.0-5.5x faster to train, on average 0.008 nats
closer to the entropy; the zero start took swissroll from 0.533 to 0.486 nats and 2spirals from
0.945 to 0.914 (means over the seeds)."""
CNF_FM = {"builder": "cnf", "hidden": (128, 128, 128), "fourier": 4, "batch_size": 1024,
          "lr": 1e-2, "schedule": "cosine", "standardize": True,
          "objective": "ot-flow-matching", "steps": 10_000}
"""A continuous flow trained by flow matching (simulation-free): a wider field, (128, 128, 128),
fed 4 octaves of Fourier features of ``x`` (sharp rings, spirals and edges), since a step costs
one network pass; batches of 1,024 whose base draws are paired with the points by minimal
transport cost (``"ot-flow-matching"``: straighter paths, a regression target of less
variance); ``steps`` Adam steps at 1e-2 annealed to 0 by the cosine schedule, the last epoch
kept. Each choice measured on 5,000 points (gap to the entropy, nats, ``benchmarks/RESULTS.md``):
the Fourier features took pinwheel from 0.20 to 0.07 and swissroll from 0.15 to 0.06 at 10,000
steps; keeping the last epoch instead of the best validation loss, moons 0.059 to 0.033; Adam
1e-2 instead of 2e-3, 2spirals 0.32 to 0.21 at 10,000 steps; the optimal pairs in batches of
1,024 instead of independent draws in batches of 256, rings 0.37 to 0.13 and 2spirals 0.13 to
0.06 (20,000 steps of 1,024 reached 0.055 on 2spirals in twice the time). On 5,000 points it
fits 2spirals' training points to within the entropy (larger batches and a smaller field leave
the test gap at 0.07): the rest is the sample's, and 50,000 points bring it to 0.040."""
TABULAR_MODELS = ("tabular", "tabular-mixture", "tabular-maf", "tabular-maf-spline")
"""The recipes for real data: their batch, budget and patience follow :func:`tabular_budget`,
and rounded columns are dequantised by default."""
TABULAR_STEPS = (200, 1500)  # fewest and most optimizer steps; 2 steps per training point between
TABULAR_PATIENCE = 0.3  # stop after this fraction of the epochs without a better validation NLL


def tabular_budget(n: int, val_fraction: float = 0.1) -> dict[str, int]:
    """Batch size and epochs of the tabular recipe on ``n`` points: batches of about 1/8 of the
    training part (32 to 256), and about 2 optimizer steps per training point (within
    ``TABULAR_STEPS``), so a small set fits in seconds and time grows with the data."""
    n_train = max(1, n - math.ceil(val_fraction * n))
    batch = min(256, max(32, round(n_train / 8)))
    steps = min(TABULAR_STEPS[1], max(TABULAR_STEPS[0], 2 * n_train))
    epochs = max(1, math.ceil(steps / math.ceil(n_train / batch)))
    return {"batch_size": batch, "epochs": epochs, "patience": max(10, round(TABULAR_PATIENCE
                                                                              * epochs))}


def settings(model: str, n: int, val_fraction: float = 0.1, **chosen: Any) -> dict[str, Any]:
    """How to build and train ``model`` on ``n`` points: the values in ``chosen`` that are not
    ``None``, the model's defaults for the rest.

    Returns ``builder``, the builder's keyword arguments (``n_layers``, ``hidden``, and for the
    recommended model ``bins``, ``bound``, ``fourier``), and ``epochs``, ``batch_size``, ``lr``,
    ``schedule`` (``"constant"`` or ``"cosine"``, as :func:`densitylab.fit` takes it) and
    ``standardize``.

    Raises:
        ValueError: unknown model or schedule.
    """
    if model not in MODELS:
        raise ValueError(f"unknown model {model!r}; choose one of {', '.join(MODELS)}")
    if chosen.get("schedule") not in (None, *SCHEDULES):
        raise ValueError(f"unknown schedule {chosen['schedule']!r}; choose "
                         f"{' or '.join(SCHEDULES)} (or leave it unset for the model's default)")
    defaults = DEFAULTS.get(model, {"builder": model, **COURSEWORK})
    if model in TABULAR_MODELS:
        budget = tabular_budget(n, val_fraction)
        defaults = defaults | {k: budget[k] for k in ("batch_size", "epochs")}
    out = defaults | {k: v for k, v in chosen.items() if v is not None}
    out["hidden"] = tuple(out["hidden"])
    if out.get("n_layers") is not None and out["builder"] == "cnf":
        raise ValueError(f"{model} is one continuous transform: it takes no number of layers")
    steps = out.pop("steps", RECOMMENDED_STEPS)
    if "epochs" not in out:  # the recommended budget counts optimizer steps
        out["epochs"] = recommended_epochs(n, val_fraction, out["batch_size"], steps)
    return out


DEFAULTS = {"recommended": RECOMMENDED, "tabular": TABULAR, "tabular-mixture": TABULAR_MIXTURE,
            "tabular-maf": TABULAR_MAF, "tabular-maf-spline": TABULAR_MAF_SPLINE, "cnf": CNF,
            "cnf-fm": CNF_FM}
"""The recipes of the models that are more than a builder with the coursework's budget."""


def split(recipe: dict[str, Any]) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """A :func:`settings` result as ``(builder, its keyword arguments, fit's keyword
    arguments)``."""
    fit_options = {k: recipe[k] for k in FIT_OPTIONS if k in recipe}
    architecture = {k: v for k, v in recipe.items() if k not in FIT_OPTIONS and k != "builder"}
    return recipe["builder"], architecture, fit_options
