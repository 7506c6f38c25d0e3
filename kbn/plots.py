"""The study's figures. Every function returns a :class:`matplotlib.figure.Figure`.

Figures are built with the object-oriented API (``Figure()``, no pyplot), so they need no
GUI backend, are never shown twice in a notebook, and render with Agg when saved:
``save_figure(fig, path)`` writes a PNG.

Histories are the ``Result.history`` dicts of :mod:`kbn.trainer` (keys ``step``,
``epoch``, ``eta``, ``{train,val}_{cost,loss,accuracy}``). Where several histories
(seeds) are given for one label, the line is their mean and the band their spread
(min..max).
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

from .config import TrainConfig
from .schedule import cyclical_lr

METRIC_LABELS = {"cost": "cost (loss + L2)", "loss": "cross-entropy loss", "accuracy": "accuracy (%)"}
SPLIT_STYLE = {"train": "--", "val": "-"}
SPLIT_NAME = {"train": "train", "val": "validation"}
LABEL_COLOURS = {"no BN": "tab:red", "BN": "tab:blue"}


def _colour(label: str, i: int) -> str:
    return LABEL_COLOURS.get(label, f"C{i}")


def _stack(histories: Sequence[Mapping], key: str) -> np.ndarray:
    """(n_histories, n_points) array of one history key; histories are cut to the shortest
    (a diverged run stops early)."""
    n = min(len(h[key]) for h in histories)
    a = np.array([np.asarray(h[key][:n], dtype=float) for h in histories])
    return a * 100 if key.endswith("accuracy") else a


def _plot_split(ax, histories: Sequence[Mapping], metric: str, split: str, x: str,
                colour: str, label: str) -> None:
    ys = _stack(histories, f"{split}_{metric}")
    xs = _stack(histories, x)[0] if ys.shape[1] else np.array([])
    ax.plot(xs, ys.mean(axis=0), SPLIT_STYLE[split], color=colour,
            label=f"{label}, {SPLIT_NAME[split]}")
    if len(histories) > 1 and ys.shape[1]:
        ax.fill_between(xs, ys.min(axis=0), ys.max(axis=0), color=colour, alpha=0.15, lw=0)


def training_curves(curves: Mapping[str, Sequence[Mapping]],
                    metrics: Sequence[str] = ("cost", "loss", "accuracy"),
                    x: str = "epoch", title: str | None = None) -> Figure:
    """One panel per metric; in each, train (dashed) and validation (solid) for every label.

    curves: {label (e.g. 'no BN', 'BN'): [history, ...]}. Lines per panel: 2 x labels.
    """
    fig = Figure(figsize=(4.2 * len(metrics), 3.6), layout="constrained")
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    for ax, metric in zip(axes, metrics):
        for i, (label, hs) in enumerate(curves.items()):
            for split in ("train", "val"):
                _plot_split(ax, hs, metric, split, x, _colour(label, i), label)
        ax.set_xlabel("epoch" if x == "epoch" else "update step")
        ax.set_ylabel(METRIC_LABELS.get(metric, metric))
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize="small")
    if title:
        fig.suptitle(title)
    return fig


def lr_schedule(train_config: TrainConfig, title: str | None = None) -> Figure:
    """The cyclical learning rate over the whole training run (one line)."""
    cfg = train_config
    t = np.arange(cfg.n_steps + 1)
    fig = Figure(figsize=(6.0, 3.0), layout="constrained")
    ax = fig.subplots()
    ax.plot(t, cyclical_lr(t, cfg.eta_min, cfg.eta_max, cfg.n_s), color="tab:green")
    ax.set_xlabel("update step")
    ax.set_ylabel("learning rate η")
    ax.set_xlim(0, cfg.n_steps)
    ax.set_title(title or (f"cyclical learning rate: η in [{cfg.eta_min:g}, {cfg.eta_max:g}], "
                           f"n_s = {cfg.n_s}, {cfg.n_cycles} cycles"), fontsize="medium")
    ax.grid(alpha=0.3)
    return fig


def accuracy_vs_lambda(trials, chosen_lambda: float | None = None,
                       reference_lambda: float | None = None, title: str | None = None) -> Figure:
    """Validation and test accuracy of every trial against lambda (log x axis).

    trials: DataFrame with columns stage, lambda, val_accuracy, test_accuracy (%), as
    :func:`kbn.experiments.lambda_search.trials_table`. One marker line per stage and
    split, plus vertical lines at the chosen and the original's lambda (if given).
    """
    fig = Figure(figsize=(6.5, 4.0), layout="constrained")
    ax = fig.subplots()
    markers = {"coarse": "o", "fine": "s"}
    for i, (stage, t) in enumerate(trials.groupby("stage", sort=False)):
        t = t.sort_values("lambda")
        m = markers.get(stage, "^")
        ax.plot(t["lambda"], t["val_accuracy"], m, ls="none", color="tab:blue",
                label=f"{stage}: validation", ms=7)
        ax.plot(t["lambda"], t["test_accuracy"], m, ls="none", mfc="none", color="tab:orange",
                label=f"{stage}: test", ms=7)
    if chosen_lambda is not None:
        ax.axvline(chosen_lambda, color="tab:blue", lw=1, label=f"chosen λ = {chosen_lambda:.2e}")
    if reference_lambda is not None:
        ax.axvline(reference_lambda, color="0.4", lw=1, ls=":",
                   label=f"original's λ = {reference_lambda:.1e}")
    _finish_lambda_axes(ax, "accuracy (%)", title)
    return fig


def lambda_race(race, lambdas: Mapping[str, float] | None = None, chance: float | None = None,
                escaped: float | None = None, title: str | None = None) -> Figure:
    """Test accuracy of every run against lambda (log x axis): one dot per seed, a line
    through the mean per lambda, vertical lines at ``lambdas`` ({label: lambda}), and
    horizontal ones at chance and at the escape threshold.

    race: DataFrame with columns lam, seed, test_accuracy (%), as
    :func:`kbn.experiments.sigma_sensitivity.race_table`.
    """
    fig = Figure(figsize=(6.5, 4.0), layout="constrained")
    ax = fig.subplots()
    for i, (seed, g) in enumerate(race.groupby("seed", sort=True)):
        ax.plot(g["lam"], g["test_accuracy"], "o", ls="none", ms=6, alpha=0.7,
                color=f"C{i % 10}", label=f"seed {seed}")
    mean = race.groupby("lam", sort=True)["test_accuracy"].mean()
    ax.plot(mean.index, mean.to_numpy(), "-", color="0.2", lw=1.2, label="mean over seeds")
    styles = ["--", ":", "-."]
    for j, (label, lam) in enumerate((lambdas or {}).items()):
        ax.axvline(lam, color="0.4", lw=1, ls=styles[j % len(styles)], label=f"{label} = {lam:.2e}")
    if chance is not None:
        ax.axhline(chance, color="tab:red", lw=0.8, label=f"chance ({chance:g} %)")
    if escaped is not None:
        ax.axhline(escaped, color="tab:red", lw=0.8, ls=":", label=f"escape threshold ({escaped:g} %)")
    _finish_lambda_axes(ax, "test accuracy (%)", title)
    return fig


def _finish_lambda_axes(ax, ylabel: str, title: str | None) -> None:
    """Log λ axis, labels, grid, legend and title of an accuracy-against-λ plot."""
    ax.set_xscale("log")
    ax.set_xlabel("λ (L2 weight)")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize="small")
    if title:
        ax.set_title(title, fontsize="medium")


def init_curves(curves: Mapping[str, Mapping[str, Sequence[Mapping]]], metric: str = "loss",
                x: str = "epoch", title: str | None = None, share_y: bool = True,
                max_cols: int = 3) -> Figure:
    """One panel per initialisation (rows of ``max_cols``); in each, train/validation
    ``metric`` for BN and no BN.

    curves: {initialisation: {'no BN': [history, ...], 'BN': [...]}}.
    """
    n = len(curves)
    ncols = min(n, max_cols)
    nrows = -(-n // ncols)
    fig = Figure(figsize=(4.0 * ncols, 3.2 * nrows + 0.4), layout="constrained")
    grid = fig.subplots(nrows, ncols, squeeze=False, sharey=share_y)
    for ax in grid.flat[n:]:  # unused cells of the last row
        fig.delaxes(ax)
    axes = grid.flat[:n]
    for ax, (init, by_bn) in zip(axes, curves.items()):
        for i, (label, hs) in enumerate(by_bn.items()):
            for split in ("train", "val"):
                _plot_split(ax, hs, metric, split, x, _colour(label, i), label)
        ax.set_title(init, fontsize="medium")
        ax.set_xlabel("epoch" if x == "epoch" else "update step")
        ax.grid(alpha=0.3)
    for row in grid:
        row[0].set_ylabel(METRIC_LABELS.get(metric, metric))
    axes[0].legend(fontsize="small")
    if title:
        fig.suptitle(title)
    return fig


def save_figure(fig: Figure, path, dpi: int = 120) -> Path:
    """Write ``fig`` as PNG to ``path`` (parent folders created); return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, format="png")
    return path
