"""Whole files or none: every file kbn writes goes through here.

A write goes to a temporary file beside its target (same folder, so same filesystem),
is flushed to disk, then renamed over the target (``os.replace``, atomic on POSIX and
Windows). A reader sees the old file or the new one, never half of one. A failed write
(a full disk, a read-only folder) removes its temporary and raises :class:`WriteError`,
whose message names the target and the cause: ``cannot write /runs/model.npz: no space
left on device``.

A process killed mid-write leaves its temporary behind. Temporary names carry the
writer's host and process id (``<prefix><host>-<pid>-<random><suffix>``), so
:func:`sweep_temporaries` can remove those of writers that are gone without touching a
live writer's file (another process, perhaps on another machine sharing the folder):
a temporary is swept when its writer ran on this host and is no longer running, or when
it is older than ``max_age`` (any host; the longest plausible write is seconds).
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

__all__ = ["WriteError", "staged_folder", "sweep_temporaries", "temporary_name",
           "write_bytes", "write_text"]

MAX_AGE = 3600.0  # seconds: a temporary this old belongs to no live writer, whoever made it


class WriteError(OSError):
    """A file could not be written; the message names it and says why."""

    def __str__(self) -> str:  # the message alone, without OSError's "[Errno 28] "
        return self.strerror or super().__str__()


def _host() -> str:
    return "".join(c if c.isalnum() else "_" for c in socket.gethostname()) or "host"


def temporary_name(prefix: str, suffix: str = "", pid: int | None = None) -> str:
    """A fresh temporary name that says who writes it: host, process id, random part."""
    return f"{prefix}{_host()}-{os.getpid() if pid is None else pid}-{secrets.token_hex(4)}{suffix}"


def describe_os_error(exc: OSError) -> str:
    """``No space left on device`` -> ``no space left on device`` (for 'cannot write X: ...')."""
    text = exc.strerror or str(exc) or type(exc).__name__
    return text[:1].lower() + text[1:]


def write_error(path: Path, exc: OSError) -> WriteError:
    err = WriteError(exc.errno, f"cannot write {path}: {describe_os_error(exc)}")
    err.filename = str(path)
    return err


# ------------------------------------------------------------------ writing one file


def _write_fully(fd: int, data: bytes) -> None:
    """All of ``data`` to ``fd`` (the one low-level write; tests make it run out of space)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _publish(tmp: str, path: Path) -> None:
    """The rename that makes a complete temporary file the target."""
    os.replace(tmp, path)


def write_bytes(path: str | os.PathLike, data: bytes, tmp_prefix: str = ".tmp-",
                tmp_suffix: str = ".part", report_as: str | os.PathLike | None = None) -> Path:
    """Write ``data`` to ``path`` whole or not at all; return the path.

    The folder must exist. Raises :class:`WriteError` (the temporary removed, an existing
    ``path`` untouched) if anything fails; its message names ``report_as`` (default
    ``path``: the name the user knows, when ``path`` is in a staging folder).
    """
    path = Path(path)
    tmp = str(path.parent / temporary_name(tmp_prefix, tmp_suffix))
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            _write_fully(fd, data)
            os.fsync(fd)  # the bytes are on disk before the name points at them
        finally:
            os.close(fd)
        _publish(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(exc, OSError) and not isinstance(exc, WriteError):
            raise write_error(Path(report_as or path), exc) from exc
        raise
    return path


def write_text(path: str | os.PathLike, text: str, **kw) -> Path:
    return write_bytes(path, text.encode("utf-8"), **kw)


# ------------------------------------------------------------------ a folder of outputs


@contextmanager
def staged_folder(folder: Path, prefix: str = ".kbn-partial-") -> Iterator[Path]:
    """A hidden temporary folder inside ``folder`` for outputs that must appear together.

    Write every output into it (with :func:`write_bytes`), then move them into ``folder``
    (:func:`publish_staged`). Whatever happens, the temporary folder is gone afterwards.
    """
    staging = Path(folder) / temporary_name(prefix)
    try:
        staging.mkdir()
    except OSError as exc:
        raise write_error(staging, exc) from exc
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def publish_staged(staging: Path, folder: Path, names: list[str], last: str,
                   replaces: tuple[str, ...] = ()) -> None:
    """Move the staged ``names`` into ``folder``, ``last`` after every other one.

    ``last`` is the completion marker readers look for: it is removed from ``folder``
    first, so that until it is back a reader sees the folder as incomplete. ``replaces``:
    other names a previous run may have left in ``folder``; those this run did not write
    are removed with the old marker (they belong to the run being replaced).
    """
    folder = Path(folder)
    current = folder / last
    try:
        current.unlink(missing_ok=True)
        for name in replaces:
            if name not in names:
                current = folder / name
                current.unlink(missing_ok=True)
        for name in [n for n in names if n != last] + [last]:
            current = folder / name
            _publish(str(staging / name), current)
    except OSError as exc:
        raise write_error(current, exc) from exc


# ------------------------------------------------------------------ sweeping


def _writer_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):  # someone else's process, or no way to tell
        return True
    return True


def _is_stale(path: Path, prefix: str, suffix: str, max_age: float, now: float) -> bool:
    stem = path.name[len(prefix):len(path.name) - len(suffix) if suffix else None]
    host, _, rest = stem.rpartition("-")  # rest: the random part
    host, _, pid = host.rpartition("-")
    if host == _host() and pid.isdigit() and not _writer_alive(int(pid)):
        return True
    try:
        return now - path.stat().st_mtime > max_age
    except OSError:
        return False


def sweep_temporaries(folder: str | os.PathLike, prefix: str, suffix: str = "",
                      max_age: float = MAX_AGE) -> int:
    """Remove the temporaries (files or folders) of writers that are gone; return how many.

    Never raises: a folder that cannot be listed or a file that cannot be removed is
    left as it is.
    """
    folder = Path(folder)
    n, now = 0, time.time()
    try:
        candidates = [p for p in folder.iterdir()
                      if p.name.startswith(prefix) and p.name.endswith(suffix)]
    except OSError:
        return 0
    for p in candidates:
        if not _is_stale(p, prefix, suffix, max_age, now):
            continue
        try:
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()
            n += 1
        except OSError:  # gone already (another sweeper), or not ours to remove
            continue
    return n
