"""Run-to-run noise: mean +- std over seeds, Student's t, and comparisons with the
original report's single runs (prediction intervals) and between our groups (Welch).

Accuracies are in percent throughout the experiment tables.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import pandas as pd

# 97.5 % quantiles of Student's t (two-sided 95 %), by degrees of freedom
_T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306,
         9: 2.262, 10: 2.228, 11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131,
         16: 2.120, 17: 2.110, 18: 2.101, 19: 2.093, 20: 2.086, 21: 2.080, 22: 2.074,
         23: 2.069, 24: 2.064, 25: 2.060, 26: 2.056, 27: 2.052, 28: 2.048, 29: 2.045,
         30: 2.042, 40: 2.021, 60: 2.000, 120: 1.980}


def t975(dof: float) -> float:
    """97.5 % quantile of Student's t with ``dof`` degrees of freedom (rounded down, so the
    interval errs on the wide side); NaN for dof < 1, 1.96 in the limit."""
    if dof is None or not np.isfinite(dof) or dof < 1:
        return float("nan")
    d = int(dof)
    return _T975[max(k for k in _T975 if k <= d)] if d <= 120 else 1.96


def mean_std(runs: pd.DataFrame, by: Sequence[str], value: str = "test_accuracy") -> pd.DataFrame:
    """One row per group of ``by``: mean, std (sample, ddof=1; NaN for one run), n runs
    with a finite value, and n_diverged (runs whose value is NaN). Group order is kept."""
    by = list(by)
    finite = runs[value].notna()
    g = runs.assign(_finite=finite).groupby(by, sort=False, dropna=False)
    out = g[value].agg(mean="mean", std="std", n="count").reset_index()
    out["n_diverged"] = (g["_finite"].size() - g["_finite"].sum()).to_numpy()
    return out


def format_pm(mean: float, std: float, n: int, digits: int = 2) -> str:
    """'53.62 ± 0.45' for n >= 2 runs, '53.62 (1 run)' for one, 'diverged' if no finite run."""
    if n is None or n == 0 or mean is None or not np.isfinite(mean):
        return "diverged"
    if n < 2 or std is None or not np.isfinite(std):
        return f"{mean:.{digits}f} (1 run)"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def noise_threshold(std: float | None, n: int, dof: float | None = None) -> float:
    """Largest |ours - original| still explained by run-to-run noise.

    The original is one run; ours is the mean of ``n`` runs whose run-to-run std is
    estimated as ``std`` with ``dof`` degrees of freedom (default n - 1). One new run then
    lies within the 95 % prediction interval  mean +- t(dof) * std * sqrt(1 + 1/n), so a
    difference up to that half-width is noise. NaN when the spread is unknown.
    """
    dof = n - 1 if dof is None else dof
    t = t975(dof)
    if std is None or not np.isfinite(std) or n < 1 or not np.isfinite(t):
        return float("nan")
    return t * float(std) * math.sqrt(1.0 + 1.0 / n)


def compare(ours: float, ref: float, std: float | None, n: int,
            noise_source: str = "our seeds", dof: float | None = None) -> dict[str, Any]:
    """Our value (mean of n runs, run-to-run ``std`` with ``dof`` degrees of freedom,
    default n - 1) beside the original's single run.

    Returns ours, ref, diff (= ours - ref), threshold (:func:`noise_threshold`), within
    (True/False, or None if the spread is unknown) and verdict, a sentence for the book.
    """
    diff = float(ours) - float(ref) if np.isfinite(ours) else float("nan")
    thr = noise_threshold(std, n, dof)
    if not np.isfinite(diff):
        within, verdict = False, "our runs diverged: no comparison"
    elif not np.isfinite(thr):
        within, verdict = None, "run-to-run noise not measured (a single run)"
    else:
        within = bool(abs(diff) <= thr)
        word, sign = ("within", "≤") if within else ("outside", ">")
        verdict = (f"{word} run-to-run noise: |difference| = {abs(diff):.2f} {sign} {thr:.2f}, "
                   f"the 95 % prediction interval from the spread over {noise_source}")
    return {"ours": float(ours), "ref": float(ref), "diff": diff, "threshold": thr,
            "within": within, "verdict": verdict}


def difference_of_means(m1: float, s1: float, n1: int, m2: float, s2: float, n2: int) -> dict[str, Any]:
    """m1 - m2, its 95 % confidence interval and whether it excludes zero (Welch: the
    half-width is t(dof) * se, with se = sqrt(s1^2/n1 + s2^2/n2) and Welch-Satterthwaite
    dof). ci_low/ci_high are NaN and beyond_noise None if either group has fewer than 2 runs.
    """
    diff = float(m1 - m2)
    nan = float("nan")
    if n1 < 2 or n2 < 2 or not (np.isfinite(s1) and np.isfinite(s2)):
        return {"diff": diff, "std_error": nan, "threshold": nan, "dof": nan,
                "ci_low": nan, "ci_high": nan, "beyond_noise": None}
    v1, v2 = s1 ** 2 / n1, s2 ** 2 / n2
    se = math.sqrt(v1 + v2)
    if se == 0:
        return {"diff": diff, "std_error": 0.0, "threshold": 0.0, "dof": nan,
                "ci_low": diff, "ci_high": diff, "beyond_noise": diff != 0}
    dof = (v1 + v2) ** 2 / (v1 ** 2 / (n1 - 1) + v2 ** 2 / (n2 - 1))
    thr = t975(dof) * se
    return {"diff": diff, "std_error": se, "threshold": thr, "dof": dof,
            "ci_low": diff - thr, "ci_high": diff + thr, "beyond_noise": bool(abs(diff) > thr)}


def compare_difference(m1: float, s1: float, n1: int, m2: float, s2: float, n2: int,
                       ref: float) -> dict[str, Any]:
    """Our difference of means m1 - m2 beside the original's ``ref``, the difference of its
    two single runs. Like :func:`compare`, a difference counts as noise when ``ref`` lies in
    the 95 % prediction interval of one new pair of runs: half-width
    t(dof) * sqrt(s1^2 (1 + 1/n1) + s2^2 (1 + 1/n2)), Welch-Satterthwaite dof."""
    diff = float(m1 - m2) - float(ref)
    if n1 < 2 or n2 < 2 or not (np.isfinite(s1) and np.isfinite(s2)):
        return {"diff": diff, "threshold": float("nan"), "within": None,
                "verdict": "run-to-run noise not measured (a single seed)"}
    a, b = s1 ** 2 * (1 + 1 / n1), s2 ** 2 * (1 + 1 / n2)
    if a + b == 0:
        thr = 0.0
    else:
        dof = (a + b) ** 2 / (a ** 2 / (n1 - 1) + b ** 2 / (n2 - 1))
        thr = t975(dof) * math.sqrt(a + b)
    within = bool(abs(diff) <= thr)
    word, sign = ("within", "≤") if within else ("outside", ">")
    return {"diff": diff, "threshold": thr, "within": within,
            "verdict": (f"{word} run-to-run noise: |difference| = {abs(diff):.2f} {sign} {thr:.2f}, "
                        f"the 95 % prediction interval of one pair of runs from our seeds")}


def format_ci(low: float, high: float, digits: int = 2) -> str:
    """'[+1.20, +3.40]' (signed), or 'not measured' when the interval is unknown."""
    if not (np.isfinite(low) and np.isfinite(high)):
        return "not measured"
    return f"[{low:+.{digits}f}, {high:+.{digits}f}]"


def seeds_to_resolve(diff: float, s1: float, s2: float) -> int | None:
    """Seeds per group at which a true difference ``diff`` (with run-to-run stds s1, s2)
    would put zero outside the 95 % interval about half of the time: the smallest n with
    t(2n - 2) * sqrt((s1^2 + s2^2) / n) <= |diff|. None if not computable."""
    if not all(np.isfinite(v) for v in (diff, s1, s2)) or diff == 0:
        return None
    for n in range(2, 1001):
        if t975(2 * n - 2) * math.sqrt((s1 ** 2 + s2 ** 2) / n) <= abs(diff):
            return n
    return None


def gain_verdict(d: dict[str, Any], what: str = "the gain", unit: str = "points") -> str:
    """A sentence saying whether the interval of :func:`difference_of_means` resolves the
    sign of ``what`` (zero outside it) or not."""
    if d["beyond_noise"] is None:
        return f"{what}: run-to-run noise not measured (a single seed), so not resolved"
    ci = format_ci(d["ci_low"], d["ci_high"])
    if d["beyond_noise"]:
        sign = "positive" if d["diff"] > 0 else "negative"
        return f"resolved: {what} is {sign}, 95 % interval {ci} {unit} (Welch)"
    return f"not resolved: the 95 % interval {ci} {unit} (Welch) includes zero"
