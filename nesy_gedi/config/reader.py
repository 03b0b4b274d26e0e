"""Task files and `--set` values as YAML: untrusted text read into plain values, with the
line of every key.

`_TaskLoader` (a `yaml.SafeLoader`) refuses, with the file and line:
  * anchors and aliases: an alias bomb ("billion laughs") is a few lines that expand
    exponentially, and a recursive alias never ends, in whatever walks the value later;
  * merge keys (`<<`) and duplicate keys (YAML would silently keep the last one);
  * nesting deeper than `MAX_NESTING`, integers longer than `MAX_INT_DIGITS` and files
    larger than `MAX_TASK_FILE_BYTES`.
YAML timestamps stay strings (`name: 2024-01-31` is a name, not a date).
"""
from __future__ import annotations

import typing
from pathlib import Path

import yaml

from ..errors import ConfigError

MAX_TASK_FILE_BYTES = 1 << 20  # task files are a few KiB; anything this large is not one
MAX_NESTING = 20  # mappings and lists inside each other (a task file needs about 6)
MAX_INT_DIGITS = 40  # longer integers are not counts or seeds (and Python refuses > 4300 digits)
_MERGE_TAG = "tag:yaml.org,2002:merge"


class _TaskLoader(yaml.SafeLoader):
    """A `yaml.SafeLoader` for untrusted text (see the module docstring).

    `fail(message, mark)` makes the `ConfigError` of a refusal: it knows whether the text is
    a task file (file and line) or a `--set` value.
    """

    def __init__(self, text: str, fail: typing.Callable[[str, typing.Any], ConfigError]):
        super().__init__(text)
        self._fail = fail
        self._nesting = 0

    def fetch_flow_collection_start(self, TokenClass):
        # Bound flow nesting ([[[...) while scanning: the scanner looks ahead over every
        # open bracket for simple keys, in time quadratic in their number.
        super().fetch_flow_collection_start(TokenClass)
        if self.flow_level > MAX_NESTING:
            raise self._fail(f"nested deeper than {MAX_NESTING} levels", self.get_mark())

    def compose_node(self, parent, index):
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            raise self._fail(f"YAML alias *{event.anchor} is not allowed (anchors and aliases can expand "
                             "without bound; write the value out)", event.start_mark)
        if getattr(event, "anchor", None) is not None:
            raise self._fail(f"YAML anchor &{event.anchor} is not allowed (anchors and aliases can expand "
                             "without bound; write the value out)", event.start_mark)
        self._nesting += 1
        try:
            if self._nesting > MAX_NESTING:
                raise self._fail(f"nested deeper than {MAX_NESTING} levels", event.start_mark)
            return super().compose_node(parent, index)
        finally:
            self._nesting -= 1

    def construct_object(self, node, deep=False):
        try:
            return super().construct_object(node, deep=deep)
        except (ValueError, TypeError, ArithmeticError) as error:  # e.g. `!!float abc`
            raise self._fail(f"cannot read the value {show(node.value)}: {first_line(error)}",
                             node.start_mark) from None

    def construct_mapping(self, node, deep=False):
        # _walk refuses duplicate spellings with the key's full name; this also catches
        # keys that are equal once read (`1` and `0x1`) and keys that cannot be keys.
        if isinstance(node, yaml.MappingNode):
            seen = {}
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                try:
                    duplicate = key in seen
                except TypeError:
                    raise self._fail(f"a key must be a plain value, not {describe(key)}",
                                     key_node.start_mark) from None
                if duplicate:
                    raise self._fail(f"duplicate key {show(key)} (first given on line {seen[key]})",
                                     key_node.start_mark)
                seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)

    def construct_yaml_int(self, node):
        if len(node.value) > MAX_INT_DIGITS:
            raise self._fail(f"integer {node.value[:12]}... has more than {MAX_INT_DIGITS} digits", node.start_mark)
        return super().construct_yaml_int(node)


