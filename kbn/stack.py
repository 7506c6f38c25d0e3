"""K networks of one architecture, each layer's parameters side by side, so one GEMM serves all K.

The trainer keeps the networks it trains in a :class:`NetworkStack` (a single training is
a stack of one). Layout, for layer l with m_l units (m_0 = d inputs) and K networks:

* ``W[0]``: (d, K m_1), the K networks' first-layer weights side by side (network k's
  fan-in x fan-out matrix is columns k m_1 .. (k + 1) m_1): the K first layers, which see
  the same mini-batch, are one wide GEMM ``X W[0]`` instead of K narrow ones.
* ``W[l]``, l >= 1: (K, m_l, m_{l+1}), each network's fan-in x fan-out matrix. All
  weights live in one buffer, layer after layer.
* ``b[l]``, ``gamma[l]``, ``beta[l]``: (K, m_l) views into one (K, R) buffer, network
  after network, so a per-network factor scales them all in one call.
* activations are (K, n, m_l): samples x units for each network, so a per-unit vector
  (K, 1, m_l) broadcasts along the outer axis, which NumPy does at full speed.

Every per-network computation (GEMMs of layers >= 2, reductions) goes through NumPy's
stacked ``matmul``, which loops over the K networks in C with the shapes a lone network
has, so a network gives the same numbers in a stack of K as alone.

:meth:`NetworkStack.network` returns member k as an ordinary :class:`kbn.network.Network`
(weights in the usual fan-in x fan-out layout), the readable reference the tests compare
against.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .config import NetworkConfig
from .network import EVAL_BLOCK, Network


class NetworkStack:
    """Parameters, gradients' shapes and BN moving averages of K networks.

    configs: one NetworkConfig per network; they must share ``hidden`` and
    ``batch_norm`` (see :func:`kbn.stacking.stack_key`). ``W``, ``b``, ``gamma``,
    ``beta``: lists indexed by layer - 1 (``gamma``/``beta`` None without BN, and for the
    output layer). ``mean``, ``var``: the BN moving averages, (K, m_l) per hidden layer,
    None until the first training batch starts them (``averages_started``).
    """

    def __init__(self, configs: Sequence[NetworkConfig], sizes: Sequence[int], dtype):
        configs = list(configs)
        first = configs[0]
        for c in configs[1:]:
            if (c.hidden != first.hidden or c.batch_norm != first.batch_norm
                    or c.bn_after_relu != first.bn_after_relu):
                raise ValueError("a stack holds networks of one architecture: "
                                 f"{first.describe()} and {c.describe()} cannot be stacked")
        self.configs, self.sizes, self.dtype = configs, tuple(sizes), np.dtype(dtype)
        self.K, self.n_layers, self.batch_norm = len(configs), len(sizes) - 1, first.batch_norm
        self.bn_after_relu = first.bn_after_relu  # BN placement (kbn.bn_after_relu)
        K, dt = self.K, self.dtype
        shapes = [(sizes[0], K * sizes[1])] + [(K, m_in, m_out) for m_in, m_out
                                               in zip(sizes[1:-1], sizes[2:])]
        self.weights = np.zeros(sum(int(np.prod(s)) for s in shapes), dt)  # all W, layer-major
        self.W, start = [], 0
        for s in shapes:
            size = int(np.prod(s))
            self.W.append(self.weights[start:start + size].reshape(s))
            start += size
        vec_layout = self._vector_layout()
        self.vectors = np.zeros((K, sum(m for _, _, m in vec_layout)), dt)  # b, gamma, beta
        self.b = [None] * self.n_layers
        self.gamma = [None] * self.n_layers
        self.beta = [None] * self.n_layers
        start = 0
        for name, l, m in vec_layout:
            getattr(self, name)[l] = self.vectors[:, start:start + m]
            start += m
        self.mean = [None] * (self.n_layers - 1)
        self.var = [None] * (self.n_layers - 1)
        self.alpha = np.array([c.alpha for c in configs], dt)
        self.eps = np.array([c.eps for c in configs], dt)
        # BN moving averages also kept with other weights (TrainConfig.also_alphas): per
        # alpha, (K, m_l) per hidden layer like ``mean``/``var``; the trainer folds into them
        self.also_alphas: tuple[float, ...] = ()
        self.also_mean: list[list[np.ndarray | None]] = []
        self.also_var: list[list[np.ndarray | None]] = []

    def keep_also(self, alphas) -> None:
        """Keep moving averages with each of ``alphas`` too, from the next training batch."""
        self.also_alphas = tuple(float(a) for a in alphas)
        self.also_mean = [[None] * (self.n_layers - 1) for _ in self.also_alphas]
        self.also_var = [[None] * (self.n_layers - 1) for _ in self.also_alphas]

    def _vector_layout(self) -> list[tuple[str, int, int]]:
        out = []
        for l, m in enumerate(self.sizes[1:]):
            out.append(("b", l, m))
            if self.batch_norm and l < self.n_layers - 1:
                out += [("gamma", l, m), ("beta", l, m)]
        return out

    # ------------------------------------------------------------------ building
    @classmethod
    def from_networks(cls, networks: Sequence[Network]) -> "NetworkStack":
        """A stack holding copies of ``networks`` (parameters and moving averages)."""
        net0 = networks[0]
        sizes = [net0.params["W1"].shape[0]] + [net0.params[f"W{l}"].shape[1]
                                                for l in range(1, net0.n_layers + 1)]
        stack = cls([n.config for n in networks], sizes, net0.dtype)
        for k, net in enumerate(networks):
            stack.set_network(k, net)
        return stack

    def member_W(self, l: int, k: int) -> np.ndarray:
        """Network k's weights of layer l + 1 as a (fan-in, fan-out) view."""
        if l == 0:
            m = self.sizes[1]
            return self.W[0][:, k * m:(k + 1) * m]
        return self.W[l][k]

    def set_network(self, k: int, net: Network) -> None:
        """Copy network ``net``'s parameters (and averages, if started) into slot k."""
        for l in range(self.n_layers):
            self.member_W(l, k)[...] = net.params[f"W{l + 1}"]
            self.b[l][k] = net.params[f"b{l + 1}"]
            if self.gamma[l] is not None:
                self.gamma[l][k] = net.params[f"gamma{l + 1}"]
                self.beta[l][k] = net.params[f"beta{l + 1}"]
        for l in range(self.n_layers - 1):
            if f"mean{l + 1}" in net.averages:
                self._start_averages(l)
                self.mean[l][k] = net.averages[f"mean{l + 1}"]
                self.var[l][k] = net.averages[f"var{l + 1}"]

    def _start_averages(self, l: int) -> None:
        if self.mean[l] is None:
            m = self.sizes[l + 1]
            self.mean[l] = np.zeros((self.K, m), self.dtype)
            self.var[l] = np.zeros((self.K, m), self.dtype)

    @property
    def averages_started(self) -> bool:
        return self.batch_norm and self.mean[0] is not None

    def network(self, k: int, weight_scale: float = 1.0) -> Network:
        """Member k as a :class:`Network` (copies: usual layout, C-contiguous), its weights
        ``weight_scale`` times the stored ones (the trainer's scale c, see kbn.optim.SGD)."""
        params, averages = {}, {}
        for l in range(self.n_layers):
            W = np.array(self.member_W(l, k), order="C")  # a copy, even of a contiguous view
            if weight_scale != 1.0:
                W *= weight_scale
            params[f"W{l + 1}"] = W
            params[f"b{l + 1}"] = self.b[l][k].copy()
            if self.gamma[l] is not None:
                params[f"gamma{l + 1}"] = self.gamma[l][k].copy()
                params[f"beta{l + 1}"] = self.beta[l][k].copy()
        for l in range(self.n_layers - 1):
            if self.mean[l] is not None:
                averages[f"mean{l + 1}"] = self.mean[l][k].copy()
                averages[f"var{l + 1}"] = self.var[l][k].copy()
        return Network(self.configs[k], params, averages)

    def subset(self, keep: Sequence[int]) -> "NetworkStack":
        """A new stack of the members ``keep`` (in that order), e.g. without diverged ones."""
        stack = NetworkStack.from_networks([self.network(k) for k in keep])
        stack.also_alphas = self.also_alphas
        stack.also_mean, stack.also_var = (
            [[None if a is None else a[list(keep)] for a in per_alpha] for per_alpha in lists]  # copies
            for lists in (self.also_mean, self.also_var))
        return stack

    def scale_weights(self, factor: np.ndarray) -> None:
        """W of member k *= factor[k], every layer (one call per layer)."""
        f = np.asarray(factor, self.dtype)[:, None, None]
        self.W[0].reshape(self.sizes[0], self.K, self.sizes[1]).__imul__(f[:, 0])
        for W in self.W[1:]:
            W *= f

    def l2(self) -> np.ndarray:
        """(K,): sum over layers of ||W_l||^2 of each member (biases, gamma and beta are
        not regularised). One contiguous copy per member and layer, so each sums as alone."""
        return np.array([sum(float(np.vdot(W, W)) for W in
                             (np.ascontiguousarray(self.member_W(l, k)) for l in range(self.n_layers)))
                         for k in range(self.K)])

    # ------------------------------------------------------------------ evaluation
    def inference_layers(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """(W, b) per layer with BN folded in (evaluation mode), in the layout of ``W``:
        (d, K m_1) and (K m_1,) for the first layer, (K, m_in, m_out) and (K, m_out) after.

        With fixed statistics BN is affine, gamma (W x + b - mean) / sqrt(var + eps) +
        beta = (W * scale) x + (b - mean) * scale + beta, scale = gamma / sqrt(var + eps)
        (as :meth:`kbn.network.Network.inference_layers`).
        """
        if self.bn_after_relu:
            from .bn_after_relu import stack_inference_layers

            return stack_inference_layers(self)
        folded = []
        for l in range(self.n_layers):
            W, b = self.W[l], self.b[l]
            if self.batch_norm and l < self.n_layers - 1:
                if self.mean[l] is None:
                    raise RuntimeError("evaluation-mode BN needs moving averages, and these "
                                       "networks have not seen a training batch yet")
                scale = self.gamma[l] / np.sqrt(self.var[l] + self.eps[:, None])
                W = W * (scale.reshape(1, -1) if l == 0 else scale[:, None, :])
                b = (b - self.mean[l]) * scale + self.beta[l]
            folded.append((W, b.reshape(-1) if l == 0 else b))
        return folded

    def evaluate(self, X: np.ndarray, y: np.ndarray, lam: np.ndarray,
                 block: int = EVAL_BLOCK) -> dict[str, np.ndarray]:
        """Evaluation-mode cost, loss and accuracy of every member over a whole split.

        X: (N, d), y: (N,), lam: (K,) -> {"cost", "loss", "accuracy"}, each (K,). Blocks of
        ``block`` rows keep each layer's activations in cache; the first layer of all
        members is one GEMM per block. Activations are (rows, units) here, as a lone
        network's in :meth:`kbn.network.Network.evaluate`; the scores transposed.
        """
        n, K = X.shape[0], self.K
        if n == 0:  # e.g. no validation split
            nan = np.full(K, np.nan)
            return {"cost": nan, "loss": nan.copy(), "accuracy": nan.copy()}
        folded = self.inference_layers()
        rows = min(block, n)
        dt = np.result_type(X, folded[0][0])
        (W1, b1), hidden_layers, (W_out, b_out) = folded[0], folded[1:-1], folded[-1]
        m1 = self.sizes[1]
        first = np.empty((rows, K * m1), dt)
        hidden = [np.empty((K, rows, W.shape[2]), dt) for W, _ in hidden_layers]
        zeros = [np.zeros((rows, K * m1), dt)] + [np.zeros_like(a) for a in hidden]
        weights = [W for W, _ in hidden_layers]
        biases = [b[:, None, :] for _, b in hidden_layers]
        # scores kept transposed (K, C, rows): reductions over the C classes then run along
        # the long axis, ~10x faster than over 10 columns
        W_out = W_out.transpose(0, 2, 1)  # (K, C, m)
        scores = np.empty((K, W_out.shape[1], rows), dt)
        b_out = b_out[:, :, None]
        class_ones = np.ones(W_out.shape[1], dt)
        loss_sum, correct = np.zeros(K), np.zeros(K, np.int64)
        for start in range(0, n, rows):
            x, yb = X[start:start + rows], y[start:start + rows]
            m = x.shape[0]
            a = np.matmul(x, W1, out=first[:m])
            a += b1
            np.maximum(a, zeros[0][:m], out=a)
            h = a.reshape(m, K, m1).transpose(1, 0, 2)  # (K, rows, m1)
            for W, b, buf, zero in zip(weights, biases, hidden, zeros[1:]):
                a = np.matmul(h, W, out=buf[:, :m])
                a += b
                h = np.maximum(a, zero[:, :m], out=a)
            s = np.matmul(W_out, h.transpose(0, 2, 1), out=scores[:, :, :m])
            s += b_out
            correct += np.count_nonzero(s.argmax(axis=1) == yb, axis=1)
            s -= s.max(axis=1, keepdims=True)  # log-sum-exp, as in layers.softmax_cross_entropy
            # (K, 1, m), C-ordered: each network's row sums like a lone network's
            picked = np.take_along_axis(s, yb[None, None, :], axis=1).sum(axis=2, dtype=np.float64)[:, 0]
            np.exp(s, out=s)
            loss_sum += np.log(np.matmul(class_ones, s)).sum(axis=1, dtype=np.float64) - picked
        loss = loss_sum / n
        return {"cost": loss + np.asarray(lam) * self.l2(), "loss": loss, "accuracy": correct / n}
