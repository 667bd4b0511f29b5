"""Concurrent clients: every request succeeds and returns exactly what a lone request returns."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

QUERIES = ["kidney lesion", "pleural effusion", "brain hemorrhage", "spleen normal size",
           "pneumothorax chest x-ray", "liver parenchyma homogenous", "fracture", "axial plane"]
MODES = ["dense", "bm25", "hybrid"]


def _payload(n: int) -> dict[str, Any]:
    return {"text": QUERIES[n % len(QUERIES)], "mode": MODES[n % len(MODES)], "k": 5}


def _key(response: Any) -> list[tuple[str, float]]:
    assert response.status_code == 200, response.text
    return [(h["id"], round(h["score"], 6)) for h in response.json()["hits"]]


def _hammer(server: Any, threads: int, per_thread: int) -> tuple[dict[int, list], list[list]]:
    with server.client() as client:
        baseline = {n: _key(client.post("/v1/search", json=_payload(n))) for n in range(24)}
    results: list[list] = [[] for _ in range(threads)]
    barrier = threading.Barrier(threads)

    def worker(t: int) -> None:
        with server.client() as client:
            barrier.wait()
            for i in range(per_thread):
                n = (t * 7 + i) % 24
                results[t].append((n, _key(client.post("/v1/search", json=_payload(n)))))

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(worker, range(threads)))
    return baseline, results


def test_eight_threads_twenty_searches_each(live: Any) -> None:
    baseline, results = _hammer(live, threads=8, per_thread=20)
    assert sum(len(r) for r in results) == 160
    for per_thread in results:
        for n, got in per_thread:
            assert got == baseline[n], f"query {n} differed under load"


def test_searches_and_answers_interleaved(live: Any, sample_image: Path) -> None:
    image = sample_image.read_bytes()
    with live.client() as client:
        expected = client.post("/v1/answer", data={"question": "Is the spleen normal size?",
                                                   "task": "closed_vqa"},
                               files={"image": ("a.jpg", image, "image/jpeg")}).json()

    def answer(_: int) -> dict[str, Any]:
        with live.client() as client:
            response = client.post("/v1/answer", data={"question": "Is the spleen normal size?",
                                                       "task": "closed_vqa"},
                                   files={"image": ("a.jpg", image, "image/jpeg")})
            assert response.status_code == 200, response.text
            return response.json()

    def search(n: int) -> list:
        with live.client() as client:
            return _key(client.post("/v1/search", json=_payload(n)))

    with ThreadPoolExecutor(8) as pool:
        answers = [pool.submit(answer, i) for i in range(12)]
        searches = [pool.submit(search, i) for i in range(24)]
        got_answers = [f.result() for f in answers]
        got_searches = [f.result() for f in searches]
    with live.client() as client:
        for n, got in enumerate(got_searches):
            assert got == _key(client.post("/v1/search", json=_payload(n)))
    for got in got_answers:
        assert got["text"] == expected["text"]
        assert [e["id"] for e in got["evidence"]] == [e["id"] for e in expected["evidence"]]


@pytest.fixture(scope="module")
def live_minilm(minilm_index: Any, echo_config: Any, start_live: Any) -> Any:
    with start_live(minilm_index.dir, echo_config, None) as server:
        yield server


@pytest.mark.slow
def test_sentence_transformer_encoder_under_concurrent_load(live_minilm: Any) -> None:
    """The real default encoder (HF fast tokenizer inside) stays correct with 8 threads."""
    baseline, results = _hammer(live_minilm, threads=8, per_thread=6)
    for per_thread in results:
        for n, got in per_thread:
            assert got == baseline[n]


def test_answer_queue_is_bounded() -> None:
    from mmedrag.server.concurrency import AnswerGate, Busy

    gate = AnswerGate(max_waiting=2)
    entered = threading.Event()
    release = threading.Event()

    def hold() -> None:
        with gate.slot():
            entered.set()
            release.wait(5)

    holder = threading.Thread(target=hold)
    holder.start()
    entered.wait(5)
    def wait_in_line() -> None:
        with gate.slot():
            pass

    waiter = threading.Thread(target=wait_in_line)
    waiter.start()
    while gate.waiting < 2:
        threading.Event().wait(0.005)
    with pytest.raises(Busy, match="2 answers are already queued"):
        with gate.slot():
            pass
    release.set()
    holder.join(5)
    waiter.join(5)
    assert gate.waiting == 0


@pytest.mark.slow
def test_answer_with_real_llama_cpp_generator(hashing_index: Any, sample_image: Path,
                                              start_live: Any) -> None:
    """The default offline generator (llama.cpp SmolLM2) behind the server, with concurrent asks."""
    pytest.importorskip("llama_cpp")
    from mmedrag.config import Config

    with start_live(hashing_index.dir, Config(), None) as live:
        image = sample_image.read_bytes()

        def ask(_: int) -> dict[str, Any]:
            with live.client() as client:
                response = client.post("/v1/answer",
                                       files={"image": ("a.jpg", image, "image/jpeg")},
                                       data={"question": "Is the spleen normal size?",
                                             "task": "closed_vqa"})
                assert response.status_code == 200, response.text
                return response.json()

        with ThreadPoolExecutor(3) as pool:
            answers = list(pool.map(ask, range(3)))
        for answer in answers:
            assert answer["text"] and answer["tokens_out"] > 0 and answer["seconds"]["generate"] > 0
            assert answer["evidence"], answer
        assert len({a["text"] for a in answers}) == 1  # greedy decoding, serialised generator
