"""Output folders are checked before any work starts, so a long run cannot fail at its end."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from .atomic import describe_os_error


class UnwritableFolderError(OSError):
    """An output folder cannot be created or written to; the message says which and why."""


def writable_folder(path: str | os.PathLike, hint: str = "choose another folder",
                    what: str = "output folder") -> Path:
    """Create ``path`` if needed and prove a file can be written there; return it.

    ``what`` names the folder in the message (``results cache folder``), ``hint`` says
    what to do (``choose another with --cache``).
    """
    folder = Path(path).expanduser()
    for parent in (folder, *folder.parents):
        if parent.exists():
            if not parent.is_dir():
                raise UnwritableFolderError(
                    f"cannot write to {what} {folder} ({parent} is a file, not a folder); {hint}")
            break
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".kbn-write-test-"):
            pass
    except OSError as exc:
        raise UnwritableFolderError(
            f"cannot write to {what} {folder} ({describe_os_error(exc)}); {hint}") from None
    return folder
