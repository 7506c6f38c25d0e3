"""The ``kbn`` command: train, gradcheck, search, data, evaluate, report.

Errors are one line on stderr and a non-zero exit (``--verbose`` shows the traceback);
Ctrl-C stops cleanly with exit code 130 and keeps every finished result.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from . import __version__
from .config import NetworkConfig, SearchConfig, TrainConfig
from .folders import writable_folder as _writable_folder

EXIT_ERROR, EXIT_CHECK_FAILED, EXIT_INTERRUPTED = 1, 3, 130


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


def _add_data_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data")
    g.add_argument("--data-dir", default=None,
                   help="the cifar-10-batches-py folder (default: $KBN_DATA_DIR, the cache, "
                        "or a download)")
    g.add_argument("--n-val", type=int, default=5000,
                   help="validation images taken from the end of the training batches")
    g.add_argument("--subset", type=_positive_int, default=None,
                   help="use only the first N images of each split (quick runs)")


def _add_network_options(p: argparse.ArgumentParser, hidden=(50, 50)) -> None:
    g = p.add_argument_group("network")
    g.add_argument("--hidden", type=_positive_int, nargs="+", default=list(hidden),
                   metavar="WIDTH", help="hidden layer widths (k = len + 1 layers)")
    g.add_argument("--no-bn", dest="batch_norm", action="store_false",
                   help="no batch normalisation")
    g.add_argument("--init", choices=("he", "xavier", "sigma"), default="he",
                   help="weight initialisation")
    g.add_argument("--sigma", type=_float, default=None,
                   help="std of every weight, with --init sigma")
    g.add_argument("--alpha", type=_float, default=0.8, help="BN moving-average weight")


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


def _network_config(args) -> NetworkConfig:
    return NetworkConfig(hidden=tuple(args.hidden), batch_norm=args.batch_norm, init=args.init,
                         sigma=args.sigma, alpha=args.alpha)


def _train_config(args) -> TrainConfig:
    return TrainConfig(n_batch=args.n_batch, eta_min=args.eta_min, eta_max=args.eta_max,
                       n_s=args.n_s, n_cycles=args.cycles, lam=args.lam,
                       evals_per_cycle=args.evals_per_cycle, seed=args.seed, dtype=args.dtype)


def _load_data(args, dtype="float32"):
    from .data import load_cifar10

    return load_cifar10(args.data_dir, n_val=args.n_val, dtype=np.dtype(dtype),
                        subset=args.subset)


def writable_folder(path) -> Path:
    return _writable_folder(path, hint="choose another with --out")


def _write_json(path: Path, payload) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(payload, indent=1, allow_nan=True))
    os.replace(tmp, path)


# ------------------------------------------------------------------ commands
def cmd_train(args) -> int:
    from .checkpoint import save_network
    from .plots import save_figure, training_curves
    from .trainer import HISTORY_KEYS, fit

    net_cfg, train_cfg = _network_config(args), _train_config(args)
    out = writable_folder(args.out)
    if args.executor in (None, "serial"):  # here, with a live progress bar
        data = _load_data(args, train_cfg.dtype)
        checksum = data.checksum
        print(f"training {net_cfg.describe()}, {train_cfg.n_steps} steps of {train_cfg.n_batch} "
              f"on {len(data.train.y)} images", file=sys.stderr)
        result = fit(net_cfg, train_cfg, data, progress=not args.quiet)
    else:  # in a worker process or on a Dask cluster; the weights come back with the result
        from functools import partial

        from .executors import get_executor
        from .runs import DataSpec, TrialSpec, run_trial

        spec = TrialSpec(net_cfg, train_cfg, DataSpec(args.data_dir, n_val=args.n_val,
                                                      subset=args.subset, dtype=train_cfg.dtype))
        checksum = spec.data.checksum()
        with get_executor(args.executor) as executor:
            print(f"training {net_cfg.describe()} on {executor.describe()}", file=sys.stderr)
            [(_, result)] = executor.map_unordered(partial(run_trial, keep_network=True), [spec])
    _write_json(out / "result.json", result.to_dict())
    with open(out / "history.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(HISTORY_KEYS)
        w.writerows(zip(*(result.history[k] for k in HISTORY_KEYS)))
    if result.diverged:
        print(f"diverged at step {result.diverged_at}: the cost became NaN or infinite. "
              f"Lower --eta-max or the initial weight scale. History: {out / 'history.csv'}")
        return EXIT_ERROR
    save_figure(training_curves({net_cfg.describe(): [result.history]}), out / "curves.png")
    save_network(result.network, out / "model.npz", train_cfg,
                 extra={"test_accuracy": result.test_accuracy, "data_checksum": checksum})
    print(f"test accuracy {100 * result.test_accuracy:.2f} % (validation "
          f"{100 * result.val_accuracy:.2f} %) in {result.wall_time:.1f} s")
    print(f"wrote {out / 'model.npz'}, {out / 'history.csv'}, {out / 'curves.png'}, "
          f"{out / 'result.json'}")
    return 0


def cmd_gradcheck(args) -> int:
    from .experiments.gradient_check import display_table, gradient_check_grid

    rng = np.random.default_rng(args.seed)
    if args.synthetic:
        X, y = rng.standard_normal((args.n, args.dims)), rng.integers(0, 10, args.n)
    else:
        data = _load_data(args, "float64")
        X, y = data.train.X[:args.n, :args.dims], data.train.y[:args.n]
    bns = {"both": (False, True), "on": (True,), "off": (False,)}[args.bn]
    name = f"{len(args.hidden) + 1}-layer"
    grid = gradient_check_grid({name: args.hidden}, X, y, args.lam, args.seed, args.h, bns)
    # An entry fails when both its relative and its absolute error are large: a tiny
    # gradient entry has a large relative error from rounding alone (|gn| noise ~1e-11).
    bad = (~grid["zero_gradient"] & (grid["max_rel_error"] > args.threshold)
           & (grid["max_abs_error"] > args.atol))
    table = display_table(grid, name).assign(verdict=np.where(bad, "FAIL", "ok"))
    print(f"analytic vs centred-difference gradients: h = {args.h:g}, {len(y)} samples, "
          f"d = {X.shape[1]}, lambda = {args.lam:g}, float64")
    print(table.to_string(index=False))
    if bad.any():
        print(f"{int(bad.sum())} parameter(s) exceed --threshold {args.threshold:g} "
              f"(and --atol {args.atol:g})", file=sys.stderr)
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
    from .checkpoint import load_network

    net, meta = load_network(args.model)
    data = _load_data(args, str(net.dtype))
    acc = float(np.mean(net.predict(data.test.X) == data.test.y))
    print(f"{net.config.describe()} from {args.model} (kbn {meta['kbn_version']}): "
          f"test accuracy {100 * acc:.2f} % on {len(data.test.y)} images")
    return 0


def cmd_search(args) -> int:
    from .runs import DataSpec
    from .search import lambda_search

    net_cfg, train_cfg = _network_config(args), _train_config(args)
    search_cfg = SearchConfig(coarse_range=tuple(args.coarse_range), n_coarse=args.n_coarse,
                              n_fine=args.n_fine, fine_halfwidth=args.fine_halfwidth,
                              seed=args.search_seed)
    out = writable_folder(args.out)
    cache = writable_folder(args.cache or out / "cache")
    data = DataSpec(args.data_dir, n_val=args.n_val, subset=args.subset, dtype=train_cfg.dtype)
    print(f"lambda search for {net_cfg.describe()}: {search_cfg.n_coarse} coarse + "
          f"{search_cfg.n_fine} fine trials; finished trials are kept in {cache}",
          file=sys.stderr)
    result = lambda_search(net_cfg, train_cfg, data, search_cfg, progress=not args.quiet,
                           executor=args.executor, cache=cache)
    rows = result.rows()
    with open(out / "trials.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    _write_json(out / "search.json", {
        "search_config": search_cfg.to_dict(), "network_config": net_cfg.to_dict(),
        "train_config": train_cfg.to_dict(), "trials": rows,
        "best": result.best.row()})
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
def build_parser() -> argparse.ArgumentParser:
    fmt = argparse.ArgumentDefaultsHelpFormatter
    parser = argparse.ArgumentParser(prog="kbn", formatter_class=fmt,
                                     description="k-layer networks with batch normalization on CIFAR-10")
    parser.add_argument("--version", action="version", version=f"kbn {__version__}")
    parser.add_argument("--verbose", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("train", formatter_class=fmt, help="train one network and save it",
                       description="Train one network with the given recipe; write the model, "
                                   "its history (CSV, JSON) and its curves (PNG).")
    _add_network_options(p)
    _add_recipe_options(p)
    _add_data_options(p)
    p.add_argument("--executor", default=None,
                   help="where to train: serial (here, the default), process, or a Dask "
                        "scheduler address tcp://host:port")
    p.add_argument("--out", default="runs/train", help="output folder")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train)

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
                   help="random Gaussian inputs instead of CIFAR-10 images")
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
    p.add_argument("--quiet", action="store_true", help="no progress bars")
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
    p.add_argument("--download", action="store_true", help="download into the cache if missing")
    p.set_defaults(func=cmd_data)

    p = sub.add_parser("evaluate", formatter_class=fmt, help="test accuracy of a saved model")
    p.add_argument("model", help="a model.npz written by `kbn train`")
    _add_data_options(p)
    p.set_defaults(func=cmd_evaluate)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("\ninterrupted: finished results are kept; run the same command again to resume",
              file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:  # one clear line, the traceback only on request
        if args.verbose:
            raise
        print(f"kbn {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
