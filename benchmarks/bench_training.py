"""Training speed of kbn, as ratios against peers measured in the same run.

    python benchmarks/bench_training.py          # steps/s: kbn, GEMM floor, PyTorch if installed
    python benchmarks/bench_training.py --full   # + full-recipe runs on the real data

Peers, all measured in this run on the same shapes:
- the GEMM floor: only the matrix products that a step (or an evaluation) performs, on
  preallocated arrays; a training loop cannot be faster than this;
- PyTorch on the CPU (``pip install -e .[bench]``): the same layers, BN, batch, schedule
  and L2 term, float32, 2 threads;
- float64 against float32.
Timings vary +-25 % run to run on a shared machine: read the ratios, not the seconds.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np

from kbn import NetworkConfig, TrainConfig
from kbn.schedule import cyclical_lr

ARCHS = {"3-layer": [50, 50], "9-layer": [50, 30, 20, 10, 10, 10, 10, 10]}
D, K, N_BATCH, LAM = 3072, 10, 100, 0.005
N_ROWS = 10_000  # synthetic training rows the steps draw their batches from


def best_of(fn, repeats: int = 3) -> float:
    """Fastest of ``repeats`` timings of fn(): the one least disturbed by other load."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def synthetic(dtype, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((N_ROWS, D)).astype(dtype), rng.integers(0, K, N_ROWS)


def batches(n_steps, seed=1):
    """The same random mini-batch indices for every contender."""
    rng = np.random.default_rng(seed)
    return [rng.choice(N_ROWS, N_BATCH, replace=False) for _ in range(n_steps)]


