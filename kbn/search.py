"""Coarse-to-fine random search of the L2 weight lambda, selected on validation accuracy."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from .config import NetworkConfig, SearchConfig, TrainConfig
from .runs import DataSpec, TrialSpec, run_trials
from .trainer import Result, fit


@dataclass
class Trial:
    stage: str  # "coarse" or "fine"
    lam: float
    result: Result

    def row(self) -> dict:
        r = self.result
        return {"stage": self.stage, "lambda": self.lam, "log10_lambda": float(np.log10(self.lam)),
                "val_accuracy": r.val_accuracy, "test_accuracy": r.test_accuracy,
                "diverged": r.diverged}


@dataclass
class SearchResult:
    config: SearchConfig
    trials: list[Trial]  # every trial, coarse then fine, in the order they were drawn
    best: Trial  # highest validation accuracy over all trials (test never used to choose)

    def rows(self) -> list[dict]:
        return [t.row() for t in self.trials]


def sample_lambdas(rng: np.random.Generator, log10_range: tuple[float, float], n: int) -> np.ndarray:
    """n values of lambda, log-uniform: lambda = 10**u, u ~ U(lo, hi)."""
    lo, hi = log10_range
    return 10.0 ** rng.uniform(lo, hi, size=n)


def best_trial(trials: list[Trial]) -> Trial:
    """The trial with the highest validation accuracy; diverged trials never win."""
    ok = [t for t in trials if not t.result.diverged]
    if not ok:
        raise RuntimeError("every trial diverged: lower eta_max or narrow the lambda range")
    return max(ok, key=lambda t: t.result.val_accuracy)


def fine_range(best_lam: float, cfg: SearchConfig) -> tuple[float, float]:
    """log10 range of the fine stage: the best coarse lambda +- fine_halfwidth decades."""
    c = float(np.log10(best_lam))
    return (c - cfg.fine_halfwidth, c + cfg.fine_halfwidth)


def lambda_search(network_config: NetworkConfig, train_config: TrainConfig, data,
                  search_config: SearchConfig = SearchConfig(), progress: bool = False,
                  run: Callable[..., Result] | None = None, executor=None,
                  cache=None) -> SearchResult:
    """Coarse stage over ``coarse_range``, then a fine stage around the best coarse lambda.

    Each trial trains ``train_config`` with its own lambda (same training seed, so trials
    differ only in lambda). The best lambda is the one with the highest *validation*
    accuracy; test accuracy is recorded but never used to choose.

    data: a :class:`kbn.runs.DataSpec` (each stage's trials then run as one batch through
        :func:`kbn.runs.run_trials`: in parallel on ``executor``, and ``cache``d), or
        loaded data (a ``kbn.data.CIFAR10`` or any object with train/val/test splits),
        trained one trial after another in this process.
    executor, cache: see :func:`kbn.runs.run_trials` (DataSpec only). An executor made
        here from a string or None serves both stages, then is closed.
    run: the trainer called for each trial with loaded data, ``run(network_config,
        train_config, data, progress=..., desc=...)`` (default :func:`kbn.trainer.fit`;
        tests inject a stand-in). Given with a DataSpec, the data are loaded here and the
        trials run serially through it.
    """
    spec_data = isinstance(data, DataSpec)
    if spec_data and run is not None:
        data, spec_data = data.load(), False
    if not spec_data and (executor is not None or cache is not None):
        raise ValueError("executor= and cache= need the data as a kbn.runs.DataSpec (which "
                         "workers can load and a cache key can name), not loaded arrays")
    n_val = data.n_val if spec_data else len(data.val.y)
    if n_val == 0:
        raise ValueError("the lambda search chooses on validation accuracy: load data with n_val > 0")
    rng = np.random.default_rng(search_config.seed)
    trials: list[Trial] = []

    def serial_stage(stage: str, lams: np.ndarray) -> list[Result]:
        out = []
        for i, lam in enumerate(lams, start=1):
            desc = f"{stage} {i}/{len(lams)} lambda={lam:.2e}"
            out.append((run or fit)(network_config, train_config.replace(lam=float(lam)), data,
                                    progress=progress, desc=desc))
        return out

    def batch_stage(stage: str, lams: np.ndarray, ex) -> list[Result]:
        specs = [TrialSpec(network_config, train_config.replace(lam=float(lam)), data,
                           label=f"{stage} {i}/{len(lams)} lambda={lam:.2e}")
                 for i, lam in enumerate(lams, start=1)]
        return run_trials(specs, executor=ex, cache=cache, progress=progress,
                          desc=f"{stage} stage")

    def search(run_stage) -> SearchResult:
        def stage(name: str, lams: np.ndarray) -> None:
            for lam, result in zip(lams, run_stage(name, lams)):
                trials.append(Trial(name, float(lam), result))

        stage("coarse", sample_lambdas(rng, search_config.coarse_range, search_config.n_coarse))
        if search_config.n_fine:
            lo_hi = fine_range(best_trial(trials).lam, search_config)
            stage("fine", sample_lambdas(rng, lo_hi, search_config.n_fine))
        return SearchResult(search_config, trials, best_trial(trials))

    if not spec_data:
        return search(serial_stage)
    from .executors import Executor, get_executor

    ex = get_executor(executor, n_trials=max(search_config.n_coarse, search_config.n_fine))
    try:
        return search(lambda name, lams: batch_stage(name, lams, ex))
    finally:
        if not isinstance(executor, Executor):
            ex.close()
