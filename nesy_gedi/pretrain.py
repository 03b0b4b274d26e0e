"""`nesy-gedi pretrain`: one backbone trained as an energy-based model and a clustering learner.

Supplies the engine (`nesy_gedi.engine`) with unlabeled training inputs, the backbone f
(x -> C cluster logits) and the self-supervised objective of `gedi.method` (which owns the
SGLD sampler and its replay buffer, checkpointed with the weights). Each evaluation epoch
scores the clusters on the validation and test splits (Hungarian accuracy, NMI, ARI) and the
energy score's AUROC against the OOD set; the run ends with plots and final.json.

SGLD can diverge. A NaN/inf energy, gradient or loss is caught at the step where it
appears: the replay buffer is reset, the event is logged to metrics.jsonl, the step is
skipped on every rank, and after `train.max_nonfinite_recoveries` recoveries the run stops
with a NesyError; the checkpoint of the last completed epoch stays in the run directory.
Energies can also run away while staying finite; the engine's divergence guard watches the
training terms and the validation split's largest cluster, cluster entropy, cluster accuracy
and energy gap (`val_energy_gap`, uniform noise's mean energy minus the data's), and rolls
an epoch that diverged back to the last good one.
"""
from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import numpy as np
import torch
import yaml
from torch import Tensor

from . import engine, plots
from .builders import PRETRAIN_KIND, build_model, load_pretrained_backbone
from .clustering import as_input, cluster_metrics, energy_auroc, ood_auroc_by_class, predict
from .config.load import load_config
from .config.schema import TaskConfig
from .errors import ConfigError
from .data.unlabeled import PretrainData, load_pretrain_data
from .selfsup import SelfSupervised
from .runs import CONFIG, FINAL, RunLock, RunLocked, read_manifest
from .tracking import Tracker

__all__ = ["PretrainData", "pretrain", "pretrained_backbone", "pretraining_key", "load_pretrain_data",
           "evaluate_epoch"]


def pretrain(config: TaskConfig, run_dir: Path, resume: bool = False, data_root: str | None = None,
             device: str | None = None) -> dict:
    """Pretrain `config.model.backbone` with `config.gedi.method`; returns final.json's content.
    With `model.pretrain`, the pretraining it starts from runs first (or a finished one is
    reused): a two-stage recipe is one task file."""
    if config.model.pretrain and not resume:
        config.model.init = str(pretrained_backbone(config, Path(run_dir), data_root, device))
    with engine.open_run(config, run_dir, PRETRAIN_KIND, resume, device) as run:
        data = load_pretrain_data(config, data_root)
        train_inputs = data.train.to(run.device)  # uint8 images stay uint8 until batched: 4x less memory
        run.log(f"{config.name}: {len(train_inputs)} unlabeled training inputs of shape {data.sample_shape}, "
                f"{len(data.test)} test inputs, method {config.gedi.method}, device {run.device}")
        backbone = build_model(config.model, data.sample_shape).to(run.device)
        selfsup = SelfSupervised.from_config(config.gedi, data.sample_shape, config.model.num_clusters,
                                             generator=torch.Generator().manual_seed(config.train.seed)
                                             ).to(run.device)
        if config.model.init and not run.has_checkpoint:  # continue from another run's backbone
            load_pretrained_backbone(config.model.init, backbone)
            run.log(f"backbone initialised from {config.model.init}")

        def loss(rows: Tensor, generator: torch.Generator, epoch: int) -> dict:
            terms = selfsup.losses(backbone, as_input(train_inputs[rows.to(train_inputs.device)]), generator)
            return {**terms, **selfsup.last_stats}

        job = engine.Job(
            model=backbone, state=selfsup, loss=loss, num_examples=len(train_inputs),
            evaluate=lambda: evaluate_epoch(backbone, selfsup, data, config),
            finish=lambda records, tracker: _final_report(config, data, backbone, selfsup, records, run,
                                                          tracker),
            recover=selfsup.reset_buffer, summary=lambda record: _summary(record, config),
            selection_metric="val_cluster_accuracy")
        return engine.fit(run, job)


