"""Adversarial command lines: every number of every command at 0, negative, NaN, infinite
and absurdly large, and the messages a user reads. Run in this process (fast); the data
folder points nowhere, so a value that is accepted shows up as the data error."""

from __future__ import annotations

import re

import pytest

from adversarial_helpers import run_kbn, tiny_cifar

ZERO, NEG, NAN, INF, HUGE = "0", "-1", "nan", "inf", "huge"
VALUES = (ZERO, NEG, NAN, INF, HUGE)
HUGE_INT, HUGE_FLOAT = "1000000000000", "1e300"

# what must happen: "usage" (argparse error, exit 2), "refused" (one line naming the
# option, exit 1, nothing done), "accepted" (the command goes on: here it then fails to
# find the data), "ran" (gradcheck runs: exit 0 or 3), "fails" (gradcheck must report a
# failure, exit 3: a check that cannot measure must not pass)
U, R, A, RAN, F = "usage", "refused", "accepted", "ran", "fails"

TRAIN = {  # option: (integer?, outcomes for 0, -1, nan, inf, huge)
    "--hidden": (True, (U, U, U, U, R)),
    "--sigma": (False, (R, R, U, U, A)),
    "--alpha": (False, (A, R, U, U, R)),
    "--n-batch": (True, (U, U, U, U, R)),
    "--eta-min": (False, (R, R, U, U, R)),
    "--eta-max": (False, (R, R, U, U, A)),
    "--n-s": (True, (U, U, U, U, R)),
    "--cycles": (True, (U, U, U, U, R)),
    "--lam": (False, (A, R, U, U, A)),
    "--evals-per-cycle": (True, (U, U, U, U, R)),
    "--seed": (True, (A, R, U, U, A)),
    "--n-val": (True, (A, R, U, U, R)),
    "--subset": (True, (U, U, U, U, A)),
    "--momentum": (False, (A, R, U, U, R)),
    "--beta2": (False, (A, R, U, U, R)),
    "--dropout": (False, (A, R, U, U, R)),
    "--label-smoothing": (False, (A, R, U, U, R)),
    "--shift": (True, (A, R, U, U, R)),
}
SEARCH = {
    "--n-coarse": (True, (U, U, U, U, R)),
    "--n-fine": (True, (A, R, U, U, R)),
    "--fine-halfwidth": (False, (R, R, U, U, R)),
    "--search-seed": (True, (A, R, U, U, A)),
    "--n-val": (True, (R, R, U, U, R)),
}
GRADCHECK = {
    "--hidden": (True, (U, U, U, U, R)),
    "--dims": (True, (U, U, U, U, R)),
    "--n": (True, (U, U, U, U, R)),
    "--lam": (False, (RAN, R, U, U, RAN)),
    "--h": (False, (R, R, U, U, R)),
    "--threshold": (False, (RAN, R, U, U, RAN)),
    "--atol": (False, (RAN, R, U, U, RAN)),
    "--seed": (True, (RAN, R, U, U, RAN)),
}
BASE = {
    "train": ["train", "--quiet", "--executor", "serial"],
    "search": ["search", "--quiet", "--executor", "serial"],
    "gradcheck": ["gradcheck", "--synthetic", "--hidden", "4", "--dims", "5", "--n", "4"],
}


def _cases():
    for command, table in (("train", TRAIN), ("search", SEARCH), ("gradcheck", GRADCHECK)):
        for option, (integer, outcomes) in table.items():
            for value, outcome in zip(VALUES, outcomes):
                text = (HUGE_INT if integer else HUGE_FLOAT) if value == HUGE else value
                yield pytest.param(command, option, text, outcome,
                                   id=f"{command} {option} {value}")


@pytest.fixture
def nowhere(tmp_path, monkeypatch):
    monkeypatch.setenv("KBN_DATA_DIR", str(tmp_path / "no-data-here"))
    monkeypatch.delenv("KBN_EXECUTOR", raising=False)
    return tmp_path


@pytest.mark.parametrize("command, option, value, outcome", list(_cases()))
def test_every_number_at_its_extremes(nowhere, capsys, command, option, value, outcome):
    argv = [*BASE[command], option, value]
    if option == "--sigma":
        argv += ["--init", "sigma"]
    if command != "gradcheck":
        argv += ["--out", nowhere / "out"]
    code, out, err = run_kbn(capsys, *argv)
    lines = err.strip().splitlines()
    assert "Traceback" not in err and not (nowhere / "out" / "model.npz").exists()
    if outcome == U:
        assert code == 2 and f"error: argument {option}" in lines[-1], err
    elif outcome == R:  # refused before anything else is said or done
        assert code == 1 and len(lines) == 1, err
        assert option in err and "no-data-here" not in err, err
    elif outcome == A:  # it went on (perhaps saying what it starts) until the data
        assert code == 1 and "no-data-here" in lines[-1], err
        assert sum("error" in line for line in lines) == 1, err
    elif outcome == RAN:
        assert code in (0, 3), err
    else:
        assert code == 3 and "FAIL" in out and " ok" not in out, out


def test_the_coarse_range_at_its_extremes(nowhere, capsys):
    for lo, hi, outcome in [("0", "0", R), ("-1", "-5", R), ("nan", "-1", U), ("-5", "inf", U),
                            ("-5", "1e300", R), ("-400", "-1", R),
                            ("-1e300", "-1", U), ("-299", "-298", A)]:
        code, _, err = run_kbn(capsys, *BASE["search"], "--coarse-range", lo, hi,
                               "--out", nowhere / "out")
        assert "Traceback" not in err
        if outcome == U:
            assert code == 2 and "argument --coarse-range" in err
        else:
            assert code == 1 and err.count("error") == 1
            assert ("--coarse-range" in err) == (outcome == R), (lo, hi, err)


