"""The ``kbn`` command: train, gradcheck, search, data, evaluate, report.

Errors are one line on stderr and a non-zero exit (``--verbose`` shows the traceback);
they name this command's options (``--eta-max``), not the library's arguments. Every value
is checked before any data are loaded, including sizes no machine could run. Ctrl-C stops
cleanly with exit code 130 and keeps every finished result.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import sys
import time
from pathlib import Path

import numpy as np

from . import __version__
from .config import ConfigError, NetworkConfig, SearchConfig, TrainConfig
from .errors import command_line_words
from .folders import writable_folder as _writable_folder
from .stacking import n_weights as _n_weights

EXIT_ERROR, EXIT_CHECK_FAILED, EXIT_INTERRUPTED = 1, 3, 130

# What no run of this study needs, and no machine here could do: refused up front rather
# than found out hours (or an out-of-memory kill) later.
MAX_WEIGHTS = 10**8  # per network: 0.4 GB per copy in float32, and training keeps several
MAX_STEPS = 10**8  # update steps per training: about a day at the recipe's speed
MAX_EVALUATIONS = 10**5  # each passes over the training and validation images
MAX_TRIALS = 10**4  # per search
MAX_LOG10_LAMBDA = 300  # |log10(lambda)|: 10**±300 is still a float other than 0 or inf
MAX_GRADCHECK_WEIGHTS = 10**6  # the check runs two forward passes per weight
MAX_GRADCHECK_SAMPLES = 10**5
N_FEATURES, N_CLASSES, N_TRAIN_IMAGES = 3072, 10, 50_000  # the official CIFAR-10 release


class CommandError(Exception):
    """A value the command cannot run with; the message is in the command's own words."""


# The option that sets each config field (SearchConfig.seed is --search-seed).
_OPTION = {"hidden": "--hidden", "init": "--init", "sigma": "--sigma", "alpha": "--alpha",
           "n_batch": "--n-batch", "eta_min": "--eta-min", "eta_max": "--eta-max",
           "n_s": "--n-s", "n_cycles": "--cycles", "lam": "--lam",
           "evals_per_cycle": "--evals-per-cycle", "seed": "--seed", "dtype": "--dtype",
           "coarse_range": "--coarse-range", "n_coarse": "--n-coarse", "n_fine": "--n-fine",
           "fine_halfwidth": "--fine-halfwidth", ("SearchConfig", "seed"): "--search-seed",
           "optimizer": "--optimizer", "momentum": "--momentum", "beta2": "--beta2",
           "schedule": "--schedule", "flip": "--flip", "shift": "--shift",
           "dropout": "--dropout", "label_smoothing": "--label-smoothing",
           "bn_after_relu": "--bn-after-relu", "precise_bn": "--precise-bn"}


def _option_value(value) -> str:
    if isinstance(value, (list, tuple)):
        return " ".join(_option_value(v) for v in value)
    return "" if value is None or isinstance(value, bool) else str(value)  # a flag: its name