# ----------------------------------------------------------------------------- the pretraining store
# Keys that say where and how a pretraining runs, not what it computes.
_WHERE_KEYS = {"train": ("device", "num_threads", "progress", "tensorboard", "eval_batch_size"), "data": ("root",),
               "model": ("pretrain_dir",)}
_MAX_CHAIN = 8  # pretrainings started from pretrainings; more is a cycle or a mistake


def pretraining_config(config: TaskConfig, chain: tuple = ()) -> TaskConfig:
    """The pretraining `config.model.pretrain` names, resolved with `model.pretrain_overrides`
    and, inherited from `config`, the seed and where and how it runs (the store included)."""
    task = Path(config.model.pretrain)  # resolved when `config` was loaded
    if len(chain) >= _MAX_CHAIN or str(task.resolve()) in chain:
        raise ConfigError(f"model.pretrain: {task} starts from itself through {len(chain)} pretrainings "
                          "(a cycle of model.pretrain)", config.source)
    inherited = [f"train.seed={config.train.seed}", f"train.progress={str(config.train.progress).lower()}",
                 f"train.device={config.train.device}"]
    if config.train.num_threads:
        inherited.append(f"train.num_threads={config.train.num_threads}")
    if config.model.pretrain_dir:
        inherited.append(f"model.pretrain_dir={config.model.pretrain_dir}")
    return load_config(task, [*config.model.pretrain_overrides, *inherited], pretrain=True)


def pretraining_key(pretrain_config: TaskConfig, chain: tuple = ()) -> str:
    """A short hash of what a pretraining computes: its resolved config without where it runs
    and without the keys left at their defaults, so that an option added to the toolkit later
    (whose default keeps the old behaviour) does not orphan the pretrainings already finished.
    A pretraining that starts from another (`model.pretrain`) hashes that one's key in its place."""
    data = pretraining_fields(pretrain_config, chain)
    return hashlib.sha256(yaml.safe_dump(data, sort_keys=True).encode()).hexdigest()[:12]


def pretraining_fields(pretrain_config: TaskConfig, chain: tuple = ()) -> dict:
    """What `pretraining_key` hashes."""
    data, defaults = pretrain_config.to_dict(), TaskConfig().to_dict()
    for section, keys in _WHERE_KEYS.items():
        for key in keys:
            data[section].pop(key, None)
            defaults[section].pop(key, None)
    data = _without_defaults(data, defaults)
    if pretrain_config.model.pretrain:
        here = str(Path(pretrain_config.source).resolve()) if pretrain_config.source else ""
        start = pretraining_config(pretrain_config, (*chain, here))
        model = data.setdefault("model", {})
        model.pop("init", None)  # filled in at run time from the stage it starts from
        model.pop("pretrain_overrides", None)
        model["pretrain"] = f"{start.name}-{pretraining_key(start, (*chain, here))}"
    return data


def _without_defaults(values: dict, defaults: dict) -> dict:
    """The entries of `values` that differ from `defaults`; config sections (same keys on
    both sides) are compared key by key, anything else as a whole."""
    kept = {}
    for key, value in values.items():
        default = defaults.get(key, _MISSING)
        if isinstance(value, dict) and isinstance(default, dict) and value.keys() == default.keys() and value:
            value = _without_defaults(value, default)
            if value:
                kept[key] = value
        elif value != default:
            kept[key] = value
    return kept


_MISSING = object()


def pretrained_backbone(config: TaskConfig, run_dir: Path, data_root: str | None, device: str | None) -> Path:
    """Run the pretraining `model.pretrain` names (a pretrain task file, with
    `model.pretrain_overrides`) into <store>/<name>-<config hash>, or reuse the finished one
    there; returns its run directory (the new `model.init`). The store is `model.pretrain_dir`,
    by default `pretrained/` beside the run, so that runs written side by side (seeds,
    variants, tasks on the same images) share one pretraining per seed."""
    store = Path(config.model.pretrain_dir) if config.model.pretrain_dir else Path(run_dir).parent / "pretrained"
    store = store.resolve()
    config_with_store = dataclasses.replace(config, model=dataclasses.replace(config.model, pretrain_dir=str(store)))
    pretrain_config = pretraining_config(config_with_store)
    folder = store / f"{pretrain_config.name}-{pretraining_key(pretrain_config)}"
    while True:  # runs started side by side share it: the first one writes it, the others wait
        RunLock(folder).wait()
        if (folder / FINAL).exists() and read_manifest(folder).get("kind") == PRETRAIN_KIND:
            return folder
        try:
            pretrain(pretrain_config, folder, resume=(folder / CONFIG).exists(), data_root=data_root,
                     device=device)
            return folder
        except RunLocked:
            continue  # another process took it between the two checks


