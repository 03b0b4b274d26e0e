"""Run directories: resolved config, metrics.jsonl, atomic checkpoints and final.json.

A run directory holds:
    config.yaml        the resolved task configuration
    metrics.jsonl      one JSON object per evaluation (epoch)
    checkpoint.pt      the latest checkpoint (written atomically: never half a file)
    final.json         the final metrics, written when the run ends
"""
from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path

import torch

from .errors import NesyError

CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.jsonl"
FINAL = "final.json"
CONFIG = "config.yaml"


def _atomic_write(path: Path, write) -> None:
    """Write to a temporary file in the same folder, flush it to disk, then rename over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            write(stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise


def save_checkpoint(state: dict, run_dir: Path) -> None:
    _atomic_write(Path(run_dir) / CHECKPOINT, lambda stream: torch.save(state, stream))


def load_checkpoint(run_dir: Path, map_location="cpu") -> dict | None:
    path = Path(run_dir) / CHECKPOINT
    if not path.exists():
        return None
    try:
        return torch.load(path, map_location=map_location, weights_only=False)
    except Exception as error:  # noqa: BLE001 - any unreadable checkpoint gets the same clear message
        raise NesyError(f"checkpoint is unreadable ({type(error).__name__}); delete it to start over",
                        str(path)) from None


def _clean(value):
    """JSON has no NaN/inf: write them as null so every line stays valid JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def write_json(path: Path, data: dict) -> None:
    text = json.dumps(_clean(data), indent=2, sort_keys=False)
    _atomic_write(Path(path), lambda stream: stream.write(text.encode() + b"\n"))


def is_evaluation_epoch(epoch: int, total_epochs: int, every: int) -> bool:
    """Whether 1-based `epoch` evaluates the test splits (`train.eval_every`): every
    `every`-th epoch, and always the last one, so a run always ends with its figures."""
    return epoch % every == 0 or epoch == total_epochs


def append_metrics(run_dir: Path, record: dict) -> None:
    with open(Path(run_dir) / METRICS, "a", encoding="utf-8") as stream:
        stream.write(json.dumps(_clean(record)) + "\n")


def read_metrics(run_dir: Path) -> list:
    path = Path(run_dir) / METRICS
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def truncate_metrics(run_dir: Path, epochs_done: int) -> None:
    """On resume, drop records of epochs after the checkpoint (a run killed after logging them)."""
    records = [r for r in read_metrics(run_dir) if r.get("epoch", 0) <= epochs_done]
    _atomic_write(Path(run_dir) / METRICS,
                  lambda stream: stream.write("".join(json.dumps(r) + "\n" for r in records).encode()))


def prepare_run_dir(out: str | Path | None, task_name: str, resume: bool) -> Path:
    """Check and create the run directory; under torchrun only rank 0 touches it."""
    from .distributed import is_main_process

    run_dir = Path(out) if out is not None else Path("runs") / task_name
    if not is_main_process():
        return run_dir
    if run_dir.exists() and not resume and (run_dir / CHECKPOINT).exists():
        raise NesyError("run directory already holds a checkpoint; pass --resume to continue it "
                        "or choose another --out", str(run_dir))
    run_dir.mkdir(parents=True, exist_ok=True)
    if not resume and (run_dir / METRICS).exists():
        (run_dir / METRICS).unlink(missing_ok=True)
    return run_dir


def select_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise NesyError(f"unknown device {name!r} (use auto, cpu, cuda or cuda:N)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise NesyError(f"device {name!r} requested but CUDA is not available")
    return device
