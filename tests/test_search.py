import numpy as np
import pytest

from kbn import NetworkConfig, SearchConfig, TrainConfig
from kbn.search import best_trial, fine_range, lambda_search, sample_lambdas
from kbn.trainer import Result


def test_samples_are_log_uniform_in_range():
    lams = sample_lambdas(np.random.default_rng(0), (-5, -1), 4000)
    u = np.log10(lams)
    assert u.min() >= -5 and u.max() <= -1
    counts, _ = np.histogram(u, bins=4, range=(-5, -1))  # equal mass per decade
    assert counts.min() > 900


def _fake_run(val_of, test_of):
    """A stand-in trainer whose accuracies are functions of lambda (no training)."""
    def run(network_config, train_config, data, progress=False, desc=None):
        lam = train_config.lam
        return Result(network_config, train_config, {}, test_of(lam), val_of(lam), 0.0)
    return run


def test_best_lambda_is_chosen_on_validation_never_on_test(toy_data):
    # validation peaks at 1e-3; test peaks at 1e-5: the search must follow validation
    val = lambda lam: 1 - abs(np.log10(lam) + 3) / 10  # noqa: E731
    test = lambda lam: 1 - abs(np.log10(lam) + 5) / 10  # noqa: E731
    cfg = SearchConfig(n_coarse=8, n_fine=6, seed=3)
    out = lambda_search(NetworkConfig(), TrainConfig(), toy_data, cfg, run=_fake_run(val, test))
    assert [t.stage for t in out.trials] == ["coarse"] * 8 + ["fine"] * 6
    assert out.best.result.val_accuracy == max(t.result.val_accuracy for t in out.trials)
    best_coarse = best_trial(out.trials[:8])
    lo, hi = fine_range(best_coarse.lam, cfg)
    assert all(lo <= np.log10(t.lam) <= hi for t in out.trials[8:])
    assert abs(np.log10(out.best.lam) + 3) < abs(np.log10(best_coarse.lam) + 3) + 1e-12
    assert len(out.rows()) == 14 and set(out.rows()[0]) >= {"lambda", "val_accuracy", "test_accuracy"}


def test_each_trial_trains_with_its_own_lambda(toy_data):
    seen = []

    def run(network_config, train_config, data, progress=False, desc=None):
        seen.append(train_config)
        return Result(network_config, train_config, {}, 0.5, 0.5, 0.0)

    out = lambda_search(NetworkConfig(), TrainConfig(seed=4), toy_data,
                        SearchConfig(n_coarse=3, n_fine=2), run=run)
    assert [c.lam for c in seen] == [t.lam for t in out.trials]
    assert all(c.seed == 4 for c in seen)


def test_same_seed_same_lambdas(toy_data):
    run = _fake_run(lambda lam: 0.5, lambda lam: 0.5)
    a = lambda_search(NetworkConfig(), TrainConfig(), toy_data, SearchConfig(seed=1), run=run)
    b = lambda_search(NetworkConfig(), TrainConfig(), toy_data, SearchConfig(seed=1), run=run)
    assert [t.lam for t in a.trials] == [t.lam for t in b.trials]


def test_diverged_trials_never_win(toy_data):
    def run(network_config, train_config, data, progress=False, desc=None):
        diverged = train_config.lam > 1e-3
        acc = float("nan") if diverged else 0.4
        return Result(network_config, train_config, {}, acc, acc, 0.0,
                      diverged_at=3 if diverged else None)

    out = lambda_search(NetworkConfig(), TrainConfig(), toy_data,
                        SearchConfig(coarse_range=(-5, -1), n_coarse=8, n_fine=0, seed=0), run=run)
    assert not out.best.result.diverged


def test_real_training_search_on_toy_data(toy_data):
    short = TrainConfig(n_batch=20, n_s=25, n_cycles=1, eta_max=0.05, evals_per_cycle=2)
    out = lambda_search(NetworkConfig(hidden=[10]), short, toy_data,
                        SearchConfig(n_coarse=2, n_fine=1))
    assert len(out.trials) == 3 and 0 < out.best.result.val_accuracy <= 1


def test_search_needs_a_validation_split(toy_data):
    toy_data.val.X, toy_data.val.y = toy_data.val.X[:0], toy_data.val.y[:0]
    with pytest.raises(ValueError, match="n_val > 0"):
        lambda_search(NetworkConfig(), TrainConfig(), toy_data)


def test_run_hook_with_a_data_spec_trains_here_on_the_loaded_data(tmp_path):
    try:
        from trial_fixtures import tiny_data_spec
    except ImportError:
        from tests.trial_fixtures import tiny_data_spec
    spec = tiny_data_spec(tmp_path)
    seen = []

    def run(network_config, train_config, data, progress=False, desc=None):
        seen.append(data)
        return Result(network_config, train_config, {}, 0.5, 0.5, 0.0)

    lambda_search(NetworkConfig(), TrainConfig(), spec, SearchConfig(n_coarse=2, n_fine=1), run=run)
    assert len(seen) == 3 and all(d is spec.load() for d in seen)
