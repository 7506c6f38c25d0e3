"""Chapter 1, Table 1: analytic vs numerical gradients, per parameter, with and without BN.

Entry point: ``run(Parameters(...))``.

Two analytic gradients are checked against the same centred differences: the readable
reference (``layers.py``, ``Network.cost_and_grads``) and the path that trains
(:func:`kbn.gradcheck.training_gradients`: the stacked ``TrainStep``, a weight scale
c != 1 and the L2 decay of :class:`kbn.optim.SGD`, read back from one real update).

With BN, the bias b_l of a hidden layer has an identically zero gradient: BN subtracts
the batch mean of s = x W_l + b_l, which removes b_l from the cost. Its relative error
is then 0/0-like noise (~1) and says nothing, so such rows are flagged and judged by
the absolute error instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from ..config import NetworkConfig
from ..gradcheck import (numerical_gradients, parameter_label, relative_errors,
                         training_gradients)
from .. import layers
from ..network import Network
from . import recipe
from .chapter import ChapterOutput, Stopwatch
from .display import run_note
from .parameters import ChapterParameters, ParameterError, check_architectures
from .reference import REFERENCE

DEPENDS_ON: tuple[str, ...] = ()  # reads no other chapter's results

ZERO_GRAD_NOTE = "gradient identically zero under BN; absolute error shown"
ZERO_GRAD_TOL = 1e-8  # |gradient| below this (in float64) counts as identically zero
KINK_FACTOR = 10  # a ReLU input within KINK_FACTOR * h of 0 may be crossed by a step of h
PARAM_ORDER = {"W": 0, "b": 1, "gamma": 2, "beta": 3}
# the analytic gradients checked: the readable reference, and the path that trains
PATHS = {"reference": "reference (layers.py)", "training": "training (TrainStep + SGD update)"}
THRESHOLD, ATOL = 1e-6, 1e-8  # an entry passes when its rel. or its abs. error is below these


def check_input(data, n_samples: int, dims: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``n_samples`` training images truncated to ``dims`` features, float64."""
    X = np.asarray(data.train.X[:n_samples, :dims], dtype=np.float64)
    return X, np.asarray(data.train.y[:n_samples])


def gradient_check(hidden: Sequence[int], batch_norm: bool, X: np.ndarray, y: np.ndarray,
                   lam: float, seed: int = 0, h: float = 1e-5, n_classes: int = 10,
                   paths: Sequence[str] = tuple(PATHS)) -> pd.DataFrame:
    """Compare the analytic gradients of one float64 network with centred differences.

    X: (N, d), y: (N,). One row per analytic path (``PATHS``) and parameter, in layer
    order: network, batch_norm, path, layer, parameter, key, shape, max_rel_error,
    max_abs_error, max_abs_gradient (largest |analytic| or |numerical| entry),
    zero_gradient, note.
    """
    cfg = NetworkConfig(hidden=tuple(hidden), batch_norm=batch_norm)
    net = Network.create(cfg, X.shape[1], n_classes, np.random.default_rng(seed), np.float64)
    margin = kink_margin(net, X)
    gn = numerical_gradients(net, X, y, lam, h)
    analytic = {"reference": lambda: net.cost_and_grads(X, y, lam)[2],
                "training": lambda: training_gradients(net, X, y, lam)}
    rows = []
    for path in paths:
        ga = analytic[path]()
        rel = relative_errors(ga, gn)
        for key in ga:
            name, layer = parameter_label(key)
            a, n = ga[key], gn[key]
            max_g = float(max(np.max(np.abs(a)), np.max(np.abs(n))))
            zero = bool(batch_norm and name == "b" and layer < cfg.n_layers and max_g < ZERO_GRAD_TOL)
            rows.append({
                "network": cfg.describe(), "n_layers": cfg.n_layers, "batch_norm": batch_norm,
                "path": path, "layer": layer, "parameter": name, "key": key,
                "shape": "x".join(map(str, a.shape)), "max_rel_error": rel[key],
                "max_abs_error": float(np.max(np.abs(a - n))),
                "max_abs_gradient": max_g, "zero_gradient": zero,
                "note": ZERO_GRAD_NOTE if zero else "", "h": h, "kink_margin": margin,
            })
    df = pd.DataFrame(rows)
    order = df["parameter"].map(PARAM_ORDER)
    return df.assign(_o=order).sort_values(["path", "layer", "_o"], kind="stable") \
             .drop(columns="_o").reset_index(drop=True)


