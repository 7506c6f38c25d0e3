"""Locate, verify and load CIFAR-10 (the original "python version" batches).

Typical use::

    from kbn.data import load_cifar10
    data = load_cifar10()              # finds or downloads the data, checks md5s
    data.train.X.shape                 # (45000, 3072) float32, normalised
    data.train.y.shape                 # (45000,) int64 in 0..9
    data.val.X.shape, data.test.X.shape  # (5000, 3072), (10000, 3072)

Each image is a row of 3072 uint8 values: 1024 red, then 1024 green, then 1024
blue, each channel a 32x32 image in row-major order.  Every one of the 3072
features is normalised with the mean and standard deviation of the *training*
split; the same statistics are applied unchanged to validation and test.

Where the data come from (see :func:`locate_cifar10`): the ``data_dir``
argument, else the ``KBN_DATA_DIR`` environment variable, else
``<cache>/cifar-10-batches-py`` (cache = ``cache_dir`` argument, else
``KBN_CACHE_DIR``, else ``~/.cache/kbn``), else a download into that cache.

Security: the batches are pickles, and unpickling can run arbitrary code.  So a
file is unpickled only after its md5 has matched the official one (when
``verify=True``), the md5 is computed on exactly the bytes that are then
unpickled, and the unpickler only accepts the few numpy names that genuine
batches use.  The data folder is only ever read, never written.
"""

from __future__ import annotations

import codecs
import hashlib
import io
import operator
import os
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .download import CIFAR10_TAR_MD5, CIFAR10_URL, DATASET_FOLDER, download_cifar10
from .errors import DataError, say

__all__ = [
    "BATCH_MD5",
    "META_MD5",
    "CIFAR10",
    "DataError",
    "Split",
    "load_cifar10",
    "locate_cifar10",
]

# md5 sums of the files in the official cifar-10-python.tar.gz.
BATCH_MD5 = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
}
META_MD5 = "5ff9c542aee3614f3951f8cda6e48888"

META_FILE = "batches.meta"
TRAIN_FILES = ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5")
TEST_FILE = "test_batch"
ALL_FILES = (META_FILE, *TRAIN_FILES, TEST_FILE)
N_TRAIN_OFFICIAL = 50_000
N_FEATURES = 3072  # 3 channels x 32 x 32
N_CLASSES = 10


class Split(NamedTuple):
    """One split of the data.

    ``X``: (N, 3072) normalised images, floating dtype.
    ``y``: (N,) int64 labels in 0..9.
    ``len(split)`` is N, the number of images.
    """

    X: np.ndarray
    y: np.ndarray

    @property
    def Y(self) -> np.ndarray:
        """(N, 10) one-hot labels in X's dtype (built on each access)."""
        return np.eye(N_CLASSES, dtype=self.X.dtype)[self.y]

    def __len__(self) -> int:
        return len(self.y)


def _split_make(cls, iterable):
    # namedtuple's own _make (used by _replace) checks len(result) == 2, which
    # our __len__ (number of images) breaks; check tuple's length instead.
    result = tuple.__new__(cls, iterable)
    if tuple.__len__(result) != 2:
        raise TypeError(f"Expected 2 arguments, got {tuple.__len__(result)}")
    return result


Split._make = classmethod(_split_make)


class CIFAR10(NamedTuple):
    """The loaded dataset.

    ``train``, ``val``, ``test``: :class:`Split` with X (N, 3072), y (N,).
    ``class_names``: the 10 class names, index = label ("airplane" ... "truck").
    ``mean``, ``std``: (3072,) float64 per-feature statistics of the raw
    training pixels (0..255) used to normalise every split:
    ``X = (raw - mean) / std``.  A feature that is constant in the training
    split gets std 1 (it maps to 0 instead of NaN).
    ``source``: the folder the batches were read from.
    ``checksum``: md5 (hex) over the md5 of every file read; a cache key
    for the raw data (it does not include n_val, subset or dtype).
    """

    train: Split
    val: Split
    test: Split
    class_names: tuple[str, ...]
    mean: np.ndarray
    std: np.ndarray
    source: Path
    checksum: str


