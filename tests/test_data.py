"""Tests for kbn.data: loading, normalisation, verification and safe unpickling."""

from __future__ import annotations

import builtins
import os
import pickle
import re
import resource
import time

import numpy as np
import pytest

from kbn.data import (BATCH_MD5, CIFAR10, META_MD5, DataError, Split, load_cifar10,
                      locate_cifar10)

try:
    from cifar_fixtures import (CLASS_NAMES, md5_table, read_raw, write_pickle,
                                write_tiny_cifar10)
except ImportError:  # tests/ is a package
    from tests.cifar_fixtures import (CLASS_NAMES, md5_table, read_raw, write_pickle,
                                      write_tiny_cifar10)

N = 20  # images per tiny batch: 100 train images, 20 test images


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch, tmp_path):
    # Never look at the real KBN_DATA_DIR or ~/.cache in the tiny tests.
    monkeypatch.delenv("KBN_DATA_DIR", raising=False)
    monkeypatch.setenv("KBN_CACHE_DIR", str(tmp_path / "empty-cache"))


@pytest.fixture
def tiny(tmp_path):
    return write_tiny_cifar10(tmp_path / "data", n_per_batch=N)


def load_tiny(folder, **kw):
    kw.setdefault("n_val", 20)
    if "expected_md5" not in kw:
        kw["expected_md5"] = md5_table(folder)
    kw.setdefault("download", False)
    return load_cifar10(folder, **kw)


# --------------------------------------------------------------------------- happy path


def test_tiny_loads_with_right_shapes_labels_and_split(tiny):
    data = load_tiny(tiny)
    train_raw, train_y, test_raw, test_y = read_raw(tiny)

    assert isinstance(data, CIFAR10) and isinstance(data.train, Split)
    assert data.train.X.shape == (80, 3072) and data.train.y.shape == (80,)
    assert data.val.X.shape == (20, 3072) and data.val.y.shape == (20,)
    assert data.test.X.shape == (20, 3072) and data.test.y.shape == (20,)
    assert (len(data.train), len(data.val), len(data.test)) == (80, 20, 20)
    for split in data[:3]:
        assert split.X.dtype == np.float32 and split.y.dtype == np.int64
    # Validation is the LAST n_val training images, in batch order.
    np.testing.assert_array_equal(data.train.y, train_y[:80])
    np.testing.assert_array_equal(data.val.y, train_y[80:])
    np.testing.assert_array_equal(data.test.y, test_y)
    assert data.class_names == CLASS_NAMES
    assert data.source == tiny
    assert data.mean.shape == data.std.shape == (3072,)
    assert re.fullmatch(r"[0-9a-f]{32}", data.checksum)


