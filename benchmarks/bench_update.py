"""The optimiser's update of a large network: one pass over the whole buffer vs cache blocks.

    python benchmarks/bench_update.py [--hidden 1024 512 256] [--rounds 15]

Nesterov momentum (chapter 6's ``mlp-best`` update) on the weights of a float32 network,
each update after the two first-layer GEMMs of a step (batch 200) as in training, so the
caches hold what they hold there. ``kbn.optim.BLOCK`` set to the whole buffer (the old
one-pass update) and to its default, in turn, round by round in one process; prints the
median and fastest milliseconds per (GEMMs + update) and the GEMMs alone.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import kbn.optim as optim
from kbn import NetworkConfig
from kbn.network import Network
from kbn.stack import NetworkStack


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hidden", type=int, nargs="+", default=[1024, 512, 256])
    ap.add_argument("--rounds", type=int, default=15)
    args = ap.parse_args()
    net = Network.create(NetworkConfig(hidden=args.hidden), 3072, 10,
                         np.random.default_rng(0), np.float32)
    stack = NetworkStack.from_networks([net])
    grads = NetworkStack(stack.configs, stack.sizes, stack.dtype)
    rng = np.random.default_rng(1)
    grads.weights[...] = rng.standard_normal(grads.weights.shape) * 1e-3
    A = rng.standard_normal((200, 3072)).astype(np.float32)
    B = stack.W[0]
    C, D = np.empty((200, B.shape[1]), np.float32), np.empty(B.shape, np.float32)
    etas = np.full((10 ** 5, 1), 0.01)
    default = optim.BLOCK
    rules = {}
    for name, block in (("one pass", 10 ** 12), (f"blocks of {default}", default)):
        optim.BLOCK = block  # read when the rule makes its blocks (its first update)
        rule = optim.Momentum(stack, np.array([2.5e-4]), etas, 0.9, nesterov=True)
        rule.prepare(0)
        rule.apply(grads)
        rules[name] = rule
    optim.BLOCK = default

    def gemms():
        np.matmul(A, B, out=C)
        np.matmul(A.T, C, out=D)

    times = {name: [] for name in [*rules, "GEMMs alone"]}
    for _ in range(args.rounds):
        for name in times:
            rule = rules.get(name)
            t0 = time.perf_counter()
            for i in range(20):
                gemms()
                if rule is not None:
                    rule.prepare(i)
                    rule.apply(grads)
            times[name].append((time.perf_counter() - t0) / 20 * 1000)
    print(f"{stack.weights.size:,} weights ({args.hidden}), float32, Nesterov, "
          f"{args.rounds} rounds of 20 updates")
    for name, t in times.items():
        print(f"  {name:>20}: median {np.median(t):6.2f} ms, fastest {min(t):6.2f} ms")


if __name__ == "__main__":
    main()
