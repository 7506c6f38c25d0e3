"""The gradient check checks the code that trains: TrainStep, the weight scale, the L2 decay.

Both analytic gradients (the reference of layers.py and the training path) are checked
against finite differences for the networks the book trains; a deliberate error planted in
TrainStep's backward makes `kbn gradcheck` exit 3 and chapter 1's table show FAIL rows.
"""

from __future__ import annotations

import numpy as np
import pytest

import kbn.train_step
from kbn.experiments.reference import REFERENCE
from kbn import NetworkConfig, numerical_gradients
from kbn.cli import EXIT_CHECK_FAILED, main
from kbn.experiments import gradient_check as gc
from kbn.gradcheck import training_gradients
from kbn.network import Network

NINE = [50, 30, 20, 10, 10, 10, 10, 10]
ARCHS = {"2-layer": [50], "3-layer": [50, 50], "4-layer": [50, 50, 50], "9-layer": NINE}


@pytest.fixture(scope="module")
def batch():
    rng = np.random.default_rng(0)
    return rng.standard_normal((20, 10)), rng.integers(0, 10, 20)


@pytest.mark.parametrize("batch_norm", [False, True], ids=["plain", "bn"])
@pytest.mark.parametrize("weight_scale", [1.0, 0.37])
def test_the_training_path_is_the_gradient_of_the_cost(batch, batch_norm, weight_scale):
    """Read back from one real SGD update (stored weights / c, L2 as a decay): the
    gradient of loss + lam ||W||^2, as the reference and the finite differences give it."""
    X, y = batch
    net = Network.create(NetworkConfig(hidden=[12, 9], batch_norm=batch_norm), 10, 10,
                         np.random.default_rng(1), np.float64)
    params = {k: v.copy() for k, v in net.params.items()}
    got = training_gradients(net, X, y, lam=0.05, weight_scale=weight_scale)
    _, _, reference = net.cost_and_grads(X, y, 0.05)
    numerical = numerical_gradients(net, X, y, 0.05)
    for key, g in reference.items():
        np.testing.assert_allclose(got[key], g, rtol=1e-8, atol=1e-12, err_msg=key)
        np.testing.assert_allclose(got[key], numerical[key], rtol=1e-5, atol=1e-9, err_msg=key)
        assert np.array_equal(net.params[key], params[key])  # the network is left as it was


def test_every_network_of_the_book_passes_on_both_paths(batch):
    X, y = batch
    grid = gc.gradient_check_grid(ARCHS, X, y, lam=0.005)
    again = gc.recheck(grid, ARCHS, X, y, lam=0.005, h=1e-6)
    failed = gc.verdicts(grid, again)
    assert set(grid["path"]) == set(gc.PATHS) and set(grid["architecture"]) == set(ARCHS)
    # per path: k layers' W and b without BN, and with BN gamma and beta of k - 1 more
    assert len(grid) == sum(2 * (6 * (len(h) + 1) - 2) for h in ARCHS.values())
    assert not failed.any(), grid[failed][["network", "path", "key", "max_rel_error"]]
    values = gc.key_values(grid, gc.summary(grid), again, 1e-5)
    assert values["gc_n_fail"] == 0 and "agrees" in values["gc_verdict"]
    # the worst error of each network, for the summary's Table 1 row
    names = {f"gc_worst_rel_{len(h) + 1}layer_{bn}" for h in ARCHS.values() for bn in ("bn", "nobn")}
    assert {k for k in values if k.startswith("gc_worst_rel_") and "layer" in k} == {
        *names, *(f"{k}_verdict" for k in names)}
    # each beside the original's bound, in words that say which side it is on
    bound = REFERENCE["gradcheck_max_rel_error"]
    for k in names:
        word = "below" if values[k] < bound else "NOT below"
        assert values[f"{k}_verdict"].startswith(f"{word} the original's bound {bound:.0e}")


def _plant(monkeypatch, mutation):
    """Replace TrainStep's hidden-layer backward by one with ``mutation(layer, ds)``."""
    real = kbn.train_step.TrainStep._hidden_backward

    def planted(self, L):
        ds = real(self, L)
        mutation(L, ds)
        return ds

    monkeypatch.setattr(kbn.train_step.TrainStep, "_hidden_backward", planted)


MUTATIONS = {
    # the gradient leaving BN of the second hidden layer, with its sign flipped
    "bn-sign": lambda L, ds: ds.__imul__(-1.0) if L.l == 1 else None,
    # the beta gradient of the first hidden layer scaled by 0.99
    "beta-0.99": lambda L, ds: L.dbeta.__imul__(0.99) if L.l == 0 else None,
}


@pytest.mark.parametrize("mutation", sorted(MUTATIONS))
def test_a_wrong_training_gradient_fails_kbn_gradcheck(monkeypatch, capsys, mutation):
    argv = ["gradcheck", "--synthetic", "--hidden", "12", "9", "8", "--bn", "on", "--n", "10"]
    assert main(argv) == 0  # the check passes on the right code ...
    capsys.readouterr()
    _plant(monkeypatch, MUTATIONS[mutation])
    assert main(argv) == EXIT_CHECK_FAILED  # ... and fails on the planted error
    out = capsys.readouterr().out
    failing = [line for line in out.splitlines() if line.rstrip().endswith("FAIL")]
    assert failing and all(" training " in line for line in failing)  # the reference is right


@pytest.mark.parametrize("mutation", sorted(MUTATIONS))
def test_a_wrong_training_gradient_shows_as_failing_rows_in_chapter_1(batch, monkeypatch, mutation):
    X, y = batch
    archs = {"9-layer": NINE}
    _plant(monkeypatch, MUTATIONS[mutation])
    grid = gc.gradient_check_grid(archs, X, y, lam=0.005, batch_norm=(True,))
    again = gc.recheck(grid, archs, X, y, lam=0.005, h=1e-6)
    failed = gc.verdicts(grid, again)
    table = gc.display_table(grid, "9-layer", failed)
    assert (table["verdict"] == "FAIL").any()
    assert set(table[table["verdict"] == "FAIL"]["gradient"]) == {"training"}
    values = gc.key_values(grid, gc.summary(grid), again, 1e-5)
    assert values["gc_n_fail"] == int(failed.sum()) > 0 and "FAIL" in values["gc_verdict"]
