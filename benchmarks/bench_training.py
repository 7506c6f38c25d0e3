"""Training speed of kbn, as ratios against peers measured in the same run.

    python benchmarks/bench_training.py          # steps/s: kbn, GEMM floor, PyTorch if installed
    python benchmarks/bench_training.py --full   # + full-recipe runs on the real data

Peers, all measured in this run on the same shapes:
- the GEMM floor: only the matrix products that a step (or an evaluation) performs, on
  preallocated arrays (a step's operands in cache; an evaluation streams its rows from
  memory, as kbn's does); a training loop cannot be faster than this;
- PyTorch on the CPU (``pip install -e .[bench]``), as a competent user writes it: the
  same layers and BN as ``torch.nn`` modules, ``optim.SGD`` with ``weight_decay = 2 lam``
  on the weights, the data as tensors and the batch indexed, float32, 2 threads; for
  full recipes also its evaluations (``no_grad``, evaluation mode);
- float64 against float32.
kbn, the floor and PyTorch are timed in turn, several rounds, and the fastest of each is
compared; full recipes run several times, also in turn. Timings on a shared machine vary
by +-25 % and, while its memory is contended, by 2-3x: read the ratios, not the seconds.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np

from kbn import NetworkConfig, TrainConfig
from kbn.network import EVAL_BLOCK
from kbn.schedule import cyclical_lr

ARCHS = {"3-layer": [50, 50], "9-layer": [50, 30, 20, 10, 10, 10, 10, 10]}
D, K, N_BATCH, LAM = 3072, 10, 100, 0.005
N_ROWS = 10_000  # synthetic training rows the steps draw their batches from


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def best_of(fn, repeats: int = 3) -> float:
    """Fastest of ``repeats`` timings of fn(): the one least disturbed by other load."""
    return min(timed(fn) for _ in range(repeats))


def synthetic(dtype, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((N_ROWS, D)).astype(dtype), rng.integers(0, K, N_ROWS)


def batches(n_steps, seed=1):
    """The same random mini-batch indices for every contender."""
    rng = np.random.default_rng(seed)
    return [rng.choice(N_ROWS, N_BATCH, replace=False) for _ in range(n_steps)]


def kbn_run(hidden, dtype, n_steps=1200):
    """A function timing one kbn.fit of n_steps on synthetic data: seconds per step (its
    buffered step and update, and one final evaluation of the 10,000 rows, ~2 % of it)."""
    from types import SimpleNamespace as NS

    from kbn.trainer import fit

    X, y = synthetic(dtype)
    split = NS(X=X, y=y)
    data = NS(train=split, val=NS(X=X[:100], y=y[:100]), test=NS(X=X[:100], y=y[:100]))
    cfg = TrainConfig(n_s=n_steps // 2, n_cycles=1, evals_per_cycle=1, dtype=np.dtype(dtype).name)
    net = NetworkConfig(hidden=hidden)
    fit(net, cfg.replace(n_s=20), data)  # warm-up
    return lambda: timed(lambda: fit(net, cfg, data)) / n_steps


def gemm_floor_run(hidden, dtype, n_steps=400, n_eval_rows=50_000):
    """A function timing the GEMMs alone, on preallocated arrays: (seconds per step,
    seconds per evaluation of n_eval_rows), each the fastest of a few timings.

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

    # An evaluation streams its images from memory in blocks of EVAL_BLOCK rows, as kbn
    # does: the first layer reads them from the synthetic training set (larger than the
    # caches), the later layers read the block's activations.
    X, _ = synthetic(dtype)
    block = EVAL_BLOCK
    xe = [None] + [rng.standard_normal((block, a)).astype(dtype) for a in sizes[1:-1]]
    oe = [np.empty((block, b), dtype) for b in sizes[1:]]

    def eval_gemms():
        for start in range(0, N_ROWS, block):
            xe[0] = X[start:start + block]
            for l, W in enumerate(Ws):
                np.matmul(xe[l], W, out=oe[l])

    step_gemms()
    return lambda: (best_of(step_gemms, 2) / n_steps,
                    best_of(eval_gemms, 3) * n_eval_rows / N_ROWS)


