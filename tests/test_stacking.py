"""Stacked training: K networks side by side equal the same trials trained alone."""

from __future__ import annotations

import numpy as np
import pytest

import kbn.runs
from kbn import NetworkConfig, TrainConfig
from kbn.cache import results_equal
from kbn.runs import TrialSpec, run_trials
from kbn.stacking import check_stackable, max_stack_size, plan_stacks, stack_key
from kbn.optim import SGD as _SGD
from kbn.train_step import TrainStep as _TrainStep
from kbn.trainer import fit, fit_stack

try:
    from trial_fixtures import NET, TRAIN, tiny_data_spec
except ImportError:
    from tests.trial_fixtures import NET, TRAIN, tiny_data_spec

# 300 steps, recorded 4 times
BASE = TrainConfig(n_batch=20, n_s=150, n_cycles=1, eta_max=0.05, lam=1e-3, evals_per_cycle=4)


def _members(batch_norm: bool, dtype: str):
    """Four trainings that differ in what a stack lets differ: lambda, the schedule, the
    initialisation and BN's alpha. The third diverges (eta 1000 and more), the fourth
    decays its weights directly near the peak of its schedule (2 eta lam > 1/2)."""
    h = [12, 9]
    nets = [NetworkConfig(hidden=h, batch_norm=batch_norm),
            NetworkConfig(hidden=h, batch_norm=batch_norm, init="sigma", sigma=0.1, alpha=0.9),
            NetworkConfig(hidden=h, batch_norm=batch_norm, init="sigma", sigma=5.0),
            NetworkConfig(hidden=h, batch_norm=batch_norm, init="xavier")]
    base = BASE.replace(dtype=dtype)
    trains = [base, base.replace(lam=0.05, eta_min=1e-4), base.replace(eta_min=1e3, eta_max=1e6),
              base.replace(lam=1.5, eta_max=0.2, n_s=75, n_cycles=2, evals_per_cycle=2)]
    return nets, trains


def _float64_members(batch_norm: bool):
    """The float64 members: the fourth is replaced here, as its weights shrink so fast
    that BN, which does not see their scale, amplifies float64 rounding (the small-matrix
    GEMM of this toy problem is not bitwise the same for every stack width); the float32
    test below holds it, with the others, to its lone numbers bit for bit."""
    nets, trains = _members(batch_norm, "float64")
    nets[3:], trains[3:] = [nets[0].replace(init="xavier")], [trains[0].replace(lam=0.3)]
    return nets, trains


def _differences(stacked, alones) -> list[str]:
    """What differs between stacked Results and the same trainings alone: every parameter
    and moving average (rtol 1e-9), the validation losses, the test accuracy and where a
    network diverged. Empty when each network got its lone numbers."""
    out = []
    for k, (s, alone) in enumerate(zip(stacked, alones)):
        if s.diverged_at != alone.diverged_at:
            out.append(f"network {k}: diverged at {s.diverged_at}, alone at {alone.diverged_at}")
            continue
        if alone.diverged:
            if not np.isnan(s.test_accuracy) or len(s.history["step"]) != len(alone.history["step"]):
                out.append(f"network {k}: diverged, but its record differs")
            continue
        for kind in ("params", "averages"):
            mine, theirs = getattr(s.network, kind), getattr(alone.network, kind)
            for key, v in theirs.items():
                if not np.allclose(mine[key], v, rtol=1e-9, atol=1e-12):
                    out.append(f"network {k}: {key} differs")
        if not np.allclose(s.history["val_loss"], alone.history["val_loss"], rtol=1e-9):
            out.append(f"network {k}: val_loss differs")
        if s.test_accuracy != alone.test_accuracy:
            out.append(f"network {k}: test accuracy {s.test_accuracy} != {alone.test_accuracy}")
    return out


@pytest.mark.parametrize("batch_norm", [False, True], ids=["plain", "bn"])
def test_a_stack_equals_its_networks_trained_alone_float64(toy_data, batch_norm):
    """rtol 1e-9 on every parameter after 300 steps; lambda, sigma, the schedule and alpha
    differ across the stack, and one network diverges (_members)."""
    nets, trains = _float64_members(batch_norm)
    stacked = fit_stack(nets, trains, toy_data)
    assert [r.stack_size for r in stacked] == [4] * 4
    alones = [fit(net, train, toy_data) for net, train in zip(nets, trains)]
    assert _differences(stacked, alones) == []
    for net, train, s in zip(nets, trains, stacked):
        assert s.network_config == net and s.train_config == train
    # the test exercises what it claims: one network diverged (recorded up to its step),
    # the others went on to the end
    diverged = [r for r in stacked if r.diverged]
    assert len(diverged) == 1 if batch_norm else len(diverged) >= 1
    assert all(0 < r.diverged_at < BASE.n_steps for r in diverged)
    assert sum(r.history["step"][-1] == BASE.n_steps for r in stacked if not r.diverged) >= 2


