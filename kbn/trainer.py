"""The one trainer: mini-batch GD with a cyclical learning rate, used by every experiment.

:func:`fit` trains one network; :func:`fit_stack` trains several that share a mini-batch
stream side by side (:mod:`kbn.stack`), each getting the numbers it gets alone. Both run
the same loop, :func:`_train`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from . import __version__
from .config import NetworkConfig, TrainConfig
from .network import Network
from .optim import make_rule
from .precise_bn import batches_rng, population_statistics
from .recorder import Recorder, RecorderConfig
from .schedule import learning_rates
from .stack import NetworkStack
from .bn_after_relu import train_step_for

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
    wall_time: float  # seconds of training: this network's share of its stack's time
    diverged_at: int | None = None  # update step at which the cost became NaN/inf
    network: Network | None = field(default=None, repr=False, compare=False)
    version: str = __version__
    stack_size: int = 1  # networks trained side by side with this one (itself included)
    # (2, N, C) test-set class probabilities, of the images and of their mirror images,
    # when TrainConfig.keep_test_probs (for kbn.ensemble); stored as float16
    test_probs: np.ndarray | None = field(default=None, repr=False, compare=False)
    # what a kbn.recorder.Recorder saw during training (None: no recorder); JSON lists
    recording: dict[str, Any] | None = field(default=None, repr=False)
    # evaluation-time variants (TrainConfig.also_alphas, also_precise_bn): name ->
    # {"val_accuracy", "test_accuracy"}, e.g. "alpha=0.9", "precise_bn=200" (None: none)
    variants: dict[str, dict[str, float]] | None = field(default=None, repr=False)

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
            "stack_size": self.stack_size,
            **({} if self.test_probs is None else {"test_probs": _encode_probs(self.test_probs)}),
            **({} if self.recording is None else {"recording": self.recording}),
            **({} if self.variants is None else {"variants": self.variants}),
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
            stack_size=d.get("stack_size", 1),
            test_probs=None if d.get("test_probs") is None else _decode_probs(d["test_probs"]),
            recording=d.get("recording"),
            variants=d.get("variants"),
        )


def _encode_probs(p: np.ndarray) -> dict[str, Any]:
    """(2, N, C) probabilities as JSON: float16 bytes in base64 (0.4 MB for the test set)."""
    import base64

    a = np.ascontiguousarray(p, dtype="<f2")
    return {"shape": list(a.shape), "float16_base64": base64.b64encode(a.tobytes()).decode()}


def _decode_probs(d: dict[str, Any]) -> np.ndarray:
    import base64

    shape = tuple(int(v) for v in d["shape"])
    a = np.frombuffer(base64.b64decode(d["float16_base64"]), dtype="<f2")
    if a.size != int(np.prod(shape)):
        raise ValueError(f"test_probs: {a.size} values for shape {shape}")
    return a.reshape(shape).astype(np.float32)


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


def n_classes_of(data) -> int:
    """Classes of a dataset: its class names (CIFAR-10: 10) when it has them, else one
    more than the largest label of any split. Not the training labels' maximum alone: a
    subset may lack the last class, and the network would then have too few outputs."""
    names = getattr(data, "class_names", None)
    if names:
        return len(names)
    return 1 + max(int(np.max(split.y)) for split in (data.train, data.val, data.test)
                   if len(split.y))


def fit(network_config: NetworkConfig, train_config: TrainConfig, data,
        progress: bool = False, desc: str | None = None,
        recorder: RecorderConfig | None = None) -> Result:
    """Train a fresh network on ``data`` (a ``kbn.data.CIFAR10``) and evaluate it.

    Initialisation and the per-epoch shuffles come from ``default_rng(train_config.seed)``
    so the same configs and data give the same numbers. Metrics (evaluation mode, i.e. BN
    with moving averages) are recorded at ``record_steps(train_config)``; ``recorder``
    (a :class:`kbn.recorder.RecorderConfig`) also records what happens inside the network
    there, into ``Result.recording``. This is :func:`fit_stack` with one network.
    """
    return fit_stack([network_config], [train_config], data, progress, desc,
                     recorders=[recorder])[0]


def fit_stack(network_configs: Sequence[NetworkConfig], train_configs: Sequence[TrainConfig],
              data, progress: bool = False, desc: str | None = None,
              recorders: Sequence[RecorderConfig | None] | None = None) -> list[Result]:
    """Train K fresh networks side by side on one mini-batch stream; one Result each.

    The K (network, train) config pairs must be stackable (:func:`kbn.stacking.stack_key`:
    same architecture, BN, batch size, steps, evaluation points, seed and precision); they
    may differ in lambda, the learning-rate schedule, the initialisation and BN's alpha.
    Each network gets exactly the numbers it gets trained alone with :func:`fit` (its own
    initialisation, the shared seed's shuffles). A network whose cost becomes non-finite
    stops there (``diverged_at``) and leaves the stack; the others go on.
    ``recorders``: None, or one :class:`kbn.recorder.RecorderConfig` (or None) per network.
    """
    from .stacking import check_stackable

    t0 = time.perf_counter()
    net_cfgs, train_cfgs = list(network_configs), list(train_configs)
    check_stackable(net_cfgs, train_cfgs)
    cfg = train_cfgs[0]  # what the stack shares
    dtype = np.dtype(cfg.dtype)
    X = np.asarray(data.train.X, dtype=dtype)
    y = data.train.y
    Xv, yv = np.asarray(data.val.X, dtype=dtype), data.val.y
    cfg.check_fits(X.shape[0])
    n_classes = n_classes_of(data)

    networks = []
    for net_cfg, train_cfg in zip(net_cfgs, train_cfgs):  # each as fit would draw it alone
        init_rng, _ = np.random.default_rng(train_cfg.seed).spawn(2)
        networks.append(Network.create(net_cfg, X.shape[1], n_classes, init_rng, dtype))
    # children 0 and 1 of the seed are initialisation and shuffles (as ever); 2 and 3 the
    # augmentation and dropout draws of the options beyond the recipe
    shuffle_rng, aug_rng, drop_rng = np.random.default_rng(cfg.seed).spawn(4)[1:]
    members = [_Member(net_cfg, train_cfg) for net_cfg, train_cfg in zip(net_cfgs, train_cfgs)]
    if recorders is not None:
        if len(recorders) != len(members):
            raise ValueError(f"give one recorder (or None) per network: {len(recorders)} "
                             f"recorders for {len(members)} networks")
        for m, rec in zip(members, recorders):
            m.recorder = None if rec is None else Recorder(rec, cfg.n_batch)
    if desc is None:
        desc = net_cfgs[0].describe() + (f" x {len(members)}" if len(members) > 1 else "")
    bar = _progress_bar(progress, cfg.n_steps, desc)

    precise_val: dict[int, float] = {}
    wants_variants = bool(cfg.also_alphas or cfg.also_precise_bn)
    variants = {} if wants_variants else None  # member -> its variants (none if diverged)
    if wants_variants and not net_cfgs[0].batch_norm:
        raise ValueError("also_alphas / also_precise_bn are variants of BN's statistics: "
                         "the network has no BN (NetworkConfig.batch_norm=False)")
    stack = NetworkStack.from_networks(networks)
    if cfg.also_alphas:
        if stack.bn_after_relu:
            raise ValueError("also_alphas is not implemented for BN after ReLU: train each "
                             "alpha as its own network (NetworkConfig.alpha)")
        stack.keep_also(cfg.also_alphas)
    # A diverging run overflows before its cost turns non-finite; that is detected and
    # recorded below, so numpy's overflow warnings would only repeat it as noise.
    with np.errstate(over="ignore", invalid="ignore"):
        stack, alive = _train(stack, members, cfg, X, y, Xv, yv,
                              shuffle_rng, bar, t0, aug_rng, drop_rng)
        if alive:
            lams = np.array([members[i].train_config.lam for i in alive])
            Xt = np.asarray(data.test.X, dtype=dtype)
            if wants_variants:
                variants = _variants(stack, members, alive, cfg, X, Xv, yv, Xt, data.test.y, lams)
            precise_val = _precise_bn(stack, members, alive, cfg, X, Xv, yv, lams)
            test = stack.evaluate(Xt, data.test.y, lams)
            for k, i in enumerate(alive):
                members[i].network = stack.network(k)
                members[i].test_accuracy = float(test["accuracy"][k])
                members[i].wall_time = time.perf_counter() - t0
                if members[i].train_config.keep_test_probs:
                    from .ensemble import test_probabilities

                    # kept as stored (float16), so a cached Result is the same
                    members[i].test_probs = test_probabilities(
                        members[i].network, np.asarray(data.test.X, dtype=dtype)
                    ).astype(np.float16).astype(np.float32)
    if bar is not None:
        bar.close()
    K = len(members)
    return [Result(m.network_config, m.train_config, m.history, m.test_accuracy,
                   float("nan") if m.diverged_at is not None else
                   precise_val.get(i, m.history["val_accuracy"][-1]),
                   m.wall_time / K, m.diverged_at, m.network, stack_size=K,
                   test_probs=m.test_probs,
                   recording=None if m.recorder is None else m.recorder.data,
                   variants=None if variants is None else variants.get(i, {}))
            for i, m in enumerate(members)]


def _population_into(means, variances, stack: NetworkStack, k: int, X, n_batches: int,
                     n_batch: int, seed: int) -> None:
    """PreciseBN: member k's population statistics over ``n_batches`` training batches
    (:mod:`kbn.precise_bn`, the batches drawn from ``seed``) into ``means[l][k]`` and
    ``variances[l][k]`` (per hidden layer, as ``stack.mean`` / ``stack.var``)."""
    stats = population_statistics(stack.network(k), X, n_batches, n_batch, batches_rng(seed))
    for l in range(stack.n_layers - 1):
        means[l][k], variances[l][k] = stats[f"mean{l + 1}"], stats[f"var{l + 1}"]


def alpha_variant(alpha: float) -> str:
    """The name in ``Result.variants`` of the moving averages kept with ``alpha``."""
    return f"alpha={alpha:g}"


def precise_bn_variant(n_batches: int) -> str:
    """The name in ``Result.variants`` of PreciseBN over ``n_batches`` batches."""
    return f"precise_bn={n_batches}"


def _variants(stack: NetworkStack, members, alive, cfg: TrainConfig, X, Xv, yv, Xt, yt,
              lams) -> dict[int, dict[str, dict[str, float]]]:
    """{member: {variant: {"val_accuracy", "test_accuracy"}}} of the final weights with
    other BN statistics: the moving averages kept with each of ``cfg.also_alphas``, and
    PreciseBN over ``cfg.also_precise_bn`` batches (as ``precise_bn`` would compute them).
    The stack's own averages are put back afterwards."""
    sets = [(alpha_variant(a), m, v)
            for a, m, v in zip(stack.also_alphas, stack.also_mean, stack.also_var)]
    if cfg.also_precise_bn:
        pm, pv = [m.copy() for m in stack.mean], [v.copy() for v in stack.var]
        for k, i in enumerate(alive):
            _population_into(pm, pv, stack, k, X, cfg.also_precise_bn, cfg.n_batch,
                             members[i].train_config.seed)
        sets.append((precise_bn_variant(cfg.also_precise_bn), pm, pv))
    own = stack.mean, stack.var
    out: dict[int, dict[str, dict[str, float]]] = {i: {} for i in alive}
    try:
        for name, means, variances in sets:
            stack.mean, stack.var = means, variances
            val = stack.evaluate(Xv, yv, lams)["accuracy"]
            test = stack.evaluate(Xt, yt, lams)["accuracy"]
            for k, i in enumerate(alive):
                out[i][name] = {"val_accuracy": float(val[k]), "test_accuracy": float(test[k])}
    finally:
        stack.mean, stack.var = own
    return out


def _precise_bn(stack: NetworkStack, members, alive, cfg: TrainConfig, X, Xv, yv,
                lams) -> dict[int, float]:
    """PreciseBN for the members that ask for it (``TrainConfig.precise_bn`` = N > 0):
    their moving averages in ``stack`` are replaced by the population statistics of their
    final weights over N training batches (:mod:`kbn.precise_bn`). Returns {member: its
    validation accuracy with them} (the history keeps the moving averages' values)."""
    ks = [k for k, i in enumerate(alive) if members[i].train_config.precise_bn > 0]
    if not ks or not stack.batch_norm:
        return {}
    for k in ks:
        tc = members[alive[k]].train_config
        _population_into(stack.mean, stack.var, stack, k, X, tc.precise_bn, cfg.n_batch, tc.seed)
    val = stack.evaluate(Xv, yv, lams)["accuracy"]
    return {alive[k]: float(val[k]) for k in ks}


@dataclass
class _Member:
    """One network of a stack as the trainer follows it; becomes a Result."""

    network_config: NetworkConfig
    train_config: TrainConfig
    history: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in HISTORY_KEYS})
    diverged_at: int | None = None
    network: Network | None = None
    test_accuracy: float = float("nan")
    wall_time: float = 0.0
    test_probs: np.ndarray | None = None
    recorder: Recorder | None = None


