"""The ingest half of ``Index``: decode, encode and store records batch by batch.

Each batch is one durable commit (images first, then image vectors, then text vectors and
records), so a killed ingest leaves whole batches and ``--resume`` completes it.
"""

from __future__ import annotations

import sys
import time
from typing import Any, Protocol

import numpy as np
from tqdm import tqdm

from mmedrag.errors import InputError, UsageError
from mmedrag.ingest.images import save_png
from mmedrag.ingest.reader import ImageReader, IngestSummary, check_text, image_file_name
from mmedrag.records import Record


class TextVectorSource(Protocol):
    """Where an ingest's text vectors come from instead of the index's text encoder:
    precomputed embeddings (``ingest/embeddings.py``) or a cluster encoding in parallel.

    ``start`` receives every record of the ingest once, in order, before any batch (a
    source may begin encoding ahead); ``vectors`` is then called with records from that
    list, in the same order (a subsequence: already-indexed and bad records are left out)
    and returns one L2-normalised float32 row per record.
    """

    def start(self, records: list[Record]) -> None: ...

    def vectors(self, records: list[Record]) -> np.ndarray: ...


class IngestMixin:
    """``Index.add`` and its helpers (mixed into ``Index``)."""

    dir: Any
    text_store: Any
    image_store: Any
    image_encoder: Any
    text_encoder: Any

    def writing(self, wait: float = 0.0) -> None: ...  # provided by Index

    def finalize(self) -> None: ...  # provided by Index

    def add(self, records: list[Record], on_error: str = "skip", batch_size: int = 64,
            progress: bool = False, source: str = "", keep_tags: tuple[str, ...] = (),
            max_pixels: int | None = None, allow_burned_in: bool = False,
            text_vectors: TextVectorSource | None = None) -> IngestSummary:
        """Encode and store ``records`` (images read from ``record.image`` source paths).

        Records whose id is already indexed are counted and skipped, so re-running an ingest
        (``--resume``) completes it without duplicates. Each batch is committed durably. With
        ``on_error="fail"`` every image is decoded once before anything is written, so a bad
        one stops the ingest with nothing added.

        Args:
            keep_tags: Extra DICOM tags to keep (identifying ones are refused).
            max_pixels: Pixel limit per image (None: the loader's default, 64 Mpx).
            allow_burned_in: Accept DICOMs that declare BurnedInAnnotation = YES.
            text_vectors: Source of the text vectors (default: the index's text encoder).
        """
        if on_error not in ("skip", "fail"):
            raise UsageError(f"on_error must be 'skip' or 'fail', got {on_error!r}")
        self.writing()
        from mmedrag.ingest.deid import check_keep_tags

        reader = ImageReader(check_keep_tags(tuple(keep_tags)), max_pixels, allow_burned_in)
        if on_error == "fail":
            self._validate(records, reader)
        summary = IngestSummary()
        if text_vectors is not None:
            text_vectors.start(records)
        self._text_source = text_vectors
        started = time.perf_counter()
        bar = tqdm(total=len(records), desc=f"indexing {source}".strip(), unit="rec",
                   disable=not progress, file=sys.stderr)
        for start in range(0, len(records), batch_size):
            batch = records[start:start + batch_size]
            present = self.text_store.has([r.id for r in batch])
            summary.already_indexed += len(present)
            todo = [r for r in batch if r.id not in present]
            if todo:
                self._add_batch(todo, on_error, summary, reader)
            bar.update(len(batch))
        bar.close()
        if summary.added:
            self.finalize()
        summary.seconds = time.perf_counter() - started
        return summary

    def _validate(self, records: list[Record], reader: ImageReader) -> None:
        """Decode every new record's image once, raising the first InputError (fail mode)."""
        present = self.text_store.has([r.id for r in records])
        for record in records:
            if record.id not in present:
                check_text(record)
                if record.image:
                    reader.read(record)

    def _add_batch(self, batch: list[Record], on_error: str, summary: IngestSummary,
                   reader: ImageReader) -> None:
        ready: list[Record] = []
        images: dict[str, Any] = {}
        for record in batch:
            try:
                check_text(record)
                if record.image:
                    images[record.id] = reader.read(record)
                ready.append(record)
            except InputError as exc:
                if on_error == "fail":
                    raise
                summary.skipped += 1
                summary.errors.append(str(exc))
        if not ready:
            return
        stored = [self._stored_copy(r) for r in ready]
        with_images = [(r, images[r.id]) for r in stored if r.id in images]
        if with_images and self.image_store is not None:
            for record, image in with_images:
                self._save_image(record, image)
            vectors = self.image_encoder.encode_images([img for _, img in with_images])
            self.image_store.add([r for r, _ in with_images], vectors)
        source = getattr(self, "_text_source", None)
        text_vectors = (source.vectors(ready) if source is not None
                        else self.text_encoder.encode_texts([r.text for r in stored]))
        added = self.text_store.add(stored, text_vectors)
        summary.added += added
        for record in stored:
            summary.by_domain[record.domain] = summary.by_domain.get(record.domain, 0) + 1

    def _stored_copy(self, record: Record) -> Record:
        meta = {k: v for k, v in record.meta.items() if not k.startswith("_")}
        image = f"images/{image_file_name(record.id)}" if record.image else ""
        return Record(id=record.id, text=record.text, image=image, domain=record.domain,
                      title=record.title, meta=meta)

    def _save_image(self, record: Record, image: Any) -> None:
        path = self.dir / record.image
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            tmp = path.with_suffix(".tmp")
            save_png(image, tmp)
            tmp.replace(path)
