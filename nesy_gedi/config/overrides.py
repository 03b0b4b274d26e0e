"""`--set key=value` overrides: each value read as untrusted YAML, each key applied to a
task's plain data before it is checked. A bare `NAME=value` whose name is no section sets a
parameter of the logic file (e.g. `--set N=4`)."""
from __future__ import annotations

import dataclasses

import yaml

from ..errors import ConfigError
from .reader import parse_yaml, show
from .schema import MODES_SECTION, TaskConfig


def parse_override(item, label: str) -> tuple[str, object]:
    """`key=value` -> (key, YAML value); `label` names the item in errors."""
    if not isinstance(item, str) or "=" not in item:
        raise ConfigError(f"{label}: expected key=value")
    key, text = item.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"{label}: empty key")
    if not all(part.strip() for part in key.split(".")):
        raise ConfigError(f"{label}: empty part in the key {show(key)}")
    if not text.strip():
        return key, ""

    def fail(message: str, mark) -> ConfigError:
        return ConfigError(f"{label}: {message}")

    try:
        value, _ = parse_yaml(text, fail)
    except yaml.YAMLError:
        value = text  # not YAML (e.g. an unclosed bracket): the text as it is
    return key, value


def parse_overrides(overrides: list[str] | None) -> list[tuple[str, object]]:
    """`key=value` strings -> (key, YAML-parsed value), read as untrusted as task files."""
    return [parse_override(item, f"--set {show(item)}") for item in overrides or []]


def apply(data: dict, parsed: list[tuple[str, object]]) -> tuple[str, ...]:
    """Apply parsed overrides to `data`; returns the full keys they set."""
    top_level = {f.name for f in dataclasses.fields(TaskConfig)} | {MODES_SECTION}
    changed = []
    for key, value in parsed:
        parts = key.split(".")
        if len(parts) == 1 and parts[0] not in top_level:
            # A bare name sets a parameter of the logic file, e.g. --set N=4.
            parts = ["logic", "params", parts[0]]
        node = data
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"--set {key}: {part} is not a section")
            node = child
        node[parts[-1]] = value
        changed.append(".".join(parts))
    return tuple(changed)


def apply_overrides(data: dict, overrides: list[str] | None) -> dict:
    apply(data, parse_overrides(overrides))
    return data

