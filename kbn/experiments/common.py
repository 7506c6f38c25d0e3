"""Helpers shared by the experiment notebooks: data, smoke recipe, runs, progress, files.

Paths: every notebook takes ``figures_dir`` and ``results_dir`` parameters. ``None``
means the book's folders, ``<book>/figures`` and ``<book>/executed/results``, where
``<book>`` is the ``book/`` folder of the source tree this package lives in (or of the
current directory). The executed notebooks live in ``<book>/executed/`` and place their
figures as ``../figures/<name>.png``, so ``figures_dir`` must stay ``<book>/figures`` for
the book to find them.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import pandas as pd

from ..config import NetworkConfig, SearchConfig, TrainConfig
from ..runs import DataSpec, TrialSpec, run_trials
from ..trainer import Result, fit

# Smoke runs (CI): the first SMOKE_SUBSET images of train, val and test, and a short
# schedule. Numbers from a smoke run only show that the pipeline works.
SMOKE_SUBSET = 2000
SMOKE_TRAIN = {"n_s": 40, "n_cycles": 1, "evals_per_cycle": 4}


# ------------------------------------------------------------------------ paths
def book_dir() -> Path:
    """The ``book/`` folder: next to this package's source tree, else in the cwd."""
    here = Path(__file__).resolve().parents[2] / "book"
    return here if here.is_dir() else Path.cwd() / "book"


def resolve_dirs(figures_dir=None, results_dir=None) -> tuple[Path, Path]:
    """(figures_dir, results_dir) as absolute, existing folders (defaults: see module doc)."""
    book = book_dir()
    fig = Path(figures_dir) if figures_dir else book / "figures"
    res = Path(results_dir) if results_dir else book / "executed" / "results"
    for d in (fig, res):
        d.mkdir(parents=True, exist_ok=True)
    return fig.resolve(), res.resolve()


# ------------------------------------------------------------------------ data and recipe
def data_spec(data_dir=None, smoke: bool = False, subset: int | None = None) -> DataSpec:
    """The data as a :class:`kbn.runs.DataSpec` (what worker processes load and what cache
    keys name); ``smoke`` keeps SMOKE_SUBSET images per split. ``.load()`` loads it here."""
    if subset is None and smoke:
        subset = SMOKE_SUBSET
    return DataSpec(data_dir=None if data_dir is None else str(data_dir), subset=subset)


def load_data(data_dir=None, smoke: bool = False, subset: int | None = None):
    """CIFAR-10 via :func:`kbn.data.load_cifar10` (memoised per process by
    :meth:`kbn.runs.DataSpec.load`); ``smoke`` keeps SMOKE_SUBSET images per split."""
    return data_spec(data_dir, smoke, subset).load()


def train_config(recipe: Mapping[str, Any] | None = None, smoke: bool = False,
                 **changes) -> TrainConfig:
    """The reference recipe (TrainConfig defaults), updated by ``recipe`` and ``changes``;
    ``smoke`` then shortens the schedule (SMOKE_TRAIN) so a run takes a fraction of a second."""
    cfg = TrainConfig.from_dict({**(recipe or {}), **changes})
    if smoke:
        cfg = cfg.replace(**SMOKE_TRAIN)
    return cfg


def data_summary(data) -> dict[str, Any]:
    """Sizes and checksum of the loaded data, for the results JSON."""
    return {"n_train": len(data.train.y), "n_val": len(data.val.y), "n_test": len(data.test.y),
            "dtype": str(data.train.X.dtype), "checksum": getattr(data, "checksum", None)}


def recipe_table(train_cfg: TrainConfig, data, net_cfg: NetworkConfig | None = None) -> pd.DataFrame:
    """The training recipe as a two-column table (setting, value) for the book."""
    net = net_cfg or NetworkConfig()
    init = ({"he": "He: N(0, 2 / fan-in)", "xavier": "Xavier: N(0, 1 / fan-in)"}.get(net.init)
            or f"N(0, σ²) in every layer, σ = {net.sigma:g}")
    n_train = len(data.train.y)
    rows = [
        ("batch size", f"{train_cfg.n_batch}"),
        ("learning rate", f"cyclical (triangular), η from {train_cfg.eta_min:g} to {train_cfg.eta_max:g}"),
        ("half-cycle n_s", f"{train_cfg.n_s} update steps"),
        ("cycles", f"{train_cfg.n_cycles} (= {train_cfg.n_steps} update steps, "
                   f"{train_cfg.n_steps * train_cfg.n_batch / n_train:.0f} epochs)"),
        ("L2 weight λ", f"{train_cfg.lam:g}"),
        ("initialisation", init),
        ("BN moving averages", f"α = {net.alpha:g}, ε = {net.eps:g}"),
        ("images", f"{n_train:,} train, {len(data.val.y):,} validation, {len(data.test.y):,} test"),
        ("features", f"{data.train.X.shape[1]} pixel values, normalised"),
        ("precision", train_cfg.dtype),
    ]
    return pd.DataFrame(rows, columns=["setting", "value"])