def _config_message(exc: ConfigError) -> str:
    """A config error in the command's words: ``--eta-max -0.1: ... must be > 0``."""
    option = _OPTION.get((exc.config, exc.field), _OPTION.get(exc.field))
    if option is None:
        return str(exc)
    value = _option_value(exc.value)
    return f"{option}{' ' + value if value else ''}: {exc.cli_why}"


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default, except a flag's: its help says what the default does
    ("(default: True)" beside --no-bn would read as if BN were off)."""

    def _get_help_string(self, action):
        return action.help if action.nargs == 0 else super()._get_help_string(action)


# ------------------------------------------------------------------ options shared by commands
def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return value


def _float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not np.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be finite, got {text!r}")
    return value


def _add_data_dir_option(g) -> None:
    g.add_argument("--data-dir", default=None,
                   help="the cifar-10-batches-py folder (default: $KBN_DATA_DIR, the cache, "
                        "or a download)")


def _add_data_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data")
    _add_data_dir_option(g)
    g.add_argument("--n-val", type=int, default=5000,
                   help="validation images taken from the end of the training batches")
    g.add_argument("--subset", type=_positive_int, default=None,
                   help="use only the first N images of each split (quick runs)")


def _add_network_options(p: argparse.ArgumentParser, hidden=(50, 50)) -> None:
    g = p.add_argument_group("network")
    g.add_argument("--hidden", type=_positive_int, nargs="+", default=list(hidden),
                   metavar="WIDTH", help="hidden layer widths (k = len + 1 layers)")
    g.add_argument("--no-bn", dest="batch_norm", action="store_false",
                   help="train without BN (BN is on by default)")
    g.add_argument("--init", choices=("he", "xavier", "sigma"), default="he",
                   help="weight initialisation")
    g.add_argument("--sigma", type=_float, default=None,
                   help="std of every weight, with --init sigma")
    g.add_argument("--alpha", type=_float, default=0.8, help="BN moving-average weight")
    g.add_argument("--bn-after-relu", action="store_true",
                   help="place BN after each ReLU instead of before it (the recipe)")


def _add_recipe_options(p: argparse.ArgumentParser) -> None:
    d = TrainConfig()
    g = p.add_argument_group("training recipe")
    g.add_argument("--n-batch", type=_positive_int, default=d.n_batch, help="mini-batch size")
    g.add_argument("--eta-min", type=_float, default=d.eta_min, help="lowest learning rate")
    g.add_argument("--eta-max", type=_float, default=d.eta_max, help="highest learning rate")
    g.add_argument("--n-s", type=_positive_int, default=d.n_s, help="half-cycle, in update steps")
    g.add_argument("--cycles", type=_positive_int, default=d.n_cycles, help="number of cycles")
    g.add_argument("--lam", type=_float, default=d.lam, help="L2 weight lambda")
    g.add_argument("--evals-per-cycle", type=_positive_int, default=d.evals_per_cycle,
                   help="points per cycle at which train/val metrics are recorded")
    g.add_argument("--seed", type=int, default=d.seed, help="seed of initialisation and shuffling")
    g.add_argument("--dtype", choices=("float32", "float64"), default=d.dtype,
                   help="arithmetic precision")
    g.add_argument("--precise-bn", type=int, default=d.precise_bn, metavar="N",
                   help="PreciseBN: after training, evaluate with BN statistics recomputed "
                        "over N training batches (0: the moving averages)")


def _add_extension_options(p: argparse.ArgumentParser) -> None:
    """The options beyond the reference recipe (chapter 6); their defaults leave it as is."""
    from .config import OPTIMIZERS, SCHEDULES

    d = TrainConfig()
    g = p.add_argument_group("beyond the recipe")
    g.add_argument("--preset", default=None, metavar="NAME_OR_FILE",
                   help="start from a named configuration (kbn.presets: mlp-best, reference) "
                        "or a JSON config file; the options given override it")
    g.add_argument("--optimizer", choices=OPTIMIZERS, default=d.optimizer,
                   help="update rule (sgd: the recipe's)")
    g.add_argument("--momentum", type=_float, default=d.momentum,
                   help="momentum (Adam's beta1) of --optimizer momentum/nesterov/adam/adamw")
    g.add_argument("--beta2", type=_float, default=d.beta2, help="Adam's beta2")
    g.add_argument("--schedule", choices=SCHEDULES, default=d.schedule,
                   help="learning-rate schedule over the 2 x --n-s x --cycles steps")
    g.add_argument("--flip", action=argparse.BooleanOptionalAction, default=d.flip,
                   help="augment: flip each training image left-right with probability 1/2 "
                        "(off by default; --no-flip turns a preset's off)")
    g.add_argument("--shift", type=int, default=d.shift,
                   help="augment: translate each training image by up to this many pixels")
    g.add_argument("--dropout", type=_float, default=d.dropout,
                   help="inverted dropout probability on every hidden layer")
    g.add_argument("--label-smoothing", type=_float, default=d.label_smoothing,
                   help="smooth the targets: (1 - e) one-hot + e / 10")


def _preset_defaults(name_or_path: str) -> dict:
    """A preset as defaults of ``kbn train``'s options (argument dests)."""
    from .presets import load_preset

    try:
        net, train, n_val = load_preset(name_or_path)
    except ValueError as exc:
        raise CommandError(f"--preset {name_or_path}: {exc}") from None
    out = {"hidden": list(net.hidden), "batch_norm": net.batch_norm, "init": net.init,
           "sigma": net.sigma, "alpha": net.alpha}
    for f, v in train.__dict__.items():
        out["cycles" if f == "n_cycles" else f] = v
    out.pop("keep_test_probs", None)
    out["n_val"] = n_val  # the split the preset trains on (--n-val still overrides it)
    return out


