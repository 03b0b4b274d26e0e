"""Run directories: what a run writes, and reading it back without trusting it.

A run directory holds:
    config.yaml        the resolved task configuration (written once the run is known to be valid)
    run.json           the manifest: kind, the logic file's copy and its sha256
    knowledge.logic    a copy of the logic file, so the run works after it is moved
    metrics.jsonl      one JSON object per epoch (and per recovery event)
    checkpoint.pt      the latest checkpoint (written atomically: never half a file)
    best.pt            with train.keep_best: the checkpoint of the best validation label accuracy
    final.json         the final metrics, written when the run ends
    .lock              held (flock) while a process writes the run

Checkpoints hold only tensors, numbers, strings, lists and dicts, and are read with
`torch.load(weights_only=True)`: loading one never executes code stored in it.
"""
from __future__ import annotations

import fcntl
import json
import math
import os
import tempfile
from pathlib import Path

import torch
import yaml

from .config.load import config_from_dict, upgrade_run_config
from .config.schema import VALUE_DICTS, TaskConfig, keys_read
from .data.files import file_sha256
from .errors import NesyError

# Checkpoint kinds written by the engine, and the one written by pretraining before it.
TRAIN_KIND, PRETRAIN_KIND, LEGACY_PRETRAIN_KIND = "train", "pretrain", "gedi-pretrain"

CHECKPOINT = "checkpoint.pt"
BEST = "best.pt"
METRICS = "metrics.jsonl"
FINAL = "final.json"
CONFIG = "config.yaml"
MANIFEST = "run.json"
LOGIC_COPY = "knowledge.logic"
LOCK = ".lock"
CHECKPOINT_FORMAT = 2


# ----------------------------------------------------------------------------- writing
def atomic_write(path: Path, write) -> None:
    """Write to a temporary file in the same folder, flush it to disk, then rename over `path`."""
    path = Path(path)
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
    atomic_write(Path(path), lambda stream: stream.write(text.encode() + b"\n"))


def append_metrics(run_dir: Path, record: dict) -> None:
    with open(Path(run_dir) / METRICS, "a", encoding="utf-8") as stream:
        stream.write(json.dumps(_clean(record)) + "\n")


def read_metrics(run_dir: Path) -> list:
    """Every complete record of metrics.jsonl; a half-written last line (a run killed while
    writing it) is skipped, a damaged line elsewhere is an error naming the file and line."""
    path = Path(run_dir) / METRICS
    if not path.exists():
        return []
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as error:
        raise NesyError(f"cannot read the metrics ({error.strerror or type(error).__name__})", str(path)) from None
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            if number == len(lines):
                break
            raise NesyError("damaged line (not JSON)", str(path), number) from None
        if not isinstance(record, dict):
            raise NesyError("damaged line (not a JSON object)", str(path), number)
        records.append(record)
    return records


def truncate_metrics(run_dir: Path, epochs_done: int) -> None:
    """On resume, drop records of epochs after the checkpoint (a run killed after logging them)."""
    records = [r for r in read_metrics(run_dir) if r.get("epoch", 0) <= epochs_done]
    atomic_write(Path(run_dir) / METRICS,
                 lambda stream: stream.write("".join(json.dumps(r) + "\n" for r in records).encode()))


def is_evaluation_epoch(epoch: int, total_epochs: int, every: int) -> bool:
    """Whether 1-based `epoch` evaluates the held-out splits (`train.eval_every`): every
    `every`-th epoch, and always the last one, so a run always ends with its figures."""
    return epoch % every == 0 or epoch == total_epochs


# ----------------------------------------------------------------------------- the directory
class RunLocked(NesyError):
    """Another process holds the run directory's lock."""


