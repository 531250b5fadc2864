"""The ``densitylab`` command. Each command lives in its own module and registers on ``app``."""

from __future__ import annotations

import importlib
import pkgutil

from densitylab.cli._app import app, fail

for _module in pkgutil.iter_modules(__path__):
    if not _module.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_module.name}")


def main() -> None:
    """Run the command line; user errors (bad input, missing files) end in one clear line."""
    try:
        app()
    except (ValueError, FileNotFoundError, KeyError) as err:
        fail(str(err).strip("'\""))


__all__ = ["app", "main"]
