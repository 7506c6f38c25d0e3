"""Update rules: how the trainer turns a step's gradients into new parameters.

An update rule holds what it needs across steps (here: each network's weight scale) and
is called by the training loop around the :class:`kbn.train_step.TrainStep`::

    grad_scale, weight_scale = rule.prepare(t)      # before the step
    step(X, y, grad_scale, weight_scale)            # gradients into step.grads
    rule.finish(t, step.grads)                      # the step's gradients, as the update needs them
    rule.apply(step.grads)                          # the update itself

:class:`SGD` is the recipe's mini-batch gradient descent on cost = loss + lam ||W||^2.
"""

from __future__ import annotations

import numpy as np

from .stack import NetworkStack

# Elements per block of the blocked updates (Momentum, Adam). Their few elementwise passes
# over every weight are memory-bound on a large network: over a block of this size the
# passes after the first find the block in the core's cache. Measured on mlp-best's 3.8 M
# weights (2-core Xeon, float32, alone): Nesterov's update 10.1 ms in one pass, 5.1 ms in
# blocks of 128 K elements; between a training step's GEMMs, ~7 ms and ~2 ms
# (benchmarks/bench_update.py).
BLOCK = 131_072


class SGD:
    """Gradient descent, W <- W - eta (dL/dW + 2 lam W), for each network of a stack.

    L2 enters as a decay: W <- (1 - 2 eta lam) W - eta dL/dW. The decay only rescales W,
    so each network keeps it as a scalar c with its weights = c * stored weights
    (scikit-learn's SGD keeps its ``wscale`` the same way), folded into the stored weights
    now and then instead of a pass over W at every step:
    c_new W_new = (1 - 2 eta lam) c W - eta dW  <=>  W_new = W - (eta / c_new) dW.
    A step whose decay factor is below 1/2 (2 eta lam > 1/2, a huge lam) decays that
    network's weights directly instead of dividing by a vanishing scale.

    stack: the networks; lam: (K,) their L2 weights; etas: (n_steps, K) their learning
    rate at each step.
    """

    def __init__(self, stack: NetworkStack, lam: np.ndarray, etas: np.ndarray):
        self.stack = stack
        self.lam = np.asarray(lam, np.float64)
        self.etas = np.ascontiguousarray(etas, np.float64)
        self.decays = 1.0 - 2.0 * self.etas * self.lam  # each step's decay factor
        self.huge = (self.decays < 0.5).any(axis=1).tolist()  # steps where some decay W itself
        self.c = np.ones(stack.K)  # network k's weights are c[k] * stack.W
        self._c_new = self._direct = None

    def prepare(self, t: int) -> tuple[np.ndarray, np.ndarray]:
        """(grad_scale, weight_scale) for step t: the step then delivers
        (eta / c_new) * gradient, the step for the stored weights."""
        decay = self.decays[t]
        if self.huge[t]:  # those networks decay W itself: no scale to divide by
            self._direct = decay < 0.5
            self.fold(self._direct)
            self._c_new = np.where(self._direct, 1.0, self.c * decay)
        else:
            self._direct = None
            self._c_new = self.c * decay
        return self.etas[t] / self._c_new, self.c

    def finish(self, t: int, grads: NetworkStack) -> None:
        """After the step: the biases, gamma and beta want eta * gradient (not divided by
        c_new), and the networks that decay directly get their decay now."""
        grads.vectors *= self._c_new[:, None]
        if self._direct is not None:
            self.stack.scale_weights(np.where(self._direct, self.decays[t], 1.0))

    def apply(self, grads: NetworkStack) -> None:
        """The update: stored parameters -= the finished gradients; the scales move on."""
        self.stack.weights -= grads.weights
        self.stack.vectors -= grads.vectors
        self.c = self._c_new
        if self.c.min() < 0.5:  # keeps the stored weights within 2x of the network's
            self.fold(self.c < 0.5)

    def fold(self, which: np.ndarray | None = None) -> None:
        """Fold c into the stored weights of every network (or of those in ``which``).
        Per network, so that a network folds exactly when it would alone."""
        fold = self.c != 1.0 if which is None else which & (self.c != 1.0)
        if fold.any():
            self.stack.scale_weights(np.where(fold, self.c, 1.0))
            self.c = np.where(fold, 1.0, self.c)

    def subset(self, stack: NetworkStack, keep: np.ndarray) -> "SGD":
        """This rule for ``stack``, the networks ``keep`` of this one (same state)."""
        rule = SGD(stack, self.lam[keep], self.etas[:, keep])
        rule.c = self.c[keep]
        return rule


