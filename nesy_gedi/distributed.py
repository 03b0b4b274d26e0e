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


def is_main_process() -> bool:
    """True outside torchrun and on rank 0 (usable before `setup`)."""
    return int(os.environ.get("RANK", "0")) == 0


def setup(requested_device: str = "auto") -> DistState:
    """Join the process group torchrun set up; the backend follows the requested device."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistState()
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    use_cuda = torch.cuda.is_available() and requested_device != "cpu"
    if use_cuda:
        if local_rank >= torch.cuda.device_count():
            raise RuntimeError(f"rank {rank} needs GPU {local_rank} but only {torch.cuda.device_count()} are "
                               f"visible; use --nproc_per_node <= the GPU count or --device cpu")
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
        if not torch_dist.is_initialized():
            torch_dist.init_process_group(backend="nccl", device_id=device)
    else:
        device = torch.device("cpu")
        if not torch_dist.is_initialized():
            torch_dist.init_process_group(backend="gloo")
    return DistState(True, rank, world_size, device)


def all_finite(value: torch.Tensor, state: DistState) -> bool:
    """Whether the value is finite on every rank, so that all ranks stop together."""
    flag = torch.tensor([float(torch.isfinite(value).all())], device=value.device)
    if state.enabled:
        torch_dist.all_reduce(flag, op=torch_dist.ReduceOp.MIN)
    return bool(flag.item() == 1.0)


def sum_across(values: dict, state: DistState) -> dict:
    """Sum a dict of floats over ranks (per-epoch training totals)."""
    if not state.enabled or not values:
        return values
    keys = sorted(values)
    tensor = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=state.device)
    torch_dist.all_reduce(tensor, op=torch_dist.ReduceOp.SUM)
    return dict(zip(keys, tensor.tolist()))


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
