"""Fast checks of kbn.experiments on small synthetic data (no CIFAR-10 needed)."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from trial_fixtures import tiny_data_spec

from kbn.network import Network
from kbn import NetworkConfig, SearchConfig, TrainConfig
from kbn.experiments import bn_ablation as ab
from kbn.experiments import gradient_check as gc
from kbn.experiments import how_bn_helps as hb
from kbn.experiments import lambda_search as ls
from kbn.experiments import recipe, results
from kbn.experiments import sigma_sensitivity as ss
from kbn.experiments import stats as tables
from kbn.experiments.display import Table, plain, run_note
from kbn.experiments.reference import DESCRIPTION, REFERENCE
from kbn.experiments.trainings import Trainings
from kbn.search import lambda_search

TINY = TrainConfig(n_batch=50, n_s=10, n_cycles=1, evals_per_cycle=2, lam=1e-3)


@pytest.fixture
def trainings(tmp_path):
    """Every training of a test through one recorder, on the tiny CIFAR-10 stand-in."""
    return Trainings(tiny_data_spec(tmp_path), executor="serial", progress=False)


# ---------------------------------------------------------------- reference values
def test_reference_values_hang_together():
    """The original's numbers are typed once (reference.py); what ties them to each other
    is checked here, not their values again: the text's 17 % is the drop of its own
    Table 2, Table 5's lambda is the best fine lambda, and sigma = 1e-1 with BN there is
    the best lambda's run (same accuracy)."""
    drop = 100 * (REFERENCE["ablation_3_nobn"] - REFERENCE["ablation_9_nobn"]) / REFERENCE["ablation_3_nobn"]
    assert round(drop) == REFERENCE["text_depth_drop_nobn_pct"]
    assert REFERENCE["sigma_lambda"] == REFERENCE["best_lambda"]
    assert REFERENCE["sigma_1e-1_bn"] == REFERENCE["best_lambda_test"]
    assert REFERENCE["coarse_best_test"] < REFERENCE["best_lambda_test"]  # fine beat coarse
    assert set(DESCRIPTION) == set(REFERENCE)
    # every Table 5 cell the chapter compares has its original value
    assert {ss.reference_key("sigma", s, bn) for s in ss.SIGMAS for bn in (False, True)} <= set(REFERENCE)


# ---------------------------------------------------------------- tables
def test_mean_std_matches_numpy_and_counts_diverged():
    runs = pd.DataFrame({"arch": ["a", "a", "a", "b", "b", "c"],
                         "bn": [True, True, True, False, False, True],
                         "test_accuracy": [50.0, 52.0, 57.0, 40.0, np.nan, 30.0]})
    s = tables.mean_std(runs, ["arch", "bn"])
    assert list(s["arch"]) == ["a", "b", "c"]  # group order kept
    a = s.iloc[0]
    assert a["mean"] == pytest.approx(np.mean([50, 52, 57]))
    assert a["std"] == pytest.approx(np.std([50, 52, 57], ddof=1))
    assert a["n"] == 3 and a["n_diverged"] == 0
    b = s.iloc[1]
    assert b["mean"] == 40.0 and b["n"] == 1 and b["n_diverged"] == 1 and math.isnan(b["std"])
    assert math.isnan(s.iloc[2]["std"])  # one run: the spread is unknown, not zero


def test_format_pm():
    assert tables.format_pm(53.617, 0.4512, 3) == "53.62 ± 0.45"
    assert tables.format_pm(53.617, float("nan"), 1) == "53.62 (1 run)"
    assert tables.format_pm(float("nan"), float("nan"), 0) == "diverged"


def test_t_quantiles():
    assert tables.t975(2) == pytest.approx(4.303) and tables.t975(2.9) == pytest.approx(4.303)
    assert tables.t975(45) == pytest.approx(2.021) and tables.t975(1000) == 1.96
    assert math.isnan(tables.t975(0.5)) and math.isnan(tables.t975(float("nan")))


def test_compare_uses_a_prediction_interval():
    # one new run vs the mean of n: half-width t(n-1) * s * sqrt(1 + 1/n)
    thr = tables.noise_threshold(0.5, 3)
    assert thr == pytest.approx(4.303 * 0.5 * math.sqrt(1 + 1 / 3))
    assert tables.noise_threshold(0.5, 1, dof=2) == pytest.approx(4.303 * 0.5 * math.sqrt(2))
    inside = tables.compare(53.6, 53.14, 0.5, 3)
    assert inside["within"] is True and inside["diff"] == pytest.approx(0.46)
    assert inside["verdict"].startswith("within run-to-run noise")
    outside = tables.compare(47.1, 44.02, 0.3, 3)
    assert outside["within"] is False and outside["verdict"].startswith("outside")
    single = tables.compare(50.0, 53.0, float("nan"), 1)
    assert single["within"] is None and "not measured" in single["verdict"]
    assert tables.compare(50.0, 53.0, 0.5, 1)["within"] is None  # 1 run: no dof of its own
    diverged = tables.compare(float("nan"), 53.0, 0.5, 3)
    assert diverged["within"] is False and "diverged" in diverged["verdict"]


def test_difference_of_means_welch():
    d = tables.difference_of_means(51.4, 0.5, 3, 46.1, 3.4, 3)
    se = math.sqrt(0.5 ** 2 / 3 + 3.4 ** 2 / 3)
    assert d["diff"] == pytest.approx(5.3) and d["std_error"] == pytest.approx(se)
    assert d["beyond_noise"] is False  # dof ~ 2: t ~ 4.3, threshold ~ 8.5 points
    assert tables.difference_of_means(53.6, 0.2, 3, 53.0, 0.1, 3)["beyond_noise"] is True
    assert tables.difference_of_means(1, 0.1, 1, 0, 0.1, 3)["beyond_noise"] is None