def _network_config(args) -> NetworkConfig:
    return NetworkConfig(hidden=tuple(args.hidden), batch_norm=args.batch_norm, init=args.init,
                         sigma=args.sigma, alpha=args.alpha, bn_after_relu=args.bn_after_relu)


def _train_config(args) -> TrainConfig:
    extensions = {}
    if getattr(args, "optimizer", None) is not None:  # commands with the options of chapter 6
        extensions = dict(optimizer=args.optimizer, momentum=args.momentum, beta2=args.beta2,
                          schedule=args.schedule, flip=args.flip, shift=args.shift,
                          dropout=args.dropout, label_smoothing=args.label_smoothing)
    return TrainConfig(n_batch=args.n_batch, eta_min=args.eta_min, eta_max=args.eta_max,
                       n_s=args.n_s, n_cycles=args.cycles, lam=args.lam,
                       evals_per_cycle=args.evals_per_cycle, seed=args.seed, dtype=args.dtype,
                       precise_bn=args.precise_bn, **extensions)


def _check_split(args, need_validation: bool = False) -> int:
    """--n-val (and --subset) against the official data; returns the training images."""
    if not 0 <= args.n_val < N_TRAIN_IMAGES:
        raise CommandError(f"--n-val {args.n_val}: must be in [0, {N_TRAIN_IMAGES}) "
                           f"(validation images taken from the {N_TRAIN_IMAGES} training images)")
    if need_validation and args.n_val == 0:
        raise CommandError("--n-val 0: the search chooses lambda on validation accuracy; "
                           "give --n-val > 0")
    n_train = N_TRAIN_IMAGES - args.n_val
    return n_train if args.subset is None else min(n_train, args.subset)


def _check_run(args, train_cfg: TrainConfig) -> None:
    """Sizes no run could manage, and a batch larger than the data, before any data load."""
    n_weights = _n_weights([N_FEATURES, *args.hidden, N_CLASSES])
    if n_weights > MAX_WEIGHTS:
        raise CommandError(f"--hidden {_option_value(args.hidden)}: the network would have "
                           f"{n_weights:.3g} weights; kbn trains at most {MAX_WEIGHTS:.0e}")
    if train_cfg.n_steps > MAX_STEPS:
        raise CommandError(f"--n-s {args.n_s} and --cycles {args.cycles} make "
                           f"{train_cfg.n_steps:.3g} update steps; kbn trains at most "
                           f"{MAX_STEPS:.0e} (about a day)")
    if args.cycles * args.evals_per_cycle > MAX_EVALUATIONS:
        raise CommandError(f"--evals-per-cycle {args.evals_per_cycle} and --cycles "
                           f"{args.cycles} make {args.cycles * args.evals_per_cycle:.3g} "
                           f"evaluations; kbn records at most {MAX_EVALUATIONS:.0e}")
    if train_cfg.precise_bn > MAX_STEPS:
        raise CommandError(f"--precise-bn {train_cfg.precise_bn}: kbn recomputes BN's "
                           f"statistics over at most {MAX_STEPS:.0e} batches")
    n_train = _check_split(args, need_validation=getattr(args, "command", "") == "search")
    try:
        train_cfg.check_fits(n_train)
    except ConfigError as exc:
        raise CommandError(_config_message(exc)) from None


def _load_data(args, dtype="float32"):
    from .data import load_cifar10

    return load_cifar10(args.data_dir, n_val=args.n_val, dtype=np.dtype(dtype),
                        subset=args.subset)