def kbn_steps_per_second(hidden, dtype, n_steps=600) -> float:
    """Update steps per second of kbn.fit itself (its packed update, one final evaluation
    of the 10,000 synthetic rows, which costs about as much as 20 steps)."""
    from types import SimpleNamespace as NS

    from kbn.trainer import fit

    X, y = synthetic(dtype)
    split = NS(X=X, y=y)
    data = NS(train=split, val=NS(X=X[:100], y=y[:100]), test=NS(X=X[:100], y=y[:100]))
    cfg = TrainConfig(n_s=n_steps // 2, n_cycles=1, evals_per_cycle=1, dtype=np.dtype(dtype).name)
    net = NetworkConfig(hidden=hidden)
    fit(net, cfg.replace(n_s=20), data)  # warm-up
    return n_steps / best_of(lambda: fit(net, cfg, data))


def gemm_floor_seconds(hidden, dtype, n_steps=400, n_eval_rows=50_000) -> tuple[float, float]:
    """(seconds per step, seconds per evaluation of n_eval_rows) spent in GEMMs alone.

    A step does x W (every layer), x^T dS (every layer) and dS W^T (all but the first).
    """
    rng = np.random.default_rng(0)
    sizes = [D, *hidden, K]
    Ws = [rng.standard_normal((a, b)).astype(dtype) for a, b in zip(sizes[:-1], sizes[1:])]
    xs = [rng.standard_normal((N_BATCH, a)).astype(dtype) for a in sizes[:-1]]
    ds = [rng.standard_normal((N_BATCH, b)).astype(dtype) for b in sizes[1:]]
    outs = [np.empty((N_BATCH, b), dtype) for b in sizes[1:]]
    dWs = [np.empty_like(W) for W in Ws]
    dxs = [np.empty((N_BATCH, a), dtype) for a in sizes[:-1]]

    def step_gemms():
        for _ in range(n_steps):
            for l, W in enumerate(Ws):
                np.matmul(xs[l], W, out=outs[l])
                np.matmul(xs[l].T, ds[l], out=dWs[l])
                if l:
                    np.matmul(ds[l], W.T, out=dxs[l])

    block = 10_000  # kbn evaluates in blocks of this many rows
    xe = [rng.standard_normal((block, a)).astype(dtype) for a in sizes[:-1]]
    oe = [np.empty((block, b), dtype) for b in sizes[1:]]

    def eval_gemms():
        for l, W in enumerate(Ws):
            np.matmul(xe[l], W, out=oe[l])

    step_gemms()
    per_step = best_of(step_gemms) / n_steps
    per_eval = best_of(eval_gemms, 5) * n_eval_rows / block
    return per_step, per_eval


def torch_steps_per_second(hidden, n_steps=400, threads=2):
    """The same network and update in PyTorch (float32, CPU); None if torch is missing."""
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    X, y = synthetic(np.float32)
    X, y = torch.from_numpy(X), torch.from_numpy(y)
    idx = [torch.from_numpy(i) for i in batches(n_steps)]
    mods, sizes = [], [D, *hidden]
    for a, b in zip(sizes[:-1], sizes[1:]):
        # momentum = 1 - alpha: torch weights the new batch by momentum
        mods += [torch.nn.Linear(a, b), torch.nn.BatchNorm1d(b, eps=1e-8, momentum=0.2),
                 torch.nn.ReLU()]
    mods.append(torch.nn.Linear(sizes[-1], K))
    model = torch.nn.Sequential(*mods)
    weights = [m.weight for m in model if isinstance(m, torch.nn.Linear)]
    loss_fn = torch.nn.CrossEntropyLoss()

    def run():
        for t, i in enumerate(idx):
            eta = cyclical_lr(t, 1e-5, 1e-1, 2250)
            loss = loss_fn(model(X[i]), y[i]) + LAM * sum((W * W).sum() for W in weights)
            model.zero_grad(set_to_none=True)
            loss.backward()
            with torch.no_grad():
                for p in model.parameters():
                    p -= eta * p.grad

    run()
    return n_steps / best_of(run)


def full_recipe(hidden, dtype):
    from kbn.data import load_cifar10
    from kbn.trainer import fit

    data = load_cifar10(dtype=np.dtype(dtype), progress=False)
    result = fit(NetworkConfig(hidden=hidden), TrainConfig(dtype=dtype), data)
    return result.wall_time, result.test_accuracy


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", action="store_true",
                        help="also time full-recipe runs on the real data (KBN_DATA_DIR or cache)")
    args = parser.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, numpy {np.__version__}")
    cfg = TrainConfig()
    n_evals = cfg.n_cycles * cfg.evals_per_cycle
    full = {}
    if args.full:  # first: PyTorch's OpenMP threads keep spinning for a while after its runs
        for name, hidden in ARCHS.items():
            for dtype in ("float32", "float64"):
                full[name, dtype] = full_recipe(hidden, dtype)
    print(f"\nsteps/s, BN networks, batch {N_BATCH} (higher is better)")
    print(f"{'network':9s} {'dtype':8s} {'kbn':>7s} {'floor':>7s} {'kbn/floor':>9s} "
          f"{'torch':>7s} {'kbn/torch':>9s}")
    floors = {}
    for name, hidden in ARCHS.items():
        for dtype in ("float32", "float64"):
            rate = kbn_steps_per_second(hidden, np.dtype(dtype))
            per_step, per_eval = gemm_floor_seconds(hidden, np.dtype(dtype))
            floors[name, dtype] = cfg.n_steps * per_step + n_evals * per_eval
            torch_rate = torch_steps_per_second(hidden) if dtype == "float32" else None
            t = f"{torch_rate:7.0f} {rate / torch_rate:9.2f}" if torch_rate else f"{'-':>7s} {'-':>9s}"
            print(f"{name:9s} {dtype:8s} {rate:7.0f} {1 / per_step:7.0f} {rate * per_step:9.2f} {t}")
    print(f"\nGEMM floor of the full recipe ({cfg.n_steps} steps + {n_evals} evaluations of "
          f"50,000 images):")
    for (name, dtype), seconds in floors.items():
        print(f"  {name:9s} {dtype:8s} {seconds:6.1f} s")
    if full:
        print("\nfull recipe on the real data (wall time of kbn.fit, test accuracy):")
        for (name, dtype), (seconds, acc) in full.items():
            print(f"  {name:9s} {dtype:8s} {seconds:6.1f} s = "
                  f"{seconds / floors[name, dtype]:.2f}x the GEMM floor, test accuracy {acc:.4f}")


if __name__ == "__main__":
    main()
