import dataclasses

import pytest

from kbn import NetworkConfig, SearchConfig, TrainConfig


def test_defaults_are_the_reference_recipe():
    t, n = TrainConfig(), NetworkConfig()
    assert (t.n_batch, t.eta_min, t.eta_max, t.n_s, t.n_cycles, t.lam) == (100, 1e-5, 1e-1, 2250, 2, 0.005)
    assert t.n_steps == 9000
    assert (n.hidden, n.batch_norm, n.init, n.alpha) == ((50, 50), True, "he", 0.8)


@pytest.mark.parametrize("kwargs, message", [
    ({"lam": -1e-3}, "lam"),
    ({"eta_min": 0.2, "eta_max": 0.1}, "eta_min"),
    ({"n_s": 0}, "n_s"),
    ({"n_s": -5}, "n_s"),
    ({"n_batch": 0}, "n_batch"),
    ({"n_cycles": 0}, "n_cycles"),
    ({"dtype": "float16"}, "dtype"),
    ({"seed": -1}, "seed"),
])
def test_invalid_train_config(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**kwargs)


@pytest.mark.parametrize("kwargs, message", [
    ({"hidden": []}, "at least one hidden layer"),
    ({"hidden": [50, 0]}, "positive int"),
    ({"hidden": [50, -3]}, "positive int"),
    ({"hidden": [50, 2.5]}, "positive int"),
    ({"hidden": 50}, "list of layer widths"),
    ({"init": "orthogonal"}, "init"),
    ({"init": "sigma"}, "sigma"),
    ({"init": "sigma", "sigma": -0.1}, "sigma"),
    ({"init": "he", "sigma": 0.1}, "only used with init='sigma'"),
    ({"alpha": 1.0}, "alpha"),
])
def test_invalid_network_config(kwargs, message):
    with pytest.raises(ValueError, match=message):
        NetworkConfig(**kwargs)


def test_n_batch_larger_than_training_set():
    with pytest.raises(ValueError, match="n_batch=200: larger than the 150 training images"):
        TrainConfig(n_batch=200).check_fits(150)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"coarse_range": (-1, -5)}, r"SearchConfig\.coarse_range=\(-1\.0, -5\.0\): need finite log10 bounds lo < hi"),
    ({"n_coarse": 0}, r"SearchConfig\.n_coarse=0: the coarse stage needs at least one trial"),
    ({"fine_halfwidth": 0}, r"SearchConfig\.fine_halfwidth=0: must be finite and > 0")])
def test_invalid_search_config(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SearchConfig(**kwargs)


def test_configs_are_frozen_and_round_trip():
    cfg = NetworkConfig(hidden=[50, 30, 20], batch_norm=False, init="sigma", sigma=1e-4)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.alpha = 0.5
    assert NetworkConfig.from_dict(cfg.to_dict()) == cfg
    t = TrainConfig(lam=3e-3, seed=7)
    assert TrainConfig.from_dict(t.to_dict()) == t
    assert t.replace(lam=0.0).lam == 0.0


def test_unknown_keys_raise():
    with pytest.raises(ValueError, match="unknown key.*'lambda'"):
        TrainConfig.from_dict({"lambda": 0.1})
    with pytest.raises(ValueError, match="unknown key"):
        NetworkConfig().replace(hiden=[3])
