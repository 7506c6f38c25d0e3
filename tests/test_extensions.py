"""The options beyond the reference recipe as config fields: off by default and then
invisible (same dict, same cache key), validated, never stacked, their test-set
probabilities kept through the cache; ensembles and test-time flips (kbn.ensemble)."""

from __future__ import annotations

import numpy as np
import pytest

from kbn import NetworkConfig, TrainConfig, fit
from kbn.config import EXTENSIONS, ConfigError
from kbn.ensemble import class_probabilities, combine, ensemble_accuracy, mirror
from kbn.runs import DataSpec, TrialSpec, run_trials
from kbn.stacking import check_stackable, plan_stacks
from kbn.trainer import Result

try:
    from trial_fixtures import tiny_data_spec
except ImportError:
    from tests.trial_fixtures import tiny_data_spec

# the reference recipe as TrainConfig.to_dict gave it before the options existed
RECIPE_DICT = {"n_batch": 100, "eta_min": 1e-5, "eta_max": 0.1, "n_s": 2250, "n_cycles": 2,
               "lam": 0.005, "evals_per_cycle": 10, "seed": 0, "dtype": "float32"}
ON = {"optimizer": "adam", "momentum": 0.8, "beta2": 0.99, "schedule": "cosine", "flip": True,
      "shift": 2, "dropout": 0.2, "label_smoothing": 0.1, "keep_test_probs": True}


def test_the_recipe_dict_and_key_are_unchanged():
    assert TrainConfig().to_dict() == RECIPE_DICT
    spec = TrialSpec(NetworkConfig(), TrainConfig(), DataSpec())
    assert spec.key_fields("c")["train"] == RECIPE_DICT
    # a default-valued option given explicitly is the same config and the same key
    same = TrialSpec(NetworkConfig(), TrainConfig(optimizer="sgd", dropout=0.0), DataSpec())
    assert same.key("c") == spec.key("c")
    assert set(ON) == set(EXTENSIONS)
    # chapter 5's options likewise: absent at their default, present when used
    assert "precise_bn" not in TrainConfig().to_dict()
    assert TrainConfig(precise_bn=20).to_dict()["precise_bn"] == 20
    assert "bn_after_relu" not in NetworkConfig().to_dict()
    assert NetworkConfig(bn_after_relu=True).to_dict()["bn_after_relu"] is True


@pytest.mark.parametrize("name", sorted(ON))
def test_each_option_enters_the_dict_and_the_key(name):
    cfg = TrainConfig(**{name: ON[name]})
    assert cfg.to_dict()[name] == ON[name] and cfg.uses_extensions
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    key = TrialSpec(NetworkConfig(), cfg, DataSpec()).key("c")
    assert key != TrialSpec(NetworkConfig(), TrainConfig(), DataSpec()).key("c")


@pytest.mark.parametrize("name,value,rule", [
    ("optimizer", "rmsprop", "must be one of"), ("schedule", "step", "must be one of"),
    ("momentum", 1.0, r"\[0, 1\)"), ("beta2", -0.1, r"\[0, 1\)"), ("dropout", 1.0, r"\[0, 1\)"),
    ("label_smoothing", float("nan"), r"\[0, 1\)"), ("dropout", "0.5", "must be a number"),
    ("flip", 1, "True or False"), ("keep_test_probs", "yes", "True or False"),
    ("shift", 9, r"\[0, 8\]"), ("shift", -1, r"\[0, 8\]"), ("shift", 2.0, r"\[0, 8\]"),
])
def test_bad_values_are_refused_by_name(name, value, rule):
    with pytest.raises(ConfigError, match=rf"TrainConfig\.{name}=.*{rule}"):
        TrainConfig(**{name: value})


def test_trainings_with_options_never_share_a_stack():
    net, base = NetworkConfig(), TrainConfig()
    pairs = [(net, base.replace(lam=l)) for l in (0.1, 0.2)] + \
            [(net, base.replace(lam=l, flip=True)) for l in (0.1, 0.2, 0.3)]
    plan = plan_stacks(pairs)
    assert [0, 1] in plan and [2] in plan and [3] in plan and [4] in plan
    # mutation: without the option the same five share one stack
    assert plan_stacks([(n, t.replace(flip=False)) for n, t in pairs]) == [[0, 1, 2, 3, 4]]
    with pytest.raises(ValueError, match="one network at a time"):
        check_stackable([net, net], [base.replace(flip=True), base.replace(flip=True, lam=0.1)])


