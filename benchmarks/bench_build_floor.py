"""How close a cold build's trainings ran to this machine's GEMM floor.

    python benchmarks/bench_build_floor.py CACHE [--seconds S] [--goal 360]

CACHE is the results cache a cold build filled (``_build/cache`` beside ``_config.yml``,
or a folder given to the chapters as ``-p cache``). Every result in it records its
architecture, schedule, evaluation points and the size of the stack it trained in. For
each (architecture, stack size) the matrix products alone that such a training performs
(every step's and every evaluation's, at the stack's shapes: ``bench_stacking.stack_floor``)
are timed in the default worker pool, all workers at once, as the build runs them. The sum
over the cache's trainings, per network, divided by the workers, is the least wall time in
which any training loop could have produced those results on this machine in these stacks;
the trainings' own recorded time (``Result.wall_time``, a stack's time shared among its
networks) is printed beside it.

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
from bench_stacking import stack_floor, versions  # noqa: E402

from kbn.cache import ResultCache  # noqa: E402
from kbn.data import N_CLASSES, N_FEATURES  # noqa: E402
from kbn.executors import get_executor  # noqa: E402
from kbn.trainer import record_steps  # noqa: E402

N_TRAIN_VAL, N_TEST = 50_000, 10_000  # CIFAR-10's training and test images


def shapes_of(folder: Path) -> tuple[Counter, float]:
    """({(widths, K, n_batch, steps, rows evaluated): trainings}, their recorded seconds)
    of every result in the cache ``folder`` (read and checked by kbn's own cache)."""
    cache = ResultCache(folder)
    counts, seconds = Counter(), 0.0
    for key in cache.keys():
        entry = cache.entry(key)
        if entry is None:  # rejected by the cache's checks (it says why)
            continue
        record, result = entry
        data = (record.get("spec") or {}).get("data") or {}
        cap, n_val = data.get("subset") or N_TRAIN_VAL, data.get("n_val", 5_000)
        # each evaluation point reads the training and validation splits, the end the test
        # split once (a subset keeps the first ``cap`` images of every split)
        per_point = min(cap, N_TRAIN_VAL - n_val) + min(cap, n_val)
        test = min(cap, N_TEST)
        points = record_steps(result.train_config)
        if result.diverged:  # it stopped there: count what it did
            steps = result.diverged_at
            evaluated = int(np.sum(points <= steps)) * per_point
        else:
            steps = result.train_config.n_steps
            evaluated = len(points) * per_point + test
        widths = (N_FEATURES, *result.network_config.hidden, N_CLASSES)
        counts[(widths, result.stack_size, result.train_config.n_batch, steps, evaluated)] += 1
        seconds += result.wall_time
    return counts, seconds


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
    counts, recorded = shapes_of(args.cache)
    if not counts:
        raise SystemExit(f"{args.cache} holds no results (*.json): build the chapters first")
    ex = get_executor(None, n_trials=2 * len(counts))
    print(f"machine: {versions()}")
    print(f"cache: {args.cache}, {sum(counts.values())} trainings; executor: {ex.describe()}")
    try:
        slots = ex.slots
        shapes = list(counts)
        # every shape twice, so all workers are busy at once as in the build; the faster kept
        tasks = [(list(w), k, n, steps, rows) for (w, k, n, steps, rows) in shapes] * max(1, slots)
        times: dict[int, float] = {}
        for i, t in ex.map_unordered(stack_floor, tasks):
            j = i % len(shapes)
            times[j] = min(times.get(j, np.inf), t)
    finally:
        ex.close()

    print(f"\n{'layers':>7} {'stack':>5} {'trainings':>9} {'floor per network':>18}")
    core_seconds = 0.0
    for j, (widths, k, n, steps, rows) in enumerate(shapes):
        per_network = times[j] / k
        core_seconds += counts[shapes[j]] * per_network
        print(f"{len(widths) - 1:>7} {k:>5} {counts[shapes[j]]:>9} {per_network:>16.2f} s")
    floor = core_seconds / slots
    print(f"\nGEMM floor of these trainings: {core_seconds:.0f} core-seconds = {floor:.0f} s "
          f"on {slots} workers (with no other work and no idle worker)")
    print(f"their recorded training time: {recorded:.0f} core-seconds = {recorded / slots:.0f} s "
          f"on {slots} workers, {recorded / core_seconds:.2f}x the floor")
    if args.seconds:
        print(f"the build's measured {args.seconds:.0f} s is {args.seconds / floor:.2f}x the floor")
    if args.goal < floor:
        print(f"a goal of {args.goal:.0f} s is {args.goal / floor:.2f}x the floor: below it, so no "
              f"training loop reaches it with these trainings on this machine")
    else:
        print(f"a goal of {args.goal:.0f} s is {args.goal / floor:.2f}x the floor: the trainings "
              f"(and everything else the build does) would have to fit in that")


if __name__ == "__main__":
    main()
