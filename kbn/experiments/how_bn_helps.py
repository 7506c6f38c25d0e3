"""Chapter 5: what BN changes inside the network, and why it helps (beyond the original).

Six studies of the 3- and 9-layer networks, with and without BN, over seeds:

1. activations through training (Ioffe & Szegedy 2015, Fig. 1) and
2. gradient flow per layer (He, Xavier, sigma = 0.1) and
3. the optimisation landscape along the gradient (Santurkar et al. 2018, Fig. 4): all
   three from runs with a :class:`kbn.recorder.RecorderConfig`, the full recipe;
4. learning-rate tolerance: test accuracy against eta_max (one cycle);
5. BN before against after ReLU (the full recipe);
6. statistics at inference: alpha 0.8 / 0.9 / 0.99 against PreciseBN (the same trained
   weights: alpha and PreciseBN change no update, so they are variants of the recorded He
   runs with BN, TrainConfig.also_alphas / also_precise_bn, not trainings of their own),
   the train/eval-mode gap, and the batch size at an equal number of epochs (one cycle).

Every training goes through one :meth:`kbn.experiments.trainings.Trainings.run` call, so
the trainings that share a seed and an architecture (the inits, the
eta_max grid) train side by side in stacks. Entry point: ``run(Parameters(...))``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from ..config import NetworkConfig, TrainConfig
from ..recorder import RecorderConfig
from ..runs import TrialSpec
from ..trainer import Result, alpha_variant, precise_bn_variant
from . import how_bn_helps_figures as figs
from . import recipe
from .bn_ablation import ARCHITECTURES, bn_label
from .chapter import ChapterOutput, Stopwatch
from .display import percent_table, run_note
from .parameters import ParameterError, TrainingParameters, check_architectures, check_seeds
from .stats import difference_of_means, t975
from .trainings import Trainings, result_row

DEPENDS_ON: tuple[str, ...] = ()  # reads no other chapter's results
INITS = ("he", "xavier", "sigma")  # the gradient-flow study's initialisations without BN
BN_INITS = ("he", "sigma")  # ... and with BN (Xavier behaves as He there: BN rescales both)
USABLE_POINTS = 2.0  # an eta_max is "usable" within this many points of the best one
SHORT_EVALS = 2  # evaluation points per cycle of the short (final-accuracy-only) studies


@dataclass(frozen=True)
class Parameters(TrainingParameters):
    """The parameters cell of notebooks/05_how_bn_helps.ipynb (and the recipe's fields)."""

    seeds: list[int] = (0, 1, 2)  # one run per seed and configuration (smoke: the first two)
    # name -> hidden widths; every study runs on each (the batch-size study on the first)
    architectures: dict[str, list[int]] = field(default_factory=lambda: dict(ARCHITECTURES))
    lam: float = 0.005  # L2 weight of every run
    sigma: float = 0.1  # the "sigma" initialisation of the gradient-flow study: N(0, sigma^2)
    eta_max_grid: list[float] = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0)  # the learning-rate study
    short_cycles: int = 1  # cycles of the learning-rate and batch-size studies (recipe: 2)
    short_n_s: int = 1125  # their half-cycle at batch size 100 (recipe: 2250), for the budget
    alphas: list[float] = (0.8, 0.9, 0.99)  # BN moving-average weights compared at inference
    precise_bn: int = 200  # PreciseBN: training batches its statistics are averaged over
    batch_sizes: list[int] = (10, 20, 50, 100, 200)  # at the same number of epochs
    probe: int = 500  # training images the recorder computes its statistics on

    def check(self) -> None:
        super().check()
        check_seeds("seeds", self.seeds)
        check_architectures("architectures", self.architectures)
        if self.lam < 0:
            raise ParameterError(f"parameter lam={self.lam}: must be >= 0")
        if not (math.isfinite(self.sigma) and self.sigma > 0):
            raise ParameterError(f"parameter sigma={self.sigma}: must be finite and > 0")
        if not self.eta_max_grid or any(not (math.isfinite(e) and e > 0) for e in self.eta_max_grid):
            raise ParameterError(f"parameter eta_max_grid={list(self.eta_max_grid)!r}: give "
                                 "learning rates > 0, e.g. [0.01, 0.1, 1.0]")
        if min(self.eta_max_grid) < self.eta_min:
            raise ParameterError(f"parameter eta_max_grid={list(self.eta_max_grid)!r}: every "
                                 f"value must be >= eta_min={self.eta_min}")
        if not self.alphas or any(not 0 <= a < 1 for a in self.alphas):
            raise ParameterError(f"parameter alphas={list(self.alphas)!r}: give moving-average "
                                 "weights in [0, 1), e.g. [0.8, 0.9, 0.99]")
        for name in ("short_cycles", "short_n_s", "precise_bn", "probe"):
            if getattr(self, name) < 1:
                raise ParameterError(f"parameter {name}={getattr(self, name)}: must be >= 1")
        if not self.batch_sizes or min(self.batch_sizes) < 2:
            raise ParameterError(f"parameter batch_sizes={list(self.batch_sizes)!r}: give "
                                 "batch sizes >= 2 (BN needs two images), e.g. [10, 100]")


