"""A results cache: one JSON file per training run, keyed by a hash of everything it depends on.

Typical use (usually through :func:`kbn.runs.run_trials`, which does this for you)::

    from kbn.cache import ResultCache
    cache = ResultCache("book/_build/cache")       # or ResultCache() for the default folder
    result = cache.get(key)                        # a kbn.trainer.Result, or None (a miss)
    if result is None:
        result = fit(...)
        cache.put(key, result)

Where the key comes from: :meth:`kbn.runs.TrialSpec.key` (a sha256 of the network and
training configs, the data split and dtype, the data files' checksum, the kbn version and
a fingerprint of the numerical source code).

File format (``<folder>/<key>.json``)::

    {"format": 1, "key": ..., "kbn_version": ..., "created": <unix time>,
     "wall_time": <seconds of training>, "spec": {...what the key hashes...},
     "result": Result.to_dict()}

The stored Result has no weights (``Result.network`` is None).

Writes are atomic: the JSON goes to a temporary file in the same folder, is flushed to
disk, then renamed over the final name (``os.replace``). A reader therefore sees either
no file or a complete one, and a process killed mid-write leaves at most a stray
``.tmp-*.part`` file, which is ignored. A file that is nevertheless unreadable (truncated by
a full disk, edited by hand, written by an incompatible version) is a miss, reported
with a warning, never a crash; the next ``put`` replaces it.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from . import __version__
from .trainer import Result

__all__ = ["CACHE_ENV", "FORMAT", "ResultCache", "default_cache_dir"]

CACHE_ENV = "KBN_RESULTS_CACHE"
FORMAT = 1
_TMP_PREFIX = ".tmp-"


def default_cache_dir() -> Path:
    """``$KBN_RESULTS_CACHE`` if set, else ``~/.cache/kbn/results``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "kbn" / "results"


def _jsonable(obj: Any) -> Any:
    """json.dumps hook for numpy scalars/arrays that may appear in a history."""
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


class ResultCache:
    """A folder of finished training runs, one ``<key>.json`` per run.

    ``folder``: where the files live (created on the first ``put``); default
    :func:`default_cache_dir`. Safe to share between processes: concurrent writers of the
    same key each write a complete file and the last rename wins.
    """

    def __init__(self, folder: str | os.PathLike | None = None):
        self.folder = Path(folder).expanduser() if folder is not None else default_cache_dir()

    def __repr__(self) -> str:
        return f"ResultCache({str(self.folder)!r})"

    def path(self, key: str) -> Path:
        _check_key(key)
        return self.folder / f"{key}.json"

    # ------------------------------------------------------------------ reading
    def get(self, key: str) -> Result | None:
        """The stored Result for ``key``, or None if absent or unreadable (with a warning)."""
        entry = self.entry(key)
        return None if entry is None else entry[1]

    def entry(self, key: str) -> tuple[dict[str, Any], Result] | None:
        """(the whole stored record, its Result), or None; like :meth:`get`."""
        path = self.path(key)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except OSError as exc:
            warnings.warn(f"kbn results cache: cannot read {path} ({exc}); treating it as a "
                          "miss, the run will be recomputed", RuntimeWarning, stacklevel=3)
            return None
        try:
            record = json.loads(text)
            if not isinstance(record, dict):
                raise ValueError("not a JSON object")
            if record.get("format") != FORMAT:
                raise ValueError(f"format {record.get('format')!r}, expected {FORMAT}")
            if record.get("key") != key:
                raise ValueError(f"it holds key {record.get('key')!r}")
            result = Result.from_dict(record["result"])
        except Exception as exc:  # truncated, hand-edited, foreign: recompute, never crash
            warnings.warn(f"kbn results cache: ignoring unreadable entry {path} "
                          f"({type(exc).__name__}: {exc}); the run will be recomputed",
                          RuntimeWarning, stacklevel=3)
            return None
        return record, result

    def __contains__(self, key: str) -> bool:
        return self.get(key) is not None

    def keys(self) -> Iterator[str]:
        """Keys of the files present (not checked for readability)."""
        if not self.folder.is_dir():
            return iter(())
        return (p.stem for p in sorted(self.folder.glob("*.json"))
                if not p.name.startswith(_TMP_PREFIX))

    def __len__(self) -> int:
        return sum(1 for _ in self.keys())

    # ------------------------------------------------------------------ writing
    def put(self, key: str, result: Result, spec: dict[str, Any] | None = None) -> Path:
        """Store ``result`` (without its weights) under ``key``, atomically; return the path.

        ``spec``: what the key was computed from, stored alongside for humans (optional).
        """
        path = self.path(key)
        record = {
            "format": FORMAT,
            "key": key,
            "kbn_version": __version__,
            "created": time.time(),
            "wall_time": result.wall_time,
            "spec": spec,
            "result": result.to_dict(),
        }
        # NaN (a diverged run's accuracy) is written as the JSON extension NaN, which
        # Python's json reads back; the record is for kbn, not for strict JSON parsers.
        text = json.dumps(record, default=_jsonable, indent=1)
        self.folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.folder, prefix=_TMP_PREFIX, suffix=".part")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())  # the bytes are on disk before the name points at them
            os.replace(tmp, path)  # atomic on POSIX and Windows (same folder, same filesystem)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
        return path

    def remove_stale_temporaries(self, older_than: float = 3600.0) -> int:
        """Delete ``.tmp-*`` files left by killed writers (older than ``older_than`` s)."""
        if not self.folder.is_dir():
            return 0
        n, now = 0, time.time()
        for p in self.folder.glob(f"{_TMP_PREFIX}*"):
            try:
                if now - p.stat().st_mtime > older_than:
                    p.unlink()
                    n += 1
            except OSError:
                pass
        return n


def _check_key(key: str) -> None:
    if not (isinstance(key, str) and key and all(c in "0123456789abcdef" for c in key)):
        raise ValueError(f"a cache key is a lowercase hex digest, got {key!r}")


def results_equal(a: Result, b: Result) -> bool:
    """Same configs, history and accuracies (NaN equals NaN); how it ran (wall time, the
    size of its stack) and the weights are ignored."""
    da, db = a.to_dict(), b.to_dict()
    for d in (da, db):
        d.pop("wall_time")
        d.pop("stack_size")
    return _same(da, db)


def _same(x: Any, y: Any) -> bool:
    if isinstance(x, dict) and isinstance(y, dict):
        return x.keys() == y.keys() and all(_same(x[k], y[k]) for k in x)
    if isinstance(x, (list, tuple)) and isinstance(y, (list, tuple)):
        return len(x) == len(y) and all(_same(u, v) for u, v in zip(x, y))
    if isinstance(x, (float, np.floating)) and isinstance(y, (float, np.floating)):
        return (math.isnan(x) and math.isnan(y)) or float(x) == float(y)
    return x == y
