"""Which trainings can share a stack, and how many networks a stack holds.

Trials that see the same mini-batches in the same order can train side by side
(:func:`kbn.trainer.fit_stack`): same architecture and BN, batch size, number of steps,
evaluation points, seed (it draws the shuffles) and precision. Everything else, the fields
in ``PER_NETWORK``, may differ from network to network. A new config field is shared
(part of the key) unless it is listed there, so forgetting to classify it is safe.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

from .config import NetworkConfig, TrainConfig

# Fields each network of a stack may set for itself. n_s, n_cycles and evals_per_cycle
# may differ as long as the number of steps and the evaluation points agree (in the key).
PER_NETWORK = {
    NetworkConfig: frozenset({"init", "sigma", "alpha", "eps"}),
    TrainConfig: frozenset({"eta_min", "eta_max", "n_s", "n_cycles", "lam", "evals_per_cycle",
                            "precise_bn"}),
}

# Stacks grow until their first layer has about this many units: the measured gain per
# network flattens out there (benchmarks/bench_stacking.py), while the activations of a
# wider stack no longer stay in the cache.
FIRST_LAYER_UNITS = 512
MAX_NETWORKS = 16


def stack_key(network: NetworkConfig, train: TrainConfig) -> tuple:
    """What two trainings must share to train in one stack (equal keys: stackable)."""
    from .trainer import record_steps

    shared = []
    for cfg in (network, train):
        free = PER_NETWORK[type(cfg)]
        shared += [(f.name, _hashable(getattr(cfg, f.name)))
                   for f in dataclasses.fields(cfg) if f.name not in free]
    return (*shared, ("n_steps", train.n_steps), ("records", tuple(record_steps(train).tolist())))


def _hashable(value):
    return tuple(value) if isinstance(value, list) else value


def uses_extensions(train: TrainConfig) -> bool:
    """Whether a training uses an option beyond the reference recipe (augmentation,
    dropout, label smoothing, another optimizer or schedule, ...: TrainConfig.EXTENSIONS).
    The stacked path does not implement them, so such a training always trains alone."""
    return train.uses_extensions


def check_stackable(networks: Sequence[NetworkConfig], trains: Sequence[TrainConfig]) -> None:
    """Raise ValueError naming the first field in which two trainings cannot share a stack."""
    if len(networks) != len(trains) or not networks:
        raise ValueError("give one TrainConfig per NetworkConfig (at least one of each)")
    if len(trains) > 1:
        for i, train in enumerate(trains):
            if uses_extensions(train):
                raise ValueError(
                    f"training {i} uses options beyond the reference recipe "
                    f"({train.to_dict()!r}); those train one network at a time, not in a stack")
    first = dict(stack_key(networks[0], trains[0]))
    for i, (net, train) in enumerate(zip(networks, trains)):
        for name, value in stack_key(net, train):
            if first[name] != value:
                raise ValueError(
                    f"trainings 0 and {i} cannot share a stack: they differ in {name} "
                    f"({first[name]!r} and {value!r}); a stack shares "
                    f"the mini-batch stream, so only "
                    f"{sorted(PER_NETWORK[NetworkConfig] | PER_NETWORK[TrainConfig])} may differ")


def max_stack_size(network: NetworkConfig) -> int:
    """How many networks of this architecture one stack holds (at least 1)."""
    return max(1, min(MAX_NETWORKS, FIRST_LAYER_UNITS // network.hidden[0]))


def plan_stacks(pairs: Sequence[tuple[NetworkConfig, TrainConfig]], slots: int = 1) -> list[list[int]]:
    """Indices of ``pairs`` grouped into stacks, in the order of their first member.

    Stackable trainings are grouped, and a group is cut into as few equal stacks as
    :func:`max_stack_size` allows. Only while that leaves fewer stacks than the ``slots``
    workers is the group with the widest stacks cut into one more (a lone group of 8 on 2
    workers: two stacks of 4; of 6 on 3: three of 2); a wider stack costs less per network,
    so stacks are not cut just to have more of them. A network gets the same numbers in any stack, so the plan
    changes the speed, never the results.
    """
    groups: dict[tuple, list[int]] = {}
    stacks = []
    for i, (net, train) in enumerate(pairs):
        if uses_extensions(train):  # the stacked path would ignore the option: alone
            stacks.append([i])
        else:
            groups.setdefault(stack_key(net, train), []).append(i)
    members_of = list(groups.values())
    # each group in as few equal stacks as the size cap allows ...
    cuts = [-(-len(m) // max_stack_size(pairs[m[0]][0])) for m in members_of]
    # ... and, while a worker would idle, one more cut of the group with the widest stacks
    while len(stacks) + sum(cuts) < slots:
        widest = max(range(len(cuts)), key=lambda g: -(-len(members_of[g]) // cuts[g]), default=None)
        if widest is None or cuts[widest] >= len(members_of[widest]):
            break
        cuts[widest] += 1
    sized = []
    for members, n_stacks in zip(members_of, cuts):
        per = -(-len(members) // n_stacks)
        sized += [members[j:j + per] for j in range(0, len(members), per)]
    return sorted(stacks + sized, key=lambda s: s[0])


def stack_cost(network: NetworkConfig, train: TrainConfig, k: int) -> float:
    """A rough relative cost of training a stack of ``k`` such networks: the multiply-adds
    of its steps plus a fixed cost per layer and step (the small calls a stack shares).
    Used to start the costliest stacks first, so the last to finish are short."""
    from .data import N_CLASSES, N_FEATURES

    widths = (N_FEATURES, *network.hidden, N_CLASSES)
    return train.n_steps * (3.0 * k * train.n_batch * n_weights(widths) + 2e5 * len(widths))


def n_weights(widths: Sequence[int]) -> int:
    """How many weights (not biases) a network of these layer widths has."""
    return sum(a * b for a, b in zip(widths[:-1], widths[1:]))
