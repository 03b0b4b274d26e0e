"""What a task config builds, shared by every command: the circuit, the backbone, the
perception network, and a backbone's weights taken from another run (`model.init`)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from .circuit import KnowledgeCircuit
from .compiler import compile_file, require_labels
from .config.schema import ModelConfig, TaskConfig
from .errors import ConfigError, NesyError
from .models.backbones import build_backbone
from .naming import ClusterMap, ConceptDomains
from .runs import (CHECKPOINT, LEGACY_PRETRAIN_KIND, PRETRAIN_KIND, TRAIN_KIND, load_checkpoint, load_weights,
                   read_manifest)


class Perception(nn.Module):
    """One backbone shared by every concept position: images [B, P, ...] -> logits [B, P, C].

    With a `cluster_map` (nesy_gedi.naming.ClusterMap), the backbone's outputs are read as
    clusters and the map says which concept value each cluster means, per concept domain:
    p(v | x) = sum_c p(v | c) p(c | x). A pretrained backbone's cluster numbers are
    arbitrary; the map lets the semantic loss find their meaning without first tearing the
    clusters apart (the map phase, `map.epochs`).
    """

    def __init__(self, backbone: nn.Module, cluster_map: ClusterMap | None = None, temperature: float = 1.0):
        super().__init__()
        self.backbone = backbone
        self.cluster_map = cluster_map
        # The posterior a clustering was trained with, softmax(f / T): read at T = 1, a backbone
        # pretrained at T = 0.1 looks nearly uniform (mean top probability 0.33 instead of 0.99).
        self.register_buffer("temperature", torch.tensor(float(temperature)))

    # A checkpoint that keeps no temperature reads its backbone at T = 1
    # (runs.load_weights fills these in).
    state_added_later = {"temperature": torch.tensor(1.0)}

    @staticmethod
    def upgrade_state(state: dict, prefix: str) -> dict:
        """A map of one domain saved as a plain [values, clusters] matrix becomes ClusterMap's logits."""
        old = state.get(prefix + "cluster_map")
        if isinstance(old, torch.Tensor) and old.dim() == 2:
            state = dict(state)
            state[prefix + "cluster_map.logits"] = state.pop(prefix + "cluster_map").unsqueeze(0)
        return state

    def clusters(self, images: torch.Tensor, frozen_backbone: bool = False) -> torch.Tensor:
        """The backbone's logits at the clustering's temperature, [B, P, K]."""
        batch, positions = images.shape[:2]
        with torch.set_grad_enabled(torch.is_grad_enabled() and not frozen_backbone):
            logits = self.backbone(images.flatten(0, 1)) / self.temperature
        return logits.view(batch, positions, -1)

    def forward(self, images: torch.Tensor, frozen_backbone: bool = False) -> torch.Tensor:
        logits = self.clusters(images, frozen_backbone)
        if self.cluster_map is None:
            return logits
        return self.cluster_map(torch.log_softmax(logits, dim=-1))


def build_circuit(config: TaskConfig) -> KnowledgeCircuit:
    """The task's knowledge as a torch layer; knowledge without a label is refused (the semantic
    loss would learn nothing, and every label accuracy would read 1.0)."""
    if config.logic is None:
        raise ConfigError("this task has no logic section; `train` needs a logic file "
                          "(use `pretrain` for self-supervised tasks)", config.source)
    compiled = compile_file(config.logic.file, config.logic.params, vtree_type=config.logic.vtree)
    require_labels(compiled)
    return KnowledgeCircuit(compiled, compile_module=config.circuit.compile,
                            max_label_candidates=config.circuit.max_label_candidates)


def build_model(model: ModelConfig, sample_shape: tuple[int, ...], num_outputs: int | None = None) -> nn.Module:
    """The backbone `model.backbone` with `num_outputs` (default `model.num_clusters`) logits for
    inputs of `sample_shape` ([C, H, W] images, or [D] vectors for the MLP); a backbone that
    cannot take such inputs raises a ConfigError."""
    outputs = model.num_clusters if num_outputs is None else num_outputs
    options = dict(model.options)
    try:
        if model.backbone.replace("-", "_") == "mlp":
            options.setdefault("in_features", int(np.prod(sample_shape)))
            backbone = build_backbone("mlp", outputs, **options)
        else:
            if len(sample_shape) != 3:
                raise ValueError(f"it needs images [C, H, W], but the data has inputs of shape {tuple(sample_shape)}")
            backbone = build_backbone(model.backbone, outputs, in_channels=sample_shape[0], **options)
        with torch.no_grad():
            out = backbone(torch.zeros(2, *sample_shape))
    except (ValueError, TypeError, RuntimeError) as error:
        raise ConfigError(f"model.backbone {model.backbone!r} cannot be built for inputs of shape "
                          f"{tuple(sample_shape)}: {' '.join(str(error).split())[:300]}") from None
    if tuple(out.shape) != (2, outputs):
        raise ConfigError(f"model.backbone {model.backbone!r} returns {tuple(out.shape)[1:]} outputs, "
                          f"expected {outputs}")
    return backbone


