"""Each model's defaults: the architecture and training budget used where a user sets none.

``realnvp``, ``glow``, ``nsf`` and ``maf`` default to the coursework's setting (4 layers of
(32, 32), 1000 epochs of batches of 64, Adam 1e-3 at a constant rate); ``"recommended"`` is the
spline flow of :func:`~densitylab.flows.recommended` with its recipe and a budget counted in
optimizer steps.
The estimator and the command line both fill in their unset values here.
"""

from __future__ import annotations

from typing import Any

from densitylab.flows.builders import (
    BUILDERS,
    RECOMMENDED_FIT,
    RECOMMENDED_MODEL,
    recommended_epochs,
)

MODELS = (*sorted(BUILDERS), "recommended")
SCHEDULES = ("constant", "cosine")
FIT_OPTIONS = ("epochs", "batch_size", "lr", "schedule", "standardize")  # the rest builds
COURSEWORK = {"n_layers": 4, "hidden": (32, 32), "epochs": 1000, "batch_size": 64, "lr": 1e-3,
              "schedule": "constant", "standardize": False}
RECOMMENDED = {"builder": "nsf", **RECOMMENDED_MODEL, **RECOMMENDED_FIT}


def settings(model: str, n: int, val_fraction: float = 0.1, **chosen: Any) -> dict[str, Any]:
    """How to build and train ``model`` on ``n`` points: the values in ``chosen`` that are not
    ``None``, the model's defaults for the rest.

    Returns ``builder``, the builder's keyword arguments (``n_layers``, ``hidden``, and for the
    recommended model ``bins``, ``bound``, ``fourier``), and ``epochs``, ``batch_size``, ``lr``,
    ``schedule`` (``None`` for a constant rate, as :func:`densitylab.fit` takes it) and
    ``standardize``.

    Raises:
        ValueError: unknown model or schedule.
    """
    if model not in MODELS:
        raise ValueError(f"unknown model {model!r}; choose one of {', '.join(MODELS)}")
    if chosen.get("schedule") not in (None, *SCHEDULES):
        raise ValueError(f"unknown schedule {chosen['schedule']!r}; choose "
                         f"{' or '.join(SCHEDULES)} (or leave it unset for the model's default)")
    defaults = RECOMMENDED if model == "recommended" else {"builder": model, **COURSEWORK}
    out = defaults | {k: v for k, v in chosen.items() if v is not None}
    out["hidden"] = tuple(out["hidden"])
    out["schedule"] = None if out["schedule"] == "constant" else out["schedule"]
    if "epochs" not in out:  # the recommended budget counts optimizer steps
        out["epochs"] = recommended_epochs(n, val_fraction, out["batch_size"])
    return out


def split(recipe: dict[str, Any]) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """A :func:`settings` result as ``(builder, its keyword arguments, fit's keyword
    arguments)``."""
    fit_options = {k: recipe[k] for k in FIT_OPTIONS}
    architecture = {k: v for k, v in recipe.items() if k not in FIT_OPTIONS and k != "builder"}
    return recipe["builder"], architecture, fit_options
