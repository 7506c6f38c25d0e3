"""Table 5 and Figure 3: sensitivity to the initial weight scale, with and without BN.

sigma: every weight of every layer drawn from N(0, sigma^2), as in the original; plus
He (N(0, 2/fan_in)) and Xavier (N(0, 1/fan_in)) rows, and the same grid for the 9-layer
network. Taken literally, sigma = 0.1 in every layer of the 9-layer net without BN does
not train (chance, 10 %): the original's 44 % for that net cannot have come from it.

Entry point: ``run(Parameters(...))``. It reads the lambda chosen by the lambda search
and the run-to-run spread measured by the BN ablation (see DEPENDS_ON).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from .. import plots
from ..config import NetworkConfig, TrainConfig
from ..trainer import Result
from . import recipe
from .bn_ablation import ARCHITECTURES, bn_label
from .chapter import ChapterOutput, Stopwatch
from .display import percent_table, run_note
from .lambda_search import chosen_lambda
from .parameters import ParameterError, TrainingParameters, check_architectures, check_seeds
from .reference import REFERENCE
from .results import read_results, upstream_folder
from .stats import compare, format_pm, mean_std
from .trainings import Trainings

SIGMAS = (1e-1, 1e-3, 1e-4)
EXTRA_INITS = ("he", "xavier")
CHANCE = 10.0  # % test accuracy of a constant guess on the 10 balanced CIFAR-10 classes
# the chapters whose results this one reads: the chosen lambda, the ablation's seed spread
DEPENDS_ON: tuple[str, ...] = ("bn_ablation", "lambda_search")


@dataclass(frozen=True)
class Parameters(TrainingParameters):
    """The parameters cell of notebooks/04_sigma_sensitivity.ipynb (and the recipe's fields)."""

    seeds: list[int] = (0, 1, 2)  # one run per seed and cell of the grid (mean ± std per cell)
    # name -> hidden widths; every initialisation is tried on each, with and without BN
    architectures: dict[str, list[int]] = field(default_factory=lambda: dict(ARCHITECTURES))
    sigmas: list[float] = SIGMAS  # std of every weight, as in the original
    extra_inits: list[str] = EXTRA_INITS  # fan-in scaled initialisations, beyond the original
    lam: float | None = None  # None: the lambda chosen by the lambda-search chapter ...
    lam_fallback: float = 0.005  # ... or this if its results are missing (or of another mode)

    def check(self) -> None:
        super().check()
        check_seeds("seeds", self.seeds)
        check_architectures("architectures", self.architectures)
        if any(not s > 0 for s in self.sigmas):
            raise ParameterError(f"parameter sigmas={list(self.sigmas)!r}: every σ must be > 0")
        bad = sorted(set(self.extra_inits) - set(EXTRA_INITS))
        if bad:
            raise ParameterError(f"parameter extra_inits: unknown {bad}; choose from {list(EXTRA_INITS)}")
        if not self.sigmas and not self.extra_inits:
            raise ParameterError("parameters sigmas and extra_inits are both empty: nothing to run")
        for name in ("lam", "lam_fallback"):
            value = getattr(self, name)
            if value is not None and not value >= 0:
                raise ParameterError(f"parameter {name}={value}: must be >= 0")


def run(params: Parameters) -> ChapterOutput:
    """Every architecture x initialisation x BN x seed (smoke: the first seed) at the
    chosen lambda."""
    clock = Stopwatch()
    upstream = upstream_folder(params.results_dir)
    if params.lam is None:
        lam, lam_source = chosen_lambda(upstream, params.lam_fallback, params.smoke)
    else:
        lam, lam_source = params.lam, "set as a parameter"
    seeds = list(params.seeds[:1] if params.smoke else params.seeds)
    archs = dict(params.architectures)
    train_cfg = params.train_config(lam=lam)
    spec = recipe.data_spec(params.data_dir, params.smoke)
    data = spec.load()
    trainings = Trainings(spec, params.executor, params.cache, params.progress)
    runs, results = run_sigma_grid(trainings, archs, inits(params.sigmas, params.extra_inits),
                                   seeds, train_cfg)
    summary = summarise(runs)
    figures = {f"fig_sigma_curves_{arch}": plots.init_curves(
        histories(runs, results, arch), metric="loss",
        title=f"{arch} {list(hidden)}: loss by initialisation") for arch, hidden in archs.items()}
    # single-seed cells borrow the run-to-run spread measured in the BN-ablation chapter
    noise = ablation_noise(read_results(upstream, "bn_ablation"), smoke=params.smoke)
    values = {**key_values(summary, seeds, lam, lam_source, noise),
              "run_note": run_note(params.smoke, len(data.train.y), clock(), f"{len(runs)} runs")}
    tables = {"sigma": display_table(summary), "runs": percent_table(runs)}
    out = ChapterOutput("sigma_sensitivity", params, values, tables, figures,
                        {"data": recipe.data_summary(data), "train_config": train_cfg,
                         "lam_source": lam_source, "architectures": archs, "seeds": seeds,
                         "runs": runs, "summary": summary},
                        trainings, clock())
    out.save()
    return out


def init_label(init: str, sigma: float | None = None) -> str:
    """'σ = 1e-04', 'He', 'Xavier'."""
    if init == "sigma":
        return f"σ = {sigma:.0e}"
    return {"he": "He", "xavier": "Xavier"}[init]


def inits(sigmas: Iterable[float] = SIGMAS, extra: Iterable[str] = EXTRA_INITS) -> list[dict]:
    """NetworkConfig keyword sets: one per sigma, then He / Xavier."""
    out = [{"init": "sigma", "sigma": float(s)} for s in sigmas]
    return out + [{"init": e, "sigma": None} for e in extra]


def specs(architectures: Mapping[str, Sequence[int]], init_kwargs: Sequence[dict],
          seeds: Iterable[int], train_cfg: TrainConfig, batch_norm: Sequence[bool] = (False, True)):
    seeds = list(seeds)
    for name, hidden in architectures.items():
        for kw in init_kwargs:
            for bn in batch_norm:
                net = NetworkConfig(hidden=tuple(hidden), batch_norm=bn, **kw)
                for seed in seeds:
                    labels = {"architecture": name, "n_layers": net.n_layers,
                              "init": kw["init"], "sigma": kw["sigma"],
                              "initialisation": init_label(kw["init"], kw["sigma"]),
                              "batch_norm": bn}
                    yield labels, net, train_cfg.replace(seed=int(seed))


def run_sigma_grid(trainings: Trainings, architectures: Mapping[str, Sequence[int]],
                   init_kwargs: Sequence[dict], seeds: Iterable[int],
                   train_cfg: TrainConfig) -> tuple[pd.DataFrame, list[Result]]:
    """Train every architecture x initialisation x BN x seed at ``train_cfg.lam``.

    Returns (runs, results) as :meth:`kbn.experiments.trainings.Trainings.grid`, with
    label columns architecture, n_layers, init, sigma, initialisation, batch_norm.
    """
    return trainings.grid(specs(architectures, init_kwargs, seeds, train_cfg),
                          desc="initialisation grid")


def summarise(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean/std/n of the test accuracy per architecture x initialisation x BN."""
    return mean_std(runs, ["architecture", "n_layers", "initialisation", "init", "sigma", "batch_norm"])


def display_table(summary: pd.DataFrame) -> pd.DataFrame:
    """Table 5: one row per initialisation, one column per architecture x BN (test %)."""
    out = {}
    for _, r in summary.iterrows():
        col = f"{r['architecture']}, {bn_label(bool(r['batch_norm']))}"
        out.setdefault(r["initialisation"], {"initialisation": r["initialisation"]})[col] = \
            format_pm(r["mean"], r["std"], int(r["n"]))
    return pd.DataFrame(list(out.values()))


def cell(summary: pd.DataFrame, architecture: str, initialisation: str, batch_norm: bool) -> pd.Series:
    """The summary row of one grid cell (KeyError if the grid does not contain it)."""
    m = summary[(summary["architecture"] == architecture)
                & (summary["initialisation"] == initialisation)
                & (summary["batch_norm"] == batch_norm)]
    if m.empty:
        raise KeyError(f"no run for {architecture}, {initialisation}, BN={batch_norm}")
    return m.iloc[0]


def comparisons(summary: pd.DataFrame, architecture: str = "3-layer",
                noise: Mapping[bool, tuple[float, int]] | None = None) -> dict[str, dict[str, Any]]:
    """Our sigma = 1e-4 cells beside the original's (3-layer). ``noise`` {BN: (std, n)}
    stands in for our own spread when we ran a single seed (e.g. the spread of the same
    network over n seeds in the BN ablation, :func:`ablation_noise`)."""
    out = {}
    for bn in (False, True):
        key = f"sigma_1e-4_{'bn' if bn else 'nobn'}"
        try:
            r = cell(summary, architecture, init_label("sigma", 1e-4), bn)
        except KeyError:
            continue
        n = int(r["n"])
        if n < 2 and noise is not None and bn in noise:
            std, n_noise = noise[bn]
            out[key] = compare(r["mean"], REFERENCE[key], std, n,
                               f"{n_noise} seeds of the same network in the BN-ablation chapter",
                               dof=n_noise - 1)
        else:
            out[key] = compare(r["mean"], REFERENCE[key], r["std"], n, f"our {n} seeds")
    return out


def deep_sigma_claim(summary: pd.DataFrame, architecture: str = "9-layer") -> dict[str, Any]:
    """Can sigma = 0.1 in every layer explain the original's 9-layer no-BN accuracy?

    Returns the no-BN accuracies of sigma = 0.1, He and Xavier (%), the original value,
    ``near_chance`` (sigma = 0.1 within 2 points of 10 %) and a verdict sentence.
    """
    ref = REFERENCE["ablation_9_nobn"]
    vals = {}
    for name, lab in (("sigma01", init_label("sigma", 0.1)), ("he", "He"), ("xavier", "Xavier")):
        try:
            vals[name] = float(cell(summary, architecture, lab, False)["mean"])
        except KeyError:
            vals[name] = float("nan")
    s = vals["sigma01"]
    near_chance = bool(np.isfinite(s) and abs(s - CHANCE) <= 2.0)
    if not np.isfinite(s):
        verdict = f"σ = 0.1 was not run (or diverged) for the {architecture} net"
    elif near_chance:
        verdict = (f"σ = 0.1 in every layer leaves the {architecture} net without BN at chance "
                   f"({s:.2f} %), so it cannot have produced the original's {ref:.2f} %")
    elif abs(s - ref) > 5.0:
        verdict = (f"σ = 0.1 in every layer gives {s:.2f} % for the {architecture} net without BN, "
                   f"far from the original's {ref:.2f} %")
    else:
        verdict = (f"σ = 0.1 in every layer gives {s:.2f} % for the {architecture} net without BN, "
                   f"close to the original's {ref:.2f} %")
    return {**{f"{k}_nobn": v for k, v in vals.items()}, "reference": ref,
            "near_chance": near_chance, "verdict": verdict}


def histories(runs: pd.DataFrame, results: Sequence[Result], architecture: str) -> dict[str, dict[str, list[dict]]]:
    """{initialisation: {'no BN': [history per seed], 'BN': [...]}} for one architecture."""
    out: dict[str, dict[str, list[dict]]] = {}
    for i, r in runs.reset_index(drop=True).iterrows():
        if r["architecture"] == architecture:
            out.setdefault(r["initialisation"], {}).setdefault(
                bn_label(bool(r["batch_norm"])), []).append(results[i].history)
    return out


def ablation_noise(saved_ablation: Mapping[str, Any] | None, architecture: str = "3-layer",
                   smoke: bool = False) -> dict[bool, tuple[float, int]]:
    """{BN: (std, n seeds)} of ``architecture`` from the BN-ablation results JSON (empty if
    absent, of the other mode (smoke or full), or measured on fewer than 2 seeds)."""
    if saved_ablation is None or bool(saved_ablation.get("smoke")) != bool(smoke):
        return {}
    rows = saved_ablation.get("summary", [])
    return {bool(r["batch_norm"]): (float(r["std"]), int(r["n"])) for r in rows
            if r.get("architecture") == architecture and r.get("std") is not None
            and int(r.get("n", 0)) >= 2}


def key_values(summary: pd.DataFrame, seeds: Sequence[int], lam: float, lam_source: str,
               noise: Mapping[bool, tuple[float, int]] | None = None) -> dict[str, Any]:
    """The numbers and sentences the chapter and the summary page glue: the sigma = 1e-4
    cells beside the original's, and the 9-layer sigma = 0.1 claim."""
    n = len(seeds)
    values: dict[str, Any] = {
        "lam_used": lam, "lam_source": lam_source, "n_seeds": n,
        "seeds_note": (f"one run per cell, seed {seeds[0]}" if n == 1 else
                       f"mean ± std over {n} seeds per cell"),
    }
    for key, c in comparisons(summary, "3-layer", noise).items():
        values.update({f"{key}_ours": c["ours"], f"{key}_ref": c["ref"], f"{key}_diff": c["diff"],
                       f"{key}_verdict": c["verdict"]})
        k = int(cell(summary, "3-layer", init_label("sigma", 1e-4), key.endswith("_bn"))["n"])
        values[f"{key}_spread"] = f"{k} run" + ("s" if k > 1 else "")
    deep = deep_sigma_claim(summary, "9-layer")
    values.update({
        "deep_sigma01_nobn": deep["sigma01_nobn"], "deep_he_nobn": deep["he_nobn"],
        "deep_xavier_nobn": deep["xavier_nobn"], "deep_ref": deep["reference"],
        "deep_diff": deep["sigma01_nobn"] - deep["reference"],
        "deep_spread": f"{n} run" + ("s" if n > 1 else ""),
        "deep_verdict": deep["verdict"],
        "deep_explanation": (
            "The original's no-BN number most likely came from a fan-in scaled initialisation "
            "(ours: He or Xavier), not from the σ = 0.1 it states" if deep["near_chance"] else
            "In this run σ = 0.1 does not leave the network at chance, so the argument above "
            "is not borne out here"),
    })
    return values
