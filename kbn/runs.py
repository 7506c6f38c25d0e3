"""Independent training runs as data: specs that cross process boundaries, run anywhere, cache.

Typical use::

    from kbn.runs import DataSpec, TrialSpec, run_trials
    data = DataSpec()                                   # CIFAR-10, 45k/5k/10k, float32
    specs = [TrialSpec(NetworkConfig(), TrainConfig(seed=s), data) for s in range(3)]
    results = run_trials(specs, executor="process", cache="book/_build/cache")

* :class:`DataSpec` says which data to load; it (a few fields), not the arrays, is sent to
  worker processes, and each process loads the data once and reuses it for every trial
  it runs (:meth:`DataSpec.load` is memoised per process).
* :class:`TrialSpec` is one training run: network config, train config, data spec. Its
  :meth:`~TrialSpec.key` hashes everything the result depends on.
* :func:`run_trials` returns the Results in the order of the specs: cached ones straight
  from the cache, the others trained through an executor (:mod:`kbn.executors`: serial, a
  local process pool, or a Dask cluster), each written to the cache the moment it
  finishes, so a killed run loses no finished trial. Trials that can share a mini-batch
  stream (:mod:`kbn.stacking`) train side by side in one task,
  :func:`kbn.trainer.fit_stack`, which gives each the numbers it gets alone.

Every trial seeds itself from ``TrainConfig.seed``; the executor, the number of workers
and the stacks it is trained in do not change its numbers.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from . import __version__
from .config import NetworkConfig, TrainConfig
from .recorder import RecorderConfig
from .trainer import Result, fit, fit_stack

__all__ = ["DataSpec", "TrialSpec", "code_fingerprint", "run_stack", "run_trial", "run_trials"]

log = logging.getLogger(__name__)

# The modules a training runs, found by following kbn's own imports (at any depth, also
# those inside functions) from these roots: the trainer and the data loader. Their bytes
# enter every cache key, so any change to the code that computes a trial re-trains instead
# of serving stale results (the version number alone does not change while the code is
# being worked on); presentation code (plots, report, experiments) is not among them.
TRAINING_ROOTS = ("trainer", "data")


def training_modules(package: Path | None = None) -> list[str]:
    """File names (sorted) of the kbn modules that :data:`TRAINING_ROOTS` import,
    transitively: what a training runs. Read from the source, not from ``sys.modules``."""
    import ast

    package = Path(__file__).resolve().parent if package is None else Path(package)
    seen: set[str] = set()
    todo = list(TRAINING_ROOTS)
    while todo:
        name = todo.pop()
        if name in seen or not (package / f"{name}.py").is_file():
            continue
        seen.add(name)
        tree = ast.parse((package / f"{name}.py").read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                if node.level == 1:  # from .x import y / from . import x
                    todo += [node.module.split(".")[0]] if node.module else \
                        [a.name for a in node.names]
                elif node.level == 0 and (node.module or "").startswith("kbn."):
                    todo.append(node.module.split(".")[1])
            elif isinstance(node, ast.Import):
                todo += [a.name.split(".")[1] for a in node.names if a.name.startswith("kbn.")]
    return sorted(f"{n}.py" for n in seen)


def _source_fingerprint(package: Path | None = None) -> str:
    package = Path(__file__).resolve().parent if package is None else Path(package)
    h = hashlib.sha256(__version__.encode())
    for name in training_modules(package):
        h.update(name.encode() + b"\0")
        h.update((package / name).read_bytes())
    return h.hexdigest()


# Taken when kbn is imported (kbn/__init__ imports this module with the numerical ones),
# so it describes the code this process runs, even if the files are edited afterwards.
_FINGERPRINT = _source_fingerprint()


def code_fingerprint() -> str:
    """sha256 (hex) of kbn's version and the source of the modules a training runs
    (:func:`training_modules`), as they were when this process imported kbn."""
    return _FINGERPRINT


# --------------------------------------------------------------------------- data


@dataclass(frozen=True)
class DataSpec:
    """Which CIFAR-10 split to train on: the arguments of :func:`kbn.data.load_cifar10`.

    ``data_dir``: None resolves in the process that loads the data, through
    ``load_cifar10``'s usual order (``KBN_DATA_DIR``, the cache folder, a download).
    ``expected_md5``: {file: md5} when the files are not the official ones (tests); stored
    as a sorted tuple of pairs so the spec stays hashable.
    """

    data_dir: str | None = None
    n_val: int = 5000
    subset: int | None = None
    dtype: str = "float32"
    expected_md5: tuple[tuple[str, str], ...] | None = None

    def __post_init__(self):
        if self.data_dir is not None:
            object.__setattr__(self, "data_dir", os.fspath(self.data_dir))
        if isinstance(self.expected_md5, Mapping):
            object.__setattr__(self, "expected_md5", tuple(sorted(self.expected_md5.items())))
        elif self.expected_md5 is not None:
            object.__setattr__(self, "expected_md5", tuple(sorted(map(tuple, self.expected_md5))))
        import numpy as np

        object.__setattr__(self, "dtype", np.dtype(self.dtype).name)
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"DataSpec.dtype={self.dtype!r}: must be 'float32' or 'float64'")
        if isinstance(self.n_val, bool) or not isinstance(self.n_val, int) or self.n_val < 0:
            raise ValueError(f"DataSpec.n_val={self.n_val!r}: must be an int >= 0")
        if self.subset is not None and (isinstance(self.subset, bool)
                                        or not isinstance(self.subset, int) or self.subset < 1):
            raise ValueError(f"DataSpec.subset={self.subset!r}: must be None or an int >= 1")

    def key_fields(self) -> dict[str, Any]:
        """What identifies the split (not where the files are: the checksum covers them)."""
        return {"n_val": self.n_val, "subset": self.subset, "dtype": self.dtype}

    def folder(self) -> Path:
        """The data folder, located (and downloaded if needed) as ``load_cifar10`` would."""
        from .data import locate_cifar10

        return locate_cifar10(self.data_dir, download=True, progress=False)

    def resolved(self) -> "DataSpec":
        """A copy whose data_dir is the folder located in this process (this machine)."""
        return dataclasses.replace(self, data_dir=str(self.folder()))

    def checksum(self) -> str:
        """The data files' checksum, equal to ``self.load().checksum``, without loading.

        md5 over the md5 of every file (memoised per file size and modification time).
        """
        from .data import ALL_FILES

        folder = self.folder()
        stamp = []
        for name in ALL_FILES:
            try:
                st = (folder / name).stat()
            except OSError:
                self.load()  # raises load_cifar10's own, explanatory DataError
                raise
            stamp.append((name, st.st_size, st.st_mtime_ns))
        return _checksum(str(folder), tuple(stamp))

    def load(self):
        """The loaded :class:`kbn.data.CIFAR10`, memoised in this process (the 2 latest)."""
        folder = str(self.folder())
        memo_key = dataclasses.replace(self, data_dir=folder)  # None and the folder: same data
        with _DATA_LOCK:  # Dask workers may run several trials in threads
            data = _DATA.get(memo_key)
            if data is None:
                from .data import load_cifar10

                data = load_cifar10(folder, n_val=self.n_val, dtype=self.dtype,
                                    subset=self.subset, progress=False,
                                    expected_md5=dict(self.expected_md5) if self.expected_md5 else None)
                _DATA[memo_key] = data
                while len(_DATA) > _DATA_KEEP:
                    _DATA.popitem(last=False)
            _DATA.move_to_end(memo_key)
            return data


_DATA: "OrderedDict[tuple, Any]" = OrderedDict()
_DATA_KEEP = 2
_DATA_LOCK = threading.Lock()


def clear_data_cache() -> None:
    """Forget the datasets :meth:`DataSpec.load` keeps in this process."""
    with _DATA_LOCK:
        _DATA.clear()


@functools.lru_cache(maxsize=16)
def _checksum(folder: str, stamp: tuple) -> str:
    from .data import ALL_FILES

    md5s = {}
    for name in ALL_FILES:
        h = hashlib.md5()
        with open(Path(folder) / name, "rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                h.update(block)
        md5s[name] = h.hexdigest()
    # the formula of kbn.data.load_cifar10 (CIFAR10.checksum)
    return hashlib.md5("".join(f"{n}:{md5s[n]}\n" for n in ALL_FILES).encode()).hexdigest()


# --------------------------------------------------------------------------- trials


@dataclass(frozen=True)
class TrialSpec:
    """One training run. ``label`` only names it in progress bars (not part of the key).
    ``record``: a :class:`kbn.recorder.RecorderConfig` to record inside the network while
    it trains (into ``Result.recording``, cached with it; part of the key), or None."""

    network: NetworkConfig
    train: TrainConfig
    data: DataSpec = DataSpec()
    label: str | None = field(default=None, compare=False)
    record: RecorderConfig | None = None

    def __post_init__(self):
        if not isinstance(self.network, NetworkConfig) or not isinstance(self.train, TrainConfig):
            raise TypeError("TrialSpec(network=NetworkConfig(...), train=TrainConfig(...), "
                            "data=DataSpec(...))")
        if self.record is not None and not isinstance(self.record, RecorderConfig):
            raise TypeError(f"TrialSpec.record must be None or a kbn.recorder.RecorderConfig, "
                            f"got {type(self.record).__name__}")
        if not isinstance(self.data, DataSpec):
            raise TypeError(f"TrialSpec.data must be a kbn.runs.DataSpec, got "
                            f"{type(self.data).__name__}: loaded data cannot be sent to "
                            "workers or cached; describe it with DataSpec(...) instead")

    def describe(self) -> str:
        return self.label or (f"{self.network.describe()} lam={self.train.lam:.2e} "
                              f"seed={self.train.seed}")

    def key_fields(self, data_checksum: str) -> dict[str, Any]:
        """Everything the result depends on, as plain JSON values."""
        return {
            "network": self.network.to_dict(),
            "train": self.train.to_dict(),
            "data": self.data.key_fields(),
            "data_checksum": data_checksum,
            "kbn_version": __version__,
            "code": code_fingerprint(),
            # only when recording, so the keys of unrecorded trials stay as they were
            **({} if self.record is None else {"record": self.record.to_dict()}),
        }

    def key(self, data_checksum: str) -> str:
        """sha256 (hex) of the canonical JSON of :meth:`key_fields`."""
        text = json.dumps(self.key_fields(data_checksum), sort_keys=True,
                          separators=(",", ":"), allow_nan=False)
        return hashlib.sha256(text.encode()).hexdigest()


def run_trial(spec: TrialSpec, progress: bool = False, keep_network: bool = False) -> Result:
    """Train one spec in this process (data loaded once per process) and return its Result.

    ``keep_network``: keep the trained weights in ``Result.network`` (default: drop them,
    as a cached Result cannot have them; use :func:`kbn.trainer.fit` for the weights).
    """
    result = fit(spec.network, spec.train, spec.data.load(), progress=progress,
                 desc=spec.describe(), recorder=spec.record)
    if not keep_network:
        result.network = None
    return result


def run_stack(specs: Sequence[TrialSpec], progress: bool = False) -> list[Result]:
    """Train stackable specs side by side in this process (:func:`kbn.trainer.fit_stack`);
    their Results, without weights, in order. They must share their DataSpec."""
    data = {s.data for s in specs}
    if len(data) != 1:
        raise ValueError("the trials of a stack train on the same data (one DataSpec)")
    desc = specs[0].describe() if len(specs) == 1 else f"{specs[0].network.describe()} x {len(specs)}"
    results = fit_stack([s.network for s in specs], [s.train for s in specs],
                        specs[0].data.load(), progress=progress, desc=desc,
                        recorders=[s.record for s in specs])
    for r in results:
        r.network = None
    return results


def _run_in_worker(specs: Sequence[TrialSpec], progress: bool,
                   fingerprint: str | None) -> list[Result]:
    """What executors run, one stack per call: refuse a worker whose kbn would not give
    the keyed numbers."""
    if fingerprint is not None and code_fingerprint() != fingerprint:
        raise RuntimeError(
            f"this worker runs different kbn code ({__version__}, fingerprint "
            f"{code_fingerprint()[:12]}) from the process that sent the trial (fingerprint "
            f"{fingerprint[:12]}), so its result would not match the cache key. The kbn "
            "source was edited since that process imported kbn (restart it), or the "
            "workers have another kbn installed (install the same one everywhere).")
    return run_stack(specs, progress=progress)


def _as_cache(cache):
    from .cache import ResultCache

    if cache is None or cache is False:
        return None
    if cache is True:
        return ResultCache()
    if isinstance(cache, ResultCache):
        return cache
    if isinstance(cache, (str, os.PathLike)):
        return ResultCache(cache)
    raise TypeError(f"cache must be None, True, a folder or a kbn.cache.ResultCache, got {cache!r}")


def run_trials(specs: Iterable[TrialSpec], executor=None, cache=None, progress: bool = True,
               desc: str = "trials", stack: bool = True) -> list[Result]:
    """Results of ``specs``, in the same order; cached ones are not trained again.

    executor: an :class:`kbn.executors.Executor`, a string (``"serial"``, ``"process"``,
        ``"process:N"``, ``"tcp://host:port"`` / ``"dask://host:port"``) or None (env
        ``KBN_EXECUTOR`` / ``KBN_DASK_SCHEDULER``, else a process pool when there are
        several trials and several cores); see :func:`kbn.executors.get_executor`. An
        executor passed in stays open (reuse it across calls); one made here is closed.
    cache: a :class:`kbn.cache.ResultCache`, a folder, True (the default folder) or None
        (no cache). Each finished trial is stored the moment it finishes.
    progress: a bar over trials; in serial mode also a bar per training.
    stack: train trials that share a mini-batch stream side by side (:mod:`kbn.stacking`;
        the same numbers, faster); False trains every trial on its own.

    The returned Results have no weights (``network`` is None), wherever they came from.
    Identical specs are trained once. A trial that raises stops the batch (the trials
    already finished are in the cache).
    """
    from .executors import Executor, get_executor

    specs = list(specs)
    for s in specs:
        if not isinstance(s, TrialSpec):
            raise TypeError(f"run_trials takes TrialSpecs, got {type(s).__name__}")
    cache = _as_cache(cache)
    n = len(specs)
    results: list[Result | None] = [None] * n
    keys: list[str | None] = [None] * n

    if cache is not None:
        checksums: dict[DataSpec, str] = {}
        for i, s in enumerate(specs):
            if s.data not in checksums:
                checksums[s.data] = s.data.checksum()
            keys[i] = s.key(checksums[s.data])
            results[i] = cache.get(keys[i])

    # one training per distinct spec (label aside) among the misses
    groups: dict[tuple, list[int]] = {}
    for i, s in enumerate(specs):
        if results[i] is None:
            groups.setdefault((s.network, s.train, s.data, s.record), []).append(i)
    members = list(groups.values())  # members[j]: the specs trial j answers; j's spec: [0]
    n_cached = n - sum(map(len, members))

    t0 = time.perf_counter()
    if members:
        from .stacking import plan_stacks, stack_cost

        owned = not isinstance(executor, Executor)
        trials = [specs[m[0]] for m in members]
        # trials that share a mini-batch stream (and their data) train as one stack
        by_data: dict[DataSpec, list[int]] = {}
        for j, s in enumerate(trials):
            by_data.setdefault(s.data, []).append(j)
        slots = _slots(executor)
        stacks = []
        for js in by_data.values():
            if stack:
                plan = plan_stacks([(trials[j].network, trials[j].train) for j in js], slots)
                stacks += [[js[i] for i in members_] for members_ in plan]
            else:
                stacks += [[j] for j in js]
        # costliest first (longest-processing-time order): the pool's last tasks are short
        stacks.sort(key=lambda st: -stack_cost(trials[st[0]].network, trials[st[0]].train, len(st)))
        ex = get_executor(executor, n_trials=len(stacks))
        try:
            run_specs = trials
            if ex.local:  # locate (or download) the data once, here, not in every worker
                resolved = {s.data: s.data.resolved() for s in run_specs}
                run_specs = [dataclasses.replace(s, data=resolved[s.data]) for s in run_specs]
            fn = functools.partial(_run_in_worker, progress=progress and ex.in_process,
                                   fingerprint=None if ex.in_process else code_fingerprint())
            bar = _trials_bar(progress, n, n_cached, desc, ex)
            try:
                tasks = [[run_specs[j] for j in stack] for stack in stacks]
                for t, stack_results in ex.map_unordered(fn, tasks):
                    for j, result in zip(stacks[t], stack_results):
                        first = members[j][0]
                        if cache is not None:  # now: a kill a moment later loses nothing
                            cache.put(keys[first], result,
                                      specs[first].key_fields(checksums[specs[first].data]))
                        for i in members[j]:
                            results[i] = result
                        if bar is not None:
                            bar.update(len(members[j]))
            finally:
                if bar is not None:
                    bar.close()
        finally:
            if owned:
                ex.close()
    log.info("%d trials: %d from the cache, %d trained in %.1f s", n, n_cached, len(members),
             time.perf_counter() - t0)
    return results  # type: ignore[return-value]


def _slots(executor) -> int:
    """How many stacks can run at once on ``executor`` (as :func:`run_trials` takes it),
    so that a group of stackable trials is cut into at least that many stacks."""
    from .executors import EXECUTOR_ENV, SCHEDULER_ENV, Executor, available_cores

    if isinstance(executor, Executor):
        return executor.slots
    spec = executor or os.environ.get(EXECUTOR_ENV) or os.environ.get(SCHEDULER_ENV) or "process"
    spec = str(spec).strip().lower()
    if spec == "serial":
        return 1
    if spec.startswith("process:") and spec[8:].isdigit():
        return max(1, int(spec[8:]))
    return available_cores()  # a process pool, or a cluster of unknown size


def _trials_bar(enabled: bool, total: int, done: int, desc: str, executor):
    if not enabled:
        return None
    try:
        from tqdm import tqdm  # console bar, as in kbn.trainer
    except ImportError:
        return None
    return tqdm(total=total, initial=done, desc=f"{desc} ({executor.describe()})",
                unit="trial", mininterval=0.5)
