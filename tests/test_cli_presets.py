"""kbn train's options beyond the recipe and --preset: a preset (or config file) trains the
configuration it names, and the saved model evaluates to the accuracy training reported."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from kbn import NetworkConfig, TrainConfig
from kbn.cli import _preset_defaults, build_parser, _network_config, _train_config
from kbn.presets import PRESETS, preset_configs, write_config_file

try:
    from cifar_fixtures import md5_table, write_tiny_cifar10  # noqa: F401
except ImportError:
    from tests.cifar_fixtures import md5_table, write_tiny_cifar10  # noqa: F401

from conftest import requires_real_data


def parsed(argv):
    args = build_parser().parse_args(argv)
    if getattr(args, "preset", None):
        args = build_parser(_preset_defaults(args.preset)).parse_args(argv)
    return _network_config(args), _train_config(args)


def test_options_reach_the_train_config():
    _, t = parsed(["train", "--optimizer", "adamw", "--momentum", "0.8", "--beta2", "0.99",
                   "--schedule", "cosine", "--flip", "--shift", "3", "--dropout", "0.2",
                   "--label-smoothing", "0.1"])
    assert t == TrainConfig(optimizer="adamw", momentum=0.8, beta2=0.99, schedule="cosine",
                            flip=True, shift=3, dropout=0.2, label_smoothing=0.1)
    assert parsed(["train"]) == (NetworkConfig(), TrainConfig())  # off by default


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_a_preset_trains_its_configuration_and_options_override_it(name):
    assert parsed(["train", "--preset", name]) == preset_configs(name)
    net, train = parsed(["train", "--preset", name, "--seed", "2", "--hidden", "30"])
    expected_net, expected_train = preset_configs(name)
    assert train == expected_train.replace(seed=2) and net == expected_net.replace(hidden=(30,))
    _, off = parsed(["train", "--preset", name, "--no-flip"])
    assert off == expected_train.replace(flip=False)


def test_a_config_file_is_a_preset(tmp_path):
    net, train = NetworkConfig(hidden=(40, 20)), TrainConfig(n_s=30, flip=True, dropout=0.1)
    path = write_config_file(tmp_path / "best.json", net, train)
    assert parsed(["train", "--preset", str(path)]) == (net, train)


def kbn(*args):
    return subprocess.run([sys.executable, "-m", "kbn", *map(str, args)], capture_output=True,
                          text=True, timeout=600)


@pytest.mark.parametrize("args,message", [
    (["--preset", "nonesuch"], "--preset nonesuch: 'nonesuch' is neither a preset"),
    (["--shift", "20"], r"--shift 20: must be an int in \[0, 8\]"),
    (["--dropout", "1"], r"--dropout 1.0: must be in \[0, 1\)"),
])
def test_bad_options_give_one_line(args, message, tmp_path):
    out = kbn("train", *args, "--out", tmp_path / "o")
    assert out.returncode == 1 and re.search(message, out.stderr), out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


@requires_real_data
def test_a_preset_run_reloads_to_the_same_test_accuracy(tmp_path):
    """A small config file through `kbn train --preset FILE`, then `kbn evaluate` (also with
    test-time flips): the saved model gives the accuracy training reported."""
    path = write_config_file(tmp_path / "c.json", NetworkConfig(hidden=(30,)),
                             TrainConfig(n_s=20, n_cycles=1, optimizer="nesterov",
                                         schedule="one_cycle", eta_max=0.05, flip=True,
                                         shift=2, label_smoothing=0.1, dropout=0.1))
    out = kbn("train", "--preset", path, "--subset", "1000", "--quiet", "--out", tmp_path / "r")
    assert out.returncode == 0, out.stderr
    trained = re.search(r"test accuracy (\d+\.\d+) %", out.stdout).group(1)
    record = json.loads((tmp_path / "r" / "result.json").read_text())
    assert record["train_config"]["optimizer"] == "nesterov" and record["train_config"]["flip"]
    ev = kbn("evaluate", tmp_path / "r" / "model.npz")
    assert ev.returncode == 0 and re.search(r"test accuracy (\d+\.\d+) %", ev.stdout).group(1) == trained
    flips = kbn("evaluate", tmp_path / "r" / "model.npz", "--flip")
    assert flips.returncode == 0 and "with test-time flips" in flips.stdout


def test_a_preset_carries_its_data_split_and_n_val_overrides_it(tmp_path):
    """mlp-best trains on 49,000 images (1,000 held out); the reference keeps the recipe's
    5,000; --n-val overrides a preset's; a config file carries its split."""
    from kbn.presets import preset_n_val

    def n_val(argv):
        args = build_parser().parse_args(argv)
        if getattr(args, "preset", None):
            args = build_parser(_preset_defaults(args.preset)).parse_args(argv)
        return args.n_val

    assert preset_n_val("mlp-best") == PRESETS["mlp-best"][2]["n_val"] == 1000
    assert n_val(["train", "--preset", "mlp-best"]) == 1000
    assert n_val(["train", "--preset", "mlp-best", "--n-val", "300"]) == 300
    assert n_val(["train", "--preset", "reference"]) == n_val(["train"]) == 5000
    path = write_config_file(tmp_path / "c.json", NetworkConfig(), TrainConfig(), n_val=2500)
    assert preset_n_val(str(path)) == 2500 and n_val(["train", "--preset", str(path)]) == 2500
    # a file without "data" (written before the split was saved) keeps the recipe's
    old = tmp_path / "old.json"
    old.write_text(json.dumps({"network": {}, "train": {}}))
    assert preset_n_val(str(old)) == 5000
    for bad, message in (({"n_val": 60000}, "must be an int in"), ({"n_vall": 3}, "unknown data")):
        f = tmp_path / "bad.json"
        f.write_text(json.dumps({"network": {}, "train": {}, "data": bad}))
        with pytest.raises(ValueError, match=message):
            preset_n_val(str(f))
