"""The chapters' results on disk: values and configs as JSON, trainings as CSV tables.

A chapter writes ``<results_dir>/<chapter>.json`` (what a later chapter reads, such as
the lambda chosen by the lambda search), ``<chapter>_runs.csv`` (one row per training)
and ``<chapter>_histories.csv`` (the training curves in long format), where
``<chapter>`` is its module name (``lambda_search``). The book build passes
``results_dir = "book/executed/results"``; a notebook run by hand writes nothing unless
given a ``results_dir``, and reads earlier chapters' results from the book's folder.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd

from ..config import NetworkConfig, SearchConfig, TrainConfig
from ..trainer import Result

BOOK_RESULTS = Path("book") / "executed" / "results"  # relative to the project root


def book_results_folder() -> Path:
    """``book/executed/results`` of the source tree kbn lives in (an editable install),
    else of the current folder; relative to the current folder when it is inside it."""
    root = Path(__file__).resolve().parents[2]
    folder = root / BOOK_RESULTS if (root / "book").is_dir() else Path.cwd() / BOOK_RESULTS
    try:
        return folder.relative_to(Path.cwd().resolve())
    except ValueError:
        return folder


def upstream_folder(results_dir) -> Path:
    """Where a chapter reads earlier chapters' results: ``results_dir`` if given, else
    :func:`book_results_folder` (what the last book build wrote)."""
    return Path(results_dir) if results_dir is not None else book_results_folder()


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


def write_results(folder, name: str, payload: Mapping[str, Any]) -> Path:
    """Write ``payload`` as ``<folder>/<name>.json`` (atomically); return the path."""
    path = Path(folder) / f"{name}.json"
    _atomic_write(path, json.dumps(to_jsonable(payload), indent=1, allow_nan=False) + "\n")
    return path


def read_results(folder, name: str) -> dict[str, Any] | None:
    """The JSON written by :func:`write_results`, or None if it does not exist."""
    path = Path(folder) / f"{name}.json"
    if not path.is_file():
        return None
    return json.loads(path.read_text())


def write_table(folder, name: str, table: pd.DataFrame) -> Path:
    """``table`` as ``<folder>/<name>.csv`` (no index column), atomically."""
    path = Path(folder) / f"{name}.csv"
    _atomic_write(path, table.to_csv(index=False))
    return path


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