# ---------------------------------------------------------------------- the plan
@dataclass(frozen=True)
class Planned:
    """One row of a study: its labels and the training that answers it."""

    study: str
    labels: Mapping[str, Any]
    spec: TrialSpec
    variant: str | None = None  # a Result.variants key: the row's numbers are that variant's


def init_network(hidden: Sequence[int], batch_norm: bool, init: str, sigma: float,
                 **kw) -> NetworkConfig:
    return NetworkConfig(hidden=tuple(hidden), batch_norm=batch_norm, init=init,
                         sigma=sigma if init == "sigma" else None, **kw)


def init_label(init: str, sigma: float) -> str:
    return {"he": "He", "xavier": "Xavier"}.get(init, f"σ = {sigma:g}")


def plan(params: Parameters, data) -> list[Planned]:
    """Every training of the chapter, as (study, labels, TrialSpec) rows."""
    seeds = list(params.seeds[:2] if params.smoke else params.seeds)
    archs = dict(params.architectures)
    record = RecorderConfig(probe=params.probe)
    deepest = max(archs, key=lambda a: len(archs[a]))
    rows: list[Planned] = []

    def add(study, labels, net, train, rec=None, variant=None):
        rows.append(Planned(study, labels, TrialSpec(
            net, train, data, label=f"{study}: {net.describe()} {labels.get('variant', '')} "
                                    f"seed {train.seed}", record=rec), variant))

    full = {s: params.train_config(lam=params.lam, seed=int(s)) for s in seeds}
    # Study 6 needs no training of its own: alpha and PreciseBN change no update, so the
    # recorded BN runs keep their moving averages with the other alphas too and compute
    # PreciseBN at the end (TrainConfig.also_alphas / also_precise_bn, Result.variants)
    own_alpha = NetworkConfig().alpha
    variants = {"also_alphas": tuple(float(a) for a in params.alphas if a != own_alpha),
                "also_precise_bn": params.precise_bn}
    bn_full = {s: full[s].replace(**variants) for s in seeds}
    for arch, hidden in archs.items():
        for bn in (False, True):
            for init in inits_of(arch == deepest, bn):
                for s in seeds:  # studies 1-3 (and the "before ReLU" arm of study 5)
                    add("inside", {"architecture": arch, "batch_norm": bn, "init": init,
                                   "variant": init_label(init, params.sigma)},
                        init_network(hidden, bn, init, params.sigma),
                        bn_full[s] if bn else full[s], record)
        for s in seeds:
            # only its final test accuracy is compared: 2 evaluation points per cycle
            add("placement", {"architecture": arch, "placement": "after ReLU",
                              "variant": "BN after ReLU"},
                NetworkConfig(hidden=tuple(hidden), bn_after_relu=True),
                full[s].replace(evals_per_cycle=SHORT_EVALS))
            he_bn = init_network(hidden, True, "he", params.sigma)  # the recorded He run
            for alpha in params.alphas:
                add("inference", {"architecture": arch, "statistics": f"α = {alpha:g}",
                                  "variant": f"alpha {alpha:g}"},
                    he_bn, bn_full[s], record, None if alpha == own_alpha else alpha_variant(alpha))
            add("inference", {"architecture": arch, "statistics": "PreciseBN",
                              "variant": f"PreciseBN {params.precise_bn}"},
                he_bn, bn_full[s], record, precise_bn_variant(params.precise_bn))
        for bn in (False, True):
            for eta in params.eta_max_grid:
                for s in seeds:
                    add("learning rate", {"architecture": arch, "batch_norm": bn,
                                          "eta_max": float(eta), "variant": f"eta_max {eta:g}"},
                        NetworkConfig(hidden=tuple(hidden), batch_norm=bn),
                        short_config(params, s, eta_max=float(eta)))
    arch0 = next(iter(archs))
    for bn in (False, True):
        for nb in params.batch_sizes:
            for s in seeds:
                base = short_config(params, s)
                add("batch size", {"architecture": arch0, "batch_norm": bn, "n_batch": int(nb),
                                   "variant": f"batch {nb}"},
                    NetworkConfig(hidden=tuple(archs[arch0]), batch_norm=bn),
                    base.replace(n_batch=int(nb), n_s=max(1, round(base.n_s * base.n_batch / nb))),
                    record if bn else None)
    return rows


