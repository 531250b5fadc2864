"""No silent waits: the compiled paths (numba) say so before their first compilation.

numba compiles a kernel on its first call and keeps the machine code in its disk cache
(``__pycache__`` beside the source, or ``NUMBA_CACHE_DIR``); later processes load it in about a
second. The first compilation of a path takes 10-50 s, so before it starts :func:`announce`
prints one line on stderr (shown in a terminal and in Jupyter alike, no widgets needed).
``densitylab warmup`` (:mod:`densitylab.warmup`) compiles every path ahead of time.
"""

from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass


@dataclass(frozen=True)
class CompiledPath:
    """A group of kernels compiled together: what it is, where its entry points live, and how
    long its first compilation takes (seconds, measured on a 2-core machine at load 4-6)."""

    title: str
    module: str
    entries: tuple[str, ...]
    seconds: int


PATHS = {
    "kde": CompiledPath("the KDE's kernel sums", "densitylab.kde.kernels",
                        ("log_kernel_sums",), 20),
    "spline": CompiledPath("the spline-flow training engine", "densitylab.training.compiled_spline",
                           ("_epoch", "_log_prob"), 45),
    "spline-log-prob": CompiledPath("the spline flow's compiled log-density",
                                    "densitylab.training.compiled_spline",
                                    ("_log_prob",), 10),
    "realnvp": CompiledPath("the RealNVP training engine", "densitylab.training.compiled_realnvp",
                            ("_epoch",), 25),
}
_announced: set[str] = set()


def is_cached(name: str) -> bool:
    """Whether every entry point of path ``name`` is compiled in this process or has machine
    code in numba's disk cache for the current source (an index numba would load)."""
    path = PATHS[name]
    module = importlib.import_module(path.module)
    for entry in path.entries:
        dispatcher = getattr(module, entry)
        if dispatcher.signatures:
            continue
        try:
            if not dispatcher._cache._cache_file._load_index():  # empty: absent or stale
                return False
        except (AttributeError, OSError):  # another numba: assume cached rather than cry wolf
            continue
    return True


def announce(name: str) -> None:
    """Before path ``name`` runs: one line on stderr if it is about to be compiled (once per
    process and path)."""
    if name in _announced:
        return
    _announced.add(name)
    if not is_cached(name):
        path = PATHS[name]
        print(f"densitylab: compiling {path.title} once (about {path.seconds} s; cached "
              "afterwards; `densitylab warmup` compiles everything ahead)",
              file=sys.stderr, flush=True)


__all__ = ["PATHS", "CompiledPath", "announce", "is_cached"]