def _summary(record: dict, config: TaskConfig) -> str:
    line = f"epoch {record['epoch']}: loss {record.get('train_total', float('nan')):.4f}  {record['seconds']:.1f}s"
    if "nmi" in record:
        line += (f"  nmi {record['nmi']:.3f}  acc {record['cluster_accuracy']:.3f}  "
                 f"E(test) {record['energy_test']:.2f}  E(noise) {record['energy_noise']:.2f}")
    if record.get("ood_auroc") is not None:
        line += f"  AUROC({config.data.ood_dataset}) {record['ood_auroc']:.3f}"
    return line


# =============================================================================== evaluation
def _noise(config: TaskConfig, shape: tuple[int, ...], count: int, seed: int) -> Tensor:
    """Uniform noise in the SGLD box [gedi.sgld.low, gedi.sgld.high] (the images' [-1, 1] by default)."""
    low, high = config.gedi.sgld.low, config.gedi.sgld.high
    return low + (high - low) * torch.rand((count, *shape), generator=torch.Generator().manual_seed(seed))


def _score(backbone, inputs: Tensor, labels: Tensor, ood: Tensor | None, data: PretrainData,
           config: TaskConfig, temperature: float) -> tuple[dict, Tensor, Tensor, Tensor | None]:
    """(`cluster_metrics` plus "ood_auroc" with an OOD set; assignments; energies; OOD energies),
    energies at the objective's own energy temperature."""
    batch = config.train.eval_batch_size
    assignments, energies = predict(backbone, inputs, batch, temperature)
    scores = cluster_metrics(labels, assignments, energies, config.model.num_clusters, data.num_classes)
    ood_energy = None
    if ood is not None:
        ood_energy = predict(backbone, ood, batch, temperature)[1]
        scores["ood_auroc"] = energy_auroc(energies, ood_energy)
    return scores, assignments, energies, ood_energy


def evaluate_epoch(backbone, selfsup: SelfSupervised, data: PretrainData, config: TaskConfig) -> dict:
    """What an evaluation epoch logs: clustering scores on the test split (unprefixed) and on the
    validation split (`val_*`), the energy score's OOD AUROC on each, the mean energies of
    uniform noise and of the replay buffer and, for a generative method with a validation
    split, the energy gap E(noise) - E(validation data) (positive while data is more probable)."""
    evaluation = _score(backbone, data.test, data.test_labels, data.ood, data, config, selfsup.energy_temperature)[0]
    if data.val is not None:
        scores = _score(backbone, data.val, data.val_labels, data.val_ood, data, config, selfsup.energy_temperature)[0]
        evaluation.update({f"val_{k}": v for k, v in scores.items()})
    count = min(len(data.test), 1000)
    _, noise_energy = predict(backbone, _noise(config, data.sample_shape, count, 12345), config.train.eval_batch_size,
                              selfsup.energy_temperature)
    evaluation["energy_noise"] = float(noise_energy.mean())
    if selfsup.generative and "val_energy_test" in evaluation:
        evaluation["val_energy_gap"] = evaluation["energy_noise"] - evaluation["val_energy_test"]
    buffer = selfsup.buffer_samples(count)
    if buffer is not None:
        evaluation["energy_buffer"] = float(predict(backbone, buffer, config.train.eval_batch_size,
                                                     selfsup.energy_temperature)[1].mean())
    return evaluation