class RunLock:
    """An exclusive lock on a run directory for as long as a process writes it."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / LOCK
        self.handle = None

    def acquire(self) -> "RunLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+", encoding="utf-8")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            owner = handle.read().strip() or "another process"
            handle.close()
            raise RunLocked(f"the run directory is being written by {owner}; wait for it to finish or "
                            "choose another --out", str(self.path.parent)) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"process {os.getpid()}")
        handle.flush()
        self.handle = handle
        return self

    def wait(self) -> None:
        """Block while another process writes the run (returns at once if none does)."""
        if not self.path.exists():
            return
        with open(self.path, "a+", encoding="utf-8") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            fcntl.flock(handle, fcntl.LOCK_UN)

    def release(self) -> None:
        if self.handle is not None:
            fcntl.flock(self.handle, fcntl.LOCK_UN)
            self.handle.close()
            self.handle = None


def check_new_run(run_dir: Path, resume: bool) -> None:
    """A fresh run refuses a folder that already holds one; a resumed run needs its files."""
    run_dir = Path(run_dir)
    if resume:
        if not (run_dir / CONFIG).exists():
            raise NesyError("nothing to resume: not a run directory (no config.yaml)", str(run_dir))
        return
    if (run_dir / CHECKPOINT).exists():
        raise NesyError("run directory already holds a checkpoint; pass --resume to continue it "
                        "or choose another --out", str(run_dir))


def start_run_dir(run_dir: Path, config: TaskConfig, kind: str, resume: bool) -> None:
    """Write config.yaml, the manifest and the logic copy of a fresh run (after every check passed);
    a resumed run keeps its own (they already describe what ran)."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if resume:
        return
    (run_dir / METRICS).unlink(missing_ok=True)
    (run_dir / BEST).unlink(missing_ok=True)
    (run_dir / FINAL).unlink(missing_ok=True)
    manifest = {"kind": kind, "format": CHECKPOINT_FORMAT, "task": config.name, "logic": None}
    if config.logic is not None:
        source = Path(config.logic.file)
        atomic_write(run_dir / LOGIC_COPY, lambda stream: stream.write(source.read_bytes()))
        manifest["logic"] = {"copy": LOGIC_COPY, "source": str(source.resolve()),
                             "sha256": file_sha256(run_dir / LOGIC_COPY)}
    write_json(run_dir / MANIFEST, manifest)
    text = yaml.safe_dump(recorded_config(config), sort_keys=False)
    atomic_write(run_dir / CONFIG, lambda stream: stream.write(text.encode()))


def recorded_config(config: TaskConfig) -> dict:
    """`config` as config.yaml records it (and as --resume compares it): data.path absolute,
    so the run reads the same images from anywhere."""
    recorded = config.to_dict()
    if recorded["data"].get("path"):
        recorded["data"]["path"] = str(Path(recorded["data"]["path"]).expanduser().absolute())
    return recorded


def read_manifest(run_dir: Path) -> dict:
    path = Path(run_dir) / MANIFEST
    if not path.exists():
        return {}
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        raise NesyError("damaged run manifest (not JSON)", str(path)) from None
    if not isinstance(manifest, dict):
        raise NesyError("damaged run manifest (not a JSON object)", str(path))
    return manifest


def load_run_config(run_dir: Path) -> TaskConfig:
    """The config a run ran with, its logic file read from the run's own copy (checked
    against the recorded hash), so the run directory works from anywhere."""
    run_dir = Path(run_dir)
    path = run_dir / CONFIG
    if not run_dir.is_dir() or not path.exists():
        raise NesyError(f"not a run directory (no {CONFIG})", str(run_dir))
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        raise NesyError("damaged config (not YAML)", str(path)) from None
    if not isinstance(data, dict) or not data:
        raise NesyError("damaged config (empty, or not a mapping)", str(path))
    manifest = read_manifest(run_dir)
    logic = manifest.get("logic")
    if isinstance(logic, dict) and isinstance(data.get("logic"), dict):
        name = logic.get("copy", LOGIC_COPY)
        copy = run_dir / str(name)
        # The copy is a file of the run directory itself: never a folder, nor a path out of it.
        if not isinstance(name, str) or Path(name).name != name or name in (".", "..") or not copy.is_file():
            raise NesyError(f"the run's copy of its logic file is missing ({name!r})", str(run_dir))
        if file_sha256(copy) != logic.get("sha256"):
            raise NesyError(f"{copy.name} was changed after the run started (its sha256 differs from "
                            f"{MANIFEST}'s)", str(copy))
        data["logic"]["file"] = str(copy)
    pretrain = manifest.get("kind", TRAIN_KIND) != TRAIN_KIND  # a pretrain run reads its whole gedi section
    return config_from_dict(upgrade_run_config(data), str(path), pretrain=pretrain)


