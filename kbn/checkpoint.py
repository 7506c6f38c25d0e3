"""Trained networks on disk: one ``.npz`` of plain arrays, checked before it is trusted.

Layout (format 2): every parameter as ``param/<key>``, every BN moving average as
``avg/<key>``, the normalisation of the training data as ``norm/mean`` and ``norm/std``
((input_dim,) float64: ``X = (raw - mean) / std``), and ``meta``, a JSON string::

    {"format": "kbn-model", "format_version": 2, "kbn_version": ...,
     "network_config": {...}, "input_dim": 3072, "n_classes": 10,
     "train_config": {...} or null, "extra": {...},
     "data": {"checksum": <kbn.data.CIFAR10.checksum>, "n_val": ..., "subset": ...} or null}

so a model can be rebuilt, fed the very inputs it was trained on and judged, anywhere,
without the code or the data split that trained it.

Reading (:func:`load_model`) trusts nothing in the file. Before any array is read the
archive's member names, the ``.npy`` headers (dtype, shape) and the meta are checked
against the architecture the meta states; then every value must be finite (variances
>= 0, standard deviations > 0). Nothing is unpickled (object arrays are refused from
their header) and nothing is extracted to disk. Anything wrong is one
:class:`ModelFileError` naming the file and what is wrong with it, e.g.
``model.npz: param/W2 has shape (50, 7), expected (50, 50) for hidden [50, 50]``.
"""

from __future__ import annotations

import collections
import io
import json
import math
import os
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from .atomic import write_bytes
from .config import NetworkConfig, TrainConfig
from .network import Network, parameter_keys

__all__ = ["FORMAT", "FORMAT_VERSION", "ModelFileError", "SavedModel", "TrainingData",
           "encode_network", "load_model", "load_network", "save_network"]

FORMAT = "kbn-model"
FORMAT_VERSION = 2  # 2: input/output sizes, training normalisation and data checksum
MAX_META_CHARS = 1_000_000  # a real meta is ~1 kB
MAX_MODEL_BYTES = 2**32  # 4 GiB of arrays: far beyond any network of this study


class ModelFileError(ValueError):
    """A model file that cannot be used: corrupted, crafted, not a kbn model, or too new."""


@dataclass(frozen=True)
class TrainingData:
    """What a model was trained on: enough to give it the same inputs anywhere.

    ``mean``, ``std``: (input_dim,) float64 per-feature statistics of the raw training
    pixels (``kbn.data.CIFAR10.mean`` / ``.std``). ``checksum``: the data files'
    checksum (``CIFAR10.checksum``). ``n_val``, ``subset``: the split (the test images
    it was judged on are the first ``subset`` of the test batch, or all of them).
    """

    mean: np.ndarray
    std: np.ndarray
    checksum: str
    n_val: int
    subset: int | None = None

    @classmethod
    def of(cls, data, n_val: int, subset: int | None = None) -> "TrainingData":
        """From a loaded ``kbn.data.CIFAR10`` and the split options that loaded it."""
        return cls(np.asarray(data.mean, np.float64), np.asarray(data.std, np.float64),
                   data.checksum, int(n_val), None if subset is None else int(subset))

    def meta(self) -> dict[str, Any]:
        return {"checksum": self.checksum, "n_val": self.n_val, "subset": self.subset}


@dataclass
class SavedModel:
    """What :func:`load_model` returns; ``data`` is None for a model saved without it."""

    network: Network
    meta: dict[str, Any]
    data: TrainingData | None
    path: Path


# ------------------------------------------------------------------ writing


