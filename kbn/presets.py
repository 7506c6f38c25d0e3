"""Named configurations for ``kbn train --preset NAME``: a network and a training recipe.

``mlp-best`` is the best configuration chapter 6 (how far an MLP goes on CIFAR-10) found
within its time budget; the chapter trains exactly it (three seeds), so
``kbn train --preset mlp-best --seed 0`` reproduces the chapter's seed-0 test accuracy and
``kbn evaluate`` its saved model. A preset may also be a JSON file
``{"network": {...NetworkConfig fields}, "train": {...TrainConfig fields}}``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .config import NetworkConfig, TrainConfig

EPOCH_STEPS_45K = 45_000  # images per epoch in the reference split

# name -> ({NetworkConfig fields}, {TrainConfig fields}); everything else at its default
PRESETS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "reference": ({}, {}),  # the reference recipe, for symmetry
    "mlp-best": (
        {"hidden": (1024, 512, 256)},
        {"n_batch": 200, "n_s": 5625, "n_cycles": 1, "evals_per_cycle": 10,
         "optimizer": "nesterov", "momentum": 0.9, "schedule": "one_cycle",
         "eta_min": 1e-4, "eta_max": 0.1, "lam": 2.5e-4, "flip": True, "shift": 4,
         "label_smoothing": 0.1},
    ),
}


def preset_configs(name_or_path: str) -> tuple[NetworkConfig, TrainConfig]:
    """The (NetworkConfig, TrainConfig) of a preset name or a JSON config file."""
    if name_or_path in PRESETS:
        net, train = PRESETS[name_or_path]
        return NetworkConfig(**net), TrainConfig(**train)
    path = Path(name_or_path)
    if not path.is_file():
        raise ValueError(f"{name_or_path!r} is neither a preset ({', '.join(sorted(PRESETS))}) "
                         "nor a JSON config file")
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
        return NetworkConfig.from_dict(d["network"]), TrainConfig.from_dict(d["train"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path}: not a config file ({{\"network\": {{...}}, \"train\": "
                         f"{{...}}}}): {exc}") from None


def write_config_file(path, network: NetworkConfig, train: TrainConfig) -> Path:
    """Write a config file :func:`preset_configs` reads (``kbn train --preset FILE``)."""
    path = Path(path)
    path.write_text(json.dumps({"network": network.to_dict(), "train": train.to_dict()},
                               indent=1) + "\n", encoding="utf-8")
    return path
