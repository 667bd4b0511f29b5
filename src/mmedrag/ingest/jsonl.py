"""One JSONL reader for the whole project: every bad line names the file and line."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mmedrag.errors import InputError


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line; raises InputError on a bad line.

    Example:
        >>> rows = list(iter_jsonl("pairs.jsonl"))   # doctest: +SKIP
    """
    from mmedrag.ingest.manifest import _rows

    for number, row, error in _rows(Path(path)):
        if error:
            raise InputError(error, path=str(path), line=number)
        assert row is not None
        yield number, row
