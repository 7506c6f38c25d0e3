"""kbn.runs: data/trial specs, cache keys, run_trials with a cache, a search killed and resumed."""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time
import warnings

import pytest
from threadpoolctl import threadpool_limits

import kbn.runs
from kbn import NetworkConfig, SearchConfig, TrainConfig
from kbn.cache import ResultCache, results_equal
from kbn.runs import DataSpec, TrialSpec, code_fingerprint, run_trials
from kbn.search import lambda_search
from kbn.trainer import fit, fit_stack

try:
    from trial_fixtures import NET, SEARCH, TRAIN, specs, tiny_data_spec
except ImportError:
    from tests.trial_fixtures import NET, SEARCH, TRAIN, specs, tiny_data_spec


@pytest.fixture(autouse=True, scope="module")
def one_blas_thread():
    """In-process trainings of these tiny nets with one BLAS thread: fast even while other
    processes load the cores (that the thread count changes no result is tested in
    test_executors, which keeps the default threads)."""
    with threadpool_limits(limits=1, user_api="blas"):
        yield


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> DataSpec:
    return tiny_data_spec(tmp_path_factory.mktemp("tiny"))


@pytest.fixture
def fit_calls(monkeypatch):
    """The train configs of the trainings run_trials starts in this process (serial
    executor), one per network, whatever stacks they train in."""
    calls = []

    def counting_fit_stack(network_configs, train_configs, data, **kw):
        calls.extend(train_configs)
        return fit_stack(network_configs, train_configs, data, **kw)

    monkeypatch.setattr(kbn.runs, "fit_stack", counting_fit_stack)
    return calls


# ----------------------------------------------------------------------- specs and keys


def test_data_spec_checksum_without_loading_equals_the_loaded_one(data):
    loaded = data.load()
    assert data.checksum() == loaded.checksum
    assert data.load() is loaded  # memoised in the process
    assert loaded.train.X.shape == (400, 3072) and len(loaded.val.y) == 100


def test_specs_are_small_and_picklable(data):
    spec = TrialSpec(NET, TRAIN, data, label="x")
    blob = pickle.dumps(spec)
    assert len(blob) < 2000 and pickle.loads(blob) == spec


def test_data_spec_validates_and_normalises():
    assert DataSpec(dtype="float64").dtype == "float64"
    assert DataSpec(expected_md5={"b": "2", "a": "1"}).expected_md5 == (("a", "1"), ("b", "2"))
    hash(DataSpec(expected_md5={"a": "1"}))
    for bad, message in (({"dtype": "int8"}, r"DataSpec\.dtype='int8': must be 'float32' or 'float64'"),
                         ({"n_val": -1}, r"DataSpec\.n_val=-1: must be an int >= 0"),
                         ({"subset": 0}, r"DataSpec\.subset=0: must be None or an int >= 1")):
        with pytest.raises(ValueError, match=message):
            DataSpec(**bad)
    with pytest.raises(TypeError, match="DataSpec"):
        TrialSpec(NET, TRAIN, object())


def test_key_covers_everything_the_result_depends_on():
    base = TrialSpec(NET, TRAIN, DataSpec())
    k = base.key("c0ffee")
    assert len(k) == 64 and k == TrialSpec(NET, TRAIN, DataSpec()).key("c0ffee")
    changed = [
        TrialSpec(NET, TRAIN.replace(lam=0.0051), DataSpec()),
        TrialSpec(NET, TRAIN.replace(seed=1), DataSpec()),
        TrialSpec(NET, TRAIN.replace(dtype="float64"), DataSpec()),
        TrialSpec(NET.replace(hidden=(21,)), TRAIN, DataSpec()),
        TrialSpec(NET.replace(batch_norm=False), TRAIN, DataSpec()),
        TrialSpec(NET, TRAIN, DataSpec(n_val=4000)),
        TrialSpec(NET, TRAIN, DataSpec(subset=100)),
        TrialSpec(NET, TRAIN, DataSpec(dtype="float64")),
    ]
    keys = {s.key("c0ffee") for s in changed} | {base.key("other data")}
    assert len(keys) == len(changed) + 1 and k not in keys
    # where the files are and what a trial is called do not change the result
    assert TrialSpec(NET, TRAIN, DataSpec("/somewhere/else"), label="hi").key("c0ffee") == k
    fields = base.key_fields("c0ffee")
    assert fields["kbn_version"] == kbn.__version__ and fields["code"] == code_fingerprint()


# ----------------------------------------------------------------------- run_trials


def test_results_come_back_in_order_and_equal_plain_fit(data):
    ss = specs(data, lams=(1e-4, 1e-2), seeds=(0,))
    out = run_trials(ss, executor="serial", progress=False)
    assert [r.train_config for r in out] == [s.train for s in ss]
    direct = fit(NET, ss[1].train, data.load())
    assert results_equal(out[1], direct) and out[1].network is None


