"""GEDI pretraining: one backbone trained as an energy-based model and a clustering learner.

`pretrain(config, run_dir)` reads top to bottom:

    1. run directory, device, config.yaml
    2. data: unlabeled train images (or toy points), labelled test split for evaluation
    3. model: backbone f (x -> C cluster logits) and the self-supervised objective
       (which owns the SGLD sampler and its replay buffer)
    4. optimizer (Adam) and learning-rate schedule (`nesy_gedi.optim`, shared with `train`),
       non-finite guard, resume from the checkpoint
    5. the loop: one `pretrain_epoch` per epoch, evaluate (every `train.eval_every` epochs
       and after the last), log metrics.jsonl, checkpoint
    6. final evaluation (clustering, OOD AUROC of the energy), plots, final.json

Reproducibility: epoch e draws its data order, augmentations and SGLD noise from
generators seeded by (train.seed, e), and the checkpoint holds everything else that
changes (weights, Adam and schedule state, replay buffer), so a resumed run continues exactly as
an uninterrupted one would.

Reliability: SGLD can diverge. A NaN/inf energy, gradient or loss is caught at the step
where it appears (`NonFiniteError` from the sampler, or a non-finite loss / gradient
norm): the replay buffer is reset, the event is logged to metrics.jsonl, the step is
skipped (the optimizer never steps on it), and after `train.max_nonfinite_recoveries`
recoveries the run stops with a NesyError; the checkpoint of the last completed epoch
stays in the run directory.

Also used by the semantic-loss loop: `NonFiniteGuard` and `load_pretrained_backbone`.
"""
from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from tqdm import tqdm

from . import metrics, plots
from .config import TaskConfig, ModelConfig, save_config
from .data.images import class_names, load_images, resolve_data_root, to_float
from .data.toy import TOY_DATASETS, make_toy
from .errors import ConfigError, DataError, NesyError
from .models.backbones import build_backbone
from .objectives import energy
from .optim import build_optimizer, learning_rate_schedule
from .runs import (CHECKPOINT, CONFIG, FINAL, append_metrics, is_evaluation_epoch, load_checkpoint,
                   prepare_run_dir, read_metrics, save_checkpoint, select_device, truncate_metrics, write_json)
from .selfsup import SelfSupervised
from .sgld import NonFiniteError

__all__ = [
    "PretrainData",
    "NonFiniteGuard",
    "pretrain",
    "pretrain_epoch",
    "load_pretrain_data",
    "build_model",
    "evaluate_clusters",
    "evaluate_epoch",
    "cluster_metrics",
    "cluster_statistics",
    "predict",
    "load_pretrained_backbone",
]

CHECKPOINT_KIND = "gedi-pretrain"