def writable_folder(path, option: str = "--out", what: str = "output folder") -> Path:
    return _writable_folder(path, hint=f"choose another with {option}", what=what)


def _write(path: Path, data: bytes | str, report_as: Path | None = None) -> None:
    from .atomic import write_bytes

    write_bytes(path, data.encode() if isinstance(data, str) else data, report_as=report_as)


def _json(payload) -> str:
    return json.dumps(payload, indent=1, allow_nan=True)


def _csv(header, rows) -> str:
    buf = io.StringIO(newline="")
    w = csv.writer(buf)
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue()


# ------------------------------------------------------------------ commands
# A training's outputs; result.json goes last: a folder with it holds a complete run.
RUN_FILES = ("history.csv", "curves.png", "model.npz", "result.json")
STAGING_PREFIX = ".kbn-partial-"


def _fit_in_worker(spec):
    """Runs where the executor puts it: (the Result with its network, its TrainingData)."""
    from .checkpoint import TrainingData
    from .trainer import fit

    data = spec.data.load()
    return fit(spec.network, spec.train, data), TrainingData.of(data, spec.data.n_val,
                                                                spec.data.subset)


def _run_files(result, net_cfg, train_cfg, trained_on) -> dict[str, bytes]:
    """Every output of a training, as bytes, in writing order (result.json last)."""
    from .checkpoint import encode_network
    from .plots import training_curves
    from .trainer import HISTORY_KEYS

    files = {"history.csv": _csv(HISTORY_KEYS, zip(*(result.history[k] for k in HISTORY_KEYS)))
             .encode()}
    if not result.diverged:
        png = io.BytesIO()
        training_curves({net_cfg.describe(): [result.history]}).savefig(png, format="png", dpi=120)
        files["curves.png"] = png.getvalue()
        files["model.npz"] = encode_network(result.network, train_cfg,
                                            extra={"test_accuracy": result.test_accuracy},
                                            data=trained_on)
    record = {**result.to_dict(),
              "files": {name: hashlib.sha256(blob).hexdigest() for name, blob in files.items()}}
    files["result.json"] = _json(record).encode()
    return files


def _write_run(out: Path, files: dict[str, bytes]) -> None:
    """All of ``files`` into ``out`` or none: staged in a hidden folder, then moved in."""
    from .atomic import WriteError, publish_staged, staged_folder

    with staged_folder(out, STAGING_PREFIX) as staging:
        try:
            for name, blob in files.items():
                _write(staging / name, blob, report_as=out / name)
        except WriteError as exc:
            raise WriteError(exc.errno, f"{exc.strerror}; nothing of this run was written "
                             f"to {out}") from exc
        publish_staged(staging, out, list(files), last="result.json", replaces=RUN_FILES)


def cmd_train(args) -> int:
    from .atomic import sweep_temporaries
    from .checkpoint import TrainingData
    from .trainer import fit

    net_cfg, train_cfg = _network_config(args), _train_config(args)
    _check_run(args, train_cfg)
    out = writable_folder(args.out)
    sweep_temporaries(out, STAGING_PREFIX)  # what a killed `kbn train` left here
    if args.executor in (None, "serial"):  # here, with a live progress bar
        data = _load_data(args, train_cfg.dtype)
        print(f"training {net_cfg.describe()}, {train_cfg.n_steps} steps of {train_cfg.n_batch} "
              f"on {len(data.train.y)} images", file=sys.stderr)
        result = fit(net_cfg, train_cfg, data, progress=not args.quiet)
        trained_on = TrainingData.of(data, args.n_val, args.subset)
    else:  # in a worker process or on a Dask cluster; the weights come back with the result
        from .executors import get_executor
        from .runs import DataSpec, TrialSpec

        spec = TrialSpec(net_cfg, train_cfg, DataSpec(args.data_dir, n_val=args.n_val,
                                                      subset=args.subset, dtype=train_cfg.dtype))
        with get_executor(args.executor) as executor:
            print(f"training {net_cfg.describe()} on {executor.describe()}", file=sys.stderr)
            [(_, (result, trained_on))] = executor.map_unordered(_fit_in_worker, [spec])
    _write_run(out, _run_files(result, net_cfg, train_cfg, trained_on))
    if result.diverged:
        print(f"diverged at step {result.diverged_at}: the cost became NaN or infinite. "
              f"Lower --eta-max or the initial weight scale. History: {out / 'history.csv'}")
        return EXIT_ERROR
    print(f"test accuracy {100 * result.test_accuracy:.2f} % (validation "
          f"{100 * result.val_accuracy:.2f} %) in {result.wall_time:.1f} s")
    print(f"wrote {out / 'model.npz'}, {out / 'history.csv'}, {out / 'curves.png'}, "
          f"{out / 'result.json'}")
    return 0