# ---------------------------------------------------------------- results, recipe, display
def test_welch_interval_and_verdicts():
    # equal spreads and sizes: Welch's dof is 2n - 2 and the half-width t * sqrt(2 s^2 / n)
    d = tables.difference_of_means(54.0, 0.4, 5, 53.0, 0.4, 5)
    half = tables.t975(8) * math.sqrt(2 * 0.4 ** 2 / 5)
    assert d["dof"] == pytest.approx(8.0)
    assert (d["ci_low"], d["ci_high"]) == pytest.approx((1.0 - half, 1.0 + half))
    assert d["beyond_noise"] is True and tables.gain_verdict(d).startswith(
        "resolved: the gain is positive, 95 % interval [+0.42, +1.58]")
    loss = tables.difference_of_means(53.0, 0.4, 5, 54.0, 0.4, 5)
    assert tables.gain_verdict(loss).startswith("resolved: the gain is negative")
    wide = tables.difference_of_means(51.4, 0.5, 3, 46.1, 3.4, 3)
    assert wide["ci_low"] < 0 < wide["ci_high"]
    assert tables.gain_verdict(wide).startswith("not resolved: the 95 % interval [")
    one = tables.difference_of_means(51.4, float("nan"), 1, 46.1, 3.4, 3)
    assert one["beyond_noise"] is None and math.isnan(one["ci_low"])
    assert "not resolved" in tables.gain_verdict(one) and tables.format_ci(one["ci_low"], 1) == "not measured"
    # seeds that would resolve a gain of 5.3 with stds 0.5 and 3.4: the first n that works
    n = tables.seeds_to_resolve(5.3, 0.5, 3.4)
    ok = lambda k: tables.t975(2 * k - 2) * math.sqrt((0.5 ** 2 + 3.4 ** 2) / k) <= 5.3
    assert ok(n) and not ok(n - 1)
    assert tables.seeds_to_resolve(0.0, 0.5, 3.4) is None


def test_a_difference_beside_the_original_uses_one_pair_of_runs():
    c = tables.compare_difference(54.0, 0.4, 5, 53.0, 0.6, 5, ref=0.19)
    a, b = 0.4 ** 2 * 1.2, 0.6 ** 2 * 1.2
    dof = (a + b) ** 2 / (a ** 2 / 4 + b ** 2 / 4)
    assert c["diff"] == pytest.approx(1.0 - 0.19)
    assert c["threshold"] == pytest.approx(tables.t975(dof) * math.sqrt(a + b))
    assert c["within"] is True and c["verdict"].startswith("within")
    assert tables.compare_difference(54.0, 0.1, 5, 53.0, 0.1, 5, ref=7.73)["within"] is False
    assert tables.compare_difference(54.0, 0.1, 1, 53.0, 0.1, 5, ref=7.73)["within"] is None


def test_the_texts_claims_beside_ours():
    summary = _ablation_summary({False: 53.0, True: 53.6}, {False: 0.2, True: 0.2},
                                {False: 44.0, True: 51.4}, {False: 0.4, True: 0.5}, n=5)
    v = ab.key_values(summary, {"3-layer": [50, 50], "9-layer": [50] * 8}, [0, 1, 2, 3, 4])
    d = tables.difference_of_means(53.0, 0.2, 5, 44.0, 0.4, 5)
    assert v["text_drop_ours"] == pytest.approx(100 * 9.0 / 53.0)
    assert v["text_drop_ci"] == tables.format_ci(100 * d["ci_low"] / 53.0, 100 * d["ci_high"] / 53.0)
    assert v["text_drop_ref"] == REFERENCE["text_depth_drop_nobn_pct"]
    assert v["text_drop_verdict"].startswith("the original's 17 % lies inside")  # 16.98 %
    assert v["text_gain_ours"] == pytest.approx(0.6) and v["text_gain_ref"] == REFERENCE["text_gain_3"]
    g = tables.difference_of_means(53.6, 0.2, 5, 53.0, 0.2, 5)
    assert g["ci_high"] < 1.0 and g["ci_low"] > 0.19
    assert ("the text's 1 point lies outside" in v["text_gain_verdict"]
            and "the 0.19 of the original's own Table 2 lies outside" in v["text_gain_verdict"])
    deeper = _ablation_summary({False: 53.0, True: 53.6}, {False: 0.2, True: 0.2},
                               {False: 40.0, True: 51.4}, {False: 0.4, True: 0.5}, n=5)
    v = ab.key_values(deeper, {"3-layer": [50, 50], "9-layer": [50] * 8}, [0, 1, 2, 3, 4])
    assert "lies outside" in v["text_drop_verdict"]


def test_to_jsonable_and_results_roundtrip(tmp_path):
    payload = {"a": np.float32(1.5), "b": np.int64(3), "c": float("nan"), "d": np.arange(3),
               "e": pd.DataFrame({"x": [1.0, np.nan]}), "cfg": TrainConfig(),
               "net": NetworkConfig(hidden=(5,)), "flag": np.bool_(True), "p": tmp_path}
    path = results.write_results(tmp_path, "x", payload)
    back = json.loads(path.read_text())  # strict JSON: NaN became null
    assert back["a"] == 1.5 and back["b"] == 3 and back["c"] is None and back["d"] == [0, 1, 2]
    assert back["e"] == [{"x": 1.0}, {"x": None}]
    assert TrainConfig.from_dict(back["cfg"]) == TrainConfig()
    assert back["net"]["hidden"] == [5] and back["flag"] is True
    assert results.read_results(tmp_path, "x") == back
    assert results.read_results(tmp_path, "missing") is None
    assert not list(tmp_path.glob(".*tmp"))  # written atomically, no temporary left


