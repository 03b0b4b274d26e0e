"""Self-supervised objectives on a backbone's cluster logits: GEDI and its ablations, SwAV, Barlow.

`SelfSupervised` is independent of any training loop: both GEDI pretraining
(`nesy_gedi.pretrain`) and the semantic-loss loop (mode `sl+gedi`) call

    terms = selfsup.losses(backbone, x, generator)
    terms["total"].backward()

Methods (`gedi.method`):

    gedi     generative (contrastive divergence, SGLD negatives) + invariance + prior
    no-gen   invariance + prior                      (GEDI without its energy-based model)
    jem      generative only                         (an EBM; clusters = argmax of its logits)
    swav     SwAV swapped prediction on the logits
    barlow   Barlow Twins on the logits

The data term of the energy uses the un-augmented `x`; invariance, prior, SwAV and
Barlow use two augmented views of it.

Temperature (`gedi.temperature` T, `gedi.temperature_scope`): in scope `shared` (the
default, GEDI's one set of logits) the energy is E(x) = -T logsumexp(f(x) / T) and the
posterior p(y|x) = softmax(f(x) / T), for the SGLD sampler, the generative term and the
reported energies alike; at T = 1 this is the paper's objective. Scope `posterior` (the
behaviour before issue #13) divides the logits by T in the invariance and prior terms
only and keeps E(x) = -logsumexp f(x). `SelfSupervised.energy(logits)` is the energy of
the configured scope: evaluation (OOD scores) must use it too.

The SGLD sampler (and so its replay buffer) is a submodule: `.to(device)` moves it and
`state_dict()` saves it.

A diverging sampler raises `nesy_gedi.sgld.NonFiniteError` out of `losses`; callers
reset the buffer with `reset_buffer()` and skip the step (see `engine.NonFiniteGuard`).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from .config import SELF_SUPERVISED_METHODS, GediConfig, TEMPERATURE_SCOPES
from .data.augment import build_augment
from .errors import ConfigError
from .objectives import GediWeights, barlow_twins_loss, energy, gedi_objective, swav_loss
from .sgld import SGLDSampler

__all__ = ["SelfSupervised", "GENERATIVE_METHODS", "TEMPERATURE_SCOPES"]

GENERATIVE_METHODS = ("gedi", "jem")  # the methods that run SGLD


class SelfSupervised(nn.Module):
    """The self-supervised objective `method` for a backbone with `num_clusters` logits.

    Holds the augmentation and, for generative methods, the SGLD sampler with its replay
    buffer of `sample_shape` samples (a single input's shape, e.g. (1, 28, 28) or (2,)).
    """

    def __init__(
        self,
        method: str,
        sample_shape: Sequence[int],
        num_clusters: int,
        weights: GediWeights | None = None,
        augment: str = "digits",
        augment_options: dict | None = None,
        sgld: dict | None = None,
        swav_temperature: float = 0.1,
        swav_epsilon: float = 0.05,
        temperature: float = 1.0,
        temperature_scope: str = "shared",
        generator: torch.Generator | None = None,
    ):
        super().__init__()
        if method not in SELF_SUPERVISED_METHODS:
            raise ValueError(f"unknown self-supervised method {method!r} "
                             f"(choose from {', '.join(SELF_SUPERVISED_METHODS)})")
        self.method = method
        self.sample_shape = tuple(int(d) for d in sample_shape)
        self.num_clusters = int(num_clusters)
        weights = GediWeights() if weights is None else weights
        # The method decides which GEDI terms exist; the weights scale the ones that do.
        if method == "no-gen":
            weights = GediWeights(0.0, weights.invariance, weights.prior, 0.0)
        elif method == "jem":
            weights = GediWeights(weights.generative, 0.0, 0.0, weights.energy_magnitude)
        if method in ("gedi", "no-gen", "jem") and weights.generative + weights.invariance + weights.prior == 0:
            raise ValueError(f"method {method!r}: every weight of its terms is zero")
        self.weights = weights
        self.augment_name = augment
        self.augment_options = dict(augment_options or {})
        self.augment = build_augment(augment, **self.augment_options)
        self.swav_temperature = float(swav_temperature)
        self.swav_epsilon = float(swav_epsilon)
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = float(temperature)
        if temperature_scope not in TEMPERATURE_SCOPES:
            raise ValueError(f"temperature_scope must be one of {', '.join(TEMPERATURE_SCOPES)}, "
                             f"got {temperature_scope!r}")
        self.temperature_scope = temperature_scope
        self.last_stats: dict[str, Tensor] = {}
        self.sampler: SGLDSampler | None = None
        if self.generative:
            self.sampler = SGLDSampler(self.sample_shape, generator=generator, **(sgld or {}))

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_config(
        cls,
        gedi_config: GediConfig,
        sample_shape: Sequence[int],
        num_clusters: int,
        generator: torch.Generator | None = None,
    ) -> "SelfSupervised":
        """Build from the task's `gedi` section; bad values raise ConfigError naming the key."""
        g = gedi_config
        s = g.sgld
        try:
            weights = GediWeights(g.generative, g.invariance, g.prior, g.energy_magnitude)
        except ValueError as error:
            raise ConfigError(f"gedi: {error}") from None
        if not s.low < s.high:
            raise ConfigError(f"gedi.sgld: need low < high, got low={s.low}, high={s.high}")
        sgld = dict(buffer_size=s.buffer_size, reinit_prob=s.reinit_prob, steps=s.steps,
                    step_size=s.step_size, noise_std=s.noise_std, low=s.low, high=s.high,
                    clamp=(s.low, s.high) if s.clamp else None, batch_fraction=s.batch_fraction,
                    short_steps=s.short_steps, long_every=s.long_every)
        try:
            return cls(g.method, sample_shape, num_clusters, weights=weights, augment=g.augment,
                       augment_options=g.augment_options, sgld=sgld,
                       swav_temperature=g.swav_temperature, swav_epsilon=g.swav_epsilon,
                       temperature=g.temperature, temperature_scope=g.temperature_scope,
                       generator=generator)
        except ValueError as error:
            raise ConfigError(f"gedi: {error}") from None

    # ------------------------------------------------------------------ properties
    @property
    def generative(self) -> bool:
        """Whether this objective has an energy term (and so an SGLD sampler)."""
        return self.method in GENERATIVE_METHODS and self.weights.generative > 0

    @property
    def energy_temperature(self) -> float:
        """The T of E(x) = -T logsumexp(f(x) / T): `temperature` in scope shared, else 1."""
        return self.temperature if self.temperature_scope == "shared" else 1.0

    def energy(self, logits: Tensor) -> Tensor:
        """E(x) [B] of the logits f(x) [B, C] under this objective's temperature scope; what
        the sampler descends and what an OOD score -E(x) should use."""
        return energy(logits, self.energy_temperature)

    @torch.no_grad()
    def reset_buffer(self, generator: torch.Generator | None = None) -> None:
        """Refill the replay buffer with noise (after SGLD diverged); no-op without a sampler."""
        if self.sampler is not None:
            self.sampler.buffer.reset(generator)

    def buffer_samples(self, count: int | None = None) -> Tensor | None:
        """The first `count` replay-buffer samples (detached), or None without a sampler."""
        if self.sampler is None:
            return None
        samples = self.sampler.buffer.samples
        return (samples if count is None else samples[:count]).detach()

    def sample(self, backbone: nn.Module, batch_size: int, generator: torch.Generator | None = None) -> Tensor:
        """SGLD negatives from the replay buffer under `backbone`'s energy (updates the buffer)."""
        if self.sampler is None:
            raise RuntimeError(f"method {self.method!r} has no SGLD sampler")
        return self.sampler.sample(lambda z: self.energy(backbone(z)), batch_size, generator=generator)

    # ------------------------------------------------------------------ the objective
    def losses(self, backbone: nn.Module, x: Tensor, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """The weighted terms of the objective on a batch `x` [B, *sample_shape], and "total".

        Keys: gedi/no-gen/jem -> generative, invariance, prior, total (terms a method lacks
        are constant zeros); swav -> swav, total; barlow -> barlow, total. Detached
        diagnostics of the last call (energies of data and negatives) are left in
        `self.last_stats`. Raises NonFiniteError if SGLD diverges.
        """
        if tuple(x.shape[1:]) != self.sample_shape:
            raise ValueError(f"SelfSupervised.losses: expected inputs [B, {', '.join(map(str, self.sample_shape))}], "
                             f"got {tuple(x.shape)}")
        batch = x.shape[0]
        self.last_stats = {}
        if self.method in ("swav", "barlow"):
            views = torch.cat([self.augment(x, generator), self.augment(x, generator)])
            logits_a, logits_b = backbone(views).split(batch)
            if self.method == "swav":
                loss = swav_loss(logits_a, logits_b, temperature=self.swav_temperature, epsilon=self.swav_epsilon)
            else:
                loss = barlow_twins_loss(logits_a, logits_b)
            return {self.method: loss, "total": loss}

        parts: list[Tensor] = []
        if self.generative:
            # Negatives first: sampling only needs input gradients, and it must not see
            # the graph of the forward pass below. gedi.sgld.batch_fraction may ask for fewer
            # negatives than data; the generative term compares the two means.
            negatives = self.sample(backbone, self.sampler.negatives_for(batch), generator)
            parts += [x, negatives]
        needs_views = self.weights.invariance > 0 or self.weights.prior > 0
        if needs_views:
            parts += [self.augment(x, generator), self.augment(x, generator)]
        # One forward pass over data, negatives and views (the backbones have no batch-norm,
        # so this equals separate passes and is faster).
        logits = backbone(torch.cat(parts)).split([len(part) for part in parts])
        logits_data = logits_negative = view_a = view_b = None
        if self.generative:
            logits_data, logits_negative = logits[0], logits[1]
            self.last_stats["energy_data"] = self.energy(logits_data).detach().mean()
            self.last_stats["energy_negative"] = self.energy(logits_negative).detach().mean()
        if needs_views:
            view_a, view_b = logits[-2], logits[-1]
        return gedi_objective(logits_data, logits_negative, view_a, view_b, self.weights,
                              temperature=self.temperature, energy_temperature=self.energy_temperature)

    def extra_repr(self) -> str:
        return (f"method={self.method!r}, num_clusters={self.num_clusters}, sample_shape={self.sample_shape}, "
                f"augment={self.augment_name!r}, weights={self.weights}, temperature={self.temperature}, "
                f"temperature_scope={self.temperature_scope!r}")