def verdicts(grid: pd.DataFrame, rechecked: pd.DataFrame | None = None,
             threshold: float = THRESHOLD, atol: float = ATOL) -> pd.Series:
    """True where a row of the check FAILS: its relative error above ``threshold`` and its
    absolute error above ``atol`` (a tiny entry has a large relative error from rounding
    alone), or an error that is not a number. An identically zero gradient (a BN bias)
    is judged by its absolute error. A network with a ReLU input near its kink is judged
    by its ``rechecked`` rows at the smaller step, if given: a step of h may cross the
    kink, where a centred difference is not a derivative."""
    def bad(rows):
        rel, err = rows["max_rel_error"], rows["max_abs_error"]
        within = (rel <= threshold) | (err <= atol)
        return ~np.isfinite(err) | (rows["zero_gradient"] & (err > atol)) | \
            (~rows["zero_gradient"] & ~within)

    out = bad(grid)
    if rechecked is not None and len(rechecked):
        on = ["architecture", "batch_norm", "path", "key"]
        again = rechecked[on].assign(_bad=bad(rechecked).to_numpy())
        merged = grid[on].merge(again, on=on, how="left")["_bad"]
        out = pd.Series(np.where(merged.isna(), out, merged.fillna(False).astype(bool)),
                        index=grid.index)
    return out.astype(bool)


def kink_margin(net: Network, X: np.ndarray) -> float:
    """Smallest |input of a ReLU| over all hidden units and samples (training-mode BN)."""
    p, x, margin = net.params, X, np.inf
    for l in range(1, net.n_layers):
        s, _ = layers.affine_forward(x, p[f"W{l}"], p[f"b{l}"])
        if net.config.batch_norm:
            s, _, _, _ = layers.batchnorm_forward(s, p[f"gamma{l}"], p[f"beta{l}"], net.config.eps)
        margin = min(margin, float(np.min(np.abs(s))))
        x, _ = layers.relu_forward(s)
    return margin


def gradient_check_grid(architectures: Mapping[str, Sequence[int]], X, y, lam: float,
                        seed: int = 0, h: float = 1e-5,
                        batch_norm: Sequence[bool] = (False, True),
                        paths: Sequence[str] = tuple(PATHS)) -> pd.DataFrame:
    """:func:`gradient_check` for every architecture, without and with BN, concatenated."""
    frames = [gradient_check(hidden, bn, X, y, lam, seed, h, paths=paths).assign(architecture=name)
              for name, hidden in architectures.items() for bn in batch_norm]
    return pd.concat(frames, ignore_index=True)


def summary(grid: pd.DataFrame) -> pd.DataFrame:
    """Per (architecture, BN, path): the worst relative error over the parameters whose
    gradient is not identically zero, and the worst absolute error over those that are."""
    rows = []
    for (arch, bn, path), g in grid.groupby(["architecture", "batch_norm", "path"], sort=False):
        live, zero = g[~g["zero_gradient"]], g[g["zero_gradient"]]
        rows.append({
            "architecture": arch, "network": g["network"].iloc[0], "batch_norm": bn,
            "path": path,
            "n_parameters": len(g), "worst_rel_error": float(live["max_rel_error"].max()),
            "worst_rel_error_key": live.loc[live["max_rel_error"].idxmax(), "key"],
            "n_zero_gradient": len(zero),
            "worst_abs_error": float(live["max_abs_error"].max()),
            "worst_abs_error_zero_gradient": float(zero["max_abs_error"].max()) if len(zero) else float("nan"),
            "kink_margin": float(g["kink_margin"].iloc[0]), "h": float(g["h"].iloc[0]),
            "near_kink": bool(g["kink_margin"].iloc[0] < KINK_FACTOR * g["h"].iloc[0]),
        })
    return pd.DataFrame(rows)