def inits_of(deepest: bool, batch_norm: bool) -> tuple[str, ...]:
    """The initialisations the inside study records: all on the deepest network, He else."""
    if not deepest:
        return ("he",)
    return BN_INITS if batch_norm else INITS


def short_config(params: Parameters, seed: int, **changes) -> TrainConfig:
    """The recipe with ``short_cycles`` cycles of half-cycle ``short_n_s`` and SHORT_EVALS
    evaluations per cycle (the studies that need only the final accuracy); smoke mode
    shortens it further."""
    cfg = params.train_config(lam=params.lam, seed=int(seed), **changes)
    if params.smoke:
        return cfg
    return cfg.replace(n_cycles=params.short_cycles, n_s=params.short_n_s,
                       evals_per_cycle=SHORT_EVALS)


# ---------------------------------------------------------------------- running
def run(params: Parameters) -> ChapterOutput:
    """All six studies; every training in one batch through run_trials."""
    clock = Stopwatch()
    spec = recipe.data_spec(params.data_dir, params.smoke)
    data = spec.load()
    trainings = Trainings(spec, params.executor, params.cache, params.progress)
    rows = plan(params, spec)
    unique: dict[TrialSpec, int] = {}
    for r in rows:
        unique.setdefault(r.spec, len(unique))
    results = trainings.run(list(unique), desc="how BN helps")
    trained = [results[unique[r.spec]] for r in rows]  # each row's training's own Result
    runs = pd.DataFrame([{"study": r.study, **r.labels, **result_row(r.spec.train, res),
                          "n_batch": r.spec.train.n_batch}
                         for r, res in zip(rows, row_results(rows, trained))])
    analysis = analyse(params, rows, trained, len(data.train.y))
    seeds = sorted({r.spec.train.seed for r in rows})
    analysis["values"]["run_note"] = run_note(
        params.smoke, len(data.train.y), clock(), f"seeds {', '.join(map(str, seeds))}",
        smoke_detail="a short schedule and two seeds")
    analysis["values"]["n_seeds"] = len(seeds)
    analysis["values"]["seeds_text"] = ", ".join(map(str, seeds))
    analysis["values"]["n_trainings"] = len(unique)
    tables = {**analysis["tables"], "runs": percent_table(
        runs.drop(columns=["variant", "lam"]).sort_values(["study", "architecture"], kind="stable"))}
    out = ChapterOutput("how_bn_helps", params, analysis["values"], tables, analysis["figures"],
                        {"data": recipe.data_summary(data), "seeds": seeds, "runs": runs},
                        trainings, clock())
    out.save()
    return out


def row_results(rows: Sequence[Planned], results: Sequence[Result]) -> list[Result]:
    """Each row's Result: the training's own, or (a row with a ``variant``) the same with
    that variant's validation and test accuracy (NaN where the run diverged: no variants)."""
    out = []
    for r, res in zip(rows, results):
        if r.variant is not None:
            v = (res.variants or {}).get(r.variant)
            if v is None and not res.diverged:
                raise ValueError(f"{r.spec.label}: the training has no variant {r.variant!r} "
                                 f"(it has {sorted(res.variants or {})})")
            nan = float("nan")
            res = dataclasses.replace(res, test_accuracy=v["test_accuracy"] if v else nan,
                                      val_accuracy=v["val_accuracy"] if v else nan)
        out.append(res)
    return out


# ---------------------------------------------------------------------- statistics
def ci95(values: Sequence[float]) -> tuple[float, float, int]:
    """(mean, half-width of its 95 % t interval, n) of the finite values; half-width NaN
    for fewer than two."""
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], float)
    n = len(v)
    if n == 0:
        return float("nan"), float("nan"), 0
    if n < 2:
        return float(v.mean()), float("nan"), 1
    return float(v.mean()), float(t975(n - 1) * v.std(ddof=1) / math.sqrt(n)), n


def pm(mean: float, half: float, n: int, digits: int = 2, unit: str = "") -> str:
    """'1.23 ± 0.45 (95 % CI, 3 seeds)' or '1.23 (1 seed)'."""
    if n == 0 or not np.isfinite(mean):
        return "not measured (no finite run)"
    if not np.isfinite(half):
        return f"{mean:.{digits}f}{unit} (1 seed, no interval)"
    return f"{mean:.{digits}f}{unit} ± {half:.{digits}f} (95 % CI over {n} seeds)"


def ratio_ci(ratios: Sequence[float]) -> dict[str, Any]:
    """Geometric mean of per-seed ratios with its 95 % interval (a t interval on log10)."""
    logs = [math.log10(r) for r in ratios if r is not None and np.isfinite(r) and r > 0]
    m, h, n = ci95(logs)
    if n == 0:
        return {"ratio": float("nan"), "lo": float("nan"), "hi": float("nan"), "n": 0,
                "text": "not measured"}
    lo, hi = (10 ** (m - h), 10 ** (m + h)) if np.isfinite(h) else (float("nan"),) * 2
    text = (f"{10 ** m:.3g}× (95 % CI {lo:.3g}–{hi:.3g}×, {n} seeds)" if np.isfinite(h)
            else f"{10 ** m:.3g}× (1 seed, no interval)")
    return {"ratio": 10 ** m, "lo": lo, "hi": hi, "n": n, "text": text}


