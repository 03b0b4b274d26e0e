"""Loading a task: a task file (or a stored run's dict) read, `--set` overrides applied, the
chosen mode's own settings added, every key and value checked, paths resolved."""
from __future__ import annotations

import copy
from pathlib import Path

import yaml

from ..errors import ConfigError
from .overrides import apply, parse_overrides
from .paths import PATH_KEYS, resolve_task_path
from .reader import describe, parse_yaml, read_task_file, show, yaml_problem
from .schema import MODES_SECTION, PRETRAIN_MODE, MOVED_KEYS, TRAINING_MODES, TaskConfig, TrainConfig
from .validate import Where, _set_at, _value_at, apply_mode, build, check


def load_config(path: str | Path, overrides: list[str] | None = None, pretrain: bool = False) -> TaskConfig:
    """Read a task file, apply overrides, validate; relative paths resolve beside the task file
    (`nesy_gedi.config.paths`). `pretrain`: the task is read for `nesy-gedi pretrain`, which
    reads the whole gedi section and no train.mode (as does any task without a logic section)."""
    path = Path(path)
    source = str(path)
    text = read_task_file(path)

    def fail(message: str, mark) -> ConfigError:
        return ConfigError(message, source, mark.line + 1 if mark is not None else None)

    try:
        data, lines = parse_yaml(text, fail)
    except yaml.YAMLError as error:
        message, line = yaml_problem(error, text)
        raise ConfigError(message, source, line) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"a task file must be a mapping of sections, not {describe(data)}", source)
    changed = apply(data, parse_overrides(overrides))
    sections = _mode_sections(data.pop(MODES_SECTION, None), Where(source, lines, changed))
    chosen = PRETRAIN_MODE if pretrain else _chosen_mode(data)
    for mode in dict.fromkeys(name for names, _, _ in sections for name in names):
        if mode != chosen:  # every mode's settings are checked; the chosen mode's are kept
            trial = copy.deepcopy(data)
            if mode != PRETRAIN_MODE and isinstance(trial.setdefault("train", {}), dict):
                trial["train"]["mode"] = mode
            _config(*_with_mode_sections(trial, sections, mode, lines, changed, source), mode == PRETRAIN_MODE)
    return _config(*_with_mode_sections(data, sections, chosen, lines, changed, source), pretrain)


def config_from_dict(data: dict, source: str = "<config>", pretrain: bool = False) -> TaskConfig:
    """A configuration from plain data, e.g. a run's stored config.yaml (which holds every key:
    those its mode does not read are set back to their defaults, as they changed nothing)."""
    return _config(data, Where(source), pretrain)


def _config(data: dict, where: Where, pretrain: bool) -> TaskConfig:
    if not isinstance(data, dict):
        raise ConfigError(f"a configuration must be a mapping of sections, not {describe(data)}", where.path)
    config = build(TaskConfig, data, where)
    config.source = where.path
    train_task = config.logic is not None and not pretrain
    check(config, where, train_task)
    apply_mode(config, train_task)  # what the mode implies, so config.yaml shows what actually runs
    for key in PATH_KEYS:
        value = _value_at(config, key) if config.logic is not None or not key.startswith("logic.") else None
        if value:
            _set_at(config, key, str(resolve_task_path(value, where.path, where.from_file(key))))
    return config


# ----------------------------------------------------------------------------- the modes section
def _mode_sections(value, where: Where) -> list[tuple[tuple, str, dict]]:
    """The `modes:` section checked: (modes, key, settings) of each entry, whose key names one training
    mode or several, separated by commas (`sl+gedi, gedi->sl: {gedi: ...}`); `pretrain` names
    the settings `nesy-gedi pretrain` adds."""
    if value is None:
        return []
    if not isinstance(value, dict) or not value:
        raise where.error(MODES_SECTION, f"expected a mapping of training modes to settings, got {show(value)}")
    sections = []
    for key, section in value.items():
        names = tuple(name.strip() for name in str(key).split(","))
        for name in names:
            if name not in (*TRAINING_MODES, PRETRAIN_MODE):
                raise where.error(f"{MODES_SECTION}.{key}", f"unknown mode {show(name)} (choose from "
                                                            f"{', '.join(TRAINING_MODES)} or {PRETRAIN_MODE})")
        if not isinstance(section, dict):
            raise where.error(f"{MODES_SECTION}.{key}", f"expected a mapping of sections, got {show(section)}")
        sections.append((names, key, section))
    return sections


def _chosen_mode(data: dict) -> object:
    train = data.get("train")
    return train.get("mode", TrainConfig.mode) if isinstance(train, dict) else TrainConfig.mode


def _with_mode_sections(data: dict, sections: list, mode, lines: dict, changed: tuple,
                        source: str) -> tuple[dict, Where]:
    """`data` with the settings of every `modes:` entry that names `mode` added (a `--set` of
    the same key wins), and the lines of those settings under their own keys."""
    own_lines = {key: line for key, line in lines.items()
                 if key != MODES_SECTION and not key.startswith(MODES_SECTION + ".")}
    added: dict[str, str] = {}  # key -> the modes entry that gave it

    def merge(target: dict, extra: dict, key_prefix: str, entry: str) -> None:
        for name, value in extra.items():
            key = f"{key_prefix}{name}"
            if any(key == c or key.startswith(c + ".") for c in changed):
                continue
            if isinstance(value, dict) and isinstance(target.get(name), dict):
                merge(target[name], value, key + ".", entry)
            elif name in target:
                first = f"{MODES_SECTION}.{added[key]}" if key in added else "the file's own sections"
                raise ConfigError(f"{entry}.{key}: {key} is given twice, here and in {first}", source,
                                  lines.get(f"{entry}.{key}"))
            else:
                target[name] = copy.deepcopy(value)
                added[key] = entry.split(".", 1)[1]

    for names, key, section in sections:
        if mode in names:
            entry = f"{MODES_SECTION}.{key}"
            merge(data, section, "", entry)
            own_lines.update({name[len(entry) + 1:]: line for name, line in lines.items()
                              if name.startswith(entry + ".")})
    return data, Where(source, own_lines, changed)


# ----------------------------------------------------------------------------- stored runs
def upgrade_run_config(data: dict) -> dict:
    """A run's stored config.yaml in the schema of today: map keys kept in `train` (by a
    config without a map section, which ran no naming search unless train.map_search) go
    to `map`."""
    train = data.get("train")
    if isinstance(train, dict) and any(key.split(".", 1)[1] in train for key in MOVED_KEYS):
        section = data.setdefault("map", {})
        if isinstance(section, dict):
            for old, new in MOVED_KEYS.items():
                name = old.split(".", 1)[1]
                if name in train:
                    section[new.split(".", 1)[1]] = train.pop(name)
            section.setdefault("search", False)
            if not section.get("epochs"):  # no map phase ran: its keys changed nothing
                data["map"] = {k: v for k, v in section.items() if k not in ("epochs", "lr", "balance", "search")}
    return data


def save_config(config: TaskConfig, path: Path) -> None:
    path.write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
