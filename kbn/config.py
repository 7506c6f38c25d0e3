"""Frozen, validated configurations. Defaults are the reference recipe.

Every result carries the config that produced it (``Result.config``), and a config
round-trips through ``to_dict`` / ``from_dict`` so it can be saved beside the result.
Unknown keys raise, so a typo in a notebook parameter cannot silently fall back to a
default.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

N_TRAIN = 45_000  # training images in the reference split (50,000 - 5,000 validation)
INITS = ("he", "xavier", "sigma")
OPTIMIZERS = ("sgd", "momentum", "nesterov", "adam", "adamw")
SCHEDULES = ("cyclical", "cosine", "one_cycle")
MAX_SHIFT = 8  # translations beyond a quarter of the 32-pixel image are not augmentation
# TrainConfig fields beyond the reference recipe: off at their defaults
EXTENSIONS = ("optimizer", "momentum", "beta2", "schedule", "flip", "shift", "dropout",
              "label_smoothing", "keep_test_probs")


class _Config:
    """Shared behaviour: dict round trip that refuses unknown keys."""

    # Fields added after the reference recipe (the options of chapters 5 and 6): left out of
    # ``to_dict`` while at their default, so a config that does not use them has the same
    # dict, and hence the same cache key and saved form, as before they existed.
    _OPTIONAL: frozenset[str] = frozenset()

    def to_dict(self) -> dict[str, Any]:
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name in self._OPTIONAL and value == f.default:
                continue
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]):
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(
                f"{cls.__name__}: unknown key(s) {unknown}; valid keys are {sorted(known)}"
            )
        return cls(**d)

    def replace(self, **changes):
        """A copy with some fields changed (validated again)."""
        unknown = sorted(set(changes) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            raise ValueError(f"{type(self).__name__}: unknown key(s) {unknown}")
        return dataclasses.replace(self, **changes)


class ConfigError(ValueError):
    """A config value that breaks a rule. The message names the argument
    (``TrainConfig.eta_max=-0.1: ...``); ``config``, ``field``, ``value`` and ``why`` let a
    front end (the ``kbn`` command) name its own option instead. ``cli_why`` is ``why``
    in the command line's words where it names other fields."""

    def __init__(self, config: str, field: str, value: Any, why: str, cli_why: str | None = None):
        super().__init__(f"{config}.{field}={value!r}: {why}")
        self.config, self.field, self.value, self.why = config, field, value, why
        self.cli_why = cli_why or why


def _fail(cls: str, name: str, value: Any, why: str, cli_why: str | None = None) -> None:
    raise ConfigError(cls, name, value, why, cli_why)


def _is_real(v: Any) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)


def _check_real(cls: str, name: str, v: Any) -> None:
    if not _is_real(v):
        _fail(cls, name, v, "must be a number")


