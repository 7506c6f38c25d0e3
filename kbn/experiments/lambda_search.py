"""Tables 3-4: coarse-to-fine search of lambda (a thin wrapper over :mod:`kbn.search`).

lambda is chosen on VALIDATION accuracy (the original chose on test). The chosen lambda
is then retrained with a few more seeds, so its test accuracy comes with a spread.
"""

from __future__ import annotations

from typing import Any, Iterable

import math

import numpy as np
import pandas as pd

from ..config import NetworkConfig, SearchConfig, TrainConfig
from ..search import SearchResult, lambda_search
from ..trainer import Result
from .common import read_results, run_grid
from .reference import REFERENCE
from .tables import compare, format_pm, mean_std

RESULTS_NAME = "03_lambda_search"  # the JSON the sigma notebook reads the chosen lambda from


def run_search(data, net_cfg: NetworkConfig, train_cfg: TrainConfig,
               search_cfg: SearchConfig, progress: bool = False, executor=None,
               cache=None) -> SearchResult:
    """:func:`kbn.search.lambda_search`. With ``data`` a
    :class:`kbn.runs.DataSpec`, each stage's trials run as one batch on ``executor``
    (None: env KBN_EXECUTOR, else one process per core), reused from ``cache`` if given."""
    return lambda_search(net_cfg, train_cfg, data, search_cfg, progress=progress,
                         executor=executor, cache=cache)


def trials_table(search: SearchResult) -> pd.DataFrame:
    """One row per trial in the order drawn: stage, trial (1-based within its stage),
    lambda, log10_lambda, val_accuracy and test_accuracy (%), diverged, chosen."""
    rows, counts = [], {}
    for t in search.trials:
        counts[t.stage] = counts.get(t.stage, 0) + 1
        row = t.row()
        rows.append({"stage": t.stage, "trial": counts[t.stage], "lambda": row["lambda"],
                     "log10_lambda": row["log10_lambda"],
                     "val_accuracy": 100 * row["val_accuracy"],
                     "test_accuracy": 100 * row["test_accuracy"],
                     "diverged": row["diverged"], "chosen": t is search.best})
    return pd.DataFrame(rows)


def stage_table(trials: pd.DataFrame, stage: str) -> pd.DataFrame:
    """Tables 3 (coarse) and 4 (fine) for display: the stage's trials sorted by lambda."""
    t = trials[trials["stage"] == stage].sort_values("lambda")
    return pd.DataFrame({
        "lambda": [f"{v:.3e}" for v in t["lambda"]],
        "log10 lambda": [f"{v:.2f}" for v in t["log10_lambda"]],
        "val. accuracy (%)": [f"{v:.2f}" for v in t["val_accuracy"]],
        "test accuracy (%)": [f"{v:.2f}" for v in t["test_accuracy"]],
        "chosen (best val.)": np.where(t["chosen"], "✓", ""),
    }).reset_index(drop=True)


def search_range(search: SearchResult) -> dict[str, Any]:
    """log10 ranges of both stages (fine: best coarse lambda +- fine_halfwidth)."""
    from ..search import best_trial, fine_range

    coarse = [t for t in search.trials if t.stage == "coarse"]
    out = {"coarse_range": list(search.config.coarse_range)}
    if any(t.stage == "fine" for t in search.trials):
        out["fine_range"] = list(fine_range(best_trial(coarse).lam, search.config))
    return out


def confirm(data, net_cfg: NetworkConfig, train_cfg: TrainConfig, lam: float,
            seeds: Iterable[int], best_result: Result | None = None,
            progress: bool = False, executor=None, cache=None) -> pd.DataFrame:
    """Test accuracy of ``lam`` over ``seeds`` (one row per seed, %). The search trial
    itself (``best_result``, trained with train_cfg.seed) is reused, not retrained."""
    seeds = [int(s) for s in seeds]
    rows = []
    if best_result is not None and train_cfg.seed in seeds:
        rows.append({"seed": train_cfg.seed, "lam": lam,
                     "test_accuracy": 100 * best_result.test_accuracy,
                     "val_accuracy": 100 * best_result.val_accuracy,
                     "wall_time": best_result.wall_time, "diverged": best_result.diverged})
        seeds = [s for s in seeds if s != train_cfg.seed]
    specs = [({}, net_cfg, train_cfg.replace(lam=float(lam), seed=s)) for s in seeds]
    runs, _ = run_grid(specs, data, progress, executor, cache)
    return pd.concat([pd.DataFrame(rows), runs], ignore_index=True).sort_values("seed") \
             .reset_index(drop=True)


