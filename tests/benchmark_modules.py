"""benchmarks/*.py read as modules by the tests (benchmarks/ is a folder of scripts, not a package)."""
from __future__ import annotations

import importlib
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load_benchmark(name: str):
    """benchmarks/NAME.py imported as the top-level module NAME, with benchmarks/ on the path as
    when the script runs: spawned workers (which inherit the path) import it by that name too."""
    if str(BENCHMARKS) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS))
    return importlib.import_module(name)
