"""The trainer's stacked step against the reference passes (layers.py) and finite differences."""

import numpy as np
import pytest

from kbn import NetworkConfig, numerical_gradients
from kbn.gradcheck import parameter_label
from kbn.network import Network
from kbn.stack import NetworkStack
from kbn.train_step import TrainStep

ARCHS = {"2-layer": [9], "3-layer": [12, 9], "5-layer": [12, 10, 8, 7]}
SCALES = np.array([1.0, 0.37, 0.8])  # weight scale c of each network of a stack


def _batch(n=16, d=10, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d)), rng.integers(0, 10, n)


def _networks(hidden, batch_norm, K=3, dtype=np.float64, alphas=(0.8, 0.9, 0.5)):
    """K different networks of one architecture (other seeds, other BN alphas)."""
    return [Network.create(NetworkConfig(hidden=hidden, batch_norm=batch_norm, alpha=alphas[k]),
                           10, 10, np.random.default_rng(k), dtype) for k in range(K)]


def _stored(networks, scales):
    """The stack the trainer keeps: every weight stored divided by its network's scale."""
    stack = NetworkStack.from_networks(networks)
    stack.scale_weights(1.0 / np.asarray(scales))
    return stack


def _grad(stack_grads, k, key):
    """Network k's gradient ``key`` (W1, b2, ...) out of a stack of gradients."""
    return stack_grads.network(k).params[key]


@pytest.mark.parametrize("grad_scale", [1.0, 0.03])
@pytest.mark.parametrize("batch_norm", [False, True], ids=["plain", "bn"])
@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_step_equals_the_reference_pass_for_every_network_of_the_stack(arch, batch_norm,
                                                                       grad_scale):
    references = _networks(ARCHS[arch], batch_norm)
    stack = _stored(_networks(ARCHS[arch], batch_norm), SCALES)
    step = TrainStep(stack, 16)
    gs = grad_scale * np.array([1.0, 2.0, 0.5])
    for seed in (0, 1):  # the second batch updates moving averages the first one started
        X, y = _batch(seed=seed)
        losses = step(X, y, grad_scale=gs, weight_scale=SCALES)
        step.flush_averages()
        for k, reference in enumerate(references):
            loss_ref, grads_ref = reference.loss_and_grads(X, y, 0.0, update_averages=True)
            assert losses[k] == pytest.approx(loss_ref, rel=1e-12)
            for key, g in grads_ref.items():
                name, layer = parameter_label(key)
                got = _grad(step.grads, k, key)
                if batch_norm and name == "b" and layer <= len(ARCHS[arch]):
                    # BN removes the bias: its true gradient is zero, which the reference
                    # confirms; the step does not compute it (its buffer is left alone)
                    assert np.abs(g).max() < 1e-12, key
                    continue
                np.testing.assert_allclose(got, gs[k] * g, rtol=1e-10,
                                           atol=1e-13 * np.abs(g).max(), err_msg=f"{k} {key}")
            averages = stack.network(k).averages
            assert averages.keys() == reference.averages.keys()
            for key, v in reference.averages.items():
                np.testing.assert_allclose(averages[key], v, rtol=1e-12, err_msg=f"{k} {key}")


@pytest.mark.parametrize("log_rows", [1, 3, 256])
def test_logged_statistics_give_the_step_by_step_moving_averages(log_rows):
    """Seven steps with the statistics log folded every log_rows steps (and once at the
    end) must leave the averages that a step-by-step update leaves, per network."""
    references = _networks([12, 9], True)
    scales = SCALES.copy()
    stack = _stored(_networks([12, 9], True), scales)
    step = TrainStep(stack, 16, log_rows=log_rows)
    for seed in range(7):
        X, y = _batch(seed=seed)
        for reference in references:
            reference.loss_and_grads(X, y, 0.0, update_averages=True)
        step(X, y, grad_scale=np.ones(3), weight_scale=scales)
        scales = scales * 0.8  # the scales change from step to step
        stack.scale_weights(np.full(3, 1 / 0.8))  # and the stored weights with them
    step.flush_averages()
    assert not step.logged_scales
    for _ in range(2):  # a second flush with nothing logged changes nothing
        for k, reference in enumerate(references):
            for key, v in reference.averages.items():
                np.testing.assert_allclose(stack.network(k).averages[key], v, rtol=1e-12)
        step.flush_averages()


