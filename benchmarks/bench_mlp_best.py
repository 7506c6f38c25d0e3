"""How long would a full run of a preset take here? Times a short run of it and extrapolates.

    python benchmarks/bench_mlp_best.py [--preset mlp-best] [--steps 300]

Trains the preset (chapter 6's best configuration by default) on the real data for
``--steps`` update steps with one evaluation point, twice (the second without the first's
start-up), and prints seconds per step, seconds per evaluation point, and the predicted
wall time of the preset's full schedule: steps x s/step + points x s/point. Run it on a
quiet machine: on a shared one the numbers say more about the neighbours.
"""

from __future__ import annotations

import argparse
import time

from kbn import fit, load_cifar10
from kbn.presets import preset_configs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="mlp-best")
    ap.add_argument("--steps", type=int, default=300)
    args = ap.parse_args()
    net, train = preset_configs(args.preset)
    data = load_cifar10()
    short = train.replace(n_s=args.steps // 2, n_cycles=1, evals_per_cycle=1)
    fit(net, short.replace(n_s=10), data)  # warm-up: buffers, BLAS threads, page cache
    t0 = time.perf_counter()
    r = fit(net, short, data)
    total = time.perf_counter() - t0
    # one evaluation point: the training and validation splits in evaluation mode
    from kbn.stack import NetworkStack
    import numpy as np

    stack = NetworkStack.from_networks([r.network])
    t1 = time.perf_counter()
    stack.evaluate(data.train.X, data.train.y, np.zeros(1))
    stack.evaluate(data.val.X, data.val.y, np.zeros(1))
    per_point = time.perf_counter() - t1
    per_step = (total - per_point) / short.n_steps
    points = train.n_cycles * train.evals_per_cycle
    predicted = per_step * train.n_steps + per_point * points
    print(f"{args.preset}: {net.describe()}, batch {train.n_batch}, {train.optimizer}, "
          f"flip={train.flip}, shift={train.shift}, dropout={train.dropout}")
    print(f"  {1000 * per_step:.1f} ms/step, {per_point:.1f} s per evaluation point")
    print(f"  full schedule: {train.n_steps} steps + {points} points -> predicted "
          f"{predicted / 60:.1f} min (test accuracy of this short run: {100 * r.test_accuracy:.1f} %)")


if __name__ == "__main__":
    main()