def display_rows(rows: pd.DataFrame, with_network: bool = False,
                 failed: pd.Series | None = None) -> pd.DataFrame:
    """Rows of a check, readable: errors in scientific notation, BN as yes/no, the
    gradient checked, and the verdict (``failed``: :func:`verdicts` of these rows)."""
    failed = verdicts(rows) if failed is None else failed.loc[rows.index]
    out = pd.DataFrame({
        "BN": np.where(rows["batch_norm"], "yes", "no"),
        "gradient": [p for p in rows["path"]],
        "layer": rows["layer"].to_numpy(),
        "parameter": [f"{p}{l}" for p, l in zip(rows["parameter"], rows["layer"])],
        "shape": rows["shape"].to_numpy(),
        "max rel. error": [f"{v:.2e}" for v in rows["max_rel_error"]],
        "max abs. error": [f"{v:.2e}" for v in rows["max_abs_error"]],
        "max |gradient|": [f"{v:.2e}" for v in rows["max_abs_gradient"]],
        "note": rows["note"].to_numpy(),
        "verdict": np.where(failed.to_numpy(), "FAIL", "ok"),
    })
    if with_network:
        out.insert(0, "step h", [f"{v:g}" for v in rows["h"]])
        out.insert(0, "network", rows["network"].to_numpy())
        out = out.drop(columns="BN")
    return out.reset_index(drop=True)


def display_table(grid: pd.DataFrame, architecture: str,
                  failed: pd.Series | None = None) -> pd.DataFrame:
    """The rows of one architecture (without BN, then with BN; each path), readable."""
    rows = grid[grid["architecture"] == architecture]
    return display_rows(rows, failed=None if failed is None else failed)


def summary_table(summary_df: pd.DataFrame) -> pd.DataFrame:
    """:func:`summary`, readable: one row per network."""
    return pd.DataFrame({
        "network": summary_df["network"].to_numpy(),
        "gradient": summary_df["path"].to_numpy(),
        "worst rel. error": [f"{v:.2e} ({k})" for v, k in
                             zip(summary_df["worst_rel_error"], summary_df["worst_rel_error_key"])],
        "worst abs. error": [f"{v:.2e}" for v in summary_df["worst_abs_error"]],
        "zero-gradient biases": summary_df["n_zero_gradient"].to_numpy(),
        "their worst abs. error": ["–" if not np.isfinite(v) else f"{v:.1e}"
                                   for v in summary_df["worst_abs_error_zero_gradient"]],
        "closest ReLU input to 0": [f"{v:.1e}" for v in summary_df["kink_margin"]],
    })


def recheck(grid: pd.DataFrame, architectures: Mapping[str, Sequence[int]], X, y, lam: float,
            seed: int = 0, h: float = 1e-6) -> pd.DataFrame:
    """Repeat the check with step ``h`` for every network of ``grid`` that has a ReLU input
    near its kink (see :func:`summary`); empty if there is none."""
    s = summary(grid).drop_duplicates(["architecture", "batch_norm"])
    frames = [gradient_check(architectures[r["architecture"]], bool(r["batch_norm"]), X, y, lam,
                             seed, h).assign(architecture=r["architecture"])
              for _, r in s[s["near_kink"]].iterrows()]
    return pd.concat(frames, ignore_index=True) if frames else grid.iloc[0:0]


