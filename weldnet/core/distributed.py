"""torch.distributed for the training stages: several processes train one model, under torchrun.

With ``train.nproc_per_node`` N > 1 the train and pretrain stages start themselves
again under PyTorch's launcher (:func:`relaunch`)::

    python -m torch.distributed.run --standalone --nproc-per-node N -m stages.train ...

one process per GPU with NCCL on CUDA, or N processes sharing the CPU cores with
gloo. A stage already started by torchrun (``WORLD_SIZE`` set, e.g. on several
nodes: docs/training.md) joins the group it was given and relaunches nothing.

What keeps a strategy's meaning across processes lives where it belongs:
``weldnet.photos.dataset.RankBatches`` gives every rank its part of the same global
batches; ``weldnet.strategies.losses.BayesianCrossEntropy`` counts its prior over the global
batch (:func:`global_sum`); ``weldnet.train.loop`` weights each rank's loss by its
share of the global batch, averages gradients with DistributedDataParallel,
synchronises batch norm on CUDA, predicts a share of the photos per rank and
gathers them (:func:`gather_rows`), and writes only on rank 0.

This module imports torch only inside its functions, so a stage can decide to
relaunch before paying for it.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING

from weldnet.core.pool import die_with_parent
from weldnet.core.threads import thread_budget

if TYPE_CHECKING:
    import numpy as np
    import torch


@dataclass(frozen=True)
class Group:
    """This process's place among those training one model."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Rank 0: the one process that writes logs, checkpoints and models."""
        return self.rank == 0


SINGLE = Group()


def launched() -> bool:
    """True inside a process torchrun started (it sets WORLD_SIZE)."""
    return "WORLD_SIZE" in os.environ


def relaunch(nproc_per_node: int, module: str, argv: list[str]) -> None:
    """Replace this process by torchrun running ``python -m module argv`` in ``nproc_per_node`` processes.

    Does nothing for one process, or inside a process torchrun already started.
    ``--standalone`` runs the rendezvous on this machine (a free local port).
    """
    if nproc_per_node <= 1 or launched():
        return
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc-per-node={nproc_per_node}", "-m", module, *argv]
    print(f"{module}: {nproc_per_node} processes under torchrun", flush=True)
    sys.stderr.flush()
    os.execv(sys.executable, command)


def start(device: torch.device) -> tuple[Group, torch.device]:
    """Join the process group torchrun set up (NCCL on CUDA, gloo on CPU); (SINGLE, device) outside torchrun.

    On CUDA each process takes the GPU of its local rank; on the CPU the processes
    of a node share its cores (torch threads = cores // processes on the node).
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return SINGLE, device
    import torch
    import torch.distributed as dist

    die_with_parent()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
    if device.type == "cuda":
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
        backend = "nccl"
    else:
        torch.set_num_threads(max(1, thread_budget() // local_world))
        backend = "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend)
    return Group(dist.get_rank(), dist.get_world_size(), local_rank), device


def current() -> Group:
    """The group this process trains in (SINGLE when torch.distributed is not initialised)."""
    if "torch" not in sys.modules:
        return SINGLE
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return SINGLE
    return Group(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def world_size() -> int:
    return current().world


def global_sum(tensor: torch.Tensor) -> torch.Tensor:
    """The element-wise sum of ``tensor`` over every rank (a copy; the tensor itself when alone)."""
    if world_size() == 1:
        return tensor
    import torch.distributed as dist

    total = tensor.detach().clone()
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total


def gather_rows(local: np.ndarray, n: int, group: Group) -> np.ndarray:
    """Reassemble rows predicted as ``rank::world`` by every rank into all ``n`` rows, in order, on every rank."""
    if group.world == 1:
        return local
    import numpy as np
    import torch.distributed as dist

    parts: list = [None] * group.world
    dist.all_gather_object(parts, local)
    width = next((p.shape[1:] for p in parts if p is not None and p.ndim > 1), ())
    out = np.zeros((n, *width), dtype=parts[0].dtype)
    for rank, part in enumerate(parts):
        out[rank::group.world] = part
    return out


def barrier() -> None:
    if world_size() > 1:
        import torch.distributed as dist

        dist.barrier()


def stop() -> None:
    """Leave the process group (after the last collective)."""
    if world_size() > 1:
        import torch.distributed as dist

        dist.destroy_process_group()