def torch_model(hidden):
    """The network as a PyTorch user writes it: Linear -> BatchNorm1d -> ReLU per hidden
    layer, a Linear output, and ``optim.SGD`` with ``weight_decay = 2 lam`` on the weights
    only (the cost's lam ||W||^2 has gradient 2 lam W; biases and BN are not decayed)."""
    import torch

    mods, sizes = [], [D, *hidden]
    for a, b in zip(sizes[:-1], sizes[1:]):
        # momentum = 1 - alpha: torch weights the new batch by momentum
        mods += [torch.nn.Linear(a, b), torch.nn.BatchNorm1d(b, eps=1e-8, momentum=0.2),
                 torch.nn.ReLU()]
    mods.append(torch.nn.Linear(sizes[-1], K))
    model = torch.nn.Sequential(*mods)
    weights = [m.weight for m in model if isinstance(m, torch.nn.Linear)]
    others = [p for p in model.parameters() if all(p is not w for w in weights)]
    opt = torch.optim.SGD([{"params": weights, "weight_decay": 2 * LAM},
                           {"params": others, "weight_decay": 0.0}], lr=1e-5)
    return model, opt


def torch_train(model, opt, X, y, order, cfg: TrainConfig, evaluate=None, to_record=()):
    """The idiomatic loop: data as tensors, the batch indexed, the learning rate set in
    the optimiser's param groups each step; ``evaluate()`` at the record points."""
    import torch

    loss_fn = torch.nn.CrossEntropyLoss()
    model.train()
    for t, i in enumerate(order):
        for group in opt.param_groups:
            group["lr"] = cyclical_lr(t, cfg.eta_min, cfg.eta_max, cfg.n_s)
        opt.zero_grad(set_to_none=True)
        loss_fn(model(X[i]), y[i]).backward()
        opt.step()
        if t + 1 in to_record and evaluate is not None:
            model.eval()
            evaluate()
            model.train()


def torch_run(hidden, n_steps=400, threads=2):
    """A function timing that PyTorch model's steps (float32, CPU): seconds per step; None
    if torch is missing."""
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    X, y = synthetic(np.float32)
    X, y = torch.from_numpy(X), torch.from_numpy(y)
    order = [torch.from_numpy(i) for i in batches(n_steps)]
    model, opt = torch_model(hidden)
    cfg = TrainConfig()

    def run_and_rest():
        seconds = timed(lambda: torch_train(model, opt, X, y, order, cfg)) / n_steps
        time.sleep(0.5)  # lets torch's OpenMP threads stop spinning before the next timing
        return seconds

    torch_train(model, opt, X, y, order[:50], cfg)
    return run_and_rest


def torch_full_recipe(hidden, data, threads=2):
    """Wall time and test accuracy of the full recipe in that PyTorch model: 9,000 steps
    and, at the 20 record points, the cost, loss and accuracy on the 45,000 training and
    5,000 validation images (evaluation mode, no gradients), then the test accuracy."""
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    cfg = TrainConfig()
    t0 = time.perf_counter()
    X, y = torch.from_numpy(data.train.X), torch.from_numpy(data.train.y)
    splits = [(torch.from_numpy(s.X), torch.from_numpy(s.y)) for s in (data.train, data.val)]
    rng = np.random.default_rng(0)
    steps_per_epoch = len(data.train.y) // cfg.n_batch
    order = []
    while len(order) < cfg.n_steps:
        perm = torch.from_numpy(rng.permutation(len(data.train.y)))
        order += [perm[j * cfg.n_batch:(j + 1) * cfg.n_batch] for j in range(steps_per_epoch)]
    model, opt = torch_model(hidden)
    weights = [m.weight for m in model if isinstance(m, torch.nn.Linear)]
    loss_fn = torch.nn.CrossEntropyLoss()
    from kbn.trainer import record_steps

    def evaluate():
        with torch.no_grad():
            l2 = sum((w * w).sum() for w in weights)
            for A, b in splits:
                scores = model(A)
                loss = loss_fn(scores, b)
                _ = (float(loss), float(loss + LAM * l2), float((scores.argmax(1) == b).float().mean()))

    torch_train(model, opt, X, y, order[:cfg.n_steps], cfg, evaluate,
                set(record_steps(cfg).tolist()))
    model.eval()
    with torch.no_grad():
        acc = float((model(torch.from_numpy(data.test.X)).argmax(1)
                     == torch.from_numpy(data.test.y)).float().mean())
    return time.perf_counter() - t0, acc


