"""Chapter 2, Table 2 and Figures 1-2: the same networks with and without BN, over seeds.

Entry point: ``run(Parameters(...))``.
"""

from __future__ import annotations

import math
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
from .stats import (compare, compare_difference, difference_of_means, format_ci, format_pm,
                    gain_verdict, mean_std, seeds_to_resolve, t975)
from .trainings import Trainings

ARCHITECTURES = {"3-layer": (50, 50), "9-layer": (50, 30, 20, 10, 10, 10, 10, 10)}
DEPENDS_ON: tuple[str, ...] = ()  # reads no other chapter's results


@dataclass(frozen=True)
class Parameters(TrainingParameters):
    """The parameters cell of notebooks/02_bn_ablation.ipynb (and the recipe's fields)."""

    seeds: list[int] = (0, 1, 2, 3, 4)  # one training run per seed and configuration
    # name -> hidden widths; every network is trained with and without BN
    architectures: dict[str, list[int]] = field(default_factory=lambda: dict(ARCHITECTURES))
    # name -> more seeds for that network WITHOUT BN, whose run-to-run spread is the
    # largest (9-layer: +-3.4 points over 3 seeds), so its BN gain gets a usable interval;
    # names not in architectures and seeds already in seeds are skipped
    extra_seeds_nobn: dict[str, list[int]] = field(
        default_factory=lambda: {"9-layer": (5, 6, 7, 8, 9)})
    lam: float = 0.005  # L2 weight

    def check(self) -> None:
        super().check()
        check_seeds("seeds", self.seeds)
        check_architectures("architectures", self.architectures)
        for name, extra in self.extra_seeds_nobn.items():
            if extra:
                check_seeds(f"extra_seeds_nobn[{name!r}]", extra)
        if self.lam < 0:
            raise ParameterError(f"parameter lam={self.lam}: must be >= 0")


def run(params: Parameters) -> ChapterOutput:
    """Every architecture with and without BN, for every seed, and the extra no-BN seeds
    (smoke: the first two seeds and the first extra one, so every interval is computed)."""
    clock = Stopwatch()
    seeds = list(params.seeds[:2] if params.smoke else params.seeds)
    archs = dict(params.architectures)
    extra = {k: [s for s in v if s not in seeds][:1 if params.smoke else None]
             for k, v in params.extra_seeds_nobn.items() if k in archs}
    train_cfg = params.train_config(lam=params.lam)
    spec = recipe.data_spec(params.data_dir, params.smoke)
    data = spec.load()
    trainings = Trainings(spec, params.executor, params.cache, params.progress)
    runs, results = run_ablation(trainings, archs, seeds, train_cfg, extra)
    summary = summarise(runs)
    figures = {"fig_lr_schedule": plots.lr_schedule(train_cfg)}
    for arch, hidden in archs.items():
        figures[f"fig_curves_{arch}"] = plots.training_curves(
            histories(runs, results, arch), title=f"{arch} {list(hidden)}")
    values = {**key_values(summary, archs, seeds, extra),
              "evals_per_cycle": train_cfg.evals_per_cycle,
              "run_note": run_note(params.smoke, len(data.train.y), clock(),
                                   f"seeds {', '.join(map(str, seeds))}",
                                   smoke_detail="a short schedule and two seeds")}
    tables = {"recipe": recipe.recipe_table(train_cfg, data), "ablation": display_table(summary),
              "runs": percent_table(runs)}
    out = ChapterOutput("bn_ablation", params, values, tables, figures,
                        {"data": recipe.data_summary(data), "train_config": train_cfg,
                         "architectures": archs, "seeds": seeds, "extra_seeds_nobn": extra,
                         "runs": runs,
                         "summary": summary},
                        trainings, clock())
    out.save()
    return out


def bn_label(batch_norm: bool) -> str:
    return "BN" if batch_norm else "no BN"


def specs(architectures: Mapping[str, Sequence[int]], seeds: Iterable[int],
          train_cfg: TrainConfig, batch_norm: Sequence[bool] = (False, True),
          extra_seeds_nobn: Mapping[str, Sequence[int]] | None = None, **network_kwargs):
    """(labels, NetworkConfig, TrainConfig) for every architecture x BN x seed, plus the
    extra seeds of ``extra_seeds_nobn[architecture]`` without BN."""
    seeds = list(seeds)
    extra = extra_seeds_nobn or {}
    for name, hidden in architectures.items():
        for bn in batch_norm:
            net = NetworkConfig(hidden=tuple(hidden), batch_norm=bn, **network_kwargs)
            for seed in seeds + ([] if bn else list(extra.get(name, ()))):
                yield ({"architecture": name, "n_layers": net.n_layers, "batch_norm": bn},
                       net, train_cfg.replace(seed=int(seed)))


