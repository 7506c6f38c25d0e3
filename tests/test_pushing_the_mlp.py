"""Chapter 6 (kbn.experiments.pushing_the_mlp): its configurations, statistics and a smoke run."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest

from conftest import requires_real_data
from kbn.experiments import pushing_the_mlp as ch
from kbn.experiments.parameters import ParameterError
from kbn.presets import preset_configs
from kbn.experiments.stats import t975


def test_defaults_are_valid_and_bad_values_are_named():
    ch.Parameters.from_values()
    for name, value, message in [("tricks", ["mixup"], "unknown ['mixup']"),
                                 ("ablation_epochs", 0, "must be >= 1"),
                                 ("ablation_hidden", [], "positive widths"),
                                 ("best", "nonesuch", "neither a preset"),
                                 ("seeds", [1, 1], "distinct")]:
        with pytest.raises(ParameterError, match=f"parameter {name}") as err:
            ch.Parameters.from_values(**{name: value})
        assert message in str(err.value)


def test_the_ablation_toggles_one_trick_at_a_time():
    params = ch.Parameters.from_values()
    _, best = preset_configs("mlp-best")
    specs = list(ch.ablation_specs(params, best, [0, 1], 45_000))
    net, baseline, small_best = ch.ablation_configs(params, best, 45_000)
    assert net.hidden == (256, 128) and small_best.n_steps * 200 == 8 * 45_000
    assert baseline.optimizer == "sgd" and baseline.schedule == "cyclical"
    assert not any(ch.has_trick(baseline, t) for t in ch.TRICKS)
    fields = [f.name for f in dataclasses.fields(best) if f.name != "seed"]
    for labels, n, train in specs:
        assert n == net
        ref = baseline if labels["point"] == "baseline" else small_best
        changed = {f for f in fields if getattr(train, f) != getattr(ref, f)}
        trick = labels["toggled"]
        if not trick:
            assert not changed
        else:  # exactly the trick's fields change, and with_trick says which way
            assert changed <= set(ch.TRICKS[trick][1]) | set(ch.TRICKS[trick][2]) and changed
            assert labels["with_trick"] == ch.has_trick(train, trick)
    # 2 reference points + 6 tricks at the baseline + 7 at the small best, 2 seeds each
    assert len(specs) == 2 * (2 + 6 + 7)


def test_paired_gain_is_a_t_interval_over_the_seed_differences():
    g = ch.paired_gain([60.0, 62.0, 61.0], [58.0, 61.0, 61.5])
    d = np.array([2.0, 1.0, -0.5])
    assert g["gain"] == pytest.approx(d.mean())
    assert g["half_width"] == pytest.approx(t975(2) * d.std(ddof=1) / np.sqrt(3))
    assert np.isnan(ch.paired_gain([1.0], [0.0])["half_width"])
    assert ch.format_gain(g) == "+0.83 ± 3.13"


def test_ablation_table_gains_are_with_minus_without():
    """Removing a trick from the best counts as minus the drop: the sign follows with_trick
    (mutation: reading the toggled run as 'with' would flip the sign)."""
    rows = []
    for seed, (b, bf, s, sf) in enumerate([(50, 52, 60, 57), (51, 54, 61, 59)]):
        rows += [dict(part="ablation", point="baseline", toggled="", with_trick=None, seed=seed,
                      test_accuracy=b, wall_time=1.0),
                 dict(part="ablation", point="baseline", toggled="flip", with_trick=True,
                      seed=seed, test_accuracy=bf, wall_time=2.0),
                 dict(part="ablation", point="small best", toggled="", with_trick=None,
                      seed=seed, test_accuracy=s, wall_time=3.0),
                 dict(part="ablation", point="small best", toggled="flip", with_trick=False,
                      seed=seed, test_accuracy=sf, wall_time=4.0)]
    shown, raw = ch.ablation_table(pd.DataFrame(rows), ["flip"])
    assert raw["baseline_gain"][0] == pytest.approx(2.5)  # 52-50, 54-51
    assert raw["small best_gain"][0] == pytest.approx(2.5)  # 60-57, 61-59
    assert shown["wall time with it (s)"][0] == 2.0


def test_pareto_front():
    times = [1.0, 2.0, 3.0, 0.5, 2.5]
    accs = [50.0, 55.0, 54.0, 40.0, 60.0]
    assert ch.pareto_front(times, accs).tolist() == [3, 0, 1, 4]


@requires_real_data
def test_smoke_run_writes_a_config_file_that_trains_the_best(tmp_path):
    out = ch.run(ch.Parameters(smoke=True, executor="serial", progress=False,
                               results_dir=str(tmp_path), cache=str(tmp_path / "cache")))
    v = out.values
    assert v["n_seeds"] == 2 and v["n_runs"] == 2 * (2 + 6 + 7) + 2
    assert set(out.figures) == {"fig_pareto", "fig_best_curves", "fig_confusion"}
    saved = json.loads((tmp_path / "pushing_the_mlp_best.json").read_text())
    net, train = preset_configs(str(tmp_path / "pushing_the_mlp_best.json"))
    assert saved["train"]["optimizer"] == "nesterov" and net.hidden == (48, 24)
    # the chapter trains on the best preset's split (1,000 held out), and saves it with it
    assert saved["data"]["n_val"] == 1000 and v["n_val_text"] == "1,000"
    assert out.tables["best_runs"]["test_accuracy"].iloc[0] == pytest.approx(v["best_seed0"])
    assert 0 <= v["ensemble_tta"] <= 100 and "SMOKE RUN" in v["run_note"]
    # warm: everything from the cache, the same numbers
    again = ch.run(ch.Parameters(smoke=True, executor="serial", progress=False,
                                 cache=str(tmp_path / "cache")))
    assert again.trainings.n_cached == again.trainings.n_runs
    assert again.values["best_mean"] == v["best_mean"] and again.values["ensemble_tta"] == v["ensemble_tta"]


@requires_real_data
def test_the_saved_best_configuration_retrains_and_reloads_to_the_chapters_number(tmp_path):
    """The chapter's config file through `kbn train --preset FILE` (the chapter's data: the
    smoke subset) gives the chapter's seed-0 test accuracy, and `kbn evaluate` of the saved
    model gives it again."""
    import re
    import subprocess
    import sys

    from kbn.experiments import recipe

    out = ch.run(ch.Parameters(smoke=True, executor="serial", progress=False,
                               results_dir=str(tmp_path)))
    expected = f"{out.values['best_seed0']:.2f}"

    def kbn(*args):
        return subprocess.run([sys.executable, "-m", "kbn", *map(str, args)],
                              capture_output=True, text=True, timeout=600)

    train = kbn("train", "--preset", tmp_path / "pushing_the_mlp_best.json", "--seed", "0",
                "--subset", recipe.SMOKE_SUBSET, "--quiet", "--out", tmp_path / "run")
    assert train.returncode == 0, train.stderr
    assert re.search(r"test accuracy (\d+\.\d+) %", train.stdout).group(1) == expected
    ev = kbn("evaluate", tmp_path / "run" / "model.npz")
    assert ev.returncode == 0, ev.stderr
    assert re.search(r"test accuracy (\d+\.\d+) %", ev.stdout).group(1) == expected


def test_the_small_scale_caveat_names_exactly_the_used_tricks_that_cost_accuracy():
    """A trick the best uses whose small-scale interval lies below zero is named; one whose
    interval reaches zero, one that helps, and one the best does not use are not."""
    _, best = preset_configs("mlp-best")
    raw = pd.DataFrame([
        {"small best_gain": -3.5, "small best_half_width": 0.5},   # shift: used, hurts
        {"small best_gain": -0.1, "small best_half_width": 0.4},   # flip: used, within noise
        {"small best_gain": 4.0, "small best_half_width": 1.5},    # momentum: used, helps
        {"small best_gain": -1.2, "small best_half_width": 0.3},   # dropout: not used
    ])
    text = ch.small_scale_caveat(raw, best, ["shift", "flip", "momentum", "dropout"], 8, 73.47)
    assert "random translations by up to 4 pixels (-3.50 ± 0.50 points)" in text
    assert "flips" not in text and "momentum" not in text and "dropout" not in text
    assert "8 epochs" in text and "73 epochs" in text
    calm = ch.small_scale_caveat(raw.iloc[1:3], best, ["flip", "momentum"], 8, 73.47)
    assert calm.startswith("no trick that the best configuration uses costs accuracy")


def test_ensembles_by_members_and_their_sentence():
    """m-member ensembles are averaged over every choice of m networks (with flips); the
    sentence says how far the full ensemble is from the goal and what each member added."""
    y = np.array([0, 1, 1, 0])
    right = np.zeros((2, 4, 2), np.float32)
    right[:, np.arange(4), y] = 1.0  # always right
    wrong = 1.0 - right  # always wrong
    half = right.copy()
    half[:, :2] = wrong[:, :2]  # right on half of the images
    got = ch.ensemble_by_members([right, wrong, half], y)
    # singles: 100, 0, 50; pairs: right+wrong ties (argmax picks class 0: 2 of 4), ...
    assert got[0] == pytest.approx(50.0)
    assert len(got) == 3 and got[2] == pytest.approx(
        100 * ch.ensemble.ensemble_accuracy([right, wrong, half], y, flip=True))
    text = ch.ensemble_sentence([67.7, 68.6, 69.1], 70.0, 9.3)
    assert "0.90 points short of the 70 % goal" in text and "+0.90, +0.50" in text
    assert "9.3 min" in text
    assert ch.ensemble_sentence([69.0, 70.5], 70.0, 9.0).startswith(
        "the ensemble of the 2 seeds with test-time flips reaches 70.50 %, meeting the 70 % goal")
