"""User-facing errors: one line, `path:line: message`, never a traceback."""
from __future__ import annotations


def _one_line(text: str) -> str:
    """`text` with every character that is not printable (newline, tab, NUL, ...) escaped."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


class NesyError(Exception):
    """An error in the user's input (logic file, task file, data root, run directory).

    The CLI prints `str(error)` and exits with status 2; the message always says where
    the problem is and, when it can, what to do about it.
    """

    def __init__(self, message: str, path: str | None = None, line: int | None = None):
        # Messages quote untrusted text (file names, keys, values); escaped, they stay one line.
        self.message = _one_line(str(message))
        self.path = None if path is None else _one_line(str(path))
        self.line = line
        super().__init__(self.__str__())

    def __str__(self) -> str:
        if self.path is not None and self.line is not None:
            return f"{self.path}:{self.line}: {self.message}"
        if self.path is not None:
            return f"{self.path}: {self.message}"
        return self.message


class LogicError(NesyError):
    """A problem in a logic file: syntax, scoping, domains or satisfiability."""


class ConfigError(NesyError):
    """A problem in a task file or a --set override: `path:line: key: message`."""


class DataError(NesyError):
    """A data set that is missing, corrupted or inconsistent."""
