"""Adversarial model files: whatever `kbn evaluate` or `load_network` is given, it either
evaluates a model exactly as trained or says in one line which file is wrong and how,
before any arithmetic; nothing in a file ever runs.

Also part 5 of issue 11: a model file carries its training normalisation and data
checksum, so it evaluates to the same accuracy whatever data options it is given.
"""

from __future__ import annotations

import io
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adversarial_helpers import (damaged, install_tiny_as_official, model_arrays, npy_bytes,
                                 read_members, rewrite_model, run_kbn, tiny_cifar, write_npz)
from kbn import NetworkConfig, TrainConfig
from kbn.checkpoint import ModelFileError, load_network, save_network
from kbn.trainer import fit

SHORT = TrainConfig(n_batch=50, n_s=10, n_cycles=1, evals_per_cycle=1)
NET = NetworkConfig(hidden=(50, 50))  # the example: W2 is (50, 50)


@pytest.fixture(scope="module")
def model(tmp_path_factory, toy_data_module) -> Path:
    """A trained 3-layer [50, 50] + BN model on 20-dimensional blobs, saved."""
    result = fit(NET, SHORT, toy_data_module)
    return save_network(result.network, tmp_path_factory.mktemp("m") / "model.npz", SHORT)


@pytest.fixture(scope="module")
def toy_data_module():
    from types import SimpleNamespace

    from conftest import make_blobs

    X, y = make_blobs(600, 20, 10, np.random.default_rng(5))
    split = lambda a, b: SimpleNamespace(X=X[a:b], y=y[a:b])  # noqa: E731
    return SimpleNamespace(train=split(0, 400), val=split(400, 500), test=split(500, 600))


def _refused(path, message: str):
    """load_network(path) raises ModelFileError naming the file, with ``message``."""
    with pytest.raises(ModelFileError) as info:
        load_network(path)
    text = str(info.value)
    assert str(path) in text and "\n" not in text, text
    assert re.search(message, text), text
    return text


# ----------------------------------------------------------------------------- the rows


def test_wrong_shape_is_named_with_the_shape_the_architecture_implies(model, tmp_path):
    bad = rewrite_model(model, tmp_path / "model.npz",
                        {"param/W2": np.zeros((50, 7), np.float32)})
    _refused(bad, re.escape("param/W2 has shape (50, 7), expected (50, 50) for hidden [50, 50]"))


@pytest.mark.parametrize("name", ["param/W1", "param/b3", "param/gamma2", "avg/mean1"])
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_values_are_refused(model, tmp_path, name, value):
    arrays = model_arrays(model)
    broken = arrays[name].copy()
    broken.flat[3] = value
    bad = rewrite_model(model, tmp_path / "model.npz", {name: broken})
    _refused(bad, f"{re.escape(name)} has 1 non-finite value")


