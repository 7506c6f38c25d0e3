"""The update rules beyond the recipe's SGD (kbn.optim): step by step equal to textbook
implementations on the flat parameters; the schedules (kbn.schedule)."""

from __future__ import annotations

import numpy as np
import pytest

from kbn import NetworkConfig, TrainConfig
from kbn.network import Network
from kbn.optim import SGD, Adam, Momentum, make_rule
from kbn.schedule import cosine_lr, cyclical_lr, learning_rates, one_cycle_lr
from kbn.stack import NetworkStack

T = 6


def setup(seed=0):
    net = Network.create(NetworkConfig(hidden=[5, 4]), 6, 3, np.random.default_rng(seed), np.float64)
    stack = NetworkStack.from_networks([net])
    rng = np.random.default_rng(seed + 1)
    grads = [(rng.standard_normal(stack.weights.shape), rng.standard_normal(stack.vectors.shape))
             for _ in range(T)]
    etas = np.linspace(0.01, 0.05, T)[:, None]
    return stack, grads, etas


def run(rule, stack, grads):
    """Drive a rule as the trainer does, with given gradients; parameters after each step."""
    seen = []
    g_stack = NetworkStack(stack.configs, stack.sizes, stack.dtype)
    for t, (gw, gv) in enumerate(grads):
        grad_scale, weight_scale = rule.prepare(t)
        assert np.all(weight_scale == 1)  # no weight scale: the stored weights are the network's
        # TrainStep delivers grad_scale times the gradient
        g_stack.weights[...], g_stack.vectors[...] = grad_scale[0] * gw, grad_scale[0] * gv
        rule.finish(t, g_stack)
        rule.apply(g_stack)
        seen.append((stack.weights.copy(), stack.vectors.copy()))
    return seen


def textbook_adam(p, grads, etas, lam, b1, b2, decoupled, is_weights, bias_correction=True):
    m, v, out = np.zeros_like(p), np.zeros_like(p), []
    p = p.copy()
    for t, g in enumerate(grads, start=1):
        eta = etas[t - 1, 0]
        if is_weights and decoupled:
            p = p - eta * 2 * lam * p
        elif is_weights:
            g = g + 2 * lam * p
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        mh, vh = (m / (1 - b1 ** t), v / (1 - b2 ** t)) if bias_correction else (m, v)
        p = p - eta * mh / (np.sqrt(vh) + 1e-8)
        out.append(p)
    return out


