"""Fetch and unpack the official CIFAR-10 "python version" tarball.

The download is all-or-nothing: the tarball is streamed into a temporary file
in the cache folder, checked (length and md5), unpacked into a temporary
folder next to it, and only then moved into place with one atomic rename.
Whatever goes wrong, the temporary file and folder are removed, so the cache
never holds half a dataset.  (If the process is killed outright, a hidden
``.cifar-10-*`` temporary may remain, but it is never mistaken for the data.)
"""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
import zlib
from pathlib import Path

from .errors import DataError, say

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_TAR_MD5 = "c58f30108f718f92721af3b95e74349a"
DATASET_FOLDER = "cifar-10-batches-py"

_CHUNK = 1 << 20  # 1 MiB: large enough for speed, small enough for a smooth progress bar


def _hint(url: str) -> str:
    return (f"If this machine cannot download it, fetch {url} elsewhere, extract it, and "
            "point the KBN_DATA_DIR environment variable at the extracted "
            f"'{DATASET_FOLDER}' folder (or {say('pass data_dir')}).")


def download_cifar10(
    cache_dir: Path,
    url: str = CIFAR10_URL,
    md5: str = CIFAR10_TAR_MD5,
    progress: bool = True,
    timeout: float = 60.0,
) -> Path:
    """Download and extract CIFAR-10 into ``cache_dir``; return the data folder.

    Returns ``cache_dir / "cifar-10-batches-py"``.  If that folder already
    exists nothing is downloaded.  ``timeout`` (seconds) applies to each
    network operation, not to the whole transfer.

    Raises :class:`DataError` if the download fails, is truncated, has the
    wrong md5, or the tarball is unreadable or contains unsafe members.
    """
    cache_dir = Path(cache_dir).expanduser()
    target = cache_dir / DATASET_FOLDER
    if target.is_dir():
        return target
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(
            f"Cannot create the cache folder {cache_dir} ({exc}). Set KBN_CACHE_DIR "
            "to a writable folder. " + _hint(url)
        ) from exc

    # Temporaries live in cache_dir so the final rename stays on one filesystem.
    fd, tmp_name = tempfile.mkstemp(dir=cache_dir, prefix=".cifar-10-", suffix=".tar.gz.part")
    tmp_tar = Path(tmp_name)
    tmp_dir: Path | None = None
    try:
        with os.fdopen(fd, "wb") as out:
            actual_md5 = _stream(url, out, progress, timeout)
        if actual_md5 != md5:
            raise DataError(
                f"The file downloaded from {url} has md5 {actual_md5}, expected {md5}; "
                "it is corrupted or not the official release. Try again. "
                + _hint(url)
            )
        tmp_dir = Path(tempfile.mkdtemp(dir=cache_dir, prefix=".cifar-10-extract-"))
        _safe_extract(tmp_tar, tmp_dir, url)
        extracted = tmp_dir / DATASET_FOLDER
        if not extracted.is_dir():
            raise DataError(
                f"The tarball from {url} has no '{DATASET_FOLDER}' folder; it is not the "
                "CIFAR-10 python release. " + _hint(url)
            )
        try:
            os.replace(extracted, target)
        except OSError:
            # Another process may have finished the same download first.
            if not target.is_dir():
                raise
        return target
    finally:
        tmp_tar.unlink(missing_ok=True)
        if tmp_dir is not None:
            shutil.rmtree(tmp_dir, ignore_errors=True)


def _stream(url: str, out, progress: bool, timeout: float) -> str:
    """Copy ``url`` into the open file ``out``; return the md5 of what was received."""
    digest = hashlib.md5()
    received = 0
    expected = None
    bar = None
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            length = response.headers.get("Content-Length")
            expected = int(length) if length and length.isdigit() else None
            bar = _progress_bar(expected, progress)
            while chunk := response.read(_CHUNK):
                out.write(chunk)
                digest.update(chunk)
                received += len(chunk)
                if bar is not None:
                    bar.update(len(chunk))
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
        # URLError covers refused connections and HTTP errors; OSError covers
        # timeouts and resets; IncompleteRead is an HTTPException.
        reason = exc.reason if type(exc) is urllib.error.URLError else exc
        raise DataError(
            f"Downloading CIFAR-10 from {url} failed ({type(exc).__name__}: {reason}) "
            f"after {received} bytes. " + _hint(url)
        ) from exc
    finally:
        if bar is not None:
            bar.close()
    if expected is not None and received != expected:
        raise DataError(
            f"Downloading CIFAR-10 from {url} was cut short: received {received} of "
            f"{expected} bytes. Try again. " + _hint(url)
        )
    return digest.hexdigest()


def _progress_bar(total: int | None, progress: bool):
    """A tqdm bar, or None if progress is off or tqdm is not installed."""
    if not progress:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024,
                desc="cifar-10-python.tar.gz")


def _safe_extract(tar_path: Path, dest: Path, url: str) -> None:
    """Extract ``tar_path`` into ``dest``, refusing anything that could escape it.

    Every member is checked *before* anything is written: only regular files
    and folders whose paths stay inside ``dest`` are allowed (no links,
    devices, absolute paths or ``..``).  On Pythons that have it, tarfile's
    own ``filter="data"`` is applied as well.
    """
    dest = dest.resolve()
    try:
        with tarfile.open(tar_path, "r:gz") as tar:
            members = tar.getmembers()
            for member in members:
                inside = (dest / member.name).resolve()
                if not (member.isfile() or member.isdir()) or (
                    inside != dest and dest not in inside.parents
                ):
                    raise DataError(
                        f"Refusing to extract '{member.name}' from the tarball downloaded "
                        f"from {url}: it is not a plain file or folder inside the target "
                        "folder. The download is not the official CIFAR-10 release. "
                        + _hint(url)
                    )
            if hasattr(tarfile, "data_filter"):
                tar.extractall(dest, members=members, filter="data")
            else:  # Python < 3.11.4; the checks above already cover the risks
                tar.extractall(dest, members=members)
    except DataError:
        raise
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        raise DataError(
            f"Cannot extract the tarball downloaded from {url} ({type(exc).__name__}: "
            f"{exc}); it is corrupted or not a .tar.gz file. " + _hint(url)
        ) from exc