def test_train_config_smoke_and_overrides():
    full = recipe.train_config({"lam": 0.01})
    assert full == TrainConfig(lam=0.01)
    smoke = recipe.train_config({"lam": 0.01}, smoke=True)
    assert smoke.lam == 0.01 and smoke.n_steps < full.n_steps / 50
    with pytest.raises(ValueError, match="unknown"):
        recipe.train_config({"lambda": 0.01})


def test_plain_converts_numpy_scalars():
    assert type(plain(np.float64(1.0))) is float
    assert type(plain(np.int32(2))) is int
    assert plain("x") == "x"


def test_tables_show_no_index():
    df = pd.DataFrame({"network": ["3-layer", "9-layer"], "acc": [53.123456, np.nan]})
    html = Table(df)._repr_html_()
    assert "<th>network</th>" in html and "<th></th>" not in html
    assert html.count("<tr") == 3 and "<td>0</td>" not in html and "<th>0</th>" not in html
    assert "53.1235" in html and "–" in html  # 4 decimals, NaN shown as a dash
    assert repr(Table(df)).splitlines()[0].split() == ["network", "acc"]


# ---------------------------------------------------------------- gradient check
@pytest.fixture
def check_data():
    rng = np.random.default_rng(0)
    return rng.standard_normal((12, 6)), rng.integers(0, 10, 12)


def test_gradient_check_rows_and_zero_gradient_flags(check_data):
    X, y = check_data
    df = gc.gradient_check([8, 7], True, X, y, lam=0.01, seed=1)
    # per path: W, b, gamma, beta for the 2 hidden layers, W, b for the output layer
    keys = ["W1", "b1", "gamma1", "beta1", "W2", "b2", "gamma2", "beta2", "W3", "b3"]
    assert list(df["path"]) == ["reference"] * 10 + ["training"] * 10
    assert list(df["key"]) == keys * 2
    assert list(df["shape"][:2]) == ["6x8", "8"]
    flagged = df[df["zero_gradient"]]
    assert list(flagged["key"]) == ["b1", "b2"] * 2  # hidden biases under BN, never the output's
    assert (flagged["note"] == gc.ZERO_GRAD_NOTE).all()
    assert (flagged["max_abs_gradient"] < gc.ZERO_GRAD_TOL).all()
    live = df[~df["zero_gradient"]]
    assert (live["max_abs_error"] < 1e-7).all()
    no_bn = gc.gradient_check([8, 7], False, X, y, lam=0.01, seed=1)
    assert len(no_bn) == 12 and not no_bn["zero_gradient"].any()


def test_kink_margin_is_the_smallest_relu_input(check_data):
    X, y = check_data
    net = Network.create(NetworkConfig(hidden=(5,), batch_norm=False), 6, 10,
                         np.random.default_rng(0), np.float64)
    p = net.params
    assert gc.kink_margin(net, X) == np.abs(X @ p["W1"] + p["b1"]).min() > 0
    p["b1"][2] = -(X[3] @ p["W1"][:, 2])  # sample 3 sits exactly on unit 2's kink
    assert gc.kink_margin(net, X) == pytest.approx(0.0, abs=1e-15)


def test_gradient_check_grid_summary_and_display(check_data):
    X, y = check_data
    archs = {"2-layer": [8], "3-layer": [8, 6]}  # no ReLU input exactly at its kink
    grid = gc.gradient_check_grid(archs, X, y, lam=0.01)
    s = gc.summary(grid)
    assert len(s) == 8 and list(s["batch_norm"]) == [False, False, True, True] * 2
    assert list(s["path"]) == ["reference", "training"] * 4
    assert list(s["n_zero_gradient"]) == [0, 0, 1, 1, 0, 0, 2, 2]
    t = gc.display_table(grid, "3-layer")
    assert list(t.columns) == ["BN", "gradient", "layer", "parameter", "shape",
                               "max rel. error", "max abs. error", "max |gradient|", "note",
                               "verdict"]
    assert len(t) == 2 * (6 + 10) and t["parameter"].iloc[0] == "W1"
    assert (t["verdict"] == "ok").all()
    again = gc.recheck(grid, archs, X, y, lam=0.01, h=1e-6)
    # the recheck redoes every network near a kink at the smaller step, and only those
    near = s[s["near_kink"]][["architecture", "batch_norm"]].drop_duplicates()
    assert len(again) == sum(len(grid[(grid["architecture"] == a) & (grid["batch_norm"] == b)])
                             for a, b in near.itertuples(index=False))
    assert (again["h"] == 1e-6).all() and set(again["architecture"]) <= set(archs)


def test_verdicts_fail_large_errors_unless_tiny_or_rechecked(check_data):
    X, y = check_data
    grid = gc.gradient_check_grid({"2-layer": [5]}, X, y, lam=0.01)
    assert not gc.verdicts(grid).any()
    wrong = grid.copy()
    wrong.loc[3, ["max_rel_error", "max_abs_error"]] = [0.5, 1e-3]  # a real error: FAIL
    wrong.loc[4, ["max_rel_error", "max_abs_error"]] = [0.5, 1e-12]  # a tiny entry: ok
    wrong.loc[5, "max_abs_error"] = float("nan")  # not measured: FAIL
    assert list(np.flatnonzero(gc.verdicts(wrong))) == [3, 5]
    # a network near a kink is judged by its recheck at the smaller step
    again = grid[grid.index == 3].copy()
    assert list(np.flatnonzero(gc.verdicts(wrong, again))) == [5]


