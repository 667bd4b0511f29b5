"""An index: a folder with ``index.json`` beside its stores and copied images.

Layout::

    INDEX/index.json      encoders (name, version, dim), format version, counts, domains, artefacts
    INDEX/text/           store of text-encoder vectors of every record's text
    INDEX/image/          store of image-encoder vectors of every record with an image
    INDEX/bm25/           BM25 over record texts
    INDEX/images/         images copied as metadata-free PNGs (DICOM rendered, PHI-free), named
                          by a digest of the record id (``image_file_name``): ids are data, never
                          paths. Records store the relative path, so older indexes whose files
                          are ``images/<id>.png`` stay readable.

Opening an index with encoders other than those that built it raises ``IndexMismatchError``.

Example:
    >>> import tempfile
    >>> from mmedrag.artefacts import IndexArtefacts
from mmedrag.config import Component, IndexConfig
    >>> cfg = IndexConfig(text_encoder=Component(name="hashing"), image_encoder=None)
    >>> index = Index.open(tempfile.mkdtemp(), create=True, config=cfg)
    >>> index.add([Document.create("Pneumothorax is air in the pleural space.")]).added
    1
"""

from __future__ import annotations

import inspect
import json
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from mmedrag.artefacts import IndexArtefacts
from mmedrag.config import Component, IndexConfig
from mmedrag.errors import IndexMismatchError, MmedragError, StoreDamaged, UsageError
from mmedrag.index_ingest import IngestMixin
from mmedrag.ingest.reader import IngestSummary
from mmedrag.records import Document, Hit, Record
from mmedrag.registry import REGISTRY
from mmedrag.stores.bm25 import BM25Index
from mmedrag.stores.lock import WriterLock

FORMAT_VERSION = 1


def build_encoder(kind: str, component: Component) -> Any:
    """The encoder a config component names; image encoders may be a feature spec such as
    ``handcrafted+imagenet`` or ``tower:models/ct`` (``mmedrag.encoders.features``)."""
    if kind == "image_encoder":
        from mmedrag.encoders.features import image_features

        return image_features(component.name, **component.options)
    return REGISTRY.create(kind, component.name, **component.options)


def _encoder_signature(component: Component, encoder: Any) -> dict[str, Any]:
    return {"name": component.name, "options": component.options, "model": encoder.name,
            "version": encoder.version, "dim": int(encoder.dim)}


