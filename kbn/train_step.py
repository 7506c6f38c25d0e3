"""The training step the trainer runs: forward, loss and backward of a :class:`NetworkStack`.

It computes, for each of the K networks, what ``Network.loss_and_grads`` computes
(``layers.py`` is the readable reference; tests hold the two equal to float64 rounding,
and ``kbn gradcheck`` checks this path against finite differences). A 100-sample step is
bound by per-call overhead more than by arithmetic: each NumPy call costs ~1-3 us whatever
its size, while the first layer's GEMMs take ~0.4 ms. So this version

- runs the K networks of a stack in the same calls: their first layers, which see the
  same batch, are one (n, d) x (d, K m_1) GEMM; everything else is a stacked ``matmul``
  or an elementwise call over (K, n, m) arrays, so the ~70 small calls of a step are paid
  once for the whole stack;
- takes sums over the batch as products with a ones vector (~1 us; ``sum(axis=...)``
  ~3 us), and keeps the scores transposed so the sums over classes run along rows;
- writes every array into a buffer made once (``out=``);
- keeps the BN-centred pre-activations instead of xhat and folds gamma / sqrt(var + eps)
  into one vector, which saves a pass forward and one backward;
- skips adding the bias under BN: the batch mean removes it exactly (its gradient is
  zero), and it re-enters only the moving mean;
- logs each step's BN statistics and folds them into the moving averages every few
  hundred steps as one weighted sum, instead of ~8 small calls per layer and step;
- scales the loss gradient by a per-network ``grad_scale`` at the scores, so
  backpropagation delivers eta * gradient and the update needs no pass to multiply by eta;
- takes each network's weights as ``weight_scale[k]`` times the stored ones, so the trainer
  can apply the L2 decay to that scalar instead of to every weight at every step.
"""

from __future__ import annotations

import numpy as np

from .stack import NetworkStack


class _HiddenLayer:
    """Buffers of one hidden layer of the stack: K networks, M units, batch of n."""

    __slots__ = ("l", "W", "b", "gamma", "beta", "dW", "db", "dgamma", "dbeta", "dgamma3",
                 "dbeta3", "s", "rows", "h", "h_T", "on", "dh", "ds", "zeros",
                 "mu_log", "var_log", "inv_std", "inv_std2", "scale", "vec")

    def __init__(self, l: int, stack: NetworkStack, grads: NetworkStack, n: int, log_rows: int):
        K, m, dt = stack.K, stack.sizes[l + 1], stack.dtype
        self.l = l
        # W: (d, K m) for the first layer (all networks' columns), (K, m_in, m) after.
        # Per-unit vectors as (K, 1, m) views, made once (a view costs as much as a call).
        self.W, self.dW = stack.W[l], grads.W[l]
        self.b, self.db = stack.b[l][:, None, :], grads.b[l]
        self.gamma = None if stack.gamma[l] is None else stack.gamma[l][:, None, :]
        self.beta = None if stack.beta[l] is None else stack.beta[l][:, None, :]
        self.dgamma, self.dbeta = grads.gamma[l], grads.beta[l]  # (K, m)
        self.dgamma3 = None if self.dgamma is None else self.dgamma[:, None, :]
        self.dbeta3 = None if self.dbeta is None else self.dbeta[:, None, :]
        if stack.batch_norm:  # BN subtracts the batch mean, so the bias has no effect
            self.db[...] = 0.0
        self.s = np.empty((K, n, m), dt)  # x W (+ b); centred in place under BN
        self.ds = np.empty((K, n, m), dt)  # gradient leaving at s (also forward scratch)
        # the first layer's X W comes out as (n, K m), one row per sample, and is copied
        # into s network by network (~2 us); its gradient goes back the same way for one
        # GEMM. With one network the two layouts are the same memory: no copies.
        self.rows = None
        if l == 0:
            self.rows = self.s.reshape(n, m) if K == 1 else np.empty((n, K * m), dt)
        self.h = np.empty((K, n, m), dt)  # ReLU output
        self.h_T = self.h.transpose(0, 2, 1)
        self.on = np.empty((K, n, m), dt)  # ReLU mask, 0 or 1 (a float: bool would be cast)
        self.dh = np.empty((K, n, m), dt)  # gradient arriving at h
        self.zeros = np.zeros((K, n, m), dt)  # max(h, zeros) is ~3x faster than max(h, 0)
        # BN: the batch mean and variance of s = x W, one row per step until they are
        # folded into the moving averages (TrainStep.flush_averages); the per-unit factors
        # inv_std (xhat = s inv_std, s centred), vec = gamma inv_std and BN's gain ``scale``
        self.mu_log, self.var_log = np.empty((log_rows, K, m), dt), np.empty((log_rows, K, m), dt)
        self.inv_std, self.scale, self.vec = (np.empty((K, 1, m), dt) for _ in range(3))
        self.inv_std2 = self.inv_std[:, 0]


