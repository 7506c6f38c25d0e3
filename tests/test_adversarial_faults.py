"""Adversarial faults: cache entries edited by hand, searches interrupted (SIGINT) or
killed (SIGKILL) and resumed, two searches on one cache, a Dask worker killed mid-search,
and a full disk. After each: the numbers equal an undisturbed run, nothing the user had
is gone, and no temporary file is left behind."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import pytest

from threadpoolctl import threadpool_limits

from adversarial_helpers import (DISKS, ONE_THREAD, full_disk, install_tiny_as_official,
                                 kbn_on_tiny, kbn_on_tiny_argv, md5_table, run_kbn, tiny_cifar)
from kbn import SearchConfig
from kbn.cache import ResultCache, results_equal
from kbn.runs import DataSpec, run_trials
from kbn.search import lambda_search

try:
    from trial_fixtures import NET, SEARCH, TRAIN, specs, tiny_data_spec
except ImportError:
    from tests.trial_fixtures import NET, SEARCH, TRAIN, specs, tiny_data_spec

# the CLI spelling of trial_fixtures' NET, TRAIN and SEARCH, on N_VAL validation images
SEARCH_ARGS = ["search", "--hidden", "20", "--n-batch", "50", "--n-s", "16", "--cycles", "1",
               "--evals-per-cycle", "4", "--eta-max", "0.05", "--n-val", "100",
               "--coarse-range", "-5", "-1", "--n-coarse", "3", "--n-fine", "2",
               "--search-seed", "7", "--executor", "serial", "--quiet"]


@pytest.fixture(autouse=True, scope="module")
def one_blas_thread():
    """Tiny trainings in this process with one BLAS thread (see adversarial_helpers)."""
    with threadpool_limits(limits=1, user_api="blas"):
        yield


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory) -> Path:
    return tiny_cifar(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def reference(tiny_folder):
    """The undisturbed search (serial, in this process) and its trials' cache keys."""
    data = DataSpec(str(tiny_folder), n_val=100, expected_md5=md5_table(tiny_folder))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return lambda_search(NET, TRAIN, data, SEARCH, executor="serial")


def _trials(out: Path) -> list[tuple]:
    return [(t["stage"], t["lambda"], t["val_accuracy"], t["test_accuracy"])
            for t in json.loads((out / "search.json").read_text())["trials"]]


def _same_as(reference, out: Path) -> bool:
    return _trials(out) == [(t.stage, t.lam, t.result.val_accuracy, t.result.test_accuracy)
                            for t in reference.trials]


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob(".*"))


# ----------------------------------------------------------------------------- the cache


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> DataSpec:
    return tiny_data_spec(tmp_path_factory.mktemp("tiny-spec"))


def test_a_hand_edited_entry_is_reported_moved_aside_and_recomputed(data, tmp_path):
    ss = specs(data, lams=(1e-3,), seeds=(0, 1))
    cache = ResultCache(tmp_path / "cache")
    first = run_trials(ss, executor="serial", cache=cache, progress=False)
    path = cache.path(ss[0].key(data.checksum()))
    record = json.loads(path.read_text())
    record["result"]["val_accuracy"] = 0.99  # still valid JSON, still a valid Result
    path.write_text(json.dumps(record))
    edited = path.read_bytes()

    with pytest.warns(RuntimeWarning) as caught:
        again = run_trials(ss, executor="serial", cache=cache, progress=False)
    assert len(caught) == 1 and str(path) in str(caught[0].message)
    assert "checksum" in str(caught[0].message)
    assert again[0].val_accuracy == first[0].val_accuracy != 0.99  # recomputed, not the edit
    assert results_equal(again[0], first[0])
    kept = list((cache.folder / "rejected").iterdir())  # moved aside, not deleted
    assert len(kept) == 1 and kept[0].read_bytes() == edited
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # reported once: the next run reads a good entry
        assert results_equal(run_trials(ss, executor="serial", cache=cache,
                                        progress=False)[0], first[0])


