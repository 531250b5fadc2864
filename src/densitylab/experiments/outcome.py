"""What an experiment produces: an :class:`Outcome` (figures, :class:`Table` s, findings, raw
metrics), written as ``outcome.json`` in the experiment's directory; the report reads these files
alone. Plain data, so listing or reading experiments needs no torch."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Table:
    """A table of the report; ``folded`` tables start collapsed (details a reader can open)."""

    title: str
    columns: list[str]
    rows: list[list[Any]]
    note: str = ""
    folded: bool = False


@dataclass
class Outcome:
    """What an experiment produced: figures (file names), tables, findings and raw metrics."""

    name: str
    title: str
    question: str
    findings: list[str]  # a plain-language summary, then short bullets (or one paragraph)
    figures: dict[str, str] = field(default_factory=dict)  # file name -> caption
    tables: list[Table] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    load: list[float] = field(default_factory=list)  # load average at its start and end

    def write(self, directory: Path) -> None:
        """``outcome.json`` (everything, for the report), plus ``metrics.json`` and
        ``findings.md`` for a reader of the directory."""
        (directory / "outcome.json").write_text(json.dumps(asdict(self), indent=2, default=float))
        (directory / "metrics.json").write_text(json.dumps(self.metrics, indent=2, default=float))
        (directory / "findings.md").write_text(f"# {self.title}\n\n{self.text()}\n")

    def text(self) -> str:
        """The findings as plain text: the summary, then the bullets as ``- `` lines."""
        if isinstance(self.findings, str):
            return self.findings
        bullets = "".join(f"\n- {line}" for line in self.findings[1:])
        return "".join(self.findings[:1]) + ("\n" + bullets if bullets else "")

    @classmethod
    def read(cls, directory: Path) -> Outcome:
        raw = json.loads((directory / "outcome.json").read_text())
        raw["tables"] = [Table(**t) for t in raw["tables"]]
        return cls(**raw)


__all__ = ["Outcome", "Table"]