def welch(a: Sequence[float], b: Sequence[float]) -> dict[str, Any]:
    """mean(a) - mean(b) and Welch's verdict at 95 % (kbn.experiments.stats)."""
    a = [x for x in a if np.isfinite(x)]
    b = [x for x in b if np.isfinite(x)]
    if not a or not b:
        return {"diff": float("nan"), "beyond_noise": None, "text": "not measured"}
    sa = float(np.std(a, ddof=1)) if len(a) > 1 else float("nan")
    sb = float(np.std(b, ddof=1)) if len(b) > 1 else float("nan")
    d = difference_of_means(float(np.mean(a)), sa, len(a), float(np.mean(b)), sb, len(b))
    if d["beyond_noise"] is None:
        verdict = "run-to-run noise not measured (a single seed)"
    else:
        verdict = (f"{'larger' if d['beyond_noise'] else 'not larger'} than run-to-run noise "
                   f"(Welch's t at 95 %: threshold {d['threshold']:.2f} points, "
                   f"{len(a)} and {len(b)} seeds)")
    return {**d, "text": verdict}


# ---------------------------------------------------------------------- analysis
def analyse(params: Parameters, rows: Sequence[Planned], results: Sequence[Result],
            n_train: int) -> dict[str, Any]:
    """Tables, figures and glued values of the six studies from the chapter's runs."""
    archs = dict(params.architectures)
    deepest = max(archs, key=lambda a: len(archs[a]))
    results = row_results(rows, results)
    by = _index(rows, results)
    recorded_val_images = next(r.spec.record for r in rows if r.spec.record is not None).val_images
    values: dict[str, Any] = {"deep_arch": deepest, "sigma": params.sigma,
                              "probe": params.probe, "precise_bn_batches": params.precise_bn,
                              "short_cycles": params.short_cycles,
                              "short_epochs": 2 * params.short_n_s * params.short_cycles
                              * params.n_batch / n_train,
                              "usable_points": USABLE_POINTS,
                              "eta_top": max(params.eta_max_grid),
                              "eta_bottom": min(params.eta_max_grid),
                              "recipe_epochs": 2 * params.n_s * params.n_cycles
                              * params.n_batch / n_train,
                              "n_batch": params.n_batch, "batch_eta_max": params.eta_max,
                              # the validation images the recorder measured the mode gap on
                              "mode_gap_images": f"{recorded_val_images:,}",
                              # α columns and PreciseBN: one recorded training per seed
                              "n_inference_columns": len(params.alphas) + 1}
    tables: dict[str, pd.DataFrame] = {}
    figures: dict[str, Any] = {}
    epochs_per_step = params.n_batch / n_train

    # 1. activations
    inside = {(lab["architecture"], lab["batch_norm"], lab["init"]): rs
              for lab, rs in by["inside"]}
    first = inside[(deepest, True, "he")][0].recording
    values["first_eval_epoch"] = first["steps"][1] * epochs_per_step if first else float("nan")
    figures["fig_activations"] = figs.activations(
        {bn_label(bn): [r.recording for r in inside[(deepest, bn, "he")]] for bn in (False, True)},
        epochs_per_step, title=f"{deepest} {list(archs[deepest])}, He")
    drift_rows = []
    for arch in archs:
        for bn in (False, True):
            recs = [r.recording for r in inside[(arch, bn, "he")] if r.recording]
            per_layer = np.array([drift(rec) for rec in recs])  # (seeds, layers)
            for l in range(per_layer.shape[1]):
                m, h, n = ci95(per_layer[:, l])
                drift_rows.append({"network": arch, "BN": bn_label(bn), "layer": l + 1,
                                   "drift": m, "ci": h, "n": n})
    drift_df = pd.DataFrame(drift_rows)
    tables["drift"] = _drift_table(drift_df)
    for arch in archs:
        k = len(archs[arch]) + 1
        for bn in (False, True):
            d = drift_df[(drift_df["network"] == arch) & (drift_df["BN"] == bn_label(bn))]
            last = d.iloc[-1]
            key = f"drift_{k}_{'bn' if bn else 'nobn'}"
            values[f"{key}_last"] = pm(last["drift"], last["ci"], int(last["n"]))
            values[f"{key}_mean"] = float(d["drift"].mean())
        a = [np.mean(drift(r.recording)) for r in inside[(arch, False, "he")]]
        b = [np.mean(drift(r.recording)) for r in inside[(arch, True, "he")]]
        rc = ratio_ci([x / y for x, y in zip(a, b)])
        values[f"drift_{k}_ratio"], values[f"drift_{k}_ratio_lo"] = rc["text"], rc["lo"]

    # 2. gradient flow
    deep_inits = [(bn, init) for bn in (False, True) for init in inits_of(True, bn)]
    grad = {f"{bn_label(bn)}, {init_label(init, params.sigma)}":
            [r.recording for r in inside[(deepest, bn, init)]] for bn, init in deep_inits}
    figures["fig_gradients"] = figs.gradient_flow(grad, epochs_per_step)
    grad_rows = []
    for arch in archs:
        for bn in (False, True):
            for init in inits_of(arch == deepest, bn):
                rs = inside[(arch, bn, init)]
                recs = [r.recording for r in rs]
                at0 = ratio_ci([first_last_ratio(rec, 0) for rec in recs])
                at1 = ratio_ci([first_last_ratio(rec, 1) for rec in recs])
                end = ratio_ci([first_last_ratio(rec, -1) for rec in recs])
                acc = ci95([100 * r.test_accuracy for r in rs])
                key = f"grad_{len(archs[arch]) + 1}_{'bn' if bn else 'nobn'}_{init}"
                values[f"{key}_init"] = at0["text"]
                values[f"{key}_init_ratio"] = at0["ratio"]
                values[f"{key}_first_norm"] = ratio_ci([rec["grad_norm"][0][0] for rec in recs
                                                        if rec])["text"].replace("×", "")
                values[f"{key}_end"] = end["text"]
                values[f"{key}_acc"] = pm(*acc)
                values[f"{key}_diverged"] = sum(r.diverged for r in rs)
                grad_rows.append({"network": arch, "BN": bn_label(bn),
                                  "init": init_label(init, params.sigma),
                                  "‖∂L/∂W₁‖ / ‖∂L/∂W_k‖ at init": f"{at0['ratio']:.3g}",
                                  "after 1st evaluation": f"{at1['ratio']:.3g}",
                                  "at the end": f"{end['ratio']:.3g}",
                                  "test accuracy (%)": pm(*acc),
                                  "diverged": sum(r.diverged for r in rs)})
    tables["gradients"] = pd.DataFrame(grad_rows)

    # 3. landscape
    figures["fig_landscape"] = figs.landscape(
        {bn_label(bn): [r.recording for r in inside[(deepest, bn, "he")]] for bn in (False, True)},
        epochs_per_step, title=f"{deepest} {list(archs[deepest])}, He")
    land_rows = []
    for arch in archs:
        k = len(archs[arch]) + 1
        per = {bn: [landscape_summary(r.recording) for r in inside[(arch, bn, "he")]]
               for bn in (False, True)}
        for name, label in (("loss_range", "loss spread along the gradient"),
                            ("grad_change", "max ‖Δ gradient‖"),
                            ("beta", "effective β-smoothness")):
            row = {"network": arch, "quantity": label}
            for bn in (False, True):
                m, h, n = ci95([p[name] for p in per[bn]])
                row[bn_label(bn)] = pm(m, h, n, digits=3)
                values[f"land_{k}_{name}_{'bn' if bn else 'nobn'}"] = m
            rc = ratio_ci([a[name] / b[name] for a, b in zip(per[False], per[True])])
            row["no BN / BN"] = rc["text"]
            values[f"land_{k}_{name}_ratio"] = rc["text"]
            values[f"land_{k}_{name}_ratio_value"] = rc["ratio"]
            values[f"land_{k}_{name}_ratio_lo"] = rc["lo"]
            land_rows.append(row)
    tables["landscape"] = pd.DataFrame(land_rows)

    # 4. learning rate
    lr = runs_of(rows, results, "learning rate")
    figures["fig_learning_rate"] = figs.learning_rate(lr, list(archs))
    lr_summary = []
    for arch in archs:
        k = len(archs[arch]) + 1
        for bn in (False, True):
            a = lr[(lr["architecture"] == arch) & (lr["batch_norm"] == bn)]
            cells = []
            for eta, g in a.groupby("eta_max", sort=True):
                m, h, n = ci95(g["test_accuracy"])
                cells.append({"eta": eta, "mean": m, "ci": h, "n": n,
                              "diverged": int(g["diverged"].sum()), "runs": len(g)})
            best = max((c for c in cells if np.isfinite(c["mean"])), key=lambda c: c["mean"],
                       default=None)
            usable = [c["eta"] for c in cells if best and c["diverged"] == 0
                      and np.isfinite(c["mean"]) and c["mean"] >= best["mean"] - USABLE_POINTS]
            first_div = min((c["eta"] for c in cells if c["diverged"]), default=None)
            key = f"lr_{k}_{'bn' if bn else 'nobn'}"
            values[f"{key}_best_eta"] = best["eta"] if best else float("nan")
            values[f"{key}_best_acc"] = pm(best["mean"], best["ci"], best["n"]) if best else "–"
            values[f"{key}_usable"] = (f"{min(usable):g} to {max(usable):g}" if usable
                                       else "none")
            values[f"{key}_usable_max"] = max(usable) if usable else float("nan")
            values[f"{key}_diverges"] = (f"at η_max = {first_div:g} and above in some runs"
                                         if first_div is not None else
                                         f"at no η_max up to {max(params.eta_max_grid):g}")
            for c in cells:
                lr_summary.append({"network": arch, "BN": bn_label(bn), "η_max": c["eta"],
                                   "test accuracy (%)": pm(c["mean"], c["ci"], c["n"]),
                                   "diverged": f"{c['diverged']} of {c['runs']}"})
        top = max(params.eta_max_grid)
        at_top = {bn: list(lr[(lr["architecture"] == arch) & (lr["batch_norm"] == bn)
                              & (lr["eta_max"] == top)]["test_accuracy"]) for bn in (False, True)}
        w = welch(at_top[True], at_top[False])
        values[f"lr_{k}_top_bn"] = pm(*ci95(at_top[True]))
        values[f"lr_{k}_top_nobn"] = pm(*ci95(at_top[False]))
        values[f"lr_{k}_top_gain"] = w["diff"]
        values[f"lr_{k}_top_verdict"] = w["text"]
        ratio = values[f"lr_{k}_bn_usable_max"] / values[f"lr_{k}_nobn_usable_max"]
        values[f"lr_{k}_usable_ratio"] = ratio
    tables["learning_rate"] = pd.DataFrame(lr_summary)

    # 5. placement
    place_rows = []
    for arch in archs:
        k = len(archs[arch]) + 1
        before = [100 * r.test_accuracy for r in inside[(arch, True, "he")]]
        after = [100 * r.test_accuracy for lab, rs in by["placement"]
                 if lab["architecture"] == arch for r in rs]
        w = welch(after, before)
        values[f"place_{k}_before"] = pm(*ci95(before))
        values[f"place_{k}_after"] = pm(*ci95(after))
        values[f"place_{k}_diff"] = w["diff"]
        values[f"place_{k}_verdict"] = w["text"]
        place_rows.append({"network": arch, "BN before ReLU (%)": pm(*ci95(before)),
                           "BN after ReLU (%)": pm(*ci95(after)),
                           "after − before (points)": f"{w['diff']:+.2f}", "assessment": w["text"]})
    tables["placement"] = pd.DataFrame(place_rows)

    # 6. inference statistics: the same weights, so the differences are paired by seed
    inf = runs_of(rows, results, "inference")
    inf_rows = []
    for arch in archs:
        k = len(archs[arch]) + 1
        a = inf[inf["architecture"] == arch]
        base = a[a["statistics"] == f"α = {params.alphas[0]:g}"].set_index("seed")["test_accuracy"]
        row = {"network": arch}
        for stat, g in a.groupby("statistics", sort=False):
            row[f"{stat} (%)"] = pm(*ci95(g["test_accuracy"]))
            diffs = (g.set_index("seed")["test_accuracy"] - base).dropna()
            m, h, n = ci95(diffs)
            slug = "precise" if stat == "PreciseBN" else f"alpha_{stat.split('= ')[1]}"
            values[f"inf_{k}_{slug}"] = pm(*ci95(g["test_accuracy"]))
            values[f"inf_{k}_{slug}_diff"] = pm(m, h, n, unit=" points")
            values[f"inf_{k}_{slug}_diff_mean"] = m
            if stat == f"α = {max(params.alphas):g}":
                values[f"inf_{k}_alpha_max_diff"] = pm(m, h, n, unit=" points")
        inf_rows.append(row)
    tables["inference"] = pd.DataFrame(inf_rows)
    values["alpha_base"], values["alpha_max"] = params.alphas[0], max(params.alphas)
    gap = {}
    for arch in archs:
        k = len(archs[arch]) + 1
        recs = [r.recording for r in inside[(arch, True, "he")]]
        gap[arch] = recs
        d = [100 * (rec["val_accuracy_train_mode"][-1] - rec["val_accuracy_eval_mode"][-1])
             for rec in recs]
        values[f"gap_{k}"] = pm(*ci95(d), unit=" points")
        values[f"gap_{k}_mean"] = ci95(d)[0]
    figures["fig_mode_gap"] = figs.mode_gap(gap, epochs_per_step)

    batch = runs_of(rows, results, "batch size")
    batch_recs = {(lab["batch_norm"], lab["n_batch"]): rs for lab, rs in by["batch size"]}
    train_mode = {nb: [100 * r.recording["val_accuracy_train_mode"][-1]
                       for r in batch_recs[(True, nb)]] for nb in params.batch_sizes}
    figures["fig_batch_size"] = figs.batch_size(batch, train_mode)
    batch_rows = []
    for nb in params.batch_sizes:
        row = {"batch size": nb}
        for bn in (False, True):
            g = batch[(batch["batch_norm"] == bn) & (batch["n_batch"] == nb)]
            row[f"{bn_label(bn)} (%)"] = pm(*ci95(g["test_accuracy"]))
        row["BN, training-mode validation (%)"] = pm(*ci95(train_mode[nb]))
        no = batch[(batch["batch_norm"] == False) & (batch["n_batch"] == nb)]["test_accuracy"]  # noqa: E712
        yes = batch[(batch["batch_norm"] == True) & (batch["n_batch"] == nb)]["test_accuracy"]  # noqa: E712
        w = welch(list(yes), list(no))
        row["BN gain (points)"] = f"{w['diff']:+.2f}"
        values[f"batch_{nb}_gain"] = w["diff"]
        values[f"batch_{nb}_gain_verdict"] = w["text"]
        values[f"batch_{nb}_bn"] = pm(*ci95(yes))
        values[f"batch_{nb}_nobn"] = pm(*ci95(no))
        batch_rows.append(row)
    tables["batch_size"] = pd.DataFrame(batch_rows)
    values["batch_small"], values["batch_large"] = min(params.batch_sizes), max(params.batch_sizes)
    values["batch_arch"] = next(iter(archs))
    values.update(findings(values, archs, deepest, params))
    values.update(role_aliases(values, archs, params.batch_sizes))
    return {"values": values, "tables": tables, "figures": figures}


