"""Networks per minute of a lambda search: stacked trials against one at a time, in one run.

    python benchmarks/bench_stacking.py                    # 16-trial search, full recipe (~5 min)
    python benchmarks/bench_stacking.py --n-s 225          # 10x fewer steps: a quick try
    python benchmarks/bench_stacking.py --rounds 2         # stacked and alone twice, in turn
    python benchmarks/bench_stacking.py --executor serial  # 1 process, all BLAS threads

The search is the reference recipe's (3-layer [50, 50] + BN, float32, the real 45k/5k/10k
split from ``KBN_DATA_DIR`` or the cache) run through the project's API,
``kbn.search.lambda_search`` with 8 coarse and 8 fine trials, with the default executor
(one worker process per core, 1 BLAS thread each) and no results cache:

1. stacked (``stack=True``, the default): the trials of a stage share their mini-batch
   stream, so ``kbn.runs.run_trials`` trains them side by side, one stack per worker;
2. one at a time (``stack=False``): every trial trains alone, as before stacking.

The two run in turn (``--rounds``), so a slow spell of the shared machine is unlikely to
hit only one of them; the ratio is taken round by round. Every trial must get the same
result both ways (a network gets its lone numbers in a stack: the same lambdas, the same
history, the same accuracies; float32 noise is tolerated and reported).

Also printed: the GEMM floor of the stacks, i.e. the matrix products alone that the
search's stacks perform (each step's and each evaluation's, at the stacks' shapes), timed
in the same kind of worker pool, both workers at once; no training loop can beat it. One
at a time divided by that floor is the ceiling of the ratio: what a stack costing nothing
but its products would reach. And the time per network of a step and an evaluation by
stack size (``--stack-sizes``).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import numpy as np

from kbn import NetworkConfig, SearchConfig, TrainConfig
from kbn.data import N_TRAIN_OFFICIAL
from kbn.executors import get_executor
from kbn.network import EVAL_BLOCK
from kbn.runs import DataSpec, TrialSpec
from kbn.search import lambda_search
from kbn.stacking import plan_stacks
from kbn.trainer import record_steps

D, C = 3072, 10
N_TEST = 10_000  # CIFAR-10's test images
EVAL_ROWS = 10_000  # synthetic rows an evaluation floor streams (then scaled to the split)


def versions() -> str:
    """Python, numpy and its BLAS (the timings depend on them), the CPU."""
    from threadpoolctl import threadpool_info

    blas = [f"{i.get('internal_api')} {i.get('version')} ({i.get('architecture')})"
            for i in threadpool_info() if i.get("user_api") == "blas"]
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return (f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}; "
            f"python {platform.python_version()}, numpy {np.__version__} with {', '.join(blas)}")


def split_rows(subset: int | None, n_val: int) -> tuple[int, int, int]:
    """Rows of the training, validation and test splits of the real data, as
    ``kbn.data`` makes them (a subset keeps the first ``subset`` images of every split)."""
    cap = subset or N_TRAIN_OFFICIAL
    return min(cap, N_TRAIN_OFFICIAL - n_val), min(cap, n_val), min(cap, N_TEST)


def search(net: NetworkConfig, train: TrainConfig, data: DataSpec, search_cfg: SearchConfig,
           stack: bool, executor):
    t0 = time.perf_counter()
    result = lambda_search(net, train, data, search_cfg, executor=executor, stack=stack)
    return time.perf_counter() - t0, result


def compare(a, b) -> tuple[int, int, float]:
    """(trials equal in every recorded number, trials, largest |difference| of a test or
    validation accuracy) between two searches' trials."""
    from kbn.cache import results_equal

    if [t.lam for t in a.trials] != [t.lam for t in b.trials]:
        raise SystemExit("the two searches drew different lambdas: their coarse stages "
                         "differ, so stacked and lone trials did not agree")
    same, worst = 0, 0.0
    for s, l in zip(a.trials, b.trials):
        same += results_equal(s.result, l.result)
        if s.result.diverged != l.result.diverged:
            worst = float("inf")
            continue
        for key in ("test_accuracy", "val_accuracy"):
            x, y = getattr(s.result, key), getattr(l.result, key)
            if not (np.isnan(x) and np.isnan(y)):
                worst = max(worst, abs(x - y))
    return same, len(a.trials), worst


