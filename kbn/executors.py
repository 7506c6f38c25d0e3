"""Where independent trials run: in this process, a local process pool, or a Dask cluster.

One interface, :class:`Executor`: ``map_unordered(fn, items)`` yields ``(index, fn(item))``
as each call finishes. :func:`kbn.runs.run_trials` uses it; nothing else needs to know
which executor runs the trials.

* :class:`SerialExecutor`: one after another, in this process (BLAS uses every core).
* :class:`ProcessExecutor`: a ``concurrent.futures`` process pool, one worker per core,
  each with BLAS limited to ``cores // workers`` threads (threadpoolctl), because on this
  network's small matrices two single-threaded trainings side by side beat one
  two-threaded training after another (``benchmarks/bench_parallel.py`` measures it).
* :class:`DaskExecutor`: a ``dask.distributed`` cluster, given its scheduler address
  (``pip install "kbn[dask]"``). Start one with e.g. ``dask scheduler`` and
  ``dask worker tcp://host:8786 --nworkers <cores> --nthreads 1`` on each machine; the
  workers need kbn installed and CIFAR-10 reachable (``KBN_DATA_DIR`` or the download).

:func:`get_executor` turns a string, an env variable or nothing into one of these.
Executors are context managers; one you create, you close (pools are reused across
calls while open, so workers load the data once).
"""

from __future__ import annotations

import os
import signal
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import Any, Callable, Iterator, Sequence

__all__ = ["DaskExecutor", "Executor", "ProcessExecutor", "SerialExecutor", "available_cores",
           "get_executor", "worker_blas_threads"]

EXECUTOR_ENV = "KBN_EXECUTOR"
SCHEDULER_ENV = "KBN_DASK_SCHEDULER"
ACCEPTED = ('"serial", "process", "process:N" (N workers), a Dask scheduler address '
            '"tcp://host:port" / "tls://host:port" / "dask://host:port", or an Executor')