def test_cache_hit_trains_nothing_and_a_change_retrains_only_that_trial(data, tmp_path, fit_calls):
    cache = ResultCache(tmp_path / "cache")
    ss = specs(data)
    first = run_trials(ss, executor="serial", cache=cache, progress=False)
    assert len(fit_calls) == len(ss) == len(cache)
    stored = {p.name: p.read_bytes() for p in cache.folder.iterdir()}

    fit_calls.clear()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every entry must read back cleanly
        again = run_trials(ss, executor="serial", cache=cache, progress=False)
    assert fit_calls == []
    assert all(results_equal(a, b) and a.wall_time == b.wall_time for a, b in zip(first, again))

    changed = list(ss)
    changed[2] = TrialSpec(NET, ss[2].train.replace(lam=0.02), data)
    third = run_trials(changed, executor="serial", cache=cache, progress=False)
    assert [c.lam for c in fit_calls] == [0.02]
    assert third[2].train_config.lam == 0.02
    assert all(results_equal(third[i], first[i]) for i in range(len(ss)) if i != 2)
    assert len(cache) == len(ss) + 1
    assert all((cache.folder / name).read_bytes() == blob for name, blob in stored.items())


def test_a_corrupted_entry_is_retrained(data, tmp_path, fit_calls):
    cache = ResultCache(tmp_path)
    ss = specs(data, lams=(1e-3,), seeds=(0, 1))
    first = run_trials(ss, executor="serial", cache=cache, progress=False)
    victim = cache.path(ss[0].key(data.checksum()))
    victim.write_text(victim.read_text()[:100])  # as if truncated
    fit_calls.clear()
    with pytest.warns(RuntimeWarning, match="unreadable"):
        again = run_trials(ss, executor="serial", cache=cache, progress=False)
    assert len(fit_calls) == 1 and results_equal(again[0], first[0])
    assert cache.get(ss[0].key(data.checksum())) is not None


def test_identical_specs_train_once(data, fit_calls):
    s = specs(data, lams=(1e-3,), seeds=(0,))[0]
    out = run_trials([s, TrialSpec(s.network, s.train, s.data, label="again"), s],
                     executor="serial", progress=False)
    assert len(fit_calls) == 1 and out[0] is out[1] is out[2]


def test_run_trials_refuses_non_specs(data):
    with pytest.raises(TypeError, match="TrialSpec"):
        run_trials([(NET, TRAIN)], executor="serial")


def test_search_on_a_data_spec_is_cached(data, tmp_path, fit_calls):
    a = lambda_search(NET, TRAIN, data, SEARCH, executor="serial", cache=tmp_path)
    n = len(fit_calls)
    assert n == SEARCH.n_coarse + SEARCH.n_fine
    b = lambda_search(NET, TRAIN, data, SEARCH, executor="serial", cache=tmp_path)
    assert len(fit_calls) == n  # nothing re-trained
    assert [t.lam for t in a.trials] == [t.lam for t in b.trials] and a.best.lam == b.best.lam
    # and without a cache (serial) it finds the same
    c = lambda_search(NET, TRAIN, data, SEARCH, executor="serial")
    assert [t.lam for t in c.trials] == [t.lam for t in a.trials]
    assert all(results_equal(x.result, y.result) for x, y in zip(a.trials, c.trials))


def test_cache_and_executor_need_a_data_spec(data):
    with pytest.raises(TypeError, match="DataSpec"):  # loaded arrays: no second path
        lambda_search(NET, TRAIN, data.load(), SEARCH, cache=True)
    with pytest.raises(ValueError, match="n_val > 0"):
        lambda_search(NET, TRAIN, DataSpec(n_val=0), SEARCH)


# ----------------------------------------------------------------------- kill and resume

SCRIPT = textwrap.dedent("""
    import json, sys
    from kbn import NetworkConfig, SearchConfig, TrainConfig
    from kbn.runs import DataSpec
    from kbn.search import lambda_search

    if __name__ == "__main__":
        a = json.loads(sys.argv[1])
        out = lambda_search(NetworkConfig.from_dict(a["network"]), TrainConfig.from_dict(a["train"]),
                            DataSpec(**a["data"]), SearchConfig.from_dict(a["search"]),
                            executor=a["executor"], cache=a["cache"])
        print(json.dumps({"lams": [t.lam for t in out.trials], "best": out.best.lam}))
""")


