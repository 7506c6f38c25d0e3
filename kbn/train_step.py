"""The training step the trainer runs: forward, loss and backward with every buffer allocated once.

It computes what ``Network.loss_and_grads`` computes (``layers.py`` is the readable
reference; tests hold the two equal to float64 rounding), but a 100-sample step is bound
by per-call overhead, not arithmetic: each NumPy call on a 100 x 50 array costs ~1-3 us
whatever it does, while the first layer's two GEMMs take ~0.4 ms. So this version
- writes every array it produces into a buffer made once (``out=``);
- takes column sums and means as GEMVs with a ones vector (~1 us; ``sum(axis=0)`` ~3 us),
  and keeps the scores transposed so the reductions over classes run along the long axis;
- keeps the BN-centred pre-activations instead of xhat and folds gamma / sqrt(var + eps)
  into one vector, which saves a pass forward and one backward;
- skips adding the bias under BN: the batch mean removes it exactly (its gradient is
  zero), and it re-enters only the moving mean;
- logs each step's BN statistics and folds them into the moving averages every few
  hundred steps as one weighted sum, instead of ~8 small calls per layer and step;
- scales the loss gradient by ``grad_scale`` at the scores, so backpropagation delivers
  eta * gradient and the update needs no pass to multiply by eta;
- takes the network's weights as ``weight_scale`` times the stored ones, so the trainer
  can apply the L2 decay to that scalar instead of to every weight at every step.
"""

from __future__ import annotations

import numpy as np

from .network import Network


class _HiddenLayer:
    """The parameters, gradients and buffers of one hidden layer (M units, batch of n)."""

    __slots__ = ("l", "W", "b", "gamma", "beta", "dW", "db", "dgamma", "dbeta", "s", "h",
                 "on", "dh", "ds", "zeros", "mu_log", "var_log", "inv_std", "scale", "vec")

    def __init__(self, l: int, params, grads, n: int, batch_norm: bool, log_rows: int):
        self.l = l
        self.W, self.b, self.dW, self.db = params[f"W{l}"], params[f"b{l}"], grads[f"W{l}"], grads[f"b{l}"]
        self.gamma = params.get(f"gamma{l}") if batch_norm else None
        self.beta = params.get(f"beta{l}") if batch_norm else None
        self.dgamma = grads.get(f"gamma{l}") if batch_norm else None
        self.dbeta = grads.get(f"beta{l}") if batch_norm else None
        if batch_norm:  # BN subtracts the batch mean, so the bias has no effect
            self.db[...] = 0.0
        m, dt = self.W.shape[1], self.W.dtype
        self.s = np.empty((n, m), dt)  # x W (+ b); centred in place under BN
        self.h = np.empty((n, m), dt)  # ReLU output
        self.on = np.empty((n, m), dt)  # ReLU mask, 0 or 1 (a float: bool would be cast)
        self.dh = np.empty((n, m), dt)  # gradient arriving at h
        self.ds = np.empty((n, m), dt)  # gradient leaving at s (also forward scratch)
        self.zeros = np.zeros((n, m), dt)  # max(h, zeros) is ~3x faster than max(h, 0)
        # BN: the batch mean and variance of s = x W, one row per step until they are
        # folded into the moving averages (TrainStep.flush_averages); xhat per unit of
        # centred s (see TrainStep._hidden_forward); the gain gamma / sqrt(var + eps)
        self.mu_log, self.var_log = np.empty((log_rows, m), dt), np.empty((log_rows, m), dt)
        self.inv_std, self.scale, self.vec = (np.empty(m, dt) for _ in range(3))


