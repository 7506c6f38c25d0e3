"""Adversarial data batches: corrupt, truncated, crafted and mislabelled files, and any
byte string at all. Each is refused with a DataError naming the file (never a traceback
from deeper down, never code from the file run), or, if it is a well-formed batch, loads
with every invariant of a batch intact.

Most of these already held when the suite was written (the md5 check, the restricted
unpickler); they are here so that they keep holding.
"""

from __future__ import annotations

import builtins
import importlib
import io
import os
import pickle
import subprocess
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adversarial_helpers import damaged, md5_table
from cifar_fixtures import write_pickle, write_tiny_cifar10
from kbn.data import DataError, load_cifar10

N = 20


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    return write_tiny_cifar10(tmp_path_factory.mktemp("tiny"), n_per_batch=N)


OFFICIAL: dict[str, str] = {}  # the md5s of the pristine files: "the official release"
PRISTINE: dict[str, bytes] = {}


@pytest.fixture
def tiny(pristine, tmp_path, monkeypatch) -> Path:
    monkeypatch.delenv("KBN_DATA_DIR", raising=False)
    OFFICIAL.update(md5_table(pristine))
    PRISTINE.update({p.name: p.read_bytes() for p in pristine.iterdir()})
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir(exist_ok=True)
    return _reset(folder)


def _reset(folder: Path) -> Path:
    """The pristine files again (hypothesis runs many examples in one test's folder)."""
    for name, blob in PRISTINE.items():
        (folder / name).write_bytes(blob)
    return folder


def _load(folder: Path, vouched: bool = True):
    """Load ``folder``, checking the md5s of the pristine files (``vouched=False``), or
    those of the files as they are now (a user who vouches for them, so that what is
    tested is the unpickler and the checks after it)."""
    expected = md5_table(folder) if vouched else OFFICIAL
    return load_cifar10(folder, n_val=N, download=False, progress=False,
                        expected_md5=expected)


def _check_outcome(folder: Path, victim: Path, vouched: bool = True):
    """Either a DataError naming ``victim``, or a dataset whose invariants hold."""
    try:
        data = _load(folder, vouched)
    except DataError as exc:
        assert str(victim) in str(exc), exc
        return None
    for split in (data.train, data.val, data.test):
        assert split.X.ndim == 2 and split.X.shape[1] == 3072 and split.X.dtype == np.float32
        assert split.y.dtype == np.int64 and split.y.shape == (len(split.X),)
        assert split.y.size == 0 or (0 <= split.y.min() and split.y.max() <= 9)
        assert np.isfinite(split.X).all()
    return data


# ----------------------------------------------------------------------------- any bytes


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(content=st.binary(max_size=2048), name=st.sampled_from(["data_batch_3", "test_batch",
                                                               "batches.meta"]),
       vouched=st.booleans(), pickle_header=st.booleans())
def test_any_byte_string_as_a_batch_is_a_clean_refusal(tiny, content, name, vouched,
                                                       pickle_header):
    victim = _reset(tiny) / name
    victim.write_bytes((b"\x80\x02" if pickle_header else b"") + content)
    with pytest.raises(DataError) as info:
        _load(tiny, vouched)
    assert str(victim) in str(info.value)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_a_damaged_genuine_batch_is_refused_or_still_a_valid_batch(tiny, data):
    victim = _reset(tiny) / "data_batch_2"
    victim.write_bytes(damaged(victim.read_bytes(), data))
    with pytest.raises(DataError, match="has md5"):
        _load(tiny, vouched=False)  # with the official table, any change is refused first
    _check_outcome(tiny, victim)


_leaf = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(),
                  st.binary(max_size=8), st.text(max_size=8),
                  st.builds(np.zeros, st.tuples(st.integers(0, 3), st.sampled_from([3072, 5])),
                            st.sampled_from([np.uint8, np.float32, np.int64, object])))
_values = st.recursive(_leaf, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.tuples(inner, inner),
    st.dictionaries(st.sampled_from([b"data", b"labels", b"label_names", "data"]), inner,
                    max_size=3)), max_leaves=12)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batch=st.one_of(_values, st.fixed_dictionaries({b"data": _values, b"labels": _values})),
       name=st.sampled_from(["data_batch_1", "batches.meta"]))
def test_any_pickled_structure_is_refused_or_a_valid_batch(tiny, batch, name):
    victim = _reset(tiny) / name
    write_pickle(victim, batch)
    _check_outcome(tiny, victim)


# ----------------------------------------------------------------------------- crafted pickles


class _Calls:
    """Unpickling this calls ``fn(*args)``: each ``fn`` below would leave a trace."""

    def __init__(self, fn, *args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


def _payloads(marker: Path):
    touch = f"open({str(marker)!r}, 'w').close()"
    return {
        "os.system": _Calls(os.system, f"touch {marker}"),
        "subprocess": _Calls(subprocess.call, ["touch", str(marker)]),
        "exec": _Calls(builtins.exec, touch),
        "eval": _Calls(builtins.eval, touch),
        "Path.touch": _Calls(Path.touch, marker),
        "importlib": _Calls(importlib.import_module, "this"),
        "np.load": _Calls(np.load, str(marker)),
        "codecs to another encoding": _Calls(__import__("_codecs").encode, "x", "rot13"),
    }


@pytest.mark.parametrize("which", list(_payloads(Path("m"))))
@pytest.mark.parametrize("where", ["data", "labels", "nested"])
def test_crafted_pickles_never_run(tiny, tmp_path, which, where):
    marker = tmp_path / "code-ran"
    payload = _payloads(marker)[which]
    batch = {b"data": np.zeros((1, 3072), np.uint8), b"labels": [0]}
    if where == "nested":
        batch[b"filenames"] = [{"deep": [payload]}]
    else:
        batch[where.encode()] = payload
    victim = tiny / "data_batch_4"
    write_pickle(victim, batch)
    for vouched in (False, True):
        expected = "has md5" if not vouched else "refusing to unpickle|not a CIFAR-10 pickle"
        with pytest.raises(DataError, match=expected):
            _load(tiny, vouched)
        assert not marker.exists()


# ----------------------------------------------------------------------------- mislabelled


@pytest.mark.parametrize("labels, message", [
    ([0] * (N - 1) + [10], "labels should be in 0..9"),
    ([0] * (N - 1) + [-1], "labels should be in 0..9"),
    ([0] * (N - 1), f"'labels' should have shape \\({N},\\)"),
    ([0.5] * N, "'labels' are not integers"),
    (np.full(N, 2.0), "'labels' are not integers"),
    ([b"cat"] * N, "'labels' are not integers"),
    ([2**70] * N, "'labels' are not integers"),
])
def test_mislabelled_batches_are_refused(tiny, labels, message):
    victim = tiny / "test_batch"
    write_pickle(victim, {b"data": np.zeros((N, 3072), np.uint8), b"labels": labels})
    with pytest.raises(DataError, match=f"{victim} is not a valid CIFAR-10 batch: {message}"):
        _load(tiny)


def test_relabelled_images_are_caught_by_the_checksum(tiny):
    """A batch with valid but different labels loads only if the md5s are vouched for,
    and then the dataset's checksum differs, so no cache entry or model mixes them up."""
    before = _load(tiny).checksum
    victim = tiny / "data_batch_1"
    batch = pickle.load(io.BytesIO(victim.read_bytes()), encoding="bytes")
    batch[b"labels"] = [(v + 1) % 10 for v in batch[b"labels"]]
    write_pickle(victim, batch)
    with pytest.raises(DataError, match="has md5"):
        _load(tiny, vouched=False)
    assert _load(tiny).checksum != before
