"""Chapter 5 (how BN helps) on the tiny CIFAR-10 stand-in: the plan, stacks, every glued
key the notebook uses, and the statistics helpers."""

from __future__ import annotations

import math
import re
from pathlib import Path

import nbformat
import numpy as np
import pytest
from trial_fixtures import tiny_data_spec

from kbn.experiments import how_bn_helps as ch
from kbn.experiments.parameters import ParameterError
from kbn.experiments.trainings import Trainings
from kbn.stacking import plan_stacks

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "05_how_bn_helps.ipynb"
SUMMARY = Path(__file__).resolve().parents[1] / "book" / "summary.md"
SMALL = dict(smoke=True, seeds=[0, 1], architectures={"2-layer": [8], "4-layer": [8, 6, 4]},
             eta_max_grid=[0.1, 1.0], alphas=[0.8, 0.95], precise_bn=5, batch_sizes=[20, 100],
             probe=50, progress=False, executor="serial")


_RESULTS: dict = {}


def chapter_results(rows):
    """The trained Result of each row (its training's own numbers)."""
    return [_RESULTS[r.spec] for r in rows]


@pytest.fixture(scope="module")
def chapter(tmp_path_factory):
    """The chapter's plan trained on the tiny data, and its analysis."""
    params = ch.Parameters.from_values(**SMALL)
    spec = tiny_data_spec(tmp_path_factory.mktemp("tiny"))
    rows = ch.plan(params, spec)
    trainings = Trainings(spec, "serial", None, progress=False)
    unique = list(dict.fromkeys(r.spec for r in rows))
    _RESULTS.update(zip(unique, trainings.run(unique)))
    analysis = ch.analyse(params, rows, chapter_results(rows), 400)
    return params, rows, analysis


def test_the_plan_shares_stacks_where_only_per_network_fields_differ(chapter):
    params, rows, _ = chapter
    specs = list(dict.fromkeys(r.spec for r in rows))
    studies = {r.study for r in rows}
    assert studies == {"inside", "placement", "inference", "learning rate", "batch size"}
    stacks = plan_stacks([(s.network, s.train) for s in specs])
    # the deep BN runs of one seed (the recorded inits) in one stack
    deep_bn_seed0 = [i for i, s in enumerate(specs) if s.network.hidden == (8, 6, 4)
                     and s.network.batch_norm and not s.network.bn_after_relu
                     and s.train.seed == 0 and s.train.n_steps == specs[0].train.n_steps
                     and s.train.evals_per_cycle == specs[0].train.evals_per_cycle
                     and s.train.n_batch == 100 and s.train.also_alphas]
    assert any(set(deep_bn_seed0) <= set(st) for st in stacks)
    assert len(deep_bn_seed0) == len(ch.BN_INITS)
    # recorded: the inside study and the BN runs of the batch-size study
    assert all(r.spec.record is not None for r in rows if r.study == "inside")
    batch = [r for r in rows if r.study == "batch size"]
    assert all((r.spec.record is not None) == r.labels["batch_norm"] for r in batch)
    # equal epochs: steps x batch size is constant
    assert len({r.spec.train.n_steps * r.spec.train.n_batch for r in batch}) == 1
    # study 6 trains nothing of its own: every alpha and PreciseBN row is the recorded He
    # run with BN (which keeps the other alphas' averages and computes PreciseBN)
    for arch, hidden in params.architectures.items():
        for seed in params.seeds:
            inf = [r for r in rows if r.study == "inference" and r.labels["architecture"] == arch
                   and r.spec.train.seed == seed]
            he_bn = [r.spec for r in rows if r.study == "inside" and r.labels["architecture"] == arch
                     and r.labels["batch_norm"] and r.labels["init"] == "he"
                     and r.spec.train.seed == seed]
            assert len(he_bn) == 1 and len(inf) == len(params.alphas) + 1
            assert all(r.spec == he_bn[0] for r in inf)
            assert [r.variant for r in inf] == [None, "alpha=0.95", "precise_bn=5"]
            assert he_bn[0].train.also_alphas == (0.95,) and he_bn[0].train.also_precise_bn == 5