class _PlainRule:
    """Shared by the rules beyond the recipe's SGD: they read the plain gradient (grad
    scale and weight scale 1, no folding) and update the stack's two parameter buffers,
    ``weights`` (every W) and ``vectors`` (b, gamma, beta; never regularised).

    stack: the networks (one: these rules are not used in stacks, see
    kbn.stacking.uses_extensions); lam: (K,) L2 weights; etas: (n_steps, K) learning rates.
    """

    def __init__(self, stack: NetworkStack, lam: np.ndarray, etas: np.ndarray):
        if stack.K != 1:
            raise ValueError(f"{type(self).__name__} updates one network, not a stack of "
                             f"{stack.K}: train such configurations one at a time")
        self.stack = stack
        self.lam = np.asarray(lam, np.float64)
        self.etas = np.ascontiguousarray(etas, np.float64)
        self.c = np.ones(stack.K)  # no weight scale: the trainer's fold() is a no-op
        self._ones = np.ones(stack.K)
        self._blocks, self._bound = None, None  # see _blocked

    def prepare(self, t: int) -> tuple[np.ndarray, np.ndarray]:
        return self._ones, self._ones

    def finish(self, t: int, grads: NetworkStack) -> None:
        pass

    def fold(self, which: np.ndarray | None = None) -> None:
        pass

    def subset(self, stack, keep):
        raise ValueError(f"{type(self).__name__} does not train stacks")

    def _blocked(self, grads: NetworkStack, *state: list[np.ndarray]) -> list["Blocks"]:
        """The two buffers, weights (regularised) and vectors, as :class:`Blocks` of
        (parameter, gradient, *state) with ``state`` given as [weights', vectors'] pairs;
        made at the first update and again only if the gradients' buffers change."""
        if self._bound is not grads.weights:
            buffers = ((self.stack.weights, grads.weights), (self.stack.vectors, grads.vectors))
            self._blocks = [Blocks([p, g, *(s[i] for s in state)])
                            for i, (p, g) in enumerate(buffers)]
            self._bound = grads.weights
        return self._blocks


class Momentum(_PlainRule):
    """SGD with momentum on cost = loss + lam ||W||^2 (Sutskever et al. 2013 form):

        v <- mu v - eta (dL/dp + 2 lam p [weights only]);   p <- p + v
        Nesterov: p <- p + mu v - eta (dL/dp + 2 lam p)   (with the new v)

    v starts at zero. The step delivers eta dL/dp (grad_scale = eta: free, at the scores),
    and the update runs in place over preallocated buffers: it is memory-bound (a few
    passes over every weight), and a fresh temporary per step would cost page faults too.
    """

    def __init__(self, stack, lam, etas, mu: float = 0.9, nesterov: bool = False):
        super().__init__(stack, lam, etas)
        self.mu, self.nesterov = float(mu), bool(nesterov)
        self.velocity = [np.zeros_like(self.stack.weights), np.zeros_like(self.stack.vectors)]
        self._t = 0

    def prepare(self, t: int):
        self._t = t
        return self.etas[t], self._ones

    def apply(self, grads: NetworkStack) -> None:
        eta, lam, mu, nesterov = float(self.etas[self._t, 0]), float(self.lam[0]), self.mu, self.nesterov

        def update(p, g, v, tmp, decay):
            # g holds eta dL/dp; make it eta times the gradient of the cost
            if decay:
                np.multiply(p, decay, out=tmp)
                g += tmp
            v *= mu
            v -= g  # v = mu v - eta grad
            if nesterov:
                np.multiply(v, mu, out=tmp)
                tmp -= g
                p += tmp  # p + mu v - eta grad
            else:
                p += v

        weights, vectors = self._blocked(grads, self.velocity)
        weights.run(update, 2.0 * eta * lam)
        vectors.run(update, 0.0)


