"""kbn.plots: every function returns a Figure with the expected axes and lines."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from kbn import TrainConfig, plots
from kbn.trainer import HISTORY_KEYS


def history(n=6, shift=0.0):
    steps = np.arange(1, n + 1) * 10
    h = {k: [] for k in HISTORY_KEYS}
    h["step"], h["epoch"], h["eta"] = list(steps), list(steps / 20), [0.01] * n
    for split in ("train", "val"):
        h[f"{split}_cost"] = list(2.5 - 0.1 * np.arange(n) + shift)
        h[f"{split}_loss"] = list(2.3 - 0.1 * np.arange(n) + shift)
        h[f"{split}_accuracy"] = list(0.2 + 0.05 * np.arange(n))
    return h


def test_training_curves_three_panels_train_and_val_per_label():
    curves = {"no BN": [history(), history(shift=0.1), history(shift=0.2)], "BN": [history()]}
    fig = plots.training_curves(curves, title="t")
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 3
    for ax in fig.axes:
        assert len(ax.lines) == 4  # 2 labels x (train, val)
        styles = {line.get_linestyle() for line in ax.lines}
        assert styles == {"--", "-"}
    # the seed spread of 'no BN' is drawn as bands (one per split), 'BN' has one seed: none
    assert len(fig.axes[0].collections) == 2
    # accuracy is plotted in percent, and lines are the mean over seeds
    acc = fig.axes[2].lines[0].get_ydata()
    assert acc[0] == pytest.approx(20.0)
    cost = fig.axes[0].lines[0].get_ydata()
    assert cost[0] == pytest.approx(2.5 + 0.1)
    assert fig.axes[0].get_legend() is not None


def test_training_curves_cut_to_shortest_history():
    fig = plots.training_curves({"BN": [history(6), history(4)]}, metrics=("loss",))
    assert len(fig.axes) == 1 and len(fig.axes[0].lines[0].get_xdata()) == 4


def test_lr_schedule_one_line_between_eta_min_and_max():
    cfg = TrainConfig(n_s=50, n_cycles=2)
    fig = plots.lr_schedule(cfg)
    (ax,) = fig.axes
    (line,) = ax.lines
    y = line.get_ydata()
    assert len(y) == cfg.n_steps + 1
    assert y.min() == pytest.approx(cfg.eta_min) and y.max() == pytest.approx(cfg.eta_max)
    assert y[cfg.n_s] == pytest.approx(cfg.eta_max)


def test_accuracy_vs_lambda_log_axis_and_markers():
    trials = pd.DataFrame({"stage": ["coarse"] * 3 + ["fine"] * 2,
                           "lambda": [1e-5, 1e-3, 1e-1, 2e-3, 5e-3],
                           "val_accuracy": [50, 53, 40, 54, 53.5],
                           "test_accuracy": [49, 52, 41, 53, 53]})
    fig = plots.accuracy_vs_lambda(trials, chosen_lambda=2e-3, reference_lambda=3.2e-3)
    (ax,) = fig.axes
    assert ax.get_xscale() == "log"
    assert len(ax.lines) == 2 * 2 + 2  # (val, test) per stage + chosen + reference
    labels = [line.get_label() for line in ax.lines]
    assert "coarse: validation" in labels and "fine: test" in labels
    no_ref = plots.accuracy_vs_lambda(trials)
    assert len(no_ref.axes[0].lines) == 4


def test_init_curves_one_panel_per_initialisation():
    curves = {name: {"no BN": [history()], "BN": [history()]}
              for name in ("σ = 1e-01", "σ = 1e-03", "σ = 1e-04", "He", "Xavier")}
    fig = plots.init_curves(curves, metric="loss")
    assert len(fig.axes) == 5  # a 2 x 3 grid without its empty cell
    assert [ax.get_title() for ax in fig.axes] == list(curves)
    assert all(len(ax.lines) == 4 for ax in fig.axes)
    assert len(plots.init_curves(dict(list(curves.items())[:2])).axes) == 2


def test_save_figure_writes_png(tmp_path):
    fig = plots.lr_schedule(TrainConfig(n_s=10, n_cycles=1, evals_per_cycle=2))
    path = plots.save_figure(fig, tmp_path / "sub" / "lr.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_lambda_race_dots_per_seed_mean_line_and_markers():
    race = pd.DataFrame({"lam": [1e-3, 1e-3, 3e-3, 3e-3, 8e-3, 8e-3],
                         "seed": [0, 1, 0, 1, 0, 1],
                         "test_accuracy": [52.0, 51.0, 51.5, 50.5, 10.0, 10.0]})
    fig = plots.lambda_race(race, lambdas={"original's λ": 3.246e-3, "our λ": 8e-3},
                            chance=10.0, escaped=20.0, title="t")
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"
    labels = [line.get_label() for line in ax.lines]
    assert labels[:3] == ["seed 0", "seed 1", "mean over seeds"]
    assert list(ax.lines[0].get_ydata()) == [52.0, 51.5, 10.0]  # seed 0, by lambda
    assert list(ax.lines[2].get_ydata()) == [51.5, 51.0, 10.0]  # the mean per lambda
    assert "original's λ = 3.25e-03" in labels and "our λ = 8.00e-03" in labels
    assert "chance (10 %)" in labels and "escape threshold (20 %)" in labels
