"""``mmedrag serve`` start-up checks and the request parsers (unit and property tests)."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from mmedrag.cli.main import main
from mmedrag.server.inputs import (
    BadRequest,
    decode_base64_image,
    parse_body,
    parse_multipart,
    valid_record_id,
)
from mmedrag.server.security import check_bind, is_loopback


@pytest.mark.parametrize(("host", "loopback"), [
    ("127.0.0.1", True), ("127.8.0.1", True), ("localhost", True), ("::1", True),
    ("[::1]", True), ("0.0.0.0", False), ("::", False), ("192.168.1.4", False),
    ("example.org", False)])
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_check_bind_needs_a_key_off_loopback() -> None:
    check_bind("127.0.0.1", None)
    check_bind("0.0.0.0", "k")
    with pytest.raises(Exception, match="refusing to serve on 0.0.0.0 without an API key"):
        check_bind("0.0.0.0", None)


def test_serve_refuses_public_bind_without_key(hashing_index, capsys) -> None:  # noqa: ANN001
    code = main(["serve", "--index", str(hashing_index.dir), "--host", "0.0.0.0"])
    assert code == 2
    assert "refusing to serve on 0.0.0.0 without an API key" in capsys.readouterr().err


def test_serve_rejects_unset_key_variable(hashing_index, capsys, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.delenv("MMEDRAG_TEST_UNSET_KEY", raising=False)
    code = main(["serve", "--index", str(hashing_index.dir), "--api-key-env",
                 "MMEDRAG_TEST_UNSET_KEY"])
    assert code == 2 and "MMEDRAG_TEST_UNSET_KEY" in capsys.readouterr().err


def test_serve_rejects_missing_index(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    code = main(["serve", "--index", str(tmp_path / "nope")])
    assert code == 2 and "not an mmedrag index" in capsys.readouterr().err


@given(st.text(min_size=1, max_size=80))
def test_accepted_ids_never_leave_the_images_folder(record_id: str) -> None:
    try:
        valid_record_id(record_id)
    except BadRequest:
        return
    folder = Path("/srv/index/images")
    assert (folder / f"{record_id}.png").resolve().parent == folder
    assert "/" not in record_id and "\\" not in record_id and "\0" not in record_id


@pytest.mark.parametrize("record_id", ["vqarad_synpic19605", "a1b2c3d4e5f6a7b8", "mimic:123-4.5"])
def test_plain_ids_are_accepted(record_id: str) -> None:
    assert valid_record_id(record_id) == record_id


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 6), (200, 10, 10)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_multipart_keeps_raw_bytes_and_file_names() -> None:
    body = (b"--B\r\nContent-Disposition: form-data; name=\"question\"\r\n\r\nIs it \xc3\xa9?\r\n"
            b"--B\r\nContent-Disposition: form-data; name=\"image\"; filename=\"x.png\"\r\n"
            b"Content-Type: image/png\r\n\r\n" + _png() + b"\r\n--B--\r\n")
    parts = parse_multipart(body, "multipart/form-data; boundary=B")
    assert [(p.name, p.filename) for p in parts] == [("question", None), ("image", "x.png")]
    parsed = parse_body(body, "multipart/form-data; boundary=B")
    assert parsed.fields == {"question": "Is it é?"} and parsed.image.size == (8, 6)
    assert parsed.image_name == "x.png"


def test_base64_data_url_and_plain_agree() -> None:
    encoded = base64.b64encode(_png()).decode()
    assert decode_base64_image(encoded).size == decode_base64_image(
        f"data:image/png;base64,{encoded}").size == (8, 6)


@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_crash_the_parsers(data: bytes) -> None:
    for content_type in ("application/json", "multipart/form-data; boundary=B",
                         "application/x-www-form-urlencoded"):
        try:
            parse_body(data, content_type)
        except BadRequest as exc:
            assert exc.status in (400, 413, 415) and exc.message
