"""A k-layer MLP with optional batch normalisation on every hidden layer.

Layer l (1..k-1):  s = x W_l + b_l  ->  [BN: gamma_l * normalise(s) + beta_l]  ->  ReLU
Layer k:           scores = x W_k + b_k  ->  softmax

With ``bn_after_relu`` BN moves behind the ReLU: s = x W_l + b_l -> ReLU -> BN.

Parameters and gradients are dicts with the same keys (``W1``, ``b1``, ``gamma1``,
``beta1``, ..., ``Wk``, ``bk``), so the update, the L2 term and the gradient check loop
over keys without knowing the architecture.
"""

from __future__ import annotations

import numpy as np

from . import layers
from .config import NetworkConfig

EVAL_BLOCK = 1000  # rows per evaluation block: each layer's activations stay in cache


def init_params(config: NetworkConfig, d_in: int, n_classes: int,
                rng: np.random.Generator, dtype=np.float64) -> dict[str, np.ndarray]:
    """Draw the weights; b = 0, gamma = 1, beta = 0.

    He: N(0, 2/fan_in), Xavier: N(0, 1/fan_in), sigma: N(0, sigma^2) in every layer.
    W_l has shape (fan_in, fan_out); b_l, gamma_l, beta_l have shape (fan_out,).
    """
    sizes = [d_in, *config.hidden, n_classes]
    params: dict[str, np.ndarray] = {}
    for l, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:]), start=1):
        if config.init == "he":
            std = np.sqrt(2.0 / fan_in)
        elif config.init == "xavier":
            std = np.sqrt(1.0 / fan_in)
        else:
            std = config.sigma
        params[f"W{l}"] = (std * rng.standard_normal((fan_in, fan_out))).astype(dtype)
        params[f"b{l}"] = np.zeros(fan_out, dtype=dtype)
        if config.batch_norm and l < len(sizes) - 1:
            params[f"gamma{l}"] = np.ones(fan_out, dtype=dtype)
            params[f"beta{l}"] = np.zeros(fan_out, dtype=dtype)
    return params


def parameter_keys(config: NetworkConfig) -> list[str]:
    """The keys of ``init_params(config, ...)``, in order, without drawing anything."""
    keys = []
    for l in range(1, config.n_layers + 1):
        keys += [f"W{l}", f"b{l}"]
        if config.batch_norm and l < config.n_layers:
            keys += [f"gamma{l}", f"beta{l}"]
    return keys