class Adam(_PlainRule):
    """Adam (Kingma & Ba 2015), bias-corrected, eps = 1e-8:

        m <- b1 m + (1 - b1) g;  v <- b2 v + (1 - b2) g^2
        p <- p - eta (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)

    with g = dL/dp + 2 lam p (weights only) for "adam"; "adamw" (``decoupled``, Loshchilov
    & Hutter 2019) leaves L2 out of g and decays the weights directly, p <- p - eta 2 lam p,
    before the Adam step (the same lam and eta as the recipe's SGD would use).
    """

    eps = 1e-8

    def __init__(self, stack, lam, etas, beta1: float = 0.9, beta2: float = 0.999,
                 decoupled: bool = False):
        super().__init__(stack, lam, etas)
        self.beta1, self.beta2, self.decoupled = float(beta1), float(beta2), bool(decoupled)
        self.m = [np.zeros_like(self.stack.weights), np.zeros_like(self.stack.vectors)]
        self.v = [np.zeros_like(self.stack.weights), np.zeros_like(self.stack.vectors)]
        self._t = 0

    def prepare(self, t: int):
        self._t = t
        return self._ones, self._ones

    def apply(self, grads: NetworkStack) -> None:
        t = self._t + 1  # Adam counts steps from 1
        eta, lam = float(self.etas[self._t, 0]), float(self.lam[0])
        b1, b2, eps, decoupled = self.beta1, self.beta2, self.eps, self.decoupled
        step = eta / (1.0 - b1 ** t)  # the bias corrections, folded into scalars
        root = 1.0 / np.sqrt(1.0 - b2 ** t)

        def update(p, g, m, v, tmp, regularise):
            if regularise:
                if decoupled:
                    p *= 1.0 - 2.0 * eta * lam
                else:
                    np.multiply(p, 2.0 * lam, out=tmp)
                    g += tmp
            m *= b1
            np.multiply(g, 1.0 - b1, out=tmp)
            m += tmp
            v *= b2
            g *= g
            g *= 1.0 - b2
            v += g
            np.sqrt(v, out=g)  # g is scratch from here on
            g *= root
            g += eps
            np.divide(m, g, out=g)
            g *= step
            p -= g

        weights, vectors = self._blocked(grads, self.m, self.v)
        weights.run(update, bool(lam))
        vectors.run(update, False)


class Blocks:
    """Equal-length flat arrays (a parameter buffer, its gradient, an optimiser's state)
    cut into aligned blocks of :data:`BLOCK` elements, for an elementwise update that runs
    block by block: ``run(kernel, *args)`` calls ``kernel(*block_views, scratch, *args)``
    on every block, with a scratch array of the block's length. The views are made once.
    Elementwise arithmetic gives every element the same number however the work is cut.

    (Sharing the blocks out to two threads was tried and gained nothing inside training:
    OpenBLAS's threads still hold the cores just after a GEMM.)
    """

    def __init__(self, arrays: list[np.ndarray]):
        flat = [a.reshape(-1) for a in arrays]  # views (the buffers are contiguous)
        n = flat[0].size
        if any(f.size != n or not np.shares_memory(f, a) for f, a in zip(flat, arrays)):
            raise ValueError("Blocks needs contiguous arrays of one size")
        scratch = np.empty(min(BLOCK, n), flat[0].dtype)
        # each block's views and its scratch, the last one as long as the block
        self.blocks = [(*(f[i:i + BLOCK] for f in flat), scratch[:min(BLOCK, n - i)])
                       for i in range(0, n, BLOCK)]

    def run(self, kernel, *args) -> None:
        for views in self.blocks:
            kernel(*views, *args)


def make_rule(stack: NetworkStack, trains, lam: np.ndarray, etas: np.ndarray):
    """The update rule the trainer runs for these TrainConfigs (one per network; a stack
    shares its ``optimizer``, see kbn.stacking): the recipe's :class:`SGD` unless
    ``optimizer`` says otherwise."""
    cfg = trains[0]
    if cfg.optimizer == "sgd":
        return SGD(stack, lam, etas)
    if cfg.optimizer in ("momentum", "nesterov"):
        return Momentum(stack, lam, etas, cfg.momentum, nesterov=cfg.optimizer == "nesterov")
    if cfg.optimizer in ("adam", "adamw"):
        return Adam(stack, lam, etas, cfg.momentum, cfg.beta2, decoupled=cfg.optimizer == "adamw")
    raise ValueError(f"unknown optimizer {cfg.optimizer!r}")