def role_aliases(values: Mapping[str, Any], archs: Mapping[str, Sequence[int]],
                 batch_sizes: Sequence[int]) -> dict[str, Any]:
    """The values again under role names the text can use whatever the parameters: the
    depth of the deepest architecture -> ``deep``, of the shallowest -> ``shallow``
    (``grad_9_nobn_he_init`` -> ``grad_deep_nobn_he_init``), the smallest and largest batch
    size -> ``small`` and ``large`` (``batch_10_gain`` -> ``batch_small_gain``)."""
    depths = {len(h) + 1 for h in archs.values()}
    roles = {"deep": str(max(depths)), "shallow": str(min(depths))}
    sizes = {"small": str(min(batch_sizes)), "large": str(max(batch_sizes))}
    out: dict[str, Any] = {"shallow_arch": min(archs, key=lambda a: len(archs[a]))}
    for key, value in values.items():
        parts = key.split("_")
        if len(parts) < 2:
            continue
        if parts[0] == "batch":
            for role, nb in sizes.items():
                if parts[1] == nb:
                    out["_".join([parts[0], role, *parts[2:]])] = value
        else:
            for role, k in roles.items():
                if parts[1] == k:
                    out["_".join([parts[0], role, *parts[2:]])] = value
    return out


def _index(rows, results) -> dict[str, list[tuple[dict, list[Result]]]]:
    """{study: [(labels, [Result per seed]), ...]}, configurations in plan order."""
    groups: dict[tuple, list[Result]] = {}
    labels: dict[tuple, dict] = {}
    for r, res in zip(rows, results):
        key = (r.study, tuple(sorted(r.labels.items())))
        groups.setdefault(key, []).append(res)
        labels[key] = dict(r.labels)
    out: dict[str, list] = {}
    for key, rs in groups.items():
        out.setdefault(key[0], []).append((labels[key], rs))
    return out


