"""Coarse-to-fine random search of the L2 weight lambda, selected on validation accuracy."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from .config import NetworkConfig, SearchConfig, TrainConfig
from .runs import DataSpec, TrialSpec, run_trials
from .trainer import Result


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


def lambda_search(network_config: NetworkConfig, train_config: TrainConfig, data: DataSpec,
                  search_config: SearchConfig = SearchConfig(), progress: bool = False,
                  executor=None, cache=None,
                  run: Callable[[list[TrialSpec], str], list[Result]] | None = None,
                  stack: bool = True) -> SearchResult:
    """Coarse stage over ``coarse_range``, then a fine stage around the best coarse lambda.

    Each trial trains ``train_config`` with its own lambda (same training seed, so trials
    differ only in lambda). The best lambda is the one with the highest *validation*
    accuracy; test accuracy is recorded but never used to choose.

    data: the :class:`kbn.runs.DataSpec` every trial trains on. Each stage's trials are
        one batch of :class:`kbn.runs.TrialSpec`, trained by ``run(specs, desc)``:
        by default :func:`kbn.runs.run_trials` on ``executor`` (None: env KBN_EXECUTOR,
        else one process per core; one made here serves both stages) reusing ``cache``.
        A chapter passes its own recorder (:class:`kbn.experiments.trainings.Trainings`),
        tests a stand-in trainer.
    stack: a stage's trials share their mini-batch stream, so by default they train side
        by side (:func:`kbn.runs.run_trials`); False trains them one at a time (the same
        numbers, slower: benchmarks/bench_training.py compares the two).
    """
    if not isinstance(data, DataSpec):
        raise TypeError(f"lambda_search trains on a kbn.runs.DataSpec, got {type(data).__name__}: "
                        "describe the data with DataSpec(...) so workers can load it and the "
                        "cache can name it")
    if data.n_val == 0:
        raise ValueError("the lambda search chooses on validation accuracy: use data with n_val > 0")
    if run is not None and (executor is not None or cache is not None):
        raise ValueError("give either run= or executor=/cache= (run decides where trials train)")
    rng = np.random.default_rng(search_config.seed)
    trials: list[Trial] = []

    def search(run_stage) -> SearchResult:
        def stage(name: str, lams: np.ndarray) -> None:
            specs = [TrialSpec(network_config, train_config.replace(lam=float(lam)), data,
                               label=f"{name} {i}/{len(lams)} lambda={lam:.2e}")
                     for i, lam in enumerate(lams, start=1)]
            for lam, result in zip(lams, run_stage(specs, f"{name} stage")):
                trials.append(Trial(name, float(lam), result))

        stage("coarse", sample_lambdas(rng, search_config.coarse_range, search_config.n_coarse))
        if search_config.n_fine:
            lo_hi = fine_range(best_trial(trials).lam, search_config)
            stage("fine", sample_lambdas(rng, lo_hi, search_config.n_fine))
        return SearchResult(search_config, trials, best_trial(trials))

    if run is not None:
        return search(run)
    from .executors import Executor, get_executor

    ex = get_executor(executor, n_trials=max(search_config.n_coarse, search_config.n_fine))
    try:
        return search(lambda specs, desc: run_trials(specs, executor=ex, cache=cache,
                                                     progress=progress, desc=desc, stack=stack))
    finally:
        if not isinstance(executor, Executor):
            ex.close()
