"""Errors users see. Each names the file, line or field at fault, in one line."""

from __future__ import annotations


class MmedragError(Exception):
    """Base class: an error with a clear one-line message for the user (CLI exit code 1)."""

    exit_code = 1


class UsageError(MmedragError):
    """Bad usage: wrong option, unknown component name, invalid config (CLI exit code 2)."""

    exit_code = 2


class InputError(MmedragError):
    """Bad input data. Carries the file and line so the message can name them.

    Example:
        >>> str(InputError("empty report", path="pairs.jsonl", line=3))
        'pairs.jsonl:3: empty report'
    """

    def __init__(self, message: str, path: str | None = None, line: int | None = None,
                 field: str | None = None) -> None:
        self.reason = message
        self.path = path
        self.line = line
        self.field = field
        where = path or ""
        if line is not None:
            where += f":{line}"
        if field:
            where += f" [{field}]"
        super().__init__(f"{where}: {message}" if where else message)


class InputTooLarge(InputError):
    """An input over a size limit (pixels, inflated bytes): the server answers 413."""


class StoreDamaged(MmedragError):
    """A store file is missing, empty or corrupt (the message names the file)."""

    def __init__(self, message: str, path: str = "") -> None:
        super().__init__(message)
        self.path = path


class IndexMismatchError(MmedragError):
    """An index was opened with encoders other than the ones that built it."""


def optional_import(module: str, extra: str, package: str | None = None):  # noqa: ANN201
    """Import ``module`` or raise a MmedragError that says how to install it.

    Example:
        >>> np = optional_import("numpy", extra="core")
    """
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        pkg = package or module.split(".")[0]
        raise MmedragError(
            f"this feature needs '{pkg}' (pip install 'mmedrag[{extra}]' or pip install {pkg}): "
            f"{exc}"
        ) from exc
