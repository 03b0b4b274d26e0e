"""The one training engine behind `nesy-gedi train` and `nesy-gedi pretrain`.

A command opens a run (`open_run`: device, process group, run-directory checks, lock,
seed), builds its data and model, and hands the engine a `Job`: the network to train,
the objective state to checkpoint with it, and `loss(rows, generator, epoch) -> terms`.
`fit` then reads top to bottom:

    1. optimiser and learning-rate schedule, the two guards, resume from the checkpoint
    2. per epoch: a permutation and a step generator seeded by (seed, epoch[, rank]), the
       batches of this rank's shard, one optimiser step per batch; a non-finite loss or
       gradient on any rank skips the step on every rank
    3. evaluation (every train.eval_every epochs and after the last); the divergence guard
       judges the epoch: a good one goes to metrics.jsonl and TensorBoard and into an atomic
       checkpoint (and best.pt with train.keep_best); a diverged or collapsed one is rolled
       back to the last good epoch, which is retried at half the learning rate (past
       train.max_rollbacks, the run ends at the last good epoch instead)
    4. the job's final report, written to final.json, with the rollbacks and a warning when
       the final model is worse than the run's best epoch

Everything that changes during training (weights, Adam and schedule state, the replay
buffer, the recovery and rollback counts, the guards' references, torch's RNG state, the
weight average of train.ema_decay) is in the checkpoint, and everything else is drawn from
generators seeded by (seed, epoch), so a run killed at any point and resumed with `--resume`
ends with the metrics of an uninterrupted run. A rollback restores the last good epoch's
checkpoint from memory, so it is the state a resume would start from.

The progress bar is drawn only on a terminal; a log that is not one gets the one summary
line per epoch and no progress frames.

Under torchrun the step module (the whole loss, SGLD included) runs inside
DistributedDataParallel; every rank takes every world_size-th example of the shared
permutation, and only rank 0 writes files.
"""
from __future__ import annotations

import contextlib
import io
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm import tqdm

from . import distributed
from .config.schema import TaskConfig
from .errors import NesyError
from .guards import COLLAPSE_SIGNALS, DivergenceGuard, NonFiniteGuard, Signal, is_number, stability_advice
from .optim import build_optimizer, learning_rate_schedule
from .runs import (BEST, CHECKPOINT, CHECKPOINT_FORMAT, FINAL, RunLock, atomic_write, check_new_run, check_resume,
                   is_evaluation_epoch, load_checkpoint, load_weights, read_metrics, save_checkpoint,
                   select_device, start_run_dir, truncate_metrics, write_json)
from .sgld import NonFiniteError
from .tracking import Tracker

Terms = dict[str, Tensor]

ROLLBACK_LR_FACTOR = 0.5  # each retry after a rollback runs at this fraction of the learning rate(s)
FINAL_MARGIN = 0.05  # final.json warns when the final selection metric is this far below the best epoch's


@dataclass
class Run:
    """An open run directory: where the run writes, on which device, as which rank."""

    config: TaskConfig
    run_dir: Path
    kind: str
    resume: bool
    device: torch.device
    dist: distributed.DistState
    tracker: Tracker | None = None  # metrics.jsonl and TensorBoard, on rank 0

    @property
    def is_main(self) -> bool:
        return self.dist.is_main

    @property
    def has_checkpoint(self) -> bool:
        """Whether `fit` will continue from a checkpoint (a resumed run that finished an epoch)."""
        return self.resume and (self.run_dir / CHECKPOINT).exists()

    @property
    def shows_progress_bar(self) -> bool:
        """A progress bar only on a terminal: in a log file its frames are noise (carriage returns)."""
        return self.is_main and self.config.train.progress and sys.stderr.isatty()

    def log(self, message: str) -> None:
        if self.is_main and self.config.train.progress:
            tqdm.write(message, file=sys.stderr)


