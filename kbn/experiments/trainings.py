"""Every training a chapter runs: one path (:func:`kbn.runs.run_trials`) and one record.

A chapter makes one :class:`Trainings` for its data, executor and cache and sends every
batch of trials through it. The record gives the book its results as data: one row per
training (every config field, the final metrics, the cache key) and the histories in
long format (one row per run, evaluation point, split and metric), written as CSV.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, fields
from typing import Any, Iterable, Mapping

import pandas as pd

from ..cache import ResultCache
from ..config import NetworkConfig, TrainConfig
from ..runs import DataSpec, TrialSpec, run_trials
from ..trainer import Result

METRICS = ("cost", "loss", "accuracy")


@dataclass(frozen=True)
class Record:
    """One training as the chapter ran it."""

    spec: TrialSpec
    result: Result
    key: str  # the results-cache key (kbn.runs.TrialSpec.key): what the numbers depend on
    from_cache: bool  # served by the cache, not trained by this run


class Trainings:
    """Runs batches of :class:`kbn.runs.TrialSpec` and remembers every one.

    data: the :class:`kbn.runs.DataSpec` every trial trains on.
    executor, cache: see :func:`kbn.runs.run_trials` (cache: a folder or None).
    progress: a bar per batch and one line per finished training on stderr.
    """

    def __init__(self, data: DataSpec, executor=None, cache=None, progress: bool = True):
        self.data = data
        self.executor = executor
        self.cache = ResultCache(cache) if cache else None
        self.progress = progress
        self.records: list[Record] = []
        self.seconds = 0.0  # wall time spent in run_trials

    # ------------------------------------------------------------------ running
    def run(self, specs: Iterable[TrialSpec], desc: str = "trainings") -> list[Result]:
        """The Results of ``specs`` in order (cached ones not trained again), recorded."""
        specs = list(specs)
        keys = [s.key(s.data.checksum()) for s in specs]
        cached = [self.cache is not None and k in self.cache for k in keys]
        t0 = time.perf_counter()
        results = run_trials(specs, executor=self.executor, cache=self.cache,
                             progress=self.progress, desc=desc)
        self.seconds += time.perf_counter() - t0
        self.records += [Record(*r) for r in zip(specs, results, keys, cached)]
        if self.progress:
            log(f"{desc}: {len(specs)} trainings, {sum(cached)} from the cache, "
                f"{time.perf_counter() - t0:.0f} s")
            for s, r in zip(specs, results):
                log(f"  {s.describe()}: test {100 * r.test_accuracy:.2f} %, {r.wall_time:.1f} s")
        return results

    def grid(self, labelled: Iterable[tuple[Mapping[str, Any], NetworkConfig, TrainConfig]],
             desc: str = "trainings") -> tuple[pd.DataFrame, list[Result]]:
        """Train every (labels, network config, train config); one row per run.

        Returns (runs, results): runs has the label columns, then seed, lam,
        test_accuracy and val_accuracy (in %), wall_time (s), diverged; results[i] is the
        Result of runs row i.
        """
        labelled = list(labelled)
        specs = [TrialSpec(net, train, self.data,
                           label=f"[{i}/{len(labelled)}] {net.describe()} {_init_label(net)} "
                                 f"seed {train.seed}")
                 for i, (_, net, train) in enumerate(labelled, start=1)]
        results = self.run(specs, desc)
        rows = [{**labels, **result_row(train, r)}
                for (labels, _, train), r in zip(labelled, results)]
        return pd.DataFrame(rows), results

    # ------------------------------------------------------------------ the record
    @property
    def n_runs(self) -> int:
        return len(self.records)

    @property
    def n_cached(self) -> int:
        return sum(r.from_cache for r in self.records)

    def summary(self) -> dict[str, Any]:
        """Counts for the provenance page: runs, from the cache, trained, seconds."""
        return {"n_runs": self.n_runs, "n_cached": self.n_cached,
                "n_trained": self.n_runs - self.n_cached, "seconds": self.seconds}

    def runs_table(self, chapter: str = "") -> pd.DataFrame:
        """One row per training: chapter, run id, label, every network, training and data
        config field, the final train/validation metrics (last recorded point), test
        accuracy (fractions in [0, 1]), diverged, wall_time (s), cache_key, from_cache."""
        rows = []
        for i, rec in enumerate(self.records, start=1):
            s, r = rec.spec, rec.result
            row = {"chapter": chapter, "run": f"{chapter}:{i}", "label": s.label or ""}
            row.update(_flat(s.network, "hidden", n_layers=s.network.n_layers))
            row.update(_flat(s.train))
            row.update({f"data_{k}": v for k, v in s.data.key_fields().items()})
            for split in ("train", "val"):
                for m in METRICS:
                    values = r.history.get(f"{split}_{m}") or [float("nan")]
                    row[f"final_{split}_{m}"] = values[-1]
            row.update({"test_accuracy": r.test_accuracy, "diverged": r.diverged,
                        "diverged_at": r.diverged_at, "wall_time": r.wall_time,
                        "cache_key": rec.key, "from_cache": rec.from_cache})
            rows.append(row)
        return pd.DataFrame(rows, columns=None if rows else ["chapter", "run", "cache_key"])

    def histories_table(self, chapter: str = "") -> pd.DataFrame:
        """The histories in long format: one row per (run, evaluation point, split, metric)
        with columns chapter, run, cache_key, step, epoch, eta, split, metric, value."""
        frames = []
        for i, rec in enumerate(self.records, start=1):
            h = rec.result.history
            wide = pd.DataFrame({k: h[k] for k in ("step", "epoch", "eta")})
            for split in ("train", "val"):
                for m in METRICS:
                    frames.append(wide.assign(chapter=chapter, run=f"{chapter}:{i}",
                                              cache_key=rec.key, split=split, metric=m,
                                              value=h[f"{split}_{m}"]))
        columns = ["chapter", "run", "cache_key", "step", "epoch", "eta", "split", "metric",
                   "value"]
        if not frames:
            return pd.DataFrame(columns=columns)
        return pd.concat(frames, ignore_index=True)[columns]


def result_row(train: TrainConfig, r: Result) -> dict[str, Any]:
    """seed, lam, test and validation accuracy (%), wall time, diverged: a run's table row."""
    return {"seed": train.seed, "lam": train.lam, "test_accuracy": 100 * r.test_accuracy,
            "val_accuracy": 100 * r.val_accuracy, "wall_time": r.wall_time,
            "diverged": r.diverged}


def _flat(config, *as_json: str, **extra) -> dict[str, Any]:
    out = {}
    for f in fields(config):
        value = getattr(config, f.name)
        out[f.name] = json.dumps(list(value)) if f.name in as_json else value
    return {**out, **extra}


def _init_label(cfg: NetworkConfig) -> str:
    return f"sigma={cfg.sigma:g}" if cfg.init == "sigma" else cfg.init


def log(message: str) -> None:
    """One progress line on stderr (the console under papermill; not rendered in the book)."""
    print(message, file=sys.stderr, flush=True)