@pytest.mark.parametrize("edit, why", [
    (lambda r: r.update(key="ab" * 32), "key"),
    (lambda r: r.update(format=99), "format"),
    (lambda r: r.pop("checksum"), "checksum"),
    (lambda r: r["result"]["history"].update(val_accuracy=[0.5]), "checksum"),
])
def test_every_kind_of_mismatch_is_moved_aside_once(data, tmp_path, edit, why):
    s = specs(data, lams=(1e-3,), seeds=(0,))[0]
    cache = ResultCache(tmp_path / "cache")
    run_trials([s], executor="serial", cache=cache, progress=False)
    path = cache.path(s.key(data.checksum()))
    record = json.loads(path.read_text())
    edit(record)
    path.write_text(json.dumps(record))
    with pytest.warns(RuntimeWarning, match=why) as caught:
        assert cache.get(s.key(data.checksum())) is None
    assert len(caught) == 1 and not path.exists()
    assert len(list((cache.folder / "rejected").iterdir())) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert cache.get(s.key(data.checksum())) is None  # a plain miss now


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_temporaries_of_dead_writers_are_swept_and_live_ones_kept(tmp_path):
    from kbn.atomic import temporary_name

    cache = ResultCache(tmp_path)
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        dead_tmp = tmp_path / temporary_name(".tmp-", ".part", pid=_dead_pid())
        live_tmp = tmp_path / temporary_name(".tmp-", ".part", pid=live.pid)
        legacy_old = tmp_path / ".tmp-abcdef.part"  # kbn before pids were in the names
        legacy_new = tmp_path / ".tmp-ghijkl.part"
        for p in (dead_tmp, live_tmp, legacy_old, legacy_new):
            p.write_text('{"format": 2, "ke')
        os.utime(legacy_old, (time.time() - 7200, time.time() - 7200))
        assert cache.get("ab" * 32) is None  # the first use of a cache sweeps it
        assert sorted(p.name for p in tmp_path.glob(".tmp-*")) == sorted(
            [live_tmp.name, legacy_new.name])
    finally:
        live.kill()
        live.wait()
    assert ResultCache(tmp_path).get("ab" * 32) is None
    assert [p.name for p in tmp_path.glob(".tmp-*")] == [legacy_new.name]


# ----------------------------------------------------------------------------- interrupted searches


def test_sigint_mid_search_then_resume_equals_an_undisturbed_search(tiny_folder, reference,
                                                                     tmp_path):
    out = tmp_path / "out"
    stopped = kbn_on_tiny(tiny_folder, *SEARCH_ARGS, "--out", out,
                          env={"KBN_TEST_SIGINT_AT_TRAINING": "2"})  # the fine stage
    assert stopped.returncode == 130, stopped.stderr
    assert "run the same command again to resume" in stopped.stderr
    assert "Traceback" not in stopped.stderr
    assert len(list((out / "cache").glob("*.json"))) == 3  # the coarse trials finished
    assert not (out / "search.json").exists()
    assert _leftovers(out) == []

    resumed = kbn_on_tiny(tiny_folder, *SEARCH_ARGS, "--out", out)
    assert resumed.returncode == 0, resumed.stderr
    assert _same_as(reference, out)
    assert _leftovers(out) == []


def test_sigkill_mid_write_then_resume_sweeps_the_temporary(tiny_folder, reference, tmp_path):
    out = tmp_path / "out"
    killed = kbn_on_tiny(tiny_folder, *SEARCH_ARGS, "--out", out,
                         env={"KBN_TEST_SIGKILL_AT_WRITE": "2"})
    assert killed.returncode == -signal.SIGKILL
    entries = list((out / "cache").glob("*.json"))
    temporaries = list((out / "cache").glob(".tmp-*.part"))
    assert len(entries) == 1 and len(temporaries) == 1  # killed between write and rename

    resumed = kbn_on_tiny(tiny_folder, *SEARCH_ARGS, "--out", out)
    assert resumed.returncode == 0, resumed.stderr
    assert "Traceback" not in resumed.stderr and "warning" not in resumed.stderr.lower()
    assert _same_as(reference, out)
    assert _leftovers(out) == []  # the killed writer's temporary is gone


def test_two_concurrent_searches_on_one_cache_agree(tiny_folder, reference, tmp_path):
    cache = tmp_path / "shared-cache"
    procs = [subprocess.Popen(kbn_on_tiny_argv(tiny_folder, *SEARCH_ARGS, "--out",
                                               tmp_path / f"out{i}", "--cache", cache),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env={**os.environ, **ONE_THREAD})
             for i in (1, 2)]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        assert "warning" not in err.lower()
    assert _same_as(reference, tmp_path / "out1") and _same_as(reference, tmp_path / "out2")
    assert len(list(cache.glob("*.json"))) == len(reference.trials)
    assert _leftovers(cache) == []