@dataclass(frozen=True)
class NetworkConfig(_Config):
    """Architecture and initialisation of a k-layer MLP (k = len(hidden) + 1)."""

    hidden: tuple[int, ...] = (50, 50)  # hidden layer widths; the reference 3-layer net
    batch_norm: bool = True  # BN (before ReLU) on every hidden layer; never on the output
    init: str = "he"  # "he": N(0, 2/fan_in); "xavier": N(0, 1/fan_in); "sigma": N(0, sigma^2)
    sigma: float | None = None  # std of every weight when init == "sigma"
    alpha: float = 0.8  # BN moving-average weight: mu_av = alpha*mu_av + (1-alpha)*mu
    eps: float = 1e-8  # added to the BN variance before the square root (keeps 1/sqrt finite)
    # BN placement: False (the recipe) normalises each unit's affine output before its
    # ReLU; True applies ReLU first and normalises its output (BN after ReLU)
    bn_after_relu: bool = False

    _OPTIONAL = frozenset({"bn_after_relu"})

    def __post_init__(self):
        name = "NetworkConfig"
        hidden = self.hidden
        if isinstance(hidden, (int, np.integer)):
            _fail(name, "hidden", hidden, "give a list of layer widths, e.g. [50, 50]")
        hidden = tuple(hidden)
        object.__setattr__(self, "hidden", hidden)
        if len(hidden) == 0:
            _fail(name, "hidden", list(hidden), "need at least one hidden layer, e.g. [50, 50]")
        for m in hidden:
            if not isinstance(m, (int, np.integer)) or isinstance(m, bool) or m <= 0:
                _fail(name, "hidden", list(hidden), f"every width must be a positive int, got {m!r}")
        object.__setattr__(self, "hidden", tuple(int(m) for m in hidden))
        if self.init not in INITS:
            _fail(name, "init", self.init, f"must be one of {INITS}")
        for key in ("alpha", "eps"):
            _check_real(name, key, getattr(self, key))
        if self.sigma is not None:
            _check_real(name, "sigma", self.sigma)
            if not (np.isfinite(self.sigma) and self.sigma > 0):
                _fail(name, "sigma", self.sigma, "the weight std must be finite and > 0")
        if not 0.0 <= self.alpha < 1.0:
            _fail(name, "alpha", self.alpha, "the moving-average weight must be in [0, 1)")
        if not (np.isfinite(self.eps) and self.eps > 0):
            _fail(name, "eps", self.eps, "must be finite and > 0")
        if not isinstance(self.bn_after_relu, (bool, np.bool_)):
            _fail(name, "bn_after_relu", self.bn_after_relu, "must be True or False")
        object.__setattr__(self, "bn_after_relu", bool(self.bn_after_relu))
        # relations between fields, once each field is valid on its own
        if self.bn_after_relu and not self.batch_norm:
            _fail(name, "bn_after_relu", True, "places BN after ReLU, so it needs batch_norm=True",
                  "places BN after ReLU, so it cannot be combined with --no-bn")
        if self.init == "sigma" and self.sigma is None:
            _fail(name, "sigma", None, "init='sigma' needs a finite sigma > 0",
                  "--init sigma needs --sigma, the std of every weight (finite, > 0)")
        if self.init != "sigma" and self.sigma is not None:
            _fail(name, "sigma", self.sigma, f"sigma is only used with init='sigma' "
                  f"(init={self.init!r})", f"is only used with --init sigma (here --init {self.init})")

    @property
    def n_layers(self) -> int:
        return len(self.hidden) + 1

    def describe(self) -> str:
        """Short label, e.g. '3-layer [50, 50] + BN'."""
        bn = (" + BN after ReLU" if self.bn_after_relu else " + BN") if self.batch_norm else ""
        return f"{self.n_layers}-layer {list(self.hidden)}{bn}"


