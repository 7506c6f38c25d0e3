"""How close a cold build's trainings ran to this machine's GEMM floor.

    python benchmarks/bench_build_floor.py CACHE [--seconds S] [--goal 360]

CACHE is the results cache a cold build filled (``_build/cache`` beside ``_config.yml``,
or a folder given to the chapters as ``-p cache``). Every result in it records its
architecture, schedule, evaluation points and the size of the stack it trained in. For
each (architecture, stack size, steps, rows evaluated) the matrix products alone that
such a training performs (every step's, and the recipe's evaluations at the recorded points
and of the test split, at the stack's shapes: ``bench_stacking.stack_floor``, float32) are
timed in the default worker pool, all workers at once, as the build runs them. The sum over
the cache's trainings, per network, divided by the workers, is the least wall time in which
any training loop could have produced those results in those stacks, with this BLAS and
this pool. It is a lower bound: the extra passes of options (PreciseBN, BN variants, kept
test probabilities, the recorder) are left out, and so is the wait for the last stack.

The trainings' own recorded time (``Result.wall_time``, a stack's time shared among its
networks; a member that diverged keeps the share of the steps it ran) is printed beside it,
summed as if each had held one worker: a training that ran alone on every core (chapter
6's) counts its wall time, not its CPU time, and the floor times it on one thread.
The row counts assume CIFAR-10's sizes (50,000 training and 10,000 test images); results of
another precision than float32 are left out and counted; a cache that holds results of more
than one version of the code (not cold) is said so.

``--seconds``: the build's measured wall time of those trainings, to print its ratio to the
floor; ``--goal``: a target time to compare the floor with (default: 6 minutes).
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_stacking import split_rows, stack_floor, versions  # noqa: E402

from kbn.cache import ResultCache  # noqa: E402
from kbn.data import N_CLASSES, N_FEATURES  # noqa: E402
from kbn.executors import get_executor  # noqa: E402


def shapes_of(folder: Path) -> tuple[Counter, float, Counter]:
    """({(widths, K, n_batch, steps, rows evaluated): trainings}, their recorded seconds,
    {what was left out or noted: how many}) of the results in the cache ``folder``, as
    kbn's own cache reads and checks them (it sets aside, and names, an altered entry)."""
    cache = ResultCache(folder)
    counts, seconds, notes = Counter(), 0.0, Counter()
    for key in cache.keys():
        entry = cache.entry(key)
        if entry is None:  # rejected by the cache's checks (it says why)
            notes["rejected by the cache"] += 1
            continue
        record, result = entry
        spec = record.get("spec") or {}
        notes[f"code {str(spec.get('code'))[:12]}"] += 1
        if result.train_config.dtype != "float32":
            notes[f"left out: {result.train_config.dtype}"] += 1
            continue
        data = spec.get("data") or {}
        n_train, n_val, n_test = split_rows(data.get("subset"), data.get("n_val", 5_000))
        # each evaluation point reads the training and validation splits, the end the test
        # split once
        points = len(result.history["step"])  # the evaluations the trainer recorded
        if result.diverged:  # stopped in step diverged_at (0-based); no test evaluation
            steps, evaluated = result.diverged_at + 1, points * (n_train + n_val)
        else:
            steps, evaluated = result.train_config.n_steps, points * (n_train + n_val) + n_test
        widths = (N_FEATURES, *result.network_config.hidden, N_CLASSES)
        counts[(widths, result.stack_size, result.train_config.n_batch, steps, evaluated)] += 1
        seconds += result.wall_time
    return counts, seconds, notes


def floor_seconds(counts: Counter, times: list[float]) -> tuple[float, list[float]]:
    """(core-seconds of the floor, seconds per network of each shape): ``times[j]`` is a
    whole stack's floor for the j-th shape of ``counts``, shared by its K networks."""
    per_network = [t / shape[1] for shape, t in zip(counts, times)]
    return sum(n * p for n, p in zip(counts.values(), per_network)), per_network


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("cache", type=Path, help="a results cache a cold build filled")
    parser.add_argument("--seconds", type=float, default=None,
                        help="the measured wall time of those trainings (s), for its ratio")
    parser.add_argument("--goal", type=float, default=360.0,
                        help="a target wall time (s) to compare the floor with (default: 360)")
    args = parser.parse_args(argv)

    if not args.cache.is_dir():
        raise SystemExit(f"{args.cache} is not a folder: give the results cache a cold "
                         "build filled (e.g. _build/cache)")
    counts, recorded, notes = shapes_of(args.cache)
    if not counts:
        raise SystemExit(f"{args.cache} holds no float32 results (*.json): build the chapters "
                         "first")
    ex = get_executor(None, n_trials=2 * len(counts))
    print(f"machine: {versions()}")
    print(f"cache: {args.cache}, {sum(counts.values())} trainings; executor: {ex.describe()}")
    codes = [k for k in notes if k.startswith("code ")]
    if len(codes) > 1:
        print(f"note: the cache holds results of {len(codes)} versions of the code "
              f"({', '.join(f'{k[5:]}: {notes[k]}' for k in codes)}): not one cold build")
    for k, n in notes.items():
        if not k.startswith("code "):
            print(f"note: {n} result(s) {k}")
    try:
        slots = ex.slots
        shapes = list(counts)
        # every shape once per worker, so all workers are busy at once as in the build;
        # the fastest of a shape's timings is kept
        tasks = [(list(w), k, n, steps, rows) for (w, k, n, steps, rows) in shapes] * max(1, slots)
        times = [np.inf] * len(shapes)
        for i, t in ex.map_unordered(stack_floor, tasks):
            j = i % len(shapes)
            times[j] = min(times[j], t)
    finally:
        ex.close()

    core_seconds, per_network = floor_seconds(counts, times)
    print(f"\n{'layers':>7} {'stack':>5} {'steps':>6} {'rows':>9} {'trainings':>9} "
          f"{'floor per network':>18}")
    for (widths, k, n, steps, rows), m, p in zip(shapes, counts.values(), per_network):
        print(f"{len(widths) - 1:>7} {k:>5} {steps:>6} {rows:>9} {m:>9} {p:>16.2f} s")
    floor = core_seconds / slots
    print(f"\nGEMM floor of these trainings: {core_seconds:.0f} core-seconds = {floor:.0f} s "
          f"on {slots} workers (with no other work and no idle worker)")
    print(f"their recorded training time: {recorded:.0f} s summed = {recorded / slots:.0f} s on "
          f"{slots} workers, {recorded / core_seconds:.2f}x the floor")
    if args.seconds:
        print(f"the build's measured {args.seconds:.0f} s is {args.seconds / floor:.2f}x the floor")
    if args.goal < floor:
        print(f"a goal of {args.goal:.0f} s is {args.goal / floor:.2f}x the floor: below it, so no "
              f"training loop reaches it with these trainings in these stacks on this machine")
    else:
        print(f"a goal of {args.goal:.0f} s is {args.goal / floor:.2f}x the floor: the trainings "
              f"(and everything else the build does) would have to fit in that")


if __name__ == "__main__":
    main()