def _check_gradcheck(args) -> None:
    if not args.synthetic:
        _check_split(args)
    for option, value in (("--lam", args.lam), ("--threshold", args.threshold),
                          ("--atol", args.atol), ("--seed", args.seed)):
        if value < 0:
            raise CommandError(f"{option} {value}: must be >= 0")
    if not 0 < args.h < 1:
        raise CommandError(f"--h {args.h}: the finite-difference step must be in (0, 1)")
    n_weights = _n_weights([args.dims, *args.hidden, N_CLASSES])
    if n_weights > MAX_GRADCHECK_WEIGHTS:
        raise CommandError(f"--hidden {_option_value(args.hidden)} and --dims {args.dims} make "
                           f"{n_weights:.3g} weights; the check runs two forward passes per "
                           f"weight, so it takes at most {MAX_GRADCHECK_WEIGHTS:.0e}")
    if args.n > MAX_GRADCHECK_SAMPLES:
        raise CommandError(f"--n {args.n}: the check takes at most "
                           f"{MAX_GRADCHECK_SAMPLES:.0e} samples (a few are enough)")


def cmd_gradcheck(args) -> int:
    from .experiments.gradient_check import (display_table, gradient_check_grid, recheck,
                                             verdicts)

    _check_gradcheck(args)
    rng = np.random.default_rng(args.seed)
    if args.synthetic:
        X, y = rng.standard_normal((args.n, args.dims)), rng.integers(0, 10, args.n)
    else:
        data = _load_data(args, "float64")
        X, y = data.train.X[:args.n, :args.dims], data.train.y[:args.n]
    bns = {"both": (False, True), "on": (True,), "off": (False,)}[args.bn]
    name = f"{len(args.hidden) + 1}-layer"
    archs = {name: args.hidden}
    # both analytic gradients: the reference (layers.py) and the path that trains
    grid = gradient_check_grid(archs, X, y, args.lam, args.seed, args.h, bns)
    again = recheck(grid, archs, X, y, args.lam, args.seed, args.h / 10)
    bad = verdicts(grid, again, args.threshold, args.atol)
    table = display_table(grid, name, bad)
    print(f"analytic vs centred-difference gradients: h = {args.h:g}, {len(y)} samples, "
          f"d = {X.shape[1]}, lambda = {args.lam:g}, float64; a network with a ReLU input "
          f"near its kink is judged at h / 10")
    print(table.to_string(index=False))
    if bad.any():
        print(f"{int(bad.sum())} parameter(s) exceed --threshold {args.threshold:g} "
              f"(and --atol {args.atol:g}) or could not be measured", file=sys.stderr)
        return EXIT_CHECK_FAILED
    return 0


def cmd_data(args) -> int:
    from .data import load_cifar10, locate_cifar10

    folder = locate_cifar10(args.data_dir, download=args.download)
    print(f"CIFAR-10 folder: {folder}")
    t0 = time.perf_counter()
    data = load_cifar10(folder, download=False, progress=False)
    print(f"verified: every file's md5 matches the official release; loaded in "
          f"{time.perf_counter() - t0:.1f} s")
    print(f"train {len(data.train.y)}, validation {len(data.val.y)}, test {len(data.test.y)} "
          f"images; classes: {', '.join(data.class_names)}")
    return 0