# --------------------------------------------------------------------------- locating


def locate_cifar10(
    data_dir: str | os.PathLike | None = None,
    download: bool = True,
    cache_dir: str | os.PathLike | None = None,
    *,
    url: str = CIFAR10_URL,
    tar_md5: str = CIFAR10_TAR_MD5,
    progress: bool = True,
) -> Path:
    """Return the ``cifar-10-batches-py`` folder, downloading it if needed.

    Order: ``data_dir`` -> env ``KBN_DATA_DIR`` -> ``<cache>/cifar-10-batches-py``
    -> download into ``<cache>`` (only if ``download``).  ``<cache>`` is
    ``cache_dir``, else env ``KBN_CACHE_DIR``, else ``~/.cache/kbn``.
    ``data_dir``/``KBN_DATA_DIR`` may name the data folder itself or a folder
    containing it; if set but missing that is an error (no silent download).
    ``url``/``tar_md5`` say where to download from and what md5 to expect.
    """
    if data_dir is not None:
        return _given_folder(data_dir, say("data_dir"), say("unset data_dir"))
    if os.environ.get("KBN_DATA_DIR"):
        return _given_folder(os.environ["KBN_DATA_DIR"], "the KBN_DATA_DIR environment variable",
                             "unset it")

    cache = _cache_folder(cache_dir)
    if (cache / DATASET_FOLDER).is_dir():
        return cache / DATASET_FOLDER
    if not download:
        raise DataError(
            f"CIFAR-10 not found: {say('no data_dir')}, KBN_DATA_DIR is not set, and "
            f"{cache / DATASET_FOLDER} does not exist. Download {url}, extract it and set "
            f"KBN_DATA_DIR to the extracted '{DATASET_FOLDER}' folder (or {say('pass data_dir')}), "
            f"or {say('download')} to fetch it into {cache}."
        )
    return download_cifar10(cache, url=url, md5=tar_md5, progress=progress)


def _given_folder(path: str | os.PathLike, source: str, unset: str) -> Path:
    """Check a user-supplied location; accept the data folder or its parent.

    ``source``: where the location came from; ``unset``: how to stop giving it."""
    folder = Path(path).expanduser()
    if not folder.exists():
        raise DataError(
            f"CIFAR-10 folder {folder} (from {source}) does not exist. Point {source} at "
            f"the extracted '{DATASET_FOLDER}' folder, or {unset} to use/download the "
            "cached copy."
        )
    if not folder.is_dir():
        raise DataError(
            f"{folder} (from {source}) is not a folder. Point {source} at the extracted "
            f"'{DATASET_FOLDER}' folder."
        )
    inner = folder / DATASET_FOLDER
    return inner if inner.is_dir() else folder


def _cache_folder(cache_dir: str | os.PathLike | None) -> Path:
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    if os.environ.get("KBN_CACHE_DIR"):
        return Path(os.environ["KBN_CACHE_DIR"]).expanduser()
    return Path.home() / ".cache" / "kbn"


# --------------------------------------------------------------------------- loading


