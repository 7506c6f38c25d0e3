"""kbn.executors: choosing an executor, BLAS limits, and the same numbers on every executor."""

from __future__ import annotations

import pytest

from kbn.cache import results_equal
from kbn.executors import (DaskExecutor, Executor, ProcessExecutor, SerialExecutor,
                           get_executor, worker_blas_threads)
from kbn.runs import run_trials
from kbn.search import lambda_search

try:
    from trial_fixtures import NET, SEARCH, TRAIN, specs, tiny_data_spec
except ImportError:
    from tests.trial_fixtures import NET, SEARCH, TRAIN, specs, tiny_data_spec


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return tiny_data_spec(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def pool():
    with ProcessExecutor(2, blas_threads=1) as ex:
        yield ex


@pytest.fixture(scope="module")
def dask_cluster():
    pytest.importorskip("dask.distributed")
    from dask.distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as cluster:
        yield cluster


def _boom(x):
    raise ArithmeticError(f"trial {x} failed")


# ----------------------------------------------------------------------- choosing


def test_strings_name_executors(monkeypatch):
    monkeypatch.setattr("kbn.executors.available_cores", lambda: 4)
    assert isinstance(get_executor("serial"), SerialExecutor)
    ex = get_executor("process")
    assert isinstance(ex, ProcessExecutor) and (ex.n_workers, ex.blas_threads) == (4, 1)
    ex = get_executor(" Process:2 ")
    assert (ex.n_workers, ex.blas_threads) == (2, 2)  # the cores are shared out
    mine = SerialExecutor()
    assert get_executor(mine) is mine


@pytest.mark.parametrize("bad", ["threads", "process:0", "process:x", "dask://", "", 3])
def test_unknown_executor_says_what_is_accepted(bad):
    with pytest.raises(ValueError, match="serial.*process.*tcp://host:port"):
        get_executor(bad)


def test_default_executor(monkeypatch):
    monkeypatch.delenv("KBN_EXECUTOR", raising=False)
    monkeypatch.delenv("KBN_DASK_SCHEDULER", raising=False)
    monkeypatch.setattr("kbn.executors.available_cores", lambda: 2)
    assert isinstance(get_executor(None, n_trials=1), SerialExecutor)
    ex = get_executor(None, n_trials=8)
    assert isinstance(ex, ProcessExecutor) and ex.n_workers == 2
    monkeypatch.setattr("kbn.executors.available_cores", lambda: 1)
    assert isinstance(get_executor(None, n_trials=8), SerialExecutor)
    monkeypatch.setenv("KBN_EXECUTOR", "process:3")
    assert get_executor(None, n_trials=1).n_workers == 3


def test_scheduler_address_from_the_environment(monkeypatch, dask_cluster):
    monkeypatch.delenv("KBN_EXECUTOR", raising=False)
    monkeypatch.setenv("KBN_DASK_SCHEDULER", dask_cluster.scheduler_address)
    with get_executor(None, n_trials=4) as ex:
        assert isinstance(ex, DaskExecutor) and ex.address == dask_cluster.scheduler_address
        assert sorted(ex.map_unordered(worker_blas_threads, range(3))) == [(0, 1), (1, 1), (2, 1)]


# ----------------------------------------------------------------------- process pool


def test_pool_workers_use_one_blas_thread_and_results_come_back_indexed(pool):
    out = dict(pool.map_unordered(worker_blas_threads, range(4)))
    assert out == {0: 1, 1: 1, 2: 1, 3: 1}


def test_a_failing_trial_raises_in_the_caller_and_the_pool_survives(pool):
    with pytest.raises(ArithmeticError, match="trial 1 failed"):
        dict(pool.map_unordered(_boom, [1]))
    assert dict(pool.map_unordered(worker_blas_threads, [0])) == {0: 1}


def test_serial_executor_is_in_process():
    ex = SerialExecutor()
    assert ex.in_process and list(ex.map_unordered(str, [1, 2])) == [(0, "1"), (1, "2")]
    assert isinstance(ex, Executor)


# ----------------------------------------------------------------------- same numbers


def test_trials_are_identical_on_every_executor(data, pool, dask_cluster):
    ss = specs(data, lams=(1e-4, 1e-2), seeds=(0, 1, 2))
    serial = run_trials(ss, executor="serial", progress=False)
    local = run_trials(ss, executor=pool, progress=False)
    one = run_trials(ss, executor="process:1", progress=False)
    with DaskExecutor(dask_cluster.scheduler_address) as dask:
        remote = run_trials(ss, executor=dask, progress=False)
    for other in (local, one, remote):
        assert all(results_equal(a, b) for a, b in zip(serial, other))
    # the seeds do differ: identical results are not an accident of the test
    assert not results_equal(serial[0], serial[1])


def test_lambda_search_on_dask_equals_the_local_executors(data, pool, dask_cluster):
    serial = lambda_search(NET, TRAIN, data, SEARCH, executor="serial")
    local = lambda_search(NET, TRAIN, data, SEARCH, executor=pool)
    dask = lambda_search(NET, TRAIN, data, SEARCH, executor=f"dask://{dask_cluster.scheduler_address[6:]}")
    for other in (local, dask):
        assert [t.lam for t in other.trials] == [t.lam for t in serial.trials]
        assert [t.stage for t in other.trials] == [t.stage for t in serial.trials]
        assert all(results_equal(a.result, b.result) for a, b in zip(serial.trials, other.trials))
        assert other.best.lam == serial.best.lam
