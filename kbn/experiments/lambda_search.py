"""Chapter 3, Tables 3-4: coarse-to-fine search of lambda (over :mod:`kbn.search`).

lambda is chosen on VALIDATION accuracy (the original chose on test). The chosen lambda
is then retrained on FRESH seeds (none of them a search trial: the winner of 16 trials is
an optimistic draw), together with the original's lambda on the same seeds, so both test
accuracies come with a spread and the original's lambda is compared like for like.
Entry point: ``run(Parameters(...))``; later chapters read the chosen lambda with
:func:`chosen_lambda`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd

from .. import plots
from ..config import NetworkConfig, SearchConfig, TrainConfig
from ..search import SearchResult, lambda_search
from . import recipe
from .chapter import ChapterOutput, Stopwatch
from .display import run_note
from .parameters import ParameterError, TrainingParameters, check_seeds
from .reference import NOT_RECORDED, REFERENCE
from .results import read_results
from .stats import compare, format_pm, mean_std
from .trainings import Trainings

DEPENDS_ON: tuple[str, ...] = ()  # reads no other chapter's results
REFERENCE_NOTE = NOT_RECORDED["search_range"]
NAME = "lambda_search"  # names the results the initialisation chapter reads lambda from


@dataclass(frozen=True)
class Parameters(TrainingParameters):
    """The parameters cell of notebooks/03_lambda_search.ipynb (and the recipe's fields;
    lambda is what is searched)."""

    hidden: list[int] = (50, 50)  # the 3-layer network
    batch_norm: bool = True
    coarse_range: tuple[float, float] = (-5.0, -1.0)  # log10(lambda) range of the coarse stage
    n_coarse: int = 8  # trials in the coarse stage
    n_fine: int = 8  # trials in the fine stage
    fine_halfwidth: float = 0.5  # fine stage: best coarse log10(lambda) +- this
    search_seed: int = 0  # seeds the lambda samples
    # fresh seeds for the chosen lambda and the original's (never `seed`: a search trial
    # chosen as the best of many would bias the mean upwards); smoke: the first two
    final_seeds: list[int] = (1, 2, 3, 4, 5)
    seed: int = 0  # training seed of every search trial

    def check(self) -> None:
        super().check()
        check_seeds("final_seeds", self.final_seeds)
        if self.seed in self.final_seeds:
            raise ParameterError(
                f"parameter final_seeds={list(self.final_seeds)!r} contains seed={self.seed}, the "
                f"seed of every search trial: the confirmation must use fresh seeds")
        if not self.hidden or min(self.hidden) < 1:
            raise ParameterError(f"parameter hidden={list(self.hidden)!r}: give positive widths")
        self.search_config()

    def search_config(self, **changes: Any) -> SearchConfig:
        names = {"coarse_range": "coarse_range", "n_coarse": "n_coarse", "n_fine": "n_fine",
                 "fine_halfwidth": "fine_halfwidth", "seed": "search_seed"}
        try:
            return SearchConfig(**{k: getattr(self, p) for k, p in names.items()}).replace(**changes)
        except ValueError as exc:  # "SearchConfig.n_coarse=0: ..."
            field = str(exc).split("=", 1)[0].rsplit(".", 1)[-1]
            raise ParameterError(f"parameter {names.get(field, field)}: {exc}") from None


def run(params: Parameters) -> ChapterOutput:
    """The search (smoke: 3 + 2 trials), then the chosen lambda over the final seeds."""
    clock = Stopwatch()
    final_seeds = list(params.final_seeds)
    search_cfg = params.search_config()
    if params.smoke:
        search_cfg = search_cfg.replace(n_coarse=min(params.n_coarse, 3),
                                        n_fine=min(params.n_fine, 2))
        final_seeds = final_seeds[:2]
    net_cfg = NetworkConfig(hidden=tuple(params.hidden), batch_norm=params.batch_norm)
    train_cfg = params.train_config(seed=params.seed)
    spec = recipe.data_spec(params.data_dir, params.smoke)
    data = spec.load()
    trainings = Trainings(spec, params.executor, params.cache, params.progress)
    search = lambda_search(net_cfg, train_cfg, spec, search_cfg, run=trainings.run)
    trials = trials_table(search)
    best = search.best
    confirmed = confirm(trainings, net_cfg, train_cfg,
                        {"chosen": best.lam, "original": REFERENCE["best_lambda"]}, final_seeds)
    final = confirmed[confirmed["lambda_of"] == "chosen"].reset_index(drop=True)
    at_ref = confirmed[confirmed["lambda_of"] == "original"].reset_index(drop=True)
    values = {**key_values(search, trials, final, at_ref),
              "run_note": run_note(params.smoke, len(data.train.y), clock(),
                                   f"{len(trials)} trials + {len(confirmed)} runs on fresh seeds",
                                   smoke_detail="3 + 2 trials and two fresh seeds")}
    figures = {"fig_accuracy_vs_lambda": plots.accuracy_vs_lambda(
        trials, chosen_lambda=best.lam, reference_lambda=REFERENCE["best_lambda"])}
    tables = {"coarse": stage_table(trials, "coarse"), "fine": stage_table(trials, "fine"),
              "final": final_table(confirmed)}
    out = ChapterOutput(NAME, params, values, tables, figures,
                        {"data": recipe.data_summary(data), "network_config": net_cfg,
                         "train_config": train_cfg, "search_config": search_cfg,
                         "best": {"lambda": best.lam, "stage": best.stage,
                                  "val_accuracy": values["best_val"],
                                  "test_accuracy": values["best_test"]},
                         "final": confirmed, "trials": trials},
                        trainings, clock())
    out.save()
    return out


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


def confirm(trainings: Trainings, net_cfg: NetworkConfig, train_cfg: TrainConfig,
            lambdas: dict[str, float], seeds: Iterable[int]) -> pd.DataFrame:
    """Test accuracy of each of ``lambdas`` ({label: lambda}) over ``seeds``: one row per
    (label, seed), column lambda_of = label, accuracies in %. Every run is new (none is a
    search trial), and the runs of one seed share its mini-batches, so they train as one
    stack."""
    specs = [({"lambda_of": label}, net_cfg, train_cfg.replace(lam=float(lam), seed=int(s)))
             for s in seeds for label, lam in lambdas.items()]
    runs, _ = trainings.grid(specs, desc="fresh seeds")
    return runs.sort_values(["lambda_of", "seed"]).reset_index(drop=True)


def final_table(confirmed: pd.DataFrame) -> pd.DataFrame:
    """The confirmation runs for display: which lambda, its value, seed, accuracies (%)."""
    return pd.DataFrame({
        "λ": ["chosen (ours)" if v == "chosen" else "the original's" for v in confirmed["lambda_of"]],
        "value": [f"{v:.3e}" for v in confirmed["lam"]],
        "seed": confirmed["seed"].astype(int),
        "val. accuracy (%)": [f"{v:.2f}" for v in confirmed["val_accuracy"]],
        "test accuracy (%)": [f"{v:.2f}" for v in confirmed["test_accuracy"]],
    })


def chosen_lambda(folder, fallback: float, smoke: bool) -> tuple[float, str]:
    """(lambda, where it came from): the best lambda the lambda-search chapter wrote into
    ``folder``, if it ran in the same mode (smoke or full); else ``fallback``. The second
    value is a phrase for the book, naming the file or saying why the fallback is used."""
    path = Path(folder) / f"{NAME}.json"
    saved = read_results(folder, NAME)
    if not saved or not saved.get("best", {}).get("lambda"):
        return float(fallback), f"the default λ (no λ-search results in {path})"
    if bool(saved.get("smoke")) != bool(smoke):
        mode = "a smoke run" if saved.get("smoke") else "a full run"
        return float(fallback), f"the default λ (the λ search in {path} is {mode})"
    smoke_note = ", a smoke run" if smoke else ""
    return float(saved["best"]["lambda"]), f"chosen on validation by the λ search ({path}{smoke_note})"



def key_values(search: SearchResult, trials: pd.DataFrame, final: pd.DataFrame,
               at_ref: pd.DataFrame | None = None) -> dict[str, Any]:
    """The numbers and sentences the chapter and the summary page glue: the chosen lambda
    and its accuracies, the test accuracy over fresh seeds beside the original's (at our
    lambda and at the original's), the best coarse trial, the spread of the trials, where
    the original's lambda falls, and whether choosing on test would have picked another."""
    best = search.best
    stats = mean_std(final.assign(group=0), ["group"]).iloc[0]
    n = int(stats["n"])
    ranges = search_range(search)
    ref_lam, ref_test = REFERENCE["best_lambda"], REFERENCE["best_lambda_test"]
    lo, hi = ranges.get("fine_range", ranges["coarse_range"])
    inside = lo <= math.log10(ref_lam) <= hi
    c = compare(stats["mean"], ref_test, stats["std"], n, f"our {n} fresh seeds")
    by_test = trials.loc[trials["test_accuracy"].idxmax()]
    coarse = trials[trials["stage"] == "coarse"]
    best_coarse = coarse.loc[coarse["val_accuracy"].idxmax()]
    # one search trial against the original's one: the noise of one run at the chosen lambda
    cc = compare(best_coarse["test_accuracy"], REFERENCE["coarse_best_test"], stats["std"], 1,
                 f"our {n} fresh seeds (one run's spread)", dof=n - 1)
    finite = trials["test_accuracy"].dropna()
    values = {
        "best_lambda": best.lam, "best_log10_lambda": math.log10(best.lam),
        "best_stage": best.stage,
        "best_val": 100 * best.result.val_accuracy, "best_test": 100 * best.result.test_accuracy,
        "final_test_mean": stats["mean"],
        "final_test_pm": format_pm(stats["mean"], stats["std"], n),
        "final_spread": (f"± {stats['std']:.2f} over {n} fresh seeds" if n >= 2
                         else "1 run (spread not measured)"),
        "n_final_seeds": n, "final_seeds_text": ", ".join(str(int(x)) for x in final["seed"]),
        "final_test_text": (f"{stats['mean']:.2f} ± {stats['std']:.2f} % (mean ± std over {n} fresh seeds)"
                            if n >= 2 else f"{stats['mean']:.2f} % (one run)"),
        "search_trial_bias": 100 * best.result.test_accuracy - stats["mean"],
        "best_lambda_ref": ref_lam, "best_lambda_log10_ratio": math.log10(best.lam / ref_lam),
        "best_lambda_verdict": (
            f"the original's λ lies {'inside' if inside else 'outside'} our fine-search range "
            f"10^[{lo:.2f}, {hi:.2f}]; ours is {best.lam / ref_lam:.2f} × the original's"),
        "best_lambda_test_ours": c["ours"], "best_lambda_test_ref": c["ref"],
        "best_lambda_test_diff": c["diff"], "best_lambda_test_verdict": c["verdict"],
        "coarse_best_lambda_ours": float(best_coarse["lambda"]),
        "coarse_best_lambda_ref": REFERENCE["coarse_best_lambda"],
        "coarse_best_lambda_log10_ratio": math.log10(float(best_coarse["lambda"]) / REFERENCE["coarse_best_lambda"]),
        "coarse_best_lambda_verdict": (
            f"ours is {float(best_coarse['lambda']) / REFERENCE['coarse_best_lambda']:.2f} × the "
            f"original's; one trial each, ours chosen on validation, the original's on test"),
        "coarse_best_test_ours": cc["ours"], "coarse_best_test_ref": cc["ref"],
        "coarse_best_test_diff": cc["diff"], "coarse_best_test_verdict": cc["verdict"],
        "n_trials_ours": len(trials), "n_trials_ref": REFERENCE["search_n_trials"],
        "trials_test_min": float(finite.min()) if len(finite) else float("nan"),
        "trials_test_max": float(finite.max()) if len(finite) else float("nan"),
        "trials_range_ref": "not recorded",
        "trials_range_note": REFERENCE_NOTE,
        "coarse_lo": ranges["coarse_range"][0], "coarse_hi": ranges["coarse_range"][1],
        "fine_lo": lo, "fine_hi": hi,
        "n_coarse": int((trials["stage"] == "coarse").sum()),
        "n_fine": int((trials["stage"] == "fine").sum()),
        "val_test_best_differ": (
            "the same trial also has the best test accuracy" if bool(by_test["chosen"]) else
            f"the trial with the best test accuracy is another one: choosing on test, as the "
            f"original did, would have picked λ = {by_test['lambda']:.2e}"),
    }
    values["n_trials_note"] = (f"ours: {values['n_coarse']} coarse + {values['n_fine']} fine, "
                               f"one seed each; "
                               + ("as many as the original's" if len(trials) == REFERENCE["search_n_trials"]
                                  else "not as many as the original's"))
    values["trials_range_text"] = (f"{values['trials_test_min']:.2f}–{values['trials_test_max']:.2f} %"
                                   f" over our {len(trials)} trials")
    if at_ref is not None and len(at_ref):
        r = mean_std(at_ref.assign(group=0), ["group"]).iloc[0]
        k = int(r["n"])
        cr = compare(r["mean"], ref_test, r["std"], k, f"our {k} fresh seeds at the original's λ")
        values.update({
            "at_ref_lambda_test_ours": cr["ours"], "at_ref_lambda_test_ref": cr["ref"],
            "at_ref_lambda_test_diff": cr["diff"], "at_ref_lambda_test_verdict": cr["verdict"],
            "at_ref_lambda_spread": (f"± {r['std']:.2f} over {k} fresh seeds" if k >= 2
                                     else "1 run (spread not measured)"),
            "at_ref_lambda_text": format_pm(r["mean"], r["std"], k) + " %",
        })
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