# ---------------------------------------------------------------- BN ablation
def test_ablation_runs_summary_and_table(trainings):
    archs = {"3-layer": [8, 8], "4-layer": [8, 6, 6]}
    runs, results = ab.run_ablation(trainings, archs, [0, 1], TINY)
    assert len(runs) == len(results) == 2 * 2 * 2
    assert set(runs.columns) >= {"architecture", "n_layers", "batch_norm", "seed",
                                 "test_accuracy", "val_accuracy", "wall_time", "diverged"}
    assert runs["test_accuracy"].between(0, 100).all()
    s = ab.summarise(runs)
    assert len(s) == 4 and (s["n"] == 2).all()
    one = runs[(runs["architecture"] == "3-layer") & runs["batch_norm"]]["test_accuracy"]
    row = s[(s["architecture"] == "3-layer") & s["batch_norm"]].iloc[0]
    assert row["mean"] == pytest.approx(one.mean()) and row["std"] == pytest.approx(one.std(ddof=1))
    assert row["reference"] == REFERENCE["ablation_3_bn"]
    assert s[s["architecture"] == "4-layer"]["reference"].isna().all()
    t = ab.display_table(s)
    assert list(t["network"]) == ["3-layer", "4-layer"]
    assert list(t.columns) == ["network", "no BN: ours (%)", "no BN: original (%)",
                               "BN: ours (%)", "BN: original (%)", "BN gain (points)",
                               "95 % interval (Welch)"]
    assert "±" in t.iloc[0]["BN: ours (%)"] and t.iloc[0]["BN: ours (%)"].endswith("(n = 2)")
    assert set(ab.comparisons(s)) == {"ablation_3_nobn", "ablation_3_bn"}
    g = ab.bn_gain(s, "3-layer")
    assert g["gain"] == pytest.approx(row["mean"] - s.iloc[0]["mean"])
    assert t.iloc[0]["95 % interval (Welch)"] == tables.format_ci(g["ci_low"], g["ci_high"])
    h = ab.histories(runs, results, "4-layer")
    assert set(h) == {"no BN", "BN"} and len(h["BN"]) == 2 and "val_loss" in h["BN"][0]


def test_extra_seeds_train_the_no_bn_network_only(trainings):
    archs = {"3-layer": [8, 8], "4-layer": [8, 6, 6]}
    runs, _ = ab.run_ablation(trainings, archs, [0, 1], TINY, {"4-layer": [2, 3]})
    n = runs.groupby(["architecture", "batch_norm"])["seed"].apply(list).to_dict()
    assert n == {("3-layer", False): [0, 1], ("3-layer", True): [0, 1],
                 ("4-layer", False): [0, 1, 2, 3], ("4-layer", True): [0, 1]}
    g = ab.bn_gain(ab.summarise(runs), "4-layer")
    assert (g["n_bn"], g["n_nobn"]) == (2, 4)


# ---------------------------------------------------------------- lambda search
def test_lambda_search_tables_choose_on_validation(trainings):
    search = lambda_search(NetworkConfig(hidden=(8,)), TINY, trainings.data,
                           SearchConfig(n_coarse=3, n_fine=2, seed=1), run=trainings.run)
    trials = ls.trials_table(search)
    assert list(trials["stage"]) == ["coarse"] * 3 + ["fine"] * 2
    assert list(trials["trial"]) == [1, 2, 3, 1, 2]
    assert trials["chosen"].sum() == 1
    chosen = trials[trials["chosen"]].iloc[0]
    assert chosen["val_accuracy"] == trials["val_accuracy"].max()
    assert chosen["lambda"] == search.best.lam
    coarse = ls.stage_table(trials, "coarse")
    assert len(coarse) == 3 and list(coarse.columns)[:2] == ["lambda", "log10 lambda"]
    lams = [float(v) for v in coarse["lambda"]]
    assert lams == sorted(lams)
    rng = ls.search_range(search)
    assert rng["coarse_range"] == [-5.0, -1.0] and len(rng["fine_range"]) == 2
    before = trainings.n_runs
    final = ls.confirm(trainings, NetworkConfig(hidden=(8,)), TINY,
                       {"chosen": search.best.lam, "original": 3e-3}, [1, 2])
    assert list(final["lambda_of"]) == ["chosen", "chosen", "original", "original"]
    assert list(final["seed"]) == [1, 2, 1, 2] and list(final["lam"]) == [search.best.lam] * 2 + [3e-3] * 2
    # fresh runs: every confirmation is trained, none is the search trial (seed 0)
    assert trainings.n_runs == before + 4
    assert all(r.spec.train.seed in (1, 2) for r in trainings.records[before:])


def test_the_confirmation_seeds_must_be_fresh():
    with pytest.raises(ParameterError, match=r"final_seeds=\[0, 1\] contains seed=0.*fresh seeds"):
        ls.Parameters.from_values(final_seeds=[0, 1])
    assert ls.Parameters.from_values(final_seeds=[0, 1], seed=7).seed == 7


def test_chosen_lambda_reads_results_of_the_same_mode_or_falls_back(tmp_path):
    lam, source = ls.chosen_lambda(tmp_path, 0.005, smoke=False)
    assert lam == 0.005 and "no λ-search results" in source and str(tmp_path) in source
    results.write_results(tmp_path, ls.NAME, {"smoke": False, "best": {"lambda": 0.0031}})
    lam, source = ls.chosen_lambda(tmp_path, 0.005, smoke=False)
    assert lam == 0.0031 and "validation" in source and "lambda_search.json" in source
    # a smoke run's lambda never feeds a full run (and the other way round)
    lam, source = ls.chosen_lambda(tmp_path, 0.005, smoke=True)
    assert lam == 0.005 and "a full run" in source


# ---------------------------------------------------------------- sigma sensitivity
def _sigma_params(**changes):
    base = dict(hidden=[8, 8], deep_hidden=[6] * 8, sigmas=[1e-1, 1e-3, 1e-4], extra_inits=["he"],
                race_lambdas=[1e-3, 2e-2], n_batch=50, n_s=10, n_cycles=1, executor="serial")
    return ss.Parameters.from_values(**{**base, **changes})


