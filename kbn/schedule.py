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