def full_recipes(repeats, archs=tuple(ARCHS), dtypes=("float32", "float64")):
    """{(contender, network, dtype): ([wall times], test accuracy)} of full-recipe runs on
    the real data: kbn.fit, and the idiomatic PyTorch model for float32. The repeats go
    round all of them, kbn and PyTorch in turn, so a slow spell of the machine is unlikely
    to hit every run of one of them."""
    from kbn.data import load_cifar10
    from kbn.trainer import fit

    data = {dtype: load_cifar10(dtype=np.dtype(dtype), progress=False)
            for dtype in set(dtypes) | {"float32"}}
    try:
        import torch  # noqa: F401
        have_torch = True
    except ImportError:
        have_torch = False
    runs = {}
    for _ in range(repeats):
        for name in archs:
            hidden = ARCHS[name]
            for dtype in dtypes:
                r = fit(NetworkConfig(hidden=hidden), TrainConfig(dtype=dtype), data[dtype])
                runs.setdefault(("kbn", name, dtype), ([], r.test_accuracy))[0].append(r.wall_time)
            if have_torch:
                seconds, acc = torch_full_recipe(hidden, data["float32"])
                runs.setdefault(("torch", name, "float32"), ([], acc))[0].append(seconds)
                time.sleep(0.5)
    return runs


def versions() -> str:
    """The libraries the timings depend on: numpy's BLAS, PyTorch."""
    from threadpoolctl import threadpool_info

    blas = [f"{i.get('internal_api')} {i.get('version')} ({i.get('architecture')}, "
            f"{i.get('num_threads')} threads)" for i in threadpool_info() if i.get("user_api") == "blas"]
    try:
        import torch
        tv = f"torch {torch.__version__}"
    except ImportError:
        tv = "torch not installed"
    return f"python {platform.python_version()}, numpy {np.__version__} with {', '.join(blas)}; {tv}"


def gather_probe_ms() -> float:
    """Milliseconds to gather one batch of random rows, as each training step does: the
    machine's memory speed at the moment (~0.12 ms here when it is not contended)."""
    X, _ = synthetic(np.float32)
    rng = np.random.default_rng(2)
    rows = [rng.permutation(N_ROWS)[:N_BATCH] for _ in range(200)]
    batch = np.empty((N_BATCH, D), np.float32)
    return min(timed(lambda: [np.take(X, r, axis=0, out=batch, mode="clip") for r in rows])
               for _ in range(3)) / len(rows) * 1e3


def recipe_gflop(hidden, cfg: TrainConfig, n_eval_rows=50_000) -> float:
    """Multiply-adds x 2 of the GEMMs in the full recipe: per step x W and x^T dS in every
    layer and dS W^T in all but the first, per evaluation x W in every layer."""
    sizes = [D, *hidden, K]
    layers = list(zip(sizes[:-1], sizes[1:]))
    per_step = sum(2 * N_BATCH * a * b * (3 if l else 2) for l, (a, b) in enumerate(layers))
    per_eval = sum(2 * n_eval_rows * a * b for a, b in layers)
    return (cfg.n_steps * per_step + cfg.n_cycles * cfg.evals_per_cycle * per_eval) / 1e9


