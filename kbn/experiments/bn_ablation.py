"""Chapter 2, Table 2 and Figures 1-2: the same networks with and without BN, over seeds.

Entry point: ``run(Parameters(...))``.
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
from .chapter import ChapterOutput, Stopwatch
from .display import percent_table, run_note
from .parameters import ParameterError, TrainingParameters, check_architectures, check_seeds
from .reference import REFERENCE
from .stats import compare, difference_of_means, format_pm, mean_std
from .trainings import Trainings

ARCHITECTURES = {"3-layer": (50, 50), "9-layer": (50, 30, 20, 10, 10, 10, 10, 10)}
DEPENDS_ON: tuple[str, ...] = ()  # reads no other chapter's results


@dataclass(frozen=True)
class Parameters(TrainingParameters):
    """The parameters cell of notebooks/02_bn_ablation.ipynb (and the recipe's fields)."""

    seeds: list[int] = (0, 1, 2)  # one training run per seed and configuration
    # name -> hidden widths; every network is trained with and without BN
    architectures: dict[str, list[int]] = field(default_factory=lambda: dict(ARCHITECTURES))
    lam: float = 0.005  # L2 weight

    def check(self) -> None:
        super().check()
        check_seeds("seeds", self.seeds)
        check_architectures("architectures", self.architectures)
        if self.lam < 0:
            raise ParameterError(f"parameter lam={self.lam}: must be >= 0")


def run(params: Parameters) -> ChapterOutput:
    """Every architecture with and without BN, for every seed (smoke: the first seed)."""
    clock = Stopwatch()
    seeds = list(params.seeds[:1] if params.smoke else params.seeds)
    archs = dict(params.architectures)
    train_cfg = params.train_config(lam=params.lam)
    spec = recipe.data_spec(params.data_dir, params.smoke)
    data = spec.load()
    trainings = Trainings(spec, params.executor, params.cache, params.progress)
    runs, results = run_ablation(trainings, archs, seeds, train_cfg)
    summary = summarise(runs)
    figures = {"fig_lr_schedule": plots.lr_schedule(train_cfg)}
    for arch, hidden in archs.items():
        figures[f"fig_curves_{arch}"] = plots.training_curves(
            histories(runs, results, arch), title=f"{arch} {list(hidden)}")
    values = {**key_values(summary, archs, seeds),
              "evals_per_cycle": train_cfg.evals_per_cycle,
              "run_note": run_note(params.smoke, len(data.train.y), clock(),
                                   f"seeds {', '.join(map(str, seeds))}")}
    tables = {"recipe": recipe.recipe_table(train_cfg, data), "ablation": display_table(summary),
              "runs": percent_table(runs)}
    out = ChapterOutput("bn_ablation", params, values, tables, figures,
                        {"data": recipe.data_summary(data), "train_config": train_cfg,
                         "architectures": archs, "seeds": seeds, "runs": runs,
                         "summary": summary},
                        trainings, clock())
    out.save()
    return out


def bn_label(batch_norm: bool) -> str:
    return "BN" if batch_norm else "no BN"


def specs(architectures: Mapping[str, Sequence[int]], seeds: Iterable[int],
          train_cfg: TrainConfig, batch_norm: Sequence[bool] = (False, True),
          **network_kwargs):
    """(labels, NetworkConfig, TrainConfig) for every architecture x BN x seed."""
    seeds = list(seeds)
    for name, hidden in architectures.items():
        for bn in batch_norm:
            net = NetworkConfig(hidden=tuple(hidden), batch_norm=bn, **network_kwargs)
            for seed in seeds:
                yield ({"architecture": name, "n_layers": net.n_layers, "batch_norm": bn},
                       net, train_cfg.replace(seed=int(seed)))


def run_ablation(trainings: Trainings, architectures: Mapping[str, Sequence[int]],
                 seeds: Iterable[int], train_cfg: TrainConfig) -> tuple[pd.DataFrame, list[Result]]:
    """Train every architecture with and without BN for every seed.

    Returns (runs, results) as :meth:`kbn.experiments.trainings.Trainings.grid`: one row
    per run (architecture, n_layers, batch_norm, seed, lam, test_accuracy, val_accuracy in
    %, wall_time, diverged) and the Results in order.
    """
    return trainings.grid(specs(architectures, seeds, train_cfg), desc="BN ablation")


def summarise(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean and std of the test accuracy per (architecture, BN), with the original's value."""
    s = mean_std(runs, ["architecture", "n_layers", "batch_norm"])
    s["reference"] = [REFERENCE.get(reference_key(k, bn), float("nan"))
                      for k, bn in zip(s["n_layers"], s["batch_norm"])]
    return s


def reference_key(n_layers: int, batch_norm: bool) -> str:
    return f"ablation_{n_layers}_{'bn' if batch_norm else 'nobn'}"


def bn_gain(summary: pd.DataFrame, architecture: str) -> dict[str, Any]:
    """BN minus no-BN mean test accuracy for one architecture, and whether it exceeds
    run-to-run noise (Welch's t at 95 %, :func:`kbn.experiments.stats.difference_of_means`)."""
    a = summary[summary["architecture"] == architecture].set_index("batch_norm")
    bn, no = a.loc[True], a.loc[False]
    d = difference_of_means(bn["mean"], bn["std"], int(bn["n"]), no["mean"], no["std"], int(no["n"]))
    if d["beyond_noise"] is None:
        verdict = "run-to-run noise not measured (a single seed)"
    else:
        verdict = (f"{'larger' if d['beyond_noise'] else 'not larger'} than run-to-run noise "
                   f"(95 % threshold {d['threshold']:.2f} points, Welch's t over the seeds)")
    return {"gain": d["diff"], "std_error": d["std_error"], "threshold": d["threshold"],
            "beyond_noise": d["beyond_noise"], "verdict": verdict}


def comparisons(summary: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """:func:`kbn.experiments.stats.compare` for every row that has a reference value."""
    out = {}
    for _, r in summary.iterrows():
        key = reference_key(r["n_layers"], r["batch_norm"])
        if key in REFERENCE:
            out[key] = compare(r["mean"], REFERENCE[key], r["std"], int(r["n"]),
                               f"our {int(r['n'])} seeds")
    return out


def display_table(summary: pd.DataFrame) -> pd.DataFrame:
    """Table 2: one row per architecture; ours (mean ± std over seeds) beside the original."""
    rows = []
    for arch, a in summary.groupby("architecture", sort=False):
        row = {"network": arch}
        for bn in (False, True):
            r = a[a["batch_norm"] == bn]
            if r.empty:
                continue
            r = r.iloc[0]
            label = bn_label(bn)
            row[f"{label}: ours (%)"] = format_pm(r["mean"], r["std"], int(r["n"]))
            row[f"{label}: original (%)"] = f"{r['reference']:.2f}" if np.isfinite(r["reference"]) else "–"
        if {True, False} <= set(a["batch_norm"]):
            row["BN gain (points)"] = f"{bn_gain(summary, arch)['gain']:+.2f}"
        rows.append(row)
    return pd.DataFrame(rows)


def histories(runs: pd.DataFrame, results: Sequence[Result], architecture: str) -> dict[str, list[dict]]:
    """{'no BN': [history per seed], 'BN': [...]} for one architecture, for the curve plots."""
    out: dict[str, list[dict]] = {}
    for i, r in runs.reset_index(drop=True).iterrows():
        if r["architecture"] == architecture:
            out.setdefault(bn_label(bool(r["batch_norm"])), []).append(results[i].history)
    return out


def key_values(summary: pd.DataFrame, architectures: Mapping[str, Sequence[int]],
               seeds: Sequence[int]) -> dict[str, Any]:
    """The numbers and sentences the chapter and the summary page glue.

    Per reference cell (``ablation_<k>_<bn|nobn>``): _ours, _ref, _diff, _verdict, _std,
    _spread; per depth k: gain_<k> (BN - no BN), its verdict, and (if the original has both
    cells) gain_<k>_ref and gain_<k>_diff; depth_verdict if depths 3 and 9 were run.
    """
    values: dict[str, Any] = {"n_seeds": len(seeds), "seeds_text": ", ".join(map(str, seeds))}
    for key, c in comparisons(summary).items():
        values.update({f"{key}_ours": c["ours"], f"{key}_ref": c["ref"], f"{key}_diff": c["diff"],
                       f"{key}_verdict": c["verdict"]})
    for _, r in summary.iterrows():
        key = reference_key(r["n_layers"], r["batch_norm"])
        values[f"{key}_std"] = r["std"] if r["n"] >= 2 else float("nan")
        values[f"{key}_spread"] = (f"± {r['std']:.2f} over {int(r['n'])} seeds" if r["n"] >= 2
                                   else "1 run (spread not measured)")
    gains = {}
    for arch, hidden in architectures.items():
        k = len(hidden) + 1
        g = gains[k] = bn_gain(summary, arch)
        values[f"gain_{k}"], values[f"gain_{k}_verdict"] = g["gain"], g["verdict"]
        if f"ablation_{k}_bn" in REFERENCE and f"ablation_{k}_nobn" in REFERENCE:
            values[f"gain_{k}_ref"] = REFERENCE[f"ablation_{k}_bn"] - REFERENCE[f"ablation_{k}_nobn"]
            values[f"gain_{k}_diff"] = g["gain"] - values[f"gain_{k}_ref"]
    if {3, 9} <= set(gains):
        values["depth_verdict"] = depth_verdict(summary, gains[3], gains[9])
    return values


def depth_verdict(summary: pd.DataFrame, gain3: Mapping[str, Any], gain9: Mapping[str, Any]) -> str:
    """A sentence: does BN matter more for the 9-layer than for the 3-layer network?"""
    larger = gain9["gain"] > gain3["gain"]
    if larger and gain9["beyond_noise"]:
        text = "BN matters more for the deeper network, as the original report found"
    elif larger and gain9["beyond_noise"] is False:
        text = ("the gain is larger for the deeper network, as in the original, but with this "
                "many seeds it is not beyond run-to-run noise")
    elif larger:
        text = "the gain is larger for the deeper network, as in the original (a single seed)"
    else:
        text = "this run does not show BN mattering more for the deeper network"
    nine = summary[summary["n_layers"] == 9].set_index("batch_norm")
    if {True, False} <= set(nine.index) and (nine["n"] >= 2).all():
        s_bn, s_no = float(nine.loc[True, "std"]), float(nine.loc[False, "std"])
        if s_bn < s_no:
            text += (f"; BN does make the deep network much less dependent on the seed (std "
                     f"{s_bn:.2f} points with BN, {s_no:.2f} without)" if s_bn < s_no / 2 else
                     f"; with BN the deep network's result varies less from seed to seed (std "
                     f"{s_bn:.2f} against {s_no:.2f} points)")
    return text
