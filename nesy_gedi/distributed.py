"""Multi-process data-parallel training under torchrun: gloo on the CPU, NCCL on GPUs.

The engine wraps its step module (the whole loss of a batch, SGLD sampling included) in
`torch.nn.parallel.DistributedDataParallel`, so gradients are averaged by DDP's reducer.
Each rank trains on its shard of every epoch's permutation. Outside torchrun (no
WORLD_SIZE) every helper here is a no-op and `wrap` returns the module itself, so the
loop reads the same either way. Only rank 0 writes files.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as torch_dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from .errors import NesyError


@dataclass
class DistState:
    enabled: bool = False
    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup(device: torch.device) -> DistState:
    """Join the process group torchrun set up; NCCL when `device` is a GPU, gloo otherwise."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistState(device=device)
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise NesyError(f"rank {rank} needs GPU {local_rank} but only {torch.cuda.device_count()} are "
                            f"visible; use --nproc_per_node <= the GPU count or --device cpu")
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
        if not torch_dist.is_initialized():
            torch_dist.init_process_group(backend="nccl", device_id=device)
    elif not torch_dist.is_initialized():
        torch_dist.init_process_group(backend="gloo")
    return DistState(True, rank, world_size, device)


def wrap(module: nn.Module, state: DistState, unused_parameters: bool = False) -> nn.Module:
    """DDP around the step module. Buffers are not broadcast: each rank keeps its own SGLD chains."""
    if not state.enabled:
        return module
    device_ids = [state.device.index] if state.device.type == "cuda" else None
    return DistributedDataParallel(module, device_ids=device_ids, broadcast_buffers=False,
                                   find_unused_parameters=unused_parameters)


def all_agree(flag: bool, state: DistState) -> bool:
    """True when `flag` holds on every rank, so that all ranks skip (or take) a step together."""
    if not state.enabled:
        return flag
    tensor = torch.tensor([1.0 if flag else 0.0], device=state.device)
    torch_dist.all_reduce(tensor, op=torch_dist.ReduceOp.MIN)
    return bool(tensor.item() == 1.0)


def sum_across(values: dict, state: DistState) -> dict:
    """Sum a dict of floats over ranks (per-epoch training totals)."""
    if not state.enabled:
        return values
    keys = sorted(values)
    gathered: list = [None] * state.world_size
    torch_dist.all_gather_object(gathered, keys)
    keys = sorted(set().union(*gathered))
    tensor = torch.tensor([values.get(k, 0.0) for k in keys], dtype=torch.float64, device=state.device)
    torch_dist.all_reduce(tensor, op=torch_dist.ReduceOp.SUM)
    return dict(zip(keys, tensor.tolist()))


def shard(order: torch.Tensor, state: DistState) -> torch.Tensor:
    """Each rank takes every world_size-th example of the shared permutation (equal lengths)."""
    if not state.enabled:
        return order
    usable = len(order) - len(order) % state.world_size
    return order[state.rank:usable:state.world_size]


def barrier(state: DistState) -> None:
    if state.enabled:
        torch_dist.barrier()


def teardown(state: DistState) -> None:
    if state.enabled and torch_dist.is_initialized():
        torch_dist.destroy_process_group()
