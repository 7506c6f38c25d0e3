"""The one trainer: mini-batch GD with a cyclical learning rate, used by every experiment."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import __version__
from .config import NetworkConfig, TrainConfig
from .network import Network
from .schedule import cyclical_lr
from .train_step import TrainStep

METRICS = ("cost", "loss", "accuracy")
HISTORY_KEYS = ("step", "epoch", "eta",
                *(f"{split}_{m}" for split in ("train", "val") for m in METRICS))


@dataclass
class Result:
    """What one training run produced. ``history`` has one entry per recorded point."""

    network_config: NetworkConfig
    train_config: TrainConfig
    history: dict[str, list[float]]  # keys HISTORY_KEYS, equal-length lists
    test_accuracy: float  # NaN if the run diverged
    val_accuracy: float  # final validation accuracy (evaluation mode); NaN if diverged
    wall_time: float  # seconds spent in fit()
    diverged_at: int | None = None  # update step at which the cost became NaN/inf
    network: Network | None = field(default=None, repr=False, compare=False)
    version: str = __version__

    @property
    def diverged(self) -> bool:
        return self.diverged_at is not None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: configs, history and scalars (not the weights)."""
        return {
            "network_config": self.network_config.to_dict(),
            "train_config": self.train_config.to_dict(),
            "history": self.history,
            "test_accuracy": self.test_accuracy,
            "val_accuracy": self.val_accuracy,
            "wall_time": self.wall_time,
            "diverged_at": self.diverged_at,
            "version": self.version,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Result":
        return cls(
            network_config=NetworkConfig.from_dict(d["network_config"]),
            train_config=TrainConfig.from_dict(d["train_config"]),
            history={k: list(v) for k, v in d["history"].items()},
            test_accuracy=d["test_accuracy"],
            val_accuracy=d["val_accuracy"],
            wall_time=d["wall_time"],
            diverged_at=d["diverged_at"],
            version=d["version"],
        )


def record_steps(cfg: TrainConfig) -> np.ndarray:
    """Update steps (1-based counts of updates done) after which metrics are recorded.

    ``evals_per_cycle`` evenly spaced points per cycle, the last one at the end of training.
    """
    n_points = cfg.n_cycles * cfg.evals_per_cycle
    return np.unique(np.rint(np.linspace(0, cfg.n_steps, n_points + 1)[1:]).astype(int))


def _progress_bar(enabled: bool, total: int, desc: str):
    if not enabled:
        return None
    try:
        # the console bar, also inside a notebook kernel: papermill shows it in the terminal,
        # whereas a widget bar would be an empty box in the book
        from tqdm import tqdm
    except ImportError:  # progress is a nicety, never a reason to fail
        return None
    return tqdm(total=total, desc=desc, leave=False, mininterval=0.5)


def fit(network_config: NetworkConfig, train_config: TrainConfig, data,
        progress: bool = False, desc: str | None = None) -> Result:
    """Train a fresh network on ``data`` (a ``kbn.data.CIFAR10``) and evaluate it.

    Initialisation and the per-epoch shuffles come from ``default_rng(train_config.seed)``
    so the same configs and data give the same numbers. Metrics (evaluation mode, i.e. BN
    with moving averages) are recorded at ``record_steps(train_config)``.
    """
    t0 = time.perf_counter()
    cfg = train_config
    dtype = np.dtype(cfg.dtype)
    X = np.asarray(data.train.X, dtype=dtype)
    y = data.train.y
    Xv, yv = np.asarray(data.val.X, dtype=dtype), data.val.y
    n = X.shape[0]
    cfg.check_fits(n)

    init_rng, shuffle_rng = np.random.default_rng(cfg.seed).spawn(2)
    net = Network.create(network_config, X.shape[1], int(y.max()) + 1, init_rng, dtype)
    history: dict[str, list[float]] = {k: [] for k in HISTORY_KEYS}
    bar = _progress_bar(progress, cfg.n_steps, desc or network_config.describe())

    # A diverging run overflows before its cost turns non-finite; that is detected and
    # recorded below, so numpy's overflow warnings would only repeat it as noise.
    with np.errstate(over="ignore", invalid="ignore"):
        diverged_at = _train(net, cfg, X, y, Xv, yv, shuffle_rng, history, bar)
    if bar is not None:
        bar.close()

    if diverged_at is None:
        test_acc = net.evaluate(np.asarray(data.test.X, dtype=dtype), data.test.y, cfg.lam)["accuracy"]
        val_acc = history["val_accuracy"][-1]
    else:
        test_acc = val_acc = float("nan")
    return Result(network_config, cfg, history, test_acc, val_acc,
                  time.perf_counter() - t0, diverged_at, net)


def pack(arrays: dict[str, np.ndarray], first: str = "W") -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Copy ``arrays`` into one contiguous buffer; return it and a dict of views into it.

    Keys starting with ``first`` come first, so they form one slice ``buffer[:n_first]``.
    One buffer turns the per-parameter update into a couple of whole-array operations.
    """
    keys = sorted(arrays, key=lambda k: not k.startswith(first))  # stable: order kept
    dtype = arrays[keys[0]].dtype
    flat = np.empty(sum(a.size for a in arrays.values()), dtype=dtype)
    views, start = {}, 0
    for k in keys:
        a = arrays[k]
        views[k] = flat[start:start + a.size].reshape(a.shape)
        views[k][...] = a
        start += a.size
    return flat, {k: views[k] for k in arrays}


def _train(net, cfg, X, y, Xv, yv, shuffle_rng, history, bar) -> int | None:
    """The update loop. Returns the step at which the cost became non-finite, or None."""
    n = X.shape[0]
    to_record = set(record_steps(cfg).tolist())
    steps_per_epoch = n // cfg.n_batch  # the last incomplete batch of an epoch is dropped
    # Parameters and gradients each live in one buffer (views keep the dict interface);
    # the weights come first, so the weights and the rest are two slices.
    theta, net.params = pack(net.params)
    grad, grads = pack({k: np.empty_like(v) for k, v in net.params.items()})
    n_w = sum(v.size for k, v in net.params.items() if k.startswith("W"))
    weights, rest_grad = theta[:n_w], grad[n_w:]
    step = TrainStep(net, cfg.n_batch, grads)  # buffers made once; gradients go into `grad`
    etas = cyclical_lr(np.arange(cfg.n_steps), cfg.eta_min, cfg.eta_max, cfg.n_s).tolist()
    batch = np.empty((cfg.n_batch, X.shape[1]), dtype=X.dtype)
    # L2 enters GD as a decay: W <- W - eta (dW + 2 lam W) = (1 - 2 eta lam) W - eta dW.
    # The decay only rescales W, so it is kept as a scalar c with the network's weights =
    # c * stored weights (scikit-learn's SGD keeps its `wscale` the same way) and folded
    # into the stored weights now and then, instead of a pass over W at every step:
    # c_new W_new = (1 - 2 eta lam) c W - eta dW  <=>  W_new = W - (eta / c_new) dW.
    c = 1.0

    def fold_weight_scale():
        nonlocal c
        if c != 1.0:
            np.multiply(weights, c, out=weights)
            c = 1.0

    t = 0
    try:
        while t < cfg.n_steps:
            order = shuffle_rng.permutation(n)
            for j in range(steps_per_epoch):
                idx = order[j * cfg.n_batch:(j + 1) * cfg.n_batch]
                # gathered into one reused buffer (mode="clip" skips take's bounds-checking
                # copy; every index is valid): faster than a shuffled copy of each epoch
                np.take(X, idx, axis=0, out=batch, mode="clip")
                eta = etas[t]
                decay = 1.0 - 2.0 * eta * cfg.lam
                if decay >= 0.5:  # the usual case: the decay goes into c
                    c_new = c * decay
                    # grad = (eta / c_new) * gradient: the step for the stored weights
                    loss = step(batch, y[idx], grad_scale=eta / c_new, weight_scale=c)
                    rest_grad *= c_new  # biases, gamma, beta: eta * gradient
                else:  # 2 eta lam > 1/2 (a huge lam): decay the weights themselves
                    fold_weight_scale()
                    c_new = 1.0
                    loss = step(batch, y[idx], grad_scale=eta)
                    weights *= decay
                if not math.isfinite(loss):  # weights that blow up make the loss NaN/inf too
                    return t
                theta -= grad
                c = c_new
                if c < 0.5:  # keeps the stored weights within 2x of the network's
                    fold_weight_scale()
                t += 1
                if t in to_record:
                    fold_weight_scale()
                    step.flush_averages()
                    _record(history, net, t, t / steps_per_epoch, eta, X, y, Xv, yv, cfg.lam)
                    if bar is not None:
                        bar.set_postfix(cost=f"{history['train_cost'][-1]:.3f}",
                                        val_acc=f"{history['val_accuracy'][-1]:.3f}")
                if bar is not None:
                    bar.update(1)
                if t == cfg.n_steps:
                    return None
        return None
    finally:  # net.params and net.averages are the network's whatever happens
        fold_weight_scale()
        step.flush_averages()


def _record(history, net, t, epoch, eta, X, y, Xv, yv, lam) -> None:
    history["step"].append(t)
    history["epoch"].append(epoch)
    history["eta"].append(eta)
    for split, (A, b) in (("train", (X, y)), ("val", (Xv, yv))):
        for m, v in net.evaluate(A, b, lam).items():
            history[f"{split}_{m}"].append(v)
