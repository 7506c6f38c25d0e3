"""The data and the training recipe of the chapters, and the smoke variant CI builds.

Smoke runs take the first SMOKE_SUBSET images of train, validation and test and a short
schedule (SMOKE_TRAIN): every chapter then runs in seconds, and its numbers only show
that the pipeline works.
"""

from __future__ import annotations

from typing import Any, Mapping

import pandas as pd

from ..config import NetworkConfig, TrainConfig
from ..presets import N_VAL
from ..runs import DataSpec

SMOKE_SUBSET = 2000
SMOKE_TRAIN = {"n_s": 40, "n_cycles": 1, "evals_per_cycle": 4}


def data_spec(data_dir=None, smoke: bool = False, n_val: int = N_VAL) -> DataSpec:
    """The data as a :class:`kbn.runs.DataSpec` (what worker processes load and what cache
    keys name); ``smoke`` keeps SMOKE_SUBSET images per split; ``n_val`` validation images
    are held out of the 50,000 (the recipe's 5,000 by default)."""
    return DataSpec(data_dir=None if data_dir is None else str(data_dir),
                    subset=SMOKE_SUBSET if smoke else None, n_val=n_val)


def train_config(recipe: Mapping[str, Any] | None = None, smoke: bool = False,
                 **changes) -> TrainConfig:
    """The reference recipe (TrainConfig defaults), updated by ``recipe`` and ``changes``;
    ``smoke`` then shortens the schedule (SMOKE_TRAIN) so a run takes a fraction of a second."""
    cfg = TrainConfig.from_dict({**(recipe or {}), **changes})
    if smoke:
        cfg = cfg.replace(**SMOKE_TRAIN)
    return cfg


def data_summary(data) -> dict[str, Any]:
    """Sizes and checksum of the loaded data, for the results JSON."""
    return {"n_train": len(data.train.y), "n_val": len(data.val.y), "n_test": len(data.test.y),
            "dtype": str(data.train.X.dtype), "checksum": getattr(data, "checksum", None)}


def recipe_table(train_cfg: TrainConfig, data, net_cfg: NetworkConfig | None = None) -> pd.DataFrame:
    """The training recipe as a two-column table (setting, value) for the book."""
    net = net_cfg or NetworkConfig()
    init = ({"he": "He: N(0, 2 / fan-in)", "xavier": "Xavier: N(0, 1 / fan-in)"}.get(net.init)
            or f"N(0, σ²) in every layer, σ = {net.sigma:g}")
    n_train = len(data.train.y)
    rows = [
        ("batch size", f"{train_cfg.n_batch}"),
        ("learning rate", f"cyclical (triangular), η from {train_cfg.eta_min:g} to {train_cfg.eta_max:g}"),
        ("half-cycle n_s", f"{train_cfg.n_s} update steps"),
        ("cycles", f"{train_cfg.n_cycles} (= {train_cfg.n_steps} update steps, "
                   f"{train_cfg.n_steps * train_cfg.n_batch / n_train:.0f} epochs)"),
        ("L2 weight λ", f"{train_cfg.lam:g}"),
        ("initialisation", init),
        ("BN moving averages", f"α = {net.alpha:g}, ε = {net.eps:g}"),
        ("images", f"{n_train:,} train, {len(data.val.y):,} validation, {len(data.test.y):,} test"),
        ("features", f"{data.train.X.shape[1]} pixel values, normalised"),
        ("precision", train_cfg.dtype),
    ]
    return pd.DataFrame(rows, columns=["setting", "value"])