def cmd_evaluate(args) -> int:
    from .checkpoint import load_model
    from .data import load_cifar10

    saved = load_model(args.model)  # checked whole before anything else happens
    net, meta, trained_on = saved.network, saved.meta, saved.data
    if (meta["input_dim"], meta["n_classes"]) != (N_FEATURES, N_CLASSES):
        raise CommandError(f"{args.model} takes {meta['input_dim']} inputs and has "
                           f"{meta['n_classes']} outputs; a CIFAR-10 model takes {N_FEATURES} "
                           f"inputs and has {N_CLASSES} outputs (train one with `kbn train`)")
    if trained_on is None:
        raise CommandError(f"{args.model} was saved without the normalisation and checksum of "
                           "its training data, so kbn cannot give it the inputs it was trained "
                           "on; retrain it with `kbn train`")
    if args.subset is not None or args.n_val is not None:
        print("kbn evaluate: note: --subset and --n-val are ignored: a model is evaluated on "
              "the test images it was judged on when trained, normalised as its training "
              "data were", file=sys.stderr)
    data = load_cifar10(args.data_dir, n_val=0, subset=trained_on.subset, dtype=net.dtype,
                        normalisation=(trained_on.mean, trained_on.std))
    if data.checksum != trained_on.checksum:
        if not args.allow_other_data:
            raise CommandError(f"{args.model} was trained on data with checksum "
                               f"{trained_on.checksum}, but {data.source} has checksum "
                               f"{data.checksum}; pass --allow-other-data to evaluate it on "
                               "these anyway")
        print(f"kbn evaluate: warning: {args.model} was trained on other data (checksum "
              f"{trained_on.checksum}); evaluating it on {data.source} (checksum "
              f"{data.checksum}) with its own normalisation, as --allow-other-data asks",
              file=sys.stderr)
    acc = net.evaluate(data.test.X, data.test.y, lam=0.0)["accuracy"]  # the trainer's path
    how = ""
    if args.flip:
        from .ensemble import accuracy, test_probabilities

        acc = accuracy(test_probabilities(net, data.test.X).mean(axis=0), data.test.y)
        how = " with test-time flips"
    print(f"{net.config.describe()} from {args.model} (kbn {meta['kbn_version']}): "
          f"test accuracy {100 * acc:.2f} %{how} on {len(data.test.y)} images")
    return 0


def _check_search(search_cfg: SearchConfig) -> None:
    n = search_cfg.n_coarse + search_cfg.n_fine
    if n > MAX_TRIALS:
        raise CommandError(f"--n-coarse {search_cfg.n_coarse} and --n-fine {search_cfg.n_fine} "
                           f"make {n:.3g} trials; a search runs at most {MAX_TRIALS:.0e}")
    (lo, hi), half = search_cfg.coarse_range, search_cfg.fine_halfwidth
    reach = max(abs(lo - half), abs(hi + half))  # the fine stage may go half beyond
    if reach > MAX_LOG10_LAMBDA:
        raise CommandError(f"--coarse-range {lo:g} {hi:g} with --fine-halfwidth {half:g} "
                           f"reaches log10(lambda) = +-{reach:g}; keep it within "
                           f"+-{MAX_LOG10_LAMBDA} (beyond, 10**x is 0 or inf)")