def _sigma_runs(trainings, seeds=(0,), **changes):
    params = _sigma_params(**changes)
    labelled = list(ss.grid_specs(params, {ss.ORIGINAL: 3e-3, ss.CHOSEN: 8e-3, ss.TABLE2: 5e-3},
                                  list(seeds)))
    return trainings.grid(labelled)


def test_sigma_grid_stacks_every_variant_of_a_seed(trainings):
    """Table 5 at two lambdas, He at ours, the race, the 9-layer grid: per seed, the
    3-layer runs of one BN setting share their stack key (they differ only in sigma, init
    or lambda), so they train as stacks, not one by one."""
    from kbn.stacking import stack_key

    params = _sigma_params()
    labelled = list(ss.grid_specs(params, {ss.ORIGINAL: 3e-3, ss.CHOSEN: 8e-3, ss.TABLE2: 5e-3}, [0, 1]))
    three = [(lab, net, tr) for lab, net, tr in labelled if lab["architecture"] == "3-layer"]
    # per seed: 3 sigmas x 2 lambdas x 2 BN + He at ours x 2 BN + 2 race lambdas (no BN)
    assert len(three) == 2 * (3 * 2 * 2 + 2 + 2)
    keys = {(lab["batch_norm"], tr.seed): stack_key(net, tr) for lab, net, tr in three}
    for lab, net, tr in three:
        assert stack_key(net, tr) == keys[(lab["batch_norm"], tr.seed)]
    assert len(set(keys.values())) == 4  # (BN, seed) pairs: 4 stacks' worth of groups
    race = [tr.lam for lab, net, tr in three if lab["lambda_of"] == ss.RACE and tr.seed == 0]
    assert sorted(race) == [1e-3, 2e-2]
    deep = [lab for lab, net, tr in labelled if lab["architecture"] == "9-layer"]
    assert {tr.lam for lab, net, tr in labelled if lab["architecture"] == "9-layer"} == {5e-3}
    # the 9-layer grid: deep_sigmas (0.1, the claim it tests) and He, with and without BN
    assert len(deep) == 2 * 2 * 2 and {d["initialisation"] for d in deep} == {"σ = 1e-01", "He"}


def test_sigma_grid_tables(trainings):
    inits = ss.inits([1e-1, 1e-4], ["he"])
    assert [ss.init_label(**i) for i in inits] == ["σ = 1e-01", "σ = 1e-04", "He"]
    runs, results = _sigma_runs(trainings, sigmas=[1e-1, 1e-4], race_lambdas=[1e-3])
    s = ss.summarise(runs)
    t = ss.display_table(s, "3-layer", (ss.ORIGINAL, ss.CHOSEN), with_reference=True)
    assert list(t["initialisation"]) == ["σ = 1e-01", "σ = 1e-04", "He"]
    assert list(t.columns) == ["initialisation", "no BN: original (%)",
                               "no BN, original's λ = 3.00e-03 (%)", "BN: original (%)",
                               "BN, original's λ = 3.00e-03 (%)", "no BN, our λ = 8.00e-03 (%)",
                               "BN, our λ = 8.00e-03 (%)"]
    assert t.iloc[1]["no BN: original (%)"] == f"{REFERENCE['sigma_1e-4_nobn']:.2f}"
    assert t.iloc[2]["no BN, original's λ = 3.00e-03 (%)"] == "not run"  # He: at ours only
    comps = ss.comparisons(s, "3-layer", noise={False: (0.4, 3), True: (0.5, 3)})
    assert set(comps) == {"sigma_1e-1_nobn", "sigma_1e-1_bn", "sigma_1e-4_nobn", "sigma_1e-4_bn"}
    at_original = ss.cell(s, "3-layer", "σ = 1e-04", True, ss.ORIGINAL)
    assert comps["sigma_1e-4_bn"]["ours"] == at_original["mean"] and at_original["lam"] == 3e-3
    assert comps["sigma_1e-4_bn"]["ref"] == REFERENCE["sigma_1e-4_bn"]
    assert "BN-ablation" in comps["sigma_1e-4_bn"]["verdict"]  # borrowed spread is named
    h = ss.histories(runs, results, "3-layer", ss.CHOSEN)
    assert list(h) == ["σ = 1e-01", "σ = 1e-04", "He"] and set(h["He"]) == {"no BN", "BN"}
    deep = ss.display_table(s, "9-layer", (ss.TABLE2,))
    assert list(deep.columns) == ["initialisation", "no BN, λ of Table 2 = 5.00e-03 (%)",
                                  "BN, λ of Table 2 = 5.00e-03 (%)"]


def _race(rows):
    return pd.DataFrame([{"lam": lam, "seed": seed, "lambda_of": "race", "test_accuracy": acc}
                         for lam, seed, acc in rows]).assign(
        escaped=lambda d: d["test_accuracy"] > ss.ESCAPED)


def test_race_values_find_where_training_stops_escaping():
    race = _race([(1e-3, 0, 52.0), (1e-3, 1, 51.0), (3e-3, 0, 52.5), (3e-3, 1, 51.5),
                  (6e-3, 0, 50.0), (6e-3, 1, 10.0), (8e-3, 0, 10.0), (8e-3, 1, 10.0),
                  (1.2e-2, 0, 10.0), (1.2e-2, 1, 10.0)])
    v = ss.race_values(race, 3e-3, 8e-3)
    assert (v["race_escaped_original"], v["race_runs_original"]) == (2, 2)
    assert (v["race_escaped_ours"], v["race_runs_ours"]) == (0, 2)
    assert v["race_mean_original"] == pytest.approx(52.0) and v["race_mean_ours"] == 10.0
    assert v["race_largest_all_escape"] == 3e-3 and v["race_smallest_none_escape"] == 8e-3
    assert "every seed escapes up to λ = 3.00e-03 and none from λ = 8.00e-03 on" in v["race_text"]
    # a lambda where no seed escapes BELOW one where all do is not "where it stops"
    odd = _race([(1e-3, 0, 10.0), (3e-3, 0, 50.0), (8e-3, 0, 10.0)])
    assert ss.race_values(odd, 3e-3, 8e-3)["race_smallest_none_escape"] == 8e-3
    none = _race([(1e-3, 0, 10.0), (3e-3, 0, 10.0)])
    assert "no λ tried lets every seed escape" in ss.race_values(none, 3e-3, 1e-3)["race_text"]


