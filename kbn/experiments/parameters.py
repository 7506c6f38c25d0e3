"""A chapter's parameters: its notebook's ``parameters`` cell, checked before anything runs.

Papermill runs a notebook's ``parameters`` cell (the defaults), then a cell it injects
with the ``-p`` values, then the rest. The rest starts with::

    params = chapter.Parameters.from_notebook(globals())

which fails at once, with a :class:`ParameterError` naming the parameter, on

* a name that is not a parameter (papermill injects ``-p n_seeds 5`` without complaint,
  so the notebook's variables are compared with the declared fields),
* a value of the wrong type (``-p seeds 3`` for a list: the message says how to pass one),
* a value the chapter cannot use (:meth:`ChapterParameters.check`, e.g. an empty seed list).

Every chapter's ``Parameters`` is a frozen dataclass deriving from
:class:`ChapterParameters`; its fields (annotation, default and comment) are the
parameters cell, and a test ties the two together.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from pathlib import Path
from typing import Any, Mapping, TypeVar

from ..config import TrainConfig

P = TypeVar("P", bound="ChapterParameters")
_RECIPE = TrainConfig()  # the reference recipe's values, for TrainingParameters' defaults


class ParameterError(ValueError):
    """A notebook parameter is unknown, of the wrong type, or has an unusable value."""


@dataclasses.dataclass(frozen=True)
class ChapterParameters:
    """The parameters every chapter has."""

    data_dir: str | None = None  # CIFAR-10 folder; None: $KBN_DATA_DIR, the cache, a download
    smoke: bool = False  # True: a quick run on a data subset (what CI builds); numbers meaningless
    # where the chapters' results go (tables as CSV, values as JSON) and where this chapter
    # reads earlier chapters' results; None: write nothing, read book/executed/results
    results_dir: str | None = None
    progress: bool = True  # progress bars and log lines on stderr (the console under papermill)

    @classmethod
    def from_notebook(cls: type[P], namespace: Mapping[str, Any]) -> P:
        """The parameters among a notebook's global variables, checked.

        ``namespace``: ``globals()`` of the notebook, after papermill's injected cell. Every
        variable holding a value papermill can pass (None, bool, number, string, list,
        dict) must be a parameter, unless it is private (``_x``) or IPython's own; objects
        the notebook makes later (the chapter's output) do not count, so re-running the
        cell in Jupyter works.
        """
        hidden = _ipython_names()
        names = {k: v for k, v in namespace.items()
                 if not k.startswith("_") and k not in hidden and isinstance(v, _PASSABLE)}
        return cls.from_values(**names)

    @classmethod
    def from_values(cls: type[P], **values: Any) -> P:
        """Check names and types, build, then check the values (:meth:`check`)."""
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - set(fields))
        if unknown:
            raise ParameterError(
                f"unknown parameter{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))} "
                f"for {cls.__module__.rsplit('.', 1)[-1]}; the parameters are: "
                f"{', '.join(fields)}")
        hints = typing.get_type_hints(cls)
        checked = {name: conform(name, value, hints[name]) for name, value in values.items()}
        params = cls(**checked)
        params.check()
        return params

    def check(self) -> None:
        """Raise :class:`ParameterError` for a value the chapter cannot use (subclasses extend)."""
        for name in ("data_dir", "results_dir"):
            value = getattr(self, name)
            if value is not None and not str(value).strip():
                raise ParameterError(f"parameter {name}='': give a folder, or None for the default")

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def results_folder(self) -> Path | None:
        """Where to write results (None: nowhere)."""
        return None if self.results_dir is None else Path(self.results_dir)


@dataclasses.dataclass(frozen=True)
class TrainingParameters(ChapterParameters):
    """Parameters of a chapter that trains networks: where, and the recipe (TrainConfig
    defaults) except lambda, which each chapter declares its own way."""

    executor: str | None = None  # None: $KBN_EXECUTOR, else one process per core; "serial": here
    cache: str | None = None  # folder of finished trainings to reuse and add to (None: train all)
    # the recipe: its values live in ONE place, kbn.TrainConfig's defaults (commented
    # there); notebooks do not repeat them, papermill's -p n_s 100 overrides one
    n_batch: int = _RECIPE.n_batch
    eta_min: float = _RECIPE.eta_min
    eta_max: float = _RECIPE.eta_max
    n_s: int = _RECIPE.n_s
    n_cycles: int = _RECIPE.n_cycles
    dtype: str = _RECIPE.dtype

    RECIPE = ("n_batch", "eta_min", "eta_max", "n_s", "n_cycles", "dtype")

    def check(self) -> None:
        super().check()
        if self.executor is not None and not _EXECUTOR.match(self.executor.strip().lower()):
            from ..executors import ACCEPTED

            raise ParameterError(f"parameter executor={self.executor!r}: give None or {ACCEPTED}")
        self.train_config()  # the recipe's own checks, reported under the parameter's name

    def train_config(self, **changes: Any) -> TrainConfig:
        """The recipe as a TrainConfig (``changes`` on top, e.g. lam, seed); shortened in
        smoke mode (:data:`kbn.experiments.recipe.SMOKE_TRAIN`)."""
        from .recipe import train_config

        values = {name: getattr(self, name) for name in self.RECIPE}
        try:
            return train_config({**values, **changes}, smoke=self.smoke)
        except ValueError as exc:  # "TrainConfig.n_s=0: must be a positive int"
            raise ParameterError(f"parameter {_config_field(exc)}: {exc}") from None


def check_seeds(name: str, seeds) -> None:
    """A non-empty list of distinct seeds >= 0."""
    if not seeds or min(seeds) < 0 or len(set(seeds)) != len(seeds):
        raise ParameterError(f"parameter {name}={list(seeds)!r}: give a non-empty list of "
                             f"distinct seeds >= 0, e.g. [0, 1, 2]")


def check_architectures(name: str, architectures) -> None:
    """At least one name -> non-empty list of positive hidden widths."""
    if not architectures or any(not w or min(w) < 1 for w in architectures.values()):
        raise ParameterError(f"parameter {name}={architectures!r}: give at least one name -> "
                             f"list of positive widths, e.g. {{'3-layer': [50, 50]}}")


_PASSABLE = (type(None), bool, int, float, str, list, tuple, dict)
_EXECUTOR = re.compile(r"^(serial|process|process:[1-9]\d*|(tcp|tls|dask)://\S+)$")


def _config_field(exc: Exception) -> str:
    m = re.match(r"\w+Config\.(\w+)=", str(exc))
    return m.group(1) if m else "(recipe)"


def _ipython_names() -> set[str]:
    """Names IPython puts in a notebook's namespace (In, Out, get_ipython, exit, ...)."""
    names = {"In", "Out", "exit", "quit", "get_ipython", "open"}
    try:
        from IPython import get_ipython
    except ImportError:
        return names
    shell = get_ipython()
    return names | set(getattr(shell, "user_ns_hidden", {}) if shell is not None else ())


# ------------------------------------------------------------------ type checks
def conform(name: str, value: Any, hint: Any) -> Any:
    """``value`` as the annotated type (ints accepted for floats, lists and tuples for
    sequences); :class:`ParameterError` naming the parameter otherwise."""
    try:
        return _conform(value, hint)
    except _Mismatch as m:
        raise ParameterError(f"parameter {name}={value!r}: expected {_describe(hint)}"
                             f"{m.detail}{_how_to_pass(name, hint)}") from None


class _Mismatch(Exception):
    def __init__(self, detail: str = ""):
        self.detail = detail


def _conform(value: Any, hint: Any) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in (a for a in args if a is not type(None)):
            try:
                return _conform(value, arg)
            except _Mismatch:
                pass
        raise _Mismatch()
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise _Mismatch(" (True or False)")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _Mismatch()
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise _Mismatch()
    if hint is str:
        if isinstance(value, str):
            return value
        raise _Mismatch()
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise _Mismatch()
        if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
            args = (args[0],)
        if origin is tuple and len(args) > 1:
            if len(value) != len(args):
                raise _Mismatch(f" ({len(args)} values, got {len(value)})")
            return tuple(_conform(v, a) for v, a in zip(value, args))
        item = args[0] if args else Any
        return tuple(_conform(v, item) for v in value)
    if origin is dict:
        if not isinstance(value, Mapping):
            raise _Mismatch()
        key_t, val_t = args or (Any, Any)
        return {_conform(k, key_t): _conform(v, val_t) for k, v in value.items()}
    if hint is Any:
        return value
    raise TypeError(f"unsupported parameter annotation {hint!r}")


def _describe(hint: Any, plural: bool = False) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a, plural) for a in args)
    if hint is type(None):
        return "None"
    if origin in (list, tuple):
        if origin is tuple and len(args) == 2 and args[1] is not Ellipsis:
            return f"a pair of {_describe(args[0], True)}"
        return f"a list of {_describe(args[0], True)}" if args else "a list"
    if origin is dict:
        return f"a dict of {_describe(args[0])} -> {_describe(args[1])}"
    names = {bool: ("a bool", "bools"), int: ("an int", "ints"), float: ("a number", "numbers"),
             str: ("a string", "strings")}
    return names[hint][plural] if hint in names else str(hint)


def _how_to_pass(name: str, hint: Any) -> str:
    text = str(hint)
    if "list" in text or "tuple" in text or "dict" in text:
        return (f"; papermill's -p passes text, so give lists and dicts as YAML, e.g. "
                f"-y \"{name}: [0, 1]\"")
    return ""
