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
    except KeyError as err:  # str() of a KeyError quotes its message
        fail(str(err.args[0]) if err.args else "missing key")
    except OSError as err:
        fail(f"{err.filename}: {err.strerror}" if err.filename and err.strerror else str(err))
    except ValueError as err:
        fail(" ".join(str(err).split()))


__all__ = ["app", "main"]