# ---------------------------------------------------------------------- the GEMM floor
def stack_floor(args: tuple[list[int], int, int, int, int]) -> float:
    """Seconds of the GEMMs one stack of K networks performs in a training, run in a worker.

    args: (sizes [d, m_1, ..., C], K, n_batch, n_steps, rows evaluated in all). A step:
    the first layer's x W and x^T dS as one GEMM each for all K networks, (n, d) x (d, K m_1);
    every later layer's x W, x^T dS and dS W^T as stacked (K, ...) products. An evaluation:
    x W of every layer over blocks of rows streamed from memory. The per-step time is the
    fastest of 5 timings of 50 steps, the per-row time of 5 passes over EVAL_ROWS rows.
    """
    sizes, K, n, n_steps, eval_rows = args
    dt = np.float32
    rng = np.random.default_rng(0)
    W1 = rng.standard_normal((sizes[0], K * sizes[1])).astype(dt)
    x1 = rng.standard_normal((n, sizes[0])).astype(dt)
    d1 = rng.standard_normal((n, K * sizes[1])).astype(dt)
    o1, dW1 = np.empty((n, K * sizes[1]), dt), np.empty_like(W1)
    later = []
    for a, b in zip(sizes[1:-1], sizes[2:]):
        W = rng.standard_normal((K, a, b)).astype(dt)
        later.append((W, rng.standard_normal((K, n, a)).astype(dt),
                      rng.standard_normal((K, n, b)).astype(dt), np.empty((K, n, b), dt),
                      np.empty_like(W), np.empty((K, n, a), dt)))

    def steps(k=50):
        for _ in range(k):
            np.matmul(x1, W1, out=o1)
            np.matmul(x1.T, d1, out=dW1)
            for W, x, d, o, dW, dx in later:
                np.matmul(x, W, out=o)
                np.matmul(x.transpose(0, 2, 1), d, out=dW)
                np.matmul(d, W.transpose(0, 2, 1), out=dx)

    X = rng.standard_normal((EVAL_ROWS, sizes[0])).astype(dt)
    blocks = [np.empty((EVAL_BLOCK, K * sizes[1]), dt)]
    blocks += [np.empty((K, EVAL_BLOCK, b), dt) for b in sizes[2:]]
    h = [rng.standard_normal((K, EVAL_BLOCK, a)).astype(dt) for a in sizes[1:-1]]

    def evaluate():
        for start in range(0, EVAL_ROWS, EVAL_BLOCK):
            x = X[start:start + EVAL_BLOCK]
            np.matmul(x, W1, out=blocks[0][:len(x)])
            for (W, *_), a, out in zip(later, h, blocks[1:]):
                np.matmul(a[:, :len(x)], W, out=out[:, :len(x)])

    def best(fn, repeats=3):
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return min(times)

    steps(5)
    per_step = best(steps, 5) / 50
    per_row = best(evaluate, 5) / EVAL_ROWS
    return n_steps * per_step + eval_rows * per_row


def search_floor(net: NetworkConfig, train: TrainConfig, data: DataSpec, n_trials: list[int],
                 executor) -> float:
    """Seconds of the GEMM floor of the search's stages, each stage's stacks as
    ``run_trials`` plans them, timed on ``executor`` (all its workers at once)."""
    n_train, n_val, n_test = split_rows(data.subset, data.n_val)
    eval_rows = len(record_steps(train)) * (n_train + n_val) + n_test
    sizes = [D, *net.hidden, C]
    ex = get_executor(executor, n_trials=max(n_trials))
    try:
        slots = ex.slots
        total = 0.0
        for n in n_trials:
            pairs = [(net, train.replace(lam=1e-3 * (i + 1))) for i in range(n)]
            plan = plan_stacks(pairs, slots)  # as run_trials plans a stage on this executor
            tasks = [(sizes, len(s), train.n_batch, train.n_steps, eval_rows) for s in plan]
            times = [t for _, t in ex.map_unordered(stack_floor, tasks)]
            total += max(max(times), sum(times) / slots)
        return total
    finally:
        if ex is not executor:
            ex.close()


