"""The options every training run shares, checked once, and the learning-rate schedule."""

from __future__ import annotations

import math
from dataclasses import dataclass

from densitylab._validation import check_positive_float, check_positive_int
from densitylab.flows.recipes import SCHEDULES

MAX_BAD_STEPS = 20  # consecutive non-finite steps before a model is declared diverged


@dataclass(frozen=True)
class Options:
    """Budget and rules of one run (see :func:`densitylab.fit` for each option's meaning)."""

    epochs: int = 1000
    batch_size: int = 64
    lr: float = 1e-3
    val_fraction: float = 0.1
    patience: int | None = None
    clip_grad: float | None = None
    schedule: str | None = "constant"  # or "cosine"; None means "constant"
    ema: float | None = None

    def __post_init__(self) -> None:
        check_positive_int(self.epochs, "epochs")
        check_positive_int(self.batch_size, "batch_size")
        object.__setattr__(self, "lr", check_positive_float(self.lr, "lr"))
        if not 0 < self.val_fraction < 1:
            raise ValueError(
                f"val_fraction must lie strictly between 0 and 1, got {self.val_fraction!r}"
            )
        if self.patience is not None:
            check_positive_int(self.patience, "patience")
        if self.clip_grad is not None and not self.clip_grad > 0:
            raise ValueError(f"clip_grad must be positive, got {self.clip_grad!r}")
        if self.schedule is None:
            object.__setattr__(self, "schedule", "constant")
        if self.schedule not in SCHEDULES:
            raise ValueError(
                f"unknown schedule {self.schedule!r}; choose one of {list(SCHEDULES)}"
            )
        if self.ema is not None and not 0 <= self.ema < 1:
            raise ValueError(f"ema must lie in [0, 1), got {self.ema!r}")

    def learning_rate(self, step: int, total_steps: int) -> float:
        """The rate of optimizer step ``step`` (from 0): constant, or cosine-annealed to 0."""
        if self.schedule == "cosine":
            return self.lr * 0.5 * (1 + math.cos(math.pi * step / total_steps))
        return self.lr
