"""The kbn command end to end, in subprocesses: exit codes, files written, error text."""

import os
import re
import signal
import subprocess
import sys
import time

import pytest

from conftest import requires_real_data

TINY_RUN = ["--hidden", "20", "--n-s", "40", "--cycles", "1", "--subset", "1000", "--quiet"]


def kbn(*args, env=None, timeout=300):
    return subprocess.run([sys.executable, "-m", "kbn", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, **(env or {})})


@pytest.mark.parametrize("command", ["train", "gradcheck", "search", "data", "evaluate", "report"])
def test_help_shows_defaults(command):
    out = kbn(command, "--help")
    assert out.returncode == 0
    assert "usage: kbn " + command in out.stdout
    if command == "train":
        text = " ".join(out.stdout.split())  # argparse wraps lines
        assert "L2 weight lambda (default: 0.005)" in text
        assert "(default: [50, 50])" in text


def test_top_level_help_lists_the_commands():
    out = kbn("--help")
    assert out.returncode == 0
    for command in ("train", "gradcheck", "search", "data", "evaluate", "report"):
        assert command in out.stdout


def _accuracy(text: str) -> str:
    return re.search(r"test accuracy (\d+\.\d+) %", text).group(1)


@requires_real_data
def test_train_then_evaluate_the_saved_model_whatever_data_options_it_gets(tmp_path):
    out = kbn("train", *TINY_RUN, "--out", tmp_path)
    assert out.returncode == 0, out.stderr
    for name in ("model.npz", "history.csv", "curves.png", "result.json"):
        assert (tmp_path / name).stat().st_size > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["model.npz", "history.csv", "curves.png", "result.json"])  # no temporaries left
    trained = _accuracy(out.stdout)
    assert float(trained) > 20  # well above chance (10 %) after 80 steps
    # issue 11, part 5: the model carries its normalisation and its test images, so the
    # data options given to evaluate (which once renormalised the inputs) change nothing
    for options in ([], ["--subset", "1000"], ["--subset", "5000"], ["--n-val", "0"],
                    ["--n-val", "10000", "--subset", "300"]):
        ev = kbn("evaluate", tmp_path / "model.npz", *options)
        assert ev.returncode == 0, ev.stderr
        assert _accuracy(ev.stdout) == trained and "on 1000 images" in ev.stdout, options


def test_gradcheck_passes_and_fails_by_threshold():
    ok = kbn("gradcheck", "--hidden", "8", "6", "--synthetic")
    assert ok.returncode == 0, ok.stderr
    # 16 parameters, each checked on the reference and on the training path
    assert ok.stdout.count(" ok") == 2 * 16 and "FAIL" not in ok.stdout
    strict = kbn("gradcheck", "--hidden", "8", "--synthetic", "--bn", "off",
                 "--threshold", "1e-14", "--atol", "1e-16")
    assert strict.returncode == 3 and "FAIL" in strict.stdout
    assert "exceed --threshold" in strict.stderr


@pytest.mark.parametrize("args, message", [
    (["train", "--lam", "-1"], "--lam -1.0: the L2 weight must be finite and >= 0"),
    (["train", "--eta-min", "0.5", "--eta-max", "0.1"], "--eta-min 0.5: must not exceed --eta-max 0.1"),
    (["train", "--init", "sigma"], "--init sigma needs --sigma"),
    (["train", "--n-val", "60000"], "--n-val 60000: must be in [0, 50000)"),
])
def test_bad_values_give_one_clear_line(args, message, tmp_path):
    out = kbn(*args, "--out", tmp_path / "o")
    assert out.returncode == 1
    assert message in out.stderr
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "o" / "model.npz").exists()


@pytest.mark.parametrize("args", [["train", "--hidden", "0"], ["train", "--n-s", "x"],
                                  ["train", "--lam", "nan"], ["gradcheck", "--bn", "maybe"]])
def test_malformed_options_are_usage_errors(args):
    out = kbn(*args)
    assert out.returncode == 2 and "error: argument" in out.stderr


def test_verbose_shows_the_traceback(tmp_path):
    out = kbn("--verbose", "train", "--lam", "-1", "--out", tmp_path)
    assert out.returncode != 0 and "Traceback" in out.stderr


