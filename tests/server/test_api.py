"""Every endpoint over a real socket, compared with the same calls made in-process."""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

import pytest
from PIL import Image


def _image_part(path: Path) -> dict[str, Any]:
    return {"image": (path.name, path.read_bytes(), "image/jpeg")}


def test_healthz_and_info(live: Any, hashing_index: Any) -> None:
    with live.client() as client:
        health = client.get("/healthz").json()
        info = client.get("/v1/info").json()
    assert health["status"] == "ok" and health["records"] == 36 and health["auth"] is False
    assert info["count"] == 36 and info["images"] == 36
    assert info["domains"] == hashing_index.domain_counts()
    assert info["generator"] == "echo" and "closed_vqa" in info["tasks"]
    assert "path" not in info  # the server's file layout stays private


@pytest.mark.parametrize("mode", ["dense", "bm25", "hybrid"])
def test_text_search_matches_in_process_retrieval(live: Any, hashing_index: Any, mode: str) -> None:
    from mmedrag.records import Query
    from mmedrag.retrieval.bm25 import BM25Retriever
    from mmedrag.retrieval.dense import DenseRetriever
    from mmedrag.retrieval.hybrid import HybridRetriever

    retriever = {"dense": DenseRetriever, "bm25": BM25Retriever, "hybrid": HybridRetriever}[mode]
    expected = retriever(hashing_index).retrieve(Query(text="kidney lesion nephroblastomatosis"), 5)
    with live.client() as client:
        response = client.post("/v1/search", json={"text": "kidney lesion nephroblastomatosis",
                                                   "k": 5, "mode": mode})
    assert response.status_code == 200
    hits = response.json()["hits"]
    assert [h["id"] for h in hits] == [h.id for h in expected]
    assert [h["score"] for h in hits] == pytest.approx([h.score for h in expected])
    assert all(h["image_url"] == f"/v1/images/{h['id']}" for h in hits)


def test_image_search_multipart_and_base64_agree(live: Any, sample_image: Path) -> None:
    encoded = base64.b64encode(sample_image.read_bytes()).decode()
    with live.client() as client:
        multipart = client.post("/v1/search", files=_image_part(sample_image), data={"k": "4"})
        as_json = client.post("/v1/search", json={"image_b64": encoded, "k": 4})
    assert multipart.status_code == as_json.status_code == 200
    hits = multipart.json()["hits"]
    assert hits[0]["id"] == "vqarad_synpic19605"  # the same picture is its own nearest image
    assert hits[0]["score"] == pytest.approx(1.0, abs=1e-4)
    assert [h["id"] for h in as_json.json()["hits"]] == [h["id"] for h in hits]
    assert multipart.json()["retrievers"] == ["dense-image"]  # no router/tower: image→image


def test_search_text_and_image_fused_with_domain_filter(live: Any, sample_image: Path) -> None:
    with live.client() as client:
        response = client.post("/v1/search", files=_image_part(sample_image),
                               data={"text": "spleen", "k": "6", "domain": "ABD"})
    body = response.json()
    assert response.status_code == 200 and body["mode"] == "hybrid"
    assert body["retrievers"] == ["bm25", "dense-image", "dense-text"]
    assert len(body["hits"]) == 6 and {h["domain"] for h in body["hits"]} == {"ABD"}
    assert body["hits"][0]["retriever"] == "rrf"


def test_answer_multipart_matches_pipeline(live: Any, hashing_index: Any, echo_config: Any,
                                           sample_image: Path) -> None:
    from mmedrag.pipeline import Pipeline

    question = "Is the spleen normal size?"
    expected = Pipeline.from_config(echo_config, index=hashing_index).answer(
        question, image=sample_image, task="closed_vqa")
    with live.client() as client:
        response = client.post("/v1/answer", files=_image_part(sample_image),
                               data={"question": question, "task": "closed_vqa"})
    assert response.status_code == 200
    answer = response.json()
    assert answer["text"] == expected.text and answer["parsed"] == expected.parsed
    assert [e["id"] for e in answer["evidence"]] == [e.hit.id for e in expected.evidence]
    assert [e["number"] for e in answer["evidence"]] == list(range(1, len(answer["evidence"]) + 1))
    assert answer["selection"]["k"] == len(answer["evidence"]) >= 1
    assert answer["selection"]["reason"]
    assert answer["evidence"][0]["cited"] is ("[1]" in answer["text"])
    assert answer["evidence"][0]["image_url"].startswith("/v1/images/")
    assert {"retrieve", "select", "generate", "total"} <= set(answer["seconds"])
    assert answer["image_seen"] is False and "messages" not in answer


def test_answer_json_without_rag_and_mcq(live: Any, sample_image: Path) -> None:
    encoded = base64.b64encode(sample_image.read_bytes()).decode()
    with live.client() as client:
        plain = client.post("/v1/answer", json={"question": "Is the spleen normal size?",
                                                "image_b64": encoded, "no_rag": True,
                                                "task": "closed_vqa"}).json()
        mcq = client.post("/v1/answer", data={
            "question": "Which organ is abnormal?", "task": "mcq",
            "options": '{"A": "spleen size normal", "B": "brain hemorrhage"}'}).json()
    assert plain["used_rag"] is False and plain["evidence"] == [] and plain["selection"] == {}
    assert mcq["parsed"] in ("A", "B") and mcq["evidence"]