@dataclass(frozen=True)
class TrainConfig(_Config):
    """Mini-batch GD with a cyclical (triangular) learning rate; the reference recipe."""

    n_batch: int = 100  # images per update step
    eta_min: float = 1e-5  # lowest learning rate of the cycle
    eta_max: float = 1e-1  # highest learning rate of the cycle
    n_s: int = 5 * N_TRAIN // 100  # half-cycle in update steps: 5 epochs at n_batch=100
    n_cycles: int = 2  # full cycles (2 n_s steps each); training length = 2 n_s n_cycles
    lam: float = 0.005  # L2 weight: cost = mean cross-entropy + lam * sum ||W||^2
    evals_per_cycle: int = 10  # points per cycle at which train/val metrics are recorded
    seed: int = 0  # seeds initialisation and shuffling (numpy default_rng)
    dtype: str = "float32"  # arithmetic precision; float32 is ~1.6x faster, float64 for checks
    # --- beyond the reference recipe (chapter 6); each off at its default, and then
    # absent from to_dict (same cache keys as before). Trainings that use any of them are
    # never stacked (kbn.stacking.uses_extensions).
    optimizer: str = "sgd"  # update rule (kbn.optim): "sgd" is the recipe's; "momentum",
    #   "nesterov" (SGD with momentum), "adam", "adamw" (Adam with decoupled L2 decay)
    momentum: float = 0.9  # momentum coefficient (Adam's beta1); unused by "sgd"
    beta2: float = 0.999  # Adam's second-moment averaging weight; only "adam" / "adamw"
    schedule: str = "cyclical"  # learning rate: "cyclical" (the recipe's triangle), "cosine"
    #   (eta_max -> eta_min over all 2 n_s n_cycles steps), "one_cycle" (linear warm-up,
    #   then cosine down); kbn.schedule
    flip: bool = False  # augmentation: flip each training image left-right with p = 1/2
    shift: int = 0  # augmentation: translate each training image by up to this many pixels
    dropout: float = 0.0  # inverted dropout: probability of dropping each hidden unit
    label_smoothing: float = 0.0  # targets (1 - e) one-hot + e / C instead of one-hot
    keep_test_probs: bool = False  # keep the test-set class probabilities (plain and
    #   flipped images) in the Result, for ensembles and test-time flips (kbn.ensemble)

    # PreciseBN (Wu & Johnson 2021): 0 keeps BN's moving averages for evaluation; N > 0
    # replaces them after training by the population statistics of the final weights over
    # N training batches (the same batch size), which no alpha can make stale
    precise_bn: int = 0
    # Evaluation-time variants of the same training (chapter 5's inference study): BN's
    # moving averages also kept with each of these weights alpha, and PreciseBN statistics
    # of the final weights also computed over this many batches; the validation and test
    # accuracy with each go to Result.variants. The run's own numbers do not change.
    also_alphas: tuple[float, ...] = ()
    also_precise_bn: int = 0

    _OPTIONAL = frozenset(EXTENSIONS) | {"precise_bn", "also_alphas", "also_precise_bn"}

    def __post_init__(self):
        name = "TrainConfig"
        # each field on its own value first, then the relations between fields
        for key in ("n_batch", "n_s", "n_cycles", "evals_per_cycle"):
            v = getattr(self, key)
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v <= 0:
                _fail(name, key, v, "must be a positive int")
        for key in ("eta_min", "eta_max", "lam"):
            _check_real(name, key, getattr(self, key))
        if not (np.isfinite(self.eta_min) and self.eta_min > 0):
            _fail(name, "eta_min", self.eta_min, "the lowest learning rate must be finite and > 0")
        if not (np.isfinite(self.eta_max) and self.eta_max > 0):
            _fail(name, "eta_max", self.eta_max, "the highest learning rate must be finite and > 0")
        if not (np.isfinite(self.lam) and self.lam >= 0):
            _fail(name, "lam", self.lam, "the L2 weight must be finite and >= 0")
        if (not isinstance(self.precise_bn, (int, np.integer)) or isinstance(self.precise_bn, bool)
                or self.precise_bn < 0):
            _fail(name, "precise_bn", self.precise_bn,
                  "must be an int >= 0 (0: moving averages; N: statistics over N batches)")
        if (not isinstance(self.also_precise_bn, (int, np.integer))
                or isinstance(self.also_precise_bn, bool) or self.also_precise_bn < 0):
            _fail(name, "also_precise_bn", self.also_precise_bn,
                  "must be an int >= 0 (0: none; N: PreciseBN over N batches as a variant)")
        alphas = self.also_alphas
        if isinstance(alphas, (str, bytes)) or not hasattr(alphas, "__iter__"):
            _fail(name, "also_alphas", alphas, "give a list of moving-average weights, e.g. [0.9, 0.99]")
        alphas = tuple(alphas)
        if not all(isinstance(a, (int, float, np.floating)) and not isinstance(a, bool)
                   and 0 <= a < 1 for a in alphas) or len(set(alphas)) != len(alphas):
            _fail(name, "also_alphas", list(alphas), "give distinct weights in [0, 1), e.g. [0.9, 0.99]")
        object.__setattr__(self, "also_alphas", tuple(float(a) for a in alphas))
        if self.dtype not in ("float32", "float64"):
            _fail(name, "dtype", self.dtype, "must be 'float32' or 'float64'")
        if not isinstance(self.seed, (int, np.integer)) or isinstance(self.seed, bool) or self.seed < 0:
            _fail(name, "seed", self.seed, "must be a non-negative int")
        self._check_extensions()
        if self.eta_min > self.eta_max:
            _fail(name, "eta_min", self.eta_min, f"must not exceed eta_max={self.eta_max!r}",
                  f"must not exceed --eta-max {self.eta_max!r}")
        if self.evals_per_cycle > 2 * self.n_s:
            _fail(name, "evals_per_cycle", self.evals_per_cycle,
                  f"cannot exceed the {2 * self.n_s} steps of a cycle (2 n_s)",
                  f"cannot exceed the {2 * self.n_s} steps of a cycle (2 x --n-s)")

    def _check_extensions(self) -> None:
        name = "TrainConfig"
        if self.optimizer not in OPTIMIZERS:
            _fail(name, "optimizer", self.optimizer, f"must be one of {OPTIMIZERS}")
        if self.schedule not in SCHEDULES:
            _fail(name, "schedule", self.schedule, f"must be one of {SCHEDULES}")
        for key in ("momentum", "beta2", "dropout", "label_smoothing"):
            v = getattr(self, key)
            _check_real(name, key, v)
            if not (np.isfinite(v) and 0.0 <= v < 1.0):
                _fail(name, key, v, "must be in [0, 1)")
        for key in ("flip", "keep_test_probs"):
            if not isinstance(getattr(self, key), (bool, np.bool_)):
                _fail(name, key, getattr(self, key), "must be True or False")
        v = self.shift
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or not 0 <= v <= MAX_SHIFT:
            _fail(name, "shift", v, f"must be an int in [0, {MAX_SHIFT}] (pixels)")

    @property
    def uses_extensions(self) -> bool:
        """Whether any option beyond the reference recipe is on (kbn.stacking keeps such
        trainings out of stacks: the stacked path does not implement them)."""
        return any(getattr(self, f.name) != f.default for f in dataclasses.fields(self)
                   if f.name in EXTENSIONS)

    @property
    def n_steps(self) -> int:
        return 2 * self.n_s * self.n_cycles

    def check_fits(self, n_train: int) -> None:
        """Raise if the recipe cannot run on ``n_train`` training images."""
        if self.n_batch > n_train:
            _fail("TrainConfig", "n_batch", self.n_batch,
                  f"larger than the {n_train} training images; lower n_batch or use more data",
                  f"larger than the {n_train} training images; lower --n-batch or use more "
                  "data (--subset, --n-val)")