@dataclass
class Job:
    """What a command trains.

    `loss(rows, generator, epoch)` returns the terms of the batch of example indices `rows`;
    "total" is minimised, the other terms are logged as `train_<term>` (per-example means).
    `evaluate()` returns the held-out metrics of the current model (rank 0 only), `finish`
    the content of final.json from the metrics records; `recover(generator)` repairs the
    objective after a non-finite step (reset the SGLD buffer) — without it such a step stops
    the run. `constant_epochs` keep the full learning rate before a cosine schedule starts.
    `signals` are the validation figures the divergence guard watches (those the records have).
    """

    model: nn.Module
    loss: Callable[[Tensor, torch.Generator, int], Terms]
    num_examples: int
    evaluate: Callable[[], dict]
    finish: Callable[[list, Tracker], dict]
    state: nn.Module | None = None
    recover: Callable[[torch.Generator], None] | None = None
    phase: Callable[[int], str] = lambda epoch: "train"
    constant_epochs: int = 0
    epochs: int | None = None  # default train.epochs
    summary: Callable[[dict], str] | None = None
    selection_metric: str = "val_label_accuracy"  # what train.keep_best maximises
    unused_parameters: bool = False  # some epochs leave parameters out of the loss (DDP must know)
    learning_rates: dict = field(default_factory=dict)  # parameter -> its own learning rate (default train.lr)
    signals: tuple[Signal, ...] = COLLAPSE_SIGNALS


@contextlib.contextmanager
def open_run(config: TaskConfig, run_dir: Path, kind: str, resume: bool = False, device: str | None = None):
    """Check, lock and prepare the run directory (rank 0 writes, every rank checks), join the
    process group under torchrun, seed torch; yields the `Run`."""
    run_dir = Path(run_dir if run_dir is not None else Path("runs") / config.name)
    dist = distributed.setup(select_device(device or config.train.device))
    lock, tracker = RunLock(run_dir), None
    try:
        if config.train.num_threads:
            torch.set_num_threads(config.train.num_threads)
        check_new_run(run_dir, resume)
        if resume:
            check_resume(run_dir, config, kind)
        if dist.is_main:
            lock.acquire()
            start_run_dir(run_dir, config, kind, resume)
        distributed.barrier(dist)
        torch.manual_seed(config.train.seed)
        if dist.is_main:
            tracker = Tracker(run_dir, config.train.tensorboard, config.source)
        yield Run(config, run_dir, kind, resume, dist.device, dist, tracker)
    finally:
        if tracker is not None:
            tracker.close()
        lock.release()
        distributed.teardown(dist)


class _Step(nn.Module):
    """The whole loss of one batch as one module, so DDP sees every parameter it uses."""

    def __init__(self, job: Job):
        super().__init__()
        self.model = job.model
        self.state = job.state
        self.job_loss = job.loss

    def forward(self, rows: Tensor, generator: torch.Generator, epoch: int) -> Terms:
        return self.job_loss(rows, generator, epoch)


def epoch_generators(seed: int, epoch: int, device: torch.device, rank: int = 0) -> tuple[torch.Generator,
                                                                                         torch.Generator]:
    """(order generator on the CPU, shared by all ranks; step generator on `device`, one per rank)."""
    base = (int(seed) * 1_000_003 + int(epoch) * 7919) % (2**62)
    order = torch.Generator().manual_seed(base)
    step = torch.Generator(device=device).manual_seed(base + 1 + 104_729 * rank)
    return order, step


