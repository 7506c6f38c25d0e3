"""Looking inside a network while it trains: opt-in statistics at the evaluation points.

A :class:`RecorderConfig` says what to record; the trainer (``fit(..., recorder=cfg)``,
``fit_stack(..., recorders=[...])``, or a :class:`kbn.runs.TrialSpec` with ``record=cfg``)
then makes one :class:`Recorder` per network and calls it at step 0 and at every point
where it records the metrics (``kbn.trainer.record_steps``). There the trainer has already
folded the weight scale and the BN averages, so observing changes no number of the run;
without a recorder the loop does not call anything (the update step is untouched).

Everything is computed from the network as it is at that point (``Network``, the readable
reference pass, in float64) on a fixed probe batch, the first ``probe`` training images,
in training mode (BN with the probe's own statistics, as the optimiser sees it):

* ``relu_input``: for every hidden layer, the input of its ReLU (with BN before ReLU:
  BN's output; else the affine output) - per unit its mean and std over the probe, and
  the 15th/50th/85th percentiles averaged over the layer's units (Ioffe & Szegedy 2015,
  Fig. 1: the input distribution of a typical unit);
* ``grad_norm``: ||dL/dW_l|| (Frobenius) of every layer, L the mean cross-entropy (no L2);
* the landscape along the gradient (Santurkar et al. 2018, Fig. 4): with g the gradient
  of every parameter, the loss L(theta - s g) and the change ||g(theta - s g) - g|| for the
  step sizes s in ``landscape_steps``; the effective beta-smoothness is
  max_s ||g(theta - s g) - g|| / (s ||g||);
* the accuracy on the first ``val_images`` validation images with BN in training mode
  (batches of ``n_batch`` images, in order, each normalised by its own statistics) beside
  evaluation mode (moving averages).

The recording is a dict of lists (JSON), stored in ``Result.recording`` and with it in the
results cache (the config is part of the trial's key).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from . import layers
from .config import ConfigError, _Config, _fail
from .network import Network

PERCENTILES = (15, 50, 85)


@dataclass(frozen=True)
class RecorderConfig(_Config):
    """What a :class:`Recorder` measures (see the module docstring)."""

    probe: int = 500  # the first `probe` training images: the fixed batch statistics use
    # step sizes s of the landscape probes theta - s g (absolute: the recipe's eta_max is 0.1)
    landscape_steps: tuple[float, ...] = (0.0125, 0.025, 0.05, 0.1, 0.2, 0.4)
    mode_gap: bool = True  # also the validation accuracy with BN in training mode ...
    val_images: int = 2000  # ... and in evaluation mode, on the first `val_images` of them

    def __post_init__(self):
        name = "RecorderConfig"
        if not isinstance(self.probe, (int, np.integer)) or isinstance(self.probe, bool) \
                or self.probe < 2:
            _fail(name, "probe", self.probe, "must be an int >= 2 (BN needs two images)")
        steps = tuple(self.landscape_steps)
        if not steps or not all(isinstance(s, (int, float, np.floating)) and not isinstance(s, bool)
                                and np.isfinite(s) and s > 0 for s in steps):
            _fail(name, "landscape_steps", self.landscape_steps,
                  "give at least one finite step size > 0")
        object.__setattr__(self, "landscape_steps", tuple(float(s) for s in steps))
        if not isinstance(self.mode_gap, bool):
            _fail(name, "mode_gap", self.mode_gap, "must be True or False")
        if not isinstance(self.val_images, (int, np.integer)) or isinstance(self.val_images, bool) \
                or self.val_images < 2:
            _fail(name, "val_images", self.val_images, "must be an int >= 2")


def _flat(grads: dict[str, np.ndarray], keys) -> np.ndarray:
    return np.concatenate([grads[k].ravel() for k in keys])


class Recorder:
    """Observes one network at the trainer's evaluation points; ``data`` is the recording."""

    def __init__(self, config: RecorderConfig, n_batch: int):
        self.config, self.n_batch = config, n_batch
        self.data: dict[str, Any] = {
            "steps": [], "percentiles": list(PERCENTILES),
            "landscape_steps": list(config.landscape_steps),
            "unit_mean": [], "unit_std": [], "relu_input_pct": [], "grad_norm": [],
            "loss": [], "gradient_norm": [], "landscape_loss": [], "landscape_grad_change": [],
            "beta_smoothness": [], "val_accuracy_train_mode": [], "val_accuracy_eval_mode": [],
        }

    def observe(self, step: int, network: Network, X: np.ndarray, y: np.ndarray,
                Xv: np.ndarray, yv: np.ndarray) -> None:
        """Record the statistics of ``network`` (as it is after ``step`` updates)."""
        if self.config.probe > X.shape[0]:
            raise ConfigError("RecorderConfig", "probe", self.config.probe,
                              f"larger than the {X.shape[0]} training images")
        net = as_float64(network)
        Xp = np.asarray(X[:self.config.probe], np.float64)
        yp = y[:self.config.probe]
        d = self.data
        d["steps"].append(int(step))
        stats = relu_input_statistics(net, Xp)
        d["unit_mean"].append([s["mean"].tolist() for s in stats])
        d["unit_std"].append([s["std"].tolist() for s in stats])
        d["relu_input_pct"].append([s["pct"].tolist() for s in stats])
        loss, grads = net.loss_and_grads(Xp, yp, lam=0.0)
        d["grad_norm"].append([float(np.linalg.norm(grads[f"W{l}"]))
                               for l in range(1, net.n_layers + 1)])
        along = landscape(net, Xp, yp, self.config.landscape_steps, loss, grads)
        d["loss"].append(loss)
        d["gradient_norm"].append(along["gradient_norm"])
        d["landscape_loss"].append(along["loss"])
        d["landscape_grad_change"].append(along["grad_change"])
        d["beta_smoothness"].append(along["beta_smoothness"])
        if self.config.mode_gap:
            Xv64 = np.asarray(Xv[:self.config.val_images], np.float64)
            yv = yv[:self.config.val_images]
            d["val_accuracy_train_mode"].append(train_mode_accuracy(net, Xv64, yv, self.n_batch))
            d["val_accuracy_eval_mode"].append(
                net.evaluate(Xv64, yv, 0.0)["accuracy"]
                if net.averages or not net.config.batch_norm else float("nan"))