def _roll(values):
    return np.roll(np.asarray(values), 1, axis=0)


def _wrong_stack(monkeypatch, field: str) -> None:
    """Plants a wrong stack: network k gets what belongs to network k - 1 (one field)."""
    if field in ("lambda", "schedule"):
        real = _SGD.__init__

        def init(self, stack, lam, etas, *args, **kw):
            if field == "lambda":
                lam = _roll(lam)
            else:
                etas = _roll(np.asarray(etas).T).T
            real(self, stack, lam, etas, *args, **kw)

        monkeypatch.setattr(_SGD, "__init__", init)
    else:  # BN's alpha, which only the moving averages see
        real = _TrainStep.__init__

        def init(self, stack, *args, **kw):
            stack.alpha = _roll(stack.alpha)
            real(self, stack, *args, **kw)

        monkeypatch.setattr(_TrainStep, "__init__", init)


MUTATIONS = ("lambda", "schedule", "alpha")


@pytest.mark.parametrize("field", MUTATIONS)
def test_the_equivalence_check_fails_on_a_wrong_stack(toy_data, monkeypatch, field):
    """Mutation: a stack that hands one network's lambda (schedule, BN alpha) to another
    is caught by the comparison the test above makes."""
    nets, trains = _float64_members(True)
    alones = [fit(net, train, toy_data) for net, train in zip(nets, trains)]
    _wrong_stack(monkeypatch, field)
    wrong = _differences(fit_stack(nets, trains, toy_data), alones)
    assert any("differs" in d or "diverged" in d for d in wrong), wrong


def test_float32_stack_gives_each_network_its_lone_numbers(toy_data):
    nets, trains = _members(True, "float32")
    stacked = fit_stack(nets, trains, toy_data)
    assert stacked[2].diverged and not stacked[3].diverged
    for s, net, train in zip(stacked, nets, trains):
        alone = fit(net, train, toy_data)
        assert s.diverged_at == alone.diverged_at
        if not alone.diverged:
            assert abs(s.test_accuracy - alone.test_accuracy) <= 0.02  # what the issue asks
            assert results_equal(s, alone)  # and on this BLAS: bit for bit
            for key, v in alone.network.params.items():
                assert np.array_equal(s.network.params[key], v), key


def test_trainings_that_cannot_share_a_stream_are_refused():
    net = NetworkConfig(hidden=[8])
    for other_net, other_train, field in [
            (net, BASE.replace(seed=1), "seed"),
            (net, BASE.replace(n_batch=10), "n_batch"),
            (net.replace(batch_norm=False), BASE, "batch_norm"),
            (net.replace(hidden=(9,)), BASE, "hidden"),
            (net, BASE.replace(n_s=75), "n_steps"),
            (net, BASE.replace(evals_per_cycle=5), "records"),
            (net, BASE.replace(dtype="float64"), "dtype")]:
        with pytest.raises(ValueError, match=f"differ in {field}"):
            check_stackable([net, other_net], [BASE, other_train])
    # what may differ: lambda, schedule, initialisation, alpha; and the same steps and
    # records reached with another half-cycle
    check_stackable([net, net.replace(init="sigma", sigma=0.1, alpha=0.5)],
                    [BASE, BASE.replace(lam=0.1, eta_max=0.3, n_s=75, n_cycles=2,
                                        evals_per_cycle=2)])


