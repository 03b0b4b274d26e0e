"""Neuro-symbolic training: perception network -> concept probabilities -> circuit -> semantic loss.

Reads top to bottom: setup, data, model, (resume), the epoch loop, final metrics.
Training modes (train.mode):
    sl           semantic loss only
    sl+gedi      semantic loss + the GEDI objective on the same images, trained jointly
    gedi->sl     gedi.pretrain_epochs of GEDI alone, then the semantic loss
    sl+entropy   semantic loss + rsbench's concept-entropy regulariser
    sl+swav      semantic loss + SwAV on the same images
    sl+concepts  semantic loss + cross-entropy on the concepts of a fraction
                 (train.concept_supervision) of the examples: the reference mitigation
Every epoch uses a generator seeded by (seed, epoch), so a run resumed from its last
checkpoint ends with the same metrics as an uninterrupted one.
"""
from __future__ import annotations

import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from . import distributed
from .circuit import KnowledgeCircuit
from .compiler import compile_file
from .config import TaskConfig, save_config
from .data.augment import build_augment
from .data.images import resolve_data_root
from .data.tasks import TupleDataset, build_task_data
from .errors import ConfigError, NesyError
from .evaluate import evaluate_split
from .models.backbones import build_backbone
from .objectives.entropy import concept_entropy_loss
from .objectives.semantic import semantic_loss
from .optim import build_optimizer, learning_rate_schedule
from .selfsup import SelfSupervised
from .sgld import NonFiniteError
from .pretrain import NonFiniteGuard, load_pretrained_backbone
from .runs import (CONFIG, FINAL, append_metrics, is_evaluation_epoch, load_checkpoint, read_metrics,
                   save_checkpoint, select_device, truncate_metrics, write_json)


class Perception(nn.Module):
    """One backbone shared by every concept position: images [B, P, ...] -> logits [B, P, C]."""

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        batch, positions = images.shape[:2]
        logits = self.backbone(images.flatten(0, 1))
        return logits.view(batch, positions, -1)


def build_circuit(config: TaskConfig) -> KnowledgeCircuit:
    if config.logic is None:
        raise ConfigError("this task has no logic section; `train` needs a logic file "
                          "(use `pretrain` for self-supervised tasks)", config.source)
    compiled = compile_file(config.logic.file, config.logic.params, vtree_type=config.logic.vtree)
    return KnowledgeCircuit(compiled, compile_module=config.circuit.compile,
                            max_label_candidates=config.circuit.max_label_candidates)


def build_perception(config: TaskConfig, circuit: KnowledgeCircuit, in_channels: int) -> Perception:
    backbone = build_backbone(config.model.backbone, circuit.concept_domain_size, in_channels, **config.model.options)
    if config.model.init:
        load_pretrained_backbone(config.model.init, backbone)
    return Perception(backbone)


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)


def supervised_rows(num_examples: int, fraction: float, seed: int) -> torch.Tensor:
    """A fixed mask of the training examples whose concepts are observed."""
    mask = torch.zeros(num_examples, dtype=torch.bool)
    count = round(fraction * num_examples)
    if count:
        mask[torch.randperm(num_examples, generator=torch.Generator().manual_seed(seed + 17))[:count]] = True
    return mask


