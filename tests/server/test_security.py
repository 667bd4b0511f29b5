"""Auth, size limits, traversal attempts and malformed requests: each gets a clear 4xx JSON
message, and the server keeps serving (/healthz) afterwards."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path
from typing import Any

import pytest

QUESTION = "Is the spleen normal size?"
JSON = "application/json"


def _raw(port: int, request: bytes,
         read_timeout: float = 10.0) -> tuple[int, dict[str, Any], float]:
    """Send raw bytes (no client-side URL normalisation); return status, JSON body, seconds."""
    started = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=read_timeout) as sock:
        sock.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data or len(data.split(b"\r\n\r\n", 1)[1]) < _length(data):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body or b"{}"), time.perf_counter() - started


def _length(data: bytes) -> int:
    for line in data.split(b"\r\n\r\n", 1)[0].split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return int(line.split(b":")[1])
    return 0


def _assert_alive(live: Any) -> None:
    with live.client() as client:
        assert client.get("/healthz").json()["status"] == "ok"


# -- malformed requests ------------------------------------------------------------------------
def _multipart(question: bytes | None, image: tuple[str, bytes] | None) -> tuple[bytes, str]:
    boundary = "mmedragBoundary7MA4YWxk"
    parts = []
    if question is not None:
        parts.append(b'Content-Disposition: form-data; name="question"\r\n\r\n' + question)
    if image is not None:
        parts.append(f'Content-Disposition: form-data; name="image"; filename="{image[0]}"\r\n'
                     "Content-Type: image/png\r\n\r\n".encode() + image[1])
    body = b"".join(b"--" + boundary.encode() + b"\r\n" + p + b"\r\n" for p in parts)
    return body + b"--" + boundary.encode() + b"--\r\n", f"multipart/form-data; boundary={boundary}"


@pytest.mark.parametrize(("case", "expect_status", "expect_text"), [
    ("no question nor image", 400, "send a question"),
    ("image without question", 400, "'question' is required"),
    ("text file named .png", 400, "'notes.png' is not a readable image (PNG, JPEG or DICOM"),
    ("non-UTF-8 question", 400, "field 'question' is not valid UTF-8"),
    ("non-UTF-8 JSON body", 400, "'request body' is not valid UTF-8"),
    ("malformed JSON", 400, "malformed JSON"),
    ("JSON array", 400, "JSON body must be an object"),
    ("malformed base64", 400, "'image_b64' is not valid base64"),
    ("base64 of text", 400, "'image_b64' is not a readable image"),
    ("unknown task", 400, "unknown task 'diagnose'"),
    ("bad no_rag", 400, "'no_rag' must be true or false"),
    ("wrong content type", 415, "unsupported Content-Type 'text/plain'"),
    ("broken multipart", 400, "multipart"),
])
def test_malformed_answer_requests(live: Any, sample_image: Path, case: str,
                                   expect_status: int, expect_text: str) -> None:
    png = sample_image.read_bytes()
    requests: dict[str, tuple[bytes, str]] = {
        "no question nor image": _multipart(None, None),
        "image without question": _multipart(None, ("scan.jpg", png)),
        "text file named .png": _multipart(QUESTION.encode(),
                                           ("notes.png", b"just some text\n" * 20)),
        "non-UTF-8 question": _multipart(b"Is the \xff\xfe spleen normal?", ("scan.jpg", png)),
        "non-UTF-8 JSON body": (b'{"question": "Is the \xff spleen normal?"}', "application/json"),
        "malformed JSON": (b'{"question": "Is it?",', "application/json"),
        "JSON array": (b'["Is it?"]', "application/json"),
        "malformed base64": (b'{"question": "Is it?", "image_b64": "@@not base64@@"}', JSON),
        "base64 of text": (b'{"question": "Is it?", "image_b64": "aGVsbG8gd29ybGQ="}', JSON),
        "unknown task": (b'{"question": "Is it?", "task": "diagnose"}', "application/json"),
        "bad no_rag": (b'{"question": "Is it?", "no_rag": "maybe"}', "application/json"),
        "wrong content type": (b"question=Is it?", "text/plain"),
        "broken multipart": (b"--xyz\r\nnot a header\r\n", "multipart/form-data; boundary=xyz"),
    }
    body, content_type = requests[case]
    with live.client() as client:
        response = client.post("/v1/answer", content=body, headers={"Content-Type": content_type})
    assert response.status_code == expect_status, response.text
    payload = response.json()
    assert expect_text in payload["error"] and payload["status"] == expect_status
    _assert_alive(live)


def test_lone_surrogate_in_json_question_is_rejected(live: Any) -> None:
    with live.client() as client:
        response = client.post("/v1/search", content=b'{"text": "spleen \\udc80"}',
                               headers={"Content-Type": "application/json"})
    assert response.status_code == 400 and "not valid UTF-8" in response.json()["error"]


@pytest.mark.parametrize("body", [{"text": "x", "k": 0}, {"text": "x", "k": "ten"},
                                  {"text": "x", "mode": "fuzzy"}, {"k": 3}, {"text": ["x"]}])
def test_malformed_search_requests(live: Any, body: dict[str, Any]) -> None:
    with live.client() as client:
        response = client.post("/v1/search", json=body)
    assert response.status_code == 400 and response.json()["error"]
    _assert_alive(live)


# -- size limits (the live server allows 2 MB) ---------------------------------------------------
def test_declared_oversize_body_is_rejected_before_it_is_sent(live: Any) -> None:
    head = (b"POST /v1/answer HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; "
            b"boundary=b\r\nContent-Length: 52428800\r\n\r\n")
    status, body, seconds = _raw(live.port, head)  # not one byte of the 50 MB follows
    assert status == 413 and "over the limit of 2097152 bytes" in body["error"]
    assert seconds < 5
    _assert_alive(live)


def test_fifty_megabyte_upload_gets_413(live: Any, sample_image: Path) -> None:
    huge = sample_image.read_bytes() + b"\0" * (50 * 1024 * 1024)
    with live.client() as client:
        response = client.post("/v1/answer", data={"question": QUESTION},
                               files={"image": ("big.png", huge, "image/png")})
    assert response.status_code == 413
    assert "52" in response.json()["error"] and "limit" in response.json()["error"]
    _assert_alive(live)


def test_chunked_upload_without_length_is_cut_off(live: Any) -> None:
    sent = {"bytes": 0}

    def chunks():  # noqa: ANN202
        for _ in range(50):
            sent["bytes"] += 1024 * 1024
            yield b"\0" * (1024 * 1024)

    with live.client() as client:
        response = client.post("/v1/search", content=chunks(),
                               headers={"Content-Type": "application/json"})
    assert response.status_code == 413 and "over the limit" in response.json()["error"]
    _assert_alive(live)


def test_huge_pixel_count_is_rejected(live: Any) -> None:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("L", (10_000, 10_000)).save(buffer, format="PNG")  # 100 Mpx, ~100 kB compressed
    with live.client() as client:
        response = client.post("/v1/search",
                               files={"image": ("bomb.png", buffer.getvalue(), "image/png")})
    assert response.status_code == 413 and "10000x10000 pixels" in response.json()["error"]


# -- record ids and traversal ---------------------------------------------------------------
@pytest.mark.parametrize("path", [
    "/v1/images/..%2F..%2Fetc%2Fpasswd", "/v1/images/%2Fetc%2Fpasswd", "/v1/images/a/b",
    "/v1/images/..%2Findex.json", "/v1/records/..%2F..%2Fetc%2Fpasswd", "/v1/images/%2e%2e",
    "/v1/records/images%2Fvqarad_synpic19605.png", "/v1/images/..%5C..%5Cwin.ini",
    "/v1/images/.hidden", "/v1/images/x%00.png",
])
def test_traversal_attempts_are_refused(live: Any, path: str) -> None:
    with live.client() as client:
        response = client.get(path)
    assert response.status_code == 400, (path, response.status_code)
    assert "invalid record id" in response.json()["error"]
    assert b"root:" not in response.content


def test_unnormalised_dot_segments_over_a_raw_socket(live: Any) -> None:
    status, body, _ = _raw(live.port, b"GET /v1/images/../../../etc/passwd HTTP/1.1\r\n"
                                      b"Host: x\r\nConnection: close\r\n\r\n")
    assert status in (400, 404) and "root:" not in json.dumps(body)
    _assert_alive(live)


# -- API key ------------------------------------------------------------------------------------
@pytest.mark.parametrize(("headers", "status"), [
    ({}, 401), ({"X-API-Key": "wrong"}, 401), ({"Authorization": "Bearer wrong"}, 401),
    ({"Authorization": "Basic {key}"}, 401), ({"X-API-Key": "{key}"}, 200),
    ({"Authorization": "Bearer {key}"}, 200),
])
def test_api_key_required_when_set(live_auth: Any, headers: dict[str, str], status: int) -> None:
    import httpx

    headers = {k: v.replace("{key}", live_auth.api_key) for k, v in headers.items()}
    with httpx.Client(base_url=live_auth.url, headers=headers) as client:
        search = client.post("/v1/search", json={"text": "spleen", "k": 2})
        image = client.get("/v1/images/vqarad_synpic19605")
        health = client.get("/healthz")
    assert search.status_code == image.status_code == status
    if status == 401:
        assert "API key" in search.json()["error"]
        assert search.headers["www-authenticate"] == "Bearer"
    assert health.status_code == 200 and health.json()["auth"] is True


def test_wrong_key_is_refused_before_the_body_is_read(live_auth: Any) -> None:
    head = (b"POST /v1/answer HTTP/1.1\r\nHost: x\r\nX-API-Key: nope\r\n"
            b"Content-Type: application/json\r\nContent-Length: 1000000\r\n\r\n")
    status, body, _ = _raw(live_auth.port, head)
    assert status == 401 and "API key" in body["error"]


def test_page_and_schema_stay_public_with_auth(live_auth: Any) -> None:
    import httpx

    with httpx.Client(base_url=live_auth.url) as client:
        assert client.get("/").status_code == 200
        assert client.get("/openapi.json").status_code == 200


def test_open_server_needs_no_key(live: Any) -> None:
    import httpx

    with httpx.Client(base_url=live.url) as client:
        assert client.post("/v1/search", json={"text": "spleen"}).status_code == 200
