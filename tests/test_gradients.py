"""Analytic gradients against centred differences, and the layer backward passes."""

import numpy as np
import pytest

from kbn import NetworkConfig, check_gradients, numerical_gradients, relative_errors
from kbn.gradcheck import parameter_label
from kbn.network import Network

ARCHS = {2: [20], 3: [20, 15], 4: [20, 15, 12]}


def _batch(n=6, d=10, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d)), rng.integers(0, 10, n)


@pytest.mark.parametrize("batch_norm", [False, True], ids=["plain", "bn"])
@pytest.mark.parametrize("k", sorted(ARCHS))
def test_analytic_matches_numerical(k, batch_norm):
    X, y = _batch()
    cfg = NetworkConfig(hidden=ARCHS[k], batch_norm=batch_norm)
    net = Network.create(cfg, X.shape[1], 10, np.random.default_rng(k), dtype=np.float64)
    _, _, ga = net.cost_and_grads(X, y, lam=0.01)
    gn = numerical_gradients(net, X, y, lam=0.01, h=1e-5)
    expected = {"W", "b", "gamma", "beta"} if batch_norm else {"W", "b"}
    assert {parameter_label(key)[0] for key in ga} == expected
    assert len([key for key in ga if key.startswith("W")]) == k
    errors = relative_errors(ga, gn)
    for key, err in errors.items():
        name, layer = parameter_label(key)
        if batch_norm and name == "b" and layer < k:
            # BN subtracts the batch mean, so a bias before it has exactly zero gradient:
            # the relative error is 0/0 there; check both sides are zero up to rounding.
            assert np.abs(ga[key]).max() < 1e-12
            assert np.abs(gn[key]).max() < 1e-9
        else:
            assert err < 1e-6, (key, err)


def test_check_gradients_reports_every_parameter():
    X, y = _batch()
    errors = check_gradients(NetworkConfig(hidden=[8, 6]), X, y, 0.1, np.random.default_rng(0))
    assert sorted(errors) == sorted(
        ["W1", "b1", "gamma1", "beta1", "W2", "b2", "gamma2", "beta2", "W3", "b3"])


def test_a_wrong_gradient_is_caught():
    """The check must fail loudly when the analytic gradient is off (here: L2 term dropped)."""
    X, y = _batch()
    net = Network.create(NetworkConfig(hidden=[8], batch_norm=False), 10, 10,
                         np.random.default_rng(0), np.float64)
    _, _, g_without_l2 = net.cost_and_grads(X, y, lam=0.0)
    gn = numerical_gradients(net, X, y, lam=0.5)
    assert relative_errors(g_without_l2, gn)["W1"] > 1e-2


def test_numerical_gradients_leave_parameters_unchanged():
    X, y = _batch()
    net = Network.create(NetworkConfig(hidden=[5]), 10, 10, np.random.default_rng(0), np.float64)
    before = {k: v.copy() for k, v in net.params.items()}
    numerical_gradients(net, X, y, lam=0.1)
    for k in before:
        np.testing.assert_array_equal(before[k], net.params[k])
    assert net.averages == {}  # the cost evaluations must not start the moving averages


def test_relative_error_definition():
    ga = {"W1": np.array([1.0, -2.0, 0.0])}
    gn = {"W1": np.array([1.1, -2.0, 0.0])}
    assert relative_errors(ga, gn)["W1"] == pytest.approx(0.1 / 1.1)
    with pytest.raises(ValueError, match="keys differ"):
        relative_errors(ga, {"W2": gn["W1"]})


def test_l2_gradient_is_2_lambda_W():
    X, y = _batch()
    net = Network.create(NetworkConfig(hidden=[7]), 10, 10, np.random.default_rng(0), np.float64)
    _, _, g0 = net.cost_and_grads(X, y, lam=0.0)
    _, _, g1 = net.cost_and_grads(X, y, lam=0.3)
    for key in g0:
        extra = 2 * 0.3 * net.params[key] if key.startswith("W") else 0.0
        np.testing.assert_allclose(g1[key], g0[key] + extra, rtol=1e-12, atol=1e-15)