class TrainStep:
    """Training-mode loss and gradients of ``net`` on batches of exactly ``n`` samples.

    ``grads``: the dict of arrays (shaped like ``net.params``) the gradients are written
    into; allocated here if not given. The step binds ``net.params``' arrays when it is
    built, so update them in place (as the trainer does), not by replacing them.

    BN's moving averages are updated in batches: each step logs its batch statistics, and
    ``flush_averages()`` folds the logged steps into ``net.averages`` (an exponential
    average over k steps is one weighted sum). It runs every ``log_rows`` steps; call it
    before reading ``net.averages``. This saves ~8 small NumPy calls per layer and step.
    """

    def __init__(self, net: Network, n: int, grads: dict[str, np.ndarray] | None = None,
                 log_rows: int = 256):
        p, dt, k = net.params, net.dtype, net.n_layers
        self.net, self.n = net, n
        self.batch_norm, self.eps = net.config.batch_norm, net.config.eps
        self.grads = grads if grads is not None else {key: np.empty_like(v) for key, v in p.items()}
        self.hidden = [_HiddenLayer(l, p, self.grads, n, self.batch_norm, log_rows)
                       for l in range(1, k)]
        self.logged_scales: list[float] = []  # the weight scale c of each logged step
        self.W, self.b = p[f"W{k}"], p[f"b{k}"]  # the output layer
        self.dW, self.db = self.grads[f"W{k}"], self.grads[f"b{k}"]
        n_classes = self.W.shape[1]
        self.mean_weights = np.full(n, 1.0 / n, dtype=dt)  # batch mean of A = this @ A
        self.ones = np.ones(n, dtype=dt)  # column sums of A = this @ A
        self.class_ones = np.ones(n_classes, dtype=dt)
        self.cols = np.arange(n)
        self.scores = np.empty((n_classes, n), dt)  # transposed: classes x samples
        self.z = np.empty(n, dt)

    def __call__(self, X: np.ndarray, y: np.ndarray, update_averages: bool = True,
                 grad_scale: float = 1.0, weight_scale: float = 1.0) -> float:
        """X: (n, d), y: (n,) ints -> mean cross-entropy loss (no L2 term).

        ``weight_scale`` c: the network's weights are c * ``net.params["W{l}"]`` (every
        layer), so the trainer can apply weight decay to c alone (see ``trainer.py``).
        Afterwards ``self.grads`` holds ``grad_scale`` times the gradient of the loss with
        respect to the network's weights, biases, gamma and beta (not of the cost: L2 is
        applied as decay). ``update_averages`` logs this batch's BN statistics for the
        moving averages (see ``flush_averages``).
        """
        if X.shape[0] != self.n:
            raise ValueError(f"this TrainStep was built for batches of {self.n} samples, "
                             f"got {X.shape[0]}; build one per batch size")
        x = X
        for layer in self.hidden:
            x = self._hidden_forward(layer, x, weight_scale)
        if update_averages and self.batch_norm:
            self.logged_scales.append(weight_scale)
            if len(self.logged_scales) == len(self.hidden[0].mu_log):
                self.flush_averages()
        loss = self._softmax_cross_entropy(x, y, grad_scale, weight_scale)
        self._backward(X, weight_scale)
        return loss

    def flush_averages(self) -> None:
        """Fold the logged steps' BN statistics into ``net.averages``, as ``Network.forward``
        would have done step by step: the first batch ever starts the averages, then each
        batch i does mu_av <- alpha mu_av + (1 - alpha) mu_i (and the same for var). Over
        k batches that is mu_av <- alpha^k mu_av + sum_i (1 - alpha) alpha^(k-1-i) mu_i.
        The batch mean of the affine output is c mu_i + b (b is fixed under BN: its
        gradient is zero) and its variance c^2 var_i, c being the step's weight scale.
        """
        scales, averages, alpha = np.array(self.logged_scales), self.net.averages, self.net.config.alpha
        if not len(scales):
            return
        for L in self.hidden:
            mean_key, var_key = f"mean{L.l}", f"var{L.l}"
            mu, var, c = L.mu_log[:len(scales)], L.var_log[:len(scales)], scales
            if mean_key not in averages:  # the first batch starts the averages
                averages[mean_key] = (c[0] * mu[0] + L.b).astype(L.b.dtype)
                averages[var_key] = (c[0] ** 2 * var[0]).astype(L.b.dtype)
                mu, var, c = mu[1:], var[1:], c[1:]
            k = len(c)
            weights = (1 - alpha) * alpha ** np.arange(k - 1, -1, -1)  # of batch 0 .. k-1
            m, v = averages[mean_key], averages[var_key]
            m[...] = alpha ** k * m + (weights * c) @ mu + (1 - alpha ** k) * L.b
            v[...] = alpha ** k * v + (weights * c * c) @ var
        self.logged_scales.clear()

    # ---------------------------------------------------------------- forward
    def _hidden_forward(self, L: _HiddenLayer, x: np.ndarray, c: float) -> np.ndarray:
        """x (n, M_{l-1}) -> ReLU output (n, M_l), through affine [and BN]; weights c W."""
        s, h = L.s, L.h
        np.matmul(x, L.W, out=s)  # s = x W: the layer's x (c W) is c s
        if self.batch_norm:
            j = len(self.logged_scales)  # this step's row of the statistics log
            mu, var = L.mu_log[j], L.var_log[j]
            np.matmul(self.mean_weights, s, out=mu)
            s -= mu  # centred: BN's backward needs it, the raw s is not needed
            np.multiply(s, s, out=L.ds)
            np.matmul(self.mean_weights, L.ds, out=var)
            # var is the batch variance of s, c^2 var that of the layer's c s, and
            # xhat = c s / sqrt(c^2 var + eps) = s / sqrt(var + eps / c^2) = s inv_std
            np.add(var, self.eps / (c * c), out=L.inv_std)
            np.sqrt(L.inv_std, out=L.inv_std)
            np.reciprocal(L.inv_std, out=L.inv_std)
            np.multiply(L.gamma, L.inv_std, out=L.vec)
            np.multiply(L.vec, 1.0 / c, out=L.scale)  # BN's gain gamma / sqrt(c^2 var + eps)
            np.multiply(s, L.vec, out=h)  # gamma xhat
            h += L.beta
        else:
            s *= c
            np.add(s, L.b, out=h)
        np.maximum(h, L.zeros, out=h)
        np.sign(h, out=L.on)  # h >= 0: 1 where the unit is on
        return h

    def _softmax_cross_entropy(self, x: np.ndarray, y: np.ndarray, grad_scale: float,
                               c: float) -> float:
        """Output layer and loss; leaves grad_scale * dloss/dscores, transposed, in ``scores``.

        The scores are kept as (K, n): the max and the sums over the K classes then run
        along the long axis, ~4x faster than ``max(axis=1)`` over 10 columns.
        """
        n, scores, z = self.n, self.scores, self.z
        np.matmul(self.W.T, x.T, out=scores)
        scores *= c
        scores += self.b[:, None]
        scores -= scores.max(axis=0)  # exp cannot overflow
        flat_y = y * n + self.cols  # positions of scores[y_i, i]
        picked = float(scores.ravel()[flat_y].sum())
        np.exp(scores, out=scores)
        np.matmul(self.class_ones, scores, out=z)
        loss = (float(np.log(z).sum()) - picked) / n
        z *= n / grad_scale
        scores /= z  # softmax * grad_scale / n
        scores.ravel()[flat_y] -= grad_scale / n  # (P - onehot) * grad_scale / n
        return loss

    # ---------------------------------------------------------------- backward
    def _backward(self, X: np.ndarray, c: float) -> None:
        d = self.scores  # (K, n)
        top = self.hidden[-1]
        np.matmul(top.h.T, d.T, out=self.dW)
        np.matmul(d, self.ones, out=self.db)
        np.matmul(d.T, self.W.T, out=top.dh)
        top.dh *= c  # the layer's weights are c W
        for i in range(len(self.hidden) - 1, -1, -1):
            L = self.hidden[i]
            ds = self._hidden_backward(L)
            below = self.hidden[i - 1] if i else None
            np.matmul((below.h if i else X).T, ds, out=L.dW)
            if i:
                np.matmul(ds, L.W.T, out=below.dh)
                below.dh *= c

    def _hidden_backward(self, L: _HiddenLayer) -> np.ndarray:
        """Gradient at the ReLU output -> gradient at the affine output (n, M).

        Writes db (and dgamma, dbeta under BN).
        """
        dh = L.dh
        dh *= L.on
        if not self.batch_norm:
            np.matmul(self.ones, dh, out=L.db)
            return dh
        # With xhat = s inv_std (s centred): dbeta = sum(dh), dgamma = sum(dh xhat), and
        # the gradient at BN's input (the affine output c s + b) is
        # gain (dh - dbeta/n - xhat dgamma/n) = scale (dh - dbeta/n - s (inv_std dgamma/n)).
        ds, vec, n = L.ds, L.vec, self.n
        np.matmul(self.ones, dh, out=L.dbeta)
        np.multiply(dh, L.s, out=ds)
        np.matmul(self.ones, ds, out=L.dgamma)
        L.dgamma *= L.inv_std
        np.multiply(L.inv_std, L.dgamma, out=vec)
        vec *= 1.0 / n
        np.multiply(L.s, vec, out=ds)
        np.subtract(dh, ds, out=ds)
        np.multiply(L.dbeta, 1.0 / n, out=vec)
        ds -= vec
        ds *= L.scale
        return ds