def load_cifar10(
    data_dir: str | os.PathLike | None = None,
    n_val: int = 5000,
    dtype=np.float32,
    verify: bool = True,
    download: bool = True,
    subset: int | None = None,
    *,
    normalisation: tuple[np.ndarray, np.ndarray] | None = None,
    expected_md5: Mapping[str, str] | None = None,
    cache_dir: str | os.PathLike | None = None,
    url: str = CIFAR10_URL,
    tar_md5: str = CIFAR10_TAR_MD5,
    progress: bool = True,
) -> CIFAR10:
    """Load CIFAR-10 as normalised float arrays.

    Returns a :class:`CIFAR10` whose splits are (official data, defaults):
    train X (45000, 3072) / y (45000,), val X (5000, 3072) / y (5000,),
    test X (10000, 3072) / y (10000,).  X has ``dtype``, y is int64.

    n_val: the validation split is the LAST ``n_val`` of the 50,000 training
        images (in batch order), train is the rest.  Must be an int in
        [0, 50000) and smaller than the number of training images.
    dtype: floating dtype of X.  Statistics are computed exactly (integer
        sums, then float64) and applied in ``dtype``.
    verify: check every file's md5 before unpickling it.
    download: allow downloading into the cache if the data are not found.
    subset: keep only the first ``subset`` images of train, of val and of
        test (after splitting) for quick smoke runs; the normalisation
        statistics come from the kept training images.
    normalisation: (mean, std), two (3072,) arrays: normalise every split with
        these instead of the training split's statistics (a saved model's own,
        to evaluate it on exactly the inputs it was trained on); they are then
        the returned ``mean`` and ``std``.
    expected_md5: {file name: md5} for all 7 files (default: official sums).
    cache_dir, url, tar_md5, progress: passed to :func:`locate_cifar10`.

    Raises ``ValueError`` for bad arguments and :class:`DataError` if the data
    are missing, corrupted or malformed.
    """
    n_val = _check_n_val(n_val, N_TRAIN_OFFICIAL)
    if subset is not None:
        subset = _check_int(subset, "subset")
        if subset < 1:
            raise ValueError(f"subset must be None or an int >= 1, got {subset!r}")
    dtype = np.dtype(dtype)
    if dtype.kind != "f":
        raise ValueError(f"dtype must be a floating dtype, got {dtype}")
    expected = {**BATCH_MD5, META_FILE: META_MD5} if expected_md5 is None else dict(expected_md5)
    if missing := [name for name in ALL_FILES if name not in expected]:
        raise ValueError(f"expected_md5 has no entry for {', '.join(missing)}")

    folder = locate_cifar10(data_dir, download, cache_dir, url=url, tar_md5=tar_md5,
                            progress=progress)
    _check_files_present(folder)

    md5s = {}

    def read(name):
        obj, md5s[name] = _read_pickle(folder / name, expected[name], verify)
        return obj

    class_names = _class_names(read(META_FILE), folder / META_FILE)
    # Per-batch arrays, then one concatenation: at most two uint8 copies of the
    # training pixels (~300 MB) exist at once, and only briefly.
    pieces = [_batch_arrays(read(name), folder / name) for name in TRAIN_FILES]
    train_raw = np.concatenate([data for data, _ in pieces])  # (50000, 3072) uint8
    train_y = np.concatenate([labels for _, labels in pieces])  # (50000,) int64
    del pieces
    test_raw, test_y = _batch_arrays(read(TEST_FILE), folder / TEST_FILE)

    n_train = len(train_raw) - n_val
    if n_train < 1:  # only possible with a non-official (smaller) dataset
        raise ValueError(
            f"n_val={n_val} is too large: must be an int in [0, {len(train_raw)}) for the "
            f"{len(train_raw)} training images in {folder}"
        )
    # Views, not copies: slicing is free; the float conversion below copies once.
    parts = {
        "train": (train_raw[:n_train], train_y[:n_train]),
        "val": (train_raw[n_train:], train_y[n_train:]),
        "test": (test_raw, test_y),
    }
    if subset is not None:
        parts = {k: (raw[:subset], y[:subset]) for k, (raw, y) in parts.items()}

    if normalisation is None:
        mean, std = _feature_stats(parts["train"][0])
    else:
        mean, std = (np.asarray(a, dtype=np.float64) for a in normalisation)
        if mean.shape != (N_FEATURES,) or std.shape != (N_FEATURES,) or not (std > 0).all():
            raise ValueError(f"normalisation must be (mean, std), two ({N_FEATURES},) arrays "
                             f"with std > 0, got shapes {mean.shape} and {std.shape}")
    splits = {k: Split(_normalise(raw, mean, std, dtype), y.copy()) for k, (raw, y) in parts.items()}

    checksum = hashlib.md5("".join(f"{n}:{md5s[n]}\n" for n in ALL_FILES).encode()).hexdigest()
    return CIFAR10(splits["train"], splits["val"], splits["test"], class_names, mean, std,
                   folder, checksum)