@dataclass(frozen=True)
class SearchConfig(_Config):
    """Coarse-to-fine random search of the L2 weight lambda (log-uniform)."""

    coarse_range: tuple[float, float] = (-5.0, -1.0)  # log10(lambda) range of the coarse stage
    n_coarse: int = 8  # trials in the coarse stage
    n_fine: int = 8  # trials in the fine stage
    fine_halfwidth: float = 0.5  # fine stage: log10 range best +- this (in decades)
    seed: int = 0  # seeds the lambda samples (training seeds come from TrainConfig)

    def __post_init__(self):
        name = "SearchConfig"
        bounds = tuple(self.coarse_range)
        if len(bounds) != 2 or not all(_is_real(v) for v in bounds):
            _fail(name, "coarse_range", self.coarse_range, "need two log10 bounds (lo, hi)")
        lo, hi = (float(v) for v in bounds)
        object.__setattr__(self, "coarse_range", (lo, hi))
        if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
            _fail(name, "coarse_range", self.coarse_range, "need finite log10 bounds lo < hi")
        for key in ("n_coarse", "n_fine", "seed"):
            v = getattr(self, key)
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 0:
                _fail(name, key, v, "must be an int >= 0")
        if self.n_coarse == 0:
            _fail(name, "n_coarse", 0, "the coarse stage needs at least one trial")
        _check_real(name, "fine_halfwidth", self.fine_halfwidth)
        if not (np.isfinite(self.fine_halfwidth) and self.fine_halfwidth > 0):
            _fail(name, "fine_halfwidth", self.fine_halfwidth, "must be finite and > 0")