def run_ablation(trainings: Trainings, architectures: Mapping[str, Sequence[int]],
                 seeds: Iterable[int], train_cfg: TrainConfig,
                 extra_seeds_nobn: Mapping[str, Sequence[int]] | None = None
                 ) -> tuple[pd.DataFrame, list[Result]]:
    """Train every architecture with and without BN for every seed (and without BN for
    the extra seeds).

    Returns (runs, results) as :meth:`kbn.experiments.trainings.Trainings.grid`: one row
    per run (architecture, n_layers, batch_norm, seed, lam, test_accuracy, val_accuracy in
    %, wall_time, diverged) and the Results in order.
    """
    return trainings.grid(specs(architectures, seeds, train_cfg,
                                extra_seeds_nobn=extra_seeds_nobn), desc="BN ablation")


def summarise(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean and std of the test accuracy per (architecture, BN), with the original's value."""
    s = mean_std(runs, ["architecture", "n_layers", "batch_norm"])
    s["reference"] = [REFERENCE.get(reference_key(k, bn), float("nan"))
                      for k, bn in zip(s["n_layers"], s["batch_norm"])]
    return s


def reference_key(n_layers: int, batch_norm: bool) -> str:
    return f"ablation_{n_layers}_{'bn' if batch_norm else 'nobn'}"


def bn_gain(summary: pd.DataFrame, architecture: str) -> dict[str, Any]:
    """BN minus no-BN mean test accuracy for one architecture with its 95 % confidence
    interval (Welch, :func:`kbn.experiments.stats.difference_of_means`), a verdict saying
    whether its sign is resolved, and how many seeds per group would resolve it if not."""
    a = summary[summary["architecture"] == architecture].set_index("batch_norm")
    bn, no = a.loc[True], a.loc[False]
    d = difference_of_means(bn["mean"], bn["std"], int(bn["n"]), no["mean"], no["std"], int(no["n"]))
    verdict = gain_verdict(d, "the gain")
    if d["beyond_noise"] is False:
        need = seeds_to_resolve(d["diff"], float(bn["std"]), float(no["std"]))
        verdict += (f"; if the true gain were {d['diff']:+.2f} points, about {need} seeds per "
                    f"group would resolve it" if need else "")
    return {"gain": d["diff"], "std_error": d["std_error"], "threshold": d["threshold"],
            "ci_low": d["ci_low"], "ci_high": d["ci_high"], "ci": format_ci(d["ci_low"], d["ci_high"]),
            "beyond_noise": d["beyond_noise"], "verdict": verdict, "dof": d["dof"],
            "n_bn": int(bn["n"]), "n_nobn": int(no["n"])}


def depth_drop(summary: pd.DataFrame, shallow: str = "3-layer", deep: str = "9-layer",
               batch_norm: bool = False) -> dict[str, Any]:
    """Relative drop of the mean test accuracy from ``shallow`` to ``deep`` (%, of the
    shallow net's), with a 95 % interval: Welch's interval of the difference divided by the
    shallow mean (its own uncertainty, a fraction of a point out of ~50, is neglected)."""
    s = summary[summary["batch_norm"] == batch_norm].set_index("architecture")
    a, b = s.loc[shallow], s.loc[deep]
    d = difference_of_means(a["mean"], a["std"], int(a["n"]), b["mean"], b["std"], int(b["n"]))
    scale = 100.0 / float(a["mean"])
    return {"drop": d["diff"] * scale, "ci_low": d["ci_low"] * scale,
            "ci_high": d["ci_high"] * scale, "ci": format_ci(d["ci_low"] * scale, d["ci_high"] * scale)}


def inside(value: float, low: float, high: float) -> str:
    """'inside' / 'outside' / 'not comparable' (unknown interval) for verdict sentences."""
    if not (np.isfinite(low) and np.isfinite(high)):
        return "not comparable (interval not measured)"
    return "inside" if low <= value <= high else "outside"


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
            row[f"{label}: ours (%)"] = format_pm(r["mean"], r["std"], int(r["n"])) + f" (n = {int(r['n'])})"
            row[f"{label}: original (%)"] = f"{r['reference']:.2f}" if np.isfinite(r["reference"]) else "–"
        if {True, False} <= set(a["batch_norm"]):
            g = bn_gain(summary, arch)
            row["BN gain (points)"] = f"{g['gain']:+.2f}"
            row["95 % interval (Welch)"] = g["ci"]
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
               seeds: Sequence[int], extra_seeds_nobn: Mapping[str, Sequence[int]] | None = None
               ) -> dict[str, Any]:
    """The numbers and sentences the chapter and the summary page glue.

    Per reference cell (``ablation_<k>_<bn|nobn>``): _ours, _ref, _diff, _verdict, _std,
    _spread; per depth k: gain_<k> (BN - no BN), its verdict, and (if the original has both
    cells) gain_<k>_ref and gain_<k>_diff; depth_verdict if depths 3 and 9 were run; the
    original text's claims (text_*) beside ours.
    """
    extra = {k: list(v) for k, v in (extra_seeds_nobn or {}).items() if v}
    values: dict[str, Any] = {
        "n_seeds": len(seeds), "seeds_text": ", ".join(map(str, seeds)),
        "extra_seeds_text": ("; ".join(f"{k} without BN also seeds {', '.join(map(str, v))}"
                                       for k, v in extra.items()) or "no extra seeds")}
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
        values[f"gain_{k}_ci"] = g["ci"]
        values[f"gain_{k}_ci_low"], values[f"gain_{k}_ci_high"] = g["ci_low"], g["ci_high"]
        values[f"gain_{k}_seeds"] = f"{g['n_bn']} seeds with BN, {g['n_nobn']} without"
        if f"ablation_{k}_bn" in REFERENCE and f"ablation_{k}_nobn" in REFERENCE:
            ref = REFERENCE[f"ablation_{k}_bn"] - REFERENCE[f"ablation_{k}_nobn"]
            a = summary[summary["architecture"] == arch].set_index("batch_norm")
            c = compare_difference(a.loc[True, "mean"], a.loc[True, "std"], int(a.loc[True, "n"]),
                                   a.loc[False, "mean"], a.loc[False, "std"], int(a.loc[False, "n"]),
                                   ref)
            values[f"gain_{k}_ref"], values[f"gain_{k}_diff"] = ref, c["diff"]
            values[f"gain_{k}_ref_verdict"] = c["verdict"]
    if {3, 9} <= set(gains):
        values["depth_verdict"] = depth_verdict(summary, gains[3], gains[9])
        values.update(text_claims(summary, gains[3]))
    return values


