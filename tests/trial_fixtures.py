"""Small, fast trials on the tiny CIFAR-10 stand-in, for the runner / executor / cache tests."""

from __future__ import annotations

from pathlib import Path

try:
    from cifar_fixtures import md5_table, write_tiny_cifar10
except ImportError:  # run from the repository root
    from tests.cifar_fixtures import md5_table, write_tiny_cifar10

from kbn import NetworkConfig, SearchConfig, TrainConfig
from kbn.runs import DataSpec, TrialSpec

# 5 x 100 training images: 400 train + 100 validation, 100 test
N_PER_BATCH = 100
N_VAL = 100
NET = NetworkConfig(hidden=(20,))
TRAIN = TrainConfig(n_batch=50, n_s=16, n_cycles=1, evals_per_cycle=4, eta_max=0.05)
SEARCH = SearchConfig(coarse_range=(-5.0, -1.0), n_coarse=3, n_fine=2, seed=7)


def tiny_data_spec(root: Path, n_per_batch: int = N_PER_BATCH, n_val: int = N_VAL) -> DataSpec:
    folder = write_tiny_cifar10(Path(root), n_per_batch=n_per_batch)
    return DataSpec(str(folder), n_val=n_val, expected_md5=md5_table(folder))


def specs(data: DataSpec, lams=(1e-4, 1e-3, 1e-2), seeds=(0, 1)) -> list[TrialSpec]:
    return [TrialSpec(NET, TRAIN.replace(lam=lam, seed=s), data) for lam in lams for s in seeds]
