"""Output folders are checked before any work starts, so a long run cannot fail at its end."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


class UnwritableFolderError(OSError):
    """An output folder cannot be created or written to; the message says which and why."""


def writable_folder(path: str | os.PathLike, hint: str = "choose another folder") -> Path:
    """Create ``path`` if needed and prove a file can be written there; return it."""
    folder = Path(path).expanduser()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".kbn-write-test-"):
            pass
    except OSError as exc:
        raise UnwritableFolderError(
            f"cannot write to output folder {folder} ({exc.strerror or exc}); {hint}") from None
    return folder
