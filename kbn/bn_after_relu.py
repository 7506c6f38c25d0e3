"""BN after ReLU on the path that trains: a TrainStep and the stack's evaluation fold.

The recipe normalises each hidden unit's affine output before its ReLU
(``NetworkConfig.bn_after_relu=False``). With ``bn_after_relu=True`` a hidden layer is
s = x W + b -> r = ReLU(s) -> gamma (r - mu) / sqrt(var + eps) + beta, mu and var the batch
statistics of r (the readable version: :meth:`kbn.network.Network.forward`).

:class:`AfterReluTrainStep` is :class:`kbn.train_step.TrainStep` with the hidden layers'
forward and backward passes, and the moving averages, for that order; the output layer,
the loss, the buffers and the stacking are the parent's. :func:`train_step_for` picks the
step a stack needs, so the trainer and :func:`kbn.gradcheck.training_gradients` never run
the recipe's pass on an after-ReLU network. Tests tie both to ``layers.py``.
"""

from __future__ import annotations

import numpy as np

from .stack import NetworkStack
from .train_step import TrainStep, _HiddenLayer


def train_step_for(stack: NetworkStack, n: int, **kwargs) -> TrainStep:
    """The TrainStep that computes ``stack``'s networks as configured (BN placement)."""
    if getattr(stack, "bn_after_relu", False):
        if kwargs.get("dropout"):  # the mask would act before BN's backward, not after it
            raise ValueError("BN after ReLU does not support dropout yet: train it with "
                             "dropout=0 (TrainConfig.dropout), or with BN before ReLU")
        return AfterReluTrainStep(stack, n, **kwargs)
    return TrainStep(stack, n, **kwargs)


class AfterReluTrainStep(TrainStep):
    """Training-mode losses and gradients of K networks with BN after each hidden ReLU.

    Differences from the parent: the bias b matters (ReLU comes before the
    normalisation), so it is added and gets a gradient; BN sees ReLU(c x W + b) as it is,
    so eps is used as given and the logged batch statistics are those of the ReLU output
    itself (no weight scale c to fold in).
    """

    def __call__(self, X, y, grad_scale, weight_scale, update_averages: bool = True):
        self._c3 = np.array(weight_scale, self.stack.dtype)[:, None, None]
        return super().__call__(X, y, grad_scale, weight_scale, update_averages)

    def _bn_forward(self, L: _HiddenLayer, x: np.ndarray, eps_c, inv_c) -> np.ndarray:
        """x -> BN(ReLU(c x W + b)) (K, n, M) with the ReLU output's batch statistics.

        Leaves the centred ReLU output in ``L.s``, the ReLU mask in ``L.on``, 1/sqrt(var +
        eps) in ``L.inv_std`` and BN's gain gamma inv_std in ``L.scale``."""
        s, h = self._affine(L, x), L.h
        s *= self._c3
        s += L.b
        np.maximum(s, L.zeros, out=s)  # r = ReLU(s)
        np.sign(s, out=L.on)
        self._normalise(L, s, self.eps)
        np.multiply(L.gamma, L.inv_std, out=L.scale)
        np.multiply(s, L.scale, out=h)  # gamma rhat
        h += L.beta
        return h

    def _hidden_backward(self, L: _HiddenLayer) -> np.ndarray:
        """Gradient at BN's output -> gradient at the affine output (K, n, M); writes
        dgamma, dbeta and db. BN's backward (as in the parent, on the centred ReLU output
        rc = r - mu: gain (dh - dbeta/n - rc inv_std^2 sum(dh rc)/n)), then the ReLU mask."""
        ds = self._bn_backward(L, L.dh)
        ds *= L.on
        np.matmul(self.ones, ds, out=L.db)
        return ds

    def _logged_terms(self, L: _HiddenLayer, scales: np.ndarray):
        """The logged statistics are those of BN's input itself, the ReLU output (the weight
        scale and the bias are inside it): folded as they are (c = 1, b = 0), exactly."""
        return np.ones_like(scales), 0.0


def stack_inference_layers(stack: NetworkStack) -> list[tuple[np.ndarray, np.ndarray]]:
    """(W, b) per layer of an after-ReLU stack in evaluation mode, in the stack's layout
    (as :meth:`kbn.stack.NetworkStack.inference_layers`): layer l's BN, affine in its ReLU
    output, folds into layer l + 1 (as :meth:`kbn.network.Network.inference_layers`)."""
    if stack.mean[0] is None:
        raise RuntimeError("evaluation-mode BN needs moving averages, and these networks "
                           "have not seen a training batch yet")
    folded = [(stack.W[0], stack.b[0].reshape(-1))]
    for l in range(1, stack.n_layers):
        scale = stack.gamma[l - 1] / np.sqrt(stack.var[l - 1] + stack.eps[:, None])  # (K, m_in)
        shift = stack.beta[l - 1] - stack.mean[l - 1] * scale
        W = stack.W[l]
        folded.append((W * scale[:, :, None], np.matmul(shift[:, None, :], W)[:, 0] + stack.b[l]))
    return folded
