"""The recorder (kbn.recorder): opt-in, changes no number of the run, and records what a
saved network at that step gives when recomputed; its recordings are cached."""

from __future__ import annotations

import json

import numpy as np
import pytest
from trial_fixtures import tiny_data_spec

from kbn import NetworkConfig, TrainConfig
from kbn.checkpoint import load_network, save_network
from kbn.config import ConfigError
from kbn.network import Network
from kbn.recorder import RecorderConfig, landscape, train_mode_accuracy
from kbn.runs import TrialSpec, run_trials
from kbn.trainer import fit, fit_stack, record_steps

TC = TrainConfig(n_batch=50, n_s=20, n_cycles=2, evals_per_cycle=2, lam=0.002)
REC = RecorderConfig(probe=120, landscape_steps=(0.05, 0.2), val_images=150)
DEEP = NetworkConfig(hidden=(12, 10, 8))


def same(a, b) -> bool:
    """Equal recordings, NaN equal to NaN (the evaluation-mode accuracy before training)."""
    return json.dumps(a) == json.dumps(b)


def _relu_inputs(net: Network, X: np.ndarray):
    """The input of every hidden ReLU, written out with numpy (training-mode BN)."""
    p, cfg, h, out = net.params, net.config, X, []
    for l in range(1, net.n_layers):
        s = h @ p[f"W{l}"] + p[f"b{l}"]
        if cfg.batch_norm:
            s = p[f"gamma{l}"] * (s - s.mean(0)) / np.sqrt(s.var(0) + cfg.eps) + p[f"beta{l}"]
        out.append(s)
        h = np.maximum(s, 0)
    return out


@pytest.mark.parametrize("batch_norm", [False, True], ids=["plain", "bn"])
def test_recording_changes_nothing(toy_data, batch_norm):
    net = DEEP.replace(batch_norm=batch_norm)
    plain = fit(net, TC, toy_data)
    recorded = fit(net, TC, toy_data, recorder=REC)
    assert plain.recording is None and recorded.recording is not None
    assert recorded.history == plain.history and recorded.test_accuracy == plain.test_accuracy
    for key in plain.network.params:
        assert np.array_equal(plain.network.params[key], recorded.network.params[key])


def test_a_recorder_watches_its_own_network_in_a_stack(toy_data):
    a, b = DEEP, DEEP.replace(init="xavier")
    both = fit_stack([a, b], [TC, TC], toy_data, recorders=[None, REC])
    alone = fit(b, TC, toy_data, recorder=REC)
    assert both[0].recording is None
    assert same(both[1].recording, alone.recording) and both[1].history == alone.history
    with pytest.raises(ValueError, match="one recorder .* per network"):
        fit_stack([a, b], [TC, TC], toy_data, recorders=[REC])


