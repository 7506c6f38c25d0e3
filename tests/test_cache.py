"""kbn.cache.ResultCache: round trip, misses, corrupted files, atomic writes."""

from __future__ import annotations

import json
import math
import os
import warnings

import pytest

from kbn import NetworkConfig, TrainConfig
from kbn.cache import ResultCache, default_cache_dir, results_equal
from kbn.trainer import Result

KEY = "ab" * 32
OTHER = "cd" * 32


def _result(lam=1e-3, val=0.5, diverged_at=None) -> Result:
    history = {"step": [5, 10], "epoch": [0.5, 1.0], "eta": [0.01, 1e-5],
               "train_cost": [2.1, 1.9], "train_loss": [2.0, 1.8],
               "train_accuracy": [0.2, 0.3], "val_cost": [2.2, 2.0],
               "val_loss": [2.1, 1.9], "val_accuracy": [0.19, val]}
    acc = float("nan") if diverged_at else val
    return Result(NetworkConfig(hidden=(10,)), TrainConfig(lam=lam), history, acc, acc, 1.25,
                  diverged_at)


def _no_warnings():
    return warnings.catch_warnings(record=True)


def test_round_trip(tmp_path):
    cache = ResultCache(tmp_path / "c")
    assert cache.get(KEY) is None and len(cache) == 0  # folder not even created yet
    r = _result()
    path = cache.put(KEY, r, spec={"what": "test"})
    assert path == tmp_path / "c" / f"{KEY}.json"
    back = cache.get(KEY)
    assert results_equal(back, r) and back.wall_time == r.wall_time and back.network is None
    record = json.loads(path.read_text())
    assert record["key"] == KEY and record["wall_time"] == 1.25 and record["spec"] == {"what": "test"}
    assert list(cache.keys()) == [KEY] and KEY in cache and OTHER not in cache


def test_diverged_result_with_nan_round_trips(tmp_path):
    cache = ResultCache(tmp_path)
    cache.put(KEY, _result(diverged_at=3))
    back = cache.get(KEY)
    assert back.diverged_at == 3 and math.isnan(back.test_accuracy)
    assert results_equal(back, _result(diverged_at=3))


def test_numpy_scalars_in_history_are_stored_exactly(tmp_path):
    import numpy as np

    r = _result()
    r.history["val_loss"] = [np.float32(2.1), np.float32(1.9)]
    ResultCache(tmp_path).put(KEY, r)
    back = ResultCache(tmp_path).get(KEY)
    assert back.history["val_loss"] == [float(np.float32(2.1)), float(np.float32(1.9))]


@pytest.mark.parametrize("content", [
    "",  # empty (as if killed before the first byte)
    '{"format": 1, "key": "' + KEY + '", "result": {"network_con',  # truncated
    "not json at all",
    "[1, 2, 3]",
    json.dumps({"format": 1, "key": OTHER, "result": {}}),  # someone else's record
    json.dumps({"format": 999, "key": KEY, "result": {}}),  # a future format
    json.dumps({"format": 1, "key": KEY, "result": {"history": {}}}),  # incomplete result
])
def test_corrupted_file_is_a_miss_with_a_warning_then_replaced(tmp_path, content):
    cache = ResultCache(tmp_path)
    (tmp_path / f"{KEY}.json").write_text(content)
    with pytest.warns(RuntimeWarning, match="rejected entry .*unreadable or altered"):
        assert cache.get(KEY) is None
    cache.put(KEY, _result())
    with _no_warnings() as w:
        assert results_equal(cache.get(KEY), _result())
    assert not w


def test_failed_write_leaves_the_old_entry_and_no_temporary(tmp_path, monkeypatch):
    cache = ResultCache(tmp_path)
    cache.put(KEY, _result(val=0.5))

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        cache.put(KEY, _result(val=0.9))
    monkeypatch.undo()
    assert cache.get(KEY).val_accuracy == 0.5  # the complete old file, untouched
    assert [p.name for p in tmp_path.iterdir()] == [f"{KEY}.json"]


def test_leftover_temporaries_are_ignored_and_can_be_cleaned(tmp_path):
    cache = ResultCache(tmp_path)
    (tmp_path / ".tmp-killed.part").write_text('{"format": 1, "ke')  # a killed writer
    cache.put(KEY, _result())
    assert list(cache.keys()) == [KEY] and len(cache) == 1
    assert cache.remove_stale_temporaries(older_than=3600) == 0
    assert cache.remove_stale_temporaries(older_than=-1) == 1
    assert [p.name for p in tmp_path.iterdir()] == [f"{KEY}.json"]


def test_default_folder_comes_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("KBN_RESULTS_CACHE", str(tmp_path / "env"))
    assert ResultCache().folder == tmp_path / "env" == default_cache_dir()
    monkeypatch.delenv("KBN_RESULTS_CACHE")
    assert default_cache_dir().parts[-3:] == (".cache", "kbn", "results")


@pytest.mark.parametrize("key", ["", "../etc/passwd", "ABC", None, "a/b"])
def test_keys_must_be_hex_digests(tmp_path, key):
    with pytest.raises(ValueError, match="hex digest"):
        ResultCache(tmp_path).path(key)
