"""BN after ReLU: the reference pass (gradient check), the path that trains (tied to the
reference step by step, alone and in a stack), evaluation, config and command line."""

from __future__ import annotations

import numpy as np
import pytest

from kbn import NetworkConfig, TrainConfig
from kbn.bn_after_relu import AfterReluTrainStep, train_step_for
from kbn.config import ConfigError
from kbn.gradcheck import check_gradients, numerical_gradients, training_gradients
from kbn.network import Network
from kbn.optim import SGD
from kbn.stack import NetworkStack
from kbn.train_step import TrainStep
from kbn.trainer import fit, fit_stack

AFTER = NetworkConfig(hidden=(7, 6, 5), bn_after_relu=True)


def _batch(n=16, d=9, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d)), rng.integers(0, 10, n)


@pytest.mark.parametrize("hidden", [(6,), (6, 5), (6, 5, 4, 4)])
def test_reference_gradients_pass_the_gradient_check(hidden):
    """Relative error < 1e-6, or an absolute one < 1e-9 where the gradient itself is ~0
    (an output bias whose class is missing from the batch)."""
    X, y = _batch()
    net = Network.create(NetworkConfig(hidden=hidden, bn_after_relu=True), 9, 10,
                         np.random.default_rng(1))
    _, _, ga = net.cost_and_grads(X, y, 0.01)
    gn = numerical_gradients(net, X, y, 0.01)
    for key in ga:
        np.testing.assert_allclose(ga[key], gn[key], rtol=1e-6, atol=1e-9, err_msg=key)


def test_the_gradient_check_catches_the_wrong_order(monkeypatch):
    """Mutation: the forward pass after ReLU with the recipe's backward (ReLU first, then
    BN) fails the check, so the check sees the order."""
    X, y = _batch()
    real_backward = Network.backward

    def wrong_backward(self, dscores, caches, lam):
        self.config = self.config.replace(bn_after_relu=False)
        try:
            return real_backward(self, dscores, caches, lam)
        finally:
            self.config = self.config.replace(bn_after_relu=True)

    monkeypatch.setattr(Network, "backward", wrong_backward)
    errors = check_gradients(NetworkConfig(hidden=(6, 5), bn_after_relu=True), X, y, 0.01,
                             np.random.default_rng(1))
    assert max(errors.values()) > 1e-3


def test_bn_after_relu_changes_the_function():
    X, _ = _batch()
    p = Network.create(NetworkConfig(hidden=(6, 5)), 9, 10, np.random.default_rng(0)).params
    before = Network(NetworkConfig(hidden=(6, 5)), p).forward(X, train=True)[0]
    after = Network(NetworkConfig(hidden=(6, 5), bn_after_relu=True), p).forward(X, train=True)[0]
    assert not np.allclose(before, after)


def test_the_training_step_gives_the_reference_gradients():
    """One real update (weight scale 0.7, L2 as decay) read back: the gradient of the cost
    for every parameter, biases included (they matter before the normalisation)."""
    X, y = _batch()
    net = Network.create(AFTER, 9, 10, np.random.default_rng(2))
    _, _, ref = net.cost_and_grads(X, y, 0.01)
    got = training_gradients(net, X, y, 0.01)
    for key in ref:
        np.testing.assert_allclose(got[key], ref[key], rtol=1e-7, atol=1e-10, err_msg=key)
    assert np.abs(ref["b1"]).max() > 1e-3  # the biases' gradient is not trivially zero


def test_the_recipes_step_on_an_after_relu_network_is_wrong():
    """Mutation: the recipe's TrainStep on the same stack gives other gradients, so the
    test above tells the two passes apart (and train_step_for picks the right one)."""
    X, y = _batch()
    net = Network.create(AFTER, 9, 10, np.random.default_rng(2))
    stack = NetworkStack.from_networks([net])
    assert isinstance(train_step_for(stack, len(y)), AfterReluTrainStep)
    assert type(train_step_for(NetworkStack.from_networks(
        [Network.create(NetworkConfig(hidden=(7, 6, 5)), 9, 10, np.random.default_rng(2))]),
        len(y))) is TrainStep
    _, ref = net.loss_and_grads(X, y, 0.0)
    one = np.ones(1)
    wrong = TrainStep(stack, len(y))
    wrong(X, y, one, one)
    assert not np.allclose(wrong.grads.W[1][0], ref["W2"], atol=1e-6)


def _reference_training(configs, X, y, lam, etas, batches):
    """Plain SGD on the cost with Network (layers.py) for each config, as the trainer does."""
    nets = [Network.create(c, X.shape[1], 10, np.random.default_rng(k), np.float64)
            for k, c in enumerate(configs)]
    for t, idx in enumerate(batches):
        for net in nets:
            _, _, g = net.cost_and_grads(X[idx], y[idx], lam, update_averages=True)
            for key in net.params:
                net.params[key] -= etas[t] * g[key]
    return nets