@pytest.mark.parametrize("batch_norm", [False, True], ids=["plain", "bn"])
def test_recorded_statistics_equal_those_of_the_saved_network(toy_data, batch_norm, tmp_path):
    """A run stopped after its first cycle is the first cycle of the 2-cycle run (same
    schedule, shuffles and evaluation points): its saved model is the network at step 2 n_s.
    Recomputed from the file, its statistics are those the 2-cycle run recorded there."""
    net = DEEP.replace(batch_norm=batch_norm)
    full = fit(net, TC, toy_data, recorder=REC)
    half = fit(net, TC.replace(n_cycles=1), toy_data)
    rec = full.recording
    assert rec["steps"] == [0, *record_steps(TC).tolist()]
    i = rec["steps"].index(2 * TC.n_s)
    save_network(half.network, tmp_path / "m.npz", TC.replace(n_cycles=1))
    saved, _ = load_network(tmp_path / "m.npz")
    saved = Network(saved.config, {k: v.astype(np.float64) for k, v in saved.params.items()},
                    {k: v.astype(np.float64) for k, v in saved.averages.items()})
    # the recorder sees the images as the training does: in its precision (float32)
    X = toy_data.train.X[:REC.probe].astype(np.float32).astype(np.float64)
    y = toy_data.train.y[:REC.probe]
    for l, s in enumerate(_relu_inputs(saved, X)):
        np.testing.assert_allclose(rec["unit_mean"][i][l], s.mean(0), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(rec["unit_std"][i][l], s.std(0), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(rec["relu_input_pct"][i][l],
                                   np.percentile(s, (15, 50, 85), axis=0).mean(axis=1), rtol=1e-10)
    loss, grads = saved.loss_and_grads(X, y, 0.0)
    assert rec["loss"][i] == pytest.approx(loss, rel=1e-12)
    np.testing.assert_allclose(rec["grad_norm"][i],
                               [np.linalg.norm(grads[f"W{l}"]) for l in range(1, 5)], rtol=1e-10)
    # the landscape: move every parameter by -s g and look again
    g = np.concatenate([grads[k].ravel() for k in saved.params])
    for j, s in enumerate(REC.landscape_steps):
        moved = Network(saved.config, {k: v - s * grads[k] for k, v in saved.params.items()})
        loss_s, grads_s = moved.loss_and_grads(X, y, 0.0)
        g_s = np.concatenate([grads_s[k].ravel() for k in saved.params])
        assert rec["landscape_loss"][i][j] == pytest.approx(loss_s, rel=1e-12)
        assert rec["landscape_grad_change"][i][j] == pytest.approx(np.linalg.norm(g_s - g), rel=1e-9)
    beta = max(rec["landscape_grad_change"][i][j] / (s * np.linalg.norm(g))
               for j, s in enumerate(REC.landscape_steps))
    assert rec["beta_smoothness"][i] == pytest.approx(beta, rel=1e-12)
    Xv = toy_data.val.X[:150].astype(np.float32).astype(np.float64)
    yv = toy_data.val.y[:150]
    if batch_norm:
        assert rec["val_accuracy_eval_mode"][i] == pytest.approx(
            saved.evaluate(Xv, yv, 0.0)["accuracy"])
        assert np.isnan(rec["val_accuracy_eval_mode"][0])  # no averages before training
    correct = sum(int((saved.forward(Xv[a:a + 50], train=True)[0].argmax(1)
                       == yv[a:a + 50]).sum()) for a in range(0, len(Xv), 50))
    assert rec["val_accuracy_train_mode"][i] == pytest.approx(correct / len(Xv))


def test_a_recording_at_the_wrong_step_would_be_caught(toy_data):
    """Mutation: the statistics one evaluation point earlier differ from the saved
    network's, so the test above pins the step."""
    rec = fit(DEEP, TC, toy_data, recorder=REC).recording
    i = rec["steps"].index(2 * TC.n_s)
    assert not np.allclose(rec["unit_mean"][i][2], rec["unit_mean"][i - 1][2])
    assert rec["grad_norm"][i] != rec["grad_norm"][i - 1]


def test_landscape_and_train_mode_accuracy_by_hand():
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((30, 5)), rng.integers(0, 3, 30)
    net = Network.create(NetworkConfig(hidden=(4,), batch_norm=False), 5, 3, rng)
    out = landscape(net, X, y, (0.1,))
    _, g = net.loss_and_grads(X, y, 0.0)
    before = {k: v.copy() for k, v in net.params.items()}
    assert out["loss"][0] == pytest.approx(
        Network(net.config, {k: v - 0.1 * g[k] for k, v in net.params.items()}).cost(X, y, 0.0))
    assert all(np.array_equal(before[k], net.params[k]) for k in before)  # untouched
    scores, _ = net.forward(X, train=True)
    assert train_mode_accuracy(net, X, y, 7) == pytest.approx(np.mean(scores.argmax(1) == y))


def test_recorder_config_is_validated():
    with pytest.raises(ConfigError, match=r"probe=1: must be an int >= 2"):
        RecorderConfig(probe=1)
    with pytest.raises(ConfigError, match="landscape_steps"):
        RecorderConfig(landscape_steps=(0.1, -1.0))
    with pytest.raises(ConfigError, match="landscape_steps"):
        RecorderConfig(landscape_steps=())
    with pytest.raises(ConfigError, match=r"val_images=1: must be an int >= 2"):
        RecorderConfig(val_images=1)
    assert RecorderConfig.from_dict(REC.to_dict()) == REC


def test_a_probe_larger_than_the_data_is_refused(toy_data):
    with pytest.raises(ConfigError, match="larger than the 1000 training images"):
        fit(DEEP, TC, toy_data, recorder=RecorderConfig(probe=5000))


def test_recordings_are_cached_and_in_the_key(tmp_path):
    data = tiny_data_spec(tmp_path)
    tc = TrainConfig(n_batch=50, n_s=8, n_cycles=1, evals_per_cycle=2)
    plain = TrialSpec(NetworkConfig(hidden=(8,)), tc, data)
    recorded = TrialSpec(NetworkConfig(hidden=(8,)), tc, data, record=RecorderConfig(probe=40))
    checksum = data.checksum()
    assert plain.key(checksum) != recorded.key(checksum)
    assert "record" not in plain.key_fields(checksum)  # unrecorded keys are as before
    first = run_trials([plain, recorded], executor="serial", cache=tmp_path / "c", progress=False)
    assert first[0].recording is None and first[1].recording["steps"] == [0, 8, 16]
    assert first[0].history == first[1].history  # one stack, and recording changes nothing
    again = run_trials([recorded], executor="serial", cache=tmp_path / "c", progress=False)
    assert same(again[0].recording, first[1].recording)
    with pytest.raises(TypeError, match="RecorderConfig"):
        TrialSpec(NetworkConfig(), tc, data, record={"probe": 40})
