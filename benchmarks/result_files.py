"""Reading benchmarks/results/ and writing its figures as text: what the tables of
benchmarks/report.py share (loading a result, its provenance, "mean ± std", markdown tables)."""
from __future__ import annotations

import json
import shlex
import statistics
from pathlib import Path

import yaml

from common import RESULTS, ROOT, SWEEPS, describe_hardware

# The training engine was rewritten on this day: results dated before it (or not dated) were
# measured with the previous training loop, and carry OLD_LOOP after their figure.
ENGINE_REWRITE = "2026-12-01"
OLD_LOOP = "†"
CHOSEN_ON_TEST = "‡"  # settings chosen on the test figures of the runs shown

# Result files renamed when benchmarks/results/ was reorganised: old name -> path under it now.
RENAMED = yaml.safe_load((ROOT / "benchmarks" / "renamed_results.yaml").read_text())


def load(name: str, folder: Path | None = None) -> dict | None:
    path = (folder or RESULTS) / (name if name.endswith(".json") else f"{name}.json")
    return json.loads(path.read_text()) if path.exists() else None


def machine_of(data: dict) -> dict:
    """A result's provenance: its `machine`, or the top level for files that record it there."""
    return data.get("machine") or (data if "command" in data else {})


def date_of(data: dict) -> str:
    return str(machine_of(data).get("date") or "")[:10]


def marks(data: dict | None, chosen: bool = False) -> str:
    """The footnote markers of an "ours" cell: OLD_LOOP before the engine rewrite, CHOSEN_ON_TEST."""
    old = data is not None and date_of(data) < ENGINE_REWRITE
    signs = (OLD_LOOP if old else "") + (CHOSEN_ON_TEST if chosen else "")
    return f" {signs}" if signs else ""


def hardware(data: dict | None) -> str:
    if data is None:
        return "–"
    machine = machine_of(data)
    if not machine:  # gedi_toy.json records only its thread count
        threads = (data.get("settings") or {}).get("threads")
        return f"CPU, {threads} torch thread" + ("s" if threads and threads > 1 else "") if threads else "CPU"
    return describe_hardware(machine)


def hardware_of(*datas: dict | None) -> str:
    """The distinct machines of a table's results, in the order met; a description that only
    leaves out what another one says (the core count) is not repeated."""
    names = list(dict.fromkeys(hardware(data) for data in datas if data is not None))
    return "; ".join(name for name in names if not any(other != name and other.endswith(name) for other in names)) \
        or "–"


def pct(mean, std=None, digits: int = 2) -> str:
    if mean is None:
        return "–"
    return f"{100 * mean:.{digits}f} ± {100 * std:.{digits}f}" if std is not None else f"{100 * mean:.{digits}f}"


def spread(values: list, digits: int = 4) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "–"
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.{digits}f} ± {std:.{digits}f}"


def stat(entry: dict | None, scale: float = 100, digits: int = 1) -> str:
    """"mean ± std" of a {mean, std} summary."""
    if not entry:
        return "–"
    return f"{scale * entry['mean']:.{digits}f} ± {scale * entry['std']:.{digits}f}"


def count(seeds) -> int:
    return len(seeds) if isinstance(seeds, list) else int(seeds)


def current_path(word: str) -> str:
    """A benchmarks/results/ path as the file is named today."""
    name = Path(word).name
    if (RESULTS / name).exists():
        return word
    if name in RENAMED:
        return f"benchmarks/results/{RENAMED[name]}"
    if (SWEEPS / name).exists():
        return f"benchmarks/results/sweeps/{name}"
    return word


def portable(command: str, here: Path | None = None) -> str:
    """A recorded command without the paths that existed only on the machine that ran it:
    `--out` names the file where it lies now (`here`), other absolute paths keep their file
    name (run folders go under runs/), and renamed result files get their new names."""
    try:
        words = shlex.split(command)
    except ValueError:
        return command
    cleaned, previous = [], None
    for word in words:
        new = word
        if previous == "--out" and here is not None:
            new = str(here.relative_to(ROOT))
        elif word.startswith("/"):
            new = f"runs/{Path(word).name}" if previous in ("--runs-dir", "--keep-runs") else Path(word).name
        elif word.startswith("benchmarks/results/"):
            new = current_path(word)
        cleaned.append(new)
        previous = word
    if here is not None and "--out" not in words and (here.parent != RESULTS or here.name in RENAMED.values()):
        cleaned += ["--out", str(here.relative_to(ROOT))]
    return shlex.join(cleaned)


def provenance(data: dict, here: Path | None = None) -> str:
    """`command` — machine, load, torch, date: the line under a table of docs/results.md."""
    machine = machine_of(data)
    load_average = machine.get("load_average_1m")
    busy = f", 1-min load average {load_average:.1f} (shared machine)" if load_average else ""
    return (f"`{portable(machine.get('command', '?'), here)}` — {hardware(data)}{busy}, "
            f"torch {machine.get('torch', data.get('torch', '?'))}, {date_of(data) or '?'}")


def code(command: str) -> str:
    return f"`{command}`"


def table(header: list[str], rows: list[list[str]]) -> str:
    return "\n".join(["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
                     + ["| " + " | ".join(row) + " |" for row in rows])


def missing(name: str) -> str:
    return f"_No result file `benchmarks/results/{name}.json`._"
