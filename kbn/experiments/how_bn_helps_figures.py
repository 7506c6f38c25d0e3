"""The figures of chapter 5 (how BN helps), from recordings (:mod:`kbn.recorder`) and run
tables. Object-oriented matplotlib as in :mod:`kbn.plots`; where several seeds are given
the line is their mean (geometric for norms and ratios) and the band their range."""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ..plots import LABEL_COLOURS

PCT_STYLE = {15: ":", 50: "-", 85: "--"}


def _colour(label: str, i: int) -> str:
    return LABEL_COLOURS.get(label, f"C{i}")


def _epochs(rec: Mapping, epochs_per_step: float) -> np.ndarray:
    return np.asarray(rec["steps"], float) * epochs_per_step


def _shortest(recs: Sequence[Mapping]) -> int:
    return min(len(r["steps"]) for r in recs)


def activations(curves: Mapping[str, Sequence[Mapping]], epochs_per_step: float,
                title: str = "") -> Figure:
    """ReLU-input percentiles (15/50/85, averaged over units) of the first, a middle and
    the last hidden layer over training; one column per label (no BN, BN)."""
    labels = list(curves)
    n_hidden = len(next(iter(curves.values()))[0]["relu_input_pct"][0])
    shown = sorted({0, n_hidden // 2, n_hidden - 1})
    fig = Figure(figsize=(4.4 * len(labels), 2.4 * len(shown)), layout="constrained")
    axes = fig.subplots(len(shown), len(labels), squeeze=False, sharex=True)
    for j, label in enumerate(labels):
        recs = [r for r in curves[label] if r]
        n = _shortest(recs)
        x = _epochs(recs[0], epochs_per_step)[:n]
        pct = np.array([np.asarray(r["relu_input_pct"][:n], float) for r in recs])  # (s, t, l, 3)
        for i, l in enumerate(shown):
            ax = axes[i, j]
            for q, p in enumerate(recs[0]["percentiles"]):
                ys = pct[:, :, l, q]
                ax.plot(x, ys.mean(axis=0), PCT_STYLE.get(p, "-"), color=_colour(label, j),
                        label=f"{p}th percentile")
                if len(recs) > 1:
                    ax.fill_between(x, ys.min(axis=0), ys.max(axis=0), color=_colour(label, j),
                                    alpha=0.15, lw=0)
            ax.set_title(f"{label}: hidden layer {l + 1}", fontsize=9)
            ax.grid(alpha=0.3)
            if j == 0:
                ax.set_ylabel("ReLU input")
            if i == len(shown) - 1:
                ax.set_xlabel("epoch")
    axes[0, 0].legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def gradient_flow(curves: Mapping[str, Sequence[Mapping]], epochs_per_step: float) -> Figure:
    """Left: ||dL/dW_l|| per layer at initialisation; right: ||dL/dW_1|| / ||dL/dW_k|| over
    training. One line per label (BN or not, initialisation), geometric mean over seeds."""
    fig = Figure(figsize=(10, 3.8), layout="constrained")
    ax0, ax1 = fig.subplots(1, 2)
    for i, (label, recs) in enumerate(curves.items()):
        recs = [r for r in recs if r]
        style = "-" if label.startswith("BN") else "--"
        # one colour per initialisation (the label's last part), whatever BN does
        colour = {"He": "C0", "Xavier": "C1"}.get(label.rsplit(", ", 1)[-1], "C2")
        norms = np.array([r["grad_norm"][0] for r in recs], float)  # (seeds, layers)
        with np.errstate(divide="ignore"):
            g0 = np.exp(np.log(norms).mean(axis=0))
        layers = np.arange(1, norms.shape[1] + 1)
        ax0.semilogy(layers, g0, style, marker="o", ms=3, color=colour, label=label)
        n = _shortest(recs)
        x = _epochs(recs[0], epochs_per_step)[:n]
        ratios = np.array([[g[0] / g[-1] if g[-1] > 0 else np.nan for g in r["grad_norm"][:n]]
                           for r in recs])
        with np.errstate(divide="ignore", invalid="ignore"):
            ax1.semilogy(x, np.exp(np.nanmean(np.log(ratios), axis=0)), style, color=colour,
                         label=label)
    ax0.set_xlabel("layer l")
    ax0.set_ylabel("‖∂L/∂W_l‖ at initialisation")
    ax0.set_xticks(layers)
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("‖∂L/∂W_1‖ / ‖∂L/∂W_k‖")
    ax1.axhline(1.0, color="grey", lw=0.8)
    for ax in (ax0, ax1):
        ax.grid(alpha=0.3, which="both")
    ax0.legend(fontsize=7)
    return fig


def landscape(curves: Mapping[str, Sequence[Mapping]], epochs_per_step: float,
              title: str = "") -> Figure:
    """Santurkar et al. (2018), Fig. 4: (a) the range of the loss along the gradient,
    (b) the range of the gradient's change, (c) the effective beta-smoothness, over training."""
    fig = Figure(figsize=(13, 3.6), layout="constrained")
    axes = fig.subplots(1, 3)
    for i, (label, recs) in enumerate(curves.items()):
        recs = [r for r in recs if r]
        n = _shortest(recs)
        x = _epochs(recs[0], epochs_per_step)[1:n]
        colour = _colour(label, i)
        loss = np.array([[np.r_[r["loss"][t], r["landscape_loss"][t]] for t in range(1, n)]
                         for r in recs], float)
        change = np.array([r["landscape_grad_change"][1:n] for r in recs], float)
        loss[~np.isfinite(loss)] = np.nan
        change[~np.isfinite(change)] = np.nan
        with np.errstate(invalid="ignore"):
            for ax, values in ((axes[0], loss), (axes[1], change)):
                lo = np.nanmean(np.nanmin(values, axis=2), axis=0)
                hi = np.nanmean(np.nanmax(values, axis=2), axis=0)
                ax.fill_between(x, lo, hi, color=colour, alpha=0.35, lw=0, label=label)
                ax.plot(x, hi, color=colour, lw=0.8)
            beta = np.array([r["beta_smoothness"][1:n] for r in recs], float)
            axes[2].plot(x, np.nanmean(beta, axis=0), color=colour, label=label)
    axes[0].set_ylabel("loss L(θ − s g), s over the step sizes")
    axes[1].set_ylabel("‖g(θ − s g) − g(θ)‖")
    axes[2].set_ylabel("effective β-smoothness")
    for ax, name in zip(axes, ("(a) loss landscape", "(b) gradient predictiveness",
                               "(c) β-smoothness")):
        ax.set_xlabel("epoch")
        ax.set_title(name, fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[1].set_yscale("log")
    axes[2].set_yscale("log")
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def learning_rate(runs: pd.DataFrame, architectures: Sequence[str]) -> Figure:
    """Test accuracy against eta_max (log), BN and not, one panel per architecture; mean
    over the finished seeds with their range, diverged runs as crosses at 0 %."""
    fig = Figure(figsize=(5 * len(architectures), 3.8), layout="constrained")
    axes = fig.subplots(1, len(architectures), squeeze=False)[0]
    for ax, arch in zip(axes, architectures):
        a = runs[runs["architecture"] == arch]
        for i, bn in enumerate((False, True)):
            label = "BN" if bn else "no BN"
            colour = _colour(label, i)
            g = a[a["batch_norm"] == bn].groupby("eta_max", sort=True)["test_accuracy"]
            mean, lo, hi = g.mean(), g.min(), g.max()
            ax.plot(mean.index, mean.values, "-o", ms=4, color=colour, label=label)
            ax.fill_between(mean.index, lo.values, hi.values, color=colour, alpha=0.15, lw=0)
            div = a[(a["batch_norm"] == bn) & a["diverged"]]
            if len(div):
                counts = div.groupby("eta_max").size()
                ax.scatter(counts.index, np.full(len(counts), 1.5 if bn else 0.5), marker="x",
                           color=colour, s=40, label=f"{label}: diverged")
                for eta, c in counts.items():
                    ax.annotate(str(c), (eta, 1.5 if bn else 0.5), textcoords="offset points",
                                xytext=(4, 4), fontsize=7, color=colour)
        ax.set_xscale("log")
        ax.set_xlabel("η_max")
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(arch, fontsize=9)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    return fig


def mode_gap(curves: Mapping[str, Sequence[Mapping]], epochs_per_step: float) -> Figure:
    """Validation accuracy with BN in evaluation mode (moving averages) and in training mode
    (each batch's own statistics) over training, one panel per architecture."""
    fig = Figure(figsize=(5 * len(curves), 3.6), layout="constrained")
    axes = fig.subplots(1, len(curves), squeeze=False)[0]
    for ax, (arch, recs) in zip(axes, curves.items()):
        recs = [r for r in recs if r]
        n = _shortest(recs)
        x = _epochs(recs[0], epochs_per_step)[1:n]
        for key, style, name in (("val_accuracy_eval_mode", "-", "evaluation mode"),
                                 ("val_accuracy_train_mode", "--", "training mode")):
            ys = 100 * np.array([r[key][1:n] for r in recs], float)
            ax.plot(x, ys.mean(axis=0), style, color="tab:blue", label=name)
            ax.fill_between(x, ys.min(axis=0), ys.max(axis=0), color="tab:blue", alpha=0.12, lw=0)
        ax.set_title(f"{arch} + BN", fontsize=9)
        ax.set_xlabel("epoch")
        ax.set_ylabel("validation accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return fig


def batch_size(runs: pd.DataFrame, train_mode: Mapping[int, Sequence[float]]) -> Figure:
    """Test accuracy against the batch size (same epochs), BN and not; with BN also the
    validation accuracy in training mode (batches of that size)."""
    fig = Figure(figsize=(5.5, 3.8), layout="constrained")
    ax = fig.subplots()
    for i, bn in enumerate((False, True)):
        label = "BN" if bn else "no BN"
        g = runs[runs["batch_norm"] == bn].groupby("n_batch", sort=True)["test_accuracy"]
        mean = g.mean()
        ax.plot(mean.index, mean.values, "-o", ms=4, color=_colour(label, i), label=f"{label}: test")
        ax.fill_between(mean.index, g.min().values, g.max().values, color=_colour(label, i),
                        alpha=0.15, lw=0)
    nbs = sorted(train_mode)
    ax.plot(nbs, [np.mean(train_mode[nb]) for nb in nbs], "--", color="tab:blue",
            label="BN: validation, training-mode BN")
    ax.set_xscale("log")
    ax.set_xticks(nbs)
    ax.set_xticklabels([str(nb) for nb in nbs])
    ax.set_xlabel("batch size (same number of epochs)")
    ax.set_ylabel("accuracy (%)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    return fig
