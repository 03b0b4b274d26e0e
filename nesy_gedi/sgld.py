"""SGLD sampling with a persistent replay buffer (JEM-style, Grathwohl et al., 2020).

Used for the negatives of GEDI's contrastive-divergence term.  Sampling never
changes the model's train/eval mode: the backbones in this project have no
batch-norm, so running them in train mode on negatives has no side effects.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
from torch import Tensor, nn

__all__ = ["NonFiniteError", "ReplayBuffer", "sgld", "SGLDSampler"]

EnergyFn = Callable[[Tensor], Tensor]


class NonFiniteError(RuntimeError):
    """An energy, gradient or sample became NaN or infinite during SGLD."""


def _random(
    kind: str,
    shape: Sequence[int],
    generator: torch.Generator | None,
    device: torch.device,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    # A generator only draws on its own device; draw there, then move, so a seeded
    # CPU generator stays usable when the buffer lives on an accelerator.
    where = generator.device if generator is not None else device
    draw = torch.rand if kind == "uniform" else torch.randn
    return draw(tuple(shape), generator=generator, device=where, dtype=dtype).to(device)


class ReplayBuffer(nn.Module):
    """Persistent buffer of `size` samples of `sample_shape`, initialised uniform in [low, high].

    Stored as a registered buffer, so `.to(device)` moves it and `state_dict()`
    saves it with the model.
    """

    samples: Tensor

    def __init__(
        self,
        size: int,
        sample_shape: Sequence[int],
        low: float = -1.0,
        high: float = 1.0,
        reinit_prob: float = 0.05,
        generator: torch.Generator | None = None,
    ):
        super().__init__()
        if size < 1:
            raise ValueError(f"ReplayBuffer: size must be >= 1, got {size}")
        if not low < high:
            raise ValueError(f"ReplayBuffer: need low < high, got low={low}, high={high}")
        if not 0.0 <= reinit_prob <= 1.0:
            raise ValueError(f"ReplayBuffer: reinit_prob must be in [0, 1], got {reinit_prob}")
        self.size = int(size)
        self.sample_shape = tuple(int(d) for d in sample_shape)
        self.low = float(low)
        self.high = float(high)
        self.reinit_prob = float(reinit_prob)
        self.register_buffer("samples", torch.empty((self.size, *self.sample_shape)))
        self.reset(generator)

    def _noise(self, count: int, generator: torch.Generator | None) -> Tensor:
        unit = _random(
            "uniform", (count, *self.sample_shape), generator, self.samples.device, self.samples.dtype
        )
        return self.low + (self.high - self.low) * unit

    @torch.no_grad()
    def reset(self, generator: torch.Generator | None = None) -> None:
        """Re-fill the whole buffer with uniform noise."""
        self.samples.copy_(self._noise(self.size, generator))

    @torch.no_grad()
    def draw(
        self, batch_size: int, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """(samples, indices): a copy of `batch_size` random entries, each replaced by
        fresh noise with probability `reinit_prob` (the buffer itself is untouched
        until `update`)."""
        if batch_size < 1:
            raise ValueError(f"ReplayBuffer.draw: batch_size must be >= 1, got {batch_size}")
        device = self.samples.device
        where = generator.device if generator is not None else device
        indices = torch.randint(
            0, self.size, (batch_size,), generator=generator, device=where
        ).to(device)
        samples = self.samples.index_select(0, indices)  # a copy
        # Fresh noise keeps the chains from all converging to a few modes.
        reinit = _random("uniform", (batch_size,), generator, device) < self.reinit_prob
        if reinit.any():
            noise = self._noise(batch_size, generator)
            samples[reinit] = noise[reinit]
        return samples, indices

    @torch.no_grad()
    def update(self, indices: Tensor, samples: Tensor) -> None:
        """Write `samples` back at `indices` (detached; duplicates: last write wins)."""
        if samples.shape[1:] != self.samples.shape[1:] or samples.shape[0] != indices.shape[0]:
            raise ValueError(
                f"ReplayBuffer.update: got {indices.shape[0]} indices and samples of shape "
                f"{tuple(samples.shape)}, expected [N, {', '.join(map(str, self.sample_shape))}]"
            )
        self.samples[indices.to(self.samples.device)] = samples.detach().to(
            device=self.samples.device, dtype=self.samples.dtype
        )

    def extra_repr(self) -> str:
        return (
            f"size={self.size}, sample_shape={self.sample_shape}, low={self.low}, "
            f"high={self.high}, reinit_prob={self.reinit_prob}"
        )


_CHECKED = ("the energy", "the energy gradient", "the sample")


def _raise_first_non_finite(finite: Tensor, steps: int) -> None:
    """`finite` [steps, 3]: per step, whether the energy, its gradient and the sample were finite."""
    step, what = divmod(int((~finite).flatten().nonzero()[0]), len(_CHECKED))
    raise NonFiniteError(
        f"SGLD step {step + 1} of {steps}: {_CHECKED[what]} is not finite "
        f"(try a smaller step_size or a non-zero energy_magnitude weight)"
    )


def sgld(
    energy_fn: EnergyFn,
    x: Tensor,
    steps: int = 20,
    step_size: float = 1.0,
    noise_std: float = 0.01,
    clamp: tuple[float, float] | None = (-1.0, 1.0),
    generator: torch.Generator | None = None,
) -> Tensor:
    """x <- x - step_size * grad_x E(x).sum() + noise_std * N(0, I), `steps` times.

    JEM-style SGLD: step size and noise are decoupled rather than tied as in
    exact Langevin dynamics.  Returns detached samples (a new tensor), clamped to
    `clamp` after every step (None: no clamping).  Raises NonFiniteError naming the
    first step whose energy, gradient or update is NaN or infinite.

    Cost per step: one forward and one backward pass of `energy_fn` w.r.t. x only
    (torch.autograd.grad: the parameters' gradients are neither computed nor
    accumulated, and their requires_grad is left alone), one normal draw and a few
    in-place updates of one sample tensor.  Finiteness is tested on float64 sums (a NaN
    or inf anywhere, and only there, makes the sum non-finite) and checked once after
    the last step, so no step waits on the device.  What is drawn from `generator`
    does not depend on the values, so one generator state gives one set of samples.
    """
    if steps < 0:
        raise ValueError(f"sgld: steps must be >= 0, got {steps}")
    if not x.is_floating_point():
        raise ValueError(f"sgld: x must be a floating-point tensor, got {x.dtype}")
    x = x.detach().clone()  # updated in place below
    if clamp is not None:
        x.clamp_(*clamp)
    if steps == 0:
        return x
    noise = torch.empty_like(x)
    # A generator draws on its own device: draw there and copy when x lives elsewhere.
    draw_here = generator is None or generator.device == x.device
    finite = []
    # Callers often sample inside torch.no_grad(); the input gradient is still needed.
    with torch.enable_grad():
        for _ in range(steps):
            x.requires_grad_(True)
            energies = energy_fn(x)
            # An energy that ignores x (e.g. a constant NaN) has a zero gradient.
            (grad,) = torch.autograd.grad(energies.sum(), x, allow_unused=True, materialize_grads=True)
            x.requires_grad_(False)
            if draw_here:
                noise.normal_(generator=generator)
            else:
                noise.copy_(torch.randn(x.shape, generator=generator, device=generator.device, dtype=x.dtype))
            # (x - step_size * grad) + noise_std * noise, in place, rounded as written. (The
            # gradient may be an expanded view, so it is not scaled in place.)
            x.sub_(grad * step_size).add_(noise.mul_(noise_std))
            if clamp is not None:
                x.clamp_(*clamp)
            # Finite iff every element is (a float64 sum of float32 values cannot overflow).
            finite.append(torch.stack([t.detach().sum(dtype=torch.float64) for t in (energies, grad, x)]))
    finite = torch.isfinite(torch.stack(finite))
    if not bool(finite.all()):
        _raise_first_non_finite(finite, steps)
    return x


class SGLDSampler(nn.Module):
    """A ReplayBuffer plus SGLD hyper-parameters; a submodule of the model being
    trained, so its buffer follows the model's device and checkpoints.

    Two settings make the negatives cheaper (both off by default):

    * `batch_fraction` f: a training batch of B inputs gets ceil(f * B) negatives
      (`negatives_for`), so the sampler runs on a fraction of the batch;
    * `short_steps` S' with `long_every` k: short-run chains continued from the persistent
      buffer. Call c (counted from 0, saved with the buffer so a resumed run continues the
      schedule) runs `steps` SGLD steps when c is a multiple of k and S' otherwise.
    """

    calls: Tensor

    def __init__(
        self,
        sample_shape: Sequence[int],
        buffer_size: int = 10000,
        reinit_prob: float = 0.05,
        steps: int = 20,
        step_size: float = 1.0,
        noise_std: float = 0.01,
        clamp: tuple[float, float] | None = (-1.0, 1.0),
        low: float = -1.0,
        high: float = 1.0,
        generator: torch.Generator | None = None,
        batch_fraction: float = 1.0,
        short_steps: int | None = None,
        long_every: int = 1,
    ):
        super().__init__()
        if steps < 0:
            raise ValueError(f"SGLDSampler: steps must be >= 0, got {steps}")
        if not 0.0 < batch_fraction <= 1.0:
            raise ValueError(f"SGLDSampler: batch_fraction must be in (0, 1], got {batch_fraction}")
        if short_steps is not None and short_steps < 0:
            raise ValueError(f"SGLDSampler: short_steps must be >= 0, got {short_steps}")
        if long_every < 1:
            raise ValueError(f"SGLDSampler: long_every must be >= 1, got {long_every}")
        self.buffer = ReplayBuffer(
            buffer_size, sample_shape, low=low, high=high, reinit_prob=reinit_prob,
            generator=generator,
        )
        self.steps = int(steps)
        self.step_size = float(step_size)
        self.noise_std = float(noise_std)
        self.clamp = None if clamp is None else (float(clamp[0]), float(clamp[1]))
        self.batch_fraction = float(batch_fraction)
        self.short_steps = None if short_steps is None else int(short_steps)
        self.long_every = int(long_every)
        self.register_buffer("calls", torch.zeros((), dtype=torch.long))
        self.last_steps = 0  # SGLD steps of the last `sample` call

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # A state saved before the schedule existed starts it from the beginning.
        state_dict.setdefault(prefix + "calls", torch.zeros((), dtype=torch.long))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def negatives_for(self, batch_size: int) -> int:
        """How many negatives a training batch of `batch_size` inputs gets: ceil(f * B), >= 1."""
        return max(1, math.ceil(self.batch_fraction * batch_size - 1e-9))

    def next_steps(self) -> int:
        """SGLD steps of the next `sample` call under the long/short schedule."""
        if self.short_steps is None or self.long_every == 1:
            return self.steps
        return self.steps if int(self.calls) % self.long_every == 0 else self.short_steps

    def sample(
        self, energy_fn: EnergyFn, batch_size: int, generator: torch.Generator | None = None
    ) -> Tensor:
        """Draw from the buffer, run SGLD, write the results back; returns detached samples."""
        steps = self.next_steps()
        start, indices = self.buffer.draw(batch_size, generator=generator)
        samples = sgld(
            energy_fn, start, steps=steps, step_size=self.step_size,
            noise_std=self.noise_std, clamp=self.clamp, generator=generator,
        )
        self.buffer.update(indices, samples)
        self.calls += 1
        self.last_steps = steps
        return samples

    def extra_repr(self) -> str:
        schedule = "" if self.short_steps is None or self.long_every == 1 else \
            f", short_steps={self.short_steps}, long_every={self.long_every}"
        return (
            f"steps={self.steps}, step_size={self.step_size}, "
            f"noise_std={self.noise_std}, clamp={self.clamp}, batch_fraction={self.batch_fraction}{schedule}"
        )