def test_evaluate_refuses_a_bad_model_in_one_line_before_loading_any_data(
        model, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("KBN_DATA_DIR", str(tmp_path / "no-data-here"))
    nan = model_arrays(model)["param/W1"].copy()
    nan[:] = np.nan
    cases = {"shape.npz": {"param/W2": np.zeros((50, 7), np.float32)},
             "nan.npz": {"param/W1": nan}}
    for name, change in cases.items():
        bad = rewrite_model(model, tmp_path / name, change)
        code, out, err = run_kbn(capsys, "evaluate", bad)
        assert code == 1 and out == ""
        assert len(err.strip().splitlines()) == 1 and str(bad) in err, err
        assert "no-data-here" not in err  # refused before the data were looked for


# ----------------------------------------------------------------------------- crafted archives


def test_a_missing_array_is_named(model, tmp_path):
    _refused(rewrite_model(model, tmp_path / "m.npz", {"param/b3": None}),
             re.escape("param/b3 is missing"))


def test_an_unexpected_array_is_named(model, tmp_path):
    _refused(rewrite_model(model, tmp_path / "m.npz", {"param/W9": np.zeros(3, np.float32)}),
             re.escape("unexpected member 'param/W9.npy'"))


@pytest.mark.parametrize("dtype", [np.int64, np.float16, np.complex64, "<U4", bool])
def test_wrong_dtypes_are_refused(model, tmp_path, dtype):
    w = model_arrays(model)["param/W1"]
    _refused(rewrite_model(model, tmp_path / "m.npz", {"param/W1": w.astype(dtype)}),
             r"param/W1 has dtype \S+, expected float32 or float64")


def test_mixed_precisions_are_refused(model, tmp_path):
    b = model_arrays(model)["param/b1"].astype(np.float64)
    _refused(rewrite_model(model, tmp_path / "m.npz", {"param/b1": b}),
             "param/b1 has dtype float64, the model's other weights float32")


def test_a_negative_bn_variance_is_refused(model, tmp_path):
    var = model_arrays(model)["avg/var2"].copy()
    var[0] = -1.0
    _refused(rewrite_model(model, tmp_path / "m.npz", {"avg/var2": var}),
             re.escape("avg/var2 has 1 negative value"))


def test_a_header_declaring_a_huge_array_is_refused_before_allocating(model, tmp_path):
    members = read_members(model)
    # a valid .npy header for 10**12 float32 values (4 TB), followed by only a few bytes
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<f4", "fortran_order": False, "shape": (10**12,)})
    members["param/W1.npy"] = header.getvalue() + b"\0" * 64
    bad = write_npz(tmp_path / "m.npz", members)
    _refused(bad, re.escape("param/W1 has shape (1000000000000,), expected (20, 50)"))


class _Touch:
    """Unpickling this creates ``marker``: the proof that code in a file ran."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return Path.touch, (Path(self.marker),)


@pytest.mark.parametrize("member", ["meta.npy", "param/W1.npy"])
def test_an_object_array_is_refused_and_its_pickle_never_runs(model, tmp_path, member):
    marker = tmp_path / "code-ran"
    members = read_members(model)
    members[member] = npy_bytes(np.array([_Touch(marker)], dtype=object))
    bad = write_npz(tmp_path / "m.npz", members)
    with pytest.raises(ModelFileError):
        load_network(bad)
    assert not marker.exists()


@pytest.mark.parametrize("name", ["../../escaped.npy", "/tmp/absolute.npy",
                                  "param/../../W1.npy", "param\\..\\W1.npy"])
def test_path_traversal_member_names_are_refused_and_nothing_is_written(model, tmp_path, name):
    members = read_members(model)
    members[name] = npy_bytes(np.zeros(3, np.float32))
    work = tmp_path / "deep" / "er"
    work.mkdir(parents=True)
    bad = write_npz(work / "m.npz", members)
    before = sorted(p for p in tmp_path.rglob("*"))
    _refused(bad, "unexpected member")
    assert sorted(p for p in tmp_path.rglob("*")) == before
    assert not Path("/tmp/absolute.npy").exists()


def test_duplicate_members_are_refused(model, tmp_path):
    bad = tmp_path / "m.npz"
    bad.write_bytes(model.read_bytes())
    zero = npy_bytes(np.zeros((20, 50), np.float32))
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about the duplicate name
        with zipfile.ZipFile(bad, "a") as zf:
            zf.writestr("param/W1.npy", zero)  # a second W1: which one would a reader see?
    _refused(bad, re.escape("member 'param/W1.npy' appears twice"))


@pytest.mark.parametrize("meta, message", [
    ("not json", "meta is not valid JSON"),
    ("[1, 2]", "meta is not a JSON object"),
    ('{"format": "kbn-model"}', "meta has no format_version"),
    ('{"format": "pytorch", "format_version": 2}', "not a kbn model file"),
])
def test_bad_meta_is_named(model, tmp_path, meta, message):
    arrays = model_arrays(model)
    arrays["meta"] = np.array(meta)
    bad = write_npz(tmp_path / "m.npz", {f"{k}.npy": v for k, v in arrays.items()})
    _refused(bad, re.escape(message))


@pytest.mark.parametrize("network_config, message", [
    ({"hidden": [50, -50]}, "every width must be a positive int"),
    ({"hidden": [50, 50], "depth": 3}, "unknown key"),
    ("3 layers", "network_config is not a JSON object"),
])
def test_a_bad_stored_architecture_is_named(model, tmp_path, network_config, message):
    def edit(meta):
        meta["network_config"] = network_config
    _refused(rewrite_model(model, tmp_path / "m.npz", meta_change=edit), re.escape(message))


def test_the_previous_model_format_says_what_to_do(model, tmp_path):
    def edit(meta):
        meta["format_version"] = 1
    text = _refused(rewrite_model(model, tmp_path / "m.npz", meta_change=edit), "model format 1")
    assert "retrain" in text


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 not really a zip", b"\x93NUMPY",
                                     b"\x80\x04\x95 a pickle?"])
def test_files_that_are_not_archives(tmp_path, content):
    path = tmp_path / "m.npz"
    path.write_bytes(content)
    _refused(path, "corrupted or not a kbn model file")


def test_a_folder_or_a_missing_file(tmp_path):
    _refused(tmp_path, "is a folder, not a model file")
    _refused(tmp_path / "missing.npz", "no such model file")


# ----------------------------------------------------------------------------- any bytes


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(content=st.binary(max_size=4096))
def test_any_byte_string_is_a_clean_refusal(tmp_path, content):
    path = tmp_path / "any.npz"
    path.write_bytes(content)
    with pytest.raises(ModelFileError):
        load_network(path)


@pytest.fixture(scope="module")
def small_model(tmp_path_factory, toy_data_module) -> Path:
    result = fit(NetworkConfig(hidden=(6,)), SHORT, toy_data_module)
    return save_network(result.network, tmp_path_factory.mktemp("s") / "model.npz", SHORT)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_a_damaged_model_is_refused_or_reads_back_unchanged(tmp_path, small_model, data):
    """Flipped bits or a cut anywhere in a real model: a clean error, or (a flip in a
    field nobody reads) the very same network; never a traceback, never other weights."""
    path = tmp_path / "damaged.npz"
    path.write_bytes(damaged(small_model.read_bytes(), data))
    try:
        net, _ = load_network(path)
    except ModelFileError:
        return
    ref, _ = load_network(small_model)
    assert net.config == ref.config
    for group in ("params", "averages"):
        a, b = getattr(net, group), getattr(ref, group)
        assert a.keys() == b.keys()
        assert all(np.array_equal(a[k], b[k]) and a[k].dtype == b[k].dtype for k in a)


# ----------------------------------------------------------------------------- issue 11, part 5


TINY_TRAIN = ["--hidden", "20", "--n-batch", "20", "--n-s", "10", "--cycles", "1",
              "--n-val", "100", "--quiet"]


@pytest.fixture
def tiny_official(tmp_path, monkeypatch) -> Path:
    folder = tiny_cifar(tmp_path / "data")
    install_tiny_as_official(monkeypatch, folder)
    return folder


def _accuracy(text: str) -> str:
    return re.search(r"test accuracy (\d+\.\d+) %", text).group(1)


def test_a_model_evaluates_the_same_whatever_data_options_evaluate_gets(
        tiny_official, tmp_path, capsys):
    code, out, err = run_kbn(capsys, "train", *TINY_TRAIN, "--subset", "60",
                             "--out", tmp_path / "run")
    assert code == 0, err
    trained = _accuracy(out)
    model = tmp_path / "run" / "model.npz"
    seen = set()
    for options in ([], ["--subset", "60"], ["--subset", "30"], ["--subset", "1000"],
                    ["--n-val", "0"], ["--n-val", "300"], ["--subset", "7", "--n-val", "10"]):
        code, out, err = run_kbn(capsys, "evaluate", model, *options)
        assert code == 0, err
        seen.add(_accuracy(out))
        assert "on 60 images" in out  # the test images it was judged on when trained
    assert seen == {trained}


def test_the_model_file_keeps_the_training_normalisation_and_checksum(
        tiny_official, tmp_path, capsys):
    import kbn.data

    code, _, err = run_kbn(capsys, "train", *TINY_TRAIN, "--subset", "60",
                           "--out", tmp_path / "run")
    assert code == 0, err
    data = kbn.data.load_cifar10(n_val=100, subset=60)
    from kbn.checkpoint import load_model

    saved = load_model(tmp_path / "run" / "model.npz")
    assert saved.data.checksum == data.checksum and saved.data.subset == 60
    np.testing.assert_array_equal(saved.data.mean, data.mean)
    np.testing.assert_array_equal(saved.data.std, data.std)
    assert saved.data.mean.dtype == saved.data.std.dtype == np.float64


def test_a_model_from_other_data_is_refused_unless_the_user_says_so(
        tiny_official, tmp_path, capsys):
    code, out, err = run_kbn(capsys, "train", *TINY_TRAIN, "--out", tmp_path / "run")
    assert code == 0, err
    trained = _accuracy(out)
    other = rewrite_model(tmp_path / "run" / "model.npz", tmp_path / "other.npz",
                          meta_change=lambda m: m["data"].update(checksum="0" * 32))
    code, out, err = run_kbn(capsys, "evaluate", other)
    assert code == 1 and out == "" and len(err.strip().splitlines()) == 1
    assert "00000000" in err and "--allow-other-data" in err
    code, out, err = run_kbn(capsys, "evaluate", other, "--allow-other-data")
    assert code == 0 and _accuracy(out) == trained  # the same images, its own normalisation
    assert "warning" in err and "other data" in err


def test_evaluate_says_when_a_model_cannot_take_cifar10(model, tmp_path, capsys, monkeypatch):
    # `model` was trained on 20-dimensional blobs and saved without a data record
    monkeypatch.setenv("KBN_DATA_DIR", str(tmp_path / "no-data-here"))
    code, out, err = run_kbn(capsys, "evaluate", model)
    assert code == 1 and len(err.strip().splitlines()) == 1
    assert "20 inputs" in err and "3072" in err
