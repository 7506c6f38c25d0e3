"""Evaluation beyond one network: test-time flips and ensembles (averaged probabilities).

A trained network's class probabilities (evaluation mode, BN folded, as
:meth:`kbn.network.Network.evaluate`) for images and for their mirror images; averaging
the two is test-time flip augmentation, averaging several networks' is an ensemble.
Trainings keep the two probability tables of the test set when
``TrainConfig.keep_test_probs`` (``Result.test_probs``, (2, N, C)), so ensembles of cached
runs need no weights.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .augment import CHANNELS, SIDE
from .network import EVAL_BLOCK, Network


def mirror(X: np.ndarray) -> np.ndarray:
    """(N, 3072) images -> their left-right mirror images (a new array)."""
    n = X.shape[0]
    return np.ascontiguousarray(X.reshape(n, CHANNELS, SIDE, SIDE)[..., ::-1]).reshape(n, -1)


def class_probabilities(net: Network, X: np.ndarray, block: int = EVAL_BLOCK) -> np.ndarray:
    """(N, d) -> (N, C) softmax probabilities of ``net`` in evaluation mode."""
    folded = net.inference_layers()
    out = np.empty((X.shape[0], folded[-1][0].shape[1]), np.float64)
    for start in range(0, X.shape[0], block):
        x = X[start:start + block]
        for W, b in folded[:-1]:
            x = np.maximum(x @ W + b, 0.0)
        s = (x @ folded[-1][0] + folded[-1][1]).astype(np.float64)
        s -= s.max(axis=1, keepdims=True)
        np.exp(s, out=s)
        s /= s.sum(axis=1, keepdims=True)
        out[start:start + block] = s
    return out


def test_probabilities(net: Network, X: np.ndarray) -> np.ndarray:
    """(2, N, C): the class probabilities of the images and of their mirror images."""
    return np.stack([class_probabilities(net, X), class_probabilities(net, mirror(X))])


def accuracy(probs: np.ndarray, y: np.ndarray) -> float:
    """Fraction of rows of (N, C) ``probs`` whose largest entry is the label."""
    return float(np.mean(np.argmax(probs, axis=1) == np.asarray(y)))


def combine(tables: Sequence[np.ndarray], flip: bool = False) -> np.ndarray:
    """Averaged probabilities (N, C) of an ensemble: ``tables`` are members' (2, N, C)
    Result.test_probs; ``flip`` also averages in each member's mirror-image probabilities
    (test-time flip augmentation), else only the plain images' are used."""
    if not len(tables):
        raise ValueError("an ensemble needs at least one member")
    views = [t[:2] if flip else t[:1] for t in tables]
    return np.mean(np.concatenate(views, axis=0), axis=0)


def ensemble_accuracy(tables: Sequence[np.ndarray], y: np.ndarray, flip: bool = False) -> float:
    """Test accuracy of the averaged probabilities of ``tables`` (see :func:`combine`)."""
    return accuracy(combine(tables, flip), y)