class TrainStep:
    """Training-mode losses and gradients of the K networks of ``stack`` on batches of n.

    ``grads``: a NetworkStack of the same shape the gradients are written into (made here
    if not given). The step binds the stack's arrays when it is built, so update them in
    place (as the trainer does), not by replacing them.

    BN's moving averages are updated in batches: each step logs its batch statistics, and
    ``flush_averages()`` folds the logged steps into the stack's ``mean``/``var`` (an
    exponential average over k steps is one weighted sum). It runs every ``log_rows``
    steps; call it before reading the averages.

    ``dropout`` (a probability p) drops each hidden unit's output with probability p and
    scales the kept ones by 1 / (1 - p) (inverted dropout), with uniforms drawn from
    ``dropout_rng`` (``.random(shape, dtype=...)``; a generator that returns the same
    array every time gives a fixed mask, as the gradient check needs).
    ``label_smoothing`` e trains on the targets (1 - e) one-hot + e / C.
    """

    def __init__(self, stack: NetworkStack, n: int, grads: NetworkStack | None = None,
                 log_rows: int = 256, dropout: float = 0.0, dropout_rng=None,
                 label_smoothing: float = 0.0):
        dt, K = stack.dtype, stack.K
        self.dropout, self.dropout_rng = float(dropout), dropout_rng
        if self.dropout and dropout_rng is None:
            raise ValueError("dropout needs a dropout_rng (numpy.random.default_rng(seed))")
        self.label_smoothing = float(label_smoothing)
        self.stack, self.n, self.K = stack, n, K
        self.batch_norm = stack.batch_norm
        self.grads = grads if grads is not None else NetworkStack(stack.configs, stack.sizes, dt)
        self.hidden = [_HiddenLayer(l, stack, self.grads, n, log_rows)
                       for l in range(stack.n_layers - 1)]
        self.logged_scales: list[np.ndarray] = []  # the weight scales c (K,) of each logged step
        # the output layer: W (K, m, C) as W^T (K, C, m) for the transposed scores
        self.W_T, self.b = stack.W[-1].transpose(0, 2, 1), stack.b[-1][:, :, None]
        self.dW_T, self.db = self.grads.W[-1].transpose(0, 2, 1), self.grads.b[-1]
        n_classes = self.W_T.shape[1]
        self.mean_weights = np.full(n, 1.0 / n, dtype=dt)  # batch means: this @ A
        self.ones = np.ones(n, dtype=dt)  # batch sums: this @ A
        self.class_ones = np.ones(n_classes, dtype=dt)
        self.eps = stack.eps[:, None, None]  # (K, 1, 1)
        self.scores = np.empty((K, n_classes, n), dt)  # transposed: classes x samples
        self.z = np.empty((K, n), dt)
        # positions of scores[k, y_i, i] in the flattened scores, less y_i * n
        self.flat_base = (np.arange(K)[:, None] * (n_classes * n) + np.arange(n)).astype(np.intp)

    def __call__(self, X: np.ndarray, y: np.ndarray, grad_scale: np.ndarray,
                 weight_scale: np.ndarray, update_averages: bool = True) -> np.ndarray:
        """X: (n, d), y: (n,) ints -> (K,) mean cross-entropy losses (no L2 term).

        ``weight_scale`` c (K,): network k's weights are c[k] times the stored ``W``
        (every layer), so the trainer can apply weight decay to c alone. Afterwards
        ``self.grads`` holds ``grad_scale[k]`` times the gradient of network k's loss with
        respect to its weights, biases, gamma and beta (not of the cost: L2 is applied as
        decay). ``update_averages`` logs this batch's BN statistics for the moving averages.
        """
        if X.shape[0] != self.n:
            raise ValueError(f"this TrainStep was built for batches of {self.n} samples, "
                             f"got {X.shape[0]}; build one per batch size")
        dt = self.stack.dtype
        c = np.array(weight_scale, dt)  # a copy: it is logged
        c3 = c[:, None, None]
        if self.batch_norm:  # per network eps / c^2 and 1 / c, as (K, 1, 1)
            inv_c = 1.0 / c3
            eps_c = self.eps * (inv_c * inv_c)
        x = X
        for layer in self.hidden:
            x = (self._bn_forward(layer, x, eps_c, inv_c) if self.batch_norm
                 else self._plain_forward(layer, x, c3))
            if self.dropout:
                self._drop(layer)
        if update_averages and self.batch_norm:
            self.logged_scales.append(c)
            if len(self.logged_scales) == len(self.hidden[0].mu_log):
                self.flush_averages()
        losses = self._softmax_cross_entropy(x, y, np.asarray(grad_scale, dt), c3)
        self._backward(X, c3)
        return losses

    def adopt_logs(self, other: "TrainStep", keep) -> None:
        """Take over the BN statistics that ``other`` logged for its networks ``keep`` (this
        step's networks, in order), so they are folded in exactly when they would be."""
        j = len(other.logged_scales)
        for mine, theirs in zip(self.hidden, other.hidden):
            mine.mu_log[:j] = theirs.mu_log[:j, keep]
            mine.var_log[:j] = theirs.var_log[:j, keep]
        self.logged_scales = [s[keep] for s in other.logged_scales]

    def flush_averages(self) -> None:
        """Fold the logged steps' BN statistics into the stack's moving averages, as
        ``Network.forward`` would have done step by step: the first batch ever starts the
        averages, then each batch i does mu_av <- alpha mu_av + (1 - alpha) mu_i (and the
        same for var). Over k batches that is
        mu_av <- alpha^k mu_av + sum_i (1 - alpha) alpha^(k-1-i) mu_i.
        The batch mean of the affine output is c mu_i + b (b is fixed under BN: its
        gradient is zero) and its variance c^2 var_i, c being the step's weight scale.
        """
        if not self.logged_scales:
            return
        stack = self.stack
        scales = np.array(self.logged_scales)  # (k, K)
        # the run's own averages, then those kept with other weights (also_alphas), each
        # alpha as the stack's dtype holds it, so a kept alpha equals a network trained with it
        sets = [(stack.mean, stack.var, stack.alpha.astype(np.float64)[None, :])]
        sets += [(m, v, np.full((1, stack.K), a, stack.dtype).astype(np.float64))
                 for a, m, v in zip(stack.also_alphas, stack.also_mean, stack.also_var)]
        for L in self.hidden:
            k = len(scales)
            c, b = self._logged_terms(L, scales)
            for means, variances, alpha in sets:
                self._fold(means, variances, L.l, alpha, L.mu_log[:k], L.var_log[:k], c, b)
        self.logged_scales.clear()

    def _logged_terms(self, L: _HiddenLayer, scales: np.ndarray):
        """(c, b): the batch mean of layer L's BN input is c mu_i + b and its variance
        c^2 var_i, mu_i and var_i as logged (here those of x W: the step's weight scale c,
        the fixed bias b)."""
        return scales, self.stack.b[L.l]

    def _fold(self, means: list, variances: list, l: int, alpha: np.ndarray,
              mu: np.ndarray, var: np.ndarray, c: np.ndarray, b) -> None:
        """Fold k logged steps (mu, var: (k, K, M); c: (k, K)) into layer l's averages
        ``means[l]``, ``variances[l]`` (started by the first batch ever) with weights alpha
        (1, K); b: the offset of the batch means (see _logged_terms)."""
        stack = self.stack
        if means[l] is None:  # the first batch starts the averages
            shape = (stack.K, stack.sizes[l + 1])
            means[l], variances[l] = np.zeros(shape, stack.dtype), np.zeros(shape, stack.dtype)
            means[l][...] = c[0][:, None] * mu[0] + b
            variances[l][...] = (c[0] ** 2)[:, None] * var[0]
            mu, var, c = mu[1:], var[1:], c[1:]
        k = len(c)
        # weights[i, j] of batch i for network j: (1 - alpha_j) alpha_j^(k-1-i)
        weights = (1 - alpha) * alpha ** np.arange(k - 1, -1, -1)[:, None]
        decay = (alpha ** k)[0]  # (K,)
        m, v = means[l], variances[l]
        # per network (1, k) x (k, M) products over contiguous copies, network-major:
        # BLAS then sums each network's rows as it does for a lone network
        wc = np.ascontiguousarray((weights * c).T[:, None, :])
        wcc = np.ascontiguousarray((weights * c * c).T[:, None, :])
        mu, var = (np.ascontiguousarray(a.transpose(1, 0, 2)) for a in (mu, var))
        m[...] = decay[:, None] * m + np.matmul(wc, mu)[:, 0] + (1 - decay)[:, None] * b
        v[...] = decay[:, None] * v + np.matmul(wcc, var)[:, 0]

    # ---------------------------------------------------------------- forward
    def _affine(self, L: _HiddenLayer, x: np.ndarray) -> np.ndarray:
        """s = x W (K, n, M): for the first layer one GEMM, (n, d) x (d, K M), since all
        networks see the same batch; for the others a stacked (K, n, M_in) x (K, M_in, M)."""
        if L.l == 0:
            np.matmul(x, L.W, out=L.rows)
            if self.K > 1:
                np.copyto(L.s, L.rows.reshape(x.shape[0], L.s.shape[0], -1).transpose(1, 0, 2))
        else:
            np.matmul(x, L.W, out=L.s)
        return L.s

    def _plain_forward(self, L: _HiddenLayer, x: np.ndarray, c3: np.ndarray) -> np.ndarray:
        """x -> ReLU(c x W + b) (K, n, M); network k's weights are c[k] W."""
        s, h = self._affine(L, x), L.h
        s *= c3
        np.add(s, L.b, out=h)
        np.maximum(h, L.zeros, out=h)
        np.sign(h, out=L.on)  # h >= 0: 1 where the unit is on
        return h

    def _bn_forward(self, L: _HiddenLayer, x: np.ndarray, eps_c: np.ndarray,
                    inv_c: np.ndarray) -> np.ndarray:
        """x -> ReLU(BN(c x W)) (K, n, M), BN with this batch's statistics."""
        s, h = self._affine(L, x), L.h
        # the batch variance var of s is c^2 var for the layer's c s, and
        # xhat = c s / sqrt(c^2 var + eps) = s / sqrt(var + eps / c^2) = s inv_std
        self._normalise(L, s, eps_c)
        np.multiply(L.gamma, L.inv_std, out=L.vec)
        np.multiply(L.vec, inv_c, out=L.scale)  # BN's gain gamma / sqrt(c^2 var + eps)
        np.multiply(s, L.vec, out=h)  # gamma xhat
        h += L.beta
        np.maximum(h, L.zeros, out=h)
        np.sign(h, out=L.on)  # h >= 0: 1 where the unit is on
        return h

    def _normalise(self, L: _HiddenLayer, s: np.ndarray, eps) -> None:
        """BN's batch statistics of ``s`` (K, n, M): logs its mean and variance in this
        step's row of L's log, centres ``s`` in place (BN's backward needs it centred, the
        raw values are not needed) and leaves 1 / sqrt(var + eps) in ``L.inv_std``."""
        j = len(self.logged_scales)  # this step's row of the statistics log
        mu, var = L.mu_log[j], L.var_log[j]  # (K, M) each
        np.matmul(self.mean_weights, s, out=mu)
        s -= mu[:, None, :]
        np.multiply(s, s, out=L.ds)
        np.matmul(self.mean_weights, L.ds, out=var)
        np.add(var[:, None, :], eps, out=L.inv_std)
        np.sqrt(L.inv_std, out=L.inv_std)
        np.reciprocal(L.inv_std, out=L.inv_std)

    def _drop(self, L: _HiddenLayer) -> None:
        """Inverted dropout of the layer's output h: h *= mask, with mask 0 (probability p)
        or 1 / (1 - p). The mask also enters the ReLU's 0/1 ``on``, which the backward pass
        multiplies into the incoming gradient: d(relu(a) mask)/da = on * mask."""
        p = self.dropout
        u = self.dropout_rng.random(L.h.shape, dtype=L.h.dtype)
        keep = (u >= p).astype(L.h.dtype)
        keep *= 1.0 / (1.0 - p)
        L.h *= keep
        L.on *= keep

    def _softmax_cross_entropy(self, x: np.ndarray, y: np.ndarray, grad_scale: np.ndarray,
                               c3: np.ndarray) -> np.ndarray:
        """Output layer and losses; leaves grad_scale * dloss/dscores in ``scores``.

        The scores are kept as (K, C, n): the max and the sums over the C classes then
        run along rows of n, ~4x faster than reducing 10 columns of an (n, C) array.
        """
        n, scores, z = self.n, self.scores, self.z
        np.matmul(self.W_T, x.transpose(0, 2, 1), out=scores)
        scores *= c3
        scores += self.b
        scores -= scores.max(axis=1, keepdims=True)  # exp cannot overflow
        flat_y = self.flat_base + y * n  # positions of scores[k, y_i, i]
        flat = scores.reshape(-1)
        # sums per network as stacked (K, 1, n) x (n,) products: the same numbers in a
        # stack as alone (one (K, n) GEMV would block its rows differently)
        picked = np.matmul(flat[flat_y][:, None, :], self.ones)[:, 0]
        e = self.label_smoothing
        if e:  # the target's log-probability weighs (1 - e) on y and e / C on every class
            n_classes = scores.shape[1]
            picked = (1.0 - e) * picked + (e / n_classes) * np.matmul(
                np.matmul(self.class_ones, scores)[:, None, :], self.ones)[:, 0]
        np.exp(scores, out=scores)
        np.matmul(self.class_ones, scores, out=z)
        losses = (np.matmul(np.log(z)[:, None, :], self.ones)[:, 0] - picked) / n
        z *= (n / grad_scale)[:, None]
        scores /= z[:, None, :]  # softmax * grad_scale / n
        if e:  # (P - target) * grad_scale / n
            flat[flat_y] -= ((1.0 - e) * grad_scale / n)[:, None]
            scores -= (e / n_classes * grad_scale / n)[:, None, None]
        else:
            flat[flat_y] -= (grad_scale / n)[:, None]  # (P - onehot) * grad_scale / n
        return losses

    # ---------------------------------------------------------------- backward
    def _backward(self, X: np.ndarray, c3: np.ndarray) -> None:
        d = self.scores  # (K, C, n)
        top = self.hidden[-1]
        np.matmul(d, top.h, out=self.dW_T)
        np.matmul(d, self.ones, out=self.db)
        np.matmul(d.transpose(0, 2, 1), self.W_T, out=top.dh)
        top.dh *= c3  # the layer's weights are c W
        for i in range(len(self.hidden) - 1, -1, -1):
            L = self.hidden[i]
            ds = self._hidden_backward(L)
            if i:
                below = self.hidden[i - 1]
                np.matmul(below.h_T, ds, out=L.dW)
                np.matmul(ds, L.W.transpose(0, 2, 1), out=below.dh)
                below.dh *= c3
            else:  # the first layer: one GEMM for all networks, X^T (n, K M) -> (d, K M)
                if self.K == 1:
                    rows = ds.reshape(self.n, -1)
                else:
                    rows = L.rows
                    np.copyto(rows.reshape(self.n, self.K, -1), ds.transpose(1, 0, 2))
                np.matmul(X.T, rows, out=L.dW)

    def _hidden_backward(self, L: _HiddenLayer) -> np.ndarray:
        """Gradient at the ReLU output -> gradient at the affine output (K, n, M).

        Writes db (and dgamma, dbeta under BN).
        """
        dh = L.dh
        dh *= L.on
        if not self.batch_norm:
            np.matmul(self.ones, dh, out=L.db)
            return dh
        return self._bn_backward(L, dh)

    def _bn_backward(self, L: _HiddenLayer, dh: np.ndarray) -> np.ndarray:
        """Gradient at BN's output ``dh`` -> gradient at BN's input (K, n, M), in L.ds;
        writes dgamma and dbeta. BN's input is L.s centred (here the affine output; after
        ReLU, the ReLU output: kbn.bn_after_relu)."""
        # With xhat = s inv_std (s centred): dbeta = sum(dh), dgamma = sum(dh xhat), and
        # the gradient at BN's input (the affine output c s + b) is
        # gain (dh - dbeta/n - xhat dgamma/n) = scale (dh - dbeta/n - s (inv_std dgamma/n)).
        ds, vec, n = L.ds, L.vec, self.n
        dbeta, dgamma = L.dbeta, L.dgamma  # (K, M)
        np.matmul(self.ones, dh, out=dbeta)
        np.multiply(dh, L.s, out=ds)
        np.matmul(self.ones, ds, out=dgamma)
        dgamma *= L.inv_std2
        np.multiply(L.inv_std, L.dgamma3, out=vec)
        vec *= 1.0 / n
        np.multiply(L.s, vec, out=ds)
        np.subtract(dh, ds, out=ds)
        np.multiply(L.dbeta3, 1.0 / n, out=vec)
        ds -= vec
        ds *= L.scale
        return ds