def steps_per_epoch(count: int, batch_size: int) -> int:
    """Optimiser steps in one pass over `count` examples: the last incomplete batch is dropped
    (unless it is the only one), because batch statistics (the prior, Barlow) need a real batch;
    every epoch's permutation differs, so no example is left out for good."""
    return max(1, count // max(1, min(batch_size, count)))


def weight_average(model: nn.Module, decay: float | None) -> AveragedModel | None:
    """An exponential moving average of `model`'s floating-point weights and buffers (None when
    `decay` is None); integer and boolean buffers (indices, masks, counters) are copied, not averaged."""
    if decay is None:
        return None
    lerp = get_ema_multi_avg_fn(decay)

    def update(averaged: list, current: list, updates: Tensor) -> None:  # one device and dtype per call
        if torch.is_floating_point(averaged[0]):
            lerp(averaged, current, updates)
        else:
            torch._foreach_copy_(averaged, current)

    return AveragedModel(model, multi_avg_fn=update, use_buffers=True)


@contextlib.contextmanager
def averaged_weights(model: nn.Module, average: AveragedModel | None):
    """`model` holds the averaged weights inside the block and its own again after it."""
    if average is None or int(average.n_averaged) == 0:
        yield
        return
    own = {key: value.detach().clone() for key, value in model.state_dict().items()}
    model.load_state_dict(average.module.state_dict())
    try:
        yield
    finally:
        model.load_state_dict(own)


def _gradients_finite(parameters: list[nn.Parameter]) -> bool:
    norms = [p.grad.detach().norm() for p in parameters if p.grad is not None]
    return bool(torch.isfinite(torch.stack(norms).sum())) if norms else True


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _restore_rng(state: dict) -> None:
    if not isinstance(state, dict) or not isinstance(state.get("torch"), Tensor):
        raise ValueError("the checkpoint's random-number state is missing or damaged")
    torch.set_rng_state(state["torch"].cpu())
    cuda = state.get("cuda")
    if isinstance(cuda, list) and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in cuda])