def test_normalisation_uses_train_statistics_for_every_split(tiny):
    data = load_tiny(tiny)
    train_raw, _, test_raw, _ = read_raw(tiny)
    mean = train_raw[:80].astype(np.float64).mean(axis=0)
    std = train_raw[:80].astype(np.float64).std(axis=0)

    np.testing.assert_allclose(data.mean, mean, rtol=1e-12)
    np.testing.assert_allclose(data.std, std, rtol=1e-12)
    np.testing.assert_allclose(data.train.X.mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(data.train.X.std(axis=0), 1, atol=1e-5)
    np.testing.assert_allclose(data.train.X, (train_raw[:80] - mean) / std, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(data.val.X, (train_raw[80:] - mean) / std, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(data.test.X, (test_raw - mean) / std, rtol=1e-5, atol=1e-5)


def test_one_hot_len_and_replace(tiny):
    data = load_tiny(tiny)
    Y = data.train.Y
    assert Y.shape == (80, 10) and Y.dtype == np.float32
    np.testing.assert_array_equal(Y.argmax(axis=1), data.train.y)
    np.testing.assert_array_equal(Y.sum(axis=1), 1)
    # Split.__len__ is the number of images; _replace must still work.
    replaced = data.train._replace(y=data.train.y + 0)
    assert len(replaced) == 80 and replaced.X is data.train.X
    X, y = data.train
    assert X is data.train.X and y is data.train.y


def test_dtype_float64_and_n_val_zero(tiny):
    data = load_tiny(tiny, dtype=np.float64, n_val=0)
    assert data.train.X.dtype == np.float64 and data.train.Y.dtype == np.float64
    assert data.train.X.shape == (100, 3072)
    assert data.val.X.shape == (0, 3072) and data.val.y.shape == (0,)


def test_subset_keeps_first_images_after_split(tiny):
    data = load_tiny(tiny, subset=5)
    train_raw, train_y, _, test_y = read_raw(tiny)
    assert (len(data.train), len(data.val), len(data.test)) == (5, 5, 5)
    np.testing.assert_array_equal(data.train.y, train_y[:5])
    np.testing.assert_array_equal(data.val.y, train_y[80:85])
    np.testing.assert_array_equal(data.test.y, test_y[:5])
    # Statistics come from the kept training images only.
    np.testing.assert_allclose(data.mean, train_raw[:5].mean(axis=0))
    # subset larger than a split keeps the whole split
    assert len(load_tiny(tiny, subset=50).val) == 20


def test_checksum_is_stable_and_tracks_content(tiny, tmp_path):
    a, b = load_tiny(tiny), load_tiny(tiny, n_val=10)
    assert a.checksum == b.checksum
    other = write_tiny_cifar10(tmp_path / "other", n_per_batch=N, seed=1)
    assert load_tiny(other).checksum != a.checksum


def test_accepts_parent_folder_env_var_and_cache(tiny, monkeypatch, tmp_path):
    # a folder containing cifar-10-batches-py is accepted too
    assert load_tiny(tiny.parent, expected_md5=md5_table(tiny)).source == tiny
    md5 = md5_table(tiny)

    monkeypatch.setenv("KBN_DATA_DIR", str(tiny))
    assert load_cifar10(n_val=20, expected_md5=md5, download=False).source == tiny
    monkeypatch.delenv("KBN_DATA_DIR")

    monkeypatch.setenv("KBN_CACHE_DIR", str(tiny.parent))
    assert locate_cifar10(download=False) == tiny
    # The cache_dir argument wins over KBN_CACHE_DIR.
    monkeypatch.setenv("KBN_CACHE_DIR", str(tmp_path / "elsewhere"))
    assert locate_cifar10(download=False, cache_dir=tiny.parent) == tiny


def test_read_only_folder_is_never_written(tiny):
    def snapshot():
        return sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in tiny.iterdir())

    for path in tiny.iterdir():
        path.chmod(0o444)
    tiny.chmod(0o555)
    try:
        before = snapshot()
        dir_mtime = tiny.stat().st_mtime_ns
        load_tiny(tiny)
        # We run as root, where chmod does not stop writes: check nothing changed.
        assert snapshot() == before and tiny.stat().st_mtime_ns == dir_mtime
    finally:
        tiny.chmod(0o755)


# --------------------------------------------------------------------------- errors


def test_missing_folder_explicit(tmp_path):
    missing = tmp_path / "no-such-folder"
    with pytest.raises(DataError, match=f"{re.escape(str(missing))}.*data_dir argument"):
        load_cifar10(missing)


def test_missing_folder_via_env_var_does_not_download(tmp_path, monkeypatch):
    missing = tmp_path / "no-such-folder"
    monkeypatch.setenv("KBN_DATA_DIR", str(missing))
    with pytest.raises(DataError, match=f"{re.escape(str(missing))}.*KBN_DATA_DIR"):
        load_cifar10()  # download=True, yet it must not fall through to downloading
    assert not (tmp_path / "empty-cache").exists()


def test_not_found_without_download_says_how_to_get_it(tmp_path):
    with pytest.raises(DataError, match="KBN_DATA_DIR.*download=True"):
        load_cifar10(download=False)


def test_missing_files_are_listed(tiny):
    md5 = md5_table(tiny)
    (tiny / "data_batch_3").unlink()
    (tiny / "batches.meta").unlink()
    with pytest.raises(DataError, match=f"{re.escape(str(tiny))} is missing batches.meta, data_batch_3"):
        load_tiny(tiny, expected_md5=md5)


def test_md5_mismatch_shows_expected_and_actual(tiny):
    md5 = md5_table(tiny)
    path = tiny / "data_batch_2"
    with open(path, "rb") as f:
        batch = pickle.load(f, encoding="bytes")
    batch[b"data"][0, 0] ^= 1  # change one pixel: still a valid batch
    write_pickle(path, batch)
    actual = md5_table(tiny)["data_batch_2"]
    with pytest.raises(DataError, match=f"{re.escape(str(path))} has md5 {actual}, expected "
                                        f"{md5['data_batch_2']}.*corrupted or not the official"):
        load_tiny(tiny, expected_md5=md5)
    load_tiny(tiny, expected_md5=md5, verify=False)  # loads when verification is off


def test_official_md5_table_is_the_default(tiny):
    with pytest.raises(DataError, match=f"expected {META_MD5}"):
        load_cifar10(tiny, n_val=20, download=False)
    assert set(BATCH_MD5) == {"data_batch_1", "data_batch_2", "data_batch_3",
                              "data_batch_4", "data_batch_5", "test_batch"}


def test_truncated_file(tiny):
    path = tiny / "data_batch_4"
    path.write_bytes(path.read_bytes()[:5000])
    for verify in (False, True):
        with pytest.raises(DataError, match=f"{re.escape(str(path))} is truncated or not a CIFAR-10 pickle"):
            load_tiny(tiny, verify=verify)  # md5 table of the damaged files


def test_non_pickle_file(tiny):
    path = tiny / "test_batch"
    path.write_text("<html>404 Not Found</html>\n")
    with pytest.raises(DataError, match=f"{re.escape(str(path))} is truncated or not a CIFAR-10 pickle"):
        load_tiny(tiny)


class _RunsSystem:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


class _OpensFile:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return builtins.open, (str(self.marker), "w")  # creating the file is the side effect


@pytest.mark.parametrize("payload", [_RunsSystem, _OpensFile])
def test_crafted_pickle_is_refused_without_side_effects(tiny, tmp_path, payload):
    marker = tmp_path / "pwned"
    official = md5_table(tiny)
    path = tiny / "data_batch_1"
    write_pickle(path, {b"data": payload(marker), b"labels": [0]})

    # verify=False: the restricted unpickler refuses the global before calling it.
    with pytest.raises(DataError, match=f"refusing to unpickle \\w+\\.(system|open) from "
                                        f"{re.escape(str(path))}"):
        load_tiny(tiny, verify=False)
    assert not marker.exists()

    # verify=True: the md5 check fails before anything is unpickled.
    with pytest.raises(DataError, match="has md5 .* expected"):
        load_tiny(tiny, expected_md5=official)
    assert not marker.exists()


def test_other_numpy_globals_are_refused_too(tiny):
    path = tiny / "data_batch_1"
    write_pickle(path, {b"data": np.load, b"labels": [0]})
    with pytest.raises(DataError, match="refusing to unpickle numpy.*load"):
        load_tiny(tiny, verify=False)


@pytest.mark.parametrize("batch, message", [
    ({b"labels": [0]}, "missing key\\(s\\) data"),
    ([1, 2, 3], "expected a dict, found list"),
    ({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, "'data' should be a \\(n, 3072\\) uint8"),
    ({b"data": np.zeros((2, 3072), np.float32), b"labels": [0, 1]}, "'data' should be a \\(n, 3072\\) uint8"),
    ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]}, "'labels' should have shape \\(2,\\)"),
    ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 10]}, "labels should be in 0..9"),
])
def test_wrong_content(tiny, batch, message):
    path = tiny / "data_batch_5"
    write_pickle(path, batch)
    with pytest.raises(DataError, match=f"{re.escape(str(path))} is not a valid CIFAR-10 batch: {message}"):
        load_tiny(tiny)


