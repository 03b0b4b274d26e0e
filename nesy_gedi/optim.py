"""The optimiser and learning-rate schedule shared by both training loops.

`nesy-gedi train` and `nesy-gedi pretrain` read the same `train.lr`, `train.weight_decay`
and `train.lr_schedule` keys, so both build them here.
"""
from __future__ import annotations

import math

import torch

from .config.schema import TaskConfig


def build_optimizer(parameters, config: TaskConfig, learning_rates: dict | None = None) -> torch.optim.Optimizer:
    """Adam with the task's learning rate and weight decay; `learning_rates` gives some
    parameters their own rate (e.g. the cluster -> concept map's `map.lr`)."""
    parameters = list(parameters)
    special = {id(p): lr for p, lr in (learning_rates or {}).items()}
    groups = [{"params": [p for p in parameters if id(p) not in special]}] + [
        {"params": [p], "lr": special[id(p)]} for p in parameters if id(p) in special]
    return torch.optim.Adam([g for g in groups if g["params"]], lr=config.train.lr,
                            weight_decay=config.train.weight_decay)


def learning_rate_schedule(optimizer: torch.optim.Optimizer, config: TaskConfig, steps_per_epoch: int,
                           constant_epochs: int = 0) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-step multiplier of the learning rate: constant, or cosine decay to zero over the
    `train.epochs` epochs that follow `constant_epochs` at the full rate (gedi->sl keeps the
    full rate through its GEDI pretraining epochs)."""
    if config.train.lr_schedule == "constant":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    warm = constant_epochs * steps_per_epoch
    total = max(config.train.epochs * steps_per_epoch, 1)
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 1.0 if step < warm else 0.5 * (1 + math.cos(math.pi * min(step - warm, total) / total)))