# Keys that may differ between a run and its resumption: where and how it runs, not what.
RESUMABLE_DIFFERENCES = ("data.root", "model.init", "logic.file", "train.device", "train.num_threads",
                         "train.progress", "train.eval_batch_size", "train.tensorboard",
                         "model.pretrain", "model.pretrain_overrides")


def _flatten(data: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in data.items():
        if isinstance(value, dict) and value and key not in VALUE_DICTS:
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def config_differences(recorded: dict, requested: dict) -> list[str]:
    """`key: recorded -> requested` for every key whose value would change what the run computes.
    A key only one side holds is one that side's method never reads: the method's own change says it."""
    old, new = _flatten(recorded), _flatten(requested)
    return [f"{key}: {old.get(key)!r} -> {new.get(key)!r}" for key in sorted(set(old) & set(new))
            if key not in RESUMABLE_DIFFERENCES and old.get(key) != new.get(key)]


def check_resume(run_dir: Path, config: TaskConfig, kind: str) -> None:
    """Refuse to resume with a config, logic file or command other than the run's own, before
    anything is written."""
    run_dir = Path(run_dir)
    recorded = load_run_config(run_dir)
    manifest = read_manifest(run_dir)
    if manifest.get("kind", kind) != kind:
        raise NesyError(f"cannot resume: this is a {manifest.get('kind')} run, not a {kind} run", str(run_dir))
    pretrain = kind != TRAIN_KIND  # compared on the keys the run reads: an ignored key's default may change
    differences = config_differences(keys_read(recorded.to_dict(), pretrain=pretrain),
                                     keys_read(recorded_config(config), pretrain=pretrain))
    if differences:
        raise NesyError("cannot resume with a different config (" + "; ".join(differences[:6]) + "); resume "
                        "with the run's own settings, or start a new run with another --out", str(run_dir))
    logic = manifest.get("logic")
    if config.logic is not None and isinstance(logic, dict):
        try:
            current = file_sha256(Path(config.logic.file))
        except OSError as error:
            raise NesyError(f"cannot resume: cannot read the logic file ({error.strerror or type(error).__name__})",
                            config.logic.file) from None
        if current != logic.get("sha256"):
            raise NesyError(f"cannot resume: the logic file changed since the run started (sha256 "
                            f"{logic.get('sha256', '?')[:12]} then, {current[:12]} now)", config.logic.file)


# ----------------------------------------------------------------------------- checkpoints
def save_checkpoint(state: dict, run_dir: Path, name: str = CHECKPOINT) -> None:
    atomic_write(Path(run_dir) / name, lambda stream: torch.save(state, stream))


def load_checkpoint(run_dir: Path, map_location="cpu", name: str = CHECKPOINT) -> dict | None:
    """The checkpoint's plain contents (tensors, numbers, strings, lists, dicts), or None if
    there is none. Never executes code: anything else in the file is refused."""
    path = Path(run_dir) / name
    if not path.exists():
        return None
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # noqa: BLE001 - any unreadable or unsafe checkpoint gets one clear line
        reason = "it holds objects other than tensors and plain data" if "weights_only" in str(error) \
            else type(error).__name__
        raise NesyError(f"checkpoint is unreadable or unsafe ({reason}); it was not loaded", str(path)) from None
    if not isinstance(checkpoint, dict):
        raise NesyError("checkpoint is not a mapping; it was not loaded", str(path))
    return checkpoint


def load_weights(module: torch.nn.Module, state, path: Path, what: str = "the model") -> None:
    """Load `state` into `module` after checking names, shapes and finiteness, with one clear
    line naming `path` on any mismatch."""
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise NesyError(f"checkpoint holds no weights for {what}", str(path))
    own = module.state_dict()
    state = dict(state)
    for name, part in module.named_modules():  # entries added or renamed after older checkpoints
        prefix = f"{name}." if name else ""
        if hasattr(part, "upgrade_state"):
            state = part.upgrade_state(state, prefix)
        for key, default in getattr(part, "state_added_later", {}).items():
            state.setdefault(prefix + key, default.clone())
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
        raise NesyError(f"architecture mismatch: the checkpoint's weights do not fit {what} "
                        f"({type(module).__name__}: {'; '.join(details)})", str(path))
    broken = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if broken:
        raise NesyError(f"checkpoint holds non-finite weights ({', '.join(broken[:3])})", str(path))
    module.load_state_dict(state)


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
