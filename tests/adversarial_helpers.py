"""What the adversarial tests build: crafted .npz archives, the tiny CIFAR-10 stand-in
installed as if it were the official release, and a full disk.

* :func:`write_npz` writes an archive exactly as asked (any member name, object arrays,
  raw bytes), which ``np.savez`` would not.
* :func:`install_tiny_as_official` makes ``kbn.data`` accept the tiny stand-in's md5 sums,
  so the real ``kbn`` command runs on it in milliseconds, in this process
  (:func:`run_kbn`) or in a subprocess (:data:`KBN_ON_TINY`, for signals).
* :func:`full_disk` is a folder on which writes fail with ENOSPC once a few kB are used:
  a real tmpfs where this process may mount one (root in CI), and a stand-in that makes
  kbn's one low-level write (``kbn.atomic._write_fully``) run out of space.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np

try:
    from cifar_fixtures import md5_table, write_tiny_cifar10
except ImportError:  # run from the repository root
    from tests.cifar_fixtures import md5_table, write_tiny_cifar10


# ----------------------------------------------------------------------------- archives


def npy_bytes(array: np.ndarray) -> bytes:
    """One array in .npy format (object arrays as their pickle, as numpy writes them)."""
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.asanyarray(array), allow_pickle=True)
    return buf.getvalue()


def write_npz(path: Path, members: dict[str, "np.ndarray | bytes"],
              compression: int = zipfile.ZIP_STORED) -> Path:
    """A zip of ``members`` under exactly these names (no ``.npy`` added), in this order."""
    path = Path(path)
    with zipfile.ZipFile(path, "w", compression=compression) as zf:
        for name, value in members.items():
            zf.writestr(name, value if isinstance(value, bytes) else npy_bytes(value))
    return path


def read_members(path: Path) -> dict[str, bytes]:
    """The raw members of an archive, by name."""
    with zipfile.ZipFile(path) as zf:
        return {name: zf.read(name) for name in zf.namelist()}


def model_arrays(path: Path) -> dict[str, np.ndarray]:
    """A model file's arrays (plain numpy read; for building crafted copies)."""
    with np.load(path, allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files}


def rewrite_model(src: Path, dst: Path, change=None, meta_change=None) -> Path:
    """``src`` with some arrays replaced (``change``: {name: array}, None deletes) and the
    meta JSON edited (``meta_change(meta)`` edits it in place); written to ``dst``."""
    arrays = model_arrays(src)
    for name, value in (change or {}).items():
        if value is None:
            arrays.pop(name)
        else:
            arrays[name] = value
    if meta_change is not None:
        meta = json.loads(str(arrays["meta"]))
        meta_change(meta)
        arrays["meta"] = np.array(json.dumps(meta))
    return write_npz(dst, {f"{k}.npy": v for k, v in arrays.items()})


def damaged(blob: bytes, data) -> bytes:
    """``blob`` cut short or with a few bits flipped, as hypothesis's ``data`` draws it."""
    from hypothesis import strategies as st

    blob = bytearray(blob)
    if data.draw(st.booleans(), label="truncate"):
        return bytes(blob[:data.draw(st.integers(0, len(blob) - 1), label="cut at")])
    where = st.lists(st.integers(0, len(blob) - 1), min_size=1, max_size=4, unique=True)
    for i in data.draw(where, label="flip"):
        blob[i] ^= 1 << data.draw(st.integers(0, 7))
    return bytes(blob)


# ----------------------------------------------------------------------------- tiny data


N_PER_BATCH = 100  # 500 training images, 100 test images


def install_tiny_as_official(monkeypatch, folder: Path) -> None:
    """Make this process's kbn.data take the tiny stand-in for the official release."""
    import kbn.data

    table = md5_table(folder)
    for name in kbn.data.BATCH_MD5:
        monkeypatch.setitem(kbn.data.BATCH_MD5, name, table[name])
    monkeypatch.setattr(kbn.data, "META_MD5", table["batches.meta"])
    monkeypatch.setenv("KBN_DATA_DIR", str(folder))


def run_kbn(capsys, *argv) -> tuple[int, str, str]:
    """``kbn ARGV`` in this process: (exit code, stdout, stderr)."""
    from kbn.cli import main

    capsys.readouterr()
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:  # argparse's usage errors
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


