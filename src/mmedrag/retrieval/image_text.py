"""Image→report retrieval: an image query searches report texts.

Two kinds of trained image→report retriever are registered with an index (``index.json``
``artefacts.towers``):

- the project's **tower** (:class:`~mmedrag.encoders.tower.TrainedTowerEncoder`) maps images into
  the index's own text-encoder space, so the index's text store serves it unchanged;
- a fine-tuned **dual encoder** (:class:`~mmedrag.encoders.dual.DualEncoder`: CLIP, SigLIP,
  PubMedCLIP, BiomedCLIP, ...) has its own text tower, so the index's record texts are embedded
  by *that* text tower into a per-tower text store, ``INDEX/towers/<domain>-<digest>/`` (the
  index's store backend, same records and metadata, so domain filters work alike). It is built
  at registration (:func:`register_dual_tower`) and kept in step with the index: records added
  or deleted since, or a model re-trained in place (its ``mmedrag.json`` changed), are caught
  up when the retriever is built (refused with a one-line error on a read-only index).

Example:
    >>> tower = TrainedTowerEncoder("models/tower")                    # doctest: +SKIP
    >>> ImageToTextRetriever(index, tower).retrieve(Query(image="scan.png"), k=5)  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import inspect
import json
import shutil
from pathlib import Path
from typing import Any

from mmedrag.artefacts import TowerArtefact
from mmedrag.encoders.dual import META_FILE, DualEncoder
from mmedrag.errors import IndexMismatchError, UsageError
from mmedrag.records import Hit, Query, Record
from mmedrag.registry import REGISTRY
from mmedrag.retrieval.dense import query_filters
from mmedrag.retrieval.protocol import SearchableIndex

TOWER_STORES = "towers"
SOURCE_FILE = "source.json"
EMBED_BATCH = 64


def tower_store_name(path: str | Path, domain: str | None) -> str:
    """The text store folder (relative to the index) of a dual encoder registered for a domain."""
    digest = hashlib.sha256(str(Path(path).resolve()).encode()).hexdigest()[:10]
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in (domain or "all"))
    return f"{TOWER_STORES}/{safe}-{digest}"


def _fingerprint(encoder_path: Path) -> str:
    """Changes when the model folder is re-trained in place (its mmedrag.json is rewritten)."""
    return hashlib.sha256((encoder_path / META_FILE).read_bytes()).hexdigest()[:16]


def _open_store(index: SearchableIndex, name: str, dim: int) -> Any:
    store_cfg = index.meta.get("store") or {"name": "embedded", "options": {}}
    cls = REGISTRY.get("store", store_cfg["name"])
    options = dict(store_cfg.get("options", {}))
    if "read_only" in inspect.signature(cls).parameters:
        options.update(read_only=bool(getattr(index, "read_only", False)))
    return cls(index.dir / name, dim=dim, **options)


def sync_text_store(index: SearchableIndex, encoder: Any, name: str,
                    progress: bool = False) -> tuple[Any, dict[str, int]]:
    """Open the dual encoder's text store ``name`` and bring it in step with the index's records
    (embed the missing ones with the encoder's text tower, drop deleted ones, rebuild all when
    the model changed). Returns the store and ``{"added", "removed", "records"}``."""
    from tqdm.auto import tqdm

    folder = index.dir / name
    source = folder / SOURCE_FILE
    wanted_print = _fingerprint(encoder.path)
    read_only = bool(getattr(index, "read_only", False))
    stale_model = source.exists() and json.loads(source.read_text()).get(
        "fingerprint") != wanted_print
    if not read_only and (stale_model or (folder.exists() and not source.exists())):
        _take_writer_lock(index)
        shutil.rmtree(folder)
    if read_only and (not source.exists() or stale_model):
        raise IndexMismatchError(
            f"{index.dir}: the text store of dual encoder {encoder.path} is "
            f"{'missing' if not source.exists() else 'older than the model'}; register it "
            "again with a writable index (mmedrag train retriever ... --index)")
    store = _open_store(index, name, encoder.dim)
    have = {r.id for r in store.iter_records()}
    wanted: dict[str, Record] = {}
    for record in index.text_store.iter_records():
        wanted[record.id] = record
    missing = [r for rid, r in wanted.items() if rid not in have]
    gone = sorted(have - set(wanted))
    if (missing or gone) and read_only:
        raise IndexMismatchError(
            f"{index.dir}: the text store of dual encoder {encoder.path} has {len(have)} records, "
            f"the index {len(wanted)}; register it again with a writable index")
    if missing or gone:
        _take_writer_lock(index)  # the store is the index's: one writer at a time
    if gone:
        store.delete(gone)
    bar = tqdm(total=len(missing), disable=not progress or not missing,
               desc="embedding reports with the dual encoder's text tower", unit="record")
    for start in range(0, len(missing), EMBED_BATCH):
        part = missing[start:start + EMBED_BATCH]
        store.add(part, encoder.encode_texts([r.text for r in part]))
        bar.update(len(part))
    bar.close()
    if (missing or gone) and hasattr(store, "build_ann"):
        store.build_ann()
    if not read_only:
        source.write_text(json.dumps({"path": str(encoder.path), "fingerprint": wanted_print,
                                      "records": len(wanted)}))
    return store, {"added": len(missing), "removed": len(gone), "records": len(wanted)}


def _take_writer_lock(index: SearchableIndex) -> None:
    writing = getattr(index, "writing", None)
    if writing is not None:
        writing()


def register_dual_tower(index: Any, path: str | Path, domain: str | None = None,
                        progress: bool = True) -> dict[str, Any]:
    """Register a fine-tuned dual encoder with a (writable) index for ``domain`` (None: every
    domain): embed the index's record texts with its text tower into its own text store, then
    record the artefact so ``ask``, ``search`` and ``eval retrieval`` use it."""
    encoder = DualEncoder(path)
    name = tower_store_name(path, domain)
    index.writing()
    store, counts = sync_text_store(index, encoder, name, progress=progress)
    store.close()
    tower = TowerArtefact(path=str(Path(path).resolve()), domain=domain, kind="dual",
                          text_store=name)
    index.set_artefacts(index.artefacts.with_tower(tower))
    return {"text_store": name, "dim": encoder.dim, **counts}


class ImageToTextRetriever:
    """Image query → report texts, via a trained tower or a fine-tuned dual encoder.

    Args:
        index: the index whose records are searched.
        encoder: the trained tower (searches the index's text store: the index's text encoder
            must be the one it was aligned to) or a :class:`DualEncoder`.
        text_store: for a dual encoder, its text store folder relative to the index (default
            :func:`tower_store_name` of the encoder for all domains); caught up with the index.

    Example:
        >>> tower = TrainedTowerEncoder("models/ct")                     # doctest: +SKIP
        >>> ImageToTextRetriever(index, tower).retrieve(Query(image="x.png"), k=5)  # doctest: +SKIP
    """

    name = "image-text"

    def __init__(self, index: SearchableIndex, encoder: Any,
                 text_store: str | None = None) -> None:
        self.index = index
        self.encoder = encoder
        self.store: Any = None
        if isinstance(encoder, DualEncoder):
            name = text_store or tower_store_name(encoder.path, None)
            self.store, _ = sync_text_store(index, encoder, name)
            return
        if text_store is not None:
            raise UsageError("text_store applies to a fine-tuned dual encoder only; a tower "
                             "searches the index's text store")
        text_encoder = index.text_encoder
        text_name = getattr(text_encoder, "name", "")
        other_text = bool(encoder.text_name) and text_name != encoder.text_name
        if other_text or text_encoder.dim != encoder.dim:
            raise IndexMismatchError(
                f"tower {encoder.path} was aligned to text encoder {encoder.text_name!r} "
                f"({encoder.dim}-d) but index {index.dir} uses {text_name!r} "
                f"({text_encoder.dim}-d)")

    def retrieve(self, query: Query, k: int) -> list[Hit]:
        if query.image is None:
            return []
        vector = self.encoder.encode_images([query.image])
        filters = query_filters(query)
        if self.store is not None:
            hits = self.store.search(vector, k, filters)[0]
        else:
            hits = self.index.search_vectors(vector, k, space="text", filters=filters)[0]
        for hit in hits:
            hit.retriever = self.name
        return hits