def runs_of(rows, results, study: str) -> pd.DataFrame:
    """One row per training of ``study``: its labels, seed, test accuracy (%), diverged."""
    return pd.DataFrame([{**r.labels, **result_row(r.spec.train, res), "n_batch": r.spec.train.n_batch}
                         for r, res in zip(rows, results) if r.study == study])


def drift(rec: Mapping[str, Any]) -> list[float]:
    """Per hidden layer: how far each unit's ReLU-input mean moved from the first
    evaluation point to the end, in units of its spread at the end, averaged over the
    layer's units (units with no spread at the end, dead, left out)."""
    out = []
    for l in range(len(rec["unit_mean"][0])):
        m1, mT = np.asarray(rec["unit_mean"][1][l]), np.asarray(rec["unit_mean"][-1][l])
        sT = np.asarray(rec["unit_std"][-1][l])
        alive = sT > 1e-6
        out.append(float(np.mean(np.abs(mT - m1)[alive] / sT[alive])) if alive.any() else float("nan"))
    return out


def first_last_ratio(rec: Mapping[str, Any], point: int) -> float:
    """||dL/dW_1|| / ||dL/dW_k|| at a recorded point: < 1 means the gradient shrinks on its
    way down to the first layer."""
    g = rec["grad_norm"][point]
    return g[0] / g[-1] if g[-1] > 0 else float("nan")