@pytest.mark.parametrize("batch_norm", [False, True], ids=["plain", "bn"])
def test_step_gradient_matches_finite_differences(batch_norm):
    """Checked on its own, not only through the reference passes."""
    X, y = _batch(n=8)
    networks = _networks([12, 9], batch_norm, K=2)
    step = TrainStep(NetworkStack.from_networks(networks), 8)
    step(X, y, grad_scale=np.ones(2), weight_scale=np.ones(2), update_averages=False)
    for k, net in enumerate(networks):
        for key, gn in numerical_gradients(net, X, y, lam=0.0, h=1e-5).items():
            np.testing.assert_allclose(_grad(step.grads, k, key), gn, rtol=1e-6, atol=1e-9,
                                       err_msg=f"{k} {key}")


def test_a_network_gets_the_same_step_in_a_stack_as_alone():
    """Bit for bit in float32 at the study's shapes (first layer 3072 x 50): the stack's
    wide first-layer GEMM and its stacked products give each network its lone numbers.
    (What lets run_trials cut groups into stacks by the number of workers.)"""
    rng = np.random.default_rng(3)
    X, y = rng.standard_normal((100, 3072)).astype(np.float32), rng.integers(0, 10, 100)
    nets = [Network.create(NetworkConfig(hidden=[50, 30]), 3072, 10, np.random.default_rng(k),
                           np.float32) for k in range(4)]
    gs, c = np.array([0.1, 0.2, 0.05, 0.3]), np.array([1.0, 0.9, 0.7, 0.6])
    together = TrainStep(NetworkStack.from_networks(nets), 100)
    losses = together(X, y, gs, c)
    for k, net in enumerate(nets):
        alone = TrainStep(NetworkStack.from_networks([net]), 100)
        loss = alone(X, y, gs[k:k + 1], c[k:k + 1])
        assert losses[k] == loss[0]
        for key, g in alone.grads.network(0).params.items():
            assert np.array_equal(together.grads.network(k).params[key], g), (k, key)


def test_float32_step_agrees_with_float64():
    X, y = _batch()
    step64 = TrainStep(NetworkStack.from_networks(_networks([12, 9], True)), 16)
    step32 = TrainStep(NetworkStack.from_networks(_networks([12, 9], True, dtype=np.float32)), 16)
    gs = np.full(3, 0.1)
    losses64 = step64(X, y, grad_scale=gs, weight_scale=np.ones(3))
    losses32 = step32(X.astype(np.float32), y, grad_scale=gs, weight_scale=np.ones(3))
    np.testing.assert_allclose(losses32, losses64, rtol=1e-5)
    assert step32.grads.weights.dtype == np.float32
    for buf in ("weights", "vectors"):
        g64, g32 = getattr(step64.grads, buf), getattr(step32.grads, buf)
        np.testing.assert_allclose(g32, g64, rtol=1e-3, atol=1e-5 * np.abs(g64).max())


def test_a_batch_of_another_size_is_refused():
    step = TrainStep(NetworkStack.from_networks(_networks([12], True, K=1)), 16)
    X, y = _batch(n=10)
    with pytest.raises(ValueError, match="built for batches of 16 samples, got 10"):
        step(X, y, np.ones(1), np.ones(1))


def test_networks_of_different_architectures_cannot_share_a_stack():
    nets = _networks([12], True, K=1) + _networks([12], False, K=1)
    with pytest.raises(ValueError, match="one architecture"):
        NetworkStack.from_networks(nets)


def test_a_stack_round_trips_its_networks():
    nets = _networks([12, 9], True)
    stack = NetworkStack.from_networks(nets)
    for k, net in enumerate(nets):
        back = stack.network(k)
        assert back.config == net.config
        for key, v in net.params.items():
            assert np.array_equal(back.params[key], v) and back.params[key].flags.c_contiguous
    np.testing.assert_allclose(stack.l2(), [n.l2() for n in nets], rtol=1e-12)
    kept = stack.subset([2, 0])
    assert kept.K == 2 and np.array_equal(kept.network(0).params["W2"], nets[2].params["W2"])