def fit(run: Run, job: Job) -> dict:
    """Train `job` in `run`; returns final.json's content (on rank 0; {} on the other ranks)."""
    config, dist, run_dir = run.config, run.dist, run.run_dir
    seed, batch_size = config.train.seed, config.train.batch_size
    total_epochs = job.epochs if job.epochs is not None else config.train.epochs
    max_grad_norm = config.train.max_grad_norm  # None: gradients are not clipped

    # ---------------------------------------------------------------- 1. optimiser, guards, resume
    step_module = distributed.wrap(_Step(job).to(run.device), dist, job.unused_parameters)
    parameters = [p for p in job.model.parameters() if p.requires_grad]
    optimizer = build_optimizer(parameters, config, job.learning_rates)
    shard_size = len(distributed.shard(torch.arange(job.num_examples), dist))
    steps = steps_per_epoch(shard_size, batch_size)
    scheduler = learning_rate_schedule(optimizer, config, steps, constant_epochs=job.constant_epochs)
    guard = NonFiniteGuard(run.run_dir, config.train.max_nonfinite_recoveries, job.recover)
    divergence = DivergenceGuard(job.signals, config.train.max_rollbacks)
    average = weight_average(job.model, config.train.ema_decay)
    tracker = run.tracker
    start_epoch, seconds, best = 0, [], None
    checkpoint = load_checkpoint(run_dir, map_location=run.device) if run.resume else None
    if checkpoint is not None:
        start_epoch, seconds, best = _restore(checkpoint, run, job, average, optimizer, scheduler, guard,
                                              divergence)
        run.log(f"resumed from {run_dir / CHECKPOINT} after epoch {start_epoch}")
    if run.resume and run.is_main:  # drop records of epochs after the checkpoint
        truncate_metrics(run_dir, start_epoch)
    guard.last_good_epoch = epoch = start_epoch
    # Every rank keeps its own last good state in memory, as a checkpoint: a rollback is a resume.
    last_good = _serialise(_checkpoint(run, job, average, optimizer, scheduler, guard, divergence, epoch, seconds,
                                       best))
    stopped_early = None

    # ---------------------------------------------------------------- 2. epochs
    while epoch < total_epochs and stopped_early is None:
        attempt = epoch + 1  # the epoch being trained; it becomes `epoch` once judged good
        order_generator, step_generator = epoch_generators(seed, attempt, run.device, dist.rank)
        order = distributed.shard(torch.randperm(job.num_examples, generator=order_generator), dist)
        batch = min(batch_size, len(order))
        batches = order[: steps * batch].split(batch)
        job.model.train()
        sums: dict[str, Tensor] = {}
        first_step: dict[str, float] | None = None  # the terms of the epoch's first step
        done = skipped = 0
        started = time.perf_counter()
        progress = tqdm(batches, desc=f"epoch {attempt}/{total_epochs} ({job.phase(attempt)})", leave=False,
                        disable=not run.shows_progress_bar, dynamic_ncols=True, file=sys.stderr)
        for step, rows in enumerate(progress, start=1):
            reason = None
            try:
                terms = step_module(rows, step_generator, attempt)
                if not bool(torch.isfinite(terms["total"].detach())):
                    reason = "non-finite loss (" + ", ".join(f"{k} {float(v.detach()):.4g}" for k, v in terms.items()) + ")"
            except NonFiniteError as error:  # SGLD diverged on this rank
                terms, reason = None, str(error)
            if not distributed.all_agree(reason is None, dist):
                skipped += 1
                guard.recover(tracker, step_generator, epoch=attempt, step=step,
                              reason=reason or "non-finite values on another rank")
                continue
            optimizer.zero_grad(set_to_none=True)
            terms["total"].backward()
            if not distributed.all_agree(_gradients_finite(parameters), dist):
                optimizer.zero_grad(set_to_none=True)
                skipped += 1
                guard.recover(tracker, step_generator, epoch=attempt, step=step,
                              reason="a parameter gradient is not finite")
                continue
            if max_grad_norm:
                torch.nn.utils.clip_grad_norm_(parameters, max_grad_norm)
            optimizer.step()
            scheduler.step()
            if average is not None:
                average.update_parameters(job.model)
            done += 1
            if first_step is None:
                first_step = {key: float(value.detach()) for key, value in terms.items()}
            for key, value in terms.items():
                sums[key] = sums.get(key, 0.0) + value.detach() * len(rows)
            if step % 10 == 0:
                progress.set_postfix(loss=f"{float(terms['total'].detach()):.4f}")
        progress.close()
        seconds.append(time.perf_counter() - started)
        totals = distributed.sum_across({k: float(v) for k, v in sums.items()}, dist)
        examples = distributed.sum_across({"examples": float(done * batch)}, dist)["examples"]

        # ------------------------------------------------------------ 3. evaluate, judge, log, checkpoint
        record, diverged = None, None
        if run.is_main:
            record = {"epoch": attempt, "phase": job.phase(attempt), "seconds": round(seconds[-1], 3),
                      "lr": optimizer.param_groups[0]["lr"], "steps": done, "skipped_steps": skipped,
                      **{f"train_{k}": v / max(examples, 1.0) for k, v in totals.items()},
                      "nonfinite_recoveries": guard.count, "rollbacks": divergence.rollbacks}
            if is_evaluation_epoch(attempt, total_epochs, config.train.eval_every):
                job.model.eval()
                with averaged_weights(job.model, average):
                    record.update(job.evaluate())
                job.model.train()
            diverged = divergence.verdict(record, first_step or {})
        if not distributed.all_agree(diverged is None, dist):
            seconds, best = _roll_back(run, job, average, optimizer, scheduler, guard, divergence, last_good,
                                       diverged_epoch=attempt, reason=diverged)
            if divergence.exhausted:
                stopped_early = "diverged"
            continue
        epoch = attempt
        if run.is_main:
            divergence.accept(record)
            tracker.log(record)
        state = _checkpoint(run, job, average, optimizer, scheduler, guard, divergence, epoch, seconds, best)
        if run.is_main:
            score = record.get(job.selection_metric)
            if config.train.keep_best and isinstance(score, (int, float)) and (best is None or score > best):
                best = state["best"] = float(score)
                save_checkpoint(state, run_dir, BEST)
        last_good = _serialise(state)
        if run.is_main:
            atomic_write(run_dir / CHECKPOINT, lambda stream: stream.write(last_good))
            run.log(job.summary(record) if job.summary else f"epoch {epoch}: loss "
                    f"{record.get('train_total', math.nan):.4f}  {seconds[-1]:.1f}s")
        guard.last_good_epoch = epoch
        distributed.barrier(dist)

    # ---------------------------------------------------------------- 4. final report
    final = {}
    if average is not None and int(average.n_averaged):  # the run's model is now the average, as checkpoint.pt's
        job.model.load_state_dict(average.module.state_dict())
    if run.is_main:
        job.model.eval()
        records = read_metrics(run_dir)
        final = job.finish(records, tracker)
        final.setdefault("seconds_per_epoch", sum(seconds) / len(seconds) if seconds else None)
        final.setdefault("seconds_total", sum(seconds))
        final["nonfinite_recoveries"] = guard.count
        final.update(rollbacks=divergence.rollbacks, diverged_epochs=list(divergence.diverged_epochs),
                     stopped_early=stopped_early)
        if config.train.keep_best:
            final.update(_best_summary(records, job.selection_metric))
        final["ended_below_best"] = below = _ended_below_best(records, job.selection_metric)
        if below is not None:
            run.log(f"warning: the run ends with {below['metric']} {below['final']:.4f} "
                    f"(epoch {below['final_epoch']}), below epoch {below['best_epoch']}'s {below['best']:.4f}"
                    + ("; best.pt holds that epoch" if config.train.keep_best
                       else "; train.keep_best keeps the best epoch in best.pt"))
        write_json(run_dir / FINAL, final)
    distributed.barrier(dist)
    return final


