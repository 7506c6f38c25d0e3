"""benchmarks/bench_build_floor.py reads what a build trained from its results cache."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np
import pytest

from kbn import NetworkConfig, TrainConfig
from kbn.runs import TrialSpec, run_trials
from kbn.trainer import record_steps

try:
    from trial_fixtures import tiny_data_spec
except ImportError:
    from tests.trial_fixtures import tiny_data_spec

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from bench_build_floor import N_TRAIN_VAL, N_TEST, shapes_of  # noqa: E402

BASE = TrainConfig(n_batch=20, n_s=40, n_cycles=1, eta_max=0.05, lam=1e-3, evals_per_cycle=4)


def test_counts_each_training_with_its_stack_steps_and_evaluations(tmp_path):
    data = tiny_data_spec(tmp_path / "data")
    net = NetworkConfig(hidden=[12, 9], batch_norm=True)
    stacked = [TrialSpec(net, BASE.replace(lam=lam), data) for lam in (1e-4, 1e-3)]
    # in the same stack, but its learning rate makes it diverge early
    stacked.append(TrialSpec(net, BASE.replace(eta_min=1e3, eta_max=1e6), data))
    lone = TrialSpec(NetworkConfig(hidden=[7]), BASE.replace(seed=3), data)  # a stack of 1
    cache = tmp_path / "cache"
    results = run_trials(stacked + [lone], executor="serial", cache=cache, progress=False)
    diverged = results[2]
    assert diverged.diverged and not any(r.diverged for r in results[:2] + results[3:])

    counts, seconds = shapes_of(cache)

    points = record_steps(BASE)
    per_point = N_TRAIN_VAL  # the cache's specs have no subset: CIFAR-10's sizes
    full = len(points) * per_point + N_TEST
    stack_widths, lone_widths = (3072, 12, 9, 10), (3072, 7, 10)
    assert counts == {
        (stack_widths, 3, 20, BASE.n_steps, full): 2,
        (stack_widths, 3, 20, diverged.diverged_at,
         int(np.sum(points <= diverged.diverged_at)) * per_point): 1,
        (lone_widths, 1, 20, BASE.n_steps, full): 1,
    }
    assert np.isclose(seconds, sum(r.wall_time for r in results))


def test_a_subset_counts_the_rows_it_evaluates(tmp_path):
    data = tiny_data_spec(tmp_path / "data")
    subset = dataclasses.replace(data, subset=60)
    cache = tmp_path / "cache"
    run_trials([TrialSpec(NetworkConfig(hidden=[7]), BASE, subset)], executor="serial",
               cache=cache, progress=False)

    (shape, n), = shapes_of(cache)[0].items()
    # 60 of the training images and 60 of the 100 held out (n_val), then 60 test images
    assert n == 1 and shape[-1] == len(record_steps(BASE)) * (60 + 60) + 60


def test_an_empty_or_altered_cache_counts_nothing(tmp_path):
    assert shapes_of(tmp_path) == ({}, 0.0)
    data = tiny_data_spec(tmp_path / "data")
    cache = tmp_path / "cache"
    run_trials([TrialSpec(NetworkConfig(hidden=[7]), BASE, data)], executor="serial",
               cache=cache, progress=False)
    entry = next(cache.glob("*.json"))
    entry.write_text(entry.read_text().replace('"stack_size": 1', '"stack_size": 9'))
    # the cache's checksum refuses the altered entry (and says so): it is not counted
    with pytest.warns(RuntimeWarning, match="rejected entry"):
        assert shapes_of(cache) == ({}, 0.0)
