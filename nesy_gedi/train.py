"""`nesy-gedi train`: perception network -> concept probabilities -> circuit -> semantic loss.

Supplies the engine (`nesy_gedi.engine`) with the task's examples, the perception network
and the loss of a batch. Training modes (train.mode; what each reads: config.schema.MODES):
    sl           semantic loss only
    sl+gedi      semantic loss + the GEDI objective on the same images, trained jointly
    gedi->sl     gedi.pretrain_epochs of GEDI alone, then the semantic loss
    sl+entropy   semantic loss + rsbench's concept-entropy regulariser
    sl+swav      semantic loss + SwAV on the same images
    sl+concepts  semantic loss + cross-entropy on observed concepts (the reference mitigation)
With `map.epochs`, a pretrained clustering (`model.init`) first has its clusters named
(`nesy_gedi.naming`: the naming that explains the training labels best), then only the
cluster -> value map trains on the frozen backbone, then everything. Observed concepts
(`train.concept_supervision`, a fraction of the examples, and `train.concept_labels`,
exactly K images of each value) add the cross-entropy term in any mode.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from . import engine
from .builders import TRAIN_KIND, Perception, build_circuit, build_perception
from .circuit import KnowledgeCircuit
from .config.schema import MODES, TaskConfig
from .data.augment import build_augment
from .data.files import resolve_data_root
from .data.tasks import build_task_data
from .evaluate import evaluate_split
from .naming import ConceptDomains, NamingResult, map_balance_loss, naming_positions, search_naming
from .objectives.entropy import concept_entropy_loss
from .objectives.semantic import semantic_loss
from .pretrain import pretrained_backbone
from .runs import read_manifest
from .selfsup import SelfSupervised


def train(config: TaskConfig, run_dir: Path, resume: bool = False, data_root: str | None = None,
          device: str | None = None) -> dict:
    """Train with the semantic loss; returns final.json's content (on rank 0). With
    `model.pretrain`, that pretraining runs first (or a finished one is reused)."""
    if config.model.pretrain and not resume:
        config.model.init = str(pretrained_backbone(config, Path(run_dir), data_root, device))
    with engine.open_run(config, run_dir, TRAIN_KIND, resume, device) as run:
        # ------------------------------------------------------------ knowledge, data, model
        circuit = build_circuit(config).to(run.device)
        splits = build_task_data(config, circuit, resolve_data_root(data_root or config.data.root))
        train_set = splits["train"]
        sample_shape = tuple(train_set.images.shape[1:])
        perception = build_perception(config, circuit, sample_shape, initialise=not run.has_checkpoint).to(run.device)
        if config.model.init and config.map.epochs == 0 and \
                read_manifest(Path(config.model.init)).get("kind") != TRAIN_KIND:
            run.log(f"note: model.init {config.model.init} is a clustering, whose cluster numbers are arbitrary; "
                    "if its clusters are good (val_cluster_accuracy in its final.json), --set map.epochs=3 "
                    "first names the clusters and learns which concept value each means "
                    "(docs/perception_from_pretraining.md)")
        mode = MODES[config.train.mode]
        selfsup = None
        if mode.self_supervised:
            selfsup = SelfSupervised.from_config(config.gedi, sample_shape, circuit.concept_domain_size,
                                                 generator=torch.Generator().manual_seed(config.train.seed)
                                                 ).to(run.device)
        augment = build_augment(config.train.augment, **config.train.augment_options)
        observed = train_set.observed
        pretrain_epochs = config.gedi.pretrain_epochs if mode.pretrains_first else 0
        map_epochs = config.map.epochs
        naming = None
        if map_epochs and config.map.search and not run.has_checkpoint:
            naming = name_clusters(config, perception, circuit, train_set, run)

        def phase(epoch: int) -> str:
            if epoch <= pretrain_epochs:
                return "pretrain"
            return "map" if epoch <= pretrain_epochs + map_epochs else "train"

        # ------------------------------------------------------------ the loss of a batch
        def loss(rows: torch.Tensor, generator: torch.Generator, epoch: int) -> dict:
            images, concepts, labels = (t.to(run.device) for t in train_set.batch(rows))
            terms, total = {}, 0.0
            if phase(epoch) in ("map", "train"):
                logits = perception(augment(images.flatten(0, 1), generator).view_as(images),
                                    frozen_backbone=phase(epoch) == "map")
                log_probs = F.log_softmax(logits, dim=-1)
                terms["semantic"] = semantic_loss(circuit(log_probs, labels))
                total = terms["semantic"]
                if observed is not None:
                    seen = observed[rows].to(run.device)
                    if bool(seen.any()):
                        targets = circuit.concept_positions(concepts[seen])
                        terms["concepts"] = F.nll_loss(log_probs[seen], targets)
                        total = total + terms["concepts"]
                if mode.entropy:
                    terms["entropy"] = config.train.entropy_weight * concept_entropy_loss(log_probs.exp())
                    total = total + terms["entropy"]
                if config.map.balance:
                    terms["map_balance"] = config.map.balance * map_balance_loss(perception.cluster_map)
                    total = total + terms["map_balance"]
            joint = phase(epoch) == "train" and not mode.pretrains_first
            if selfsup is not None and (phase(epoch) == "pretrain" or joint):
                weight = 1.0 if phase(epoch) == "pretrain" else config.gedi.weight
                self_terms = selfsup.losses(perception.backbone, images.flatten(0, 1), generator)
                terms.update({f"gedi_{k}": weight * v for k, v in self_terms.items() if k != "total"})
                terms["gedi"] = weight * self_terms["total"]
                total = total + terms["gedi"]
            terms["total"] = total
            return terms

        def evaluate() -> dict:
            record = {}
            for name, split in splits.items():
                if name != "train":
                    metrics = evaluate_split(perception, circuit, split, config.train.eval_batch_size, run.device)
                    record.update({f"{name}_{k}": v for k, v in metrics.items()})
            return record

        job = engine.Job(
            model=perception, state=selfsup, loss=loss, num_examples=len(train_set), evaluate=evaluate,
            finish=lambda records, tracker: final_report(config, circuit, records, pretrain_epochs, naming),
            recover=selfsup.reset_buffer if selfsup is not None else None, phase=phase,
            constant_epochs=pretrain_epochs + map_epochs, epochs=pretrain_epochs + map_epochs + config.train.epochs,
            summary=_summary, unused_parameters=map_epochs > 0,
            learning_rates={perception.cluster_map.logits: config.map.lr} if map_epochs > 0 else {})
        return engine.fit(run, job)


def name_clusters(config: TaskConfig, perception: Perception, circuit: KnowledgeCircuit, train_set,
                  run) -> NamingResult:
    """Start the cluster -> value map at the naming that explains the training labels best
    (labelled images named right first), from the frozen backbone's clusters of every
    training image; the map phase and the joint training then refine it."""
    clusters, was_training = [], perception.training
    perception.eval()
    with torch.no_grad():
        for start in range(0, len(train_set), config.train.eval_batch_size):
            rows = torch.arange(start, min(start + config.train.eval_batch_size, len(train_set)))
            images = train_set.batch(rows)[0].to(run.device)
            clusters.append(perception.clusters(images).argmax(-1).cpu())
    perception.train(was_training)
    clusters = torch.cat(clusters).numpy()
    labelled = None
    if train_set.observed is not None:
        rows, positions = np.nonzero(train_set.observed.numpy())
        labelled = (clusters[rows, positions], positions, train_set.concepts.numpy()[rows, positions])
    found = search_naming(circuit, clusters, train_set.labels.numpy(), perception.cluster_map.logits.shape[-1],
                          labelled, mode=config.map.mode, noise=config.map.noise, restarts=config.map.restarts,
                          seed=config.train.seed)
    perception.cluster_map.set_naming(naming_positions(found, ConceptDomains.of(circuit)))
    for line in found.describe().splitlines():
        run.log(line)
    return found


def _summary(record: dict) -> str:
    line = f"epoch {record['epoch']} ({record['phase']}): loss {record.get('train_total', float('nan')):.4f}"
    for key in ("val_label_accuracy", "test_label_accuracy", "test_concept_accuracy"):
        if isinstance(record.get(key), float):
            line += f"  {key} {record[key]:.4f}"
    return line + f"  {record['seconds']:.1f}s"


def final_report(config: TaskConfig, circuit: KnowledgeCircuit, records: list, pretrain_epochs: int = 0,
                 naming: NamingResult | None = None) -> dict:
    epochs = [r for r in records if "epoch" in r and "event" not in r]
    last = epochs[-1] if epochs else {}
    train_seconds = [r["seconds"] for r in epochs if r.get("phase") != "pretrain"]
    final = {
        "task": config.name,
        "mode": config.train.mode,
        "epochs": len(train_seconds),
        "seed": config.train.seed,
        "test_label_accuracy": last.get("test_label_accuracy"),
        "test_concept_accuracy": last.get("test_concept_accuracy"),
        "prediction": circuit.prediction_method,
        "seconds_per_epoch": sum(train_seconds) / len(train_seconds) if train_seconds else None,
        "seconds_total": sum(r["seconds"] for r in epochs),
        "circuit": {k: v for k, v in circuit.compiled.summary().items() if k != "variables"},
    }
    if naming is not None:
        final["naming"] = naming.to_dict()
    for key, value in last.items():
        if key.startswith(("test_", "val_")) and key not in final:
            final[key] = value
    return final