def _roll_back(run: Run, job: Job, average: AveragedModel | None, optimizer, scheduler, guard: NonFiniteGuard,
               divergence: DivergenceGuard, last_good: bytes, *, diverged_epoch: int,
               reason: str | None) -> tuple[list, float | None]:
    """Restore the last good epoch's state (weights, objective state, optimiser, schedule, RNG)
    after `diverged_epoch` diverged, keeping the counts of what happened since; the retry runs at
    `ROLLBACK_LR_FACTOR` times the learning rates, unless the rollbacks are exhausted. Returns the
    restored (seconds, best); logs the rollback to metrics.jsonl and the log (rank 0)."""
    divergence.rollbacks += 1
    divergence.diverged_epochs.append(diverged_epoch)
    counts_since = (divergence.rollbacks, list(divergence.diverged_epochs), guard.count)
    diverged_scale = divergence.lr_scale
    restored_epoch, seconds, best = _restore(_deserialise(last_good, run.device), run, job, average, optimizer,
                                             scheduler, guard, divergence)
    divergence.rollbacks, divergence.diverged_epochs, guard.count = counts_since
    stopping = divergence.exhausted
    if not stopping:  # the restored rates are the last good epoch's; the retry goes below the diverged ones
        restored_scale, divergence.lr_scale = divergence.lr_scale, diverged_scale * ROLLBACK_LR_FACTOR
        _scale_learning_rates(optimizer, scheduler, divergence.lr_scale / restored_scale)
    if run.is_main:
        lr = optimizer.param_groups[0]["lr"]
        run.tracker.log({"event": "rollback", "epoch": diverged_epoch, "reason": reason,
                         "restored_epoch": restored_epoch, "rollbacks": divergence.rollbacks,
                         "max_rollbacks": divergence.max_rollbacks, "lr": lr,
                         "action": "stop" if stopping else f"retry at learning rate x{ROLLBACK_LR_FACTOR:g}"})
        where = f"epoch {restored_epoch}" if restored_epoch else "the start"
        if stopping:
            run.log(f"epoch {diverged_epoch} diverged ({reason}): rolled back to {where}; stopping after "
                    f"{divergence.max_rollbacks} retries (train.max_rollbacks), the run ends at {where}; "
                    f"{stability_advice(job.recover is not None)}")
        else:
            run.log(f"epoch {diverged_epoch} diverged ({reason}): rolled back to {where}, learning rate "
                    f"x{ROLLBACK_LR_FACTOR:g} (now {lr:.3g})")
    return seconds, best


def _scale_learning_rates(optimizer, scheduler, factor: float) -> None:
    """Multiply every parameter group's learning rate by `factor`, now and for the rest of the schedule."""
    scheduler.base_lrs = [lr * factor for lr in scheduler.base_lrs]
    for group in optimizer.param_groups:
        group["lr"] *= factor
        if "initial_lr" in group:
            group["initial_lr"] *= factor


def _evaluated(records: list, metric: str) -> list:
    """The epoch records (not events) that hold `metric`."""
    return [r for r in records if "event" not in r and is_number(r.get(metric))]


def _best_record(scored: list, metric: str) -> dict:
    return max(scored, key=lambda r: r[metric])  # the first of equals, as best.pt was written


