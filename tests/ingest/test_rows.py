"""Line-exact manifest reading: BOM, CRLF, invalid UTF-8, huge lines, deep JSON, CSV quirks."""

from __future__ import annotations

from pathlib import Path

import pytest

from mmedrag.ingest import rows
from mmedrag.ingest.manifest import read_manifest
from mmedrag.ingest.rows import iter_rows


def test_bom_keeps_the_first_record_and_crlf_is_fine(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"id": "a", "text": "one"}\r\n{"id": "b", "text": "two"}\r\n')
    result = read_manifest(path)
    assert [r.id for r in result.records] == ["a", "b"] and result.errors == []


def test_invalid_utf8_costs_one_line_only(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    path.write_bytes(b'{"id": "a", "text": "one"}\n{"id": "b", "text": "\xff\xfe"}\n'
                     b'{"id": "c", "text": "three"}\n')
    result = read_manifest(path)
    assert [r.id for r in result.records] == ["a", "c"]
    assert result.errors == [f"{path}:2: not UTF-8 text (byte 21)"]


def test_csv_with_invalid_utf8_quoted_newlines_and_bom(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_bytes(b'\xef\xbb\xbfid,text\r\na,"two\r\nlines"\r\nb,\xff bad\r\nc,fine\r\n')
    result = read_manifest(path)
    assert [r.id for r in result.records] == ["a", "c"]
    assert result.records[0].text == "two\r\nlines"
    assert result.errors == [f"{path}:4: not UTF-8 text"]


def test_huge_line_is_refused_without_reading_it_whole(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rows, "MAX_LINE_BYTES", 1000)
    path = tmp_path / "m.jsonl"
    path.write_text('{"id": "big", "text": "' + "x" * 5000 + '"}\n{"id": "ok", "text": "t"}\n')
    result = read_manifest(path)
    assert [r.id for r in result.records] == ["ok"]
    assert result.errors == [f"{path}:1: line longer than 1,000 bytes"]


@pytest.mark.parametrize("line, reason", [
    ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
    ('{"id": ' + "9" * 5000 + ', "text": "t"}', "malformed JSON"),
    ("[1, 2]", "expected a JSON object per line"),
])
def test_hostile_json_lines_are_line_errors(tmp_path: Path, line: str, reason: str) -> None:
    path = tmp_path / "m.jsonl"
    path.write_text(line + "\n")
    [(number, row, error)] = list(iter_rows(path))
    assert number == 1 and row is None and reason in str(error)