def text_claims(summary: pd.DataFrame, gain3: Mapping[str, Any]) -> dict[str, Any]:
    """The original's two sentences on Table 2 beside ours: without BN the accuracy
    "decreased by 17 %" from 3 to 9 layers, and BN gains the 3-layer net "nearly 1 %"."""
    drop = depth_drop(summary, "3-layer", "9-layer", batch_norm=False)
    ref_drop = REFERENCE["text_depth_drop_nobn_pct"]
    table_drop = 100 * (REFERENCE["ablation_3_nobn"] - REFERENCE["ablation_9_nobn"]) / REFERENCE["ablation_3_nobn"]
    ref_gain, table_gain = REFERENCE["text_gain_3"], REFERENCE["ablation_3_bn"] - REFERENCE["ablation_3_nobn"]
    lo, hi = gain3["ci_low"], gain3["ci_high"]
    return {
        "text_drop_ours": drop["drop"], "text_drop_ref": ref_drop, "text_drop_ci": drop["ci"],
        "text_drop_diff": drop["drop"] - ref_drop, "text_drop_table": table_drop,
        "text_drop_verdict": (f"the original's {ref_drop:.0f} % lies {inside(ref_drop, drop['ci_low'], drop['ci_high'])} "
                              f"our 95 % interval {drop['ci']} %"),
        "text_gain_ours": gain3["gain"], "text_gain_ref": ref_gain, "text_gain_ci": gain3["ci"],
        "text_gain_diff": gain3["gain"] - ref_gain, "text_gain_table": table_gain,
        "text_gain_verdict": (f"the text's {ref_gain:.0f} point lies {inside(ref_gain, lo, hi)} our 95 % "
                              f"interval {gain3['ci']}; the {table_gain:.2f} of the original's own "
                              f"Table 2 lies {inside(table_gain, lo, hi)} it"),
    }


def depth_verdict(summary: pd.DataFrame, gain3: Mapping[str, Any], gain9: Mapping[str, Any]) -> str:
    """A sentence: does BN matter more for the 9-layer than for the 3-layer network? The
    difference of the two gains gets a 95 % interval (their standard errors combined, t at
    the smaller of the two Welch dofs: on the wide side)."""
    diff = gain9["gain"] - gain3["gain"]
    se = math.hypot(gain3["std_error"], gain9["std_error"])
    half = t975(min(gain3.get("dof", float("nan")), gain9.get("dof", float("nan")))) * se
    if not np.isfinite(half):
        text = (f"the gain is {'larger' if diff > 0 else 'not larger'} for the deeper network "
                f"(by {diff:+.2f} points; not resolved: too few seeds for an interval)")
    elif abs(diff) > half:
        text = (f"BN matters {'more' if diff > 0 else 'less'} for the deeper network, "
                f"resolved: the 9-layer gain exceeds the 3-layer one by {diff:+.2f} points, 95 % "
                f"interval {format_ci(diff - half, diff + half)}")
    else:
        text = (f"the 9-layer gain exceeds the 3-layer one by {diff:+.2f} points, but that is "
                f"not resolved: its 95 % interval {format_ci(diff - half, diff + half)} includes zero")
    nine = summary[summary["n_layers"] == 9].set_index("batch_norm")
    if {True, False} <= set(nine.index) and (nine["n"] >= 2).all():
        s_bn, s_no = float(nine.loc[True, "std"]), float(nine.loc[False, "std"])
        if s_bn < s_no:
            text += (f"; BN does make the deep network much less dependent on the seed (std "
                     f"{s_bn:.2f} points with BN, {s_no:.2f} without)" if s_bn < s_no / 2 else
                     f"; with BN the deep network's result varies less from seed to seed (std "
                     f"{s_bn:.2f} against {s_no:.2f} points)")
    return text