def _check_int(value, name: str) -> int:
    if isinstance(value, bool):
        raise ValueError(f"{name} must be an int, got {value!r}")
    try:
        return operator.index(value)
    except TypeError:
        raise ValueError(f"{name} must be an int, got {value!r}") from None


def _check_n_val(n_val, n_train_images: int) -> int:
    try:
        n = _check_int(n_val, "n_val")
    except ValueError:
        n = None
    if n is None or not 0 <= n < n_train_images:
        raise ValueError(f"n_val must be an int in [0, {n_train_images}), got {n_val!r}")
    return n


def _check_files_present(folder: Path) -> None:
    if not folder.is_dir():
        raise DataError(
            f"CIFAR-10 folder {folder} does not exist or is not a folder. Set KBN_DATA_DIR "
            f"(or {say('pass data_dir')}) to the extracted '{DATASET_FOLDER}' folder."
        )
    if missing := [name for name in ALL_FILES if not (folder / name).is_file()]:
        raise DataError(
            f"CIFAR-10 folder {folder} is missing {', '.join(missing)}. Restore the "
            f"complete '{DATASET_FOLDER}' folder from {CIFAR10_URL} (if it is the download "
            "cache, delete the folder and it will be downloaded again)."
        )


def _read_pickle(path: Path, expected_md5: str, verify: bool):
    """Read ``path``, check its md5, then unpickle it safely; return (object, md5)."""
    # One read: the md5 is computed on exactly the bytes that get unpickled.
    raw = path.read_bytes()
    actual = hashlib.md5(raw).hexdigest()
    if verify and actual != expected_md5:
        raise DataError(
            f"{path} has md5 {actual}, expected {expected_md5}: the file is corrupted or "
            f"not the official CIFAR-10 release. Delete it and download the dataset again "
            f"from {CIFAR10_URL} (or point KBN_DATA_DIR at a good copy)."
        )
    try:
        obj = _RestrictedUnpickler(io.BytesIO(raw), path).load()
    except DataError:
        raise
    except Exception as exc:  # a damaged pickle can fail in many ways
        raise DataError(
            f"{path} is truncated or not a CIFAR-10 pickle ({type(exc).__name__}: {exc}). "
            f"Delete it and download the dataset again from {CIFAR10_URL}."
        ) from exc
    return obj, actual


def _latin1_encode(text, encoding="latin1"):
    # Python 3 writes bytes in protocol-2 pickles as _codecs.encode(str, "latin1");
    # allow exactly that and nothing else the codecs machinery could do.
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise pickle.UnpicklingError(f"unexpected _codecs.encode({type(text).__name__}, {encoding!r})")
    return codecs.encode(text, "latin1")


def _numpy_reconstruct():
    try:
        from numpy._core.multiarray import _reconstruct  # numpy >= 2
    except ImportError:  # numpy 1.x
        from numpy.core.multiarray import _reconstruct
    return _reconstruct


