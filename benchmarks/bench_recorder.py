"""What the recorder (kbn.recorder) costs: nothing when off, a little per evaluation point on.

    python benchmarks/bench_recorder.py [--rounds 5] [--steps 2000]

Three contenders on the same synthetic data and shapes (3-layer [50, 50] + BN, batches of
100, float32), timed in turn, fastest of the rounds:
- the bare update loop: TrainStep + SGD on the trainer's batches, no evaluation, no
  recorder code at all (the floor of any trainer);
- ``fit`` with the recorder off (the default), evaluating twice;
- ``fit`` with ``recorder=RecorderConfig()`` on, at step 0 and at the same two points.
The line to read: fit off / bare loop (the recorder adds no code to the step, so this is
the cost of the loop's bookkeeping and the two evaluations, whatever the recorder), and
the seconds one observation takes. Timings on a shared machine vary: read the ratios.
"""

from __future__ import annotations

import argparse
import time
from types import SimpleNamespace

import numpy as np

from kbn import NetworkConfig, TrainConfig
from kbn.bn_after_relu import train_step_for
from kbn.network import Network
from kbn.optim import SGD
from kbn.recorder import RecorderConfig
from kbn.schedule import cyclical_lr
from kbn.stack import NetworkStack
from kbn.trainer import fit

D, C, N = 3072, 10, 10_000


def data(seed=0):
    rng = np.random.default_rng(seed)
    split = lambda n: SimpleNamespace(X=rng.standard_normal((n, D)).astype(np.float32),  # noqa: E731
                                      y=rng.integers(0, C, n))
    return SimpleNamespace(train=split(N), val=split(1000), test=split(1000),
                           class_names=[str(i) for i in range(C)])


def bare_loop(net_cfg: NetworkConfig, cfg: TrainConfig, d) -> None:
    """The update alone, as the trainer runs it, for cfg.n_steps steps."""
    rng = np.random.default_rng(cfg.seed)
    stack = NetworkStack.from_networks([Network.create(net_cfg, D, C, rng, np.float32)])
    etas = cyclical_lr(np.arange(cfg.n_steps), cfg.eta_min, cfg.eta_max, cfg.n_s)[:, None]
    rule, step = SGD(stack, np.array([cfg.lam]), etas), train_step_for(stack, cfg.n_batch)
    batch = np.empty((cfg.n_batch, D), np.float32)
    per_epoch = N // cfg.n_batch
    for t in range(cfg.n_steps):
        if t % per_epoch == 0:  # a new epoch: a new shuffle, as the trainer does
            order = rng.permutation(N)
        j = t % per_epoch
        idx = order[j * cfg.n_batch:(j + 1) * cfg.n_batch]
        np.take(d.train.X, idx, axis=0, out=batch, mode="clip")
        g, c = rule.prepare(t)
        step(batch, d.train.y[idx], g, c)
        rule.finish(t, step.grads)
        rule.apply(step.grads)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=2000, help="update steps per run (even)")
    args = p.parse_args()
    d = data()
    net = NetworkConfig()
    cfg = TrainConfig(n_s=args.steps // 2, n_cycles=1, evals_per_cycle=2)
    rec = RecorderConfig()
    times = {"bare loop": [], "fit, recorder off": [], "fit, recorder on": []}
    for _ in range(args.rounds):
        for name, fn in (("bare loop", lambda: bare_loop(net, cfg, d)),
                         ("fit, recorder off", lambda: fit(net, cfg, d)),
                         ("fit, recorder on", lambda: fit(net, cfg, d, recorder=rec))):
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    best = {k: min(v) for k, v in times.items()}
    for k, v in best.items():
        print(f"{k:>20}: {v:7.3f} s  ({cfg.n_steps / v:7.0f} steps/s)  fastest of {args.rounds}")
    n_obs = 1 + len(range(2))  # step 0 and the two evaluation points
    print(f"fit off / bare loop: {best['fit, recorder off'] / best['bare loop']:.3f}  "
          f"(two evaluations and the loop's bookkeeping; no recorder code runs)")
    print(f"recorder on: {(best['fit, recorder on'] - best['fit, recorder off']) / n_obs:.3f} s "
          f"per observation ({n_obs} observations)")


if __name__ == "__main__":
    main()