def cmd_search(args) -> int:
    from .runs import DataSpec
    from .search import lambda_search

    net_cfg, train_cfg = _network_config(args), _train_config(args)
    search_cfg = SearchConfig(coarse_range=tuple(args.coarse_range), n_coarse=args.n_coarse,
                              n_fine=args.n_fine, fine_halfwidth=args.fine_halfwidth,
                              seed=args.search_seed)
    _check_run(args, train_cfg)
    _check_search(search_cfg)
    out = writable_folder(args.out)
    cache = (writable_folder(args.cache, "--cache", "results cache folder") if args.cache
             else writable_folder(out / "cache", "--out or --cache", "results cache folder"))
    data = DataSpec(args.data_dir, n_val=args.n_val, subset=args.subset, dtype=train_cfg.dtype)
    print(f"lambda search for {net_cfg.describe()}: {search_cfg.n_coarse} coarse + "
          f"{search_cfg.n_fine} fine trials; finished trials are kept in {cache}",
          file=sys.stderr)
    result = lambda_search(net_cfg, train_cfg, data, search_cfg, progress=not args.quiet,
                           executor=args.executor, cache=cache)
    rows = result.rows()
    _write(out / "trials.csv", _csv(list(rows[0]), (r.values() for r in rows)))
    _write(out / "search.json", _json({
        "search_config": search_cfg.to_dict(), "network_config": net_cfg.to_dict(),
        "train_config": train_cfg.to_dict(), "trials": rows,
        "best": result.best.row()}))
    print(f"{'stage':7s} {'lambda':>10s} {'val acc':>8s} {'test acc':>8s}")
    for r in rows:
        status = "  diverged" if r["diverged"] else ""
        print(f"{r['stage']:7s} {r['lambda']:10.3e} {100 * r['val_accuracy']:7.2f}% "
              f"{100 * r['test_accuracy']:7.2f}%{status}")
    b = result.best.row()
    print(f"best lambda (chosen on validation): {b['lambda']:.3e}: validation "
          f"{100 * b['val_accuracy']:.2f} %, test {100 * b['test_accuracy']:.2f} %")
    print(f"wrote {out / 'trials.csv'}, {out / 'search.json'}")
    return 0


def cmd_report(args) -> int:
    from .report import build

    return build(smoke=args.smoke, data_dir=args.data_dir, executor=args.executor)