def key_values(grid: pd.DataFrame, summary_df: pd.DataFrame, rechecked: pd.DataFrame,
               h: float) -> dict:
    """The numbers and sentences the chapter glues (keys ``gc_*``).

    Per network (``gc_worst_rel_<k>layer_<bn|nobn>``, ``gc_worst_abs_...``): the worst
    errors over both paths of the parameters whose gradient is not identically zero, at h
    or, near a ReLU kink, at the recheck's step: what its verdict rests on.

    Relative/absolute error maxima over the parameters whose gradient is not identically
    zero, in networks without a ReLU input near its kink; the zero-gradient rows on their
    own; and a sentence on kinks (with the recheck at a smaller step, if any).
    """
    checked = grid.merge(summary_df[["architecture", "batch_norm", "path", "near_kink"]])
    live = checked[~checked["zero_gradient"]]
    clean = live[~live["near_kink"]]
    zero = grid[grid["zero_gradient"]]
    near = summary_df[summary_df["near_kink"]].drop_duplicates(["architecture", "batch_norm"])
    if len(near):
        near_live = live[live["near_kink"]]
        live_re = rechecked[~rechecked["zero_gradient"]]
        h_re = float(rechecked["h"].iloc[0]) if len(rechecked) else float("nan")
        at_h, at_re = near_live["max_abs_error"].max(), live_re["max_abs_error"].max()
        clean_abs = clean["max_abs_error"].max() if len(clean) else float("nan")
        crossed = not (np.isfinite(clean_abs) and at_h <= 10 * clean_abs)
        kink_note = (
            f"In the {_and(list(near['network']))} network{'s' if len(near) > 1 else ''}, "
            f"some ReLU input lies within {KINK_FACTOR} h of "
            f"its kink (closest: {near['kink_margin'].min():.1e}), so a step of h = {h:g} could "
            f"cross the kink, where a centred difference is not a derivative. Their largest "
            f"absolute error is {at_h:.1e} with h = {h:g} and {at_re:.1e} with h = {h_re:g} "
            f"(table below): " + (
                "the large errors at h come from crossing the kink, and vanish with the smaller step"
                if crossed else "no step crossed a kink; these networks agree as well as the others"))
    else:
        kink_note = (f"No ReLU input lies within {KINK_FACTOR} h of its kink (closest: "
                     f"{summary_df['kink_margin'].min():.1e}), so no finite difference "
                     f"straddles a kink")
    failed = verdicts(grid, rechecked)
    # per network, what its verdict rests on: the rows at h, or at the recheck's smaller
    # step for a network with a ReLU input near its kink
    rest = clean if not len(rechecked) else pd.concat([clean, rechecked], ignore_index=True)
    per_network = {}
    for (layers_, bn), g in rest[~rest["zero_gradient"]].groupby(["n_layers", "batch_norm"]):
        key = f"gc_worst_rel_{layers_}layer_{'bn' if bn else 'nobn'}"
        per_network[key] = float(g["max_rel_error"].max())
        per_network[key.replace("_rel_", "_abs_")] = float(g["max_abs_error"].max())
        bound = REFERENCE["gradcheck_max_rel_error"]
        per_network[f"{key}_verdict"] = (
            f"{'below' if per_network[key] < bound else 'NOT below'} the original's bound "
            f"{bound:.0e} (ours: the worst over both paths)")
    training = clean[clean["path"] == "training"]
    return {
        **per_network, "gc_ref_bound": REFERENCE["gradcheck_max_rel_error"],
        "gc_n_fail": int(failed.sum()), "gc_n_rows": len(grid),
        "gc_verdict": ("every analytic gradient, the reference's and the training path's, "
                       "agrees with the finite differences" if not failed.any() else
                       f"{int(failed.sum())} of {len(grid)} rows FAIL: "
                       + ", ".join(f"{r.key} of the {r.network} ({r.path})"
                                   for r in grid[failed].itertuples())),
        "gc_worst_rel_training": training["max_rel_error"].max(),
        "gc_worst_rel_reference": clean[clean["path"] == "reference"]["max_rel_error"].max(),
        "gc_worst_rel": clean["max_rel_error"].max(),
        "gc_worst_abs": clean["max_abs_error"].max(),
        "gc_worst_rel_nobn": clean[~clean["batch_norm"]]["max_rel_error"].max(),
        "gc_worst_rel_bn": clean[clean["batch_norm"]]["max_rel_error"].max(),
        "gc_kink_note": kink_note, "gc_n_near_kink": len(near),
        "gc_n_zero": len(zero),
        "gc_zero_max_abs_error": zero["max_abs_error"].max(),
        "gc_zero_max_abs_gradient": zero["max_abs_gradient"].max(),
        "gc_zero_min_rel_error": zero["max_rel_error"].min(),
        "gc_zero_max_rel_error": zero["max_rel_error"].max(),
    }


