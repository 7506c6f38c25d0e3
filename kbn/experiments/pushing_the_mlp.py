"""Chapter 6: how far can an MLP go on CIFAR-10 on a 2-core machine?

Beyond the original recipe: augmentation (flips, translations), momentum, a one-cycle
schedule, label smoothing, dropout, AdamW, a wider and deeper network and a longer
schedule; then test-time flips and an ensemble of the seeds. Three parts:

* an ablation on a small network and schedule (seconds per run): each trick added to a
  baseline (the recipe's SGD and cyclical rate, nothing else) and toggled in the small
  version of the best configuration; the gain in points with a 95 % interval over seeds
  (paired by seed: the same seed gives the same initialisation and shuffles);
* the best configuration (:data:`kbn.presets.PRESETS` ``mlp-best``), once per seed, with
  the test-set probabilities kept for test-time flips and the ensemble;
* accuracy against training time for every run, with the Pareto front.

Entry point: ``run(Parameters(...))``. Every training goes through run_trials (cached).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from .. import ensemble, plots
from ..config import NetworkConfig, TrainConfig
from ..presets import N_VAL, PRESETS, preset_configs, preset_n_val, write_config_file
from . import recipe
from .chapter import ChapterOutput, Stopwatch
from .display import percent_table, run_note
from .parameters import _EXECUTOR, ChapterParameters, ParameterError, check_seeds
from .stats import t975
from .trainings import Trainings

DEPENDS_ON: tuple[str, ...] = ()

# Each trick: (label, its fields when on, when off). "off" is the baseline's value.
TRICKS: dict[str, tuple[str, dict[str, Any], dict[str, Any]]] = {
    "momentum": ("Nesterov momentum 0.9 instead of plain SGD (both η_max 0.1)",
                 {"optimizer": "nesterov", "eta_max": 0.1}, {"optimizer": "sgd", "eta_max": 0.1}),
    "one_cycle": ("one-cycle schedule (warm-up, cosine down) instead of the triangle",
                  {"schedule": "one_cycle"}, {"schedule": "cyclical"}),
    "flip": ("random horizontal flips", {"flip": True}, {"flip": False}),
    "shift": ("random translations by up to 4 pixels", {"shift": 4}, {"shift": 0}),
    "label_smoothing": ("label smoothing 0.1", {"label_smoothing": 0.1}, {"label_smoothing": 0.0}),
    "dropout": ("dropout 0.1 on every hidden layer", {"dropout": 0.1}, {"dropout": 0.0}),
    "adamw": ("AdamW (η_max 0.002) instead of SGD / Nesterov",
              {"optimizer": "adamw", "eta_max": 0.002}, {}),
}
SMOKE_SEEDS = 2  # smoke runs keep two seeds, so every interval is computed (if wide)

# Published results beside ours (test accuracy, %). Student reports: the course's bonus.
LITERATURE = [
    ("best public student reports of this assignment (bonus)",
     "BN MLP 5 × 200 hidden units, jitter augmentation", "57.7–58.7"),
    ("public student report of this assignment (bonus)",
     "BN MLP [1000, 500, 250, 100, 50]", "58.0"),
    ("Lin, Memisevic & Konda (2015)",
     "fully connected network with unsupervised pre-training (much more compute)", "≈ 70"),
    ("Neyshabur (2020)",
     "β-LASSO: a locally connected structure learned from a fully connected start", "≈ 85"),
]


@dataclass(frozen=True)
class Parameters(ChapterParameters):
    """The parameters cell of notebooks/06_pushing_the_mlp.ipynb."""

    seeds: list[int] = (0, 1, 2)  # one run per seed and configuration (smoke: the first two)
    executor: str | None = None  # the ablation's: None: $KBN_EXECUTOR, else one process per core
    cache: str | None = None  # folder of finished trainings to reuse and add to (None: train all)
    best: str = "mlp-best"  # the best configuration: a kbn.presets name or a JSON config file
    # where the best configuration trains: "serial" = one run at a time on every core, so a
    # run's wall time is what it costs on the whole machine (None: as ``executor``)
    best_executor: str | None = "serial"
    ablation_hidden: list[int] = (256, 128)  # the small network of the ablation
    ablation_epochs: int = 8  # its schedule, in epochs (batch and the rest as the best's)
    tricks: list[str] = tuple(TRICKS)  # which tricks the ablation measures

    def check(self) -> None:
        super().check()
        check_seeds("seeds", self.seeds)
        if not self.ablation_hidden or min(self.ablation_hidden) < 1:
            raise ParameterError(f"parameter ablation_hidden={list(self.ablation_hidden)!r}: "
                                 "give a list of positive widths, e.g. [256, 128]")
        if self.best_executor is not None and not _EXECUTOR.match(self.best_executor.strip().lower()):
            raise ParameterError(f"parameter best_executor={self.best_executor!r}: give None, "
                                 "'serial', 'process', 'process:N' or a Dask address")
        if self.ablation_epochs < 1:
            raise ParameterError(f"parameter ablation_epochs={self.ablation_epochs}: must be >= 1")
        bad = sorted(set(self.tricks) - set(TRICKS))
        if bad:
            raise ParameterError(f"parameter tricks: unknown {bad}; choose from {list(TRICKS)}")
        try:
            preset_configs(self.best)
        except ValueError as exc:
            raise ParameterError(f"parameter best={self.best!r}: {exc}") from None


# ---------------------------------------------------------------- configurations
def best_configs(params: Parameters) -> tuple[NetworkConfig, TrainConfig]:
    """The best configuration (smoke: its tricks on a tiny network and schedule)."""
    net, train = preset_configs(params.best)
    if params.smoke:
        net = net.replace(hidden=(48, 24))
        train = train.replace(n_s=20, n_cycles=1, evals_per_cycle=4, n_batch=100)
    return net, train


def ablation_configs(params: Parameters, best_train: TrainConfig, n_train: int
                     ) -> tuple[NetworkConfig, TrainConfig, TrainConfig]:
    """(network, baseline recipe, small best recipe) of the ablation: the best's recipe on a
    smaller network and a shorter schedule; the baseline turns every trick off."""
    net = NetworkConfig(hidden=tuple(params.ablation_hidden))
    epochs = 1 if params.smoke else params.ablation_epochs
    n_s = max(1, epochs * n_train // best_train.n_batch // 2)
    small_best = best_train.replace(n_s=n_s, n_cycles=1, evals_per_cycle=4, keep_test_probs=False)
    off = {}
    for name in TRICKS:
        off.update(TRICKS[name][2])
    baseline = small_best.replace(**off)
    if params.smoke:
        net = net.replace(hidden=(32, 16))
    return net, baseline, small_best


def has_trick(train: TrainConfig, name: str) -> bool:
    """Whether ``train`` uses the trick: its first "on" field (optimizer, schedule, flip,
    ...) has the "on" value (the others, e.g. the matching eta_max, come with it)."""
    key, value = next(iter(TRICKS[name][1].items()))
    return getattr(train, key) == value


def toggled(train: TrainConfig, name: str) -> TrainConfig:
    """``train`` with the trick switched (on -> off, off -> on). A swap (no "off" values,
    AdamW) switched off restores the best's optimizer."""
    label, on, off = TRICKS[name]
    if has_trick(train, name):
        if not off:
            raise ValueError(f"{name} has no 'off' values to switch it off with")
        return train.replace(**off)
    return train.replace(**on)


