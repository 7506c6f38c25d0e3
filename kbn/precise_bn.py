"""PreciseBN (Wu & Johnson 2021): BN's evaluation statistics recomputed for the final weights.

The moving averages mix batch statistics of weights from many past steps (with alpha =
0.8 mostly the last few, each from one noisy batch). PreciseBN freezes the trained
weights and recomputes each BN layer's mean and variance as the average, over N training
batches of the training batch size, of the batch means and batch (biased) variances: the
population statistics of the network that is evaluated. ``TrainConfig.precise_bn = N``
makes the trainer do this after the last update, before the test evaluation.

The batches come from their own random stream (``default_rng(seed).spawn(5)[4]``: the
trainer's first four children draw the initialisation, the shuffles, the augmentation and
the dropout masks), one permutation of the training set after another, so N may exceed
the batches of one epoch.
"""

from __future__ import annotations

import numpy as np

from .network import Network


def batches_rng(seed: int) -> np.random.Generator:
    """The random stream of PreciseBN's batches for a training seeded with ``seed``."""
    return np.random.default_rng(seed).spawn(5)[4]


def population_statistics(network: Network, X: np.ndarray, n_batches: int, n_batch: int,
                          rng: np.random.Generator) -> dict[str, np.ndarray]:
    """``{mean<l>, var<l>}`` for every BN layer: the averages over ``n_batches`` training
    batches of ``n_batch`` images of the batch mean and batch variance BN computes (in the
    order of the layers, each layer seeing the batch through the frozen layers below).
    ``network`` is not changed."""
    if not network.config.batch_norm:
        return {}
    if n_batches < 1:
        raise ValueError(f"n_batches={n_batches}: PreciseBN needs at least one batch")
    n = X.shape[0]
    if n_batch > n:
        raise ValueError(f"n_batch={n_batch} is larger than the {n} training images")
    probe = Network(network.config, network.params)  # its own (empty) averages
    sums: dict[str, np.ndarray] = {}
    per_epoch, order, j = n // n_batch, None, 0
    for _ in range(n_batches):
        if order is None or j == per_epoch:
            order, j = rng.permutation(n), 0
        idx = order[j * n_batch:(j + 1) * n_batch]
        j += 1
        probe.averages = {}
        probe.forward(X[idx], train=True, update_averages=True)  # alpha aside: the first
        for key, value in probe.averages.items():             # batch sets the "average"
            acc = sums.setdefault(key, np.zeros(value.shape, np.float64))
            acc += value
    return {key: (value / n_batches).astype(network.dtype) for key, value in sums.items()}