# =============================================================================== pretrain
def pretrain(
    config: TaskConfig,
    run_dir: Path,
    resume: bool = False,
    data_root: str | None = None,
    device: str | None = None,
) -> dict:
    """Pretrain `config.model.backbone` with `config.gedi.method`; returns final.json's content."""
    # ---------------------------------------------------------------- 1. run directory, device
    run_dir = prepare_run_dir(run_dir, config.name, resume)
    device = select_device(device or config.train.device)
    save_config(config, run_dir / CONFIG)
    seed = config.train.seed
    log = _logger(config.train.progress)

    # ---------------------------------------------------------------- 2. data
    data = load_pretrain_data(config, data_root)
    train = data.train.to(device)  # uint8 images stay uint8 until batched: 4x less memory
    log(f"{config.name}: {len(train)} unlabeled training inputs of shape {data.sample_shape}, "
        f"{len(data.test)} test inputs, method {config.gedi.method}, device {device}")

    # ---------------------------------------------------------------- 3. model + objective
    torch.manual_seed(seed)
    backbone = build_model(config.model, data.sample_shape).to(device)
    selfsup = SelfSupervised.from_config(config.gedi, data.sample_shape, config.model.num_clusters,
                                         generator=torch.Generator().manual_seed(seed)).to(device)

    # ---------------------------------------------------------------- 4. optimizer, guard, resume
    optimizer = build_optimizer(backbone.parameters(), config)
    scheduler = learning_rate_schedule(optimizer, config, steps_per_epoch(len(train), config.train.batch_size))
    guard = NonFiniteGuard(config.train.max_nonfinite_recoveries, run_dir)
    start_epoch = 0
    checkpoint = load_checkpoint(run_dir, map_location=device) if resume else None
    if checkpoint is not None:
        start_epoch = _restore(checkpoint, backbone, selfsup, optimizer, scheduler, guard, run_dir)
        log(f"resumed from {run_dir / CHECKPOINT} after epoch {start_epoch}")
    elif config.model.init:  # continue from another pretrain run's backbone
        load_pretrained_backbone(config.model.init, backbone)
        log(f"backbone initialised from {config.model.init}")
    if resume:  # drop records of epochs after the checkpoint (or of a run that never made one)
        truncate_metrics(run_dir, start_epoch)
    guard.last_good_epoch = start_epoch

    # ---------------------------------------------------------------- 5. the loop
    for epoch in range(start_epoch + 1, config.train.epochs + 1):
        started = time.perf_counter()
        stats = pretrain_epoch(backbone, selfsup, optimizer, train, batch_size=config.train.batch_size,
                               seed=seed, epoch=epoch, guard=guard, scheduler=scheduler,
                               progress=config.train.progress, desc=f"epoch {epoch}/{config.train.epochs}")
        seconds = time.perf_counter() - started
        record = {"epoch": epoch, **stats, "seconds": seconds, "lr": scheduler.get_last_lr()[0]}
        summary = f"epoch {epoch}: loss {stats['loss_total']:.4f}  {seconds:.1f}s"
        if is_evaluation_epoch(epoch, config.train.epochs, config.train.eval_every):
            evaluation = evaluate_epoch(backbone, selfsup, data, config)
            record.update(evaluation)
            summary += (f"  nmi {evaluation['nmi']:.3f}  acc {evaluation['cluster_accuracy']:.3f}  "
                        f"E(test) {evaluation['energy_test']:.2f}  E(noise) {evaluation['energy_noise']:.2f}")
            if evaluation.get("ood_auroc") is not None:
                summary += f"  AUROC({config.data.ood_dataset}) {evaluation['ood_auroc']:.3f}"
        record["nonfinite_recoveries"] = guard.count
        append_metrics(run_dir, record)
        save_checkpoint(_checkpoint(config, data, backbone, selfsup, optimizer, scheduler, guard, epoch), run_dir)
        guard.last_good_epoch = epoch
        log(summary)

    # ---------------------------------------------------------------- 6. final evaluation
    final = _final_report(config, data, backbone, selfsup, guard, run_dir, device)
    write_json(run_dir / FINAL, final)
    log("final: " + "  ".join(f"{k} {final[k]:.3f}" for k in ("cluster_accuracy", "nmi", "ari")
                                if isinstance(final.get(k), float)))
    return final


# =============================================================================== one epoch
class NonFiniteGuard:
    """Counts recoveries from non-finite SGLD samples, losses or gradients.

    `recover` logs `{"event": "nonfinite", ...}` to `run_dir`/metrics.jsonl (when given),
    resets the replay buffer and returns; once more than `max_recoveries` have happened it
    raises a NesyError instead, naming the last good checkpoint.
    """

    def __init__(self, max_recoveries: int, run_dir: Path | None = None, count: int = 0):
        self.max_recoveries = int(max_recoveries)
        self.run_dir = None if run_dir is None else Path(run_dir)
        self.count = int(count)
        self.last_good_epoch = 0

    def recover(self, selfsup: SelfSupervised, generator: torch.Generator | None, *, epoch: int, step: int,
                reason: str) -> None:
        self.count += 1
        stopping = self.count > self.max_recoveries
        if self.run_dir is not None:
            append_metrics(self.run_dir, {"event": "nonfinite", "epoch": epoch, "step": step, "reason": reason,
                                          "recoveries": self.count, "max_recoveries": self.max_recoveries,
                                          "action": "stop" if stopping else "reset buffer, skip step"})
        if stopping:
            where = (f"; the checkpoint {self.run_dir / CHECKPOINT} holds the last good epoch "
                     f"({self.last_good_epoch})" if self.run_dir is not None and self.last_good_epoch else "")
            raise NesyError(
                f"training stopped: non-finite values again at epoch {epoch}, step {step} ({reason}) after "
                f"{self.max_recoveries} recoveries (train.max_nonfinite_recoveries){where}; try a smaller "
                "gedi.sgld.step_size, a lower train.lr or gedi.energy_magnitude > 0")
        selfsup.reset_buffer(generator)