def test_plan_groups_stackable_trials_and_shares_them_out():
    net, nine = NetworkConfig(hidden=(50, 50)), NetworkConfig(hidden=(50, 30))
    lams = [(net, BASE.replace(lam=10.0 ** -i)) for i in range(8)]
    assert plan_stacks(lams, slots=1) == [list(range(8))]
    assert plan_stacks(lams, slots=2) == [[0, 1, 2, 3], [4, 5, 6, 7]]
    seeds = [(net, BASE.replace(seed=s)) for s in range(3)]
    assert plan_stacks(seeds, slots=2) == [[0], [1], [2]]  # other seeds: other streams
    mixed = [lams[0], (nine, BASE), lams[1], seeds[1]]
    assert plan_stacks(mixed, slots=1) == [[0, 2], [1], [3]]
    many = [(net, BASE.replace(lam=1e-3 * (i + 1))) for i in range(25)]
    size = max_stack_size(net)
    assert 1 < size < 25 and all(len(s) <= size for s in plan_stacks(many, slots=1))
    assert sorted(i for s in plan_stacks(many, slots=2) for i in s) == list(range(25))
    # stacks are cut for the workers only when there are fewer than workers: two pairs on
    # two workers stay pairs (a wider stack costs less per network), a lone pair is cut
    pairs = [lams[0], lams[1], (net, BASE.replace(seed=1)), (net, BASE.replace(seed=1, lam=0.5))]
    assert plan_stacks(pairs, slots=2) == [[0, 1], [2, 3]]
    assert plan_stacks(pairs[:2], slots=2) == [[0], [1]]
    assert plan_stacks(pairs[:3], slots=4) == [[0], [1], [2]]  # halved while one is > 1
    assert plan_stacks(lams[:3], slots=2) == [[0, 1], [2]]
    assert plan_stacks(lams[:6], slots=3) == [[0, 1], [2, 3], [4, 5]]  # equal parts
    two_groups = lams + [(net, BASE.replace(seed=1, lam=10.0 ** -i)) for i in range(8)]
    assert [len(s) for s in plan_stacks(two_groups, slots=4)] == [4, 4, 4, 4]
    wide = NetworkConfig(hidden=(2048, 512))
    assert max_stack_size(wide) == 1
    assert stack_key(net, BASE) == stack_key(net.replace(alpha=0.5), BASE.replace(lam=1.0))


def test_run_trials_trains_a_group_as_stacks_with_each_result_cached_alone(tmp_path, monkeypatch):
    data = tiny_data_spec(tmp_path / "tiny")
    specs = [TrialSpec(NET, TRAIN.replace(seed=5), data)]  # another stream: alone
    specs += [TrialSpec(NET, TRAIN.replace(lam=lam), data) for lam in (1e-4, 1e-3, 1e-2, 1e-1)]
    stacks = []
    real = kbn.runs.fit_stack

    def recording(nets, trains, *args, **kw):
        stacks.append([t.lam for t in trains])
        return real(nets, trains, *args, **kw)

    monkeypatch.setattr(kbn.runs, "fit_stack", recording)
    out = run_trials(specs, executor="serial", cache=tmp_path / "cache", progress=False)
    # the costliest stack first, though the lone training was listed first
    assert stacks == [[1e-4, 1e-3, 1e-2, 1e-1], [TRAIN.lam]]
    assert len(list((tmp_path / "cache").glob("*.json"))) == 5
    for spec, result in zip(specs, out):  # each equals its own training alone
        assert results_equal(result, fit(spec.network, spec.train, data.load()))
    stacks.clear()
    again = run_trials(specs, executor="serial", cache=tmp_path / "cache", progress=False)
    assert stacks == [] and all(results_equal(a, b) for a, b in zip(out, again))


def test_results_do_not_depend_on_the_workers_the_executor_or_stacking(tmp_path):
    """Six stackable trials (lambda and sigma differ) as one stack in this process, as
    stacks of 3 on two worker processes, as stacks of 2 on three, and one at a time: the
    same numbers every way."""
    data = tiny_data_spec(tmp_path / "tiny")
    specs = [TrialSpec(NET.replace(init="sigma", sigma=sigma), TRAIN.replace(lam=lam), data)
             for lam in (1e-4, 1e-2, 1e-1) for sigma in (0.01, 0.1)]
    runs = {"serial": run_trials(specs, executor="serial", progress=False),
            "process:2": run_trials(specs, executor="process:2", progress=False),
            "process:3": run_trials(specs, executor="process:3", progress=False),
            "alone": run_trials(specs, executor="serial", progress=False, stack=False)}
    # the runs did train in the stacks they claim
    assert {name: sorted({r.stack_size for r in out}) for name, out in runs.items()} == {
        "serial": [6], "process:2": [3], "process:3": [2], "alone": [1]}
    for name, out in runs.items():
        assert all(results_equal(a, b) for a, b in zip(runs["serial"], out)), name
    assert not results_equal(runs["serial"][0], runs["serial"][2])  # the lambdas matter
