"""Multi-process data-parallel training under torchrun: gloo on CPU, NCCL on GPUs.

Each rank trains on its shard of every epoch's permutation; gradients are averaged
across ranks after each backward pass, which is what DistributedDataParallel computes.
DDP's reducer is not used because it only sees parameters used inside the wrapped
module's own forward, while GEDI's SGLD and self-supervised terms call the backbone
outside it. Outside torchrun (no WORLD_SIZE) every helper is a no-op, so the training
loop reads the same either way. Only rank 0 writes files.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as torch_dist
from torch import nn


@dataclass
class DistState:
    enabled: bool = False
    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup() -> DistState:
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistState()
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        device, backend = torch.device("cuda", local_rank), "nccl"
    else:
        device, backend = torch.device("cpu"), "gloo"
    if not torch_dist.is_initialized():
        torch_dist.init_process_group(backend=backend)
    return DistState(True, rank, world_size, device)


def synchronise_parameters(module: nn.Module, state: DistState) -> None:
    """Start every rank from rank 0's weights."""
    if state.enabled:
        for tensor in list(module.parameters()) + list(module.buffers()):
            torch_dist.broadcast(tensor.data, src=0)


def average_gradients(module: nn.Module, state: DistState) -> None:
    if not state.enabled:
        return
    for parameter in module.parameters():
        if parameter.grad is None:
            parameter.grad = torch.zeros_like(parameter)
        torch_dist.all_reduce(parameter.grad, op=torch_dist.ReduceOp.SUM)
        parameter.grad /= state.world_size


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
