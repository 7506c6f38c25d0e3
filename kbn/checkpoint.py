"""Trained networks on disk: one ``.npz`` of plain arrays, read with ``allow_pickle=False``.

Layout: every parameter as ``param/<key>``, every BN moving average as ``avg/<key>``, and
``meta``: a JSON string with the format version, the kbn version, the network config and
(optionally) the training config and data normalisation, so a model can be rebuilt and
judged without the code that trained it.
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from .config import NetworkConfig, TrainConfig
from .network import Network, parameter_keys

FORMAT = "kbn-model"
FORMAT_VERSION = 1


class ModelFileError(ValueError):
    """A model file that cannot be read: corrupted, not a kbn model, or too new."""


def save_network(net: Network, path: str | os.PathLike, train_config: TrainConfig | None = None,
                 extra: dict[str, Any] | None = None) -> Path:
    """Write ``net`` to ``path`` (``.npz``) atomically; returns the path written."""
    path = Path(path)
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "kbn_version": __version__,
            "network_config": net.config.to_dict(),
            "train_config": None if train_config is None else train_config.to_dict(),
            "extra": extra or {}}
    arrays = {f"param/{k}": v for k, v in net.params.items()}
    arrays.update({f"avg/{k}": v for k, v in net.averages.items()})
    arrays["meta"] = np.array(json.dumps(meta))
    path.parent.mkdir(parents=True, exist_ok=True)
    # temp file + rename: an interrupted save never leaves a half-written model behind
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".npz")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_network(path: str | os.PathLike) -> tuple[Network, dict[str, Any]]:
    """Read a model written by :func:`save_network`; returns (network, meta)."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: no such model file (write one with `kbn train`)")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
        raise ModelFileError(f"{path} is corrupted or not a kbn model file ({exc})") from exc
    try:
        meta = json.loads(str(arrays.pop("meta")))
    except (KeyError, json.JSONDecodeError) as exc:
        raise ModelFileError(f"{path} is not a kbn model file (no readable 'meta')") from exc
    if meta.get("format") != FORMAT:
        raise ModelFileError(f"{path} is not a kbn model file (format {meta.get('format')!r})")
    if meta.get("format_version") != FORMAT_VERSION:
        raise ModelFileError(
            f"{path} was written by kbn {meta.get('kbn_version')} in model format "
            f"{meta.get('format_version')}; this kbn ({__version__}) reads format "
            f"{FORMAT_VERSION}. Install the kbn version that wrote it, or retrain.")
    config = NetworkConfig.from_dict(meta["network_config"])
    params = {k.removeprefix("param/"): v for k, v in arrays.items() if k.startswith("param/")}
    averages = {k.removeprefix("avg/"): v for k, v in arrays.items() if k.startswith("avg/")}
    net = Network(config, params, averages)
    expected = parameter_keys(config)
    if sorted(params) != sorted(expected):
        raise ModelFileError(f"{path}: parameters {sorted(params)} do not match the "
                             f"architecture {config.describe()} (expected {sorted(expected)})")
    return net, meta
