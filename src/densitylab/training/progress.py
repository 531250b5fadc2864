"""The progress bar of a training run: epoch, the objective's losses, time remaining."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from densitylab.training.result import History

Label = Callable[[History], str]


@contextmanager
def progress_bar(enabled: bool, epochs: int, n_models: int, label: Label) -> Iterator:
    """A rich progress bar, or a silent no-op; yields ``advance(epoch, histories)``."""
    if not enabled:
        yield lambda epoch, histories: None
        return
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (
        TextColumn("[bold]training[/]"),
        BarColumn(),
        TextColumn("epoch {task.completed}/{task.total}"),
        TextColumn("{task.fields[losses]}"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, transient=False) as progress:
        task = progress.add_task("fit", total=epochs, losses="")

        def advance(epoch: int, histories: list[History]) -> None:
            text = label(histories[0])
            if n_models > 1:
                text += f"  (+{n_models - 1} models)"
            progress.update(task, completed=epoch, losses=text)

        yield advance