def _and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


# ------------------------------------------------------------------ the chapter
# the original's three, and the 9-layer network that chapters 2 and 4 train
ARCHITECTURES = {"2-layer": (50,), "3-layer": (50, 50), "4-layer": (50, 50, 50),
                 "9-layer": (50, 30, 20, 10, 10, 10, 10, 10)}


@dataclass(frozen=True)
class Parameters(ChapterParameters):
    """The parameters cell of notebooks/01_gradient_check.ipynb."""

    # name -> hidden widths of each checked network
    architectures: dict[str, list[int]] = field(default_factory=lambda: dict(ARCHITECTURES))
    n_samples: int = 20  # training images in the batch whose cost is differentiated
    dims: int = 10  # input features kept (d), as in the original
    lam: float = 0.005  # L2 weight (the recipe's), so the regularisation gradient is checked too
    h: float = 1e-5  # finite-difference step
    seed: int = 0  # initialisation of the checked networks

    def check(self) -> None:
        super().check()
        check_architectures("architectures", self.architectures)
        if self.n_samples < 2:
            raise ParameterError(f"parameter n_samples={self.n_samples}: BN needs a batch of >= 2")
        if not 1 <= self.dims <= 3072:
            raise ParameterError(f"parameter dims={self.dims}: must be in 1..3072 (pixel values)")
        if not (self.lam >= 0 and np.isfinite(self.lam)):
            raise ParameterError(f"parameter lam={self.lam}: must be finite and >= 0")
        if not 0 < self.h < 1:
            raise ParameterError(f"parameter h={self.h}: the step must be in (0, 1)")
        if self.seed < 0:
            raise ParameterError(f"parameter seed={self.seed}: must be >= 0")


def run(params: Parameters) -> ChapterOutput:
    """Check every architecture without and with BN at step h, recheck networks near a
    ReLU kink at h / 10; tables per architecture, an overview, the glued values."""
    clock = Stopwatch()
    data = recipe.data_spec(params.data_dir, params.smoke).load()
    archs = dict(params.architectures)
    X, y = check_input(data, params.n_samples, params.dims)
    grid = gradient_check_grid(archs, X, y, params.lam, seed=params.seed, h=params.h)
    overview = summary(grid)
    rechecked = recheck(grid, archs, X, y, params.lam, seed=params.seed, h=params.h / 10)
    values = {**key_values(grid, overview, rechecked, params.h),
              "gc_n_samples": params.n_samples, "gc_dims": params.dims, "gc_h": params.h,
              "gc_lam": params.lam,
              "gc_run_note": run_note(params.smoke, len(data.train.y), clock(), "float64",
                                      smoke_detail="the normalisation of that subset")}
    failed = verdicts(grid, rechecked)
    tables = {name: display_table(grid, name, failed) for name in archs}
    tables.update(overview=summary_table(overview),
                  recheck=display_rows(rechecked, with_network=True))
    out = ChapterOutput("gradient_check", params, values, tables,
                        results={"data": recipe.data_summary(data), "summary": overview,
                                 "rows": grid, "recheck": rechecked}, seconds=clock())
    out.save()
    return out
