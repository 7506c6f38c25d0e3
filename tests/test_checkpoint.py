import numpy as np
import pytest

from kbn import NetworkConfig, TrainConfig
from kbn.checkpoint import ModelFileError, load_network, save_network
from kbn.network import parameter_keys
from kbn.trainer import fit

SHORT = TrainConfig(n_batch=20, n_s=20, n_cycles=1, evals_per_cycle=1, dtype="float32")


@pytest.mark.parametrize("batch_norm", [False, True])
def test_saved_model_reloads_to_identical_predictions(toy_data, tmp_path, batch_norm):
    result = fit(NetworkConfig(hidden=[16, 8], batch_norm=batch_norm), SHORT, toy_data)
    path = save_network(result.network, tmp_path / "m.npz", SHORT, extra={"test_accuracy": 0.5})
    net, meta = load_network(path)
    assert net.config == result.network.config
    assert meta["train_config"] == SHORT.to_dict() and meta["extra"] == {"test_accuracy": 0.5}
    X = np.asarray(toy_data.test.X, np.float32)
    np.testing.assert_array_equal(net.forward(X, train=False)[0],
                                  result.network.forward(X, train=False)[0])
    assert set(net.averages) == set(result.network.averages)


def test_parameter_keys_match_init():
    cfg = NetworkConfig(hidden=[4, 3])
    from kbn.network import init_params
    assert parameter_keys(cfg) == list(init_params(cfg, 5, 2, np.random.default_rng(0)))


def test_corrupted_file_gives_a_clear_error(toy_data, tmp_path):
    result = fit(NetworkConfig(hidden=[4]), SHORT, toy_data)
    path = save_network(result.network, tmp_path / "m.npz")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError, match="corrupted or not a kbn model"):
        load_network(path)
    with pytest.raises(ModelFileError, match="no such model file"):
        load_network(tmp_path / "missing.npz")


def test_other_format_version_is_refused(toy_data, tmp_path, monkeypatch):
    import kbn.checkpoint as ckpt

    result = fit(NetworkConfig(hidden=[4]), SHORT, toy_data)
    monkeypatch.setattr(ckpt, "FORMAT_VERSION", 99)
    path = save_network(result.network, tmp_path / "m.npz")
    monkeypatch.undo()
    with pytest.raises(ModelFileError, match="model format 99"):
        load_network(path)


def test_a_plain_npz_is_not_a_model(tmp_path):
    np.savez(tmp_path / "x.npz", a=np.zeros(3))
    with pytest.raises(ModelFileError, match="not a kbn model"):
        load_network(tmp_path / "x.npz")


def test_a_pickled_object_array_is_never_loaded(tmp_path):
    np.savez(tmp_path / "evil.npz", meta=np.array([{"x": 1}], dtype=object))
    with pytest.raises(ModelFileError):
        load_network(tmp_path / "evil.npz")