def test_a_dask_worker_killed_mid_search_changes_nothing(data, tmp_path):
    pytest.importorskip("dask.distributed")
    from dask.distributed import Client, LocalCluster

    from kbn.executors import DaskExecutor

    slow = TRAIN.replace(n_s=60)  # long enough trials that the kill lands mid-trial
    search = SearchConfig(coarse_range=(-5.0, -1.0), n_coarse=4, n_fine=2, seed=7)
    ref = lambda_search(NET, slow, data, search, executor="serial")
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as cluster, Client(cluster) as client:
        found: dict = {}

        def run():
            with DaskExecutor(client=client) as ex:
                found["search"] = lambda_search(NET, slow, data, search, executor=ex,
                                                cache=tmp_path / "cache")

        thread = threading.Thread(target=run)
        thread.start()
        killed = None
        deadline = time.monotonic() + 60
        while killed is None and thread.is_alive() and time.monotonic() < deadline:
            busy = [w for w, keys in client.processing().items() if keys]
            if busy:
                pid = client.run(os.getpid, workers=busy[:1])[busy[0]]
                os.kill(pid, signal.SIGKILL)
                killed = pid
            time.sleep(0.01)
        thread.join(timeout=120)
        assert killed is not None, "no worker was busy to be killed"
        assert killed not in client.run(os.getpid).values()  # that worker really died
    got = found["search"]
    assert [t.lam for t in got.trials] == [t.lam for t in ref.trials]
    assert all(results_equal(a.result, b.result) for a, b in zip(got.trials, ref.trials))
    assert _leftovers(tmp_path / "cache") == []


# ----------------------------------------------------------------------------- a full disk


TRAIN_ARGS = ["train", "--hidden", "20", "--n-batch", "20", "--n-s", "10", "--cycles", "1",
              "--n-val", "100", "--quiet"]


@pytest.mark.parametrize("disk_kind", DISKS)
def test_train_on_a_full_disk_names_the_file_and_leaves_nothing_half_written(
        tmp_path, monkeypatch, capsys, disk_kind):
    install_tiny_as_official(monkeypatch, tiny_cifar(tmp_path / "data"))
    disk = tmp_path / "disk"
    with full_disk(disk, monkeypatch, 96, disk_kind):  # the model alone needs 250 kB
        out = disk / "run"
        out.mkdir()
        (out / "notes.txt").write_text("the user's own file")
        code, stdout, err = run_kbn(capsys, *TRAIN_ARGS, "--out", out)
        error = err.strip().splitlines()[-1]  # after the line saying what it trains
        assert code == 1 and err.count("error") == 1, err
        assert error.startswith(f"kbn train: error: cannot write {out}{os.sep}"), err
        assert "no space left on device" in error and "[Errno" not in error, err
        assert "test accuracy" not in stdout and "wrote" not in stdout
        # nothing of the run is there, not even in part; the user's file is untouched
        assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
        assert (out / "notes.txt").read_text() == "the user's own file"


@pytest.mark.parametrize("disk_kind", DISKS)
def test_a_search_whose_cache_fills_up_says_which_entry(tmp_path, monkeypatch, capsys,
                                                        disk_kind):
    install_tiny_as_official(monkeypatch, tiny_cifar(tmp_path / "data"))
    disk = tmp_path / "disk"
    with full_disk(disk, monkeypatch, 8, disk_kind):  # room for two or three (~2 kB each)
        args = [a for a in SEARCH_ARGS] + ["--out", tmp_path / "out", "--cache", disk]
        code, _, err = run_kbn(capsys, *args)
        assert code == 1 and err.count("error") == 1, err
        assert re.search(rf"cannot write {re.escape(str(disk))}/[0-9a-f]{{64}}\.json: "
                         "no space left on device", err), err
        entries = list(disk.glob("*.json"))
        assert 1 <= len(entries) < 5 and _leftovers(disk) == []
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert all(ResultCache(disk).get(p.stem) is not None for p in entries)


# ----------------------------------------------------------------------------- a run folder


def test_a_new_run_replaces_the_previous_one_whole_and_leaves_other_files(
        tmp_path, monkeypatch, capsys):
    install_tiny_as_official(monkeypatch, tiny_cifar(tmp_path / "data"))
    out = tmp_path / "run"
    code, _, err = run_kbn(capsys, *TRAIN_ARGS, "--out", out)
    assert code == 0, err
    (out / "notes.txt").write_text("the user's own file")
    killed = out / ".kbn-partial-deadhost-1-0000"  # what a `kbn train` killed mid-write left
    killed.mkdir()
    (killed / "model.npz").write_bytes(b"half a model")
    os.utime(killed, (time.time() - 7200, time.time() - 7200))

    # a diverging run: its record and history replace the old run's, and the old model
    # and curves go with it (they would otherwise sit beside another run's history)
    code, stdout, _ = run_kbn(capsys, *TRAIN_ARGS, "--eta-min", "10", "--eta-max", "100",
                              "--init", "sigma", "--sigma", "100", "--no-bn", "--out", out)
    assert code == 1 and "diverged at step" in stdout
    assert sorted(p.name for p in out.iterdir()) == ["history.csv", "notes.txt", "result.json"]
    record = json.loads((out / "result.json").read_text())
    assert record["diverged_at"] is not None and set(record["files"]) == {"history.csv"}
    assert (out / "notes.txt").read_text() == "the user's own file"
