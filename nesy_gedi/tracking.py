"""Where a run's numbers go while it trains: metrics.jsonl always, TensorBoard event files
with `train.tensorboard: true` (the optional `tensorboard` extra)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import ConfigError
from .runs import append_metrics

TENSORBOARD_HINT = "train.tensorboard needs the tensorboard package: pip install 'nesy-gedi[tensorboard]'"


def tensorboard_writer(run_dir: Path, source: str = ""):
    """A SummaryWriter logging into `run_dir`/tensorboard; a one-line hint when it is not installed."""
    try:
        from torch.utils.tensorboard import SummaryWriter  # optional extra: imported only when asked for
    except ImportError:
        raise ConfigError(TENSORBOARD_HINT, source or None) from None
    return SummaryWriter(log_dir=str(Path(run_dir) / "tensorboard"))


class Tracker:
    """Appends records to metrics.jsonl and mirrors every number to TensorBoard when enabled."""

    def __init__(self, run_dir: Path, tensorboard: bool = False, source: str = ""):
        self.run_dir = Path(run_dir)
        self.writer = tensorboard_writer(run_dir, source) if tensorboard else None

    def log(self, record: dict) -> None:
        append_metrics(self.run_dir, record)
        if self.writer is None:
            return
        step = int(record.get("epoch", 0))
        prefix = "events/" if "event" in record else ""
        for key, value in record.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and key != "epoch":
                self.writer.add_scalar(prefix + key, value, step)
        self.writer.flush()

    def image(self, tag: str, image: np.ndarray, step: int = 0) -> None:
        """An image [H, W, C] uint8 or float in [0, 1]."""
        if self.writer is not None:
            self.writer.add_image(tag, image, step, dataformats="HWC")
            self.writer.flush()

    def histogram(self, tag: str, values, step: int = 0) -> None:
        if self.writer is not None:
            self.writer.add_histogram(tag, np.asarray(values), step)
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