class Network:
    """Parameters, BN moving averages and the forward/backward passes of one MLP.

    ``params``: dict of arrays as described in the module docstring.
    ``averages``: ``mean{l}``, ``var{l}`` (M_l,) moving averages of the BN batch
    statistics, empty until the first training-mode pass (they are initialised from it).
    """

    def __init__(self, config: NetworkConfig, params: dict[str, np.ndarray],
                 averages: dict[str, np.ndarray] | None = None):
        self.config = config
        self.params = params
        self.averages = {} if averages is None else averages

    @classmethod
    def create(cls, config: NetworkConfig, d_in: int, n_classes: int,
               rng: np.random.Generator, dtype=np.float64) -> "Network":
        return cls(config, init_params(config, d_in, n_classes, rng, dtype))

    @property
    def n_layers(self) -> int:
        return self.config.n_layers

    @property
    def dtype(self):
        return self.params["W1"].dtype

    # ---------------------------------------------------------------- forward
    def forward(self, X: np.ndarray, train: bool, update_averages: bool = False):
        """X: (N, d) -> scores (N, K), caches (one tuple per layer).

        ``train``: BN uses batch statistics (and its backward is then exact); otherwise
        the moving averages. ``update_averages`` (train only) folds this batch's
        statistics into the moving averages.
        """
        p, k, cfg = self.params, self.n_layers, self.config
        caches = []
        x = X
        after = cfg.bn_after_relu
        for l in range(1, k):
            s, aff = layers.affine_forward(x, p[f"W{l}"], p[f"b{l}"])
            bn = None
            if after:
                s, act = layers.relu_forward(s)
            if cfg.batch_norm:
                if train:
                    s, bn, mu, var = layers.batchnorm_forward(
                        s, p[f"gamma{l}"], p[f"beta{l}"], cfg.eps)
                    if update_averages:
                        self._update_average(l, mu, var)
                else:
                    mean, var = self._averages_for(l)
                    s, bn, _, _ = layers.batchnorm_forward(
                        s, p[f"gamma{l}"], p[f"beta{l}"], cfg.eps, mean, var)
            if after:
                x = s
            else:
                x, act = layers.relu_forward(s)
            caches.append((aff, bn, act))
        scores, aff = layers.affine_forward(x, p[f"W{k}"], p[f"b{k}"])
        caches.append((aff, None, None))
        return scores, caches

    def _update_average(self, l: int, mu: np.ndarray, var: np.ndarray) -> None:
        a = self.config.alpha
        if f"mean{l}" not in self.averages:  # first batch: start from its statistics
            self.averages[f"mean{l}"] = mu.copy()
            self.averages[f"var{l}"] = var.copy()
        else:
            m, v = self.averages[f"mean{l}"], self.averages[f"var{l}"]
            m *= a
            m += (1 - a) * mu
            v *= a
            v += (1 - a) * var

    def _averages_for(self, l: int):
        try:
            return self.averages[f"mean{l}"], self.averages[f"var{l}"]
        except KeyError:
            raise RuntimeError(
                "evaluation-mode BN needs moving averages, and this network has not seen a "
                "training batch yet: train it first, or call forward(X, train=True)"
            ) from None

    # ---------------------------------------------------------------- backward
    def backward(self, dscores: np.ndarray, caches, lam: float) -> dict[str, np.ndarray]:
        """Gradients of the cost for every parameter (same keys as ``params``).

        dscores: (N, K), gradient of the mean loss w.r.t. the scores. The L2 term
        contributes 2 lam W to each dW. Only valid after a ``train=True`` forward.
        (The trainer runs ``kbn.train_step.TrainStep``: the same maths for a stack of networks,
        with buffers made once.)
        """
        p, k = self.params, self.n_layers
        g: dict[str, np.ndarray] = {}
        aff, _, _ = caches[-1]
        dx, g[f"W{k}"], g[f"b{k}"] = layers.affine_backward(dscores, aff)
        for l in range(k - 1, 0, -1):
            aff, bn, act = caches[l - 1]
            if self.config.bn_after_relu:  # BN's backward first, then the ReLU's
                ds, g[f"gamma{l}"], g[f"beta{l}"] = layers.batchnorm_backward(dx, bn)
                ds = layers.relu_backward(ds, act)
            else:
                ds = layers.relu_backward(dx, act)
                if bn is not None:
                    ds, g[f"gamma{l}"], g[f"beta{l}"] = layers.batchnorm_backward(ds, bn)
            dx, g[f"W{l}"], g[f"b{l}"] = layers.affine_backward(ds, aff, need_dx=l > 1)
        if lam:
            for l in range(1, k + 1):
                g[f"W{l}"] += (2 * lam) * p[f"W{l}"]
        return g

    # ---------------------------------------------------------------- cost
    def l2(self) -> float:
        """sum over layers of ||W_l||^2 (biases, gamma and beta are not regularised)."""
        return float(sum(np.vdot(self.params[f"W{l}"], self.params[f"W{l}"])
                         for l in range(1, self.n_layers + 1)))

    def loss_and_grads(self, X, y, lam: float, update_averages: bool = False):
        """Training-mode loss (no L2 term) and the exact gradient of the *cost* on one batch.

        X: (N, d), y: (N,) ints -> loss (float), grads (dict).
        """
        scores, caches = self.forward(X, train=True, update_averages=update_averages)
        loss, dscores, _ = layers.softmax_cross_entropy(scores, y)
        return loss, self.backward(dscores, caches, lam)

    def cost_and_grads(self, X, y, lam: float, update_averages: bool = False):
        """Training-mode cost and its exact gradient on one batch.

        X: (N, d), y: (N,) ints -> cost (float), loss (float), grads (dict).
        """
        loss, grads = self.loss_and_grads(X, y, lam, update_averages)
        return loss + lam * self.l2(), loss, grads

    def cost(self, X, y, lam: float, train: bool = False) -> float:
        """Cost = mean cross-entropy + lam * sum ||W||^2, without touching the averages."""
        scores, _ = self.forward(X, train=train)
        loss, _, _ = layers.softmax_cross_entropy(scores, y)
        return loss + lam * self.l2()

    def inference_layers(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """(W, b) of each layer for evaluation mode, with BN folded into them.

        With fixed statistics BN is affine: gamma (x W + b - mean) / sqrt(var + eps) + beta
        = x (W * scale) + (b - mean) * scale + beta, with scale = gamma / sqrt(var + eps).
        Folding it saves three passes over every activation block when evaluating.
        """
        p, cfg, folded = self.params, self.config, []
        if cfg.bn_after_relu:
            return self._inference_layers_after_relu()
        for l in range(1, self.n_layers + 1):
            W, b = p[f"W{l}"], p[f"b{l}"]
            if cfg.batch_norm and l < self.n_layers:
                mean, var = self._averages_for(l)
                scale = p[f"gamma{l}"] / np.sqrt(var + cfg.eps)
                W, b = W * scale, (b - mean) * scale + p[f"beta{l}"]
            folded.append((W, b))
        return folded

    def _inference_layers_after_relu(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """BN after ReLU, folded forward: layer l's BN (h - mean) * scale + beta, with
        scale = gamma / sqrt(var + eps), is affine in the ReLU output h, so it folds into
        layer l + 1: x W' + b' with W' = scale[:, None] * W and b' = (beta - mean * scale) W + b.
        Layer 1 keeps its weights; every layer is then ReLU(x W + b) as without BN."""
        p, cfg = self.params, self.config
        folded = [(p["W1"], p["b1"])]
        for l in range(2, self.n_layers + 1):
            mean, var = self._averages_for(l - 1)
            scale = p[f"gamma{l - 1}"] / np.sqrt(var + cfg.eps)
            shift = p[f"beta{l - 1}"] - mean * scale
            W, b = p[f"W{l}"], p[f"b{l}"]
            folded.append((W * scale[:, None], shift @ W + b))
        return folded

    def evaluate(self, X, y, lam: float, block: int = EVAL_BLOCK) -> dict[str, float]:
        """Evaluation-mode cost, loss and accuracy over a whole split, in blocks of rows.

        X: (N, d), y: (N,) -> {"cost", "loss", "accuracy"}. Blocks of 1000 rows keep each
        layer's activations in cache; every block reuses the same buffers.
        """
        n = X.shape[0]
        if n == 0:  # e.g. no validation split
            return {"cost": float("nan"), "loss": float("nan"), "accuracy": float("nan")}
        folded = self.inference_layers()
        rows = min(block, n)
        dt = np.result_type(X, folded[0][0])
        hidden = [np.empty((rows, W.shape[1]), dt) for W, _ in folded[:-1]]
        zeros = [np.zeros_like(a) for a in hidden]  # max(a, zeros) is ~3x faster than max(a, 0)
        W_out, b_out = folded[-1]
        # scores kept transposed (K, rows): reductions over the K classes then run along
        # the long axis, ~10x faster than max(axis=1) over 10 columns
        scores_t = np.empty((W_out.shape[1], rows), dt)
        class_ones, cols = np.ones(W_out.shape[1], dt), np.arange(rows)
        loss_sum, correct = 0.0, 0
        for start in range(0, n, rows):
            x, yb = X[start:start + rows], y[start:start + rows]
            m = x.shape[0]
            for (W, b), a, zero in zip(folded[:-1], hidden, zeros):
                a = np.matmul(x, W, out=a[:m])
                a += b
                x = np.maximum(a, zero[:m], out=a)
            scores = np.matmul(W_out.T, x.T, out=scores_t[:, :m])
            scores += b_out[:, None]
            correct += int(np.count_nonzero(scores.argmax(axis=0) == yb))
            scores -= scores.max(axis=0)  # log-sum-exp, as in layers.softmax_cross_entropy
            picked = float(scores[yb, cols[:m]].sum())
            np.exp(scores, out=scores)
            loss_sum += float(np.log(class_ones @ scores).sum()) - picked
        loss = loss_sum / n
        return {"cost": loss + lam * self.l2(), "loss": loss, "accuracy": correct / n}

    def predict(self, X: np.ndarray) -> np.ndarray:
        """X: (N, d) -> predicted labels (N,)."""
        scores, _ = self.forward(X, train=False)
        return scores.argmax(axis=1)