def test_race_table_takes_the_sigma_1e3_no_bn_runs_at_every_lambda(trainings):
    runs, _ = _sigma_runs(trainings, sigmas=[1e-3], extra_inits=[], deep_hidden=[])
    race = ss.race_table(runs)
    # the race's two lambdas and Table 5's two, for the one seed
    assert sorted(race["lam"]) == [1e-3, 3e-3, 8e-3, 2e-2]
    assert set(race["lambda_of"]) == {ss.RACE, ss.ORIGINAL, ss.CHOSEN}
    assert list(race["escaped"]) == list(race["test_accuracy"] > ss.ESCAPED)
    shown = ss.race_display(race)
    assert list(shown["λ"]) == ["1.00e-03", "3.00e-03", "8.00e-03", "2.00e-02"]


def _summary(sigma01, he):
    rows = [("9-layer", "σ = 1e-01", sigma01), ("9-layer", "He", he), ("9-layer", "Xavier", 35.0)]
    return pd.DataFrame([{"architecture": a, "initialisation": i, "batch_norm": False,
                          "lambda_of": ss.TABLE2, "mean": m, "std": np.nan, "n": 1}
                         for a, i, m in rows])


def test_deep_sigma_claim_verdicts():
    at_chance = ss.deep_sigma_claim(_summary(10.0, 47.0))
    assert at_chance["near_chance"] and "cannot have produced" in at_chance["verdict"]
    assert at_chance["reference"] == REFERENCE["ablation_9_nobn"]
    assert at_chance["he_nobn"] == 47.0 and at_chance["xavier_nobn"] == 35.0
    trained = ss.deep_sigma_claim(_summary(44.5, 47.0))
    assert not trained["near_chance"] and "close to" in trained["verdict"]


# ---------------------------------------------------------------- glued values
def test_gradient_check_key_values(check_data):
    X, y = check_data
    archs = {"3-layer": [8, 6]}
    grid = gc.gradient_check_grid(archs, X, y, lam=0.01)
    s = gc.summary(grid)
    again = gc.recheck(grid, archs, X, y, lam=0.01)
    v = gc.key_values(grid, s, again, h=1e-5)
    assert v["gc_n_zero"] == 4 and v["gc_zero_max_abs_gradient"] < gc.ZERO_GRAD_TOL
    assert v["gc_n_fail"] == 0 and v["gc_n_rows"] == len(grid) == 2 * (6 + 10)
    for bn in (False, True):  # the per-network worst is what the rows say
        rows = (again if s[s["batch_norm"] == bn]["near_kink"].any() else grid)
        rows = rows[(rows["batch_norm"] == bn) & ~rows["zero_gradient"]]
        key = f"gc_worst_rel_3layer_{'bn' if bn else 'nobn'}"
        assert v[key] == rows["max_rel_error"].max() < 1e-6
    assert "kink" in v["gc_kink_note"]


def test_ablation_key_values(trainings):
    archs = {"3-layer": [8, 8], "9-layer": [6] * 8}
    runs, _ = ab.run_ablation(trainings, archs, [0, 1], TINY)
    v = ab.key_values(ab.summarise(runs), archs, [0, 1])
    for key in ("ablation_3_nobn", "ablation_3_bn", "ablation_9_nobn", "ablation_9_bn"):
        assert v[f"{key}_ref"] == REFERENCE[key]
        assert v[f"{key}_diff"] == pytest.approx(v[f"{key}_ours"] - REFERENCE[key])
        assert v[f"{key}_spread"].endswith("over 2 seeds") and isinstance(v[f"{key}_verdict"], str)
    assert v["gain_9_ref"] == pytest.approx(51.75 - 44.02)
    assert v["gain_9"] == pytest.approx(v["ablation_9_bn_ours"] - v["ablation_9_nobn_ours"])
    assert "depth_verdict" in v and v["n_seeds"] == 2 and v["seeds_text"] == "0, 1"


def test_lambda_key_values(trainings):
    net = NetworkConfig(hidden=(8,))
    search = lambda_search(net, TINY, trainings.data, SearchConfig(n_coarse=3, n_fine=2),
                           run=trainings.run)
    trials = ls.trials_table(search)
    confirmed = ls.confirm(trainings, net, TINY, {"chosen": search.best.lam,
                                                  "original": REFERENCE["best_lambda"]}, [1, 2])
    final = confirmed[confirmed["lambda_of"] == "chosen"]
    at_ref = confirmed[confirmed["lambda_of"] == "original"]
    v = ls.key_values(search, trials, final, at_ref)
    assert v["best_lambda"] == search.best.lam and v["n_coarse"] == 3 and v["n_fine"] == 2
    assert v["best_lambda_ref"] == REFERENCE["best_lambda"]
    assert v["best_lambda_test_ref"] == REFERENCE["best_lambda_test"]
    assert v["final_test_mean"] == pytest.approx(final["test_accuracy"].mean())
    assert v["best_lambda_log10_ratio"] == pytest.approx(
        math.log10(search.best.lam / REFERENCE["best_lambda"]))
    assert "fine-search range" in v["best_lambda_verdict"] and v["flatness_note"]
    # the mean is over the fresh seeds only: the search trial is not in it
    assert v["search_trial_bias"] == pytest.approx(
        100 * search.best.result.test_accuracy - final["test_accuracy"].mean())
    assert v["at_ref_lambda_test_ours"] == pytest.approx(at_ref["test_accuracy"].mean())
    assert v["at_ref_lambda_test_ref"] == REFERENCE["best_lambda_test"]
    coarse = trials[trials["stage"] == "coarse"]
    best_coarse = coarse.loc[coarse["val_accuracy"].idxmax()]
    assert v["coarse_best_lambda_ours"] == best_coarse["lambda"]
    assert v["coarse_best_test_ours"] == best_coarse["test_accuracy"]
    assert v["coarse_best_test_ref"] == REFERENCE["coarse_best_test"]
    assert (v["trials_test_min"], v["trials_test_max"]) == (trials["test_accuracy"].min(),
                                                            trials["test_accuracy"].max())
    assert v["n_trials_ref"] == REFERENCE["search_n_trials"] and v["trials_range_ref"] == "not recorded"