def build_perception(config: TaskConfig, circuit: KnowledgeCircuit, sample_shape: tuple[int, ...],
                     initialise: bool = True) -> Perception:
    """The perception network of a `train` run; `model.init` supplies its starting weights
    unless `initialise` is False (a checkpoint will)."""
    cluster_map = None
    outputs = circuit.concept_domain_size
    if config.map.epochs > 0:
        outputs = config.model.num_clusters
        if outputs < circuit.concept_domain_size:
            raise ConfigError(f"model.num_clusters: {outputs} clusters cannot name {circuit.concept_domain_size} "
                              "concept values (the map phase needs at least as many clusters as values)",
                              config.source)
        domains = ConceptDomains.of(circuit)
        cluster_map = ClusterMap(domains.group_of, domains.sizes, circuit.concept_domain_size, outputs)
    backbone = build_model(config.model, sample_shape, outputs)
    temperature = 1.0
    if config.model.init and initialise:
        temperature = load_pretrained_backbone(config.model.init, backbone)["temperature"]
    return Perception(backbone, cluster_map, temperature=temperature)


def backbone_state(checkpoint: dict, path: Path) -> dict:
    """The backbone's weights in a checkpoint of any kind the project writes."""
    kind = checkpoint.get("kind")
    if kind == LEGACY_PRETRAIN_KIND:
        return checkpoint.get("backbone")
    weights = checkpoint.get("weights")
    if kind == PRETRAIN_KIND:
        return weights
    if kind == TRAIN_KIND and isinstance(weights, dict):
        return {k[len("backbone."):]: v for k, v in weights.items() if k.startswith("backbone.")}
    raise NesyError(f"{CHECKPOINT} holds no backbone weights (kind {kind!r})", str(path))


def load_pretrained_backbone(run_dir: str | Path, backbone: nn.Module) -> dict:
    """Load the backbone of another run (pretrain or train) into `backbone`, in place.

    Returns the run's manifest plus "epoch" and "method". Raises NesyError when the folder
    holds no (readable, safe) checkpoint or the architecture differs.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise NesyError("run directory not found (model.init must name the --out folder of a pretrain "
                        "or train run)", str(run_dir))
    parameter = next(backbone.parameters(), None)
    checkpoint = load_checkpoint(run_dir, map_location=parameter.device if parameter is not None else "cpu")
    if checkpoint is None:
        raise NesyError(f"no {CHECKPOINT} in this folder: it is not a run, or the run has not finished an "
                        "epoch yet", str(run_dir))
    load_weights(backbone, backbone_state(checkpoint, run_dir), run_dir / CHECKPOINT, "this backbone")
    config = checkpoint.get("config") if isinstance(checkpoint.get("config"), dict) else {}
    gedi = config.get("gedi") if isinstance(config.get("gedi"), dict) else {}
    return {**read_manifest(run_dir), "epoch": checkpoint.get("epoch"), "method": gedi.get("method"),
            "temperature": _posterior_temperature(checkpoint)}


def _posterior_temperature(checkpoint: dict) -> float:
    """The T of the posterior softmax(f / T) a checkpoint's backbone was trained with: a
    clustering's gedi.temperature, a train run's own reading of its backbone, else 1."""
    if checkpoint.get("kind") == TRAIN_KIND and isinstance(checkpoint.get("weights"), dict):
        value = checkpoint["weights"].get("temperature")
        return float(value) if isinstance(value, torch.Tensor) and value.numel() == 1 else 1.0
    config = checkpoint.get("config") if isinstance(checkpoint.get("config"), dict) else {}
    gedi = config.get("gedi") if isinstance(config.get("gedi"), dict) else {}
    value = gedi.get("temperature", 1.0)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0 else 1.0

