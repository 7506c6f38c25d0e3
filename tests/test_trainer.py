import json
import os

import numpy as np
import pytest

from kbn import NetworkConfig, TrainConfig, cyclical_lr
from kbn.trainer import HISTORY_KEYS, Result, fit, record_steps

SHORT = TrainConfig(n_batch=20, n_s=50, n_cycles=1, eta_max=0.05, lam=1e-3, evals_per_cycle=4)


def test_learns_a_separable_problem(toy_data):
    for bn in (False, True):
        result = fit(NetworkConfig(hidden=[30, 20], batch_norm=bn), SHORT, toy_data)
        assert result.val_accuracy > 0.8, bn
        assert result.test_accuracy > 0.8, bn
        assert result.history["train_cost"][-1] < result.history["train_cost"][0]


def test_history_is_recorded_at_the_evaluation_points(toy_data):
    cfg = SHORT.replace(n_cycles=2, evals_per_cycle=5)
    result = fit(NetworkConfig(hidden=[10]), cfg, toy_data)
    assert set(result.history) == set(HISTORY_KEYS)
    assert result.history["step"] == record_steps(cfg).tolist() == list(range(20, 201, 20))
    assert all(len(v) == 10 for v in result.history.values())
    # the recorded rate is the one used for the update that preceded the record
    expected = [cyclical_lr(t - 1, cfg.eta_min, cfg.eta_max, cfg.n_s) for t in result.history["step"]]
    assert result.history["eta"] == pytest.approx(expected)
    assert result.history["epoch"][-1] == pytest.approx(200 / (1000 // 20))
    assert result.val_accuracy == result.history["val_accuracy"][-1]


def test_same_seed_same_numbers_other_seed_other_numbers(toy_data):
    net = NetworkConfig(hidden=[12, 12])
    a, b = fit(net, SHORT, toy_data), fit(net, SHORT, toy_data)
    assert a.history == b.history and a.test_accuracy == b.test_accuracy
    for key in a.network.params:
        np.testing.assert_array_equal(a.network.params[key], b.network.params[key])
    c = fit(net, SHORT.replace(seed=1), toy_data)
    assert c.history["train_cost"] != a.history["train_cost"]


def test_dtype_is_honoured(toy_data):
    for dtype in ("float32", "float64"):
        result = fit(NetworkConfig(hidden=[8]), SHORT.replace(dtype=dtype), toy_data)
        assert all(p.dtype == np.dtype(dtype) for p in result.network.params.values())


def test_divergence_stops_the_run_and_is_recorded(toy_data):
    wild = NetworkConfig(hidden=[20, 20], batch_norm=False, init="sigma", sigma=50.0)
    result = fit(wild, SHORT.replace(eta_min=1.0, eta_max=1e3), toy_data)
    assert result.diverged
    assert 0 <= result.diverged_at < SHORT.n_steps
    assert np.isnan(result.test_accuracy) and np.isnan(result.val_accuracy)


def test_batch_larger_than_training_set_is_refused(toy_data):
    with pytest.raises(ValueError, match="n_batch=5000: larger than the 1000 training images"):
        fit(NetworkConfig(hidden=[8]), SHORT.replace(n_batch=5000), toy_data)


def test_result_round_trips_through_json(toy_data):
    result = fit(NetworkConfig(hidden=[8]), SHORT, toy_data)
    back = Result.from_dict(json.loads(json.dumps(result.to_dict())))
    assert back.network_config == result.network_config
    assert back.train_config == result.train_config
    assert back.history == result.history and back.test_accuracy == result.test_accuracy


def test_record_steps_end_at_the_last_update():
    cfg = TrainConfig(n_s=7, n_cycles=3, evals_per_cycle=4)
    steps = record_steps(cfg)
    assert steps[-1] == cfg.n_steps == 42 and len(steps) == 12 and np.all(np.diff(steps) > 0)


@pytest.mark.skipif(not os.environ.get("KBN_DATA_DIR"),
                    reason="set KBN_DATA_DIR to the cifar-10-batches-py folder")
def test_three_layer_bn_learns_real_cifar10_in_one_short_cycle():
    from kbn.data import load_cifar10

    data = load_cifar10()
    cfg = TrainConfig(n_s=450, n_cycles=1, evals_per_cycle=2)  # 900 steps, 2 epochs
    result = fit(NetworkConfig(hidden=[50, 50], batch_norm=True), cfg, data)
    assert result.val_accuracy >= 0.40
    assert result.test_accuracy >= 0.40


def _plain_gradient_descent(net_cfg, cfg, data, dtype):
    """The textbook loop: W <- W - eta * dCost/dW from Network.cost_and_grads, in ``dtype``,
    with fit's initialisation and shuffles (the same seeds)."""
    from kbn.network import Network

    init_rng, shuffle_rng = np.random.default_rng(cfg.seed).spawn(2)
    X, y = data.train.X.astype(dtype), data.train.y
    net = Network.create(net_cfg, X.shape[1], 10, init_rng, dtype)
    t, n = 0, len(y)
    while t < cfg.n_steps:
        order = shuffle_rng.permutation(n)
        for j in range(n // cfg.n_batch):
            if t == cfg.n_steps:
                break
            idx = order[j * cfg.n_batch:(j + 1) * cfg.n_batch]
            _, _, grads = net.cost_and_grads(X[idx], y[idx], cfg.lam, update_averages=True)
            eta = cyclical_lr(t, cfg.eta_min, cfg.eta_max, cfg.n_s)
            for key, g in grads.items():
                net.params[key] -= np.asarray(eta * g, dtype=dtype)
            t += 1
    return net


@pytest.mark.parametrize("batch_norm", [True, False], ids=["bn", "plain"])
@pytest.mark.parametrize(("lam", "n_s"), [(0.05, 30), (3.0, 30), (12.0, 5)],
                         ids=["lam-small", "lam-large", "lam-huge"])
def test_fast_update_is_plain_gradient_descent_on_the_cost(toy_data, lam, n_s, batch_norm):
    """fit's update (packed buffers, TrainStep, L2 as a decay kept in a scalar and folded
    into the weights: rarely with lam=0.05, every few steps with lam=3; with lam=12 the
    decay factor 1 - 2 eta lam falls below 1/2, even below 0, and is applied directly)
    must equal the textbook step W <- W - eta * dCost/dW from cost_and_grads (float64).
    lam=12 runs 10 steps only: it shrinks the weights so fast that BN, which does not see
    their scale, amplifies rounding differences from there on."""
    cfg = SHORT.replace(dtype="float64", n_s=n_s, lam=lam, evals_per_cycle=1)
    net_cfg = NetworkConfig(hidden=[12, 9], batch_norm=batch_norm)
    result = fit(net_cfg, cfg, toy_data)
    net = _plain_gradient_descent(net_cfg, cfg, toy_data, np.float64)
    for key in net.params:
        np.testing.assert_allclose(result.network.params[key], net.params[key],
                                   rtol=1e-9, atol=1e-12, err_msg=key)
    for key in net.averages:
        np.testing.assert_allclose(result.network.averages[key], net.averages[key], rtol=1e-9)


@pytest.mark.parametrize("batch_norm", [True, False], ids=["bn", "plain"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_fast_update_is_plain_gradient_descent_over_many_steps(toy_data, batch_norm, dtype):
    """The same over 600 steps: more than the 256 BN steps TrainStep logs before it folds
    them into the moving averages (so the flush runs in the middle of training), and in
    float32, the precision the book trains in, with a tolerance for float32 rounding."""
    cfg = SHORT.replace(dtype=dtype, n_s=300, lam=0.05, evals_per_cycle=1)
    net_cfg = NetworkConfig(hidden=[12, 9], batch_norm=batch_norm)
    assert cfg.n_steps > 256
    result = fit(net_cfg, cfg, toy_data)
    net = _plain_gradient_descent(net_cfg, cfg, toy_data, np.dtype(dtype))
    rtol, atol = (1e-9, 1e-12) if dtype == "float64" else (2e-3, 2e-5)
    for key in net.params:
        assert result.network.params[key].dtype == np.dtype(dtype)
        np.testing.assert_allclose(result.network.params[key], net.params[key],
                                   rtol=rtol, atol=atol, err_msg=key)
    for key in net.averages:
        np.testing.assert_allclose(result.network.averages[key], net.averages[key],
                                   rtol=rtol, atol=atol, err_msg=key)


def test_float32_and_float64_training_agree(toy_data):
    net_cfg = NetworkConfig(hidden=[16, 16])
    r32 = fit(net_cfg, SHORT.replace(dtype="float32"), toy_data)
    r64 = fit(net_cfg, SHORT.replace(dtype="float64"), toy_data)
    assert abs(r32.test_accuracy - r64.test_accuracy) <= 0.02
    np.testing.assert_allclose(r32.history["train_loss"], r64.history["train_loss"], rtol=1e-3)


def test_the_number_of_classes_comes_from_the_data_not_the_training_labels(toy_data):
    """A subset whose training labels lack the last class still gets 10 outputs: from the
    data's class names (CIFAR-10), or else from every split's labels."""
    from types import SimpleNamespace

    from kbn.trainer import n_classes_of

    def without_last_class(split):
        keep = split.y != 9
        return SimpleNamespace(X=split.X[keep], y=split.y[keep])

    train = without_last_class(toy_data.train)
    named = SimpleNamespace(train=train, val=without_last_class(toy_data.val),
                            test=without_last_class(toy_data.test),
                            class_names=[f"class {i}" for i in range(10)])
    assert train.y.max() + 1 == 9 and n_classes_of(named) == 10
    result = fit(NetworkConfig(hidden=[8]), SHORT.replace(n_s=5), named)
    assert result.network.params["W2"].shape == (8, 10)
    unnamed = SimpleNamespace(train=train, val=toy_data.val, test=toy_data.test)
    assert n_classes_of(unnamed) == 10  # the validation split has class 9