def _final_report(config: TaskConfig, data: PretrainData, backbone, selfsup: SelfSupervised, records: list,
                  run: engine.Run, tracker: Tracker) -> dict:
    evaluation, assignments, test_energy, ood_energy = _score(backbone, data.test, data.test_labels, data.ood,
                                                              data, config, selfsup.energy_temperature)
    count = min(len(data.test), 10000)
    _, noise_energy = predict(backbone, _noise(config, data.sample_shape, count, 54321), config.train.eval_batch_size,
                              selfsup.energy_temperature)
    energies = {"test": test_energy, "uniform noise": noise_energy}
    ood_auroc, by_class = evaluation.get("ood_auroc"), None
    if ood_energy is not None:
        energies[f"OOD: {config.data.ood_dataset}"] = ood_energy
        by_class = ood_auroc_by_class(test_energy, ood_energy, data.ood_labels, data.ood_class_names)
    epochs = [r for r in records if "event" not in r and "epoch" in r]
    last = epochs[-1] if epochs else {}
    seconds = [r["seconds"] for r in epochs if isinstance(r.get("seconds"), (int, float))]
    written = _write_plots(config, data, backbone, selfsup, assignments, energies, records, run.run_dir, tracker)
    return {
        "task": config.name,
        "method": config.gedi.method,
        "dataset": config.data.dataset,
        "epochs": last.get("epoch", 0),
        "train_inputs": len(data.train),
        "val_inputs": len(data.val) if data.val is not None else 0,
        "test_inputs": len(data.test),
        **evaluation,
        **{k: v for k, v in last.items() if k.startswith("val_")},
        "ood_dataset": config.data.ood_dataset,
        "ood_auroc": ood_auroc,
        "ood_auroc_by_class": by_class,
        "ood_auroc_noise": energy_auroc(test_energy, noise_energy),
        "energy_ood": float(ood_energy.mean()) if ood_auroc is not None else None,
        "energy_noise": float(noise_energy.mean()),
        "seconds_per_epoch": float(np.mean(seconds)) if seconds else None,
        "device": str(run.device),
        "plots": written,
    }


def _write_plots(config, data: PretrainData, backbone, selfsup: SelfSupervised, assignments, energies,
                 records, run_dir: Path, tracker: Tracker) -> list[str]:
    """samples.png, energy_histogram.png, curves.png and, for 2-D data, clusters.png and
    energy_landscape.png; the sample grid and energies also go to TensorBoard when it is on."""
    written = []
    samples = selfsup.buffer_samples(64 if not data.toy else 500)
    if samples is not None:
        if data.toy:
            path = plots.save_point_samples(data.test, samples.cpu(), run_dir / "samples.png",
                                            title=f"{config.name}: replay buffer")
        else:
            path = plots.save_sample_grid(samples.cpu(), run_dir / "samples.png",
                                          title=f"{config.name}: SGLD samples (replay buffer)")
            tracker.image("samples", plots.sample_grid(samples.cpu()))
        written.append(path.name)
    for name, values in energies.items():
        tracker.histogram(f"energy/{name}", values.numpy())
    written.append(plots.save_energy_histogram(energies, run_dir / "energy_histogram.png",
                                               title=f"{config.name}: energies").name)
    written.append(plots.save_training_curves(records, run_dir / "curves.png", title=config.name).name)
    if data.toy and data.sample_shape == (2,):
        def grid_eval(points: np.ndarray, what: int):
            return predict(backbone, torch.from_numpy(points), config.train.eval_batch_size,
                           selfsup.energy_temperature)[what].numpy()

        bounds = (config.gedi.sgld.low, config.gedi.sgld.high) * 2 if config.gedi.sgld.clamp else None
        written.append(plots.save_toy_clusters(data.test, assignments, run_dir / "clusters.png",
                                               cluster_fn=lambda p: grid_eval(p, 0), bounds=bounds,
                                               title=f"{config.name}: clusters").name)
        written.append(plots.save_energy_landscape(lambda p: grid_eval(p, 1), data.test,
                                                   run_dir / "energy_landscape.png",
                                                   samples=None if samples is None else samples.cpu(),
                                                   bounds=bounds, title=f"{config.name}: energy").name)
    return written