@pytest.mark.parametrize("decoupled", [False, True], ids=["adam", "adamw"])
def test_adam_equals_the_textbook_step_by_step(decoupled):
    stack, grads, etas = setup()
    w0, v0 = stack.weights.copy(), stack.vectors.copy()
    seen = run(Adam(stack, np.array([0.03]), etas, 0.8, 0.95, decoupled), stack, grads)
    tw = textbook_adam(w0, [g[0] for g in grads], etas, 0.03, 0.8, 0.95, decoupled, True)
    tv = textbook_adam(v0, [g[1] for g in grads], etas, 0.03, 0.8, 0.95, decoupled, False)
    for (w, v), a, b in zip(seen, tw, tv):
        np.testing.assert_allclose(w, a, rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(v, b, rtol=1e-12, atol=1e-15)
    # mutation: a textbook without the bias correction is told apart
    wrong = textbook_adam(w0, [g[0] for g in grads], etas, 0.03, 0.8, 0.95, decoupled, True,
                          bias_correction=False)
    assert not np.allclose(seen[0][0], wrong[0], rtol=1e-6)


@pytest.mark.parametrize("nesterov", [False, True])
def test_momentum_equals_the_pytorch_form_at_a_constant_rate(nesterov):
    """torch.optim.SGD: b <- mu b + g; p <- p - eta (g + mu b) (Nesterov) or p - eta b,
    with g = dL/dp + 2 lam p on the weights; the same at a constant eta."""
    stack, grads, _ = setup()
    etas = np.full((T, 1), 0.02)
    w0, v0 = stack.weights.copy(), stack.vectors.copy()
    seen = run(Momentum(stack, np.array([0.01]), etas, 0.9, nesterov), stack, grads)
    for which, p0, lam in ((0, w0, 0.01), (1, v0, 0.0)):
        p, b = p0.copy(), np.zeros_like(p0)
        for (gw_gv, after) in zip(grads, seen):
            g = gw_gv[which] + 2 * lam * p
            b = 0.9 * b + g
            p = p - 0.02 * (g + 0.9 * b if nesterov else b)
            np.testing.assert_allclose(after[which], p, rtol=1e-12, atol=1e-14)


def test_make_rule_follows_the_config():
    stack, _, etas = setup()
    lam = np.array([0.0])
    assert type(make_rule(stack, [TrainConfig()], lam, etas)) is SGD
    m = make_rule(stack, [TrainConfig(optimizer="nesterov", momentum=0.5)], lam, etas)
    assert isinstance(m, Momentum) and m.nesterov and m.mu == 0.5
    a = make_rule(stack, [TrainConfig(optimizer="adamw", beta2=0.99)], lam, etas)
    assert isinstance(a, Adam) and a.decoupled and a.beta2 == 0.99


def test_the_plain_rules_refuse_a_stack():
    nets = [Network.create(NetworkConfig(hidden=[5]), 6, 3, np.random.default_rng(s), np.float64)
            for s in range(2)]
    with pytest.raises(ValueError, match="one network, not a stack of 2"):
        Adam(NetworkStack.from_networks(nets), np.zeros(2), np.ones((3, 2)))


def test_schedules():
    t = np.arange(101)
    cos = cosine_lr(t, 0.001, 0.1, 100)
    assert cos[0] == pytest.approx(0.1) and cos[-1] == pytest.approx(0.001)
    assert np.all(np.diff(cos) < 0) and cos[50] == pytest.approx(0.0505)
    one = one_cycle_lr(t, 0.001, 0.1, 100, warmup=0.2)
    assert one[0] == pytest.approx(0.001) and one[20] == pytest.approx(0.1)
    assert one[-1] == pytest.approx(0.001)
    assert np.all(np.diff(one[:21]) > 0) and np.all(np.diff(one[20:]) < 0)
    with pytest.raises(ValueError, match="step t must be in"):
        cosine_lr(101, 0.001, 0.1, 100)


def test_learning_rates_per_schedule():
    cfg = TrainConfig(n_s=10, n_cycles=2)
    assert np.array_equal(learning_rates(cfg), cyclical_lr(np.arange(40), 1e-5, 0.1, 10))
    cos = learning_rates(cfg.replace(schedule="cosine"))
    assert len(cos) == 40 and cos[0] == pytest.approx(0.1)
    assert np.array_equal(learning_rates(cfg.replace(schedule="one_cycle")),
                          one_cycle_lr(np.arange(40), 1e-5, 0.1, 40))


# ------------------------------------------------------------ the blocked update
def test_blocks_visit_every_element_once_with_aligned_views(monkeypatch):
    """Blocks cuts aligned views of every array (a last short block too); a kernel that adds
    1 and records the block's start sees each element once, with a scratch as long as its
    block."""
    import kbn.optim as optim

    monkeypatch.setattr(optim, "BLOCK", 7)
    a, b = np.zeros(40), np.arange(40.0)  # 5 blocks of 7 and one of 5
    seen = []

    def kernel(x, y, scratch, step):
        assert len(scratch) == len(x) == len(y)
        np.add(x, step, out=x)
        seen.append(int(y[0]))

    optim.Blocks([a, b]).run(kernel, 1.0)
    assert np.array_equal(a, np.ones(40))
    assert seen == list(range(0, 40, 7))
    with pytest.raises(ValueError, match="one size"):
        optim.Blocks([np.zeros(4), np.zeros(5)])


@pytest.mark.parametrize("make", [
    lambda s, e: Momentum(s, np.array([0.01]), e, 0.9, nesterov=True),
    lambda s, e: Momentum(s, np.array([0.01]), e, 0.9, nesterov=False),
    lambda s, e: Adam(s, np.array([0.03]), e, 0.8, 0.95, decoupled=False),
    lambda s, e: Adam(s, np.array([0.03]), e, 0.8, 0.95, decoupled=True),
], ids=["nesterov", "momentum", "adam", "adamw"])
def test_the_blocked_update_equals_one_pass_over_the_whole_buffer(make, monkeypatch):
    """The rules update in cache-sized blocks (kbn.optim.BLOCK): every parameter gets exactly
    the numbers of one pass over the whole buffer (float32, bit for bit), and a mutation (a
    block left out) is caught."""
    import kbn.optim as optim

    def trained(block, skip_last=False):
        monkeypatch.setattr(optim, "BLOCK", block)
        stack, grads, etas = setup(3)
        stack = _as32(stack)
        assert stack.weights.dtype == np.float32
        grads = [(gw.astype(np.float32), gv.astype(np.float32)) for gw, gv in grads]
        rule = make(stack, etas)
        if skip_last:
            real = optim.Blocks.__init__

            def init(self, arrays):
                real(self, arrays)
                if len(self.blocks) > 1:
                    self.blocks = self.blocks[:-1]
            monkeypatch.setattr(optim.Blocks, "__init__", init)
        return run(rule, stack, grads)

    whole = trained(10 ** 9)
    blocked = trained(5)  # 62 weights: 13 blocks
    for (w, v), (w1, v1) in zip(whole, blocked):
        assert np.array_equal(w, w1) and np.array_equal(v, v1)
    wrong = trained(5, skip_last=True)
    assert not np.array_equal(wrong[-1][0], whole[-1][0])


def _as32(stack):
    net = stack.network(0)
    return NetworkStack.from_networks([Network(net.config, {k: v.astype(np.float32)
                                                            for k, v in net.params.items()})])
