"""The training engine's two guards: a non-finite step is skipped and the job's state reset
(`NonFiniteGuard`), and a diverged or collapsed epoch is recognised for rollback
(`DivergenceGuard`, against the validation `Signal`s it watches). Both keep what they
compare against in the checkpoint, so a resumed run judges as an uninterrupted one."""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from .errors import NesyError
from .runs import CHECKPOINT
from .tracking import Tracker

# A training term diverged when its epoch mean is this many times larger in magnitude than at
# the last good epoch (in a run's first epoch, than at its first step) and larger than the
# floor: the floor keeps terms that hover around zero, such as contrastive divergence, from
# tripping the ratio.
TERM_GROWTH = 100.0
TERM_FLOOR = 1e3


@dataclass(frozen=True)
class Signal:
    """A validation figure the divergence guard watches. An epoch collapsed when the figure is
    worse than at the best good epoch so far by more than `margin` (times |best| when
    `relative`) and, with a `limit`, beyond that limit too; a non-finite figure always counts."""

    key: str
    margin: float
    higher_is_better: bool = True
    relative: bool = False
    limit: float | None = None

    def better(self, value: float, best: float) -> bool:
        return value > best if self.higher_is_better else value < best

    def collapsed(self, value: float, best: float) -> bool:
        if not math.isfinite(value):
            return True
        worse_by = best - value if self.higher_is_better else value - best
        allowed = self.margin * abs(best) if self.relative else self.margin
        beyond_limit = self.limit is None or (value < self.limit if self.higher_is_better else value > self.limit)
        return worse_by > allowed and beyond_limit


# What the divergence guard watches when an evaluation record has it. Concept accuracy is left
# out on purpose: concept labels are what a neuro-symbolic task does not observe, so steering
# training by them would leak supervision into every mode (and into the shortcut counts).
COLLAPSE_SIGNALS = (
    Signal("val_label_accuracy", margin=0.25),
    Signal("val_label_loss", margin=1.0, higher_is_better=False),  # nats: the label likelihood fell e-fold
    Signal("val_cluster_accuracy", margin=0.25),
    # cluster_entropy is normalised by log C: 1 is balanced, 0 is one cluster
    Signal("val_cluster_entropy", margin=0.3, limit=0.5),
    Signal("val_largest_cluster", margin=0.3, higher_is_better=False, limit=0.9),
    # E(noise) - E(data): inverted by more than its best size, and by more than one unit
    Signal("val_energy_gap", margin=2.0, relative=True, limit=-1.0),
)


class NonFiniteGuard:
    """Counts skipped non-finite steps; stops the run past `train.max_nonfinite_recoveries`
    (or at once when the job cannot recover), naming the last good checkpoint."""

    def __init__(self, run_dir: Path, max_recoveries: int, recover: Callable | None, count: int = 0):
        self.run_dir = run_dir
        self.recover_fn = recover
        self.max_recoveries = max_recoveries if recover is not None else 0
        self.count = count
        self.last_good_epoch = 0

    def recover(self, tracker: Tracker | None, generator: torch.Generator, *, epoch: int, step: int,
                reason: str) -> None:
        self.count += 1
        stopping = self.count > self.max_recoveries
        if tracker is not None:
            tracker.log({"event": "nonfinite", "epoch": epoch, "step": step, "reason": reason,
                         "recoveries": self.count, "max_recoveries": self.max_recoveries,
                         "action": "stop" if stopping else "reset buffer, skip step"})
        if stopping:
            where = (f"; {self.run_dir / CHECKPOINT} holds the last good epoch ({self.last_good_epoch})"
                     if self.last_good_epoch else "")
            after = (f" after {self.max_recoveries} recoveries (train.max_nonfinite_recoveries)"
                     if self.max_recoveries else "")
            raise NesyError(f"training stopped: non-finite values at epoch {epoch}, step {step} ({reason})"
                            f"{after}{where}; {stability_advice(self.recover_fn is not None)}")
        self.recover_fn(generator)


def stability_advice(samples_energies: bool) -> str:
    """What to try when training is unstable; a job with an SGLD sampler has more knobs."""
    if samples_energies:
        return "try a smaller gedi.sgld.step_size, a lower train.lr or gedi.energy_magnitude > 0"
    return "try a lower train.lr"


class DivergenceGuard:
    """Judges every epoch: it diverged when a training term is non-finite or exploded
    (`TERM_GROWTH`, `TERM_FLOOR`), it collapsed when a watched validation signal fell from
    its best (`Signal`). Keeps what it compares against (the last good epoch's training terms,
    each signal's best over the good epochs) and the rollbacks; all of it is checkpointed."""

    def __init__(self, signals: tuple[Signal, ...], max_rollbacks: int):
        self.signals = signals
        self.max_rollbacks = max_rollbacks
        self.terms: dict[str, float] = {}  # train_<term> of the last good epoch
        self.best: dict[str, float] = {}  # signal key -> its best value over the good epochs
        self.rollbacks = 0
        self.diverged_epochs: list[int] = []
        self.lr_scale = 1.0  # the learning rates' fraction of the configured ones, after the retries

    @property
    def exhausted(self) -> bool:
        """More divergences than train.max_rollbacks allows retries for: the run ends."""
        return self.rollbacks > self.max_rollbacks

    def verdict(self, record: dict, first_step: dict[str, float]) -> str | None:
        """Why the epoch of `record` diverged or collapsed, or None when it is good. A term the
        good epochs never had is compared with its value at this epoch's first step."""
        reasons = []
        for key, value in record.items():
            if not key.startswith("train_") or not is_number(value):
                continue
            reference = self.terms.get(key, first_step.get(key[len("train_"):]))
            if not math.isfinite(value):
                reasons.append(f"{key} {value}")
            elif reference is not None and abs(value) > TERM_FLOOR and \
                    abs(value) > TERM_GROWTH * max(abs(reference), 1.0):
                reasons.append(f"{key} {value:.3g}, was {reference:.3g}")
        for signal in self.signals:
            value, best = record.get(signal.key), self.best.get(signal.key)
            if is_number(value) and (not math.isfinite(value) or
                                     (best is not None and signal.collapsed(value, best))):
                reasons.append(f"{signal.key} {value:.3g}" + (f", best {best:.3g}" if best is not None else ""))
        return "; ".join(reasons[:3]) if reasons else None

    def accept(self, record: dict) -> None:
        """`record`'s epoch is good: its terms become the reference, its signals may be the best."""
        self.terms.update({k: float(v) for k, v in record.items() if k.startswith("train_") and is_number(v)})
        for signal in self.signals:
            value = record.get(signal.key)
            if is_number(value) and (signal.key not in self.best or signal.better(value, self.best[signal.key])):
                self.best[signal.key] = float(value)

    def state_dict(self) -> dict:
        return {"terms": dict(self.terms), "best": dict(self.best), "rollbacks": self.rollbacks,
                "diverged_epochs": list(self.diverged_epochs), "lr_scale": self.lr_scale}

    def load_state_dict(self, state: dict | None) -> None:
        state = state or {}  # a checkpoint without the guard's state: nothing to compare against yet
        self.terms = {str(k): float(v) for k, v in state.get("terms", {}).items()}
        self.best = {str(k): float(v) for k, v in state.get("best", {}).items()}
        self.rollbacks = int(state.get("rollbacks", 0))
        self.diverged_epochs = [int(e) for e in state.get("diverged_epochs", [])]
        self.lr_scale = float(state.get("lr_scale", 1.0))


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