# ----------------------------------------------------------------------------- the rows


def test_eta_max_is_checked_on_its_own_value_first(nowhere, capsys):
    code, _, err = run_kbn(capsys, "train", "--eta-max", "-0.1", "--out", nowhere / "o")
    assert code == 1
    assert re.search(r"--eta-max -0\.1: .*must be .*> 0", err), err
    assert "eta_min" not in err and "exceed" not in err


def test_errors_name_the_options_not_the_library_arguments(nowhere, capsys):
    code, _, err = run_kbn(capsys, "train", "--eta-min", "0.5", "--eta-max", "0.1",
                           "--out", nowhere / "o")
    assert code == 1 and "--eta-min 0.5: must not exceed --eta-max 0.1" in err, err
    code, _, err = run_kbn(capsys, "train", "--init", "sigma", "--out", nowhere / "o")
    assert code == 1 and "--sigma" in err and "--init sigma" in err and "init=" not in err, err
    code, _, err = run_kbn(capsys, "train", "--n-val", "60000", "--out", nowhere / "o")
    assert code == 1 and "--n-val 60000: must be in [0, 50000)" in err, err
    code, _, err = run_kbn(capsys, "train", "--subset", "10", "--out", nowhere / "o")
    assert code == 1 and "--n-batch 100" in err and "--subset" in err, err


def test_no_bn_help_says_what_the_default_does(capsys):
    from kbn.cli import build_parser

    for command in ("train", "search"):
        with pytest.raises(SystemExit):
            build_parser().parse_args([command, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        assert "--no-bn train without BN (BN is on by default)" in text
        # no flag reads as if it were set: "(default: True)" / "(default: False)" are gone
        assert "(default: True)" not in text and "(default: False)" not in text


def test_data_without_data_names_the_commands_own_option(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("KBN_DATA_DIR", raising=False)
    monkeypatch.setenv("KBN_CACHE_DIR", str(tmp_path / "empty-cache"))
    code, _, err = run_kbn(capsys, "data")
    assert code == 1 and len(err.strip().splitlines()) == 1
    assert "kbn data --download" in err and "download=True" not in err, err
    assert "data_dir=" not in err and "--data-dir" in err, err


def test_a_data_dir_pointing_nowhere_names_the_option(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("KBN_DATA_DIR", raising=False)
    code, _, err = run_kbn(capsys, "data", "--data-dir", tmp_path / "nowhere")
    assert code == 1 and "(from --data-dir)" in err and "data_dir argument" not in err, err


def test_the_library_keeps_naming_its_arguments(tmp_path, monkeypatch):
    from kbn.data import DataError, load_cifar10

    monkeypatch.delenv("KBN_DATA_DIR", raising=False)
    monkeypatch.setenv("KBN_CACHE_DIR", str(tmp_path / "empty-cache"))
    with pytest.raises(DataError, match="download=True") as info:
        load_cifar10(download=False)
    assert "kbn data" not in str(info.value)


def test_search_cache_that_is_a_file_names_cache(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("mine")
    code, _, err = run_kbn(capsys, "search", "--cache", blocker, "--out", tmp_path / "out",
                           "--quiet")
    assert code == 1 and len(err.strip().splitlines()) == 1
    assert "--cache" in err and "--out" not in err and "output folder" not in err, err
    assert str(blocker) in err and "is a file" in err
    assert blocker.read_text() == "mine"


def test_search_out_that_is_a_file_names_out(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("mine")
    code, _, err = run_kbn(capsys, "search", "--out", blocker, "--quiet")
    assert code == 1 and "--out" in err and "--cache" not in err and "is a file" in err, err


def test_a_corrupt_batch_is_named_by_kbn_data(tmp_path, monkeypatch, capsys):
    """Holds already: the md5 check names the file, the two sums and the fix."""
    folder = tiny_cifar(tmp_path / "data")
    monkeypatch.setenv("KBN_DATA_DIR", str(folder))
    code, _, err = run_kbn(capsys, "data")
    assert code == 1 and len(err.strip().splitlines()) == 1
    assert re.search(r"batches\.meta has md5 [0-9a-f]{32}, expected [0-9a-f]{32}", err), err


def test_a_gradient_error_that_is_not_a_number_fails_the_check(capsys, monkeypatch):
    """An overflow makes an error NaN; NaN > threshold is False, so it once read "ok"."""
    import kbn.experiments.gradient_check as gc

    real = gc.gradient_check_grid

    def with_an_overflow(*args, **kw):
        grid = real(*args, **kw)
        grid.loc[grid.index[1], ["max_rel_error", "max_abs_error"]] = float("nan")
        return grid

    args = [*BASE["gradcheck"], "--bn", "off"]
    code, out, _ = run_kbn(capsys, *args)
    assert code == 0 and "FAIL" not in out  # the honest check passes ...
    monkeypatch.setattr(gc, "gradient_check_grid", with_an_overflow)
    code, out, err = run_kbn(capsys, *args)
    assert code == 3 and out.count("FAIL") == 1, out  # ... and the unmeasurable entry fails
    assert "could not be measured" in err