def encode_network(net: Network, train_config: TrainConfig | None = None,
                   extra: dict[str, Any] | None = None,
                   data: TrainingData | None = None) -> bytes:
    """The bytes of a model file for ``net`` (see the module docstring)."""
    input_dim, n_classes = net.params["W1"].shape[0], net.params[f"W{net.n_layers}"].shape[1]
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "kbn_version": __version__,
            "network_config": net.config.to_dict(), "input_dim": int(input_dim),
            "n_classes": int(n_classes),
            "train_config": None if train_config is None else train_config.to_dict(),
            "extra": extra or {}, "data": None if data is None else data.meta()}
    arrays = {f"param/{k}": v for k, v in net.params.items()}
    arrays.update({f"avg/{k}": v for k, v in net.averages.items()})
    if data is not None:
        for name in ("mean", "std"):
            value = np.asarray(getattr(data, name), np.float64)
            if value.shape != (input_dim,):
                raise ValueError(f"TrainingData.{name} has shape {value.shape}; the network "
                                 f"takes {input_dim} inputs")
            arrays[f"norm/{name}"] = value
    arrays["meta"] = np.array(json.dumps(meta))
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def save_network(net: Network, path: str | os.PathLike, train_config: TrainConfig | None = None,
                 extra: dict[str, Any] | None = None, *,
                 data: TrainingData | None = None) -> Path:
    """Write ``net`` to ``path`` (``.npz``) whole or not at all; return the path.

    ``data``: what it was trained on (its normalisation and checksum); ``kbn evaluate``
    needs it. Raises :class:`kbn.atomic.WriteError` naming the path if it cannot write.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_bytes(path, encode_network(net, train_config, extra, data))


# ------------------------------------------------------------------ reading


def load_network(path: str | os.PathLike) -> tuple[Network, dict[str, Any]]:
    """Read and check a model written by :func:`save_network`; returns (network, meta)."""
    saved = load_model(path)
    return saved.network, saved.meta


def load_model(path: str | os.PathLike) -> SavedModel:
    """Read and check a model file (see the module docstring); raise ModelFileError."""
    path = Path(path)
    if path.is_dir():
        raise ModelFileError(f"{path} is a folder, not a model file (give the model.npz "
                             "that `kbn train` wrote in it)")
    if not path.is_file():
        raise ModelFileError(f"{path}: no such model file (write one with `kbn train`)")
    try:
        return _Reader(path).read()
    except ModelFileError:
        raise
    except Exception as exc:  # a damaged archive can fail in many ways; none is a crash
        raise ModelFileError(f"{path} is corrupted or not a kbn model file "
                             f"({type(exc).__name__}: {exc})") from exc


_SAFE_NAME = re.compile(r"[A-Za-z0-9_]+(/[A-Za-z0-9_]+)?\.npy")


class _Reader:
    """One pass over one model file: members, meta, headers, then values."""

    def __init__(self, path: Path):
        self.path = path

    def fail(self, what: str) -> ModelFileError:
        return ModelFileError(f"{self.path}: {what}")

    def read(self) -> SavedModel:
        try:
            zf = zipfile.ZipFile(self.path)
        except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
            raise ModelFileError(f"{self.path} is corrupted or not a kbn model file (not an "
                                 f".npz archive: {exc})") from exc
        with zf:
            members = self.members(zf)
            meta = self.meta(zf, members)
            config, shapes, data = self.check_meta(meta)
            unexpected = sorted(set(members) - {"meta.npy"} - {f"{n}.npy" for n in shapes})
            if unexpected:
                raise self.fail(f"unexpected member {unexpected[0]!r} (a {config.describe()} "
                                "model has only meta and its param/, avg/, norm/ arrays)")
            missing = [name for name in shapes if f"{name}.npy" not in members]
            if missing:
                raise self.fail(f"{missing[0]} is missing (a {config.describe()} model has "
                                f"{', '.join(shapes)})")
            arrays = self.arrays(zf, members, shapes, config)
        params = {k[6:]: v for k, v in arrays.items() if k.startswith("param/")}
        averages = {k[4:]: v for k, v in arrays.items() if k.startswith("avg/")}
        if data is not None:
            data = TrainingData(arrays["norm/mean"], arrays["norm/std"], **data)
        return SavedModel(Network(config, params, averages), meta, data, self.path)

    def members(self, zf: zipfile.ZipFile) -> dict[str, zipfile.ZipInfo]:
        counts = collections.Counter(info.filename for info in zf.infolist())
        for name, n in counts.items():
            if n > 1:
                raise self.fail(f"member {name!r} appears twice (a crafted archive: which "
                                "copy a reader sees depends on the reader)")
            if not _SAFE_NAME.fullmatch(name):
                raise self.fail(f"unexpected member {name!r}")
        return {info.filename: info for info in zf.infolist()}

    def header(self, f, name: str):
        """(shape, fortran_order, dtype) from a .npy header, without reading the data."""
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            return np.lib.format.read_array_header_1_0(f)
        if version == (2, 0):
            return np.lib.format.read_array_header_2_0(f)
        raise self.fail(f"{name} is in .npy format {version}, which kbn does not write")

    def meta(self, zf, members) -> dict[str, Any]:
        if "meta.npy" not in members:
            raise ModelFileError(f"{self.path} is not a kbn model file (no 'meta')")
        with zf.open(members["meta.npy"]) as f:
            shape, _, dtype = self.header(f, "meta")
            if dtype.kind != "U" or shape != () or dtype.itemsize // 4 > MAX_META_CHARS:
                raise ModelFileError(f"{self.path} is not a kbn model file ('meta' is a "
                                     f"{dtype} array of shape {shape}, not a JSON string)")
            text = self.values(f, "meta", shape, dtype)[()]
        try:
            meta = json.loads(str(text))
        except json.JSONDecodeError as exc:
            raise self.fail(f"meta is not valid JSON ({exc})") from None
        if not isinstance(meta, dict):
            raise self.fail("meta is not a JSON object")
        if meta.get("format") != FORMAT:
            raise ModelFileError(f"{self.path} is not a kbn model file (format "
                                 f"{meta.get('format')!r})")
        if "format_version" not in meta:
            raise self.fail("meta has no format_version")
        if meta["format_version"] != FORMAT_VERSION:
            raise ModelFileError(
                f"{self.path} was written by kbn {meta.get('kbn_version')} in model format "
                f"{meta['format_version']}; this kbn ({__version__}) reads format "
                f"{FORMAT_VERSION}. Install the kbn version that wrote it, or retrain it "
                "with `kbn train`.")
        return meta

    def check_meta(self, meta):
        """(network config, {array name: expected shape}, the data record or None)."""
        cfg = meta.get("network_config")
        if not isinstance(cfg, dict):
            raise self.fail("network_config is not a JSON object")
        try:
            config = NetworkConfig.from_dict(cfg)
        except (TypeError, ValueError) as exc:
            raise self.fail(f"network_config is invalid ({exc})") from None
        dims = [meta.get("input_dim"), meta.get("n_classes")]
        if not all(_is_count(v) for v in dims):
            raise self.fail(f"input_dim and n_classes must be ints >= 1, got {dims}")
        if meta.get("train_config") is not None:
            try:
                TrainConfig.from_dict(meta["train_config"])
            except (TypeError, ValueError, AttributeError) as exc:
                raise self.fail(f"train_config is invalid ({exc})") from None
        if not isinstance(meta.get("extra", {}), dict):
            raise self.fail("extra is not a JSON object")
        data = meta.get("data")
        if data is not None:
            ok = (isinstance(data, dict) and set(data) == {"checksum", "n_val", "subset"}
                  and isinstance(data["checksum"], str) and _is_count(data["n_val"], 0)
                  and (data["subset"] is None or _is_count(data["subset"])))
            if not ok:
                raise self.fail(f"data must be {{checksum: str, n_val: int >= 0, subset: "
                                f"null or int >= 1}}, got {data!r}")
        shapes = expected_shapes(config, *dims)
        if data is not None:
            shapes.update({"norm/mean": (dims[0],), "norm/std": (dims[0],)})
        return config, shapes, data

    def arrays(self, zf, members, shapes, config) -> dict[str, np.ndarray]:
        described = f"hidden {list(config.hidden)} ({shapes['param/W1'][0]} inputs)"
        if sum(math.prod(s) for s in shapes.values()) * 8 > MAX_MODEL_BYTES:
            raise self.fail(f"the stored architecture, {described}, implies more than "
                            f"{MAX_MODEL_BYTES >> 30} GiB of weights")
        out, weights_dtype = {}, None
        for name, shape in shapes.items():
            with zf.open(members[f"{name}.npy"]) as f:
                found, fortran, dtype = self.header(f, name)
                if found != shape:
                    raise self.fail(f"{name} has shape {found}, expected {shape} for "
                                    f"{described}")
                if name.startswith("norm/"):
                    if dtype != np.float64:
                        raise self.fail(f"{name} has dtype {dtype}, expected float64")
                elif dtype.kind != "f" or dtype.itemsize not in (4, 8):
                    raise self.fail(f"{name} has dtype {dtype}, expected float32 or float64")
                elif weights_dtype is None:
                    weights_dtype = dtype.newbyteorder("=")
                elif dtype.newbyteorder("=") != weights_dtype:
                    raise self.fail(f"{name} has dtype {dtype.newbyteorder('=')}, the model's "
                                    f"other weights {weights_dtype}")
                out[name] = self.values(f, name, shape, dtype, fortran)
        for name, value in out.items():
            bad = int(np.count_nonzero(~np.isfinite(value)))
            if bad:
                raise self.fail(f"{name} has {_count(bad, 'non-finite value')}")
            bad = int(np.count_nonzero(value < 0)) if "/var" in name else 0
            if bad:
                raise self.fail(f"{name} has {_count(bad, 'negative value')} (a variance "
                                "is >= 0)")
            bad = int(np.count_nonzero(value <= 0)) if name == "norm/std" else 0
            if bad:
                raise self.fail(f"{name} has {_count(bad, 'value')} <= 0")
        return out

    def values(self, f, name, shape, dtype, fortran=False) -> np.ndarray:
        """Exactly the array's bytes (then the end of the member, so its CRC is checked)."""
        nbytes = math.prod(shape) * dtype.itemsize
        raw = f.read(nbytes + 1)
        if len(raw) != nbytes:
            raise self.fail(f"{name} holds {len(raw)} bytes of data, expected {nbytes} "
                            f"for shape {shape} ({'truncated' if len(raw) < nbytes else 'extra bytes'})")
        array = np.frombuffer(raw, dtype=dtype).reshape(shape, order="F" if fortran else "C")
        return array.astype(dtype.newbyteorder("="), order="C")  # a writable native copy


def expected_shapes(config: NetworkConfig, input_dim: int, n_classes: int) -> dict[str, tuple]:
    """{array name: shape} of every array a trained model of this architecture has."""
    sizes = [input_dim, *config.hidden, n_classes]
    shapes = {}
    for key in parameter_keys(config):
        layer = int(re.sub(r"\D", "", key))
        shapes[f"param/{key}"] = ((sizes[layer - 1], sizes[layer]) if key.startswith("W")
                                  else (sizes[layer],))
    for key in parameter_keys(config):
        if key.startswith("gamma"):  # BN layers keep moving averages of mean and variance
            layer = int(key[5:])
            shapes[f"avg/mean{layer}"] = shapes[f"avg/var{layer}"] = (sizes[layer],)
    return shapes


def _is_count(v: Any, least: int = 1) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= least


def _count(n: int, what: str) -> str:
    return f"{n} {what}{'' if n == 1 else 's'}"