def as_float64(network: Network) -> Network:
    """A float64 copy of ``network`` (parameters and moving averages)."""
    return Network(network.config, {k: np.array(v, np.float64) for k, v in network.params.items()},
                   {k: np.array(v, np.float64) for k, v in network.averages.items()})


def relu_input_statistics(net: Network, X: np.ndarray) -> list[dict[str, np.ndarray]]:
    """Per hidden layer: the input of its ReLU over the batch X (training mode) - per unit
    mean and std (M,), and the PERCENTILES per unit averaged over the units (3,)."""
    p, cfg, out = net.params, net.config, []
    x = X
    for l in range(1, net.n_layers):
        s, _ = layers.affine_forward(x, p[f"W{l}"], p[f"b{l}"])
        if cfg.batch_norm and not cfg.bn_after_relu:
            s, _, _, _ = layers.batchnorm_forward(s, p[f"gamma{l}"], p[f"beta{l}"], cfg.eps)
        out.append({"mean": s.mean(axis=0), "std": s.std(axis=0),
                    "pct": np.percentile(s, PERCENTILES, axis=0).mean(axis=1)})
        x, _ = layers.relu_forward(s)
        if cfg.bn_after_relu:
            x, _, _, _ = layers.batchnorm_forward(x, p[f"gamma{l}"], p[f"beta{l}"], cfg.eps)
    return out


def landscape(net: Network, X: np.ndarray, y: np.ndarray, steps, loss: float | None = None,
              grads: dict[str, np.ndarray] | None = None) -> dict[str, Any]:
    """The loss and gradient along the gradient direction (Santurkar et al. 2018, Fig. 4).

    With g the gradient of the mean loss (no L2) over every parameter at the current
    point theta: for each step size s, L(theta - s g) and ||g(theta - s g) - g||;
    beta_smoothness = max_s ||g(theta - s g) - g|| / (s ||g||). ``net`` is not changed.
    """
    if grads is None:
        loss, grads = net.loss_and_grads(X, y, lam=0.0)
    keys = list(net.params)
    g = _flat(grads, keys)
    g_norm = float(np.linalg.norm(g))
    losses, changes = [], []
    for s in steps:
        moved = Network(net.config, {k: net.params[k] - s * grads[k] for k in keys})
        loss_s, grads_s = moved.loss_and_grads(X, y, lam=0.0)
        losses.append(loss_s)
        changes.append(float(np.linalg.norm(_flat(grads_s, keys) - g)))
    beta = max(c / (s * g_norm) for c, s in zip(changes, steps)) if g_norm > 0 else float("nan")
    return {"loss0": loss, "gradient_norm": g_norm, "loss": losses, "grad_change": changes,
            "beta_smoothness": float(beta)}


def train_mode_accuracy(net: Network, X: np.ndarray, y: np.ndarray, n_batch: int) -> float:
    """Accuracy with BN in training mode: consecutive batches of ``n_batch`` images, each
    normalised by its own statistics (a last incomplete batch too, if it has 2 images)."""
    correct = total = 0
    for start in range(0, X.shape[0], n_batch):
        xb, yb = X[start:start + n_batch], y[start:start + n_batch]
        if xb.shape[0] < 2:
            break
        scores, _ = net.forward(xb, train=True)
        correct += int(np.count_nonzero(scores.argmax(axis=1) == yb))
        total += xb.shape[0]
    return correct / total if total else float("nan")