def ablation_specs(params: Parameters, best_train: TrainConfig, seeds: Sequence[int],
                   n_train: int):
    """(labels, network, train) of every ablation run: the baseline, the baseline with each
    trick, the small best, the small best with each trick toggled; per seed."""
    net, baseline, small_best = ablation_configs(params, best_train, n_train)
    configs = [("baseline", "", baseline), ("small best", "", small_best)]
    for name in params.tricks:
        if TRICKS[name][2]:  # tricks with an "off" (swaps are only tried at the best)
            configs.append(("baseline", name, toggled(baseline, name)))
        configs.append(("small best", name, toggled(small_best, name)))
    for point, trick, train in configs:
        for seed in seeds:
            yield ({"part": "ablation", "point": point, "toggled": trick,
                    "with_trick": (has_trick(train, trick) if trick else None)},
                   net, train.replace(seed=int(seed)))


# ---------------------------------------------------------------- statistics
def paired_gain(with_: Sequence[float], without: Sequence[float]) -> dict[str, float]:
    """Mean of the per-seed differences (points) and its 95 % t interval half-width."""
    d = np.asarray(with_, float) - np.asarray(without, float)
    n = len(d)
    mean = float(np.mean(d)) if n else float("nan")
    half = float(t975(n - 1) * np.std(d, ddof=1) / math.sqrt(n)) if n >= 2 else float("nan")
    return {"gain": mean, "half_width": half, "n": n}