def landscape_summary(rec: Mapping[str, Any]) -> dict[str, float]:
    """Averages over the evaluation points after initialisation of: the spread of the loss
    along the gradient (max - min over the step sizes, with the starting loss), the
    largest gradient change, and the effective beta-smoothness (non-finite values, where a
    step made the loss overflow, are left out)."""
    spreads, changes, betas = [], [], []
    for i in range(1, len(rec["steps"])):
        losses = np.array([rec["loss"][i], *rec["landscape_loss"][i]], float)
        losses = losses[np.isfinite(losses)]
        spreads.append(float(losses.max() - losses.min()) if len(losses) else float("nan"))
        ch = np.array(rec["landscape_grad_change"][i], float)
        changes.append(float(np.nanmax(ch[np.isfinite(ch)])) if np.isfinite(ch).any() else float("nan"))
        betas.append(float(rec["beta_smoothness"][i]))
    return {"loss_range": float(np.nanmean(spreads)), "grad_change": float(np.nanmean(changes)),
            "beta": float(np.nanmean(betas))}


def _drift_table(df: pd.DataFrame) -> pd.DataFrame:
    out = df.assign(**{"drift (std units)": [pm(m, h, n, digits=3) for m, h, n in
                                              zip(df["drift"], df["ci"], df["n"])]})
    wide = out.pivot_table(index=["network", "layer"], columns="BN", values="drift (std units)",
                           aggfunc="first", sort=False).reset_index()
    wide.columns.name = None  # else it shows as an unnamed header column
    return wide[["network", "layer", *[c for c in ("no BN", "BN") if c in wide.columns]]]


