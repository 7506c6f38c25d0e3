"""PreciseBN: population statistics of the final weights, by hand and through the trainer."""

from __future__ import annotations

import numpy as np
import pytest

from kbn import NetworkConfig, TrainConfig
from kbn.config import ConfigError
from kbn.network import Network
from kbn.precise_bn import batches_rng, population_statistics
from kbn.stacking import stack_key
from kbn.trainer import fit, fit_stack

TC = TrainConfig(n_batch=50, n_s=20, n_cycles=1, evals_per_cycle=2, lam=0.002, seed=3)


def _by_hand(net: Network, X, n_batches, n_batch, rng):
    """Batch means and variances of every BN layer, layer by layer, averaged."""
    p, cfg = net.params, net.config
    order, j, sums = None, 0, {}
    for _ in range(n_batches):
        if order is None or j == X.shape[0] // n_batch:
            order, j = rng.permutation(X.shape[0]), 0
        h = X[order[j * n_batch:(j + 1) * n_batch]]
        j += 1
        for l in range(1, net.n_layers):
            s = h @ p[f"W{l}"] + p[f"b{l}"]
            mu, var = s.mean(0), s.var(0)
            sums[f"mean{l}"] = sums.get(f"mean{l}", 0) + mu
            sums[f"var{l}"] = sums.get(f"var{l}", 0) + var
            s = p[f"gamma{l}"] * (s - mu) / np.sqrt(var + cfg.eps) + p[f"beta{l}"]
            h = np.maximum(s, 0)
    return {k: v / n_batches for k, v in sums.items()}


def test_population_statistics_by_hand():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((90, 6))
    net = Network.create(NetworkConfig(hidden=(5, 4)), 6, 3, rng)
    net.averages = {"mean1": np.zeros(5)}  # not used, not changed
    got = population_statistics(net, X, 7, 20, np.random.default_rng(5))  # 7 > 4 per epoch
    want = _by_hand(net, X, 7, 20, np.random.default_rng(5))
    assert set(got) == {"mean1", "var1", "mean2", "var2"}
    for key in want:
        np.testing.assert_allclose(got[key], want[key], rtol=1e-12)
    assert list(net.averages) == ["mean1"]
    assert population_statistics(Network.create(NetworkConfig(batch_norm=False), 6, 3, rng),
                                 X, 3, 20, rng) == {}
    with pytest.raises(ValueError, match="at least one batch"):
        population_statistics(net, X, 0, 20, rng)


def test_the_trainer_evaluates_with_the_population_statistics(toy_data):
    net = NetworkConfig(hidden=(12, 8))
    moving, precise = fit_stack([net, net], [TC, TC.replace(precise_bn=30)], toy_data)
    # the same weights (PreciseBN changes no update), other statistics
    for key in moving.network.params:
        assert np.array_equal(moving.network.params[key], precise.network.params[key])
    X = np.asarray(toy_data.train.X, np.float32)
    want = population_statistics(moving.network, X, 30, TC.n_batch, batches_rng(TC.seed))
    for key, value in want.items():
        np.testing.assert_array_equal(precise.network.averages[key], value)
        assert not np.allclose(moving.network.averages[key], value)
    Xt = np.asarray(toy_data.test.X, np.float32)
    assert precise.test_accuracy == precise.network.evaluate(Xt, toy_data.test.y, TC.lam)["accuracy"]
    Xv = np.asarray(toy_data.val.X, np.float32)
    assert precise.val_accuracy == precise.network.evaluate(Xv, toy_data.val.y, TC.lam)["accuracy"]
    assert precise.history == moving.history  # the curves are those of training
    assert fit(net, TC.replace(precise_bn=30), toy_data).test_accuracy == precise.test_accuracy


def test_without_bn_precise_bn_changes_nothing(toy_data):
    net = NetworkConfig(hidden=(12,), batch_norm=False)
    a, b = fit_stack([net, net], [TC, TC.replace(precise_bn=10)], toy_data)
    assert a.test_accuracy == b.test_accuracy and a.val_accuracy == b.val_accuracy


def test_precise_bn_is_a_validated_per_network_field():
    with pytest.raises(ConfigError, match=r"precise_bn=-1: must be an int >= 0"):
        TrainConfig(precise_bn=-1)
    with pytest.raises(ConfigError, match="precise_bn"):
        TrainConfig(precise_bn=2.5)
    assert stack_key(NetworkConfig(), TC) == stack_key(NetworkConfig(), TC.replace(precise_bn=9))
    assert TrainConfig.from_dict(TC.replace(precise_bn=9).to_dict()).precise_bn == 9