def format_gain(g: Mapping[str, float]) -> str:
    if not np.isfinite(g["gain"]):
        return "–"
    if not np.isfinite(g["half_width"]):
        return f"{g['gain']:+.2f} (1 seed)"
    return f"{g['gain']:+.2f} ± {g['half_width']:.2f}"


def ablation_table(runs: pd.DataFrame, tricks: Sequence[str]) -> pd.DataFrame:
    """One row per trick: its gain added to the baseline and at the small best configuration
    (with minus without, per seed), and the wall time of the runs with it."""
    a = runs[runs["part"] == "ablation"]
    rows = []
    for name in tricks:
        row = {"trick": TRICKS[name][0]}
        for point, col in (("baseline", "added to the baseline"),
                           ("small best", "at the (small) best configuration")):
            base = a[(a["point"] == point) & (a["toggled"] == "")].sort_values("seed")
            other = a[(a["point"] == point) & (a["toggled"] == name)].sort_values("seed")
            if other.empty:
                row[col] = "–"
                continue
            with_trick = bool(other["with_trick"].iloc[0])
            w, wo = (other, base) if with_trick else (base, other)
            g = paired_gain(w["test_accuracy"].to_numpy(), wo["test_accuracy"].to_numpy())
            row[col] = format_gain(g)
            row[f"{point}_gain"], row[f"{point}_half_width"] = g["gain"], g["half_width"]
        used = a[(a["toggled"] == name) & (a["with_trick"] == True)]  # noqa: E712
        row["wall time with it (s)"] = float(used["wall_time"].mean()) if len(used) else float("nan")
        rows.append(row)
    out = pd.DataFrame(rows)
    shown = ["trick", "added to the baseline", "at the (small) best configuration",
             "wall time with it (s)"]
    return out[shown].round({"wall time with it (s)": 1}), out


def small_scale_caveat(raw: pd.DataFrame, best_train: TrainConfig, tricks: Sequence[str],
                       epochs: int, best_epochs: float) -> str:
    """A sentence naming the tricks the best configuration uses that cost accuracy at the
    ablation's small scale (the 95 % interval of the gain at the small best lies below 0),
    and saying what that does and does not show."""
    hurt = []
    for name, (_, row) in zip(tricks, raw.iterrows()):
        gain, half = row.get("small best_gain"), row.get("small best_half_width")
        if (has_trick(best_train, name) and gain is not None and half is not None
                and np.isfinite(gain) and np.isfinite(half) and gain + half < 0):
            hurt.append(f"{TRICKS[name][0]} ({gain:+.2f} ± {half:.2f} points)")
    if not hurt:
        return ("no trick that the best configuration uses costs accuracy at the ablation's "
                "scale beyond the seeds' noise")
    which = "; ".join(hurt)
    return (f"at the ablation's scale ({epochs} epochs of the small network) the best "
            f"configuration's {which} cost{'s' if len(hurt) == 1 else ''} accuracy: the "
            f"95 % interval lies below zero. A regulariser such as augmentation has little "
            f"time to pay off in {epochs} epochs; what it is worth in the best configuration's "
            f"{best_epochs:.0f} epochs is not measured here (each removal would take one more "
            f"full run per seed)")


