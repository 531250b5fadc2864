"""Outputs that never destroy a user's files and are never half-written.

Every directory densitylab writes carries a small marker file, ``.densitylab``, naming the kind
of output (``"kde"``, ``"train"``, ``"model"``, ...) and the entries it wrote. A command may write
to a path only if it is new, an empty directory, or densitylab's own output of the same kind
holding nothing but what it wrote; anything else is refused with a one-line ``ValueError`` and
left untouched. While a command writes, it holds an exclusive lock on the directory, so two runs
on one output cannot interleave: the second is refused at once.

New contents are built in a staging directory beside the target (a short fixed-length name, so
long output names still fit the file-name limit) and swapped in by one atomic exchange; a failure
at any point removes the staging directory and leaves the target as it was.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import json
import os
import shutil
import uuid
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from pathlib import Path

MARKER = ".densitylab"
_STAGING_PREFIX = ".densitylab-"


def _plain(path: str | os.PathLike) -> Path:
    """The absolute path (``.`` and ``..`` resolved) or a one-line error if it has no parent."""
    path = Path(os.path.abspath(Path(path).expanduser()))
    if path.parent == path:
        raise ValueError(f"cannot write output to {path}: choose a directory below it")
    return path


def _output_directory_path(target: str | os.PathLike) -> Path:
    """:func:`_plain`, refusing the current directory or one above it (it would be replaced)."""
    path = _plain(target)
    if Path.cwd() == path or path in Path.cwd().parents:
        raise ValueError(
            f"cannot replace {path}: it holds the current directory; name a new subdirectory"
        )
    return path


def check_output(target: str | os.PathLike, kind: str, transient: Collection[str] = ()) -> Path:
    """The absolute output path, if a ``kind`` output may be written there (else ``ValueError``).

    Commands call it before their work, so a bad ``--out`` fails at once.
    """
    path = _output_directory_path(target)
    check_replaceable(path, kind, transient)
    if not path.exists():
        _check_writable_parent(path)
    return path


def _check_writable_parent(path: Path) -> None:
    """Refuse at once a path below a file or in a place this user cannot write."""
    ancestor = path.parent
    while not ancestor.exists() and ancestor.parent != ancestor:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise ValueError(f"cannot write {path}: {ancestor} is a file, not a directory")
    probe = ancestor / f"{_STAGING_PREFIX}{uuid.uuid4().hex[:12]}"
    try:  # the only sure test of a place (read-only mounts, /proc, ACLs): try it
        probe.mkdir()
    except OSError as err:
        raise _path_error("write in", ancestor, err) from None
    probe.rmdir()


def _path_error(action: str, path: Path, err: OSError) -> ValueError:
    return ValueError(f"cannot {action} {path}: {err.strerror or err}")


def read_marker(path: Path) -> dict | None:
    """The marker of a densitylab output directory, or ``None`` if it has none (or a bad one)."""
    try:
        marker = json.loads((path / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) and isinstance(marker.get("kind"), str) else None


def _write_marker(directory: Path, kind: str) -> None:
    entries = sorted(name for name in os.listdir(directory) if name != MARKER)
    (directory / MARKER).write_text(json.dumps({"kind": kind, "entries": entries}))


def check_replaceable(path: Path, kind: str, transient: Collection[str] = ()) -> None:
    """Refuse (``ValueError``) unless ``path`` is absent, an empty directory, or densitylab's own
    ``kind`` output holding only the entries it wrote (plus ``transient`` working entries)."""
    if not path.exists() and not path.is_symlink():
        return
    if not path.is_dir():
        raise ValueError(f"{path} exists and is not a directory; not overwriting it")
    try:
        entries = set(os.listdir(path))
    except OSError as err:
        raise _path_error("read", path, err) from None
    if not entries:
        return
    marker = read_marker(path)
    if marker is None:
        shown = ", ".join(sorted(entries)[:3]) + (", ..." if len(entries) > 3 else "")
        raise ValueError(
            f"{path} holds files densitylab did not write ({shown}); not overwriting it: "
            "choose a new or empty directory (an output of densitylab 0.1 has no marker: "
            "delete it yourself to reuse its name)"
        )
    if marker["kind"] != kind:
        raise ValueError(
            f"{path} holds a densitylab {marker['kind']} output, not a {kind} output; "
            "not overwriting it"
        )
    foreign = sorted(entries - {MARKER} - set(marker.get("entries", ())) - set(transient))
    if foreign:
        raise ValueError(
            f"{path} holds files densitylab did not write ({', '.join(foreign[:3])}); "
            "not overwriting it: move them out or choose another directory"
        )


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one atomic step (Linux ``renameat2``); ``False`` where unsupported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    if ctypes.get_errno() in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
        return False
    err = ctypes.get_errno()
    raise OSError(err, os.strerror(err), str(b))


def _swap_in(staging: Path, target: Path) -> None:
    """Put ``staging`` at ``target`` and delete what was there."""
    if not target.exists():
        staging.rename(target)
        return
    if _exchange(staging, target):
        shutil.rmtree(staging, ignore_errors=True)
        return
    retired = target.with_name(f"{_STAGING_PREFIX}{uuid.uuid4().hex[:12]}")
    target.rename(retired)
    staging.rename(target)
    shutil.rmtree(retired, ignore_errors=True)


@contextmanager
def staging_directory(target: Path) -> Iterator[Path]:
    """An empty directory beside ``target``; removed if the body fails."""
    staging = target.with_name(f"{_STAGING_PREFIX}{uuid.uuid4().hex[:12]}")
    try:
        staging.mkdir()
    except OSError as err:
        raise _path_error("write in", target.parent, err) from None
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


class Claim:
    """A locked output directory (see :func:`claimed_directory`)."""

    def __init__(self, path: Path, kind: str) -> None:
        self.path, self.kind = path, kind

    @contextmanager
    def replace(self) -> Iterator[Path]:
        """Yield a staging directory; on success it becomes the claimed directory, atomically."""
        with staging_directory(self.path) as staging:
            yield staging
            _write_marker(staging, self.kind)
            _swap_in(staging, self.path)


def _lock(path: Path) -> int:
    """Open and exclusively lock the directory ``path``; a clear error if another holds it."""
    for _ in range(10):  # the directory may be swapped out between open and lock: try again
        try:
            path.mkdir(parents=True, exist_ok=True)
            handle = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        except OSError as err:
            raise _path_error("create", path, err) from None
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(handle)
            raise ValueError(
                f"{path} is being written by another densitylab process; "
                "wait for it to finish or choose another output"
            ) from None
        try:
            same = os.stat(path).st_ino == os.fstat(handle).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return handle
        os.close(handle)
    raise ValueError(f"{path} keeps changing while densitylab tries to lock it")


@contextmanager
def claimed_directory(
    target: str | os.PathLike, kind: str, transient: Collection[str] = ()
) -> Iterator[Claim]:
    """Claim ``target`` for an output of ``kind`` and hold a lock on it while the body runs.

    The target must be new, empty, or densitylab's own ``kind`` output (see
    :func:`check_replaceable`); ``transient`` names entries the body may keep in it while it
    works (a training checkpoint). A directory created here and left holding nothing but the
    marker is removed again if the body fails.
    """
    path = check_output(target, kind, transient)
    created = not path.exists()
    handle = _lock(path)
    try:
        check_replaceable(path, kind, transient)  # again, now that nobody else can write
        fresh = read_marker(path) is None  # new or empty: nothing of ours is there yet
        if fresh:
            _write_marker(path, kind)
        try:
            yield Claim(path, kind)
        except BaseException:
            if fresh and path.is_dir() and set(os.listdir(path)) <= {MARKER}:
                if created:
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    (path / MARKER).unlink(missing_ok=True)
            raise
    finally:
        os.close(handle)


@contextmanager
def output_directory(target: str | os.PathLike, kind: str) -> Iterator[Path]:
    """Yield a staging directory whose contents replace ``target`` atomically on success.

    ``target`` is claimed first (:func:`claimed_directory`): a foreign or busy path is refused
    before any work is done, and is never modified.
    """
    with claimed_directory(target, kind) as claim, claim.replace() as staging:
        yield staging


@contextmanager
def atomic_directory(target: Path) -> Iterator[Path]:
    """Replace a working directory inside a claimed output (a checkpoint) atomically."""
    target = Path(target)
    with staging_directory(target) as staging:
        yield staging
        _swap_in(staging, target)


@contextmanager
def output_file(target: str | os.PathLike, *headers: str) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success it is renamed onto ``target``.

    An existing ``target`` is replaced only if it is densitylab's own output of this kind (its
    first line is one of ``headers``); a directory or any other file is refused, untouched.
    """
    path = _plain(target)
    if path.is_dir():
        raise ValueError(f"{path} is a directory; --out names the file to write")
    if not path.exists():
        _check_writable_parent(path)
    if path.exists() and _first_line(path) not in headers:
        raise ValueError(
            f"{path} exists and was not written by densitylab; not overwriting it: "
            "choose a new file name"
        )
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise _path_error("create", path.parent, err) from None
    staging = path.with_name(f"{_STAGING_PREFIX}{uuid.uuid4().hex[:12]}.tmp")
    try:
        yield staging
        os.replace(staging, path)
    except OSError as err:
        staging.unlink(missing_ok=True)
        raise _path_error("write", path, err) from None
    except BaseException:
        staging.unlink(missing_ok=True)
        raise


def _first_line(path: Path) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.readline().rstrip("\r\n")
    except OSError:
        return None