def test_the_inference_rows_read_their_variants(chapter):
    """A variant row's numbers are its variant's, the recipe's alpha row the run's own; a
    row whose variant is missing (a mutation of the plan) is refused, not read as the own."""
    params, rows, _ = chapter
    import dataclasses as dc

    spec = next(r.spec for r in rows if r.variant == "alpha=0.95")
    res = next(res for r, res in zip(rows, chapter_results(rows)) if r.spec == spec)
    got = ch.row_results([r for r in rows if r.spec == spec and r.study == "inference"],
                         [res] * (len(params.alphas) + 1))
    assert got[0].test_accuracy == res.test_accuracy
    assert got[1].test_accuracy == res.variants["alpha=0.95"]["test_accuracy"]
    assert got[2].val_accuracy == res.variants["precise_bn=5"]["val_accuracy"]
    with pytest.raises(ValueError, match="has no variant 'alpha=0.95'"):
        ch.row_results([next(r for r in rows if r.variant == "alpha=0.95")],
                       [dc.replace(res, variants={})])


def test_every_glued_key_of_the_notebook_and_summary_is_computed(chapter):
    _, _, analysis = chapter
    values = {**analysis["values"], "run_note": "", "n_seeds": 2, "seeds_text": "",
              "n_trainings": 1}
    text = "\n".join(c.source for c in nbformat.read(NOTEBOOK, as_version=4).cells
                     if c.cell_type == "markdown")
    keys = set(re.findall(r"\{glue:text\}`([^`:]+):", text))
    keys |= set(re.findall(r"executed/05_how_bn_helps\.ipynb::([^`:]+):", SUMMARY.read_text()))
    assert keys and not keys - set(values), sorted(keys - set(values))
    figures = set(re.findall(r"\{glue:figure\} (\w+)", text))
    assert figures == set(analysis["figures"])
    code = "\n".join(c.source for c in nbformat.read(NOTEBOOK, as_version=4).cells
                     if c.cell_type == "code")
    shown = set(re.findall(r'out\.show\("(\w+)"\)', code))
    assert shown - {"runs"} == set(analysis["tables"])
    for key in keys - {"run_note", "n_seeds", "seeds_text", "n_trainings"}:
        spec = re.search(re.escape(key) + r":([^`]+)`", text + SUMMARY.read_text()).group(1)
        format(values[key], spec)  # every value takes the format the text gives it


def test_findings_follow_the_numbers(chapter):
    _, _, analysis = chapter
    v = analysis["values"]
    assert v["finding_landscape"].count(";") == 2  # loss spread, gradient change, beta
    assert "η_max" in v["finding_learning_rate"] or "no usable" in v["finding_learning_rate"]
    lo = v["land_4_beta_ratio_lo"]
    assert ("β-smoothness is larger without BN" in v["finding_landscape"]) == (
        np.isfinite(lo) and lo > 1)
    # the first alpha is the baseline: its paired difference is exactly zero
    assert v["inf_4_alpha_0.8_diff_mean"] == 0.0


def test_a_finding_turns_with_its_number():
    """Mutation: the same sentence generator says the opposite when the interval says so."""
    params = ch.Parameters.from_values(**SMALL)
    archs = params.architectures
    base = {"lr_4_nobn_usable_max": 0.1, "lr_4_bn_usable_max": 1.0,
            "lr_4_nobn_diverges": "a", "lr_4_bn_diverges": "b", "lr_4_top_bn": "40",
            "lr_4_top_nobn": "10", "lr_4_top_verdict": "v", "drift_4_ratio": "r",
            "drift_4_ratio_lo": 2.0}
    for q in ("loss_range", "grad_change", "beta"):
        base.update({f"land_4_{q}_ratio": "x", f"land_4_{q}_ratio_value": 1.2,
                     f"land_4_{q}_ratio_lo": 0.8})
    smooth = ch.findings({**base, "land_4_beta_ratio_value": 3.0, "land_4_beta_ratio_lo": 1.5},
                         archs, "4-layer", params)
    flat = ch.findings(base, archs, "4-layer", params)
    rough = ch.findings({**base, "land_4_beta_ratio_value": 0.3, "land_4_beta_ratio_lo": 0.2,
                         "drift_4_ratio_lo": 0.5}, archs, "4-layer", params)
    assert "β-smoothness is larger without BN" in smooth["finding_landscape"]
    assert "β-smoothness, no BN / BN, is x: not distinguishable" in flat["finding_landscape"]
    assert "β-smoothness is smaller without BN" in rough["finding_landscape"]
    assert "removes most" in smooth["finding_drift"] and "does not show" in rough["finding_drift"]
    assert "is 1 with BN and 0.1 without (10×)" in smooth["finding_learning_rate"]


