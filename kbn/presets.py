"""Named configurations for ``kbn train --preset NAME``: a network and a training recipe.

``mlp-best`` is the best configuration chapter 6 (how far an MLP goes on CIFAR-10) found
within its time budget; the chapter trains exactly it (three seeds), so
``kbn train --preset mlp-best --seed 0`` reproduces the chapter's seed-0 test accuracy and
``kbn evaluate`` its saved model. A preset may also be a JSON file
``{"network": {...NetworkConfig fields}, "train": {...TrainConfig fields}, "data": {"n_val": N}}``
("data" optional: the validation images held out of the 50,000, else the recipe's 5,000).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .config import NetworkConfig, TrainConfig
from .data import N_TRAIN_OFFICIAL, _check_n_val

EPOCH_STEPS_45K = 45_000  # images per epoch in the reference split

N_VAL = 5000  # the recipe's validation images, held out of the 50,000 training images

# name -> ({NetworkConfig fields}, {TrainConfig fields}, {"n_val": ...}); else the defaults
PRESETS: dict[str, tuple[dict[str, Any], dict[str, Any], dict[str, Any]]] = {
    "reference": ({}, {}, {}),  # the reference recipe, for symmetry
    # 18,000 steps of 200 = 73 epochs of 49,000 images: ~8.5 min on the 2-core machine
    "mlp-best": (
        {"hidden": (1024, 512, 256)},
        {"n_batch": 200, "n_s": 9000, "n_cycles": 1, "evals_per_cycle": 10,
         "optimizer": "nesterov", "momentum": 0.9, "schedule": "one_cycle",
         "eta_min": 1e-4, "eta_max": 0.1, "lam": 2.5e-4, "flip": True, "shift": 4,
         "label_smoothing": 0.1},
        {"n_val": 1000},  # train on 49,000 images (the test set stays the measure)
    ),
}


def preset_configs(name_or_path: str) -> tuple[NetworkConfig, TrainConfig]:
    """The (NetworkConfig, TrainConfig) of a preset name or a JSON config file."""
    net, train, _ = load_preset(name_or_path)
    return net, train


def preset_n_val(name_or_path: str) -> int:
    """The validation images a preset holds out of the 50,000 (default: the recipe's)."""
    return load_preset(name_or_path)[2]


def load_preset(name_or_path: str) -> tuple[NetworkConfig, TrainConfig, int]:
    """(NetworkConfig, TrainConfig, n_val) of a preset name or a JSON config file."""
    if name_or_path in PRESETS:
        net, train, data = PRESETS[name_or_path]
        return NetworkConfig(**net), TrainConfig(**train), _n_val(data, name_or_path)
    path = Path(name_or_path)
    if not path.is_file():
        raise ValueError(f"{name_or_path!r} is neither a preset ({', '.join(sorted(PRESETS))}) "
                         "nor a JSON config file")
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
        return (NetworkConfig.from_dict(d["network"]), TrainConfig.from_dict(d["train"]),
                _n_val(d.get("data", {}), path))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"{path}: not a config file ({{\"network\": {{...}}, \"train\": "
                         f"{{...}}, \"data\": {{\"n_val\": N}}}}): {exc}") from None


def _n_val(data: dict, where) -> int:
    unknown = set(data) - {"n_val"}
    if unknown:
        raise ValueError(f"{where}: unknown data field(s) {sorted(unknown)} (only n_val)")
    try:
        return _check_n_val(data.get("n_val", N_VAL), N_TRAIN_OFFICIAL)
    except ValueError as exc:
        raise ValueError(f"{where}: data {exc}") from None


def write_config_file(path, network: NetworkConfig, train: TrainConfig,
                      n_val: int = N_VAL) -> Path:
    """Write a config file :func:`preset_configs` reads (``kbn train --preset FILE``)."""
    path = Path(path)
    path.write_text(json.dumps({"network": network.to_dict(), "train": train.to_dict(),
                                "data": {"n_val": int(n_val)}}, indent=1) + "\n",
                    encoding="utf-8")
    return path