def ensemble_by_members(tables: Sequence[np.ndarray], y: np.ndarray) -> list[float]:
    """Test accuracy (%) with test-time flips of ensembles of m = 1 .. n of the networks,
    each the mean over every choice of m of them: what one more member buys."""
    from itertools import combinations

    n = len(tables)
    return [float(np.mean([100 * ensemble.ensemble_accuracy([tables[i] for i in c], y, flip=True)
                           for c in combinations(range(n), m)])) for m in range(1, n + 1)]


def ensemble_sentence(by_members: Sequence[float], goal: float, minutes: float) -> str:
    """Where the ensemble with test-time flips ends, against the goal, and what each added
    member gave (so a reader sees what more members might buy, at ``minutes`` each)."""
    n, last = len(by_members), by_members[-1]
    steps = ", ".join(f"{m} network{'s' if m > 1 else ''}: {a:.2f} %"
                      for m, a in enumerate(by_members, start=1))
    verdict = "meeting the" if last >= goal else f"{goal - last:.2f} points short of the"
    text = (f"the ensemble of the {n} seeds with test-time flips reaches {last:.2f} %, "
            f"{verdict} {goal:.0f} % goal (with flips, mean over every choice of members: {steps})")
    if n >= 2 and last < goal:
        gains = ", ".join(f"{b - a:+.2f}" for a, b in zip(by_members, by_members[1:]))
        text += (f"; the members added {gains} points in turn, each costing one more run of "
                 f"about {minutes:.1f} min, so closing the gap with members alone would take "
                 "several more runs if the gains keep shrinking")
    return text


def pareto_front(times: Sequence[float], accs: Sequence[float]) -> np.ndarray:
    """Indices of the points no other point beats in both (less time, more accuracy),
    ordered by time."""
    order = np.argsort(np.asarray(times, float), kind="stable")
    front, best = [], -np.inf
    for i in order:
        if accs[i] > best:
            front.append(int(i))
            best = accs[i]
    return np.array(front, int)