class Index(IngestMixin):
    """Open or create with ``Index.open(dir, create=True, config=IndexConfig(...))``."""

    def __init__(self, directory: Path, meta: dict[str, Any], read_only: bool = False,
                 existing: bool = False) -> None:
        self.dir = directory
        self.meta = meta
        self.read_only = read_only
        self.lock = WriterLock(directory)
        self._text_encoder: Any = None
        self._image_encoder: Any = None
        self._bm25: BM25Index | None = None
        try:
            self.text_store = self._open_store("text", meta["text_encoder"]["dim"], existing)
            image_meta = meta.get("image_encoder")
            self.image_store = (self._open_store("image", image_meta["dim"], existing)
                                if image_meta else None)
        except StoreDamaged as exc:
            from mmedrag.index_health import repair_hint

            raise StoreDamaged(f"{exc}; {repair_hint(directory)}", exc.path) from None
        if existing:
            self._cross_check()

    def _cross_check(self) -> None:
        from mmedrag.index_health import cross_check

        cross_check(self)

    # -- opening ---------------------------------------------------------------------------
    @classmethod
    def open(cls, directory: str | Path, create: bool = False,
             config: IndexConfig | None = None, read_only: bool = False) -> Index:
        """Open (or with ``create``, make) the index at ``directory``.

        A ``read_only`` index (the server) never writes a byte: no BM25 or graph rebuilds,
        no index.json updates; ``refresh()`` picks up what a writer has committed.
        """
        directory = Path(directory)
        meta_path = directory / "index.json"
        if directory.exists() and not directory.is_dir():
            raise UsageError(f"{directory}: is a file, not an index folder")
        if not meta_path.exists():
            if not create:
                raise UsageError(f"{directory}: not an mmedrag index (no index.json); "
                                 f"build one with 'mmedrag index MANIFEST --index {directory}'")
            return cls._create(directory, config or IndexConfig())
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise MmedragError(f"{meta_path}: corrupt index.json: {exc}") from None
        if meta.get("format_version") != FORMAT_VERSION:
            raise MmedragError(f"{meta_path}: index format {meta.get('format_version')} is not "
                               f"supported (this mmedrag reads format {FORMAT_VERSION})")
        index = cls(directory, meta, read_only=read_only, existing=True)
        if config is not None:
            index._check_config(config)
        return index

    @classmethod
    def _create(cls, directory: Path, config: IndexConfig) -> Index:
        try:
            directory.mkdir(parents=True, exist_ok=True)
            probe = directory / ".write-test"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise UsageError(f"{directory}: cannot create an index here "
                             f"({exc.strerror or exc.__class__.__name__})") from None
        text_encoder = build_encoder("text_encoder", config.text_encoder)
        image_encoder = (build_encoder("image_encoder", config.image_encoder)
                         if config.image_encoder else None)
        meta: dict[str, Any] = {
            "format_version": FORMAT_VERSION,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "mmedrag_version": _version(),
            "text_encoder": _encoder_signature(config.text_encoder, text_encoder),
            "image_encoder": (_encoder_signature(config.image_encoder, image_encoder)
                              if config.image_encoder and image_encoder else None),
            "store": config.store.model_dump(),
            "bm25": config.bm25,
            "artefacts": IndexArtefacts().model_dump(mode="json"),
        }
        index = cls(directory, meta)
        index.writing()
        index._text_encoder = text_encoder
        index._image_encoder = image_encoder
        index.save_meta()
        return index

    def _check_config(self, config: IndexConfig) -> None:
        for key, component in (("text_encoder", config.text_encoder),
                               ("image_encoder", config.image_encoder)):
            stored = self.meta.get(key)
            if component is None or stored is None:
                continue
            if component.name != stored["name"] or component.options != stored["options"]:
                raise IndexMismatchError(
                    f"{self.dir}: index was built with {key} {stored['name']} "
                    f"{stored['options']} ({stored['model']}), not {component.name} "
                    f"{component.options}; use the same encoder or build a new index")

    def _open_store(self, name: str, dim: int, existing: bool = False) -> Any:
        store_cfg = self.meta.get("store") or {"name": "embedded", "options": {}}
        cls = REGISTRY.get("store", store_cfg["name"])
        options = dict(store_cfg.get("options", {}))
        accepted = set(inspect.signature(cls).parameters) - {"self", "path", "dim", "read_only",
                                                              "must_exist"}
        unknown = sorted(set(options) - accepted)
        if unknown:
            raise UsageError(f"store option {unknown[0]!r} is not an option of the "
                             f"{store_cfg['name']} store (options: {', '.join(sorted(accepted))})")
        if "read_only" in inspect.signature(cls).parameters:
            options.update(read_only=self.read_only, must_exist=existing)
        return cls(self.dir / name, dim=dim, **options)

    def writing(self, wait: float = 0.0) -> None:
        """Take the cross-process writer lock (held until ``close``); refuse when read-only."""
        if self.read_only:
            raise UsageError(f"{self.dir}: opened read-only; this process may not write")
        self.lock.acquire(wait)

    def refresh(self) -> dict[str, int]:
        """Pick up records, BM25 and counts committed by a writer since this index was opened
        (``{"records": n, "new": rows that arrived}``)."""
        from mmedrag.index_health import refresh

        return refresh(self)

    def save_meta(self) -> None:
        if self.read_only:
            return
        self.meta["counts"] = {"records": self.text_store.count(),
                               "images": self.image_store.count() if self.image_store else 0}
        self.meta["domains"] = self.domain_counts()
        self.meta["stores"] = self.store_info()
        tmp = self.dir / "index.json.tmp"
        tmp.write_text(json.dumps(self.meta, indent=2), encoding="utf-8")
        tmp.replace(self.dir / "index.json")

    # -- encoders --------------------------------------------------------------------------
    @property
    def text_encoder(self) -> Any:
        if self._text_encoder is None:
            self._text_encoder = self._load_encoder("text_encoder")
        return self._text_encoder

    @property
    def image_encoder(self) -> Any:
        if self._image_encoder is None and self.meta.get("image_encoder"):
            self._image_encoder = self._load_encoder("image_encoder")
        return self._image_encoder

    def _load_encoder(self, kind: str) -> Any:
        stored = self.meta[kind]
        encoder = build_encoder(kind, Component(name=stored["name"], options=stored["options"]))
        if (encoder.name, encoder.version, int(encoder.dim)) != (
                stored["model"], stored["version"], stored["dim"]):
            raise IndexMismatchError(
                f"{self.dir}: {kind} now loads as {encoder.name} {encoder.version} "
                f"({encoder.dim}-d) but the index was built with {stored['model']} "
                f"{stored['version']} ({stored['dim']}-d); rebuild the index")
        return encoder

    # -- writing (add: IngestMixin) ----------------------------------------------------------
    def finalize(self) -> None:
        """Rebuild BM25 when stale, catch the ANN indexes up, and refresh index.json (the
        writer's explicit end of an ingest or deletion; readers never rebuild)."""
        if self.meta.get("bm25", True):
            self.rebuild_bm25(only_if_stale=True)
        for store in (self.text_store, self.image_store):
            if store is not None and hasattr(store, "build_ann"):
                store.build_ann()
        self.save_meta()

    def rebuild_bm25(self, only_if_stale: bool = False) -> BM25Index:
        """Rebuild BM25 from the records (the writer lock is taken: one writer)."""
        current = self._bm25 or BM25Index(self.dir / "bm25")
        if only_if_stale and current.built_for == self.text_store.count():
            self._bm25 = current
            return current
        self.writing()
        ids, texts = [], []
        for record in self.text_store.iter_records(batch=5000):
            ids.append(record.id)
            texts.append(f"{record.title}\n{record.text}" if record.title else record.text)
        current.build(ids, texts)
        self._bm25 = current
        return current

    def bm25_status(self) -> dict[str, Any]:
        """How many records the saved BM25 covers (stale when fewer than the index holds)."""
        built = self.bm25.built_for
        count = self.text_store.count()
        return {"built_for": built, "records": count, "stale": built != count}

    def delete(self, ids: list[str]) -> int:
        self.writing()
        stored = [self.image_path(r) for r in self.text_store.get(ids)]
        removed = self.text_store.delete(ids)
        if self.image_store is not None:
            self.image_store.delete(ids)
        for path in stored:
            if path is not None and path.exists():
                path.unlink()
        self.finalize()
        return removed

    # -- reading ---------------------------------------------------------------------------
    @property
    def bm25(self) -> BM25Index:
        """The saved BM25, memory-mapped (never rebuilt here: see ``finalize``)."""
        if self._bm25 is None:
            self._bm25 = BM25Index(self.dir / "bm25")
        return self._bm25

    def count(self, filters: dict[str, Any] | None = None) -> int:
        return self.text_store.count(filters)

    def domain_counts(self) -> dict[str, int]:
        fast = getattr(self.text_store, "domain_counts", None)
        if fast is not None:  # one SQL GROUP BY, not a pass over every record
            return dict(sorted(fast().items()))
        counts: dict[str, int] = {}
        for record in self.text_store.iter_records(batch=5000):
            counts[record.domain] = counts.get(record.domain, 0) + 1
        return dict(sorted(counts.items()))

    def get(self, ids: list[str]) -> list[Record]:
        return self.text_store.get(ids)

    def image_path(self, record: Record) -> Path | None:
        """Absolute path of a record's stored image (always inside the index folder)."""
        if not record.image:
            return None
        path = (self.dir / record.image).resolve()
        if self.dir.resolve() not in path.parents:
            raise MmedragError(f"record {record.id}: image path escapes the index folder")
        return path

    def search_text_dense(self, text: str, k: int, filters: dict[str, Any] | None = None,
                          exact: bool = False) -> list[Hit]:
        vector = self.text_encoder.encode_texts([text])
        return self.text_store.search(vector, k, filters, exact=exact)[0]

    def search_image_dense(self, image: Any, k: int, filters: dict[str, Any] | None = None,
                           exact: bool = False) -> list[Hit]:
        if self.image_store is None:
            raise UsageError(f"{self.dir}: this index has no image encoder; search by --text")
        vector = self.image_encoder.encode_images([image])
        return self.image_store.search(vector, k, filters, exact=exact)[0]

    def search_vectors(self, vectors: np.ndarray, k: int, space: str = "text",
                       filters: dict[str, Any] | None = None) -> list[list[Hit]]:
        store = self.text_store if space == "text" else self.image_store
        if store is None:
            raise UsageError(f"{self.dir}: no {space} store")
        return store.search(vectors, k, filters)

    def info(self) -> dict[str, Any]:
        data = {key: self.meta.get(key) for key in
                ("format_version", "created", "mmedrag_version", "text_encoder",
                 "image_encoder", "store")}
        data["count"] = self.text_store.count()
        data["images"] = self.image_store.count() if self.image_store else 0
        data["domains"] = self.domain_counts()
        data["artefacts"] = self.artefacts.model_dump(mode="json")
        data["stores"] = self.store_info()
        if self.meta.get("bm25", True):
            data["bm25"] = self.bm25_status()
        data["path"] = str(self.dir)
        return data

    def store_info(self) -> dict[str, Any]:
        """Per store (text, image): ANN kind, parameters, memory estimate, bytes on disk."""
        out: dict[str, Any] = {}
        for name, store in (("text", self.text_store), ("image", self.image_store)):
            describe = getattr(store, "describe", None)
            if describe is not None:
                out[name] = describe()
        return out

    @property
    def artefacts(self) -> IndexArtefacts:
        """What was trained for this index (router, towers, calibration, KG), typed."""
        return IndexArtefacts.from_meta(self.meta)

    def set_artefacts(self, artefacts: IndexArtefacts) -> None:
        """Record ``artefacts`` in index.json (legacy ``extras`` keys are dropped)."""
        self.writing()
        self.meta["artefacts"] = artefacts.model_dump(mode="json")
        self.meta.pop("extras", None)
        self.save_meta()

    def close(self) -> None:
        for store in (self.text_store, self.image_store):
            if store is not None:
                store.close()
        self.lock.release()


def remove_index(directory: str | Path) -> None:
    directory = Path(directory)
    if (directory / "index.json").exists():
        shutil.rmtree(directory)


def _version() -> str:
    from mmedrag import __version__

    return __version__


__all__ = ["Index", "IngestSummary", "Document", "remove_index"]
