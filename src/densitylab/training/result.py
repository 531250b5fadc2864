"""What every training run returns: one :class:`FitResult` per model, with its :class:`History`."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


class History:
    """Per-epoch record of one model: one list per column, and cumulative seconds.

    The columns are the objective's: ``train_nll`` and ``val_nll`` for a flow (for the VAE the
    negative ELBO, an upper bound on the NLL), the two losses, the R1 penalty and the validation
    energy distance for a GAN. Each column reads as an attribute, ``history.val_nll``.
    """

    def __init__(self, columns: dict[str, list[float]] | None = None,
                 seconds: list[float] | None = None) -> None:
        self.columns = {"train_nll": [], "val_nll": []} if columns is None else columns
        self.seconds = [] if seconds is None else seconds

    @classmethod
    def of(cls, names: Sequence[str]) -> History:
        return cls({name: [] for name in names})

    @classmethod
    def from_dict(cls, values: dict[str, list[float]]) -> History:
        """The inverse of :meth:`to_dict`."""
        columns = {k: list(v) for k, v in values.items() if k != "seconds"}
        return cls(columns, list(values["seconds"]))

    def __getattr__(self, name: str) -> list[float]:
        columns = self.__dict__.get("columns", {})
        if name in columns:
            return columns[name]
        raise AttributeError(f"history has no column {name!r}; it has {sorted(columns)}")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, History) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        return f"History({len(self.seconds)} epochs of {', '.join(self.columns)})"

    def append(self, values: dict[str, float], seconds: float) -> None:
        for name, value in values.items():
            self.columns[name].append(float(value))
        self.seconds.append(float(seconds))

    def rows(self) -> Iterator[dict[str, float]]:
        """One dict per epoch (epoch counted from 1), e.g. for ``history.csv``."""
        for epoch, seconds in enumerate(self.seconds, 1):
            row = {name: values[epoch - 1] for name, values in self.columns.items()}
            yield {"epoch": epoch, **row, "seconds": seconds}

    def to_dict(self) -> dict[str, list[float]]:
        """Every column and ``seconds`` by name, e.g. for JSON."""
        return {**self.columns, "seconds": self.seconds}


@dataclass
class FitResult:
    """One trained model and how training went.

    ``model`` is the model kept: the one with the best validation loss (flows, VAE), or the
    last one with finite parameters (GAN, whose losses do not measure sample quality).
    """

    model: Any
    history: History
    best_epoch: int
    best_val_loss: float
    wall_time: float
    stop_reason: str  # "completed", "early-stopping", "diverged" or "interrupted"
    train_indices: np.ndarray
    val_indices: np.ndarray
    threads: int = 1  # threads training used (torch's, or the compiled engine's model workers)
    final_model: Any = None  # the last epoch's weights, when asked for (fit_many keep_final)
    engine: str = ""  # the engine that trained it ("torch", "compiled": engine="auto" resolved)

    @property
    def flow(self) -> Any:
        """The trained flow (``model`` under the name flows are known by)."""
        return self.model

    @property
    def best_val_nll(self) -> float:
        """``best_val_loss`` for a likelihood objective (NLL, or the VAE's negative ELBO)."""
        return self.best_val_loss

    @property
    def epochs_run(self) -> int:
        return len(self.history.seconds)
