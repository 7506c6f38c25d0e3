"""Evaluation-time variants of one training (TrainConfig.also_alphas, also_precise_bn):
BN's moving averages kept with other weights alpha, and PreciseBN, computed alongside the
run's own statistics. Each variant equals the network trained with that alpha (or with
``precise_bn``) on its own: alpha and PreciseBN change no update."""

from __future__ import annotations

import numpy as np
import pytest

import kbn.trainer as trainer
from kbn import NetworkConfig, TrainConfig
from kbn.config import ConfigError
from kbn.stacking import stack_key
from kbn.trainer import Result, fit, fit_stack

TC = TrainConfig(n_batch=50, n_s=20, n_cycles=1, evals_per_cycle=2, lam=0.002, seed=3,
                 dtype="float64")
NET = NetworkConfig(hidden=(12, 8))
ALSO = TC.replace(also_alphas=(0.9, 0.99), also_precise_bn=30)


def _capture_kept_averages(monkeypatch):
    """Record stack.also_mean / also_var as the trainer holds them after training."""
    seen = {}
    real = trainer._variants

    def spy(stack, *args):
        seen["alphas"] = stack.also_alphas
        seen["mean"] = [[m.copy() for m in per] for per in stack.also_mean]
        seen["var"] = [[v.copy() for v in per] for per in stack.also_var]
        return real(stack, *args)

    monkeypatch.setattr(trainer, "_variants", spy)
    return seen


def test_each_variant_equals_the_network_trained_with_it(toy_data, monkeypatch):
    seen = _capture_kept_averages(monkeypatch)
    r = fit(NET, ALSO, toy_data)
    own = fit(NET, TC, toy_data)
    # the run's own numbers are those of the run without variants
    assert r.history == own.history and r.test_accuracy == own.test_accuracy
    assert r.val_accuracy == own.val_accuracy
    assert set(r.variants) == {"alpha=0.9", "alpha=0.99", "precise_bn=30"}
    for a, alpha in enumerate((0.9, 0.99)):
        alone = fit(NET.replace(alpha=alpha), TC, toy_data)
        assert r.variants[f"alpha={alpha:g}"] == {"val_accuracy": alone.val_accuracy,
                                                  "test_accuracy": alone.test_accuracy}
        for l in range(2):  # the kept averages are, bit for bit, the lone network's
            assert np.array_equal(seen["mean"][a][l][0], alone.network.averages[f"mean{l + 1}"])
            assert np.array_equal(seen["var"][a][l][0], alone.network.averages[f"var{l + 1}"])
            # and they are not the run's own (alpha 0.8): the comparison can fail
            assert not np.allclose(seen["mean"][a][l][0], own.network.averages[f"mean{l + 1}"])
    precise = fit(NET, TC.replace(precise_bn=30), toy_data)
    assert r.variants["precise_bn=30"] == {"val_accuracy": precise.val_accuracy,
                                           "test_accuracy": precise.test_accuracy}


def test_a_mutated_fold_is_caught(toy_data, monkeypatch):
    """Kept averages started at zero instead of by the first batch (a plausible slip) no
    longer match the network trained with that alpha: the comparison above can fail."""
    seen = _capture_kept_averages(monkeypatch)
    real_keep = trainer.NetworkStack.keep_also

    def keep_from_zero(self, alphas):
        real_keep(self, alphas)
        for means, variances in zip(self.also_mean, self.also_var):
            for l in range(self.n_layers - 1):
                m = self.sizes[l + 1]
                means[l], variances[l] = np.zeros((self.K, m)), np.zeros((self.K, m))

    monkeypatch.setattr(trainer.NetworkStack, "keep_also", keep_from_zero)
    fit(NET, TC.replace(also_alphas=(0.9,)), toy_data)
    alone = fit(NET.replace(alpha=0.9), TC, toy_data)
    assert not np.allclose(seen["mean"][0][0][0], alone.network.averages["mean1"])


def test_variants_in_a_stack_equal_those_alone_and_survive_a_divergence(toy_data):
    """In a stack (other inits and lambdas), with one member diverging mid-run (the stack
    shrinks: the kept averages follow the survivors), each survivor's variants are its
    lone ones; the diverged member has none."""
    # the third diverges (sigma 5, eta_max 1e4) after the first record (step 75), so the
    # kept averages were folded before the stack shrinks
    nets = [NET, NET.replace(init="xavier"), NET.replace(init="sigma", sigma=5.0)]
    base = ALSO.replace(n_batch=20, n_s=150, evals_per_cycle=4)  # 300 steps
    trains = [base, base.replace(lam=0.01), base.replace(eta_max=1e4)]
    stacked = fit_stack(nets, trains, toy_data)
    assert stacked[2].diverged_at > 75 and stacked[2].variants == {}
    for net, train, got in zip(nets[:2], trains[:2], stacked[:2]):
        assert got.variants == fit(net, train, toy_data).variants
        assert not got.diverged and len(got.variants) == 3


def test_variants_are_validated_shared_in_a_stack_and_refused_where_meaningless(toy_data):
    with pytest.raises(ConfigError, match=r"also_alphas=\[1.0\]: give distinct weights"):
        TC.replace(also_alphas=(1.0,))
    with pytest.raises(ConfigError, match=r"also_precise_bn=-2: must be an int >= 0"):
        TC.replace(also_precise_bn=-2)
    assert TC.replace(also_alphas=[0.9]).also_alphas == (0.9,)
    assert "also_alphas" not in TC.to_dict()  # at its default: the same cache key as before
    assert stack_key(NET, ALSO) != stack_key(NET, TC)  # shared by a stack's members
    with pytest.raises(ValueError, match="the network has no BN"):
        fit(NET.replace(batch_norm=False), ALSO, toy_data)
    with pytest.raises(ValueError, match="not implemented for BN after ReLU"):
        fit(NET.replace(bn_after_relu=True), ALSO, toy_data)


def test_variants_round_trip_through_the_saved_form(toy_data):
    r = fit(NET, TC.replace(also_alphas=(0.95,), n_s=5), toy_data)
    back = Result.from_dict(r.to_dict())
    assert back.variants == r.variants and "alpha=0.95" in back.variants
    assert "variants" not in fit(NET, TC.replace(n_s=5), toy_data).to_dict()