def chosen_lambda(results_dir, fallback: float) -> tuple[float, str]:
    """(lambda, where it came from): the best lambda written by the lambda-search notebook
    into ``results_dir``, else ``fallback``."""
    saved = read_results(results_dir, RESULTS_NAME)
    if saved and saved.get("best", {}).get("lambda"):
        smoke = " (a smoke run)" if saved.get("smoke") else ""
        return float(saved["best"]["lambda"]), f"chosen on validation by the λ search{smoke}"
    return float(fallback), "the default (no λ-search results found)"


def stage_bounds(trials: pd.DataFrame, stage: str) -> tuple[float, float]:
    t = trials[trials["stage"] == stage]["lambda"]
    return float(t.min()), float(t.max())



def key_values(search: SearchResult, trials: pd.DataFrame, final: pd.DataFrame) -> dict[str, Any]:
    """The numbers and sentences the chapter and the summary page glue: the chosen lambda
    and its accuracies, the test accuracy over the final seeds beside the original's, where
    the original's lambda falls, and whether choosing on test would have picked another."""
    best = search.best
    stats = mean_std(final.assign(group=0), ["group"]).iloc[0]
    n = int(stats["n"])
    ranges = search_range(search)
    ref_lam, ref_test = REFERENCE["best_lambda"], REFERENCE["best_lambda_test"]
    lo, hi = ranges.get("fine_range", ranges["coarse_range"])
    inside = lo <= math.log10(ref_lam) <= hi
    c = compare(stats["mean"], ref_test, stats["std"], n, f"our {n} seeds")
    by_test = trials.loc[trials["test_accuracy"].idxmax()]
    values = {
        "best_lambda": best.lam, "best_log10_lambda": math.log10(best.lam),
        "best_stage": best.stage,
        "best_val": 100 * best.result.val_accuracy, "best_test": 100 * best.result.test_accuracy,
        "final_test_mean": stats["mean"],
        "final_test_pm": format_pm(stats["mean"], stats["std"], n),
        "final_spread": (f"± {stats['std']:.2f} over {n} seeds" if n >= 2
                         else "1 run (spread not measured)"),
        "n_final_seeds": len(final),
        "final_test_text": (f"{stats['mean']:.2f} ± {stats['std']:.2f} % (mean ± std over {n} seeds)"
                            if n >= 2 else f"{stats['mean']:.2f} % (one run)"),
        "best_lambda_ref": ref_lam, "best_lambda_log10_ratio": math.log10(best.lam / ref_lam),
        "best_lambda_verdict": (
            f"the original's λ lies {'inside' if inside else 'outside'} our fine-search range "
            f"10^[{lo:.2f}, {hi:.2f}]; ours is {best.lam / ref_lam:.2f} × the original's"),
        "best_lambda_test_ours": c["ours"], "best_lambda_test_ref": c["ref"],
        "best_lambda_test_diff": c["diff"], "best_lambda_test_verdict": c["verdict"],
        "coarse_lo": ranges["coarse_range"][0], "coarse_hi": ranges["coarse_range"][1],
        "fine_lo": lo, "fine_hi": hi,
        "n_coarse": int((trials["stage"] == "coarse").sum()),
        "n_fine": int((trials["stage"] == "fine").sum()),
        "val_test_best_differ": (
            "the same trial also has the best test accuracy" if bool(by_test["chosen"]) else
            f"the trial with the best test accuracy is another one: choosing on test, as the "
            f"original did, would have picked λ = {by_test['lambda']:.2e}"),
    }
    fine_val = trials[trials["stage"] == "fine"]["val_accuracy"]
    if len(fine_val) >= 2 and n >= 2:
        span, sd = float(fine_val.max() - fine_val.min()), float(stats["std"])
        values["flatness_note"] = (
            f"The fine-stage validation accuracies span {span:.2f} points, against a run-to-run "
            f"std of {sd:.2f} at the chosen λ: " + (
                "within that range of λ the differences between trials are comparable to the "
                "noise, so one seed per trial does not pin the best λ down sharply"
                if span <= 3 * sd else "the accuracy depends on λ clearly beyond the noise"))
    else:
        values["flatness_note"] = ("Too few fine trials or seeds in this run to compare the "
                                   "spread over λ with the noise")
    return values