# ------------------------------------------------------------------ parser and entry point
def build_parser(preset_defaults: dict | None = None) -> argparse.ArgumentParser:
    fmt = _HelpFormatter
    parser = argparse.ArgumentParser(prog="kbn", formatter_class=fmt,
                                     description="k-layer networks with batch normalization on CIFAR-10")
    parser.add_argument("--version", action="version", version=f"kbn {__version__}")
    parser.add_argument("--verbose", action="store_true",
                        help="show tracebacks on errors (by default: one line)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("train", formatter_class=fmt, help="train one network and save it",
                       description="Train one network with the given recipe; write the model, "
                                   "its history (CSV, JSON) and its curves (PNG).")
    _add_network_options(p)
    _add_recipe_options(p)
    _add_extension_options(p)
    _add_data_options(p)
    p.add_argument("--executor", default=None,
                   help="where to train: serial (here, the default), process, or a Dask "
                        "scheduler address tcp://host:port")
    p.add_argument("--out", default="runs/train",
                   help="output folder; a previous run in it is replaced, nothing else in it "
                        "is touched")
    p.add_argument("--quiet", action="store_true", help="no progress bar (one is shown by default)")
    p.set_defaults(func=cmd_train)
    if preset_defaults:
        p.set_defaults(**preset_defaults)

    p = sub.add_parser("gradcheck", formatter_class=fmt,
                       help="analytic vs numerical gradients for an architecture",
                       description="Relative errors of analytic against centred-difference "
                                   "gradients per parameter; exit code 3 if any exceeds the "
                                   "threshold.")
    p.add_argument("--hidden", type=_positive_int, nargs="+", default=[50, 50], metavar="WIDTH")
    p.add_argument("--bn", choices=("both", "on", "off"), default="both")
    p.add_argument("--dims", type=_positive_int, default=10, help="input dimensions kept")
    p.add_argument("--n", type=_positive_int, default=5, help="samples in the batch")
    p.add_argument("--lam", type=_float, default=0.01)
    p.add_argument("--h", type=_float, default=1e-5, help="finite-difference step")
    p.add_argument("--threshold", type=_float, default=1e-6,
                   help="largest acceptable relative error")
    p.add_argument("--atol", type=_float, default=1e-8,
                   help="absolute errors below this pass whatever the relative error")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--synthetic", action="store_true",
                   help="random Gaussian inputs (by default: CIFAR-10 images)")
    _add_data_options(p)
    p.set_defaults(func=cmd_gradcheck)

    p = sub.add_parser("search", formatter_class=fmt,
                       help="coarse-to-fine random search of lambda (resumable)",
                       description="Log-uniform random search of the L2 weight lambda: a coarse "
                                   "stage, then a fine stage around the best; lambda is chosen "
                                   "on validation accuracy. Every finished trial is cached, so "
                                   "rerunning the same command resumes an interrupted search.")
    _add_network_options(p)
    _add_recipe_options(p)
    _add_data_options(p)
    d = SearchConfig()
    g = p.add_argument_group("search")
    g.add_argument("--coarse-range", type=_float, nargs=2, default=list(d.coarse_range),
                   metavar=("LO", "HI"), help="log10(lambda) range of the coarse stage")
    g.add_argument("--n-coarse", type=_positive_int, default=d.n_coarse, help="coarse trials")
    g.add_argument("--n-fine", type=int, default=d.n_fine, help="fine trials (0: none)")
    g.add_argument("--fine-halfwidth", type=_float, default=d.fine_halfwidth,
                   help="fine stage: best log10(lambda) +- this many decades")
    g.add_argument("--search-seed", type=int, default=d.seed, help="seed of the lambda samples")
    g.add_argument("--executor", default=None,
                   help="serial, process, process:N or a Dask scheduler address tcp://host:port "
                        "(default: $KBN_EXECUTOR, $KBN_DASK_SCHEDULER, else a process pool)")
    g.add_argument("--cache", default=None, help="results cache folder (default: OUT/cache)")
    p.add_argument("--out", default="runs/search", help="output folder")
    p.add_argument("--quiet", action="store_true", help="no progress bars (shown by default)")
    p.set_defaults(func=cmd_search)

    from .report import add_arguments as add_report_arguments

    p = sub.add_parser("report", formatter_class=fmt,
                       help="build the book (= jupyter-book build book/ = make report)",
                       description="Build the book: `jupyter-book build book/` in the project "
                                   "folder, which executes every out-of-date chapter with "
                                   "papermill, then renders _build/html.")
    add_report_arguments(p)
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("data", formatter_class=fmt, help="where the data is; verify; download",
                       description="Find CIFAR-10 (argument, $KBN_DATA_DIR, the cache), verify "
                                   "every file's md5 and load it; --download fetches it into "
                                   "the cache if it is missing.")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--download", action="store_true",
                   help="download into the cache if missing (by default: only look)")
    p.set_defaults(func=cmd_data)

    p = sub.add_parser("evaluate", formatter_class=fmt, help="test accuracy of a saved model",
                       description="Test accuracy of a model written by `kbn train`, on the "
                                   "test images it was judged on when trained, normalised "
                                   "with the statistics of its training data (both stored "
                                   "in the model file).")
    p.add_argument("model", help="a model.npz written by `kbn train`")
    _add_data_dir_option(p)
    p.add_argument("--allow-other-data", action="store_true",
                   help="evaluate even if the data's checksum differs from the training "
                        "data's (by default: refuse)")
    p.add_argument("--n-val", type=int, default=None,
                   help="ignored (accepted for scripts that pass the training options): the "
                        "model file fixes the test images and the normalisation")
    p.add_argument("--subset", type=_positive_int, default=None, help="ignored, as --n-val")
    p.add_argument("--flip", action="store_true",
                   help="test-time flips: average the class probabilities of each image and "
                        "its mirror image")
    p.set_defaults(func=cmd_evaluate)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if getattr(args, "preset", None):  # parsed again with the preset as the defaults
            args = build_parser(_preset_defaults(args.preset)).parse_args(argv)
        with command_line_words():  # library messages name this command's options
            return args.func(args)
    except KeyboardInterrupt:
        print("\ninterrupted: finished results are kept; run the same command again to resume",
              file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:  # one clear line, the traceback only on request
        if args.verbose:
            raise
        message = _config_message(exc) if isinstance(exc, ConfigError) else str(exc)
        message = " ".join((message or type(exc).__name__).split("\n"))
        print(f"kbn {args.command}: error: {message}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