# ---------------------------------------------------------------- figures
def pareto_figure(points: pd.DataFrame) -> Figure:
    """Test accuracy against training minutes; one marker per kind of run; the front."""
    fig = Figure(figsize=(7.5, 4.6), layout="constrained")
    ax = fig.subplots()
    for i, (kind, g) in enumerate(points.groupby("kind", sort=False)):
        ax.scatter(g["minutes"], g["test_accuracy"], s=22, alpha=0.8, label=kind, color=f"C{i}")
    front = pareto_front(points["minutes"].to_numpy(), points["test_accuracy"].to_numpy())
    f = points.iloc[front]
    ax.step(f["minutes"], f["test_accuracy"], where="post", color="k", lw=1, label="Pareto front")
    ax.set_xscale("log")
    ax.set_xlabel("training time (minutes, log scale; ensembles: the sum of their members)")
    ax.set_ylabel("test accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return fig


def confusion_figure(matrix: np.ndarray, names: Sequence[str]) -> Figure:
    """Row-normalised confusion matrix (%), true class by row."""
    fig = Figure(figsize=(6.4, 5.6), layout="constrained")
    ax = fig.subplots()
    pct = 100 * matrix / np.maximum(1, matrix.sum(axis=1, keepdims=True))
    im = ax.imshow(pct, cmap="Blues", vmin=0, vmax=100)
    for i in range(len(names)):
        for j in range(len(names)):
            ax.text(j, i, f"{pct[i, j]:.0f}", ha="center", va="center", fontsize=7,
                    color="white" if pct[i, j] > 50 else "black")
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    fig.colorbar(im, ax=ax, label="% of the true class")
    return fig


def confusion(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    m = np.zeros((n_classes, n_classes), np.int64)
    np.add.at(m, (y_true, y_pred), 1)
    return m


# ---------------------------------------------------------------- the chapter
def run(params: Parameters) -> ChapterOutput:
    """The ablation, the best configuration per seed, the evaluation tricks, the figures."""
    clock = Stopwatch()
    seeds = list(params.seeds[:SMOKE_SEEDS] if params.smoke else params.seeds)
    # every run (the ablation too) on the best configuration's split: mlp-best holds out
    # 1,000 validation images instead of the recipe's 5,000
    spec = recipe.data_spec(params.data_dir, params.smoke, n_val=preset_n_val(params.best))
    data = spec.load()
    trainings = Trainings(spec, params.executor, params.cache, params.progress)
    best_net, best_train = best_configs(params)

    runs_a, _ = trainings.grid(ablation_specs(params, best_train, seeds, len(data.train.y)),
                               desc="ablation")
    best_labelled = [({"part": "best", "point": "best", "toggled": "", "with_trick": None},
                      best_net, best_train.replace(seed=int(s), keep_test_probs=True))
                     for s in seeds]
    ablation_executor, trainings.executor = trainings.executor, params.best_executor or params.executor
    try:
        runs_b, best_results = trainings.grid(best_labelled, desc="best configuration")
    finally:
        trainings.executor = ablation_executor
    runs = pd.concat([runs_a, runs_b], ignore_index=True)
    shown_ablation, ablation_raw = ablation_table(runs, params.tricks)

    # evaluation tricks on the best runs: test-time flips, the ensemble of the seeds
    y = np.asarray(data.test.y)
    diverged = [s for s, r in zip(seeds, best_results) if r.diverged]
    if diverged:  # nothing below (flips, ensemble, confusion) means anything then
        raise RuntimeError(f"the best configuration ({params.best}) diverged for seed(s) "
                           f"{diverged}; lower its eta_max or choose another configuration")
    tables_p = [r.test_probs for r in best_results]
    single = np.array([100 * r.test_accuracy for r in best_results])
    single_tta = np.array([100 * ensemble.ensemble_accuracy([p], y, flip=True) for p in tables_p])
    ens = 100 * ensemble.ensemble_accuracy(tables_p, y)
    tta = paired_gain(single_tta, single)
    by_members = ensemble_by_members(tables_p, y)
    ens_tta = by_members[-1]  # all the seeds' networks, with flips
    walls = np.array([r.wall_time for r in best_results])

    # accuracy vs time: every run, plus the evaluation tricks on the best runs
    points = pd.DataFrame({
        "kind": np.where(runs["part"] == "best", "best configuration",
                         np.where(runs["point"] == "baseline", "ablation: around the baseline",
                                  "ablation: around the small best")),
        "minutes": runs["wall_time"] / 60, "test_accuracy": runs["test_accuracy"]})
    extra = [("best + test-time flips", w / 60, a) for w, a in zip(walls, single_tta)]
    extra += [("ensemble of the seeds", walls.sum() / 60, ens),
              ("ensemble + test-time flips", walls.sum() / 60, ens_tta)]
    points = pd.concat([points, pd.DataFrame(extra, columns=list(points.columns))],
                       ignore_index=True)

    # the best network (first seed): curves, per-class accuracy, confusion matrix
    pred = tables_p[0][0].argmax(axis=1)
    names = list(getattr(data, "class_names", None) or range(10))
    matrix = confusion(y, pred, len(names))
    per_class = pd.DataFrame({"class": names,
                              "test accuracy (%)": 100 * np.diag(matrix) / np.maximum(1, matrix.sum(axis=1)),
                              "most often mistaken for": [
                                  names[int(np.argmax(np.where(np.arange(len(names)) == i, -1, row)))]
                                  for i, row in enumerate(matrix)]})
    figures = {
        "fig_pareto": pareto_figure(points),
        "fig_best_curves": plots.training_curves({"best configuration": [r.history for r in best_results]},
                                                 metrics=("loss", "accuracy")),
        "fig_confusion": confusion_figure(matrix, names),
    }
    config_file = None
    folder = params.results_folder()
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
        config_file = write_config_file(folder / "pushing_the_mlp_best.json", best_net,
                                        best_train.replace(keep_test_probs=False), spec.n_val)

    n = len(seeds)
    mean, std = float(single.mean()), float(single.std(ddof=1)) if n > 1 else float("nan")
    half = float(t975(n - 1) * std / math.sqrt(n)) if n > 1 else float("nan")
    literature = pd.DataFrame(
        LITERATURE + [
            ("this chapter: best single MLP", f"{best_net.describe()}, "
             f"{best_train.n_steps * best_train.n_batch / len(y_train(data)):.0f} epochs, "
             f"mean of {n} seeds, {walls.mean() / 60:.1f} min each", f"{mean:.1f}"),
            ("this chapter: ensemble + test-time flips",
             f"the {n} seeds' networks, each image and its mirror image", f"{ens_tta:.1f}"),
        ], columns=["source", "what", "test accuracy (%)"])
    values = {
        "best_config": f"{best_net.describe()}; " + ", ".join(
            f"{k} = {v}" for k, v in best_train.to_dict().items()
            if k not in ("seed", "keep_test_probs", "dtype", "evals_per_cycle")),
        "best_preset": params.best,
        "n_train_text": f"{len(y_train(data)):,}", "n_val_text": f"{len(data.val.y):,}",
        "recipe_n_val_text": f"{N_VAL:,}",  # what the recipe holds out, for comparison
        "best_mean": mean, "best_std": std, "best_half_width": half, "n_seeds": n,
        "best_minutes": float(walls.mean() / 60), "best_max_minutes": float(walls.max() / 60),
        "best_seed0": float(single[0]), "best_seed0_seed": int(seeds[0]),
        "tta_mean": float(single_tta.mean()), "tta_gain": tta["gain"],
        "tta_gain_text": format_gain(tta),
        "ensemble": float(ens), "ensemble_tta": float(ens_tta),
        "goal_single": goal_sentence(mean, half, n, walls.max() / 60, 67.0, 10.0),
        "goal_ensemble": ensemble_sentence(by_members, 70.0, float(walls.mean() / 60)),
        "ablation_minutes": float(runs_a["wall_time"].mean() / 60),
        "ablation_caveat": small_scale_caveat(
            ablation_raw, best_train, params.tricks, 1 if params.smoke else params.ablation_epochs,
            best_train.n_steps * best_train.n_batch / len(y_train(data))),
        "n_runs": len(runs),
        "run_note": run_note(params.smoke, len(y_train(data)), clock(), f"{len(runs)} runs",
                             smoke_detail="tiny networks and schedules"),
        "config_file": str(config_file) if config_file else "(not written: no results_dir)",
    }
    best_table = runs_b[["seed", "test_accuracy", "val_accuracy", "wall_time"]].assign(
        test_with_flips=single_tta, minutes=walls / 60)
    tables = {"ablation": shown_ablation, "best_runs": percent_table(best_table),
              "per_class": percent_table(per_class), "literature": literature,
              "runs": percent_table(runs.drop(columns=["lam"]))}
    out = ChapterOutput("pushing_the_mlp", params, values, tables, figures,
                        {"data": recipe.data_summary(data), "best_network": best_net.to_dict(),
                         "best_train": best_train.to_dict(), "seeds": seeds, "runs": runs,
                         "ablation": ablation_raw, "points": points,
                         "confusion": matrix.tolist()},
                        trainings, clock())
    out.save()
    return out


def y_train(data) -> np.ndarray:
    return data.train.y


def goal_sentence(mean: float, half: float, n: int, max_minutes: float, goal: float,
                  budget: float) -> str:
    """Whether the best single MLP meets the goal (mean over seeds, each run within budget)."""
    interval = f" ± {half:.2f} (95 % interval of the mean)" if np.isfinite(half) else ""
    acc = "meets" if mean >= goal else "misses"
    time = "within" if max_minutes <= budget else "over"
    return (f"the best single MLP reaches {mean:.2f} %{interval} over {n} seeds, the longest "
            f"run taking {max_minutes:.1f} min: it {acc} the {goal:.0f} % goal, {time} the "
            f"{budget:.0f}-minute budget on this run's machine")


__all__ = ["Parameters", "run", "TRICKS", "PRESETS", "pareto_front", "paired_gain"]
