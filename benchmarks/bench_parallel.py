"""Independent trials: one after another with all BLAS threads, or a pool of 1-thread workers.

    python benchmarks/bench_parallel.py               # 4 trials, real CIFAR-10 ($KBN_DATA_DIR)
    python benchmarks/bench_parallel.py --trials 8 --n-s 225

The trials are short real-data trainings (3-layer [50, 50] + BN, 1 cycle of 2 n_s steps,
the full 45k/5k/10k split, float32) that differ only in their seed. Measured in one run:

1. serial: ``run_trials(executor="serial")`` in this process, BLAS with every core
   (the data loaded beforehand, once);
2. pool, cold: ``ProcessExecutor(cores)`` with 1 BLAS thread per worker, timed from
   nothing: worker start-up and each worker loading the data are included;
3. pool, warm: the same pool again on new seeds (workers up, data loaded), i.e. what
   every later batch of a notebook costs.

Also the start-up of an empty pool for each multiprocessing start method. Timings vary
on a shared machine: read the ratios, and rerun when another job is using the cores.
"""

from __future__ import annotations

import argparse
import platform
import time

from kbn import NetworkConfig, TrainConfig
from kbn.executors import ProcessExecutor, SerialExecutor, available_cores, worker_blas_threads
from kbn.runs import DataSpec, TrialSpec, run_trials


def pool_startup(method: str, n: int) -> float:
    """Seconds until ``n`` fresh workers have each answered once."""
    t0 = time.perf_counter()
    with ProcessExecutor(n, blas_threads=1, start_method=method) as ex:
        ex.start()
        elapsed = time.perf_counter() - t0
    return elapsed


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--trials", type=int, default=4)
    p.add_argument("--n-s", type=int, default=450, help="half-cycle in steps (1 cycle = 2 n_s)")
    p.add_argument("--workers", type=int, default=None, help="default: one per core")
    p.add_argument("--data-dir", default=None, help="default: $KBN_DATA_DIR, the cache, download")
    args = p.parse_args(argv)

    cores = available_cores()
    n_workers = args.workers or cores
    data = DataSpec(args.data_dir)
    net = NetworkConfig(hidden=(50, 50), batch_norm=True)
    train = TrainConfig(n_s=args.n_s, n_cycles=1, evals_per_cycle=10)

    def batch(first_seed: int) -> list[TrialSpec]:
        return [TrialSpec(net, train.replace(seed=first_seed + i), data) for i in range(args.trials)]

    print(f"machine: {platform.processor() or platform.machine()}, {cores} cores, "
          f"{platform.python_implementation()} {platform.python_version()}")
    print(f"trials: {args.trials} x {net.describe()}, {train.n_steps} steps of {train.n_batch}, "
          f"{train.n_cycles * train.evals_per_cycle} evaluations, float32, real CIFAR-10")

    print("\npool start-up (empty workers, incl. numpy + kbn import):")
    for method in ("fork", "forkserver", "spawn"):
        print(f"  {method:10s} {pool_startup(method, n_workers):6.2f} s  ({n_workers} workers)")

    t0 = time.perf_counter()
    data.load()
    load = time.perf_counter() - t0
    serial_threads = worker_blas_threads()
    t0 = time.perf_counter()
    serial = run_trials(batch(0), executor=SerialExecutor(), progress=False)
    t_serial = time.perf_counter() - t0

    with ProcessExecutor(n_workers, blas_threads=1) as pool:
        t0 = time.perf_counter()
        cold = run_trials(batch(0), executor=pool, progress=False)
        t_cold = time.perf_counter() - t0
        t0 = time.perf_counter()
        run_trials(batch(args.trials), executor=pool, progress=False)
        t_warm = time.perf_counter() - t0

    same = all(a.history == b.history and a.test_accuracy == b.test_accuracy
               for a, b in zip(serial, cold))
    per_trial = sum(r.wall_time for r in serial) / len(serial)
    per_trial_pool = sum(r.wall_time for r in cold) / len(cold)
    print(f"\ndata load (once per process): {load:.1f} s")
    print(f"serial, 1 process x {serial_threads} BLAS threads: {t_serial:6.1f} s "
          f"({per_trial:.1f} s per trial)")
    print(f"pool, {n_workers} processes x 1 BLAS thread, cold: {t_cold:6.1f} s "
          f"({per_trial_pool:.1f} s per trial; + start-up and data load in each worker)")
    print(f"pool, {n_workers} processes x 1 BLAS thread, warm: {t_warm:6.1f} s")
    print(f"speed-up of the pool: warm {t_serial / t_warm:.2f}x, cold {t_serial / t_cold:.2f}x, "
          f"cold incl. the serial data load {(t_serial + load) / t_cold:.2f}x")
    print(f"identical results serial vs pool: {same}")


if __name__ == "__main__":  # required: the spawn start method imports this module in workers
    main()
