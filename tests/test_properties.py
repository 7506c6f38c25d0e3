"""Property-based tests over random architectures, batch sizes and seeds."""

import numpy as np
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from kbn import NetworkConfig, numerical_gradients, relative_errors
from kbn.gradcheck import parameter_label
from kbn.layers import batchnorm_forward
from kbn.network import Network

def well_conditioned(net, X) -> bool:
    """No ReLU input within 1e-3 of its kink, and no BN unit whose batch variance is
    tiny (1/std > 30): there finite differences and eps-dependence swamp the test."""
    _, caches = net.forward(X, train=True)
    for l, ((x, W), bn, _) in enumerate(caches[:-1], start=1):
        if bn is None:
            pre_relu = x @ W + net.params[f"b{l}"]
        else:
            xhat, gamma, inv_std = bn
            pre_relu = xhat * gamma + net.params[f"beta{l}"]
            if inv_std.max() > 30:
                return False
        if np.abs(pre_relu).min() < 1e-3:
            return False
    return True


architectures = st.lists(st.integers(min_value=2, max_value=9), min_size=1, max_size=4)


@settings(max_examples=25, deadline=None)
@given(hidden=architectures, batch_norm=st.booleans(), n=st.integers(2, 9),
       d=st.integers(1, 6), k=st.integers(2, 5), lam=st.sampled_from([0.0, 1e-3, 0.1]),
       seed=st.integers(0, 2**32 - 1))
def test_analytic_gradients_match_numerical(hidden, batch_norm, n, d, k, lam, seed):
    rng = np.random.default_rng(seed)
    X, y = rng.standard_normal((n, d)), rng.integers(0, k, n)
    net = Network.create(NetworkConfig(hidden=hidden, batch_norm=batch_norm), d, k, rng)
    for key in net.params:  # random b, gamma, beta too: with b = 0 a layer whose ReLUs are all
        if not key.startswith("W"):  # off feeds exactly 0 to the next ReLU, a kink
            net.params[key] += 0.3 * rng.standard_normal(net.params[key].shape)
        assume(well_conditioned(net, X))
    _, _, ga = net.cost_and_grads(X, y, lam)
    assert not failing_keys(ga, numerical_gradients(net, X, y, lam, h=1e-5)) or \
        not failing_keys(ga, numerical_gradients(net, X, y, lam, h=1e-6))


def failing_keys(ga, gn) -> list:
    """Parameters whose analytic and numerical gradients disagree.

    Entries whose true gradient is ~0 (BN-cancelled biases) make the relative error 0/0;
    there the absolute difference must be at rounding level. A strongly curved cost (BN
    over 2-3 samples) can give a truncation error O(h^2) above tolerance at h = 1e-5; the
    caller then retries with h = 1e-6, where a truncation error shrinks ~100x and a wrong
    gradient does not.
    """
    bad = []
    for key, err in relative_errors(ga, gn).items():
        abs_err = np.abs(ga[key] - gn[key]).max()
        if not (err < 1e-5 or abs_err < 1e-8):
            bad.append((key, err, abs_err, parameter_label(key)))
    return bad


@settings(max_examples=50, deadline=None)
@given(n=st.integers(2, 50), m=st.integers(1, 8), scale=st.floats(1e-2, 1e3),
       shift=st.floats(-1e3, 1e3), seed=st.integers(0, 2**32 - 1))
def test_bn_training_output_is_standardised(n, m, scale, shift, seed):
    rng = np.random.default_rng(seed)
    x = shift + scale * rng.standard_normal((n, m))
    out, _, mu, var = batchnorm_forward(x, np.ones(m), np.zeros(m), eps=1e-8)
    np.testing.assert_allclose(out.mean(axis=0), 0, atol=1e-7)
    np.testing.assert_allclose(out.var(axis=0), var / (var + 1e-8), rtol=1e-6)
    np.testing.assert_allclose(mu, x.mean(axis=0), rtol=1e-9, atol=1e-9)


@settings(max_examples=30, deadline=None)
@given(hidden=architectures, n=st.integers(2, 30), seed=st.integers(0, 2**32 - 1),
       shift=st.floats(-5, 5), scale=st.floats(0.1, 10))
def test_bn_network_is_invariant_to_input_affine_in_training_mode(hidden, n, seed, shift, scale):
    """With BN after the first layer, shifting the batch's inputs by a constant vector changes
    nothing (the batch mean absorbs it); scaling all inputs by c > 0 changes nothing either."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 4))
    net = Network.create(NetworkConfig(hidden=hidden, eps=1e-12), 4, 3, rng)
    assume(well_conditioned(net, X))
    base, _ = net.forward(X, train=True)
    shifted, _ = net.forward(X + shift * rng.standard_normal(4), train=True)
    scaled, _ = net.forward(scale * X, train=True)
    np.testing.assert_allclose(shifted, base, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(scaled, base, rtol=1e-6, atol=1e-6)