def train(config: TaskConfig, run_dir: Path, resume: bool = False, data_root: str | None = None,
          device: str | None = None) -> dict:
    # ---------------------------------------------------------------- setup
    run_dir = Path(run_dir)
    dist = distributed.setup(device or config.train.device)
    device = dist.device if dist.enabled else select_device(device or config.train.device)
    if config.train.num_threads:
        torch.set_num_threads(config.train.num_threads)
    torch.manual_seed(config.train.seed)
    mode = config.train.mode
    if dist.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(config, run_dir / CONFIG)

    # ---------------------------------------------------------------- data, circuit, model
    circuit = build_circuit(config).to(device)
    splits = build_task_data(config, circuit, resolve_data_root(data_root or config.data.root))
    train_set: TupleDataset = splits["train"]
    perception = build_perception(config, circuit, train_set.images.shape[1]).to(device)
    selfsup = None
    if mode in ("sl+gedi", "gedi->sl", "sl+swav"):
        selfsup = SelfSupervised.from_config(config.gedi, tuple(train_set.images.shape[1:]),
                                             circuit.concept_domain_size).to(device)
    distributed.synchronise_parameters(perception, dist)
    augment = build_augment(config.train.augment, **config.train.augment_options)
    optimizer = build_optimizer(perception.parameters(), config)
    steps_per_epoch = -(-len(distributed.shard(torch.arange(len(train_set)), dist)) // config.train.batch_size)
    pretrain_epochs = config.gedi.pretrain_epochs if mode == "gedi->sl" else 0
    scheduler = learning_rate_schedule(optimizer, config, steps_per_epoch, constant_epochs=pretrain_epochs)
    observed_concepts = supervised_rows(len(train_set), config.train.concept_supervision, config.train.seed)
    guard = NonFiniteGuard(config.train.max_nonfinite_recoveries, run_dir if dist.is_main else None)
    total_epochs = pretrain_epochs + config.train.epochs

    # ---------------------------------------------------------------- resume
    start_epoch, history_seconds = 0, []
    checkpoint = load_checkpoint(run_dir, map_location=device) if resume else None
    if checkpoint is not None:
        perception.load_state_dict(checkpoint["perception"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        scheduler.load_state_dict(checkpoint["scheduler"])
        if selfsup is not None and checkpoint.get("selfsup") is not None:
            selfsup.load_state_dict(checkpoint["selfsup"])
        start_epoch, history_seconds = checkpoint["epoch"], checkpoint["seconds"]
        if dist.is_main:
            truncate_metrics(run_dir, start_epoch)

    # ---------------------------------------------------------------- epochs
    for epoch in range(start_epoch, total_epochs):
        phase = "pretrain" if epoch < pretrain_epochs else "train"
        generator = epoch_generator(config.train.seed, epoch)
        order = distributed.shard(torch.randperm(len(train_set), generator=generator), dist)
        batches = order.split(config.train.batch_size)
        perception.train()
        started, totals = time.perf_counter(), {}
        progress = tqdm(batches, desc=f"epoch {epoch + 1}/{total_epochs} ({phase})", leave=False,
                        disable=not (config.train.progress and dist.is_main))
        for step, rows in enumerate(progress, start=1):
            images, concepts, labels = (t.to(device) for t in train_set.batch(rows))
            terms = {}
            if phase == "train":
                concept_logits = perception(augment(images.flatten(0, 1), generator).view_as(images))
                log_probs = F.log_softmax(concept_logits, dim=-1)
                terms["semantic"] = semantic_loss(circuit(log_probs, labels))
                if config.train.concept_supervision > 0:
                    seen = observed_concepts[rows].to(device)
                    if bool(seen.any()):
                        targets = circuit.concept_positions(concepts[seen])
                        terms["concepts"] = F.nll_loss(log_probs[seen].flatten(0, 1), targets.flatten())
                if mode == "sl+entropy":
                    terms["entropy"] = config.train.entropy_weight * concept_entropy_loss(log_probs.exp())
            if selfsup is not None and (phase == "pretrain" or mode in ("sl+gedi", "sl+swav")):
                weight = 1.0 if phase == "pretrain" else config.gedi.weight
                try:
                    gedi_terms = selfsup.losses(perception.backbone, images.flatten(0, 1), generator)
                except NonFiniteError as error:  # SGLD diverged: reset its buffer and skip the step
                    guard.recover(selfsup, generator, epoch=epoch + 1, step=step, reason=str(error))
                    continue
                terms.update({f"gedi_{k}": weight * v for k, v in gedi_terms.items() if k != "total"})
                terms["gedi"] = weight * gedi_terms["total"]
            loss = sum(v for k, v in terms.items() if not k.startswith("gedi_"))
            if not distributed.all_finite(loss.detach(), dist):
                reason = f"non-finite loss ({ {k: float(v) for k, v in terms.items()} })"
                if selfsup is None:
                    raise NesyError(f"{reason} at epoch {epoch + 1}, step {step}; the last checkpoint in "
                                    f"{run_dir} is intact")
                guard.recover(selfsup, generator, epoch=epoch + 1, step=step, reason=reason)
                continue
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            distributed.average_gradients(perception, dist)
            optimizer.step()
            scheduler.step()
            for key, value in terms.items():
                totals[key] = totals.get(key, 0.0) + float(value.detach()) * len(rows)
            progress.set_postfix(loss=f"{float(loss.detach()):.4f}")
        seconds = time.perf_counter() - started
        history_seconds = history_seconds + [seconds]
        totals = distributed.sum_across(totals, dist)
        examples_seen = len(order) * dist.world_size

        # ------------------------------------------------------------ evaluate, log, checkpoint
        if dist.is_main:
            record = {"epoch": epoch + 1, "phase": phase, "seconds": round(seconds, 3)}
            record.update({f"train_{k}": v / max(examples_seen, 1) for k, v in totals.items()})
            evaluate_now = is_evaluation_epoch(epoch + 1, total_epochs, config.train.eval_every)
            for name, split in splits.items():
                if name == "train" or not evaluate_now:
                    continue
                metrics = evaluate_split(perception, circuit, split, config.train.eval_batch_size, device)
                record.update({f"{name}_{k}": v for k, v in metrics.items() if not isinstance(v, list)})
            append_metrics(run_dir, record)
            save_checkpoint({"perception": perception.state_dict(), "optimizer": optimizer.state_dict(),
                             "scheduler": scheduler.state_dict(),
                             "selfsup": selfsup.state_dict() if selfsup is not None else None,
                             "epoch": epoch + 1, "seconds": history_seconds,
                             "config": config.to_dict()}, run_dir)
        distributed.barrier(dist)

    # ---------------------------------------------------------------- final metrics
    final = {}
    if dist.is_main:
        final = final_report(config, run_dir, circuit, history_seconds, pretrain_epochs)
    distributed.teardown(dist)
    return final


def final_report(config: TaskConfig, run_dir: Path, circuit: KnowledgeCircuit, seconds: list,
                 pretrain_epochs: int = 0) -> dict:
    records = [r for r in read_metrics(run_dir) if "epoch" in r]
    last = records[-1] if records else {}
    train_seconds = seconds[pretrain_epochs:]
    final = {
        "task": config.name,
        "mode": config.train.mode,
        "epochs": len(train_seconds),
        "seed": config.train.seed,
        "test_label_accuracy": last.get("test_label_accuracy"),
        "test_concept_accuracy": last.get("test_concept_accuracy"),
        "prediction": circuit.prediction_method,
        "seconds_per_epoch": sum(train_seconds) / len(train_seconds) if train_seconds else None,
        "seconds_total": sum(seconds),
        "circuit": {k: v for k, v in circuit.compiled.summary().items() if k != "variables"},
    }
    for key, value in last.items():
        if key.startswith(("test_", "test_ood_")) and key not in final:
            final[key] = value
    write_json(run_dir / FINAL, final)
    return final
