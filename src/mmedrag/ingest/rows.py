"""Bounded, line-exact reading of JSONL and CSV/TSV files: every bad line is one error.

Each line is read with a byte bound (``MAX_LINE_BYTES``), decoded on its own (so one invalid
UTF-8 line costs that line, not the file), a leading UTF-8 BOM is dropped, CRLF endings are
accepted, and JSON nested too deeply or holding an integer too long to convert is a line error.
CSV rows may span lines inside quotes; a row with bytes that are not UTF-8 is an error naming the
line where the row ends.

Example:
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "m.jsonl"
    >>> _ = path.write_bytes(b'\\xef\\xbb\\xbf{"id": "a"}\\r\\n\\xff\\n')
    >>> [(n, row, err) for n, row, err in iter_rows(path)]
    [(1, {'id': 'a'}, None), (2, None, 'not UTF-8 text (byte 0)')]
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from mmedrag.errors import UsageError

MAX_LINE_BYTES = 4 * 1024 * 1024
JSON_SUFFIXES = (".jsonl", ".ndjson", ".json")
CSV_SUFFIXES = (".csv", ".tsv")

Row = tuple[int, "dict[str, Any] | None", "str | None"]


def bounded_lines(handle: IO[bytes],
                  limit: int | None = None) -> Iterator[tuple[int, bytes | None]]:
    """(line number, bytes) per physical line; ``None`` for a line over ``limit`` bytes
    (default ``MAX_LINE_BYTES``), the rest of which is skipped without holding it in memory."""
    limit = limit or MAX_LINE_BYTES
    number = 0
    while True:
        line = handle.readline(limit + 1)
        if not line:
            return
        number += 1
        if len(line) > limit and not line.endswith(b"\n"):
            while line and not line.endswith(b"\n"):
                line = handle.readline(1 << 20)
            yield number, None
            continue
        if number == 1 and line.startswith(b"\xef\xbb\xbf"):
            line = line[3:]
        yield number, line


def parse_json_line(text: str) -> tuple[dict[str, Any] | None, str | None]:
    """One JSON object or the reason it is not one."""
    try:
        row = json.loads(text)
    except json.JSONDecodeError as exc:
        return None, f"malformed JSON: {exc.msg} (column {exc.colno})"
    except RecursionError:
        return None, "malformed JSON: nested too deeply"
    except ValueError as exc:  # e.g. an integer with more than 4300 digits
        return None, f"malformed JSON: {str(exc).splitlines()[0][:80]}"
    if not isinstance(row, dict):
        return None, "expected a JSON object per line"
    return row, None


def _jsonl(path: Path) -> Iterator[Row]:
    with open(path, "rb") as handle:
        for number, raw in bounded_lines(handle):
            if raw is None:
                yield number, None, f"line longer than {MAX_LINE_BYTES:,} bytes"
                continue
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield number, None, f"not UTF-8 text (byte {exc.start})"
                continue
            if text.strip():
                yield (number, *parse_json_line(text))


def _csv(path: Path, delimiter: str) -> Iterator[Row]:
    state = {"line": 0, "long": 0}

    def lines() -> Iterator[str]:
        with open(path, "rb") as handle:
            for number, raw in bounded_lines(handle):
                state["line"] = number
                if raw is None:
                    state["long"] = number
                    yield "\n"
                    continue
                yield raw.decode("utf-8", errors="surrogateescape")

    reader = csv.DictReader(lines(), delimiter=delimiter)
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield state["line"], None, f"malformed CSV: {exc}"
            continue
        number = state["line"]
        if state["long"]:
            state["long"] = 0
            yield number, None, f"line longer than {MAX_LINE_BYTES:,} bytes"
        elif None in row:
            yield number, None, "more values than header columns"
        elif any(_has_surrogate(v) for v in (*row.keys(), *row.values()) if isinstance(v, str)):
            yield number, None, "not UTF-8 text"
        else:
            yield number, dict(row), None


def _has_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def iter_rows(path: Path) -> Iterator[Row]:
    """(line number, row or None, error or None) for each data line of a JSONL or CSV file.

    Raises:
        UsageError: for an unsupported suffix, or a path that is not a readable file.
    """
    suffix = path.suffix.lower()
    if suffix not in JSON_SUFFIXES + CSV_SUFFIXES:
        raise UsageError(f"{path}: manifest must be .jsonl or .csv/.tsv")
    if not path.is_file():
        raise UsageError(f"{path}: not a readable file")
    if suffix in JSON_SUFFIXES:
        return _jsonl(path)
    return _csv(path, "\t" if suffix == ".tsv" else ",")