def test_sigma_key_values_and_ablation_noise(trainings):
    runs, _ = _sigma_runs(trainings, extra_inits=["he", "xavier"])
    saved = {"smoke": False, "summary": [{"architecture": "3-layer", "batch_norm": True, "std": 0.5, "n": 3},
                         {"architecture": "3-layer", "batch_norm": False, "std": 0.4, "n": 3},
                         {"architecture": "9-layer", "batch_norm": True, "std": 9.0, "n": 3}]}
    noise = ss.ablation_noise(saved)
    assert noise == {True: (0.5, 3), False: (0.4, 3)} and ss.ablation_noise(None) == {}
    assert ss.ablation_noise(saved, smoke=True) == {}  # a full run's spread: not for a smoke run
    summary = ss.summarise(runs)
    v = ss.key_values(summary, [0], 8e-3, "test", noise)
    for sigma in ("1e-1", "1e-3", "1e-4"):  # all six cells, at the original's lambda
        for bn in ("nobn", "bn"):
            key = f"sigma_{sigma}_{bn}"
            ours = runs[(runs["sigma"] == float(sigma)) & (runs["batch_norm"] == (bn == "bn"))
                        & (runs["architecture"] == "3-layer")]
            assert v[f"{key}_ref"] == REFERENCE[key]
            assert v[f"{key}_ours"] == ours[ours["lambda_of"] == ss.ORIGINAL]["test_accuracy"].mean()
            assert v[f"ourlam_{key}"] == ours[ours["lambda_of"] == ss.CHOSEN]["test_accuracy"].mean()
            assert v[f"{key}_diff"] == pytest.approx(v[f"{key}_ours"] - REFERENCE[key])
    assert v["sigma_1e-4_bn_spread"] == "1 run" and "noise" in v["sigma_1e-4_bn_verdict"]
    assert v["deep_ref"] == REFERENCE["ablation_9_nobn"]
    assert v["deep_diff"] == pytest.approx(v["deep_sigma01_nobn"] - REFERENCE["ablation_9_nobn"])
    assert v["seeds_note"] == "one run per cell, seed 0" and v["lam_used"] == 8e-3
    assert v["lam_original"] == REFERENCE["sigma_lambda"]


def test_recipe_table_and_run_note(toy_data):
    t = recipe.recipe_table(TrainConfig(), toy_data)
    assert list(t.columns) == ["setting", "value"]
    d = dict(zip(t["setting"], t["value"]))
    assert d["batch size"] == "100" and d["L2 weight λ"] == "0.005" and d["images"].startswith("1,000 train")
    assert d["half-cycle n_s"] == "2250 update steps" and d["initialisation"].startswith("He")
    assert run_note(True, 1000, 1.0).startswith("SMOKE RUN on 1,000")
    assert run_note(False, 1000, 12.3, "x") == "full run on 1,000 training images, x, 12 s"


def _ablation_summary(m3, s3, m9, s9, n=3):
    rows = []
    for k, (mn, sd) in ((3, (m3, s3)), (9, (m9, s9))):
        for bn in (False, True):
            rows.append({"architecture": f"{k}-layer", "n_layers": k, "batch_norm": bn,
                         "mean": mn[bn], "std": sd[bn], "n": n, "n_diverged": 0})
    return pd.DataFrame(rows)


def test_depth_verdict_cases():
    clear = _ablation_summary({False: 53.0, True: 53.6}, {False: 0.2, True: 0.2},
                              {False: 46.0, True: 51.4}, {False: 0.4, True: 0.5})
    v = ab.key_values(clear, {"3-layer": [50, 50], "9-layer": [50] * 8}, [0, 1, 2])
    assert v["depth_verdict"].startswith("BN matters more for the deeper network, resolved")
    assert v["gain_9_verdict"].startswith("resolved: the gain is positive")
    noisy = _ablation_summary({False: 53.0, True: 53.6}, {False: 0.2, True: 0.2},
                              {False: 46.1, True: 51.4}, {False: 3.4, True: 0.5})
    v = ab.key_values(noisy, {"3-layer": [50, 50], "9-layer": [50] * 8}, [0, 1, 2])
    assert "not resolved" in v["depth_verdict"] and "includes zero" in v["depth_verdict"]
    assert "much less dependent on the seed" in v["depth_verdict"]
    # 3 seeds with a no-BN std of 3.4: the 9-layer gain's interval
    d = tables.difference_of_means(51.4, 0.5, 3, 46.1, 3.4, 3)
    assert v["gain_9_ci"] == tables.format_ci(d["ci_low"], d["ci_high"])
    assert v["gain_9_verdict"].startswith("not resolved") == (d["ci_low"] <= 0 <= d["ci_high"])


