"""What the REST endpoints do, without HTTP: search, answer, records, images and the gallery.

Example:
    >>> service = Service.open("idx", Config())           # doctest: +SKIP
    >>> service.search(text="pleural effusion", k=3)["hits"][0]["id"]   # doctest: +SKIP
"""

from __future__ import annotations

import io
import logging
import math
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from mmedrag.config import Config
from mmedrag.errors import MmedragError
from mmedrag.index import Index
from mmedrag.records import Hit
from mmedrag.retrieval.flow import SEARCH_MODES, RetrievalFlow
from mmedrag.server.concurrency import AnswerGate, guard_index, lazy
from mmedrag.server.inputs import BadRequest, valid_record_id

LOG = logging.getLogger("mmedrag.server")

THUMBNAIL_SIZES = (64, 128, 256, 512)


def plain(value: Any) -> Any:
    """JSON-ready copy: NumPy scalars to Python, NaN/inf to None, unknown objects to str."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [plain(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def image_url(record_id: str, image: str) -> str | None:
    return f"/v1/images/{record_id}" if image else None


def hit_dict(hit: Hit) -> dict[str, Any]:
    data = hit.to_dict()
    data["image_url"] = image_url(hit.id, hit.record.image)
    return data


class Service:
    """The server's state: a read-only index, retrievers, and a lazily built pipeline.

    Args:
        index: An open Index (never written to here).
        config: Pipeline configuration (generator, selector, retrieval).
        max_waiting: Answer requests allowed to queue behind the generator.

    Example:
        >>> echo = Config(generator=Component(name="echo"))           # doctest: +SKIP
        >>> service = Service.open("idx", echo)                       # doctest: +SKIP
        >>> service.answer("Is there an effusion?", image=img)["selection"]["k"]  # doctest: +SKIP
        2
    """

    def __init__(self, index: Index, config: Config, max_waiting: int = 8) -> None:
        self.index = guard_index(index)
        self.config = config
        self.gate = AnswerGate(max_waiting)
        # the one retrieval flow: /v1/search and the pipeline behind /v1/answer share it
        self.flow = RetrievalFlow(config, self.index)
        self.pipeline = lazy(self._build_pipeline)
        self.pipeline_error: str | None = None
        self._thumbnails: OrderedDict[tuple[str, int], bytes] = OrderedDict()
        self._cache_lock = threading.Lock()
        self.started = time.time()

    @classmethod
    def open(cls, index_dir: str | Path, config: Config, max_waiting: int = 8) -> Service:
        from mmedrag.index import Index

        return cls(Index.open(index_dir, read_only=True), config, max_waiting)

    def _build_pipeline(self) -> Any:
        from mmedrag.pipeline import build

        pipeline = build(self.config, index=self.index, flow=self.flow)
        pipeline.generator  # noqa: B018 - build it now: a bad generator config is a 503, not a 400
        return pipeline

    # -- reading ---------------------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        return {"status": "ok", "records": self.index.count(),
                "uptime_s": round(time.time() - self.started, 1)}

    def info(self) -> dict[str, Any]:
        info = self.index.info()
        info.pop("path", None)  # the server's file layout is not the client's business
        from mmedrag.generation.prompts import TASKS

        info.update({"generator": self.config.generator.name, "tasks": list(TASKS),
                     "selector": self.config.selector.model_dump(),
                     "search_modes": list(SEARCH_MODES), "k_default": self.config.retrieval.k})
        return plain(info)

    def record(self, record_id: str) -> dict[str, Any]:
        found = self.index.get([valid_record_id(record_id)])
        if not found:
            raise BadRequest(f"no record with id {record_id!r}", status=404)
        data = found[0].to_dict()
        data["image_url"] = image_url(found[0].id, found[0].image)
        return plain(data)

    def image_file(self, record_id: str) -> Path:
        found = self.index.get([valid_record_id(record_id)])
        if not found:
            raise BadRequest(f"no record with id {record_id!r}", status=404)
        try:
            path = self.index.image_path(found[0])  # always inside the index folder
        except MmedragError:  # e.g. a symlink that points out of the index
            path = None
        if path is None or not path.is_file():
            raise BadRequest(f"record {record_id!r} has no image", status=404)
        return path

    def thumbnail(self, record_id: str, size: int) -> bytes:
        """JPEG no larger than ``size`` pixels a side (cached, at most 512 kept)."""
        if size not in THUMBNAIL_SIZES:
            raise BadRequest(f"size must be one of {', '.join(map(str, THUMBNAIL_SIZES))}")
        key = (record_id, size)
        with self._cache_lock:
            if key in self._thumbnails:
                return self._thumbnails[key]
        from PIL import Image

        with Image.open(self.image_file(record_id)) as image:
            image = image.convert("RGB")
            image.thumbnail((size, size))
            buffer = io.BytesIO()
            image.save(buffer, format="JPEG", quality=85)
        data = buffer.getvalue()
        with self._cache_lock:
            self._thumbnails[key] = data
            while len(self._thumbnails) > 512:
                self._thumbnails.popitem(last=False)
        return data

    def gallery(self, limit: int, offset: int, domain: str | None) -> dict[str, Any]:
        """Records that have an image, in index order: id, domain, caption, image URL."""
        items: list[dict[str, Any]] = []
        seen = 0
        for record in self.index.text_store.iter_records(batch=500):
            if not record.image or (domain and record.domain != domain):
                continue
            seen += 1
            if seen <= offset:
                continue
            caption = record.text if len(record.text) <= 240 else record.text[:237] + "..."
            items.append({"id": record.id, "domain": record.domain, "title": record.title,
                          "text": caption, "image_url": image_url(record.id, record.image)})
            if len(items) >= limit:
                break
        total = self.index.image_store.count() if self.index.image_store is not None else 0
        return {"items": items, "offset": offset, "limit": limit, "total": total}

    # -- search and answer -----------------------------------------------------------------
    def search(self, text: str | None = None, image: Any = None, k: int = 10,
               mode: str | None = None, domain: str | None = None) -> dict[str, Any]:
        """The retrieval flow's ranked candidates (no selection), with the route decision and
        the retrievers used; ``mode``: dense | bm25 | hybrid (text side) | image-image."""
        if mode is not None and mode not in SEARCH_MODES:
            raise BadRequest(f"mode must be one of {', '.join(SEARCH_MODES)}, got {mode!r}")
        if not text and image is None:
            raise BadRequest("send 'text', an image, or both")
        if image is not None and self.index.image_store is None and \
                not self.index.artefacts.towers and self.config.retrieval.image_text is None:
            raise BadRequest("this index has no image encoder or tower: search by text")
        start = time.perf_counter()
        found = self.flow.for_mode(mode).run(text or "", image, k,
                                             filters={"domain": domain} if domain else None,
                                             select=False)
        return plain({"hits": [hit_dict(h) for h in found.candidates], "k": k,
                      "mode": mode or self.config.retrieval.mode, **found.to_dict(),
                      "seconds": round(time.perf_counter() - start, 4)})

    def answer(self, question: str, image: Any = None, task: str = "open_vqa",
               options: dict[str, str] | None = None, use_rag: bool = True,
               include_messages: bool = False) -> dict[str, Any]:
        """Run the pipeline (one generation at a time) and return ``Answer.to_dict()`` + URLs."""
        from mmedrag.generation.prompts import check_task

        check_task(task)  # the client's mistake: 400
        try:
            pipeline = self.pipeline()
        except Exception as exc:  # the server's configuration or model: 503
            self.pipeline_error = f"{exc.__class__.__name__}: {exc}"
            LOG.error("answering is unavailable: %s", self.pipeline_error)
            raise BadRequest(f"answering is unavailable: the {self.config.generator.name} "
                             "generator could not be loaded (see the server log)", 503) from None
        waited = time.perf_counter()
        with self.gate.slot():
            waited = time.perf_counter() - waited
            answer = pipeline.answer(question, image=image, task=task, options=options,
                                     use_rag=use_rag)
        data = answer.to_dict()
        if not include_messages:
            data.pop("messages", None)
        for item in data.get("evidence", []):
            item["image_url"] = image_url(item.get("id", ""), item.get("image", ""))
        data["queue_seconds"] = round(waited, 4)
        return plain(data)
