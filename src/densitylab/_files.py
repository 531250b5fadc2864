"""Outputs that never destroy a user's files and are never half-written.

Every directory densitylab writes carries a small marker file, ``.densitylab``, naming the kind
of output (``"kde"``, ``"train"``, ``"model"``, ...) and every file it wrote, at every depth, with
its SHA-256. A command may write to a path only if it is new, an empty directory, or densitylab's
own output of the same kind holding nothing but what it wrote, unchanged; anything else (a file
the user added in ``OUT/figures/``, an edited ``config.json``) is refused with a one-line
``ValueError`` and left untouched. While a command writes, it holds an exclusive lock on the
directory, so two runs on one output cannot interleave: the second is refused at once. A
symbolic link given as an output is followed: the directory it points to is written, the link
is left as it is.

A single output file (``score``/``sample --out FILE``) is owned by content too: every directory
that receives one keeps a ledger, ``.densitylab.files``, of the files written there and their
checksums, and an existing file is replaced only if the ledger records its current bytes (a
header that happens to match proves nothing). ``-`` writes to standard output; FIFOs and
character devices (``/dev/stdout``) are written, never read, and never replaced.

New contents are built in a staging directory beside the target (a short fixed-length name, so
long output names still fit the file-name limit) and swapped in by one atomic exchange; a failure
at any point removes the staging directory and leaves the target as it was.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import hashlib
import json
import os
import shutil
import stat
import sys
import tempfile
import uuid
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from pathlib import Path

MARKER = ".densitylab"
LEDGER = ".densitylab.files"  # the checksums of single output files written in a directory
_STAGING_PREFIX = ".densitylab-"
STDOUT = "-"


def _plain(path: str | os.PathLike) -> Path:
    """The absolute path (``.`` and ``..`` resolved) or a one-line error if it has no parent."""
    path = Path(os.path.abspath(Path(path).expanduser()))
    if path.parent == path:
        raise ValueError(f"cannot write output to {path}: choose a directory below it")
    return path


def _followed(path: Path) -> Path:
    """``path`` with a symbolic link at its end followed (the link itself is never replaced)."""
    return Path(os.path.realpath(path)) if path.is_symlink() else path


def _output_directory_path(target: str | os.PathLike) -> Path:
    """:func:`_plain` (a link followed), refusing the current directory or one above it (it
    would be replaced)."""
    path = _followed(_plain(target))
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
    except (OSError, ValueError, RecursionError):
        return None
    return marker if isinstance(marker, dict) and isinstance(marker.get("kind"), str) else None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _contents(directory: Path,
              skip: Collection[str] = ()) -> tuple[dict[str, str | None], set[str]]:
    """Every file below ``directory`` (relative POSIX path -> SHA-256; ``None`` for anything
    that is not a regular file: a link, a FIFO) and every subdirectory, but the top-level
    marker, the ledger and the top-level names in ``skip``."""
    files: dict[str, str | None] = {}
    folders: set[str] = set()
    for root, dirs, names in os.walk(directory):
        here = Path(root)
        relative = here.relative_to(directory)
        if relative == Path("."):
            dirs[:] = [d for d in dirs if d not in skip]
            names = [n for n in names if n not in skip and n not in (MARKER, LEDGER)]
        for d in list(dirs):
            if (here / d).is_symlink():  # a link is an entry, never walked into
                dirs.remove(d)
                names.append(d)
            else:
                folders.add((relative / d).as_posix())
        for name in names:
            path = here / name
            regular = path.is_file() and not path.is_symlink()
            files[(relative / name).as_posix()] = _sha256(path) if regular else None
    return files, folders


def _write_marker(directory: Path, kind: str) -> None:
    files, folders = _contents(directory)
    (directory / MARKER).write_text(json.dumps(
        {"kind": kind, "files": files, "directories": sorted(folders)}))


def _foreign(path: Path, marker: dict, transient: Collection[str]) -> list[str]:
    """What is in ``path`` that its marker does not record as densitylab's, byte for byte:
    files added at any depth, files changed since they were written, new subdirectories."""
    recorded = marker.get("files")
    if not isinstance(recorded, dict):  # a marker of densitylab 0.2: top-level names only
        entries = set(os.listdir(path)) - {MARKER, LEDGER}
        return sorted(entries - set(marker.get("entries", ())) - set(transient))
    folders = marker.get("directories", [])
    files, present = _contents(path, skip=set(transient))
    found = [f"{name} (changed)" if name in recorded else name
             for name, digest in files.items() if digest is None or recorded.get(name) != digest]
    return sorted(found + sorted(present - set(folders if isinstance(folders, list) else ())))


def check_replaceable(path: Path, kind: str, transient: Collection[str] = ()) -> None:
    """Refuse (``ValueError``) unless ``path`` is absent, an empty directory, or densitylab's own
    ``kind`` output holding only the entries it wrote (plus ``transient`` working entries)."""
    if not path.exists() and not path.is_symlink():
        return
    if not path.is_dir():
        raise ValueError(f"{path} exists and is not a directory; not overwriting it")
    try:
        entries = set(os.listdir(path)) - {LEDGER}
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
    foreign = _foreign(path, marker, transient)
    if foreign:
        raise ValueError(
            f"{path} holds files densitylab did not write ({', '.join(foreign[:3])}"
            f"{', ...' if len(foreign) > 3 else ''}); not overwriting it: move them out or "
            "choose another directory"
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


def _descriptor(target: str | os.PathLike) -> int | None:
    """The open file descriptor a path names (``/dev/stdout``, ``/dev/fd/3``,
    ``/proc/self/fd/3``): written through it, where the shell's redirection (``>>`` included)
    applies, instead of opening (and truncating) what it points to."""
    text = os.path.normpath(str(target))
    named = {"/dev/stdin": 0, "/dev/stdout": 1, "/dev/stderr": 2}
    if text in named:
        return named[text]
    for prefix in ("/dev/fd/", "/proc/self/fd/", f"/proc/{os.getpid()}/fd/"):
        if text.startswith(prefix) and text[len(prefix):].isdigit():
            return int(text[len(prefix):])
    return None


def is_stream(target: str | os.PathLike) -> bool:
    """Whether ``target`` is standard output (``-``), an open descriptor (``/dev/stdout``) or an
    existing FIFO, character device or socket: written in one go, never read, never replaced."""
    if str(target) == STDOUT or _descriptor(target) is not None:
        return True
    try:
        mode = os.stat(target).st_mode  # follows links: /dev/stdout -> the real pipe or tty
    except OSError:
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISCHR(mode) or stat.S_ISSOCK(mode)


@contextmanager
def output_file(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path; on success its contents become ``target``.

    A regular file is replaced by one atomic rename, and an existing one only if densitylab
    wrote it: the ledger of its directory (:data:`LEDGER`) records its current checksum. A
    symbolic link is followed (the file it points to is written, the link kept). ``-``
    (standard output), a FIFO or a character device receives the finished contents; it is
    never read. A directory or anything else is refused, untouched.
    """
    if is_stream(target):
        with _streamed(target) as staging:
            yield staging
        return
    path = _followed(_plain(target))
    if path.is_dir():
        raise ValueError(f"{path} is a directory; --out names the file to write")
    if path.exists() and not _recorded(path):
        raise ValueError(
            f"{path} exists and was not written by densitylab (or was changed since); "
            "not overwriting it: choose a new file name"
        )
    if not path.exists():
        _check_writable_parent(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise _path_error("create", path.parent, err) from None
    staging = path.with_name(f"{_STAGING_PREFIX}{uuid.uuid4().hex[:12]}.tmp")
    try:
        yield staging
        with _ledger(path.parent) as ledger:
            ledger[path.name] = _sha256(staging)
            os.replace(staging, path)
    except OSError as err:
        staging.unlink(missing_ok=True)
        raise _path_error("write", path, err) from None
    except BaseException:
        staging.unlink(missing_ok=True)
        raise


@contextmanager
def _streamed(target: str | os.PathLike) -> Iterator[Path]:
    """A temporary file whose finished contents are copied to a stream (``-``, a FIFO, a
    device): a failed command sends nothing."""
    handle, name = tempfile.mkstemp(prefix=_STAGING_PREFIX, suffix=".tmp")
    os.close(handle)
    staging = Path(name)
    try:
        yield staging
        descriptor = _descriptor(target)
        with open(staging, "rb") as source:
            if str(target) == STDOUT:
                sys.stdout.flush()
                shutil.copyfileobj(source, getattr(sys.stdout, "buffer", None) or _Text(sys.stdout))
                sys.stdout.flush()
            elif descriptor is not None:
                sys.stdout.flush()
                sys.stderr.flush()
                with os.fdopen(os.dup(descriptor), "wb") as sink:
                    shutil.copyfileobj(source, sink)
            else:
                with open(target, "wb") as sink:  # write only: a FIFO or a tty is never read
                    shutil.copyfileobj(source, sink)
    except BrokenPipeError:  # `| head`: the reader has what it wanted
        pass
    except OSError as err:
        raise _path_error("write", Path(target), err) from None
    finally:
        staging.unlink(missing_ok=True)


class _Text:
    """Bytes written to a text stream (a captured ``sys.stdout`` has no ``buffer``)."""

    def __init__(self, stream) -> None:
        self.stream = stream

    def write(self, data: bytes) -> int:
        return self.stream.write(data.decode("utf-8"))


def _recorded(path: Path) -> bool:
    """Whether the ledger beside ``path`` records exactly its present bytes."""
    if not path.is_file():
        return False
    try:
        ledger = json.loads((path.parent / LEDGER).read_text())
    except (OSError, ValueError, RecursionError):
        return False
    return isinstance(ledger, dict) and ledger.get(path.name) == _sha256(path)


@contextmanager
def _ledger(directory: Path) -> Iterator[dict[str, str]]:
    """The ledger of ``directory``, locked while the body updates it (entries of files that
    are gone are dropped)."""
    with open(directory / LEDGER, "a+", encoding="utf-8") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        handle.seek(0)
        try:
            ledger = json.loads(handle.read() or "{}")
        except (ValueError, RecursionError):
            ledger = {}
        ledger = {k: v for k, v in ledger.items() if (directory / k).is_file()} \
            if isinstance(ledger, dict) else {}
        yield ledger
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps(ledger, indent=0))
        handle.flush()