def run_note(smoke: bool, data, seconds: float, detail: str = "",
             smoke_detail: str = "a short schedule and one seed") -> str:
    """One sentence on what this run was: a smoke run (numbers meaningless) or a full one."""
    if smoke:
        return (f"SMOKE RUN on {len(data.train.y):,} training images with {smoke_detail}: "
                f"the numbers only show that the pipeline works")
    extra = f", {detail}" if detail else ""
    return f"full run on {len(data.train.y):,} training images{extra}, {seconds:.0f} s"


def display_setup() -> None:
    """pandas display options for the chapters: never cut a cell's text short (a table's
    notes and labels are part of the report), 4 significant decimals for floats."""
    pd.set_option("display.max_colwidth", None)
    pd.set_option("display.precision", 4)


# ------------------------------------------------------------------------ progress
def log(message: str) -> None:
    """One progress line on stderr (the terminal under papermill; not rendered in the book)."""
    print(message, file=sys.stderr, flush=True)


def run_grid(specs: Iterable[tuple[Mapping[str, Any], NetworkConfig, TrainConfig]], data,
             progress: bool = False, executor=None, cache=None) -> tuple[pd.DataFrame, list[Result]]:
    """Train every (labels, network config, train config) and tabulate one row per run.

    data: a :class:`kbn.runs.DataSpec` (the runs then go through :func:`kbn.runs.run_trials`:
        in parallel on ``executor`` - None: env KBN_EXECUTOR, else one process per core -
        and, if ``cache`` names a folder, reused from earlier builds), or loaded data
        (trained one after another in this process; executor/cache must then be None).
    Returns (runs, results): runs has the label columns, then seed, lam, test_accuracy and
    val_accuracy (in %), wall_time (s), diverged; results[i] is the Result of runs row i.
    """
    specs = list(specs)
    descs = [f"[{i}/{len(specs)}] {net.describe()} {_init_label(net)} seed {train.seed}"
             for i, (_, net, train) in enumerate(specs, start=1)]
    t0 = time.perf_counter()
    if isinstance(data, DataSpec):
        trials = [TrialSpec(net, train, data, label=d) for (_, net, train), d in zip(specs, descs)]
        results = run_trials(trials, executor=executor, cache=cache, progress=progress,
                             desc="trainings")
        if progress:
            for d, r in zip(descs, results):
                _log_run(d, r, t0)
    else:
        if executor is not None or cache is not None:
            raise ValueError("executor= and cache= need the data as a kbn.runs.DataSpec")
        results = []
        for d, (_, net, train) in zip(descs, specs):
            results.append(fit(net, train, data, progress=progress, desc=d))
            if progress:
                _log_run(d, results[-1], t0)
    rows = [{**labels, "seed": train.seed, "lam": train.lam,
             "test_accuracy": 100 * r.test_accuracy, "val_accuracy": 100 * r.val_accuracy,
             "wall_time": r.wall_time, "diverged": r.diverged}
            for (labels, _, train), r in zip(specs, results)]
    return pd.DataFrame(rows), results


def _log_run(desc: str, r: Result, t0: float) -> None:
    log(f"{desc}: test {100 * r.test_accuracy:.2f} %, {r.wall_time:.1f} s "
        f"(total {time.perf_counter() - t0:.0f} s)")


def _init_label(cfg: NetworkConfig) -> str:
    return f"sigma={cfg.sigma:g}" if cfg.init == "sigma" else cfg.init


# ------------------------------------------------------------------------ JSON
def to_jsonable(obj: Any) -> Any:
    """Recursively turn numpy scalars/arrays, DataFrames, Paths, configs and Results into
    JSON-ready values; NaN and inf become None (JSON has no NaN)."""
    if isinstance(obj, Result):
        return to_jsonable(obj.to_dict())
    if isinstance(obj, (NetworkConfig, TrainConfig, SearchConfig)):
        return to_jsonable(obj.to_dict())
    if isinstance(obj, pd.DataFrame):
        return to_jsonable(obj.to_dict(orient="records"))
    if isinstance(obj, pd.Series):
        return to_jsonable(obj.to_dict())
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        x = float(obj)
        return x if math.isfinite(x) else None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def write_results(results_dir, name: str, payload: Mapping[str, Any]) -> Path:
    """Write ``payload`` (results + configs) as ``<results_dir>/<name>.json``; return the path."""
    path = Path(results_dir) / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(to_jsonable(payload), indent=1, allow_nan=False) + "\n")
    return path


def read_results(results_dir, name: str) -> dict[str, Any] | None:
    """The JSON written by :func:`write_results`, or None if it does not exist."""
    path = Path(results_dir) / f"{name}.json"
    if not path.is_file():
        return None
    return json.loads(path.read_text())


# ------------------------------------------------------------------------ glue
def plain(value: Any) -> Any:
    """A glue-friendly value: numpy scalars -> Python numbers (so the book can format them)."""
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    return value


def glue_all(values: Mapping[str, Any], display: bool = False) -> None:
    """myst_nb.glue every key -> value (numbers as Python floats, text as str)."""
    from myst_nb import glue

    for key, value in values.items():
        glue(key, plain(value), display=display)