# `python -c KBN_ON_TINY <tiny folder> <kbn args...>`: the kbn command on the tiny data,
# with optional faults planted through the environment:
#   KBN_TEST_SIGINT_AT_TRAINING=n  SIGINT to itself as the n-th training task (a stack of
#                                  networks that share a mini-batch stream) starts
#   KBN_TEST_SIGKILL_AT_WRITE=n    SIGKILL to itself in the n-th atomic write, after the
#                                  temporary file is written and before it is renamed
KBN_ON_TINY = r"""
import hashlib, os, signal, sys
from pathlib import Path
import kbn.data, kbn.runs, kbn.cli

folder = Path(sys.argv[1])
for name in kbn.data.ALL_FILES:
    md5 = hashlib.md5((folder / name).read_bytes()).hexdigest()
    if name in kbn.data.BATCH_MD5:
        kbn.data.BATCH_MD5[name] = md5
    else:
        kbn.data.META_MD5 = md5
os.environ["KBN_DATA_DIR"] = str(folder)

counts = {"fit": 0, "write": 0}
sigint_at = int(os.environ.get("KBN_TEST_SIGINT_AT_TRAINING", 0))
kill_at = int(os.environ.get("KBN_TEST_SIGKILL_AT_WRITE", 0))
fit_stack = kbn.runs.fit_stack

def fit_with_fault(*args, **kw):
    counts["fit"] += 1
    if counts["fit"] == sigint_at:
        os.kill(os.getpid(), signal.SIGINT)
    return fit_stack(*args, **kw)

kbn.runs.fit_stack = fit_with_fault
if kill_at:
    import kbn.atomic
    publish = kbn.atomic._publish

    def publish_with_fault(tmp, path):
        counts["write"] += 1
        if counts["write"] == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        return publish(tmp, path)

    kbn.atomic._publish = publish_with_fault
sys.exit(kbn.cli.main(sys.argv[2:]))
"""


# One BLAS thread: on these tiny matrices two threads only wait for each other, and much
# more so on a loaded 2-core machine (kbn's numbers do not depend on the thread count:
# tests/test_executors.py).
ONE_THREAD = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def kbn_on_tiny_argv(folder: Path, *argv) -> list[str]:
    return [sys.executable, "-c", KBN_ON_TINY, str(folder), *map(str, argv)]


def kbn_on_tiny(folder: Path, *argv, env=None, timeout=120) -> subprocess.CompletedProcess:
    """The kbn command on the tiny data in a subprocess (see :data:`KBN_ON_TINY`)."""
    return subprocess.run(kbn_on_tiny_argv(folder, *argv), capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **ONE_THREAD, **(env or {})})


def tiny_cifar(root: Path) -> Path:
    return write_tiny_cifar10(Path(root), n_per_batch=N_PER_BATCH)


# ----------------------------------------------------------------------------- full disk


DISKS = ("tmpfs", "stand-in")


@contextlib.contextmanager
def full_disk(folder: Path, monkeypatch, size_kb: int, kind: str):
    """``folder`` as a disk with ``size_kb`` kB of space, of one of two ``kind``s:

    * "tmpfs": a real one, mounted there (skips the test where this process may not
      mount, i.e. is not root);
    * "stand-in": kbn's one low-level write (``kbn.atomic._write_fully``) raises ENOSPC
      once the files under ``folder`` hold ``size_kb`` kB.
    """
    import pytest

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if kind == "tmpfs":
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs",
                                  str(folder)], capture_output=True)
        if mounted.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
        try:
            yield
        finally:
            subprocess.run(["umount", "-l", str(folder)], capture_output=True)
        return

    import kbn.atomic

    real = kbn.atomic._write_fully
    inside = os.path.realpath(folder) + os.sep
    budget = {"left": size_kb * 1024}

    def write_until_full(fd, data):
        if not os.path.realpath(os.readlink(f"/proc/self/fd/{fd}")).startswith(inside):
            return real(fd, data)
        if len(data) > budget["left"]:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        budget["left"] -= len(data)
        return real(fd, data)

    monkeypatch.setattr(kbn.atomic, "_write_fully", write_until_full)
    yield
