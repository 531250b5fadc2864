"""Declarative experiment specs: what data, which models, what budget. No code runs here."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

N_VAL = 2000  # fresh validation points: the best epoch is chosen on them, not on noise
N_TEST = 20000  # fresh test points: every test NLL is measured on them


@dataclass(frozen=True)
class Data:
    """A built-in distribution: ``n`` training points, and fresh validation and test points
    drawn from the exact law (never split off the training data, so no verdict rests on a
    few hundred points)."""

    name: str
    params: dict[str, Any] = field(default_factory=dict)
    n: int = 1350  # the coursework's N=1500 less its 10% validation split
    seed: int = 0
    n_val: int = N_VAL
    n_test: int = N_TEST


@dataclass(frozen=True)
class Model:
    builder: str = "realnvp"
    layers: int = 4
    hidden: tuple[int, ...] = (32, 32)
    options: dict[str, Any] = field(default_factory=dict)  # e.g. separate_nets, triangular


@dataclass(frozen=True)
class Budget:
    epochs: int
    batch_size: int = 64
    lr: float = 1e-3
    val_fraction: float = 0.1
    seed: int = 8
    standardize: bool = False
    schedule: str | None = None
    patience: int | None = None  # early stopping: epochs without a better validation NLL
    engine: str = "auto"  # densitylab.fit's engine: "compiled" skips a stopped model's epochs


@dataclass(frozen=True)
class Run:
    """One model trained on one data set; ``label`` names it in tables and legends."""

    label: str
    data: Data
    model: Model
    budget: Budget

    def quick(self) -> Run:
        """The same run at a preview budget: fewer points and epochs, networks at most 64 wide
        (still tested on ``N_TEST`` fresh points: evaluating is cheap next to training)."""
        data = replace(self.data, n=min(self.data.n, 1000), n_val=min(self.data.n_val, 1000))
        model = replace(self.model, hidden=tuple(min(h, 64) for h in self.model.hidden))
        patience = self.budget.patience
        budget = replace(self.budget, epochs=max(8, self.budget.epochs // 25),
                         patience=None if patience is None else max(4, patience // 25))
        return replace(self, data=data, model=model, budget=budget)


@dataclass(frozen=True)
class FlowExperiment:
    """Flow runs plus the figures to draw and a function turning the numbers into findings.

    ``findings(metrics)`` returns the section's text: a plain-language summary of at most
    three sentences, then one short bullet per finding, every number and verdict computed
    from ``metrics`` (the report recomputes them from the saved metrics and refuses a page
    whose text does not follow)."""

    name: str
    title: str
    question: str  # what the source document asks, in our words
    runs: tuple[Run, ...]
    figures: tuple[str, ...] = ("loss", "density", "layers")
    findings: Callable[[dict[str, dict[str, Any]]], list[str]] = lambda metrics: []
    cost: float = 1.0  # relative run time at full budget; when run in parallel, costly go first
    exclusive: bool = False  # it measures speed: never run beside another experiment
    source: str = ""  # the settings the source document sets, in one sentence
    deviation: str = ""  # where and why this study differs from them ("" : it does not)
    loss_groups: dict[str, tuple[str, ...]] | None = None  # loss panels: {title: run labels}


@dataclass(frozen=True)
class CustomExperiment:
    """An experiment whose work is not "train these flows": datasets, KDE, engines."""

    name: str
    title: str
    question: str
    run: Callable[..., Any]  # (out_dir: Path, quick: bool) -> Outcome
    cost: float = 1.0  # as in FlowExperiment
    exclusive: bool = False
    # as in FlowExperiment: the text from the outcome's metrics (None: the run writes it)
    findings: Callable[[dict[str, Any]], list[str]] | None = None
