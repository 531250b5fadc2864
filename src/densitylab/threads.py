"""The thread budget: how many threads a call's hot path uses, set on every thread pool for the
duration of the call and restored afterwards.

A default Python process holds several pools, each sized to every core: OpenBLAS (one copy in
NumPy, another in SciPy, which numba's ``np.dot`` and scikit-learn call), OpenMP (torch's, and
scikit-learn's own), torch's intra-op threads and, once started, numba's. Their threads
busy-wait for work between calls and meet at barriers; when another process takes a core, a
descheduled thread holds up every other thread of its pool, and small work (our flows' batches,
an 800-row mixture) ran 10-35x slower than on one thread (``benchmarks/RESULTS.md``, "Fast where
users run it"). So every densitylab call that runs such code enters :func:`budget`: the count is
the caller's ``threads=`` if given, else one per ``grain`` of work, at most the cores this
process may use (``os.sched_getaffinity``) less those other processes keep busy (the load
average), at most ``OMP_NUM_THREADS`` where the user set it, and at most the count of an
enclosing budget. Inside, torch, every BLAS and OpenMP pool (threadpoolctl) and numba's
threading layer (where it was started) use that count; on exit each gets the caller's setting
back. Independent Python threads that never wait for each other (the KDE's query groups, folds
trained side by side) take :func:`workers`: the same rule without the load, since a busy core
only slows such a thread, never its siblings.

Example:
    >>> from densitylab import threads
    >>> with threads.budget(1) as n:
    ...     n
    1
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from densitylab._validation import check_positive_int

_current: ContextVar[int | None] = ContextVar("densitylab_threads", default=None)
_chosen: ContextVar[int | None] = ContextVar("densitylab_chosen_threads", default=None)
_controller: list[Any] = [None, -1]  # threadpoolctl's controller and len(sys.modules) it saw


def cores() -> int:
    """Cores this process may run on (its CPU affinity), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _environment_limit() -> int | None:
    """``OMP_NUM_THREADS`` when the user set it to a positive integer: their ceiling."""
    try:
        value = int(os.environ.get("OMP_NUM_THREADS", "").split(",")[0])
    except ValueError:
        return None
    return value if value > 0 else None


def idle_cores() -> int:
    """Cores not kept busy by other processes: the available cores less the one-minute load
    average beyond this process's own thread (at least 1). The load average lags by up to a
    minute, so a process started a moment ago is counted a little later."""
    try:
        others = max(0.0, os.getloadavg()[0] - 1.0)
    except OSError:  # no load average on this system
        others = 0.0
    return max(1, cores() - math.floor(others + 0.25))


def ceiling() -> int:
    """The most threads the user allows: a count chosen (``threads=``) by an enclosing call, else
    ``OMP_NUM_THREADS`` where set, else the available cores."""
    chosen = _chosen.get()
    if chosen is not None:
        return chosen
    env = _environment_limit()
    return min(cores(), env) if env is not None else cores()


def limit() -> int:
    """The most threads a pool may use now: an enclosing budget's count, else the idle cores,
    at most :func:`ceiling`."""
    outer = _current.get()
    return outer if outer is not None else min(idle_cores(), ceiling())


def _by_work(work: float, grain: float) -> int:
    return 1 if work < 2 * grain else int(min(work / grain, 1 << 16))


def count(threads: int | None = None, work: float = math.inf, grain: float = 1.0) -> int:
    """The thread count of a call's pools: ``threads`` when the caller chose it, else one thread
    per ``grain`` units of ``work`` (at least 1), at most :func:`limit`."""
    if threads is not None:
        return check_positive_int(threads, "threads")
    return max(1, min(limit(), _by_work(work, grain)))


def workers(threads: int | None = None, work: float = math.inf, grain: float = 1.0) -> int:
    """How many independent Python threads share a call's work: ``threads`` when the caller
    chose it, else one per ``grain`` units of ``work``, at most :func:`ceiling` (not reduced for
    other processes' load: such threads do not wait for each other)."""
    if threads is not None:
        return check_positive_int(threads, "threads")
    return max(1, min(ceiling(), _by_work(work, grain)))


def _pools() -> Any:
    """threadpoolctl's controller of the loaded BLAS and OpenMP libraries, listed again when
    new modules were imported (a new library may have come with them); limits then take ~20 us."""
    from threadpoolctl import ThreadpoolController

    if _controller[0] is None or _controller[1] != len(sys.modules):
        _controller[0], _controller[1] = ThreadpoolController(), len(sys.modules)
    return _controller[0]


def _numba_threads() -> Any:
    """numba's threading layer if this process started it (starting it is not ours to do)."""
    if "numba" not in sys.modules:
        return None
    from numba.np.ufunc import parallel

    return sys.modules["numba"] if parallel._is_initialized else None


@contextmanager
def budget(threads: int | None = None, work: float = math.inf, grain: float = 1.0
           ) -> Iterator[int]:
    """Run the body with :func:`count` ``(threads, work, grain)`` threads in every pool (torch
    intra-op, BLAS and OpenMP through threadpoolctl, numba) and yield that count; every pool
    gets its previous size back on exit, also after an exception. A count the caller chose
    (``threads``) is also the :func:`ceiling` of the calls inside. A budget inside one of the
    same count changes nothing (a few microseconds)."""
    n = count(threads, work, grain)
    if _current.get() == n and threads is None:
        yield n
        return
    torch = sys.modules.get("torch")
    numba = _numba_threads()
    token = _current.set(n)
    chosen = _chosen.set(n if threads is not None else _chosen.get())
    torch_before = torch.get_num_threads() if torch is not None else None
    numba_before = numba.get_num_threads() if numba is not None else None
    try:
        with _pools().limit(limits=n):
            if torch is not None:
                torch.set_num_threads(n)
            if numba is not None:
                numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
            try:
                yield n
            finally:
                if torch is not None:
                    torch.set_num_threads(torch_before)
                if numba is not None:
                    numba.set_num_threads(numba_before)
    finally:
        _current.reset(token)
        _chosen.reset(chosen)


def settings() -> dict[str, Any]:
    """The sizes of every pool as they stand (torch, numba where started, each BLAS and OpenMP
    library): what a call must leave as it found."""
    torch = sys.modules.get("torch")
    numba = _numba_threads()
    return {
        "torch": torch.get_num_threads() if torch is not None else None,
        "numba": numba.get_num_threads() if numba is not None else None,
        "pools": sorted((lib["filepath"], lib["num_threads"]) for lib in _pools().info()),
    }


__all__ = ["budget", "ceiling", "cores", "count", "idle_cores", "limit", "settings", "workers"]
