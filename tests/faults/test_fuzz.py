"""Fuzz: manifest lines (BOM, CRLF, quoted newlines, invalid UTF-8, huge lines) and HTTP bodies.
Always a clear error or a success: never a traceback, never a partial record."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mmedrag.errors import MmedragError
from mmedrag.ingest import rows
from mmedrag.ingest.manifest import read_manifest

GOOD = st.builds(lambda i, t: json.dumps({"id": f"r{i}", "text": t}),
                 st.integers(0, 50), st.text(min_size=1, max_size=40))
HOSTILE = st.one_of(
    st.binary(max_size=60),
    st.text(max_size=60).map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.just(b'{"id": "x", "text": "' + b"y" * 3000 + b'"}'),  # over the patched 2 KB bound
    st.just(b"[" * 5000),
    st.just(b'{"id": ' + b"9" * 5000 + b', "text": "t"}'),
    st.just(b'{"id": "\\u0000", "text": "t"}'),
    st.just(b'{"id": ["a"], "text": "t"}'),
    st.just(b'{"id": "q", "text": "\xff\xfe"}'),
)
LINE = st.one_of(GOOD.map(str.encode), HOSTILE)


def well_formed(record: Any) -> bool:
    return (isinstance(record.id, str) and record.id.strip() != "" and len(record.id) <= 512
            and all(ord(c) >= 32 for c in record.id) and record.text.strip() != ""
            and isinstance(record.meta.get("_line"), int))


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=st.lists(LINE, max_size=12), bom=st.booleans(), crlf=st.booleans(),
       csv=st.booleans())
def test_manifest_lines_clear_error_or_success(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               lines: list[bytes], bom: bool, crlf: bool,
                                               csv: bool) -> None:
    monkeypatch.setattr(rows, "MAX_LINE_BYTES", 2048)
    end = b"\r\n" if crlf else b"\n"
    if csv:
        body = b"id,text" + end + end.join(
            b'"' + line.replace(b'"', b'""') + b'",' + b'"two' + end + b'lines"' for line in lines)
        path = tmp_path / "m.csv"
    else:
        body = end.join(lines)
        path = tmp_path / "m.jsonl"
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + body + end)
    try:
        result = read_manifest(path)
    except MmedragError as exc:  # a whole-file problem: one line naming the file
        assert "\n" not in str(exc) and str(path) in str(exc)
        return
    assert all(well_formed(r) for r in result.records)
    assert all(e.startswith(f"{path}:") and "\n" not in e for e in result.errors)
    assert len({r.id for r in result.records}) == len(result.records)
    if not csv:  # every physical line is a record, an error or blank
        nonblank = sum(1 for line in path.read_bytes().removeprefix(b"\xef\xbb\xbf").split(b"\n")
                       if not _decodes(line) or line.decode("utf-8").strip())
        assert len(result.records) + result.skipped == nonblank


def _decodes(line: bytes) -> bool:
    try:
        line.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


JSON_VALUE = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
              st.text(max_size=20)),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                max_size=3),
    max_leaves=10)
BODY = st.one_of(
    st.dictionaries(st.sampled_from(["text", "k", "mode", "domain", "image_b64", "question",
                                     "task", "options", "no_rag"]), JSON_VALUE,
                    max_size=5).map(lambda d: json.dumps(d).encode()),
    st.binary(max_size=200),
    st.sampled_from([b'{"k": 1e400, "text": "x"}', b'{"text": "x", "k": NaN}',
                     b'{"text": ' + b"[" * 3000 + b"]" * 3000 + b"}",
                     b'{"image_b64": "iVBORw0KGgo=", "text": "x"}']),
)
CONTENT_TYPE = st.sampled_from(["application/json", "multipart/form-data; boundary=xyz",
                                "multipart/form-data", "text/plain",
                                "application/x-www-form-urlencoded", ""])


@pytest.fixture(scope="module")
def client(hashing_index: Any) -> Any:
    from starlette.testclient import TestClient

    from mmedrag.config import Component, Config
    from mmedrag.server.app import create_app

    app = create_app(hashing_index.dir, config=Config(generator=Component(name="echo")),
                     refresh_seconds=0)
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=BODY, content_type=CONTENT_TYPE, path=st.sampled_from(["/v1/search", "/v1/answer"]))
def test_http_bodies_clear_error_or_success(client: Any, caplog: pytest.LogCaptureFixture,
                                            body: bytes, content_type: str, path: str) -> None:
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="mmedrag.server"):
        response = client.post(path, content=body, headers={"content-type": content_type})
    assert response.status_code < 500 or response.status_code == 503, response.text
    data = response.json()
    if response.status_code >= 400:
        assert set(data) == {"error", "status"} and "\n" not in data["error"]
        assert "Traceback" not in data["error"] and "/tmp" not in data["error"]
    assert not [r for r in caplog.records if r.exc_info]
