"""Batch normalisation: training statistics, moving averages, evaluation mode."""

import numpy as np
import pytest

from kbn import NetworkConfig
from kbn.layers import batchnorm_forward
from kbn.network import Network


def test_training_mode_normalises_each_feature():
    rng = np.random.default_rng(0)
    x = 3.0 + 5.0 * rng.standard_normal((200, 7))
    gamma, beta = np.ones(7), np.zeros(7)
    out, _, mu, var = batchnorm_forward(x, gamma, beta, eps=1e-8)
    np.testing.assert_allclose(out.mean(axis=0), 0, atol=1e-12)
    np.testing.assert_allclose(out.var(axis=0), 1, rtol=1e-6)
    np.testing.assert_allclose(mu, x.mean(axis=0))
    np.testing.assert_allclose(var, x.var(axis=0))  # biased (divide by N), not N-1


def test_gamma_and_beta_scale_and_shift():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((50, 3))
    gamma, beta = np.array([2.0, 0.5, -1.0]), np.array([1.0, -3.0, 0.0])
    out, _, _, _ = batchnorm_forward(x, gamma, beta, eps=1e-8)
    np.testing.assert_allclose(out.mean(axis=0), beta, atol=1e-12)
    np.testing.assert_allclose(out.std(axis=0), np.abs(gamma), rtol=1e-6)


def _hidden_pre_activation(net, X, train):
    """Output of the first BN layer (before ReLU), via the layer cache."""
    _, caches = net.forward(X, train=train)
    _, bn_cache, _ = caches[0]
    xhat, gamma, _ = bn_cache
    return xhat * gamma + net.params["beta1"]


@pytest.mark.parametrize("alpha", [0.0, 0.5, 0.8])
def test_moving_averages_follow_alpha(alpha):
    rng = np.random.default_rng(2)
    net = Network.create(NetworkConfig(hidden=[6], alpha=alpha), 4, 3, rng, np.float64)
    batches = [rng.standard_normal((30, 4)) * (i + 1) + i for i in range(3)]
    expected_mu = expected_var = None
    for xb in batches:
        s = xb @ net.params["W1"] + net.params["b1"]
        mu, var = s.mean(axis=0), s.var(axis=0)
        if expected_mu is None:  # initialised from the first batch
            expected_mu, expected_var = mu, var
        else:
            expected_mu = alpha * expected_mu + (1 - alpha) * mu
            expected_var = alpha * expected_var + (1 - alpha) * var
        net.forward(xb, train=True, update_averages=True)
    np.testing.assert_allclose(net.averages["mean1"], expected_mu, rtol=1e-12)
    np.testing.assert_allclose(net.averages["var1"], expected_var, rtol=1e-12)


def test_evaluation_mode_uses_moving_averages_not_batch_statistics():
    rng = np.random.default_rng(3)
    net = Network.create(NetworkConfig(hidden=[5]), 4, 3, rng, np.float64)
    net.forward(rng.standard_normal((100, 4)), train=True, update_averages=True)
    shifted = 10.0 + rng.standard_normal((20, 4))  # statistics far from the averages
    eval_out = _hidden_pre_activation(net, shifted, train=False)
    mean, var = net.averages["mean1"], net.averages["var1"]
    s = shifted @ net.params["W1"] + net.params["b1"]
    np.testing.assert_allclose(eval_out, (s - mean) / np.sqrt(var + 1e-8), rtol=1e-10)
    train_out = _hidden_pre_activation(net, shifted, train=True)
    assert np.abs(eval_out - train_out).max() > 1.0  # batch statistics would differ a lot


def test_evaluation_mode_predictions_do_not_depend_on_the_batch():
    rng = np.random.default_rng(4)
    net = Network.create(NetworkConfig(hidden=[8, 8]), 5, 4, rng, np.float64)
    net.forward(rng.standard_normal((64, 5)), train=True, update_averages=True)
    X = rng.standard_normal((10, 5))
    whole, _ = net.forward(X, train=False)
    one, _ = net.forward(X[:1], train=False)
    np.testing.assert_allclose(one, whole[:1], rtol=1e-12)


def test_evaluation_before_any_training_batch_says_what_to_do():
    net = Network.create(NetworkConfig(hidden=[3]), 2, 2, np.random.default_rng(0))
    with pytest.raises(RuntimeError, match="train it first"):
        net.predict(np.zeros((1, 2)))


def test_no_bn_parameters_on_the_output_layer():
    net = Network.create(NetworkConfig(hidden=[4, 4]), 3, 2, np.random.default_rng(0))
    assert "gamma3" not in net.params and "gamma2" in net.params


@pytest.mark.parametrize("batch_norm", [True, False], ids=["bn", "plain"])
@pytest.mark.parametrize("block", [7, 50, 1000])
def test_evaluate_with_folded_bn_equals_the_reference_forward(batch_norm, block):
    """evaluate() folds BN into the weights and works in blocks of rows (here a last
    partial block too); it must give the loss and accuracy of forward(train=False)."""
    from kbn.layers import softmax_cross_entropy

    rng = np.random.default_rng(5)
    net = Network.create(NetworkConfig(hidden=[8, 6], batch_norm=batch_norm), 5, 4, rng, np.float64)
    for _ in range(3):
        net.forward(2.0 + rng.standard_normal((32, 5)), train=True, update_averages=True)
    if batch_norm:  # gamma, beta away from 1, 0 so the folding is exercised
        for key in net.params:
            if key.startswith(("gamma", "beta")):
                net.params[key] += rng.standard_normal(net.params[key].shape)
    X, y = rng.standard_normal((50, 5)), rng.integers(0, 4, 50)
    scores, _ = net.forward(X, train=False)
    loss, _, _ = softmax_cross_entropy(scores, y)
    got = net.evaluate(X, y, lam=0.1, block=block)
    assert got["loss"] == pytest.approx(loss, rel=1e-12)
    assert got["cost"] == pytest.approx(loss + 0.1 * net.l2(), rel=1e-12)
    assert got["accuracy"] == np.mean(scores.argmax(axis=1) == y)
    assert 0.0 < got["accuracy"] < 1.0  # a non-trivial comparison


def test_evaluate_counts_ties_as_the_first_class_like_predict():
    """A network whose scores are all equal predicts class 0 for every image."""
    net = Network.create(NetworkConfig(hidden=[3], batch_norm=False), 2, 3, np.random.default_rng(0))
    for key in net.params:
        net.params[key][...] = 0.0
    X, y = np.ones((6, 2)), np.array([0, 1, 2, 0, 1, 2])
    assert net.evaluate(X, y, lam=0.0)["accuracy"] == pytest.approx(2 / 6)
    np.testing.assert_array_equal(net.predict(X), 0)