def test_bad_meta(tiny):
    write_pickle(tiny / "batches.meta", {b"label_names": [b"cat"]})
    with pytest.raises(DataError, match="batches.meta is not a valid CIFAR-10 batches.meta"):
        load_tiny(tiny)


@pytest.mark.parametrize("n_val", [-1, 50000, 60000, 1.5, "10", None, True])
def test_bad_n_val(tiny, n_val):
    with pytest.raises(ValueError, match=re.escape(f"n_val must be an int in [0, 50000), got {n_val!r}")):
        load_tiny(tiny, n_val=n_val)


def test_n_val_checked_against_actual_training_size(tiny):
    with pytest.raises(ValueError, match=re.escape("n_val=100 is too large: must be an int in [0, 100)")):
        load_tiny(tiny, n_val=100)
    assert len(load_tiny(tiny, n_val=np.int64(99)).train) == 1


@pytest.mark.parametrize("kwargs, message", [
    ({"subset": 0}, "subset must be None or an int >= 1"),
    ({"subset": 2.5}, "subset must be an int"),
    ({"dtype": np.int32}, "dtype must be a floating dtype"),
    ({"expected_md5": {"test_batch": "0"}}, "expected_md5 has no entry for batches.meta"),
])
def test_bad_arguments(tiny, kwargs, message):
    with pytest.raises(ValueError, match=message):
        load_tiny(tiny, **kwargs)


