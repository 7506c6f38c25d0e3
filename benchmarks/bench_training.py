"""Training speed of kbn, as ratios against peers measured in the same run.

    python benchmarks/bench_training.py            # steps/s, 3- and 9-layer, float32/64
    python benchmarks/bench_training.py --full     # + full-recipe runs on the real data

Peers measured in this run:
- the GEMM floor: the time the three matrix products of a step's first layer (the bulk of its
  FLOPs) take at this machine's float32 GEMM speed, for a step of the same shape;
- float64 against float32.
Timings vary +-25 % run to run on a shared machine; compare ratios within one run.
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np

from kbn import NetworkConfig, TrainConfig
from kbn.network import Network

ARCHS = {"3-layer": [50, 50], "9-layer": [50, 30, 20, 10, 10, 10, 10, 10]}


def best_of(fn, repeats: int) -> float:
    """Fastest of ``repeats`` timings of fn() (the least disturbed by other load)."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def steps_per_second(hidden, dtype, n_batch=100, d=3072, n_steps=300, repeats=3) -> float:
    """Update steps per second (forward, backward, update) on random data of CIFAR shape."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((n_batch * 50, d)).astype(dtype)
    y = rng.integers(0, 10, n_batch * 50)
    net = Network.create(NetworkConfig(hidden=hidden), d, 10, rng, dtype)

    def run():
        for t in range(n_steps):
            j = (t % 50) * n_batch
            _, _, grads = net.cost_and_grads(X[j:j + n_batch], y[j:j + n_batch], 0.005,
                                             update_averages=True)
            for k, g in grads.items():
                net.params[k] -= 1e-3 * g

    return n_steps / best_of(run, repeats)


def gemm_floor_steps_per_second(m, dtype, n_batch=100, d=3072, n_steps=300, repeats=3) -> float:
    """Steps/s if a step cost only its first layer's three GEMMs (x W, x^T dS; no dX)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n_batch, d)).astype(dtype)
    W = rng.standard_normal((d, m)).astype(dtype)
    ds = rng.standard_normal((n_batch, m)).astype(dtype)
    out, dW = np.empty((n_batch, m), dtype), np.empty((d, m), dtype)

    def run():
        for _ in range(n_steps):
            np.matmul(x, W, out=out)
            np.matmul(x.T, ds, out=dW)

    return n_steps / best_of(run, repeats)


def full_recipe(hidden, dtype):
    from kbn.data import load_cifar10
    from kbn.trainer import fit

    data = load_cifar10(dtype=np.dtype(dtype))
    result = fit(NetworkConfig(hidden=hidden), TrainConfig(dtype=dtype), data)
    return result.wall_time, result.test_accuracy


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", action="store_true", help="also time full-recipe runs on the real data")
    args = parser.parse_args()
    print(f"machine: {platform.machine()}, {platform.processor() or 'cpu'}, numpy {np.__version__}")
    print(f"{'network':10s} {'dtype':8s} {'steps/s':>9s} {'GEMM floor':>11s} {'kbn/floor':>10s}")
    rates = {}
    for name, hidden in ARCHS.items():
        for dtype in ("float32", "float64"):
            rate = steps_per_second(hidden, np.dtype(dtype))
            floor = gemm_floor_steps_per_second(hidden[0], np.dtype(dtype))
            rates[name, dtype] = rate
            print(f"{name:10s} {dtype:8s} {rate:9.0f} {floor:11.0f} {rate / floor:10.2f}")
    for name in ARCHS:
        print(f"{name}: float32 is {rates[name, 'float32'] / rates[name, 'float64']:.2f}x "
              f"as fast as float64")
    if args.full:
        print("\nfull recipe (9,000 steps + 20 evaluations, real data):")
        times = {}
        for name, hidden in ARCHS.items():
            for dtype in ("float32", "float64"):
                seconds, acc = full_recipe(hidden, dtype)
                times[name, dtype] = seconds
                print(f"{name:10s} {dtype:8s} {seconds:7.1f} s  test accuracy {acc:.4f}")
        for name in ARCHS:
            print(f"{name}: float64 run takes {times[name, 'float64'] / times[name, 'float32']:.2f}x "
                  f"the float32 run")


if __name__ == "__main__":
    main()
