"""A strategy's seeds: trained one after another, or at once in forked processes on a CPU.

A small model uses a CPU's threads poorly: on a quiet 2-core machine two train
stages of one thread each, run side by side, finished in 73.1 s where the same two
one after another with two threads took 102.5 s (1.40x). So on the CPU the seeds of
a strategy train ``train.seed_processes`` at a time (0: as many as seeds and CPUs
allow), each process with an equal share of the thread budget. On CUDA, and under
torchrun, they train one after another in the stage's own process.

A seed's numbers depend on its own seed and on its thread count, never on which
process trains it or in what order: :func:`seed_plan` fixes the thread count from
the budget and the number of processes, and the train stage records it and keys
its checkpoints and its reusable fits by it.

Forking a process after OpenMP has run a multi-threaded region leaves the child
waiting forever on the parent's thread pool, so a stage that will fork keeps torch
to one thread from its start (:func:`SeedPlan.before_work`) and each forked process
then sizes its own pool.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import torch

from weldnet.core.pool import ordered_map

R = TypeVar("R")


@dataclass(frozen=True)
class SeedPlan:
    """How a stage trains its seeds: ``processes`` at once, each computing with ``threads`` threads."""

    processes: int
    threads: int

    def before_work(self) -> None:
        """Call before any torch computation: a stage that forks keeps torch to one thread until it has forked."""
        torch.set_num_threads(1 if self.processes > 1 else self.threads)


def seed_plan(requested: int, seeds: int, device: torch.device, world: int, budget: int) -> SeedPlan:
    """``requested`` processes (0: min(seeds, budget)), never more than seeds or threads; 1 on CUDA or under torchrun.

    Each process gets ``budget // processes`` threads; one process gets the whole budget.
    """
    if requested < 0:
        raise ValueError(f"seed processes = {requested} must be >= 1, or 0 for as many as seeds and CPUs allow")
    if device.type != "cpu" or world > 1:
        return SeedPlan(1, budget)
    processes = max(1, min(requested or budget, seeds, budget))
    return SeedPlan(processes, max(1, budget // processes))


def train_seeds(train_one: Callable[[int], R], seeds: Sequence[int], plan: SeedPlan) -> list[R]:
    """``[train_one(seed) for seed in seeds]``, in ``plan.processes`` forked processes when more than one.

    ``train_one`` is inherited by the forked processes, not pickled (it may be a
    closure over the stage's photos); its result is pickled back. Results come in
    the order of ``seeds``.
    """
    if plan.processes <= 1:
        return [train_one(seed) for seed in seeds]
    if torch.get_num_threads() != 1:
        raise RuntimeError("train_seeds forks: call SeedPlan.before_work() before any torch computation")

    def in_own_process(seed: int) -> R:
        torch.set_num_threads(plan.threads)
        return train_one(seed)

    return list(ordered_map(in_own_process, list(seeds), plan.processes, chunksize=1))