_TaskLoader.add_constructor("tag:yaml.org,2002:int", _TaskLoader.construct_yaml_int)
_TaskLoader.add_constructor("tag:yaml.org,2002:timestamp", yaml.SafeLoader.construct_yaml_str)


def _walk(node, key: str, lines: dict, fail) -> None:
    """Record the line of every key (`train.lr`, `data.classes[2]`) and refuse merge keys,
    non-scalar keys and duplicate keys, naming the key in full."""
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            where = key or "the top level"
            if key_node.tag == _MERGE_TAG:
                raise fail(f"{where}: YAML merge keys (<<) are not allowed", key_node.start_mark)
            if not isinstance(key_node, yaml.ScalarNode):
                kind = "list" if isinstance(key_node, yaml.SequenceNode) else "mapping"
                raise fail(f"{where}: a key must be a plain value, not a {kind}", key_node.start_mark)
            child = f"{key}.{key_node.value}" if key else key_node.value
            line = key_node.start_mark.line + 1
            if key_node.value in seen:
                raise fail(f"duplicate key {child} (first given on line {seen[key_node.value]})",
                           key_node.start_mark)
            seen[key_node.value] = line
            lines.setdefault(child, line)
            _walk(value_node, child, lines, fail)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            child = f"{key}[{index}]"
            lines.setdefault(child, item.start_mark.line + 1)
            _walk(item, child, lines, fail)


def parse_yaml(text: str, fail) -> tuple[object, dict[str, int]]:
    """(value, line of each key) of one YAML document; refusals raise `fail(...)`, syntax
    errors `yaml.YAMLError`."""
    loader = _TaskLoader(text, fail)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, {}
        lines: dict[str, int] = {}
        _walk(node, "", lines, fail)
        return loader.construct_document(node), lines
    finally:
        loader.dispose()


def yaml_problem(error: yaml.YAMLError, text: str) -> tuple[str, int | None]:
    """A one-line description of a YAML syntax error and its line."""
    if isinstance(error, yaml.reader.ReaderError):
        character = error.character
        shown = f"#x{character:04x}" if isinstance(character, int) else repr(character)
        return f"invalid YAML: character {shown} is not allowed ({error.reason})", \
            text.count("\n", 0, max(error.position, 0)) + 1
    mark = getattr(error, "problem_mark", None) or getattr(error, "context_mark", None)
    problem, context = getattr(error, "problem", None), getattr(error, "context", None)
    text = f"{problem} ({context})" if problem and context else problem or context or "not YAML"
    return f"invalid YAML: {text}", (mark.line + 1 if mark is not None else None)


def read_task_file(path: Path) -> str:
    """A task file's text; a missing, unreadable, oversized or non-UTF-8 file is a ConfigError."""
    try:
        with path.open("rb") as stream:
            raw = stream.read(MAX_TASK_FILE_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError("task file not found", str(path)) from None
    except (OSError, ValueError) as error:  # a folder, no permission, a NUL in the path, ...
        raise ConfigError(f"cannot read the task file: {getattr(error, 'strerror', None) or error}",
                          str(path)) from None
    if len(raw) > MAX_TASK_FILE_BYTES:
        raise ConfigError(f"larger than {MAX_TASK_FILE_BYTES >> 10} KiB: not a task file", str(path))
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError(f"not UTF-8 text (byte 0x{raw[error.start]:02x})", str(path),
                          raw.count(b"\n", 0, error.start) + 1) from None


def show(value, limit: int = 60) -> str:
    """`repr(value)`, cut to `limit` characters: untrusted values quoted in one-line errors."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def describe(value) -> str:
    """What kind of YAML value `value` is, in words."""
    kinds = {list: "a list", tuple: "a list", dict: "a mapping", str: "a string", int: "a number",
             float: "a number", bool: "a boolean"}
    return kinds.get(type(value), type(value).__name__)


def first_line(error: BaseException) -> str:
    """The first line of an exception's message (a library's message can run to several)."""
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