def step_by_stack_size(sizes_k, n_steps=200, repeats=3) -> None:
    """Milliseconds per network of a training step (gather, TrainStep, update) and of an
    evaluation of 10,000 rows, by stack size K, 1 BLAS thread, synthetic data: where the
    gain of a wider stack flattens out (kbn.stacking.FIRST_LAYER_UNITS)."""
    from threadpoolctl import threadpool_limits

    from kbn.network import Network
    from kbn.optim import SGD
    from kbn.schedule import cyclical_lr
    from kbn.stack import NetworkStack
    from kbn.train_step import TrainStep

    rng = np.random.default_rng(0)
    X = rng.standard_normal((20_000, D)).astype(np.float32)
    y = rng.integers(0, C, len(X))
    batches = [rng.choice(len(X), 100, replace=False) for _ in range(n_steps)]
    batch = np.empty((100, D), np.float32)
    print("\nstack size K: ms per network, 1 BLAS thread, 3-layer [50, 50] + BN, float32 "
          "(fastest of 3)")
    with threadpool_limits(1):
        for K in sizes_k:
            nets = [Network.create(NetworkConfig(hidden=[50, 50]), D, C,
                                   np.random.default_rng(k), np.float32) for k in range(K)]
            stack = NetworkStack.from_networks(nets)
            etas = np.tile(cyclical_lr(np.arange(n_steps), 1e-5, 0.1, n_steps // 2)[:, None], K)
            rule, step = SGD(stack, np.full(K, 0.005), etas), TrainStep(stack, 100)

            def train():
                for t, idx in enumerate(batches):
                    np.take(X, idx, axis=0, out=batch, mode="clip")
                    grad_scale, weight_scale = rule.prepare(t)
                    step(batch, y[idx], grad_scale, weight_scale)
                    rule.finish(t, step.grads)
                    rule.apply(step.grads)
                rule.fold()
                step.flush_averages()  # the moving averages the evaluation uses

            def evaluate():
                stack.evaluate(X[:10_000], y[:10_000], np.full(K, 0.005))

            per_step, per_eval = [], []
            for _ in range(repeats):
                t0 = time.perf_counter()
                train()
                t1 = time.perf_counter()
                evaluate()
                per_step.append((t1 - t0) / n_steps / K)
                per_eval.append((time.perf_counter() - t1) / K)
            print(f"  K = {K:2d}: step {min(per_step) * 1e3:.3f} ms, evaluation of 10,000 "
                  f"rows {min(per_eval) * 1e3:.1f} ms")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-s", type=int, default=TrainConfig().n_s,
                        help="half-cycle in steps; 2 cycles (default: %(default)s, the recipe; "
                             "225 for a quick try)")
    parser.add_argument("--n-coarse", type=int, default=8, help="coarse trials (default: %(default)s)")
    parser.add_argument("--n-fine", type=int, default=8, help="fine trials (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="stacked and one-at-a-time searches, in turn (default: %(default)s)")
    parser.add_argument("--subset", type=int, default=None,
                        help="keep the first SUBSET images of each split (default: all)")
    parser.add_argument("--stack-sizes", type=int, nargs="*", default=[1, 2, 4, 8, 16],
                        help="also time a step by stack size K (default: %(default)s; none: skip)")
    parser.add_argument("--executor", default=None,
                        help="as kbn.runs.run_trials takes it (default: the default executor)")
    args = parser.parse_args(argv)

    net = NetworkConfig(hidden=[50, 50], batch_norm=True)
    train = TrainConfig(n_s=args.n_s)
    data = DataSpec(subset=args.subset)
    search_cfg = SearchConfig(n_coarse=args.n_coarse, n_fine=args.n_fine)
    n_trials = args.n_coarse + args.n_fine
    ex = get_executor(args.executor, n_trials=max(args.n_coarse, args.n_fine))
    described = ex.describe()
    ex.close()
    print(f"machine: {versions()}")
    print(f"search: {n_trials} trials ({args.n_coarse} coarse + {args.n_fine} fine) of "
          f"{net.describe()}, {train.n_steps} steps, {len(record_steps(train))} evaluations, "
          f"float32, data {data.folder()} (subset {args.subset}); executor: {described}")
    sys.stdout.flush()

    rounds, floors = [], []
    for r in range(args.rounds):
        order = (True, False) if r % 2 == 0 else (False, True)
        seconds, results = {}, {}
        for stack in order:
            seconds[stack], results[stack] = search(net, train, data, search_cfg, stack,
                                                    args.executor)
        same, total, worst = compare(results[True], results[False])
        # the floor in the same round, so under the same load as the searches
        floors.append(search_floor(net, train, data, [args.n_coarse, args.n_fine], args.executor))
        rounds.append((seconds[True], seconds[False]))
        print(f"round {r + 1}: stacked {seconds[True]:6.1f} s = {n_trials / seconds[True] * 60:5.2f} "
              f"networks/min, one at a time {seconds[False]:6.1f} s = "
              f"{n_trials / seconds[False] * 60:5.2f} networks/min, ratio "
              f"{seconds[False] / seconds[True]:.2f}; GEMM floor of the stacks {floors[-1]:.1f} s; "
              f"results: {same}/{total} trials equal in every number, largest accuracy "
              f"difference {worst:.4f}")
        sys.stdout.flush()
        if worst > 0.02:
            raise SystemExit("stacked and lone trials disagree beyond float32 noise")

    ratios = [alone / stacked for stacked, alone in rounds]
    best_stacked, best_alone, floor = min(s for s, _ in rounds), min(a for _, a in rounds), min(floors)
    print(f"\nnetworks per minute (fastest round of each): stacked {n_trials / best_stacked * 60:.2f}, "
          f"one at a time {n_trials / best_alone * 60:.2f}, GEMM floor of the stacks "
          f"{n_trials / floor * 60:.2f} ({floor:.1f} s)")
    print(f"stacked / one at a time, round by round: {', '.join(f'{x:.2f}' for x in ratios)}; "
          f"stacked wall time / its GEMM floor: {best_stacked / floor:.2f}")
    # a stack that cost nothing beyond its matrix products would reach this ratio, no more
    ceilings = [alone / f for (_, alone), f in zip(rounds, floors)]
    print(f"ceiling of the ratio (one at a time / the stacks' GEMM floor), round by round: "
          f"{', '.join(f'{x:.2f}' for x in ceilings)}")
    print("(timings on a shared machine vary with its load: read the ratios of one round)")
    if args.stack_sizes:
        step_by_stack_size(args.stack_sizes)


if __name__ == "__main__":
    main()