def epoch_generators(seed: int, epoch: int, device: torch.device) -> tuple[torch.Generator, torch.Generator]:
    """(order generator on the CPU, step generator on `device`) for epoch `epoch`, seeded by (seed, epoch)."""
    base = (int(seed) * 1_000_003 + int(epoch) * 7919) % (2**62)
    order = torch.Generator().manual_seed(base)
    step = torch.Generator(device=device).manual_seed(base + 1)
    return order, step


def _as_input(batch: Tensor) -> Tensor:
    return to_float(batch) if batch.dtype == torch.uint8 else batch.float()


def _grad_norm(parameters: list[nn.Parameter]) -> Tensor:
    norms = [p.grad.detach().norm() for p in parameters if p.grad is not None]
    if not norms:
        return torch.zeros(())
    return torch.stack(norms).norm()


def steps_per_epoch(count: int, batch_size: int) -> int:
    """Optimiser steps in one pass over `count` inputs (the last incomplete batch is dropped)."""
    return max(1, count // min(batch_size, count))


def pretrain_epoch(
    backbone: nn.Module,
    selfsup: SelfSupervised,
    optimizer: torch.optim.Optimizer,
    inputs: Tensor,
    *,
    batch_size: int,
    seed: int,
    epoch: int,
    guard: NonFiniteGuard,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    progress: bool = False,
    desc: str | None = None,
) -> dict:
    """One pass of the self-supervised objective over `inputs` (uint8 images, or float inputs
    already in the model's range), in an order fixed by (seed, epoch); returns the mean of every
    loss term ("loss_<term>"), training energies, "steps" and "skipped_steps".

    The last incomplete batch is dropped (unless it is the only one): the prior and Barlow
    terms need a real batch. Non-finite steps go through `guard` and are skipped; `scheduler`
    (if given) advances once per optimiser step.
    """
    device = next(backbone.parameters()).device
    order_generator, step_generator = epoch_generators(seed, epoch, device)
    count = len(inputs)
    batch_size = min(batch_size, count)
    steps = steps_per_epoch(count, batch_size)
    order = torch.randperm(count, generator=order_generator)[: steps * batch_size].to(inputs.device)
    parameters = [p for p in backbone.parameters() if p.requires_grad]
    backbone.train()
    sums: dict[str, Tensor] = {}
    done = skipped = 0
    bar = tqdm(range(steps), desc=desc, disable=not progress, leave=False, dynamic_ncols=True, file=sys.stderr)
    for step in bar:
        x = _as_input(inputs[order[step * batch_size:(step + 1) * batch_size]]).to(device)
        optimizer.zero_grad(set_to_none=True)
        try:
            terms = selfsup.losses(backbone, x, step_generator)
        except NonFiniteError as error:
            skipped += 1
            guard.recover(selfsup, step_generator, epoch=epoch, step=step + 1, reason=str(error))
            continue
        total = terms["total"]
        total.backward()
        finite = torch.isfinite(total.detach()) & torch.isfinite(_grad_norm(parameters).to(total.device))
        if not bool(finite):  # one host sync per step
            optimizer.zero_grad(set_to_none=True)
            skipped += 1
            what = "loss" if not torch.isfinite(total.detach()) else "parameter gradient"
            guard.recover(selfsup, step_generator, epoch=epoch, step=step + 1,
                          reason=f"the {what} is not finite (total loss {total.item()})")
            continue
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        done += 1
        for key, value in {**{f"loss_{k}": v for k, v in terms.items()}, **selfsup.last_stats}.items():
            sums[key] = sums.get(key, 0.0) + value.detach()
        if progress and (step % 10 == 0 or step == steps - 1):
            bar.set_postfix(loss=f"{total.item():.4f}")
    bar.close()
    result = {key: (value / done).item() for key, value in sums.items()} if done else {}
    result.setdefault("loss_total", math.nan)
    return {**result, "steps": done, "skipped_steps": skipped}


# =============================================================================== data
@dataclass
class PretrainData:
    """Unlabeled training inputs and a labelled test split.

    Images are uint8 [N, C, H, W] (converted to [-1, 1] per batch); toy points float [N, 2].
    """

    train: Tensor
    test: Tensor
    test_labels: Tensor
    sample_shape: tuple[int, ...]
    num_classes: int
    toy: bool
    ood: Tensor | None = None          # data.ood_dataset's first len(test) test inputs
    ood_labels: Tensor | None = None
    ood_class_names: list[str] | None = None


def load_pretrain_data(config: TaskConfig, data_root: str | None = None) -> PretrainData:
    """The training inputs (labels dropped) and the test split of `config.data.dataset`.

    data.train_examples / data.test_examples keep the first N of each split; toy sets draw
    2 * data.toy_samples points (seeded by train.seed) and split them in halves.
    """
    name = config.data.dataset.strip().lower()
    if name in TOY_DATASETS:
        points, labels = make_toy(name, 2 * config.data.toy_samples, config.data.toy_noise, config.train.seed)
        half = config.data.toy_samples
        train, test, test_labels = points[:half], points[half:], labels[half:]
    else:
        root = None if name.startswith("fake") else resolve_data_root(data_root or config.data.root)
        train, _ = load_images(name, root or ".", "train")
        test, test_labels = load_images(name, root or ".", "test")
    if config.data.train_examples is not None:
        train = train[: config.data.train_examples]
    if config.data.test_examples is not None:
        test, test_labels = test[: config.data.test_examples], test_labels[: config.data.test_examples]
    num_classes = int(test_labels.max()) + 1 if len(test_labels) else 1
    shape = tuple(train.shape[1:])
    data = PretrainData(train, test, test_labels, shape, num_classes, name in TOY_DATASETS)
    if config.data.ood_dataset:
        data.ood, data.ood_labels = _load_ood(config, data_root, shape, len(test))
        classes = int(data.ood_labels.max()) + 1 if len(data.ood_labels) else 0
        data.ood_class_names = class_names(config.data.ood_dataset, classes)
    return data


def _load_ood(config: TaskConfig, data_root: str | None, shape: tuple[int, ...],
              count: int) -> tuple[Tensor, Tensor]:
    """The first `count` test images of `data.ood_dataset` and their labels."""
    name = config.data.ood_dataset
    root = None if name.startswith("fake") else resolve_data_root(data_root or config.data.root)
    images, labels = load_images(name, root or ".", "test")
    if tuple(images.shape[1:]) != shape:
        raise DataError(f"data.ood_dataset {name!r} has inputs of shape {tuple(images.shape[1:])}, but "
                        f"{config.data.dataset!r} has {shape}: OOD inputs must have the same shape")
    return images[:count], labels[:count]


def ood_auroc_by_class(test_energy: Tensor, ood_energy: Tensor, ood_labels: Tensor,
                       names: list[str]) -> dict[str, float | None]:
    """AUROC of the in-distribution test set against each OOD class on its own: where the
    overall figure is lost (e.g. MNIST vs Fashion-MNIST's trousers, dresses and sneakers)."""
    return {names[k]: _auroc(test_energy, ood_energy[ood_labels == k])
            for k in range(len(names)) if bool((ood_labels == k).any())}


# =============================================================================== model
def build_model(model: ModelConfig, sample_shape: tuple[int, ...]) -> nn.Module:
    """The backbone `model.backbone` with `model.num_clusters` logits for inputs of `sample_shape`
    ([C, H, W] images, or [D] vectors for the MLP); a mismatch raises a ConfigError."""
    options = dict(model.options)
    try:
        if model.backbone.replace("-", "_") == "mlp":
            options.setdefault("in_features", int(np.prod(sample_shape)))
            backbone = build_backbone("mlp", model.num_clusters, **options)
        else:
            if len(sample_shape) != 3:
                raise ValueError(f"it needs images [C, H, W], but the data has inputs of shape {tuple(sample_shape)}")
            backbone = build_backbone(model.backbone, model.num_clusters, in_channels=sample_shape[0], **options)
        with torch.no_grad():
            out = backbone(torch.zeros(2, *sample_shape))
    except (ValueError, TypeError, RuntimeError) as error:
        raise ConfigError(f"model.backbone {model.backbone!r} cannot be built for inputs of shape "
                          f"{tuple(sample_shape)}: {error}") from None
    if tuple(out.shape) != (2, model.num_clusters):
        raise ConfigError(f"model.backbone {model.backbone!r} returns {tuple(out.shape)[1:]} outputs, "
                          f"expected model.num_clusters = {model.num_clusters}")
    return backbone


# =============================================================================== evaluation
@torch.no_grad()
def predict(backbone: nn.Module, inputs: Tensor, batch_size: int = 1000) -> tuple[Tensor, Tensor]:
    """(cluster assignments [N] int64, energies [N] float) on the CPU, in eval mode."""
    device = next(backbone.parameters()).device
    was_training = backbone.training
    backbone.eval()
    assignments, energies = [], []
    for start in range(0, len(inputs), batch_size):
        logits = backbone(_as_input(inputs[start:start + batch_size]).to(device)).float()
        assignments.append(logits.argmax(dim=-1).cpu())
        energies.append(energy(logits).cpu())
    backbone.train(was_training)
    if not assignments:
        return torch.zeros(0, dtype=torch.int64), torch.zeros(0)
    return torch.cat(assignments), torch.cat(energies)


def cluster_statistics(assignments: Tensor, num_clusters: int) -> dict:
    """Collapse diagnostics of hard assignments: the largest cluster's fraction of the inputs,
    the entropy of the cluster histogram divided by log C (1 = perfectly balanced), clusters used."""
    counts = torch.bincount(assignments, minlength=num_clusters).double()
    fractions = counts / counts.sum().clamp_min(1)
    nonzero = fractions[fractions > 0]
    entropy = max(0.0, float(-(nonzero * nonzero.log()).sum()) / math.log(num_clusters)) if num_clusters > 1 else 0.0
    return {"largest_cluster": float(fractions.max()), "cluster_entropy": entropy,
            "clusters_used": int((counts > 0).sum())}


def evaluate_clusters(backbone: nn.Module, inputs: Tensor, labels: Tensor, num_clusters: int,
                      batch_size: int = 1000, num_classes: int | None = None) -> dict:
    """Hungarian cluster accuracy, NMI and ARI of argmax-logit clusters against `labels`,
    plus `cluster_statistics` and the mean energy of the inputs ("energy_test")."""
    assignments, energies = predict(backbone, inputs, batch_size)
    return cluster_metrics(labels, assignments, energies, num_clusters, num_classes)


def cluster_metrics(labels: Tensor, assignments: Tensor, energies: Tensor, num_clusters: int,
                    num_classes: int | None = None) -> dict:
    """`evaluate_clusters` from predictions already made."""
    classes = max(num_classes or 0, int(labels.max()) + 1)
    accuracy, _ = metrics.cluster_accuracy(labels, assignments, num_classes=classes)
    return {"cluster_accuracy": accuracy, "nmi": metrics.nmi(labels, assignments),
            "ari": metrics.ari(labels, assignments), **cluster_statistics(assignments, num_clusters),
            "energy_test": float(energies.mean())}


def _noise(config: TaskConfig, shape: tuple[int, ...], count: int, seed: int) -> Tensor:
    """Uniform noise in the SGLD box [gedi.sgld.low, gedi.sgld.high] (the images' [-1, 1] by default)."""
    low, high = config.gedi.sgld.low, config.gedi.sgld.high
    return low + (high - low) * torch.rand((count, *shape), generator=torch.Generator().manual_seed(seed))


def evaluate_epoch(backbone: nn.Module, selfsup: SelfSupervised, data: PretrainData, config: TaskConfig) -> dict:
    """What an evaluation epoch logs: `cluster_metrics` on the test set, the energy score's AUROC
    against the OOD set (if configured), and the energies of noise and of the replay buffer."""
    evaluation = _score_test_and_ood(backbone, data, config)[0]
    evaluation.update(_energy_summary(backbone, selfsup, data, config))
    return evaluation


def _score_test_and_ood(backbone: nn.Module, data: PretrainData,
                        config: TaskConfig) -> tuple[dict, Tensor, Tensor, Tensor | None]:
    """(`cluster_metrics` of the test split, plus "ood_auroc" with an OOD set; test cluster
    assignments; test energies; OOD energies, None without an OOD set)."""
    batch = config.train.eval_batch_size
    assignments, test_energy = predict(backbone, data.test, batch)
    evaluation = cluster_metrics(data.test_labels, assignments, test_energy, config.model.num_clusters,
                                 data.num_classes)
    ood_energy = None
    if data.ood is not None:
        ood_energy = predict(backbone, data.ood, batch)[1]
        evaluation["ood_auroc"] = _auroc(test_energy, ood_energy)
    return evaluation, assignments, test_energy, ood_energy


def _energy_summary(backbone, selfsup: SelfSupervised, data: PretrainData, config: TaskConfig) -> dict:
    """Mean energies of uniform noise and of the replay buffer (training diagnostics)."""
    count = min(len(data.test), 1000)
    _, noise_energy = predict(backbone, _noise(config, data.sample_shape, count, 12345),
                              config.train.eval_batch_size)
    summary = {"energy_noise": float(noise_energy.mean())}
    buffer = selfsup.buffer_samples(count)
    if buffer is not None:
        summary["energy_buffer"] = float(predict(backbone, buffer, config.train.eval_batch_size)[1].mean())
    return summary


def _auroc(scores_in: Tensor, scores_out: Tensor) -> float | None:
    """AUROC with -energy as the in-distribution score; None when an energy is not finite."""
    if not (torch.isfinite(scores_in).all() and torch.isfinite(scores_out).all()):
        return None
    return metrics.auroc(-scores_in, -scores_out)


def _final_report(config: TaskConfig, data: PretrainData, backbone, selfsup: SelfSupervised,
                  guard: NonFiniteGuard, run_dir: Path, device) -> dict:
    evaluation, assignments, test_energy, ood_energy = _score_test_and_ood(backbone, data, config)
    count = min(len(data.test), 10000)
    _, noise_energy = predict(backbone, _noise(config, data.sample_shape, count, 54321),
                              config.train.eval_batch_size)
    energies = {"test": test_energy, "uniform noise": noise_energy}
    ood_auroc, by_class = evaluation.get("ood_auroc"), None
    if ood_energy is not None:
        energies[f"OOD: {config.data.ood_dataset}"] = ood_energy
        by_class = ood_auroc_by_class(test_energy, ood_energy, data.ood_labels, data.ood_class_names)
    records = read_metrics(run_dir)
    epochs = [r for r in records if "event" not in r and "epoch" in r]
    seconds = [r["seconds"] for r in epochs if isinstance(r.get("seconds"), (int, float))]

    written = _write_plots(config, data, backbone, selfsup, assignments, energies, records, run_dir)
    return {
        "task": config.name,
        "method": config.gedi.method,
        "dataset": config.data.dataset,
        "epochs": epochs[-1]["epoch"] if epochs else 0,
        "train_inputs": len(data.train),
        "test_inputs": len(data.test),
        **evaluation,
        "ood_dataset": config.data.ood_dataset,
        "ood_auroc": ood_auroc,
        "ood_auroc_by_class": by_class,
        "ood_auroc_noise": _auroc(test_energy, noise_energy),
        "energy_ood": float(energies[f"OOD: {config.data.ood_dataset}"].mean()) if ood_auroc is not None else None,
        "energy_noise": float(noise_energy.mean()),
        "seconds_per_epoch": float(np.mean(seconds)) if seconds else None,
        "nonfinite_recoveries": guard.count,
        "device": str(device),
        "plots": written,
    }


def _write_plots(config, data: PretrainData, backbone, selfsup: SelfSupervised, assignments, energies,
                 records, run_dir: Path) -> list[str]:
    """samples.png, energy_histogram.png, curves.png and, for 2-D data, clusters.png and energy_landscape.png."""
    written = []
    samples = selfsup.buffer_samples(64 if not data.toy else 500)
    if samples is not None:
        if data.toy:
            path = plots.save_point_samples(data.test, samples.cpu(), run_dir / "samples.png",
                                            title=f"{config.name}: replay buffer")
        else:
            path = plots.save_sample_grid(samples.cpu(), run_dir / "samples.png",
                                          title=f"{config.name}: SGLD samples (replay buffer)")
        written.append(path.name)
    written.append(plots.save_energy_histogram(energies, run_dir / "energy_histogram.png",
                                               title=f"{config.name}: energies").name)
    written.append(plots.save_training_curves(records, run_dir / "curves.png", title=config.name).name)
    if data.toy and data.sample_shape == (2,):
        def grid_eval(points: np.ndarray, what: int):
            return predict(backbone, torch.from_numpy(points), config.train.eval_batch_size)[what].numpy()

        bounds = (config.gedi.sgld.low, config.gedi.sgld.high) * 2 if config.gedi.sgld.clamp else None
        written.append(plots.save_toy_clusters(data.test, assignments, run_dir / "clusters.png",
                                               cluster_fn=lambda p: grid_eval(p, 0), bounds=bounds,
                                               title=f"{config.name}: clusters").name)
        written.append(plots.save_energy_landscape(lambda p: grid_eval(p, 1), data.test,
                                                   run_dir / "energy_landscape.png",
                                                   samples=None if samples is None else samples.cpu(),
                                                   bounds=bounds, title=f"{config.name}: energy").name)
    return written


# =============================================================================== checkpoints
def _model_meta(config: TaskConfig, data: PretrainData) -> dict:
    return {"backbone": config.model.backbone, "num_clusters": config.model.num_clusters,
            "options": dict(config.model.options), "sample_shape": list(data.sample_shape)}


def _checkpoint(config, data, backbone, selfsup, optimizer, scheduler, guard: NonFiniteGuard, epoch: int) -> dict:
    rng = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    return {"kind": CHECKPOINT_KIND, "epoch": epoch, "model": _model_meta(config, data),
            "backbone": backbone.state_dict(), "selfsup": selfsup.state_dict(),
            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "nonfinite_recoveries": guard.count, "rng": rng,
            "config": config.to_dict()}


def _restore(checkpoint: dict, backbone, selfsup, optimizer, scheduler, guard: NonFiniteGuard, run_dir: Path) -> int:
    if checkpoint.get("kind") != CHECKPOINT_KIND:
        raise NesyError(f"{CHECKPOINT} is not a GEDI pretraining checkpoint (kind {checkpoint.get('kind')!r}); "
                        "choose another run directory", str(run_dir))
    _load_state(backbone, checkpoint["backbone"], run_dir, checkpoint.get("model", {}))
    try:
        selfsup.load_state_dict(checkpoint["selfsup"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        if "scheduler" in checkpoint:  # checkpoints written before pretraining had a schedule lack it
            scheduler.load_state_dict(checkpoint["scheduler"])
    except (RuntimeError, ValueError, KeyError) as error:
        raise NesyError(f"cannot resume: the checkpoint's objective/optimizer state does not match the config "
                        f"({' '.join(str(error).split())[:200]})", str(run_dir / CHECKPOINT)) from None
    guard.count = int(checkpoint.get("nonfinite_recoveries", 0))
    rng = checkpoint.get("rng", {})
    if "torch" in rng:
        torch.set_rng_state(rng["torch"].cpu())
    if "cuda" in rng and torch.cuda.is_available() and len(rng["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([state.cpu() for state in rng["cuda"]])
    return int(checkpoint["epoch"])


def _load_state(backbone: nn.Module, state: dict, run_dir: Path, meta: dict) -> None:
    own = backbone.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    resized = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or resized:
        details = []
        if resized:
            k = resized[0]
            details.append(f"{k} has shape {tuple(state[k].shape)} there but {tuple(own[k].shape)} here")
        if missing:
            details.append(f"missing {', '.join(missing[:3])}")
        if unexpected:
            details.append(f"unexpected {', '.join(unexpected[:3])}")
        saved = (f"{meta.get('backbone')} with {meta.get('num_clusters')} outputs for inputs "
                 f"{tuple(meta.get('sample_shape', ()))}" if meta else "another architecture")
        raise NesyError(f"architecture mismatch: the checkpoint holds a {saved}, which does not fit this "
                        f"{type(backbone).__name__} ({'; '.join(details)})", str(Path(run_dir) / CHECKPOINT))
    backbone.load_state_dict(state)


def load_pretrained_backbone(run_dir: str | Path, backbone: nn.Module) -> dict:
    """Load the backbone weights of a pretrain run into `backbone` (in place, on its device).

    Returns the checkpoint's model description plus "epoch" and "method". Raises NesyError
    when the folder has no (readable) checkpoint or the architecture differs.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise NesyError("pretrain run directory not found (model.init must name a pretrain run's --out folder)",
                        str(run_dir))
    parameter = next(backbone.parameters(), None)
    checkpoint = load_checkpoint(run_dir, map_location=parameter.device if parameter is not None else "cpu")
    if checkpoint is None:
        raise NesyError(f"no {CHECKPOINT} in this folder: it is not a pretrain run, or the run has not finished "
                        "an epoch yet", str(run_dir))
    if "backbone" not in checkpoint:
        raise NesyError(f"{CHECKPOINT} holds no backbone weights (kind {checkpoint.get('kind')!r})", str(run_dir))
    meta = dict(checkpoint.get("model", {}))
    _load_state(backbone, checkpoint["backbone"], run_dir, meta)
    meta["epoch"] = checkpoint.get("epoch")
    meta["method"] = checkpoint.get("config", {}).get("gedi", {}).get("method")
    return meta


# =============================================================================== helpers
def _logger(enabled: bool):
    def log(message: str) -> None:
        if enabled:
            tqdm.write(message, file=sys.stderr)
    return log
