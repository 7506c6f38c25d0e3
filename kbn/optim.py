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