def available_cores() -> int:
    """Cores this process may run on (the affinity mask where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


class Executor:
    """Runs ``fn(item)`` for every item and yields ``(index, result)`` as each finishes.

    ``in_process``: calls run in this process (so a progress bar per call is visible).
    ``local``: workers share this machine's files (the data folder is located once here).
    """

    in_process = False
    local = True
    slots = 1  # calls that run at once

    def map_unordered(self, fn: Callable[[Any], Any], items: Sequence[Any]) -> Iterator[tuple[int, Any]]:
        raise NotImplementedError

    def describe(self) -> str:
        return type(self).__name__

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class SerialExecutor(Executor):
    """In this process, in order."""

    in_process = True

    def map_unordered(self, fn, items):
        for i, item in enumerate(items):
            yield i, fn(item)

    def describe(self) -> str:
        return "serial"


# ------------------------------------------------------------------ local process pool

_BLAS_LIMIT = None  # keeps the worker's threadpoolctl limiter (and thus its limits) alive


def _init_worker(blas_threads: int) -> None:
    """Process-pool initializer: BLAS threads for the worker's lifetime; no Ctrl-C.

    SIGINT is ignored so an interrupt in a terminal reaches only the parent, which then
    cancels the pending trials and terminates the workers (instead of every worker dying
    with a traceback and the pool breaking).
    """
    global _BLAS_LIMIT
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from threadpoolctl import threadpool_limits

    _BLAS_LIMIT = threadpool_limits(limits=blas_threads)


def _noop(x):
    return x


class ProcessExecutor(Executor):
    """A local process pool; the workers stay up (and keep their data) until ``close()``.

    n_workers: default one per available core.
    blas_threads: BLAS threads per worker; default ``max(1, cores // n_workers)``.
    start_method: "spawn" by default. Each worker is then a fresh interpreter: it
        inherits no threads (BLAS pool, tqdm monitor, Jupyter/ZMQ, a Dask client) and no
        locks held by them, which ``fork`` would copy in an undefined state (Python 3.12+
        warns about forking a threaded process), and it behaves the same on Linux, macOS
        and Windows. The price is ~0.1-0.3 s of interpreter + numpy import per worker,
        paid once per pool (measured by benchmarks/bench_parallel.py) - nothing next to a
        training run. The worker loads the data itself either way. "forkserver" and
        "fork" may be asked for.
    A script that uses it must guard its entry point with ``if __name__ == "__main__":``
    (spawn imports the main module in every worker); notebooks need nothing.
    """

    def __init__(self, n_workers: int | None = None, blas_threads: int | None = None,
                 start_method: str = "spawn"):
        cores = available_cores()
        self.n_workers = cores if n_workers is None else int(n_workers)
        if self.n_workers < 1:
            raise ValueError(f"n_workers must be >= 1, got {n_workers!r}")
        self.blas_threads = (max(1, cores // self.n_workers) if blas_threads is None
                             else int(blas_threads))
        if self.blas_threads < 1:
            raise ValueError(f"blas_threads must be >= 1, got {blas_threads!r}")
        self.start_method = start_method
        self.slots = self.n_workers
        self._pool: ProcessPoolExecutor | None = None

    def describe(self) -> str:
        return f"{self.n_workers} processes x {self.blas_threads} BLAS thread(s)"

    def _get_pool(self) -> ProcessPoolExecutor:
        if self._pool is None:
            import multiprocessing

            self._pool = ProcessPoolExecutor(
                max_workers=self.n_workers,
                mp_context=multiprocessing.get_context(self.start_method),
                initializer=_init_worker, initargs=(self.blas_threads,))
        return self._pool

    def start(self) -> "ProcessExecutor":
        """Start every worker now (otherwise they start with the first trials)."""
        pool = self._get_pool()
        list(pool.map(_noop, range(self.n_workers)))
        return self

    def map_unordered(self, fn, items):
        pool = self._get_pool()
        futures: dict[Future, int] = {}
        try:
            futures = {pool.submit(fn, item): i for i, item in enumerate(items)}
            pending = set(futures)
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for fut in sorted(done, key=futures.__getitem__):
                    yield futures[fut], fut.result()
        except BaseException as exc:
            for fut in futures:
                fut.cancel()
            from concurrent.futures.process import BrokenProcessPool

            if isinstance(exc, (KeyboardInterrupt, GeneratorExit, BrokenProcessPool)):
                self._terminate()  # stop the running trials too; a new pool starts next time
            raise

    def _terminate(self) -> None:
        pool, self._pool = self._pool, None
        if pool is None:
            return
        processes = list((getattr(pool, "_processes", None) or {}).values())
        for p in processes:
            try:
                p.terminate()
            except Exception:
                pass
        pool.shutdown(wait=False, cancel_futures=True)
        for p in processes:
            p.join(timeout=5)

    def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


# ------------------------------------------------------------------ Dask


_DASK_BLAS = {"limit": None, "threads": None}


def _dask_task(fn, item, blas_threads: int | None):
    """Runs on a Dask worker: BLAS threads limited once per worker process, then fn(item)."""
    if blas_threads is not None and _DASK_BLAS["threads"] != blas_threads:
        from threadpoolctl import threadpool_limits

        _DASK_BLAS["limit"] = threadpool_limits(limits=blas_threads)
        _DASK_BLAS["threads"] = blas_threads
    return fn(item)


class DaskExecutor(Executor):
    """Trials as tasks on a ``dask.distributed`` cluster.

    address: the scheduler, e.g. "tcp://10.0.0.5:8786" (or give ``client=``, a connected
        ``dask.distributed.Client``, which is then not closed by ``close()``).
    blas_threads: BLAS threads in each worker process (default 1: one trial per worker
        thread; give ``--nthreads 1 --nworkers <cores>`` to the workers); None leaves the
        worker's setting alone.
    Results come back as each trial finishes; a worker lost mid-trial is retried by Dask.
    """

    local = False

    def __init__(self, address: str | None = None, client=None, blas_threads: int | None = 1):
        if (address is None) == (client is None):
            raise ValueError("DaskExecutor needs a scheduler address or a client (one of them)")
        try:
            from dask.distributed import Client
        except ImportError as exc:
            raise ImportError('the Dask executor needs dask.distributed: pip install "kbn[dask]"') from exc
        self._owned = client is None
        self.client = Client(address) if client is None else client
        self.address = self.client.scheduler.address
        self.blas_threads = blas_threads
        try:  # worker threads of the cluster now (it may grow later)
            self.slots = max(1, sum(self.client.nthreads().values()))
        except Exception:
            self.slots = 1

    def describe(self) -> str:
        return f"dask {self.address}"

    def map_unordered(self, fn, items):
        from dask.distributed import as_completed

        futures = []
        try:
            futures = [self.client.submit(_dask_task, fn, item, self.blas_threads, pure=False)
                       for item in items]
            index = {f.key: i for i, f in enumerate(futures)}
            for fut in as_completed(futures):
                yield index[fut.key], fut.result()
        finally:
            for fut in futures:  # no-op for finished ones; frees the cluster on errors
                fut.cancel()

    def close(self) -> None:
        if self._owned:
            self.client.close()


# ------------------------------------------------------------------ choosing


def get_executor(spec: "str | Executor | None" = None, n_trials: int | None = None) -> Executor:
    """An Executor from a spec; see ``ACCEPTED``. The caller closes what it gets.

    None: env ``KBN_EXECUTOR`` (any accepted string) if set, else env
    ``KBN_DASK_SCHEDULER`` (a scheduler address), else a process pool when ``n_trials``
    (unknown: assume many) exceeds 1 and there is more than one core, else serial. A
    process pool chosen here has at most ``n_trials`` workers.
    """
    if isinstance(spec, Executor):
        return spec
    if spec is None:
        if os.environ.get(EXECUTOR_ENV):
            spec = os.environ[EXECUTOR_ENV]
        elif os.environ.get(SCHEDULER_ENV):
            spec = os.environ[SCHEDULER_ENV]
        else:
            cores = available_cores()
            many = n_trials is None or n_trials > 1
            if many and cores > 1:
                return ProcessExecutor(min(cores, n_trials) if n_trials else cores)
            return SerialExecutor()
    if not isinstance(spec, str):
        raise ValueError(f"unknown executor {spec!r}: give {ACCEPTED}")
    text = spec.strip()
    low = text.lower()
    if low == "serial":
        return SerialExecutor()
    if low == "process":
        return ProcessExecutor()
    if low.startswith("process:"):
        try:
            n = int(low.split(":", 1)[1])
        except ValueError:
            n = 0
        if n < 1:
            raise ValueError(f"executor {spec!r}: N in 'process:N' must be an int >= 1; "
                             f"give {ACCEPTED}")
        return ProcessExecutor(n)
    for scheme in ("tcp://", "tls://", "dask://"):
        if low.startswith(scheme):
            rest = text[len(scheme):]
            if not rest:
                raise ValueError(f"executor {spec!r}: missing host:port after {scheme}; "
                                 f"give {ACCEPTED}")
            return DaskExecutor(("tcp://" if scheme == "dask://" else scheme) + rest)
    raise ValueError(f"unknown executor {spec!r}: give {ACCEPTED}")


def worker_blas_threads(_: Any = None) -> int:
    """BLAS threads in the calling process (a diagnostic to run on workers)."""
    from threadpoolctl import threadpool_info

    return max((info["num_threads"] for info in threadpool_info()
                if info.get("user_api") == "blas"), default=0)
