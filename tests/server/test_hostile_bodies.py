"""Hostile JSON, hang-ups and broken generators: always 4xx/503 with one line, never a 500,
never a path or traceback in the body or the log."""

from __future__ import annotations

import logging
import socket
import time
from pathlib import Path
from typing import Any

import pytest


@pytest.mark.parametrize("raw, status", [
    ('{"text": "x", "k": 1e400}', 400),
    ('{"text": "x", "k": ' + "9" * 5000 + "}", 400),
    ('{"text": "x", "k": -1e400}', 400),
    ('{"text": "x", "k": NaN}', 400),
    ('{"text": ' + "[" * 100_000 + "]" * 100_000 + "}", 400),
    ('{"text": ' + '{"a":' * 50_000 + "1" + "}" * 50_000 + "}", 400),
    ('{"text": "x", "k": 10.5}', 400),
])
def test_json_depth_and_number_limits(live: Any, raw: str, status: int,
                                      caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO), live.client() as client:
        response = client.post("/v1/search", content=raw.encode(),
                               headers={"content-type": "application/json"})
    assert response.status_code == status, response.text
    assert "Traceback" not in caplog.text and "internal error" not in response.text


def test_client_hanging_up_mid_body_logs_no_traceback(live: Any,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG):
        sock = socket.create_connection(("127.0.0.1", live.port))
        sock.sendall(b"POST /v1/search HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 1000\r\n\r\n{\"text\": \"pleural")
        time.sleep(0.3)
        sock.close()
        time.sleep(0.5)
        with live.client() as client:
            assert client.get("/healthz").status_code == 200
    assert "Traceback" not in caplog.text and "unexpected error" not in caplog.text
    assert not [r for r in caplog.records if r.exc_info]


def test_bad_generator_model_path_is_503_without_paths(start_live: Any, hashing_index: Any,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    from mmedrag.config import Component, Config

    secret = "/srv/secret-models/missing-model.gguf"
    config = Config(generator=Component(name="llama-cpp", options={"model_path": secret}))
    with start_live(hashing_index.dir, config, None) as server, server.client() as client:
        response = client.post("/v1/answer", json={"question": "Is there an effusion?"})
        info = client.get("/v1/info").text
    assert response.status_code == 503, response.text
    assert "secret-models" not in response.text and "/" not in response.json()["error"]
    assert str(hashing_index.dir) not in response.text + info
    assert "Traceback" not in caplog.text


def test_search_for_a_missing_image_names_no_server_path(live: Any, tmp_path: Path) -> None:
    with live.client() as client:
        response = client.post("/v1/search", files={"image": ("x.png", b"not an image")})
    assert response.status_code == 400 and str(tmp_path) not in response.text
    assert "/tmp" not in response.text