def test_statistics_helpers():
    m, h, n = ch.ci95([1.0, 2.0, 3.0, float("nan")])
    assert (m, n) == (2.0, 3) and h == pytest.approx(4.303 * 1.0 / math.sqrt(3))
    assert math.isnan(ch.ci95([5.0])[1]) and ch.ci95([])[2] == 0
    r = ch.ratio_ci([10.0, 10.0, 10.0])
    assert r["ratio"] == pytest.approx(10.0) and r["lo"] == pytest.approx(10.0)
    r = ch.ratio_ci([2.0, 8.0])
    assert r["ratio"] == pytest.approx(4.0) and r["lo"] < 4.0 < r["hi"]
    w = ch.welch([50.0, 51.0, 52.0], [40.0, 41.0, 42.0])
    assert w["diff"] == pytest.approx(10.0) and w["beyond_noise"] is True
    assert "not measured" in ch.pm(float("nan"), float("nan"), 0)
    assert ch.pm(1.234, 0.5, 3) == "1.23 ± 0.50 (95 % CI over 3 seeds)"


def test_drift_and_gradient_ratio_by_hand():
    rec = {"unit_mean": [[[0.0, 0.0]], [[1.0, 2.0]], [[2.0, 4.0]]],
           "unit_std": [[[1.0, 1.0]], [[1.0, 1.0]], [[2.0, 0.0]]],
           "grad_norm": [[1.0, 4.0], [2.0, 2.0]]}
    assert ch.drift(rec) == [0.5]  # the dead unit (std 0) is left out: |2 - 1| / 2
    assert ch.first_last_ratio(rec, 0) == 0.25 and ch.first_last_ratio(rec, -1) == 1.0


@pytest.mark.parametrize("name, value, message", [
    ("eta_max_grid", [0.1, -1.0], "learning rates > 0"),
    ("eta_max_grid", [1e-6], "must be >= eta_min"),
    ("alphas", [1.0], "in [0, 1)"),
    ("precise_bn", 0, "must be >= 1"),
    ("batch_sizes", [1, 10], "batch sizes >= 2"),
    ("sigma", 0.0, "finite and > 0"),
    ("seeds", [], "non-empty list"),
])
def test_bad_parameters_are_named(name, value, message):
    with pytest.raises(ParameterError, match=f"parameter {name}") as err:
        ch.Parameters.from_values(**{name: value})
    assert message in str(err.value)


def test_the_learning_rate_figure_marks_diverged_runs():
    """A diverged run (NaN accuracy) is drawn as a cross at the bottom, with its count."""
    import pandas as pd

    from kbn.experiments import how_bn_helps_figures as figs
    runs = pd.DataFrame({"architecture": ["a"] * 4, "batch_norm": [False, False, True, True],
                         "eta_max": [0.1, 1.0, 0.1, 1.0], "test_accuracy": [40.0, np.nan, 41.0, 39.0],
                         "diverged": [False, True, False, False]})
    fig = figs.learning_rate(runs, ["a"])
    ax = fig.axes[0]
    crosses = [c for c in ax.collections if c.get_label() == "no BN: diverged"]
    assert len(crosses) == 1 and crosses[0].get_offsets().tolist() == [[1.0, 0.5]]
    assert [t.get_text() for t in ax.texts] == ["1"]
    assert not [c for c in ax.collections if c.get_label() == "BN: diverged"]
