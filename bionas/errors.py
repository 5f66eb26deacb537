"""Errors that reach the user as a message and an exit code, never a traceback."""

from __future__ import annotations

from collections.abc import Iterable


class BionasError(Exception):
    """Base of every error bionas reports to a user. The CLI prints it and exits."""

    exit_code = 1


class SpecError(BionasError):
    """An invalid run spec or plugin options. Each line names a field path."""

    exit_code = 2

    def __init__(self, errors: Iterable[str], source: str | None = None):
        self.errors = list(errors)
        self.source = source
        head = f"invalid spec {source}" if source else "invalid spec"
        super().__init__(head + ":\n" + "\n".join(f"  {e}" for e in self.errors))


class UsageError(BionasError):
    """A command-line option with a value the command cannot use (`--seeds 0,x`); exit code 2 like a bad spec."""

    exit_code = 2


class PluginError(BionasError):
    """A plugin that cannot be used: unknown, ambiguous, broken or malformed."""

    exit_code = 2


class DataError(BionasError):
    """Missing or malformed data files; the message says what is expected where."""


class CheckpointError(BionasError):
    """A checkpoint that cannot be written, read or applied."""


def one_line(exc: BaseException) -> str:
    """`ValueError: the first line of its message`: an exception in a report of problems."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def format_pydantic_errors(error, prefix: str = "") -> list[str]:
    """One line per pydantic error, located at its full dotted path under `prefix`.

    `search.options.epochs: Input should be greater than 0`
    """
    lines = []
    for item in error.errors():
        path = prefix
        for part in item["loc"]:
            path += f"[{part}]" if isinstance(part, int) else f".{part}" if path else str(part)
        msg = item["msg"]
        if item["type"] == "extra_forbidden":
            msg = "unknown field (not allowed here)"
        elif item["type"] == "value_error" and "error" in item.get("ctx", {}):
            msg = str(item["ctx"]["error"])  # without pydantic's "Value error, " prefix
        lines.append(f"{path}: {msg}" if path else msg)
    return lines