def _train(stack: NetworkStack, members: list[_Member], cfg: TrainConfig, X, y, Xv, yv,
           shuffle_rng, bar, t0: float, aug_rng=None, drop_rng=None
           ) -> tuple[NetworkStack, list[int]]:
    """The update loop (the update itself: :func:`kbn.optim.make_rule`, the recipe's
    :class:`kbn.optim.SGD` by default). Returns the final stack and the members (indices)
    still in it. ``aug_rng``, ``drop_rng``: the draws of augmentation and dropout
    (TrainConfig.flip / shift / dropout; only for a lone network, see kbn.stacking)."""
    from .augment import Augmenter

    n = X.shape[0]
    to_record = set(record_steps(cfg).tolist())
    steps_per_epoch = n // cfg.n_batch  # the last incomplete batch of an epoch is dropped
    alive = list(range(len(members)))
    batch = np.empty((cfg.n_batch, X.shape[1]), dtype=X.dtype)
    trains = [m.train_config for m in members]
    lam = np.array([tc.lam for tc in trains])
    # (n_steps, K): row t holds every network's learning rate at step t
    etas = np.stack([learning_rates(tc) for tc in trains], axis=1)
    rule = make_rule(stack, trains, lam, etas)
    step = train_step_for(stack, cfg.n_batch, dropout=cfg.dropout, dropout_rng=drop_rng,
                          label_smoothing=cfg.label_smoothing)
    augment = Augmenter(cfg.flip, cfg.shift)
    observers = [i for i, m in enumerate(members) if m.recorder is not None]
    if observers:  # the starting point (nothing is folded yet: the weights are as drawn)
        _observe(members, alive, stack, 0, X, y, Xv, yv)
    t = 0
    try:
        while t < cfg.n_steps:
            order = shuffle_rng.permutation(n)
            for j in range(steps_per_epoch):
                idx = order[j * cfg.n_batch:(j + 1) * cfg.n_batch]
                # gathered into one reused buffer (mode="clip" skips take's bounds-checking
                # copy; every index is valid): faster than a shuffled copy of each epoch
                np.take(X, idx, axis=0, out=batch, mode="clip")
                if augment.active:
                    augment(batch, aug_rng)
                grad_scale, weight_scale = rule.prepare(t)
                losses = step(batch, y[idx], grad_scale, weight_scale)
                rule.finish(t, step.grads)
                finite = np.isfinite(losses)  # weights that blow up make the loss NaN/inf too
                if not finite.all():  # what each diverged network was (fit alone stops here)
                    lost = {int(k): stack.network(k, weight_scale[k])
                            for k in np.flatnonzero(~finite)}
                rule.apply(step.grads)
                if not finite.all():  # the others go on, in a stack without the diverged
                    keep = np.flatnonzero(finite)
                    old_step, old_alive = step, alive
                    alive = [alive[k] for k in keep]
                    if alive:
                        stack = stack.subset(keep)
                        rule, step = rule.subset(stack, keep), train_step_for(stack, cfg.n_batch)
                        step.adopt_logs(old_step, keep)  # flushed when they would be alone
                    old_step.flush_averages()
                    for k, net in lost.items():
                        net.averages = old_step.stack.network(k).averages
                        m = members[old_alive[k]]
                        m.diverged_at, m.network = t, net
                        m.wall_time = time.perf_counter() - t0
                    if not alive:
                        return stack, alive
                t += 1
                if t in to_record:
                    rule.fold()
                    step.flush_averages()
                    _record(members, alive, stack, rule.lam, t, t / steps_per_epoch,
                            rule.etas[t - 1], X, y, Xv, yv)
                    if observers:
                        _observe(members, alive, stack, t, X, y, Xv, yv)
                    if bar is not None:
                        best = max(members[i].history["val_accuracy"][-1] for i in alive)
                        bar.set_postfix(val_acc=f"{best:.3f}")
                if bar is not None:
                    bar.update(1)
                if t == cfg.n_steps:
                    return stack, alive
        return stack, alive
    finally:  # the stack holds the networks' parameters and averages whatever happens
        rule.fold()
        step.flush_averages()


def _observe(members, alive, stack, t, X, y, Xv, yv) -> None:
    """Let each live member's recorder look at its network (after ``t`` updates)."""
    for k, i in enumerate(alive):
        if members[i].recorder is not None:
            members[i].recorder.observe(t, stack.network(k), X, y, Xv, yv)


def _record(members, alive, stack, lam, t, epoch, eta, X, y, Xv, yv) -> None:
    metrics = {split: stack.evaluate(A, b, lam) for split, (A, b) in
               (("train", (X, y)), ("val", (Xv, yv)))}
    for k, i in enumerate(alive):
        h = members[i].history
        h["step"].append(t)
        h["epoch"].append(epoch)
        h["eta"].append(float(eta[k]))
        for split, values in metrics.items():
            for m, v in values.items():
                h[f"{split}_{m}"].append(float(v[k]))
