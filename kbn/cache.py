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

    {"format": 2, "key": ..., "kbn_version": ..., "created": <unix time>,
     "wall_time": <seconds of training>, "spec": {...what the key hashes...},
     "result": Result.to_dict(), "checksum": <sha256 of the rest>}

The stored Result has no weights (``Result.network`` is None). ``checksum`` is the sha256
of the record's canonical JSON without it, so an entry changed after it was written (by
hand, by a disk, by another program) is detected even when it is valid JSON.

Writes are atomic (:mod:`kbn.atomic`): a reader sees either no file or a complete one. A
process killed mid-write leaves at most a temporary ``.tmp-<host>-<pid>-*.part``, which
is ignored and swept the next time the cache is used (once its writer is gone).

An entry that fails a check (unreadable, not JSON, another format, another key, a
checksum that does not match, not a valid Result) is reported once with a warning naming
it, moved aside into ``<folder>/rejected/`` (never deleted: it may be all that is left
of a long run) and treated as a miss, so the run is recomputed.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
import warnings
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from . import __version__
from .atomic import sweep_temporaries, write_text
from .trainer import Result

__all__ = ["CACHE_ENV", "FORMAT", "REJECTED", "ResultCache", "default_cache_dir"]

CACHE_ENV = "KBN_RESULTS_CACHE"
FORMAT = 2  # 2: with a checksum
REJECTED = "rejected"  # subfolder where entries that fail a check are moved
_TMP_PREFIX, _TMP_SUFFIX = ".tmp-", ".part"


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
        self._swept = False

    def __repr__(self) -> str:
        return f"ResultCache({str(self.folder)!r})"

    def path(self, key: str) -> Path:
        _check_key(key)
        return self.folder / f"{key}.json"

    def _sweep_once(self) -> None:
        """Temporaries of killed writers go the first time this cache is used."""
        if not self._swept:
            self._swept = True
            sweep_temporaries(self.folder, _TMP_PREFIX, _TMP_SUFFIX)

    # ------------------------------------------------------------------ reading
    def get(self, key: str) -> Result | None:
        """The stored Result for ``key``, or None if absent or rejected (with a warning)."""
        entry = self.entry(key)
        return None if entry is None else entry[1]

    def entry(self, key: str) -> tuple[dict[str, Any], Result] | None:
        """(the whole stored record, its Result), or None; like :meth:`get`."""
        path = self.path(key)
        self._sweep_once()
        try:
            with open(path, "rb") as f:
                identity = os.fstat(f.fileno())
                raw = f.read()
        except FileNotFoundError:
            return None
        except OSError as exc:
            warnings.warn(f"kbn results cache: cannot read {path} ({exc}); treating it as a "
                          "miss, the run will be recomputed", RuntimeWarning, stacklevel=3)
            return None
        try:
            record = _checked_record(raw, key)
            result = Result.from_dict(record["result"])
        except Exception as exc:  # whatever is wrong with it: set it aside, recompute
            self._reject(path, identity, f"{type(exc).__name__}: {exc}")
            return None
        return record, result

    def _reject(self, path: Path, identity: os.stat_result, why: str) -> None:
        """Move the bad entry at ``path`` aside, once, and say so."""
        dest = self.folder / REJECTED / f"{path.stem}-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}.json"
        try:
            dest.parent.mkdir(exist_ok=True)
            os.rename(path, dest)
        except FileNotFoundError:  # another process moved it first (and said so)
            return
        except OSError as exc:
            warnings.warn(f"kbn results cache: rejected entry {path}, unreadable or altered "
                          f"({why}); could not move it aside ({exc}); the run will be "
                          "recomputed", RuntimeWarning, stacklevel=4)
            return
        moved = dest.stat()
        if (moved.st_ino, moved.st_dev) != (identity.st_ino, identity.st_dev):
            # a writer replaced the bad file after we read it: what we moved is a complete,
            # fresh entry (writes are atomic), so it goes back; the bad one is gone already
            os.replace(dest, path)
            return
        warnings.warn(f"kbn results cache: rejected entry {path}, unreadable or altered "
                      f"({why}); moved it to {dest}; the run will be recomputed",
                      RuntimeWarning, stacklevel=4)

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
        Raises :class:`kbn.atomic.WriteError` (naming the entry) if it cannot be written.
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
        record["checksum"] = _checksum(record)
        # NaN (a diverged run's accuracy) is written as the JSON extension NaN, which
        # Python's json reads back; the record is for kbn, not for strict JSON parsers.
        text = json.dumps(record, default=_jsonable, indent=1)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._sweep_once()
        return write_text(path, text, tmp_prefix=_TMP_PREFIX, tmp_suffix=_TMP_SUFFIX)

    def remove_stale_temporaries(self, older_than: float = 3600.0) -> int:
        """Delete temporaries left by killed writers: those whose writer (on this host) is
        gone, and any older than ``older_than`` seconds. Returns how many."""
        return sweep_temporaries(self.folder, _TMP_PREFIX, _TMP_SUFFIX, max_age=older_than)


def _checksum(record: dict[str, Any]) -> str:
    """sha256 of the canonical JSON of ``record`` without its checksum."""
    body = {k: v for k, v in record.items() if k != "checksum"}
    text = json.dumps(body, default=_jsonable, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def _checked_record(raw: bytes, key: str) -> dict[str, Any]:
    """The record in ``raw`` if it passes every check, else ValueError saying which."""
    record = json.loads(raw.decode("utf-8"))
    if not isinstance(record, dict):
        raise ValueError("not a JSON object")
    if record.get("format") != FORMAT:
        raise ValueError(f"format {record.get('format')!r}, expected {FORMAT}")
    if record.get("key") != key:
        raise ValueError(f"it holds key {record.get('key')!r}")
    if "checksum" not in record:
        raise ValueError("no checksum")
    if record["checksum"] != _checksum(record):
        raise ValueError("checksum mismatch: the file was changed after it was written")
    _check_result_dict(record.get("result"))
    return record


def _check_result_dict(d: Any) -> None:
    """What Result.from_dict does not check itself: the history's shape and the numbers."""
    if not isinstance(d, dict):
        raise ValueError("'result' is not a JSON object")
    history = d.get("history")
    if not (isinstance(history, dict) and history):
        raise ValueError("'history' is not a JSON object of lists")
    lengths = {len(v) if isinstance(v, list) else -1 for v in history.values()}
    if len(lengths) != 1 or -1 in lengths:
        raise ValueError("'history' must be lists of one length")
    if not all(_is_number(x) for v in history.values() for x in v):
        raise ValueError("'history' holds something other than numbers")
    for name in ("test_accuracy", "val_accuracy"):
        v = d.get(name)
        if not (_is_number(v) and (math.isnan(v) or 0.0 <= v <= 1.0)):
            raise ValueError(f"{name}={v!r} is not an accuracy in [0, 1] (or NaN)")


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


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
