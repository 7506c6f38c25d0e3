"""benchmarks/bench_build_floor.py reads what a build trained from its results cache."""

from __future__ import annotations

import dataclasses
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from kbn import NetworkConfig, TrainConfig
from kbn.data import N_TRAIN_OFFICIAL as N_TRAIN_VAL
from kbn.runs import TrialSpec, run_trials

try:
    from trial_fixtures import tiny_data_spec
except ImportError:
    from tests.trial_fixtures import tiny_data_spec

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import bench_build_floor  # noqa: E402
from bench_build_floor import shapes_of  # noqa: E402
from bench_stacking import N_TEST  # noqa: E402

# 200 steps of 20, recorded 10 times (every 20 steps)
BASE = TrainConfig(n_batch=20, n_s=100, n_cycles=1, eta_max=0.05, lam=1e-3, evals_per_cycle=10)


def _trained(tmp_path, specs):
    cache = tmp_path / "cache"
    return cache, run_trials(specs, executor="serial", cache=cache, progress=False)


def test_counts_each_training_with_its_stack_steps_and_evaluations(tmp_path):
    data = tiny_data_spec(tmp_path / "data")
    net = NetworkConfig(hidden=[12, 9], batch_norm=True)
    stacked = [TrialSpec(net, BASE.replace(lam=lam), data) for lam in (1e-4, 1e-3)]
    # in the same stack; a learning rate that climbs from 0.05 to 1e4 makes it diverge
    # after some of the evaluation points
    stacked.append(TrialSpec(net, BASE.replace(eta_min=0.05, eta_max=1e4), data))
    lone = TrialSpec(NetworkConfig(hidden=[7]), BASE.replace(seed=3), data)  # a stack of 1
    cache, results = _trained(tmp_path, stacked + [lone])
    diverged = results[2]
    assert diverged.diverged and not any(r.diverged for r in results[:2] + results[3:])
    done = len(diverged.history["step"])
    assert 0 < done < 10, "the diverging trial should stop between evaluation points"

    counts, seconds, notes = shapes_of(cache)

    per_point = N_TRAIN_VAL  # the specs have no subset: CIFAR-10's sizes are assumed
    full = 10 * per_point + N_TEST
    stack_widths, lone_widths = (3072, 12, 9, 10), (3072, 7, 10)
    assert counts == {
        (stack_widths, 3, 20, BASE.n_steps, full): 2,
        # steps 0 .. diverged_at ran; the points recorded before it, and no test split
        (stack_widths, 3, 20, diverged.diverged_at + 1, done * per_point): 1,
        (lone_widths, 1, 20, BASE.n_steps, full): 1,
    }
    assert np.isclose(seconds, sum(r.wall_time for r in results))
    assert sum(n for k, n in notes.items() if k.startswith("code ")) == 4


def test_a_subset_counts_the_rows_it_evaluates(tmp_path):
    data = tiny_data_spec(tmp_path / "data", n_val=40)
    cache, _ = _trained(tmp_path, [TrialSpec(NetworkConfig(hidden=[7]), BASE,
                                             dataclasses.replace(data, subset=60))])

    (shape, n), = shapes_of(cache)[0].items()
    # 60 of the training images and the 40 held out (n_val), then 60 test images
    assert n == 1 and shape[-1] == 10 * (60 + 40) + 60


def test_float64_and_altered_entries_are_left_out_and_said(tmp_path):
    assert shapes_of(tmp_path) == ({}, 0.0, Counter())
    data = tiny_data_spec(tmp_path / "data")
    cache, _ = _trained(tmp_path, [TrialSpec(NetworkConfig(hidden=[7]), BASE, data),
                                   TrialSpec(NetworkConfig(hidden=[7]), BASE.replace(dtype="float64"),
                                             data)])
    counts, _, notes = shapes_of(cache)
    assert sum(counts.values()) == 1 and notes["left out: float64"] == 1
    for entry in cache.glob("*.json"):
        entry.write_text(entry.read_text().replace('"stack_size": 1', '"stack_size": 9'))
    # the cache's checksum refuses the altered entries (and says so): none is counted
    with pytest.warns(RuntimeWarning, match="rejected entry"):
        counts, seconds, notes = shapes_of(cache)
    assert (counts, seconds, notes) == ({}, 0.0, Counter({"rejected by the cache": 2}))


def test_the_floor_shares_each_stack_among_its_networks(tmp_path, monkeypatch, capsys):
    data = tiny_data_spec(tmp_path / "data")
    net = NetworkConfig(hidden=[7])
    cache, _ = _trained(tmp_path, [TrialSpec(net, BASE.replace(lam=lam), data)
                                   for lam in (1e-4, 1e-3, 1e-2)]
                        + [TrialSpec(net, BASE.replace(seed=5), data)])
    # a stack's matrix products take 6 s whatever its size: 3 networks share one stack's
    # 6 s, the lone one has its own 6 s, so the floor is 12 core-seconds on 1 worker
    monkeypatch.setattr(bench_build_floor, "stack_floor", lambda task: 6.0)
    monkeypatch.setenv("KBN_EXECUTOR", "serial")
    bench_build_floor.main([str(cache), "--goal", "10"])
    out = capsys.readouterr().out
    assert "GEMM floor of these trainings: 12 core-seconds = 12 s on 1 workers" in out
    assert "a goal of 10 s is 0.83x the floor: below it" in out


def test_a_folder_without_results_is_refused_with_what_to_do(tmp_path):
    with pytest.raises(SystemExit, match="build the chapters first"):
        bench_build_floor.main([str(tmp_path)])
    with pytest.raises(SystemExit, match="is not a folder"):
        bench_build_floor.main([str(tmp_path / "missing")])