def _ratio_phrase(values: Mapping[str, Any], key: str, what: str) -> str:
    """'<what> is 3.6× larger without BN (95 % CI ...), beyond the seed-to-seed spread', or
    smaller, or not distinguishable: from the interval of the per-seed ratios."""
    r, lo = values[f"{key}_ratio_value"], values[f"{key}_ratio_lo"]
    text = values[f"{key}_ratio"]
    hi = r * r / lo if np.isfinite(lo) and lo > 0 else float("nan")  # symmetric on log10
    if not np.isfinite(r):
        return f"{what} could not be compared (no finite run)"
    if np.isfinite(lo) and lo > 1:
        return f"{what} is larger without BN by {text}, beyond the seed-to-seed spread"
    if np.isfinite(hi) and hi < 1:
        return f"{what} is smaller without BN, ratio {text}, beyond the seed-to-seed spread"
    return f"{what}, no BN / BN, is {text}: not distinguishable from the seed-to-seed spread"


def findings(values: Mapping[str, Any], archs, deepest: str, params: Parameters) -> dict[str, str]:
    """Sentences for the chapter and the summary, each from the numbers above."""
    k = len(archs[deepest]) + 1
    out = {}
    out["finding_landscape"] = "; ".join([
        _ratio_phrase(values, f"land_{k}_loss_range", "the spread of the loss along the gradient"),
        _ratio_phrase(values, f"land_{k}_grad_change", "the change of the gradient"),
        _ratio_phrase(values, f"land_{k}_beta", "the effective β-smoothness")])
    nob, bn = values[f"lr_{k}_nobn_usable_max"], values[f"lr_{k}_bn_usable_max"]
    top = max(params.eta_max_grid)
    at_top = (f"; at η_max = {top:g} it reaches {values[f'lr_{k}_top_bn']} % with BN and "
              f"{values[f'lr_{k}_top_nobn']} % without ({values[f'lr_{k}_top_verdict']})")
    if np.isfinite(nob) and np.isfinite(bn):
        out["finding_learning_rate"] = (
            f"the largest η_max within {USABLE_POINTS:g} points of the best and without a "
            f"diverged run is {bn:g} with BN and {nob:g} without ({bn / nob:.3g}×) for the "
            f"{k}-layer network; without BN it diverges {values[f'lr_{k}_nobn_diverges']}, "
            f"with BN {values[f'lr_{k}_bn_diverges']}" + at_top)
    else:
        out["finding_learning_rate"] = "no usable learning rate was found in this run" + at_top
    d = values[f"drift_{k}_ratio_lo"]
    out["finding_drift"] = (
        f"averaged over the layers, the drift is larger without BN by {values[f'drift_{k}_ratio']}: "
        "BN removes most of this shift of what the layers see (the 'internal covariate shift' "
        "it was designed to remove)" if np.isfinite(d) and d > 1 else
        f"averaged over the layers, the drift without BN over that with BN is "
        f"{values[f'drift_{k}_ratio']}: this run does not show BN reducing it beyond the "
        "seed-to-seed spread")
    return out
