"""Analytic gradients against centred differences (the course's ComputeGradsNumSlow)."""

from __future__ import annotations

import numpy as np

from .config import NetworkConfig
from .network import Network


def numerical_gradients(net: Network, X: np.ndarray, y: np.ndarray, lam: float,
                        h: float = 1e-5) -> dict[str, np.ndarray]:
    """Centred difference (c(p + h) - c(p - h)) / 2h for every entry of every parameter.

    The cost is evaluated in training mode (batch statistics), like the analytic gradient,
    and without touching the BN moving averages. Each entry is restored exactly after use.
    """
    grads = {}
    for key, p in net.params.items():
        g = np.zeros_like(p)
        flat, gflat = p.reshape(-1), g.reshape(-1)  # views: writing flat[i] perturbs p
        for i in range(flat.size):
            old = flat[i]
            flat[i] = old + h
            c_plus = net.cost(X, y, lam, train=True)
            flat[i] = old - h
            c_minus = net.cost(X, y, lam, train=True)
            flat[i] = old
            gflat[i] = (c_plus - c_minus) / (2 * h)
        grads[key] = g
    return grads


def relative_errors(ga: dict[str, np.ndarray], gn: dict[str, np.ndarray],
                    eps: float = 1e-12) -> dict[str, float]:
    """Max over entries of |ga - gn| / max(eps, |ga|, |gn|), per parameter key."""
    if ga.keys() != gn.keys():
        raise ValueError(f"gradient keys differ: {sorted(ga)} vs {sorted(gn)}")
    out = {}
    for key in ga:
        a, n = ga[key], gn[key]
        denom = np.maximum(eps, np.maximum(np.abs(a), np.abs(n)))
        out[key] = float(np.max(np.abs(a - n) / denom))
    return out


def check_gradients(config: NetworkConfig, X: np.ndarray, y: np.ndarray, lam: float,
                    rng: np.random.Generator, n_classes: int = 10,
                    h: float = 1e-5) -> dict[str, float]:
    """Build a float64 network from ``config`` and return the relative error per parameter.

    X: (N, d) float64 inputs (truncate d, e.g. to 10, to keep this fast), y: (N,) ints.
    """
    X = np.asarray(X, dtype=np.float64)
    net = Network.create(config, X.shape[1], n_classes, rng, dtype=np.float64)
    _, _, ga = net.cost_and_grads(X, y, lam)
    gn = numerical_gradients(net, X, y, lam, h)
    return relative_errors(ga, gn)


def parameter_label(key: str) -> tuple[str, int]:
    """'gamma3' -> ('gamma', 3): the parameter name and its layer, for tables."""
    name = key.rstrip("0123456789")
    return name, int(key[len(name):])


def training_gradients(net: Network, X: np.ndarray, y: np.ndarray, lam: float,
                       eta: float = 0.1, weight_scale: float = 0.7) -> dict[str, np.ndarray]:
    """The gradient of the cost as training applies it, read back from one real update.

    ``net`` goes into a :class:`kbn.stack.NetworkStack` with its weights stored divided by
    ``weight_scale`` (a scale c != 1, as between the trainer's folds), and one step of
    :class:`kbn.optim.SGD` runs on the batch: :class:`kbn.train_step.TrainStep` (buffers,
    folded BN, the scale) and the update with L2 folded in as a decay. The gradient is
    (parameters before - parameters after) / eta, for every parameter: what the trainer
    uses, not what ``layers.py`` computes. ``net`` itself is not changed.
    """
    from .optim import SGD
    from .stack import NetworkStack
    from .bn_after_relu import train_step_for

    stack = NetworkStack.from_networks([net])
    stack.scale_weights(np.array([1.0 / weight_scale]))
    rule = SGD(stack, np.array([lam]), np.array([[eta]]))
    rule.c = np.array([weight_scale])
    before = stack.network(0, weight_scale).params
    step = train_step_for(stack, len(y))
    grad_scale, c = rule.prepare(0)
    step(X, y, grad_scale, c, update_averages=False)
    rule.finish(0, step.grads)
    rule.apply(step.grads)
    rule.fold()
    after = stack.network(0).params
    return {key: (before[key] - after[key]) / eta for key in net.params}