def test_run_trials_trains_them_alone_with_their_options(tmp_path):
    data = tiny_data_spec(tmp_path)
    net = NetworkConfig(hidden=(20,))
    train = TrainConfig(n_batch=50, n_s=8, n_cycles=1, evals_per_cycle=2, eta_max=0.05,
                        dropout=0.3, flip=True)
    specs = [TrialSpec(net, train.replace(lam=l), data) for l in (1e-4, 1e-3)]
    results = run_trials(specs, executor="serial", cache=tmp_path / "cache", progress=False)
    assert [r.stack_size for r in results] == [1, 1]
    alone = fit(net, train.replace(lam=1e-3), data.load())
    assert results[1].history == alone.history
    # the options act: without dropout the same trial gives other numbers
    other = fit(net, train.replace(lam=1e-3, dropout=0.0), data.load())
    assert other.history != alone.history


def test_test_probabilities_are_kept_through_the_cache(tmp_path):
    data = tiny_data_spec(tmp_path)
    train = TrainConfig(n_batch=50, n_s=8, n_cycles=1, evals_per_cycle=2, eta_max=0.05,
                        keep_test_probs=True)
    spec = TrialSpec(NetworkConfig(hidden=(20,)), train, data)
    first = run_trials([spec], executor="serial", cache=tmp_path / "c", progress=False)[0]
    again = run_trials([spec], executor="serial", cache=tmp_path / "c", progress=False)[0]
    y = data.load().test.y
    assert first.test_probs.shape == (2, len(y), 10)
    np.testing.assert_allclose(again.test_probs, first.test_probs)
    np.testing.assert_allclose(first.test_probs.sum(axis=2), 1.0, atol=3e-3)  # float16
    assert ensemble_accuracy([first.test_probs], y) == pytest.approx(first.test_accuracy, abs=0.011)
    plain = run_trials([TrialSpec(spec.network, train.replace(keep_test_probs=False), data)],
                       executor="serial", progress=False)[0]
    assert plain.test_probs is None and "test_probs" not in plain.to_dict()
    assert Result.from_dict(first.to_dict()).test_probs.shape == first.test_probs.shape


def test_ensembles_and_test_time_flips(toy_data):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((6, 3072)).astype(np.float32)
    assert np.array_equal(mirror(mirror(X)), X) and not np.array_equal(mirror(X), X)
    # class_probabilities agrees with Network.evaluate's accuracy
    r = fit(NetworkConfig(hidden=[16]), TrainConfig(n_batch=50, n_s=20, n_cycles=1), toy_data)
    P = class_probabilities(r.network, toy_data.test.X)
    np.testing.assert_allclose(P.sum(axis=1), 1.0)
    assert np.mean(P.argmax(axis=1) == toy_data.test.y) == r.test_accuracy
    # combine: the average of members' plain tables, and with flip of both tables each
    a, b = rng.random((2, 5, 3)), rng.random((2, 5, 3))
    np.testing.assert_allclose(combine([a, b]), (a[0] + b[0]) / 2)
    np.testing.assert_allclose(combine([a, b], flip=True), (a[0] + a[1] + b[0] + b[1]) / 4)
    y = np.array([0, 1, 2, 0, 1])
    assert ensemble_accuracy([a], y) == np.mean(a[0].argmax(axis=1) == y)
    with pytest.raises(ValueError, match="at least one member"):
        combine([])


def test_test_probabilities_are_of_the_images_and_their_mirror_images():
    from kbn.ensemble import test_probabilities
    from kbn.network import Network

    rng = np.random.default_rng(3)
    net = Network.create(NetworkConfig(hidden=[8], batch_norm=False), 3072, 10, rng, np.float64)
    X = rng.standard_normal((7, 3072))
    P = test_probabilities(net, X)
    np.testing.assert_allclose(P[0], class_probabilities(net, X))
    np.testing.assert_allclose(P[1], class_probabilities(net, mirror(X)))
    assert not np.allclose(P[0], P[1])
