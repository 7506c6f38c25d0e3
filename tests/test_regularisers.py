"""Inverted dropout and label smoothing in the training path (TrainStep): their gradients
against centred differences of the same loss (dropout with a fixed mask)."""

from __future__ import annotations

import numpy as np
import pytest

import kbn.train_step
from kbn import NetworkConfig
from kbn.network import Network
from kbn.stack import NetworkStack
from kbn.train_step import TrainStep


class FixedUniforms:
    """A stand-in generator whose uniforms are the same every call: a fixed dropout mask."""

    def __init__(self, seed=0):
        self.rng, self.tables = np.random.default_rng(seed), {}

    def random(self, shape, dtype=np.float64):
        if shape not in self.tables:
            self.tables[shape] = self.rng.random(shape, dtype=dtype)
        return self.tables[shape]


def step_loss_and_grads(net, X, y, **options):
    stack = NetworkStack.from_networks([net])
    step = TrainStep(stack, len(y), **options)
    ones = np.ones(1)
    loss = float(step(X, y, ones, ones, update_averages=False)[0])
    grads = step.grads.network(0).params
    return loss, grads


def numerical(net, X, y, options=dict, h=1e-6):
    """Centred differences of the step's loss; ``options()`` makes the step's options
    afresh for each evaluation (a fresh FixedUniforms: the same mask every time)."""
    out = {}
    for key, p in net.params.items():
        g = np.zeros_like(p)
        for i in range(p.size):
            old = p.flat[i]
            p.flat[i] = old + h
            plus = step_loss_and_grads(net, X, y, **options())[0]
            p.flat[i] = old - h
            minus = step_loss_and_grads(net, X, y, **options())[0]
            p.flat[i] = old
            g.flat[i] = (plus - minus) / (2 * h)
        out[key] = g
    return out


def assert_close(a, b):
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=1e-5, atol=1e-8, err_msg=k)


def max_rel_error(a, b):
    return max(float(np.max(np.abs(a[k] - b[k]) / np.maximum(1e-9, np.abs(a[k]) + np.abs(b[k]))))
               for k in a)


@pytest.fixture
def problem():
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((12, 8)), rng.integers(0, 5, 12)
    return X, y


def networks(batch_norm):
    return Network.create(NetworkConfig(hidden=[7, 6], batch_norm=batch_norm), 8, 5,
                          np.random.default_rng(1), np.float64)


@pytest.mark.parametrize("batch_norm", [False, True], ids=["plain", "bn"])
def test_dropout_gradient_with_a_fixed_mask(problem, batch_norm):
    X, y = problem
    net = networks(batch_norm)
    opts = lambda: {"dropout": 0.3, "dropout_rng": FixedUniforms()}  # noqa: E731
    loss, grads = step_loss_and_grads(net, X, y, **opts())
    assert_close(grads, numerical(net, X, y, opts))
    # the mask really dropped something: the loss differs from the network's without dropout
    assert abs(loss - step_loss_and_grads(net, X, y)[0]) > 1e-3


def test_a_mask_missing_from_the_backward_pass_fails_the_check(problem, monkeypatch):
    """Mutation: dropout applied forward but not to the ReLU mask the backward pass uses."""
    X, y = problem
    net = networks(True)

    def forward_only(self, L):
        u = self.dropout_rng.random(L.h.shape, dtype=L.h.dtype)
        L.h *= (u >= self.dropout) / (1.0 - self.dropout)

    monkeypatch.setattr(kbn.train_step.TrainStep, "_drop", forward_only)
    opts = lambda: {"dropout": 0.3, "dropout_rng": FixedUniforms()}  # noqa: E731
    _, grads = step_loss_and_grads(net, X, y, **opts())
    assert max_rel_error(grads, numerical(net, X, y, opts)) > 1e-2


def test_dropout_keeps_a_fraction_and_the_expected_activation():
    stack = NetworkStack.from_networks([networks(False)])
    step = TrainStep(stack, 4000, dropout=0.25, dropout_rng=np.random.default_rng(0))
    X = np.random.default_rng(1).standard_normal((4000, 8))
    step(X, np.zeros(4000, int), np.ones(1), np.ones(1))
    h = step.hidden[0].h
    plain = TrainStep(stack, 4000)
    plain(X, np.zeros(4000, int), np.ones(1), np.ones(1))
    h0 = plain.hidden[0].h
    on = h0 > 0
    kept = h[on] != 0
    assert abs(kept.mean() - 0.75) < 0.02
    np.testing.assert_allclose(h[on][kept], h0[on][kept] / 0.75)


def test_dropout_without_a_generator_is_refused():
    stack = NetworkStack.from_networks([networks(False)])
    with pytest.raises(ValueError, match="dropout_rng"):
        TrainStep(stack, 4, dropout=0.5)


@pytest.mark.parametrize("batch_norm", [False, True], ids=["plain", "bn"])
def test_label_smoothing_loss_and_gradient(problem, batch_norm):
    X, y = problem
    net = networks(batch_norm)
    e = 0.2
    loss, grads = step_loss_and_grads(net, X, y, label_smoothing=e)
    # the loss is the cross-entropy against the smoothed targets
    scores, _ = net.forward(X, train=True)
    logp = scores - scores.max(axis=1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(axis=1, keepdims=True))
    target = np.full(logp.shape, e / 5)
    target[np.arange(len(y)), y] += 1 - e
    assert loss == pytest.approx(float(-(target * logp).sum(axis=1).mean()), rel=1e-12)
    num = numerical(net, X, y, lambda: {"label_smoothing": e})
    assert_close(grads, num)
    # mutation: the one-hot gradient (no smoothing) is not the gradient of this loss
    _, plain = step_loss_and_grads(net, X, y)
    assert max_rel_error(plain, num) > 1e-3
