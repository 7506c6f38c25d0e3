import numpy as np
import pytest
from trial_fixtures import tiny_data_spec

from kbn import NetworkConfig, SearchConfig, TrainConfig
from kbn.runs import DataSpec
from kbn.search import best_trial, fine_range, lambda_search, sample_lambdas
from kbn.trainer import Result

NO_DATA = DataSpec(data_dir="/nonexistent")  # the stand-in trainers below never load it


def test_samples_are_log_uniform_in_range():
    lams = sample_lambdas(np.random.default_rng(0), (-5, -1), 4000)
    u = np.log10(lams)
    assert u.min() >= -5 and u.max() <= -1
    counts, _ = np.histogram(u, bins=4, range=(-5, -1))  # equal mass per decade
    assert counts.min() > 900


def _fake_run(val_of, test_of):
    """A stand-in trainer whose accuracies are functions of lambda (no training)."""
    def run(specs, desc):
        return [Result(s.network, s.train, {}, test_of(s.train.lam), val_of(s.train.lam), 0.0)
                for s in specs]
    return run


def test_best_lambda_is_chosen_on_validation_never_on_test():
    # validation peaks at 1e-3; test peaks at 1e-5: the search must follow validation
    val = lambda lam: 1 - abs(np.log10(lam) + 3) / 10  # noqa: E731
    test = lambda lam: 1 - abs(np.log10(lam) + 5) / 10  # noqa: E731
    cfg = SearchConfig(n_coarse=8, n_fine=6, seed=3)
    out = lambda_search(NetworkConfig(), TrainConfig(), NO_DATA, cfg, run=_fake_run(val, test))
    assert [t.stage for t in out.trials] == ["coarse"] * 8 + ["fine"] * 6
    assert out.best.result.val_accuracy == max(t.result.val_accuracy for t in out.trials)
    best_coarse = best_trial(out.trials[:8])
    lo, hi = fine_range(best_coarse.lam, cfg)
    assert all(lo <= np.log10(t.lam) <= hi for t in out.trials[8:])
    assert abs(np.log10(out.best.lam) + 3) < abs(np.log10(best_coarse.lam) + 3) + 1e-12
    assert len(out.rows()) == 14 and set(out.rows()[0]) >= {"lambda", "val_accuracy", "test_accuracy"}


def test_each_stage_is_one_batch_of_specs_with_their_own_lambda():
    batches = []

    def run(specs, desc):
        batches.append((desc, specs))
        return [Result(s.network, s.train, {}, 0.5, 0.5, 0.0) for s in specs]

    out = lambda_search(NetworkConfig(), TrainConfig(seed=4), NO_DATA,
                        SearchConfig(n_coarse=3, n_fine=2), run=run)
    assert [(d, len(s)) for d, s in batches] == [("coarse stage", 3), ("fine stage", 2)]
    specs = [s for _, b in batches for s in b]
    assert [s.train.lam for s in specs] == [t.lam for t in out.trials]
    assert all(s.train.seed == 4 and s.data is NO_DATA for s in specs)


def test_same_seed_same_lambdas():
    run = _fake_run(lambda lam: 0.5, lambda lam: 0.5)
    a = lambda_search(NetworkConfig(), TrainConfig(), NO_DATA, SearchConfig(seed=1), run=run)
    b = lambda_search(NetworkConfig(), TrainConfig(), NO_DATA, SearchConfig(seed=1), run=run)
    assert [t.lam for t in a.trials] == [t.lam for t in b.trials]


def test_diverged_trials_never_win():
    def run(specs, desc):
        out = []
        for s in specs:
            diverged = s.train.lam > 1e-3
            acc = float("nan") if diverged else 0.4
            out.append(Result(s.network, s.train, {}, acc, acc, 0.0,
                              diverged_at=3 if diverged else None))
        return out

    out = lambda_search(NetworkConfig(), TrainConfig(), NO_DATA,
                        SearchConfig(coarse_range=(-5, -1), n_coarse=8, n_fine=0, seed=0), run=run)
    assert not out.best.result.diverged


def test_real_training_search_through_run_trials(tmp_path):
    short = TrainConfig(n_batch=50, n_s=16, n_cycles=1, eta_max=0.05, evals_per_cycle=2)
    data = tiny_data_spec(tmp_path)
    out = lambda_search(NetworkConfig(hidden=[10]), short, data,
                        SearchConfig(n_coarse=2, n_fine=1), executor="serial")
    assert len(out.trials) == 3
    # the search reports what training each lambda gives: a lone run of the chosen trial
    # (trained again here, outside the search) has the same accuracies, and the chosen one
    # is the best on validation
    from kbn.runs import TrialSpec, run_trial

    best = out.best
    alone = run_trial(TrialSpec(NetworkConfig(hidden=[10]), short.replace(lam=best.lam),
                                data))
    assert (alone.val_accuracy, alone.test_accuracy) == (best.result.val_accuracy,
                                                         best.result.test_accuracy)
    assert best.result.val_accuracy == max(t.result.val_accuracy for t in out.trials)
    assert len({t.lam for t in out.trials}) == 3


def test_search_needs_a_validation_split():
    with pytest.raises(ValueError, match="n_val > 0"):
        lambda_search(NetworkConfig(), TrainConfig(), DataSpec(n_val=0))


def test_loaded_data_is_refused_one_path_only(toy_data):
    """Trials go through run_trials with a DataSpec; arrays in memory have no second path."""
    with pytest.raises(TypeError, match="DataSpec"):
        lambda_search(NetworkConfig(), TrainConfig(), toy_data)
    with pytest.raises(ValueError, match="either run= or executor="):
        lambda_search(NetworkConfig(), TrainConfig(), NO_DATA, run=_fake_run(abs, abs),
                      executor="serial")