def _best_summary(records: list, metric: str) -> dict:
    """The evaluation epoch with the best `metric` and its held-out figures (best.pt holds its weights)."""
    scored = _evaluated(records, metric)
    if not scored:
        return {"best_epoch": None}
    best = _best_record(scored, metric)
    return {"best_epoch": best["epoch"],
            **{f"best_{k}": v for k, v in best.items() if k.startswith(("val_", "test_"))}}


def _ended_below_best(records: list, metric: str) -> dict | None:
    """`metric` at its best and at the last evaluation, when the last is more than
    `FINAL_MARGIN` below the best (a run must not end quietly worse than it was); else None."""
    scored = _evaluated(records, metric)
    if not scored:
        return None
    best, last = _best_record(scored, metric), scored[-1]
    if best[metric] - last[metric] <= FINAL_MARGIN:
        return None
    return {"metric": metric, "best_epoch": best["epoch"], "best": best[metric], "final_epoch": last["epoch"],
            "final": last[metric], "margin": FINAL_MARGIN}


def _serialise(state: dict) -> bytes:
    """A checkpoint as the bytes checkpoint.pt holds."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def _deserialise(blob: bytes, device: torch.device) -> dict:
    return torch.load(io.BytesIO(blob), map_location=device, weights_only=True)


def _checkpoint(run: Run, job: Job, average: AveragedModel | None, optimizer, scheduler, guard: NonFiniteGuard,
                divergence: DivergenceGuard, epoch: int, seconds: list, best: float | None) -> dict:
    # "weights" is the model that evaluation sees (and `evaluate`, `model.init` load): the average
    # when train.ema_decay is set, the trained weights beside it only to resume from
    averaging = {} if average is None else {"training_weights": job.model.state_dict(),
                                            "average_updates": int(average.n_averaged)}
    return {"kind": run.kind, "format": CHECKPOINT_FORMAT, "epoch": epoch,
            "weights": (job.model if average is None else average.module).state_dict(), **averaging,
            "state": job.state.state_dict() if job.state is not None else None,
            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "rng": _rng_state(), "seconds": list(seconds), "nonfinite_recoveries": guard.count,
            "divergence": divergence.state_dict(), "best": best, "config": run.config.to_dict()}


def _restore(checkpoint: dict, run: Run, job: Job, average: AveragedModel | None, optimizer, scheduler,
             guard: NonFiniteGuard, divergence: DivergenceGuard) -> tuple:
    path = run.run_dir / CHECKPOINT
    if checkpoint.get("kind") != run.kind or checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise NesyError(f"not a {run.kind} checkpoint of this version (kind {checkpoint.get('kind')!r}, format "
                        f"{checkpoint.get('format')!r}); start a new run with another --out", str(path))
    if average is None:
        load_weights(job.model, checkpoint.get("weights"), path)
    else:
        load_weights(job.model, checkpoint.get("training_weights"), path)
        load_weights(average.module, checkpoint.get("weights"), path)
    try:
        if job.state is not None:
            job.state.load_state_dict(checkpoint["state"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        for parameter, state in optimizer.state.items():
            for name, value in state.items():
                if isinstance(value, Tensor) and value.dim() > 0 and value.shape != parameter.shape:
                    raise ValueError(f"optimizer state {name} has shape {tuple(value.shape)} for a parameter "
                                     f"of shape {tuple(parameter.shape)}")
        scheduler.load_state_dict(checkpoint["scheduler"])
        epoch, seconds = int(checkpoint["epoch"]), [float(s) for s in checkpoint["seconds"]]
        guard.count = int(checkpoint.get("nonfinite_recoveries", 0))
        if average is not None:
            average.n_averaged.fill_(int(checkpoint["average_updates"]))
        divergence.load_state_dict(checkpoint.get("divergence"))
        _restore_rng(checkpoint.get("rng"))
    except (RuntimeError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise NesyError(f"cannot resume: the checkpoint's training state does not match this run "
                        f"({' '.join(str(error).split())[:200]})", str(path)) from None
    best = checkpoint.get("best")
    return epoch, seconds, float(best) if isinstance(best, (int, float)) else None
