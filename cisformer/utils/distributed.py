"""Many processes, one result: the process group that a multi-process launch runs (``torchrun``), seen from
prediction.

:func:`cisformer.train.fit` joins the launcher's processes through accelerate. Prediction
(:func:`cisformer.predict.predict_logits` and everything built on it) splits its cell batches between the
processes of a running ``torch.distributed`` group - batch ``b`` of the single-process order goes to process
``b % world`` - and gathers them, so every process returns the single-process result, bit for bit. Streamed
prediction (``rna_to_atac(out=...)``) splits its blocks the same way: each process writes its blocks to its own
shard file, the main process merges the shards into ``OUT`` after a barrier.

Without a process group, or with one process, nothing here changes anything.
"""
from __future__ import annotations

import os

import torch


def process_group(*, cpu: bool = True) -> tuple[int, int]:
    """``(rank, world_size)`` of the running ``torch.distributed`` group; ``(0, 1)`` without one.

    Under a launcher (``WORLD_SIZE`` > 1 in the environment) whose group is not yet initialised, it is
    initialised through accelerate.

    Parameters
    ----------
    cpu
        Initialise with gloo (CPU) when ``True`` (default), else with the GPU backend.

    Returns
    -------
    tuple of int
        ``(rank, world_size)`` of this process.
    """
    import torch.distributed as dist

    if not dist.is_available():
        return 0, 1
    if not dist.is_initialized():
        if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
            return 0, 1
        from accelerate import PartialState

        PartialState(cpu=cpu)
    return dist.get_rank(), dist.get_world_size()


def all_gather(obj, world: int) -> list:
    """Every process's ``obj`` (picklable), in rank order.

    Collective: every process of the group must call it.

    Parameters
    ----------
    obj
        Any picklable object of this process.
    world
        World size of the group (as :func:`process_group` returns).

    Returns
    -------
    list
        ``world`` objects, element ``r`` from rank ``r``.
    """
    import torch.distributed as dist

    parts = [None] * world
    dist.all_gather_object(parts, obj)
    return parts


def barrier() -> None:
    import torch.distributed as dist

    dist.barrier()