# Everything a CIFAR-10 batch pickle refers to (written by Python 2 numpy, or by
# Python 3 numpy 1.x / 2.x).  Anything else is refused before it is imported.
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _numpy_reconstruct(),
    ("numpy._core.multiarray", "_reconstruct"): _numpy_reconstruct(),
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _latin1_encode,
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that can only rebuild numpy arrays (plus dicts, lists, bytes...)."""

    def __init__(self, file, path: Path):
        # encoding="bytes": Python 2 str (keys, filenames) stay bytes, as in the official docs.
        super().__init__(file, encoding="bytes")
        self._path = path

    def find_class(self, module, name):
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise DataError(
                f"refusing to unpickle {module}.{name} from {self._path}: CIFAR-10 batches "
                "contain only numpy arrays, so this file is not a genuine batch (it may be "
                f"malicious). Delete it and download the dataset again from {CIFAR10_URL}."
            ) from None


def _batch_arrays(batch, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Check one unpickled batch; return data (n, 3072) uint8 and labels (n,) int64."""

    def bad(detail):
        return DataError(
            f"{path} is not a valid CIFAR-10 batch: {detail}. Delete it and download the "
            f"dataset again from {CIFAR10_URL}."
        )

    if not isinstance(batch, dict):
        raise bad(f"expected a dict, found {type(batch).__name__}")
    if missing := [k.decode() for k in (b"data", b"labels") if k not in batch]:
        raise bad(f"missing key(s) {', '.join(missing)}")
    data = batch[b"data"]
    if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2
            and data.shape[1] == N_FEATURES):
        shape = getattr(data, "shape", None)
        raise bad(f"'data' should be a (n, {N_FEATURES}) uint8 array, found "
                  f"{type(data).__name__} of shape {shape} and dtype {getattr(data, 'dtype', None)}")
    raw_labels = batch[b"labels"]
    try:
        labels = np.asarray(raw_labels)
        integral = labels.dtype.kind in "iu" or (labels.dtype == object and all(
            isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in labels.flat))
        if not integral:  # asarray(..., int64) would turn 0.5 or True into a label silently
            raise TypeError(f"found {labels.dtype} values")
        labels = labels.astype(np.int64)
    except (TypeError, ValueError, OverflowError) as exc:
        raise bad(f"'labels' are not integers ({exc})") from exc
    if labels.shape != (len(data),):
        raise bad(f"'labels' should have shape ({len(data)},), found {labels.shape}")
    if labels.size and not (0 <= labels.min() and labels.max() < N_CLASSES):
        raise bad(f"labels should be in 0..{N_CLASSES - 1}, found {labels.min()}..{labels.max()}")
    return data, labels


def _class_names(meta, path: Path) -> tuple[str, ...]:
    names = meta.get(b"label_names") if isinstance(meta, dict) else None
    if not (isinstance(names, list) and len(names) == N_CLASSES
            and all(isinstance(n, bytes) for n in names)):
        raise DataError(
            f"{path} is not a valid CIFAR-10 batches.meta: expected 'label_names', a list of "
            f"{N_CLASSES} names. Delete it and download the dataset again from {CIFAR10_URL}."
        )
    return tuple(n.decode("utf-8") for n in names)


def _feature_stats(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact per-feature mean and std (ddof=0) of raw (n, 3072) uint8 pixels.

    Returns two (3072,) float64 arrays.  Sums of pixels and squared pixels are
    exact int64 (< 2**53 for n <= 50000), so var = (n*s2 - s1**2) / n**2 has
    no cancellation error; chunking keeps the int64 temporaries small.
    """
    n = len(raw)
    s1 = np.zeros(raw.shape[1], np.int64)
    s2 = np.zeros(raw.shape[1], np.int64)
    for start in range(0, n, 2048):
        block = raw[start:start + 2048].astype(np.int64)
        s1 += block.sum(axis=0)
        block *= block
        s2 += block.sum(axis=0)
    mean = s1 / n
    std = np.sqrt((n * s2 - s1 * s1) / (n * n))
    std[std == 0] = 1.0  # constant feature (tiny subsets): map to 0, not NaN
    return mean, std


def _normalise(raw: np.ndarray, mean: np.ndarray, std: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """(raw - mean) / std as a new (n, 3072) array of ``dtype``; one pass to convert, one in place."""
    X = np.subtract(raw, mean.astype(dtype), dtype=dtype)
    X /= std.astype(dtype)
    return X
