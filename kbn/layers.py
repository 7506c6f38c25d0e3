"""Layers as forward/backward pairs (samples are rows).

Each ``x_forward`` returns ``(out, cache)``; each ``x_backward(dout, cache)`` returns the
gradient with respect to the layer input followed by those of its parameters. Shapes:
N samples, D inputs, M outputs.
"""

from __future__ import annotations

import numpy as np


def affine_forward(x: np.ndarray, W: np.ndarray, b: np.ndarray):
    """out = x W + b.

    x: (N, D), W: (D, M), b: (M,) -> out: (N, M); cache = (x, W).
    """
    out = x @ W
    out += b
    return out, (x, W)


def affine_backward(dout: np.ndarray, cache, need_dx: bool = True):
    """dout: (N, M) -> dx (N, D) or None, dW (D, M), db (M,).

    ``need_dx=False`` skips dx for the first layer, whose input needs no gradient.
    """
    x, W = cache
    dx = dout @ W.T if need_dx else None
    return dx, x.T @ dout, dout.sum(axis=0)


def relu_forward(x: np.ndarray):
    """out = max(x, 0) elementwise. x: (N, M) -> out: (N, M); cache = out.

    The output doubles as the mask for the backward pass, so nothing else is kept.
    """
    out = np.maximum(x, 0)
    return out, out


def relu_backward(dout: np.ndarray, cache) -> np.ndarray:
    """dout: (N, M) -> dx: (N, M), zero where the unit was off."""
    out = cache
    dx = dout * (out > 0)
    return dx


def batchnorm_forward(x, gamma, beta, eps, mean=None, var=None):
    """Batch normalisation of each of the M features, then scale and shift.

    x: (N, M); gamma, beta: (M,).
    Training mode (``mean`` and ``var`` None): normalise with the batch mean and the
    *biased* batch variance, which are returned so the caller can update its moving
    averages. Evaluation mode: normalise with the given ``mean``, ``var`` (M,).

    Returns out (N, M), cache, batch_mean (M,), batch_var (M,).
    """
    if mean is None:
        mean = x.mean(axis=0)
        centred = x - mean
        var = np.einsum("ij,ij->j", centred, centred) / x.shape[0]
    else:
        centred = x - mean
    inv_std = 1.0 / np.sqrt(var + eps)
    xhat = centred
    xhat *= inv_std  # in place: centred is not needed any more
    out = xhat * gamma
    out += beta
    return out, (xhat, gamma, inv_std), mean, var


def batchnorm_backward(dout, cache):
    """Backward pass through training-mode BN, with the batch statistics' dependence on x.

    dout: (N, M) -> dx (N, M), dgamma (M,), dbeta (M,).

    With xhat = (x - mu) * inv_std, the chain rule through mu and var collapses to
    dx = gamma * inv_std * (dout - mean(dout) - xhat * mean(dout * xhat)),
    which is the form used here (one pass, no N x N Jacobian).
    """
    xhat, gamma, inv_std = cache
    n = dout.shape[0]
    dbeta = dout.sum(axis=0)
    dgamma = np.einsum("ij,ij->j", dout, xhat)
    dx = xhat * (dgamma / n)
    np.subtract(dout, dx, out=dx)
    dx -= dbeta / n
    dx *= gamma * inv_std
    return dx, dgamma, dbeta


def softmax(scores: np.ndarray) -> np.ndarray:
    """Row-wise softmax, shifted by the row max so exp cannot overflow.

    scores: (N, K) -> probabilities (N, K).
    """
    p = scores - scores.max(axis=1, keepdims=True)
    np.exp(p, out=p)
    p /= p.sum(axis=1, keepdims=True)
    return p


def softmax_cross_entropy(scores: np.ndarray, y: np.ndarray):
    """Mean cross-entropy of softmax(scores) against integer labels.

    scores: (N, K), y: (N,) ints in [0, K) -> loss (float), dscores (N, K), P (N, K).
    The loss is computed from log-sum-exp, not log(P), so it stays finite when a
    probability underflows to zero.
    """
    n = scores.shape[0]
    shifted = scores - scores.max(axis=1, keepdims=True)
    log_z = np.log(np.exp(shifted).sum(axis=1))
    rows = np.arange(n)
    loss = float(np.mean(log_z - shifted[rows, y]))
    P = np.exp(shifted - log_z[:, None])
    dscores = P.copy()
    dscores[rows, y] -= 1.0
    dscores /= n
    return loss, dscores, P