def test_report_task_may_omit_the_question(live: Any, sample_image: Path) -> None:
    with live.client() as client:
        response = client.post("/v1/answer", files=_image_part(sample_image),
                               data={"task": "report"})
    assert response.status_code == 200 and response.json()["text"]


def test_records_and_images(live: Any, hashing_index: Any) -> None:
    record = hashing_index.get(["vqarad_synpic19853"])[0]
    with live.client() as client:
        got = client.get("/v1/records/vqarad_synpic19853")
        png = client.get("/v1/images/vqarad_synpic19853")
        thumb = client.get("/v1/images/vqarad_synpic19853", params={"size": 128})
        bad_size = client.get("/v1/images/vqarad_synpic19853", params={"size": 100})
        missing = client.get("/v1/records/no_such_record")
    assert got.status_code == 200 and got.json()["text"] == record.text
    assert got.json()["domain"] == "ABD"
    assert got.json()["image_url"] == "/v1/images/vqarad_synpic19853"
    assert png.headers["content-type"] == "image/png"
    assert png.content == hashing_index.image_path(record).read_bytes()
    assert thumb.headers["content-type"] == "image/jpeg"
    assert max(Image.open(io.BytesIO(thumb.content)).size) == 128
    assert bad_size.status_code == 400 and "size must be one of" in bad_size.json()["error"]
    assert missing.status_code == 404
    assert missing.json()["error"] == "no record with id 'no_such_record'"


def test_gallery_pages_cover_every_image_once(live: Any) -> None:
    ids: list[str] = []
    with live.client() as client:
        for offset in range(0, 40, 10):
            page = client.get("/v1/gallery", params={"limit": 10, "offset": offset}).json()
            assert page["total"] == 36
            ids += [item["id"] for item in page["items"]]
        chest = client.get("/v1/gallery", params={"limit": 50, "domain": "CHEST"}).json()
        too_many = client.get("/v1/gallery", params={"limit": 1000})
    assert len(ids) == 36 == len(set(ids))
    assert len(chest["items"]) == 12 and {i["domain"] for i in chest["items"]} == {"CHEST"}
    assert too_many.status_code == 422 and "limit" in too_many.json()["error"]


def test_openapi_and_page(live: Any) -> None:
    with live.client() as client:
        schema = client.get("/openapi.json").json()
        page = client.get("/")
        script = client.get("/static/app.js")
    for path in ("/v1/answer", "/v1/search", "/v1/records/{record_id}", "/v1/images/{record_id}",
                 "/v1/gallery", "/healthz"):
        assert path in schema["paths"], path
    body = schema["paths"]["/v1/answer"]["post"]["requestBody"]["content"]
    assert {"multipart/form-data", "application/json"} <= set(body)
    assert page.status_code == 200 and "<title>mmedrag" in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert "http://" not in page.text and "https://" not in page.text  # nothing from a CDN
    assert script.status_code == 200 and "https://" not in script.text


def test_unavailable_generator_is_a_503_and_search_still_works(hashing_index: Any,
                                                                start_live: Any) -> None:
    from mmedrag.config import Component, Config

    config = Config(generator=Component(name="no-such-generator"))
    with start_live(hashing_index.dir, config, None) as server, server.client() as client:
        answer = client.post("/v1/answer", json={"question": "Is it normal?"})
        bad_task = client.post("/v1/answer", json={"question": "Is it normal?", "task": "x"})
        search = client.post("/v1/search", json={"text": "spleen", "k": 2})
        docs = client.get("/docs")
    assert answer.status_code == 503
    assert answer.json()["error"].startswith("answering is unavailable:")
    assert "no-such-generator" in answer.json()["error"]
    assert bad_task.status_code == 400 and "unknown task 'x'" in bad_task.json()["error"]
    assert search.status_code == 200 and len(search.json()["hits"]) == 2
    assert docs.status_code == 404  # no Swagger UI: it would load scripts from a CDN


def test_dicom_upload_and_empty_file_input(live: Any) -> None:
    pydicom_data = pytest.importorskip("pydicom.data")
    dicom = Path(pydicom_data.get_testdata_file("CT_small.dcm")).read_bytes()
    with live.client() as client:
        search = client.post("/v1/search", data={"k": "3"},
                             files={"image": ("ct.dcm", dicom, "application/dicom")})
        # a browser form with no file chosen sends an empty, unnamed file part
        text_only = client.post("/v1/search", data={"text": "spleen", "k": "3"},
                                files={"image": ("", b"", "application/octet-stream")})
    assert search.status_code == 200 and search.json()["retrievers"] == ["dense-image"]
    assert len(search.json()["hits"]) == 3
    assert text_only.status_code == 200 and text_only.json()["mode"] == "hybrid"
    assert text_only.json()["retrievers"] == ["bm25", "dense-text"]
