"""The trainer's buffered step against the reference passes (layers.py) and finite differences."""

import numpy as np
import pytest

from kbn import NetworkConfig, numerical_gradients
from kbn.gradcheck import parameter_label
from kbn.network import Network
from kbn.train_step import TrainStep

ARCHS = {"2-layer": [9], "3-layer": [12, 9], "5-layer": [12, 10, 8, 7]}


def _batch(n=16, d=10, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d)), rng.integers(0, 10, n)


def _pair(hidden, batch_norm, weight_scale, dtype=np.float64):
    """Two copies of one network; in the second the weights are stored divided by
    ``weight_scale``, as the trainer stores them between folds of its decay scalar."""
    cfg = NetworkConfig(hidden=hidden, batch_norm=batch_norm)
    reference = Network.create(cfg, 10, 10, np.random.default_rng(1), dtype)
    stored = Network.create(cfg, 10, 10, np.random.default_rng(1), dtype)
    for key, value in stored.params.items():
        if key.startswith("W"):
            value /= weight_scale
    return reference, stored


@pytest.mark.parametrize("grad_scale", [1.0, 0.03])
@pytest.mark.parametrize("weight_scale", [1.0, 0.37])
@pytest.mark.parametrize("batch_norm", [False, True], ids=["plain", "bn"])
@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_step_equals_the_reference_pass(arch, batch_norm, weight_scale, grad_scale):
    reference, stored = _pair(ARCHS[arch], batch_norm, weight_scale)
    step = TrainStep(stored, 16)
    for seed in (0, 1):  # the second batch updates moving averages the first one started
        X, y = _batch(seed=seed)
        loss_ref, grads_ref = reference.loss_and_grads(X, y, 0.0, update_averages=True)
        loss = step(X, y, grad_scale=grad_scale, weight_scale=weight_scale)
        step.flush_averages()
        assert loss == pytest.approx(loss_ref, rel=1e-12)
        assert step.grads.keys() == grads_ref.keys()
        for key, g in grads_ref.items():
            name, layer = parameter_label(key)
            if batch_norm and name == "b" and layer <= len(ARCHS[arch]):
                assert not step.grads[key].any(), key  # BN removes the bias: exactly zero
                continue
            np.testing.assert_allclose(step.grads[key], grad_scale * g,
                                       rtol=1e-10, atol=1e-13 * np.abs(g).max(), err_msg=key)
        assert stored.averages.keys() == reference.averages.keys()
        for key, v in reference.averages.items():
            np.testing.assert_allclose(stored.averages[key], v, rtol=1e-12, err_msg=key)


@pytest.mark.parametrize("log_rows", [1, 3, 256])
def test_logged_statistics_give_the_step_by_step_moving_averages(log_rows):
    """Seven steps with the statistics log folded every log_rows steps (and once at the
    end) must leave the averages that a step-by-step update leaves."""
    reference, stored = _pair([12, 9], True, 0.8)
    step = TrainStep(stored, 16, log_rows=log_rows)
    for seed in range(7):
        X, y = _batch(seed=seed)
        reference.loss_and_grads(X, y, 0.0, update_averages=True)
        step(X, y, weight_scale=0.8 ** (seed + 1))  # the scale changes from step to step
        for key, value in stored.params.items():  # and the stored weights with it
            if key.startswith("W"):
                value /= 0.8
    step.flush_averages()
    assert not step.logged_scales
    for key, v in reference.averages.items():
        np.testing.assert_allclose(stored.averages[key], v, rtol=1e-12, err_msg=key)
    step.flush_averages()  # nothing logged: nothing changes
    for key, v in reference.averages.items():
        np.testing.assert_allclose(stored.averages[key], v, rtol=1e-12, err_msg=key)


@pytest.mark.parametrize("batch_norm", [False, True], ids=["plain", "bn"])
def test_step_gradient_matches_finite_differences(batch_norm):
    """Checked on its own, not only through the reference passes."""
    X, y = _batch(n=8)
    net, _ = _pair([12, 9], batch_norm, 1.0)
    step = TrainStep(net, 8)
    step(X, y, update_averages=False)
    numerical = numerical_gradients(net, X, y, lam=0.0, h=1e-5)
    for key, gn in numerical.items():
        np.testing.assert_allclose(step.grads[key], gn, rtol=1e-6, atol=1e-9, err_msg=key)


def test_float32_step_agrees_with_float64():
    X, y = _batch()
    _, net64 = _pair([12, 9], True, 1.0, np.float64)
    _, net32 = _pair([12, 9], True, 1.0, np.float32)
    step64, step32 = TrainStep(net64, 16), TrainStep(net32, 16)
    loss64 = step64(X, y, grad_scale=0.1)
    loss32 = step32(X.astype(np.float32), y, grad_scale=0.1)
    assert loss32 == pytest.approx(loss64, rel=1e-5)
    for key, g in step64.grads.items():
        assert step32.grads[key].dtype == np.float32
        np.testing.assert_allclose(step32.grads[key], g, rtol=1e-3, atol=1e-5 * np.abs(g).max(),
                                   err_msg=key)


def test_a_batch_of_another_size_is_refused():
    net, _ = _pair([12], True, 1.0)
    step = TrainStep(net, 16)
    X, y = _batch(n=10)
    with pytest.raises(ValueError, match="built for batches of 16 samples, got 10"):
        step(X, y)