def sgemm_peak_gflops(n=2048) -> float:
    """float32 GEMM rate on large square matrices: the machine's peak for this BLAS."""
    a = np.ones((n, n), np.float32)
    c = np.empty_like(a)
    np.matmul(a, a, out=c)
    return 2 * n ** 3 / best_of(lambda: np.matmul(a, a, out=c), 5) / 1e9


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", action="store_true",
                        help="also time full-recipe runs on the real data (KBN_DATA_DIR or cache)")
    parser.add_argument("--rounds", type=int, default=4,
                        help="timing rounds for the steps/s table (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="full-recipe runs per network and dtype; the fastest is compared "
                             "(default: %(default)s)")
    parser.add_argument("--archs", nargs="+", choices=list(ARCHS), default=list(ARCHS),
                        help="networks to time (default: all)")
    parser.add_argument("--dtypes", nargs="+", choices=["float32", "float64"],
                        default=["float32", "float64"], help="precisions to time (default: both)")
    args = parser.parse_args()
    gather_start = gather_probe_ms()
    print(versions())
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, numpy {np.__version__}; "
          f"one batch gather {gather_start:.3f} ms")
    cfg = TrainConfig()
    n_evals = cfg.n_cycles * cfg.evals_per_cycle
    full = {}
    if args.full:  # first: PyTorch's OpenMP threads keep spinning for a while after its runs
        full = full_recipes(args.repeats, args.archs, args.dtypes)
    print(f"\nsteps/s, BN networks, batch {N_BATCH} (higher is better); kbn, the floor and "
          f"torch timed in turn, {args.rounds} rounds, the fastest of each")
    print(f"{'network':9s} {'dtype':8s} {'kbn':>7s} {'floor':>7s} {'kbn/floor':>9s} "
          f"{'torch':>7s} {'kbn/torch':>9s}")
    floors = {}
    for name in args.archs:
        hidden = ARCHS[name]
        for dtype in args.dtypes:
            runs = {"kbn": kbn_run(hidden, np.dtype(dtype)),
                    "floor": gemm_floor_run(hidden, np.dtype(dtype))}
            if dtype == "float32" and (torch := torch_run(hidden)) is not None:
                runs["torch"] = torch
            times = {k: [] for k in runs}
            for _ in range(args.rounds):  # in turn, so a slow spell of the machine hits all
                for k, run in runs.items():
                    times[k].append(run())
            rate = 1 / min(times["kbn"])
            per_step = min(f[0] for f in times["floor"])
            per_eval = min(f[1] for f in times["floor"])
            floors[name, dtype] = cfg.n_steps * per_step + n_evals * per_eval
            if "torch" in times:
                torch_rate = 1 / min(times["torch"])
                t = f"{torch_rate:7.0f} {rate / torch_rate:9.2f}"
            else:
                t = f"{'-':>7s} {'-':>9s}"
            print(f"{name:9s} {dtype:8s} {rate:7.0f} {1 / per_step:7.0f} {rate * per_step:9.2f} {t}")
    print(f"\none batch gather: {gather_start:.3f} ms at the start, {gather_probe_ms():.3f} ms "
          f"now (a shared machine's memory can be several times slower for minutes)")
    peak = sgemm_peak_gflops()
    print(f"\nGEMM floor of the full recipe ({cfg.n_steps} steps + {n_evals} evaluations of "
          f"50,000 images): its matrix products alone, at the recipe's shapes, timed above.\n"
          f"For scale, its GFLOP over this BLAS's large-matrix float32 peak ({peak:.0f} GFLOP/s), "
          f"which no 100-row product reaches:")
    for (name, dtype), seconds in floors.items():
        gflop = recipe_gflop(ARCHS[name], cfg)
        print(f"  {name:9s} {dtype:8s} floor {seconds:5.1f} s   {gflop:5.0f} GFLOP / peak = "
              f"{gflop / peak:4.1f} s")
    if full:
        print(f"\nfull recipe on the real data (9,000 steps + 20 evaluations of 50,000 images "
              f"+ test; wall time, {args.repeats} runs each, kbn and PyTorch in turn; the fastest "
              f"compared):")
        for (who, name, dtype), (seconds, acc) in full.items():
            runs = ", ".join(f"{s:.1f}" for s in seconds)
            floor = (f" = {min(seconds) / floors[name, dtype]:.2f}x the GEMM floor"
                     if who == "kbn" else "")
            print(f"  {who:5s} {name:9s} {dtype:8s} {min(seconds):5.1f} s{floor} "
                  f"(runs: {runs} s), test accuracy {acc:.4f}")
        for name in args.archs:
            if ("torch", name, "float32") in full and ("kbn", name, "float32") in full:
                k = min(full["kbn", name, "float32"][0])
                t = min(full["torch", name, "float32"][0])
                pairs = [b / a for a, b in zip(full["kbn", name, "float32"][0],
                                               full["torch", name, "float32"][0])]
                print(f"  {name}: PyTorch time / kbn time = {t / k:.2f} (fastest runs), "
                      f"pair by pair {', '.join(f'{p:.2f}' for p in pairs)}")

if __name__ == "__main__":
    main()