def test_unwritable_output_folder_is_refused_before_training(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    out = kbn("train", *TINY_RUN, "--out", blocker / "sub")
    assert out.returncode == 1
    assert "cannot write to output folder" in out.stderr and "--out" in out.stderr
    assert "training" not in out.stderr  # refused before the data were loaded


def test_missing_data_folder_says_how_to_fix(tmp_path):
    out = kbn("data", env={"KBN_DATA_DIR": str(tmp_path / "nowhere")})
    assert out.returncode == 1
    assert "KBN_DATA_DIR" in out.stderr and "does not exist" in out.stderr


@requires_real_data
def test_data_verifies_the_real_copy():
    out = kbn("data")
    assert out.returncode == 0, out.stderr
    assert "md5 matches" in out.stdout and "train 45000, validation 5000, test 10000" in out.stdout


def test_corrupted_model_file(tmp_path):
    (tmp_path / "m.npz").write_bytes(b"PK\x03\x04 not really a zip")
    out = kbn("evaluate", tmp_path / "m.npz")
    assert out.returncode == 1 and "corrupted or not a kbn model" in out.stderr


@requires_real_data
def test_divergence_is_reported_not_crashed(tmp_path):
    out = kbn("train", *TINY_RUN, "--no-bn", "--init", "sigma", "--sigma", "10",
              "--eta-min", "1", "--eta-max", "10", "--out", tmp_path)
    assert out.returncode == 1
    assert re.search(r"diverged at step \d+", out.stdout)
    assert (tmp_path / "history.csv").exists() and not (tmp_path / "model.npz").exists()


@requires_real_data
def test_ctrl_c_stops_cleanly(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "kbn", "train", "--hidden", "20", "--out",
                             str(tmp_path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not (proc.poll() is None and _started(proc)):
        time.sleep(0.2)
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert "interrupted" in err and "Traceback" not in err


def _started(proc) -> bool:
    # the trainer prints "training ..." to stderr once the data are loaded
    import select

    ready, _, _ = select.select([proc.stderr], [], [], 0)
    return bool(ready) and "training" in proc.stderr.readline()


SEARCH = ["search", "--hidden", "16", "--n-s", "60", "--cycles", "1", "--subset", "1500",
          "--n-coarse", "3", "--n-fine", "1", "--executor", "serial", "--quiet"]


@requires_real_data
def test_search_interrupted_then_resumed(tmp_path):
    cache = tmp_path / "out" / "cache"
    proc = subprocess.Popen([sys.executable, "-m", "kbn", *SEARCH, "--out", str(tmp_path / "out")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None and not list(cache.glob("*.json")):
        time.sleep(0.05)
    assert proc.poll() is None, "the search ended before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert "run the same command again to resume" in err and "Traceback" not in err
    kept = {p.name: p.stat().st_mtime_ns for p in cache.glob("*.json")}
    assert 1 <= len(kept) < 4

    out = kbn(*SEARCH, "--out", tmp_path / "out")
    assert out.returncode == 0, out.stderr
    assert "best lambda (chosen on validation)" in out.stdout
    assert out.stdout.count("coarse ") == 3 and out.stdout.count("fine ") == 1
    after = {p.name: p.stat().st_mtime_ns for p in cache.glob("*.json")}
    assert len(after) == 4
    assert all(after[name] == mtime for name, mtime in kept.items())  # not trained again
    assert (tmp_path / "out" / "trials.csv").read_text().count("\n") == 5


@requires_real_data
def test_train_on_a_worker_process_gives_the_same_model(tmp_path):
    here = kbn("train", *TINY_RUN, "--out", tmp_path / "here")
    pool = kbn("train", *TINY_RUN, "--executor", "process:1", "--out", tmp_path / "pool")
    assert here.returncode == 0 and pool.returncode == 0, pool.stderr
    assert "ProcessExecutor" in pool.stderr or "process" in pool.stderr
    acc = [_accuracy(o.stdout) for o in (here, pool)]
    assert acc[0] == acc[1]
    ev = kbn("evaluate", tmp_path / "pool" / "model.npz")
    assert _accuracy(ev.stdout) == acc[0]
