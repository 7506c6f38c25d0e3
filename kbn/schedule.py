"""The cyclical (triangular) learning rate as a pure function of the update step."""

from __future__ import annotations

import numpy as np


def cyclical_lr(t, eta_min: float, eta_max: float, n_s: int):
    """Learning rate at update step ``t`` (an int or an array of ints, t >= 0).

    Rises linearly from ``eta_min`` at t = 0 to ``eta_max`` at t = n_s, falls back to
    ``eta_min`` at t = 2 n_s, and repeats with period 2 n_s (Smith, 2015).
    """
    t = np.asarray(t)
    if np.any(t < 0):
        raise ValueError(f"step t must be >= 0, got {t.min()}")
    # distance into the current cycle, folded so the falling half mirrors the rising one
    phase = np.mod(t, 2 * n_s)
    rise = np.where(phase <= n_s, phase, 2 * n_s - phase) / n_s
    eta = eta_min + rise * (eta_max - eta_min)
    return float(eta) if eta.ndim == 0 else eta


# Fraction of the steps the one-cycle schedule spends warming up (Smith & Topin 2019 use
# 0.3-0.45 with a symmetric descent; a short warm-up then a long cosine descent is the
# common modern variant).
ONE_CYCLE_WARMUP = 0.2


def cosine_lr(t, eta_min: float, eta_max: float, n_steps: int):
    """Half a cosine from ``eta_max`` at t = 0 down to ``eta_min`` at t = n_steps
    (Loshchilov & Hutter, 2017, without restarts); t an int or an array of ints in [0, n_steps]."""
    t = _steps(t, n_steps)
    eta = eta_min + 0.5 * (eta_max - eta_min) * (1.0 + np.cos(np.pi * t / n_steps))
    return float(eta) if eta.ndim == 0 else eta


def one_cycle_lr(t, eta_min: float, eta_max: float, n_steps: int,
                 warmup: float = ONE_CYCLE_WARMUP):
    """Linear warm-up from ``eta_min`` to ``eta_max`` over the first ``warmup`` fraction of
    ``n_steps``, then half a cosine down to ``eta_min`` at t = n_steps."""
    t = _steps(t, n_steps)
    t_up = max(1.0, warmup * n_steps)
    rising = eta_min + (eta_max - eta_min) * t / t_up
    falling = eta_min + 0.5 * (eta_max - eta_min) * (
        1.0 + np.cos(np.pi * (t - t_up) / max(1.0, n_steps - t_up)))
    eta = np.where(t < t_up, rising, falling)
    return float(eta) if eta.ndim == 0 else eta


def _steps(t, n_steps: int) -> np.ndarray:
    t = np.asarray(t, dtype=np.float64)
    if np.any(t < 0) or np.any(t > n_steps):
        raise ValueError(f"step t must be in [0, n_steps={n_steps}], got {t.min()}..{t.max()}")
    return t


def learning_rates(cfg) -> np.ndarray:
    """(n_steps,) the learning rate of each update step of a :class:`kbn.config.TrainConfig`,
    by its ``schedule`` ("cyclical" is the recipe's :func:`cyclical_lr`)."""
    t = np.arange(cfg.n_steps)
    if cfg.schedule == "cyclical":
        return cyclical_lr(t, cfg.eta_min, cfg.eta_max, cfg.n_s)
    if cfg.schedule == "cosine":
        return cosine_lr(t, cfg.eta_min, cfg.eta_max, cfg.n_steps)
    if cfg.schedule == "one_cycle":
        return one_cycle_lr(t, cfg.eta_min, cfg.eta_max, cfg.n_steps)
    raise ValueError(f"unknown schedule {cfg.schedule!r}")