def test_trainings_reuse_the_cache_and_record_every_run(tmp_path):
    """Every training goes through kbn.runs.run_trials; a cache serves repeats, and the
    record says which runs came from it."""
    spec = tiny_data_spec(tmp_path)
    archs = {"3-layer": [8, 8]}
    first = Trainings(spec, executor="serial", cache=tmp_path / "cache", progress=False)
    runs, res = ab.run_ablation(first, archs, [0, 1], TINY)
    assert len(runs) == 4 and all(r.network is None for r in res)
    assert first.summary()["n_runs"] == 4 and first.n_cached == 0
    again = Trainings(spec, executor="serial", cache=tmp_path / "cache", progress=False)
    runs2, _ = ab.run_ablation(again, archs, [0, 1], TINY)
    pd.testing.assert_frame_equal(runs, runs2)  # served from the cache: same wall times too
    assert again.n_cached == 4
    table = again.runs_table("bn_ablation")
    assert list(table["from_cache"]) == [True] * 4 and list(table["run"])[0] == "bn_ablation:1"
    assert set(table.columns) >= {"chapter", "hidden", "batch_norm", "init", "sigma", "n_batch",
                                  "eta_min", "eta_max", "n_s", "lam", "seed", "dtype",
                                  "data_subset", "final_train_accuracy", "final_val_loss",
                                  "test_accuracy", "diverged", "wall_time", "cache_key"}
    assert list(table["cache_key"]) == [s.key(spec.checksum()) for s in
                                        (rec.spec for rec in again.records)]
    assert table["test_accuracy"].tolist() == pytest.approx(runs["test_accuracy"] / 100)
    long = again.histories_table("bn_ablation")
    n_points = len(res[0].history["step"])
    assert len(long) == 4 * n_points * 2 * 3  # runs x points x splits x metrics
    one = long[(long["run"] == "bn_ablation:1") & (long["split"] == "val")
               & (long["metric"] == "accuracy")]
    assert one["value"].tolist() == pytest.approx(res[0].history["val_accuracy"])


def test_data_spec_smoke_subset():
    assert recipe.data_spec(smoke=True).subset == recipe.SMOKE_SUBSET
    assert recipe.data_spec("/x").data_dir == "/x" and recipe.data_spec().subset is None


# ---------------------------------------------------------------- notebook parameters
from kbn.experiments.parameters import ParameterError  # noqa: E402

CHAPTER_MODULES = (gc, ab, ls, ss, hb)


@pytest.mark.parametrize("chapter", CHAPTER_MODULES, ids=lambda m: m.__name__.rsplit(".", 1)[1])
def test_defaults_are_valid_and_an_unknown_name_is_refused(chapter):
    chapter.Parameters.from_values()  # the defaults pass their own checks
    with pytest.raises(ParameterError, match=r"unknown parameter 'n_seeds'.*the parameters are: data_dir"):
        chapter.Parameters.from_values(n_seeds=5)


@pytest.mark.parametrize("chapter, name, value, message", [
    (gc, "n_samples", "20", "expected an int"),
    (gc, "h", None, "expected a number"),
    (ab, "seeds", 3, 'give lists and dicts as YAML, e.g. -y "seeds: '),
    (ab, "smoke", 1, "expected a bool"),
    (ab, "architectures", {"3-layer": [50, "50"]}, "a dict of a string -> a list of ints"),
    (ls, "coarse_range", [-5.0], "a pair of numbers"),
    (ss, "lam", "auto", "expected a number or None"),
    (ss, "extra_inits", "he", "a list of strings"),
])
def test_a_wrong_type_names_the_parameter(chapter, name, value, message):
    with pytest.raises(ParameterError, match=f"parameter {name}=") as err:
        chapter.Parameters.from_values(**{name: value})
    assert message in str(err.value)


@pytest.mark.parametrize("chapter, name, value, message", [
    (gc, "n_samples", 1, "BN needs a batch"),
    (gc, "dims", 5000, "1..3072"),
    (gc, "architectures", {"x": []}, "positive widths"),
    (ab, "seeds", [], "non-empty list"),
    (ab, "seeds", [1, 1], "distinct"),
    (ab, "n_s", 0, "TrainConfig.n_s=0"),
    (ab, "eta_min", 1.0, "must not exceed eta_max"),
    (ab, "dtype", "float16", "float32"),
    (ab, "executor", "proces", "give None or"),
    (ls, "n_coarse", 0, "at least one trial"),
    (ls, "fine_halfwidth", -1.0, "must be finite and > 0"),
    (ls, "final_seeds", [-1], "seeds >= 0"),
    (ss, "sigmas", [0.0], "every σ must be > 0"),
    (ss, "extra_inits", ["lecun"], "choose from"),
    (ss, "lam", -0.1, "must be >= 0"),
])
def test_an_invalid_value_names_the_parameter(chapter, name, value, message):
    with pytest.raises(ParameterError, match=f"parameter {name}") as err:
        chapter.Parameters.from_values(**{name: value})
    assert message in str(err.value)


def test_values_are_normalised():
    p = ab.Parameters.from_values(seeds=[3, 4], lam=1, architectures={"a": [5, 6]})
    assert p.seeds == (3, 4) and p.lam == 1.0 and isinstance(p.lam, float)
    assert p.architectures == {"a": (5, 6)}
    assert p.train_config(lam=p.lam) == TrainConfig(lam=1.0)
    assert ab.Parameters.from_values(smoke=True).train_config().n_s == recipe.SMOKE_TRAIN["n_s"]


def test_from_notebook_takes_the_notebook_variables_only():
    namespace = {"__name__": "__main__", "_i1": "x", "In": [], "json": json,
                 "out": object(), "chapter": ab, "smoke": True, "seeds": [7]}
    p = ab.Parameters.from_notebook(namespace)
    assert p.smoke is True and p.seeds == (7,)
    with pytest.raises(ParameterError, match="unknown parameter 'seed'"):
        ab.Parameters.from_notebook({**namespace, "seed": 1})  # a typo papermill would inject
