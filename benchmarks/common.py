"""What every benchmark shares: where results go and the provenance each result records."""
from __future__ import annotations

import datetime
import json
import os
import platform
import shlex
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"  # the results the README cites
SWEEPS = RESULTS / "sweeps"  # tuning runs and superseded results, one line each in sweeps/INDEX.md


def machine_info(device: str | None = None) -> dict:
    """Command, machine and date for a benchmark record."""
    import torch

    info = {
        "command": " ".join(shlex.quote(a) for a in [Path(sys.executable).name, *sys.argv]),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "python_executable": sys.executable,
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "device": str(device) if device is not None else "cpu",
    }
    try:
        info["load_average_1m"] = round(os.getloadavg()[0], 2)
    except OSError:
        pass
    if device is not None and str(device).startswith("cuda") and torch.cuda.is_available():
        info["device_name"] = torch.cuda.get_device_name(torch.device(device))
        info["cuda"] = torch.version.cuda
    return info


def describe_hardware(machine: dict) -> str:
    """A result's machine in generic words: "2-core CPU, 1 torch thread" or the GPU's name."""
    device = str(machine.get("device") or "cpu")
    if device.startswith("cuda"):
        return machine.get("device_name") or "CUDA GPU"
    threads, cores = machine.get("torch_threads"), machine.get("cpu_count")
    where = f"{cores}-core CPU" if cores else "CPU"
    return f"{where}, {threads} torch thread{'s' if threads != 1 else ''}" if threads else where


def write_result(path: Path, data: dict) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path


def merge_results(paths: list, settings, run_key) -> tuple[list, list]:
    """(parts, runs) of result files written by seeds run as separate jobs: `parts` as loaded,
    `runs` every part's "runs" sorted by `run_key`. Exits with a message naming the file if
    `settings(part)` differs from the first file's, or if two runs share a `run_key`."""
    parts = [json.loads(Path(path).read_text()) for path in paths]
    for path, part in zip(paths[1:], parts[1:]):
        if settings(part) != settings(parts[0]):
            raise SystemExit(f"{path}: other task or settings than {paths[0]}; not merged")
    runs = sorted((run for part in parts for run in part["runs"]), key=run_key)
    keys = [run_key(run) for run in runs]
    if len(set(keys)) != len(keys):
        raise SystemExit(f"the files repeat a run ({keys}); not merged")
    return parts, runs


def merged_machine(parts: list, paths: list) -> dict:
    """The provenance of a result merged from `parts` (seeds run as separate jobs): the merge
    command, the highest load average, and each part's own command, date and load."""
    first = parts[0]["machine"]
    return dict(first, command=machine_info(first.get("device"))["command"],
                load_average_1m=max(part["machine"].get("load_average_1m") or 0 for part in parts),
                merged_from=[dict(part["machine"], file=str(path)) for path, part in zip(paths, parts)])


def resolved_config(data: dict, source: str = "<stored config>") -> dict:
    """A stored config dict as the toolkit resolves it today: read through the config loader,
    so keys added since it was written count at their defaults. Raises NesyError if invalid."""
    from nesy_gedi.config import config_from_dict

    return config_from_dict(data, source).to_dict()


def same_run_config(run_dir: Path, config) -> bool:
    """Whether the run stored in `run_dir` resolves to the configuration `config`, compared on
    the keys its training mode reads: a key the mode ignores (a gedi setting of an `sl` run,
    whose default the toolkit may change) does not make a finished run stale. With a
    pretraining, the stored `model.init` is the one `train` filled in."""
    import yaml

    from nesy_gedi.config import keys_read
    from nesy_gedi.errors import NesyError

    path = Path(run_dir) / "config.yaml"
    if not path.exists():
        return False
    try:
        stored = resolved_config(yaml.safe_load(path.read_text()), str(path))
    except NesyError:
        return False
    wanted = yaml.safe_load(yaml.safe_dump(config.to_dict()))
    if config.model.pretrain:
        stored["model"]["init"] = wanted["model"]["init"]
    return keys_read(stored, pretrain=False) == keys_read(wanted, pretrain=False)


def spread(values: list) -> dict | None:
    """{mean, std, n, values} of the numbers in `values` (None entries skipped), or None if
    there are none. std is the sample standard deviation (n - 1; 0 for a single value): every
    table in the README reports "mean ± std" with this one definition."""
    import statistics

    numbers = [float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if not numbers:
        return None
    std = statistics.stdev(numbers) if len(numbers) > 1 else 0.0
    return {"mean": statistics.fmean(numbers), "std": std, "n": len(numbers), "values": numbers}


def mean_std(group: list, keys) -> dict:
    """{key: spread} over the runs in `group` that report a number for `key`."""
    stats = {}
    for key in keys:
        summary = spread([r.get(key) for r in group])
        if summary is not None:
            stats[key] = summary
    return stats


def render_table(header: list, rows: list) -> str:
    """A plain-text table with left-aligned columns."""
    widths = [max(len(str(c)) for c in column) for column in zip(header, *rows)]

    def render(cells):
        return "  ".join(str(c).ljust(w) for c, w in zip(cells, widths))

    return "\n".join([render(header), render(["-" * w for w in widths])] + [render(c) for c in rows])