# --------------------------------------------------------------------------- real data

# Read once at import: the autouse fixture removes KBN_DATA_DIR inside each test.
REAL_DATA_DIR = os.environ.get("KBN_DATA_DIR")
needs_real_data = pytest.mark.skipif(
    not REAL_DATA_DIR,
    reason="set KBN_DATA_DIR to the cifar-10-batches-py folder to run the real-data tests",
)


@pytest.fixture(scope="module")
def real():
    start = time.perf_counter()
    data = load_cifar10(REAL_DATA_DIR, download=False)
    seconds = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\nreal CIFAR-10 load (float32, md5 verified): {seconds:.2f} s, "
          f"process peak RSS {peak_mb:.0f} MB")
    return data


@needs_real_data
def test_real_data_splits_and_classes(real):
    assert real.train.X.shape == (45000, 3072) and real.train.y.shape == (45000,)
    assert real.val.X.shape == (5000, 3072) and real.val.y.shape == (5000,)
    assert real.test.X.shape == (10000, 3072) and real.test.y.shape == (10000,)
    assert real.train.X.dtype == np.float32 and real.train.y.dtype == np.int64
    assert real.class_names == CLASS_NAMES
    counts = np.bincount(real.train.y, minlength=10)
    # 5000 per class in all 50,000; taking the last 5,000 as validation leaves
    # 4468..4525 per class (so not the 4,500..5,500 once guessed).
    assert len(counts) == 10 and counts.sum() == 45000
    assert counts.min() >= 4400 and counts.max() <= 4600
    assert (counts + np.bincount(real.val.y, minlength=10)).tolist() == [5000] * 10
    assert np.bincount(real.test.y).tolist() == [1000] * 10


@needs_real_data
def test_real_data_normalisation(real):
    assert np.abs(real.train.X.mean(axis=0, dtype=np.float64)).max() < 1e-4
    np.testing.assert_allclose(real.train.X.std(axis=0, dtype=np.float64), 1, atol=1e-4)
    # Per-channel pixel means on [0, 1], as published for the training set.
    np.testing.assert_allclose(real.mean.reshape(3, 1024).mean(axis=1) / 255,
                               [0.4914, 0.4822, 0.4465], atol=2e-3)
    assert abs(real.val.X.mean()) < 0.05 and abs(real.test.X.mean()) < 0.05


@needs_real_data
def test_real_data_validation_is_end_of_batch_5(real):
    with open(real.source / "data_batch_5", "rb") as f:  # trusted: load_cifar10 verified its md5
        labels = pickle.load(f, encoding="bytes")[b"labels"]
    np.testing.assert_array_equal(real.val.y, labels[-5000:])


def test_a_given_normalisation_is_applied_to_every_split(tiny):
    own = load_tiny(tiny, subset=30)
    again = load_tiny(tiny, normalisation=(own.mean, own.std), subset=30)
    for a, b in zip(own[:3], again[:3]):
        np.testing.assert_array_equal(a.X, b.X)  # bit for bit: the same arithmetic
    full = load_tiny(tiny)  # other statistics, so other inputs ...
    assert not np.allclose(full.test.X[:30], own.test.X)
    imposed = load_tiny(tiny, normalisation=(own.mean, own.std))  # ... unless imposed
    np.testing.assert_array_equal(imposed.test.X[:30], own.test.X)
    assert imposed.mean is not full.mean and np.array_equal(imposed.std, own.std)
    with pytest.raises(ValueError, match="normalisation must be"):
        load_tiny(tiny, normalisation=(own.mean[:5], own.std[:5]))
    with pytest.raises(ValueError, match="std > 0"):
        load_tiny(tiny, normalisation=(own.mean, 0 * own.std))