def test_a_stack_trains_as_the_reference_step_by_step():
    """Three after-ReLU networks (different alphas) in one stack for 40 steps equal three
    reference networks trained with layers.py: weights, moving averages and evaluation."""
    X, y = _batch(n=60, seed=3)
    configs = [AFTER.replace(alpha=a) for a in (0.8, 0.5, 0.95)]
    nets = [Network.create(c, 9, 10, np.random.default_rng(k), np.float64)
            for k, c in enumerate(configs)]
    stack = NetworkStack.from_networks(nets)
    n_steps, lam = 40, 0.01
    etas = np.full((n_steps, 3), 0.05)
    rule, step = SGD(stack, np.full(3, lam), etas), train_step_for(stack, 20, log_rows=7)
    rng = np.random.default_rng(9)
    batches = [rng.permutation(60)[:20] for _ in range(n_steps)]
    for t, idx in enumerate(batches):
        grad_scale, weight_scale = rule.prepare(t)
        step(X[idx], y[idx], grad_scale, weight_scale)
        rule.finish(t, step.grads)
        rule.apply(step.grads)
    rule.fold()
    step.flush_averages()
    ref = _reference_training(configs, X, y, lam, etas[:, 0], batches)
    for k, r in enumerate(ref):
        got = stack.network(k)
        for key in r.params:
            np.testing.assert_allclose(got.params[key], r.params[key], rtol=1e-9, atol=1e-11,
                                       err_msg=key)
        for key in r.averages:
            np.testing.assert_allclose(got.averages[key], r.averages[key], rtol=1e-9,
                                       atol=1e-11, err_msg=key)
    # evaluation mode: the stack's folded layers against the reference forward pass
    ev = stack.evaluate(X, y, np.full(3, lam))
    for k, r in enumerate(ref):
        scores, _ = r.forward(X, train=False)
        assert ev["accuracy"][k] == np.mean(scores.argmax(axis=1) == y)
        assert r.evaluate(X, y, lam)["loss"] == pytest.approx(ev["loss"][k], rel=1e-9)
        from kbn.layers import softmax_cross_entropy
        assert softmax_cross_entropy(scores, y)[0] == pytest.approx(ev["loss"][k], rel=1e-9)


def test_fit_alone_equals_fit_in_a_stack(toy_data):
    tc = TrainConfig(n_batch=50, n_s=20, n_cycles=1, evals_per_cycle=2, dtype="float64")
    alone = fit(AFTER, tc, toy_data)
    stacked = fit_stack([AFTER.replace(init="xavier"), AFTER], [tc, tc], toy_data)[1]
    assert alone.history == stacked.history and alone.test_accuracy == stacked.test_accuracy
    assert alone.test_accuracy > 0.3  # it learns the blobs


def test_networks_of_both_placements_cannot_share_a_stack():
    nets = [Network.create(c, 9, 10, np.random.default_rng(0))
            for c in (NetworkConfig(hidden=(6,)), NetworkConfig(hidden=(6,), bn_after_relu=True))]
    with pytest.raises(ValueError, match="one architecture"):
        NetworkStack.from_networks(nets)
    from kbn.stacking import stack_key
    tc = TrainConfig()
    assert stack_key(nets[0].config, tc) != stack_key(nets[1].config, tc)


def test_config_rules():
    assert AFTER.describe() == "4-layer [7, 6, 5] + BN after ReLU"
    with pytest.raises(ConfigError, match=r"bn_after_relu=True: .*needs batch_norm=True"):
        NetworkConfig(batch_norm=False, bn_after_relu=True)
    with pytest.raises(ConfigError, match="must be True or False"):
        NetworkConfig(bn_after_relu="yes")
    assert NetworkConfig.from_dict(AFTER.to_dict()) == AFTER


def test_command_line_options(tmp_path):
    from kbn.cli import build_parser, _network_config, _train_config
    args = build_parser().parse_args(["train", "--bn-after-relu", "--precise-bn", "50"])
    assert _network_config(args).bn_after_relu and _train_config(args).precise_bn == 50
    args = build_parser().parse_args(["train"])
    assert not _network_config(args).bn_after_relu and _train_config(args).precise_bn == 0


@pytest.mark.parametrize("argv, message", [
    (["--no-bn", "--bn-after-relu"], "--bn-after-relu: places BN after ReLU, so it cannot be "
                                     "combined with --no-bn"),
    (["--precise-bn", "-1"], "--precise-bn -1: must be an int >= 0"),
])
def test_command_line_refuses_bad_combinations(tmp_path, capsys, argv, message):
    from kbn.cli import main
    assert main(["train", *argv, "--out", str(tmp_path / "run")]) == 1
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_dropout_with_bn_after_relu_is_refused():
    """The recipe's dropout masks the layer output before BN's backward; after ReLU that
    would be wrong, so the step refuses rather than train something else."""
    net = Network.create(AFTER, 9, 10, np.random.default_rng(0))
    with pytest.raises(ValueError, match="BN after ReLU does not support dropout"):
        train_step_for(NetworkStack.from_networks([net]), 8, dropout=0.5,
                       dropout_rng=np.random.default_rng(1))
    assert isinstance(train_step_for(NetworkStack.from_networks([net]), 8, dropout=0.0),
                      AfterReluTrainStep)