def test_a_killed_search_resumes_without_losing_a_finished_trial(tmp_path):
    # long enough trials (~0.1-0.5 s each) that the kill lands mid-search
    data = tiny_data_spec(tmp_path / "data", n_per_batch=200, n_val=200)
    net = NetworkConfig(hidden=(50, 50))
    train = TrainConfig(n_batch=50, n_s=80, n_cycles=1, evals_per_cycle=4, eta_max=0.05)
    search = SearchConfig(n_coarse=4, n_fine=3, seed=3)
    n_total = search.n_coarse + search.n_fine
    cache = ResultCache(tmp_path / "cache")
    script = tmp_path / "search.py"
    script.write_text(SCRIPT)
    args = json.dumps({"network": net.to_dict(), "train": train.to_dict(),
                       "data": {"data_dir": data.data_dir, "n_val": data.n_val,
                                "expected_md5": dict(data.expected_md5)},
                       "search": search.to_dict(), "executor": "process:2",
                       "cache": str(cache.folder)})

    # 1. start the search in its own process group; SIGKILL the group (the parent and its
    #    worker processes) as soon as the first trial is in the cache
    proc = subprocess.Popen([sys.executable, str(script), args], start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while len(cache) == 0:
            assert proc.poll() is None, proc.communicate()[1].decode()[-3000:]
            assert time.monotonic() < deadline, "no trial finished within 120 s"
            time.sleep(0.01)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
    assert proc.returncode == -signal.SIGKILL

    # 2. every file left is a complete, valid result; some trials were lost with the kill
    survivors = {p.name: p.read_bytes() for p in cache.folder.glob("*.json")}
    assert 1 <= len(survivors) < n_total
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert all(cache.get(k) is not None for k in cache.keys())

    # 3. the rerun trains exactly the missing trials: the survivors' files (their creation
    #    time and wall time included) are byte-identical afterwards
    rerun = subprocess.run([sys.executable, str(script), args], capture_output=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr.decode()[-3000:]
    resumed = json.loads(rerun.stdout.decode().strip().splitlines()[-1])
    after = {p.name: p.read_bytes() for p in cache.folder.glob("*.json")}
    assert len(after) == n_total
    assert all(after[name] == blob for name, blob in survivors.items())
    assert len(set(after) - set(survivors)) == n_total - len(survivors)

    # 4. the result equals an uninterrupted search (here: serial, in this process)
    clean = ResultCache(tmp_path / "clean")
    ref = lambda_search(net, train, data, search, executor="serial", cache=clean)
    assert resumed["lams"] == [t.lam for t in ref.trials] and resumed["best"] == ref.best.lam
    assert sorted(clean.keys()) == sorted(cache.keys())
    assert all(results_equal(cache.get(k), clean.get(k)) for k in clean.keys())


# ----------------------------------------------------------------------- the code in the key


def test_the_fingerprint_covers_every_module_a_training_runs():
    mods = set(kbn.runs.training_modules())
    # what fit and DataSpec.load execute, by name: the step, the stack, the trainer, ...
    assert {"trainer.py", "train_step.py", "stack.py", "stacking.py", "network.py",
            "layers.py", "schedule.py", "config.py", "data.py", "download.py"} <= mods
    # and not the presentation code
    assert not mods & {"plots.py", "report.py", "book.py", "cli.py", "cache.py"}


def test_an_edit_to_any_training_module_changes_the_cache_key(tmp_path):
    """Append a comment to each module a training imports, in a copy of the package: the
    fingerprint (and so every cache key) changes each time; an edit to plots.py does not."""
    import shutil

    package = tmp_path / "kbn"
    shutil.copytree(os.path.dirname(kbn.runs.__file__), package,
                    ignore=shutil.ignore_patterns("__pycache__"))
    seen = {kbn.runs._source_fingerprint(package)}
    assert seen == {code_fingerprint()}  # the copy is the code this process runs
    for name in kbn.runs.training_modules(package):
        with open(package / name, "a") as f:
            f.write("\n# an edit\n")
        fingerprint = kbn.runs._source_fingerprint(package)
        assert fingerprint not in seen, f"an edit to {name} left the cache key unchanged"
        seen.add(fingerprint)
    before = kbn.runs._source_fingerprint(package)
    with open(package / "plots.py", "a") as f:
        f.write("\n# a presentation edit\n")
    assert kbn.runs._source_fingerprint(package) == before
    # and a process that imports the edited copy keys its trials by it
    script = textwrap.dedent("""
        from kbn import NetworkConfig, TrainConfig
        from kbn.runs import DataSpec, TrialSpec, code_fingerprint
        print(code_fingerprint(), TrialSpec(NetworkConfig(), TrainConfig(), DataSpec()).key("c0ffee"))
        """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(tmp_path)})
    fingerprint, key = out.stdout.split()
    assert fingerprint == before, out.stderr
    assert key != TrialSpec(NetworkConfig(), TrainConfig(), DataSpec()).key("c0ffee")
