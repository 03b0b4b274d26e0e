"""The one place that resolves a task's relative paths (logic file, images, pretraining task,
starting run).

A path in a task file means a file of the task's own project: it is looked up beside the
task file, then one folder up (tasks/ sit beside logic/), and only then in the working
directory, so a file of the same name in the working directory never shadows the task's
own. A path given with `--set` (or in a dict) was typed against the working directory,
which comes first for it. Paths come back absolute, so a run reads the same files from
anywhere.
"""
from __future__ import annotations

import os
from pathlib import Path

# The keys that name an input file or folder; resolved when a configuration is loaded.
PATH_KEYS = ("logic.file", "data.path", "model.pretrain", "model.init")


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except (OSError, ValueError):  # a name too long for the file system, a NUL, ...
        return False


def resolve_task_path(value: str, source: str | None, from_file: bool) -> Path:
    """The file or folder `value` names, for a configuration read from `source` (a task
    file's path, or a label such as "<config>"); `from_file`: the task file gives `value`.
    Absolute; where none of the places holds it, the first place's path (for the error)."""
    candidate = Path(value).expanduser()
    if candidate.is_absolute():
        return Path(os.path.normpath(candidate))
    working = Path.cwd()
    task_folder = Path(source).absolute().parent if source and not source.startswith("<") else None
    beside = [task_folder, task_folder.parent] if task_folder is not None else []
    bases = [*beside, working] if from_file and beside else [working, *beside]
    for base in bases:
        if _exists(base / candidate):
            return Path(os.path.normpath(base / candidate))
    return Path(os.path.normpath(bases[0] / candidate))
