"""Tiny stand-ins for the CIFAR-10 python batches, for fast tests.

The files have the official layout (Python pickles, protocol 2, dicts with
bytes keys), just with few images, so their md5 sums differ from the official
ones: pass ``md5_table(folder)`` as ``expected_md5`` to ``load_cifar10``.
"""

from __future__ import annotations

import hashlib
import io
import pickle
import tarfile
from pathlib import Path

import numpy as np

TRAIN_FILES = ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5")
TEST_FILE = "test_batch"
META_FILE = "batches.meta"
ALL_FILES = (META_FILE, *TRAIN_FILES, TEST_FILE)
CLASS_NAMES = ("airplane", "automobile", "bird", "cat", "deer",
               "dog", "frog", "horse", "ship", "truck")


def write_tiny_cifar10(root: Path, n_per_batch: int = 20, seed: int = 0) -> Path:
    """Write ``root/cifar-10-batches-py`` with 5 train batches + 1 test batch.

    Each batch holds ``n_per_batch`` random images: data (n, 3072) uint8,
    labels a list of n ints in 0..9.  Returns the folder.
    """
    folder = Path(root) / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for name in (*TRAIN_FILES, TEST_FILE):
        batch = {
            b"batch_label": f"tiny {name}".encode(),
            b"labels": [int(v) for v in rng.integers(0, 10, n_per_batch)],
            b"data": rng.integers(0, 256, (n_per_batch, 3072), dtype=np.uint8),
            b"filenames": [f"{name}_{i:04d}.png".encode() for i in range(n_per_batch)],
        }
        write_pickle(folder / name, batch)
    meta = {
        b"num_cases_per_batch": n_per_batch,
        b"label_names": [n.encode() for n in CLASS_NAMES],
        b"num_vis": 3072,
    }
    write_pickle(folder / META_FILE, meta)
    return folder


def write_pickle(path: Path, obj) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def md5_table(folder: Path) -> dict[str, str]:
    """{file name: md5 hex} of the seven dataset files in ``folder``."""
    return {name: hashlib.md5((Path(folder) / name).read_bytes()).hexdigest()
            for name in ALL_FILES}


def read_raw(folder: Path):
    """Plain (trusted) read of a tiny dataset, independent of kbn.data.

    Returns train data (N, 3072) uint8, train labels (N,) int64,
    test data (M, 3072) uint8, test labels (M,) int64.
    """
    def load(name):
        with open(Path(folder) / name, "rb") as f:
            batch = pickle.load(f, encoding="bytes")
        return batch[b"data"], np.asarray(batch[b"labels"], dtype=np.int64)

    train = [load(name) for name in TRAIN_FILES]
    test_X, test_y = load(TEST_FILE)
    return (np.concatenate([x for x, _ in train]), np.concatenate([y for _, y in train]),
            test_X, test_y)


def tarball_bytes(folder: Path) -> bytes:
    """A .tar.gz (in memory) holding ``folder`` as ``cifar-10-batches-py/``."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(folder, arcname="cifar-10-batches-py")
    return buf.getvalue()


def md5_hex(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()
