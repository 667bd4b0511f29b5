"""Milvus store through pymilvus: Milvus Lite (a local ``milvus.db``) or a server by URI.

One collection per store with fields ``id`` (primary key), ``vector`` (IP metric), ``domain``
(the partition key, so each domain lives in its own partitions and a domain filter prunes the
search), ``meta`` (JSON of the record's scalar meta fields, used by filters such as
``split`` or ``modality``) and ``data`` (the whole record as JSON).

Durability: an ``add`` returns after Milvus acknowledged the insert (written to its log), so a
process killed afterwards keeps the batch. Milvus does not enforce unique primary keys, so
``add`` skips ids already present (and repeats inside one batch) itself.

Milvus Lite 3.x runs an in-process gRPC server in threads; ``close()`` stops it once the last
store using that file is closed, so tests leave no threads or ports behind.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from mmedrag.errors import IndexMismatchError, InputError, MmedragError, UsageError, optional_import
from mmedrag.records import Hit, Record

_MAX_VARCHAR = 65535
_MAX_ID = 1024
_TOP_LEVEL = {"id", "domain"}
_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]*$")
_CHUNK = 500

_lite_lock = threading.Lock()
_lite_users: dict[str, int] = {}


def _lite_acquire(db_path: str) -> None:
    with _lite_lock:
        _lite_users[db_path] = _lite_users.get(db_path, 0) + 1


def _lite_release(db_path: str) -> None:
    """Stop the in-process Milvus Lite server of ``db_path`` when its last user closes."""
    with _lite_lock:
        users = _lite_users.get(db_path, 0) - 1
        if users > 0:
            _lite_users[db_path] = users
            return
        _lite_users.pop(db_path, None)
    try:
        from milvus_lite.server_manager import server_manager_instance
    except ImportError:  # an older milvus-lite without the manager: nothing to stop here
        return
    server_manager_instance.release_server(db_path)


def _literal(value: Any) -> str:
    """A Milvus expression literal (strings double-quoted with JSON escapes)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    raise UsageError(f"filter values must be strings, numbers or booleans, got {value!r}")


def filter_expression(filters: dict[str, Any] | None) -> str | None:
    """Milvus boolean expression for ``filters``; ``None`` when nothing can match.

    ``domain`` and ``id`` are fields; any other key is looked up in the ``meta`` JSON field.
    A list value means "any of"; JSON keys use ``==``/``or`` because ``in`` is not supported
    on JSON paths by every Milvus version.

    Example:
        >>> filter_expression({"domain": ["CT", "MR"], "split": "train"})
        'domain in ["CT", "MR"] and (meta["split"] == "train")'
    """
    clauses = []
    for key, allowed in (filters or {}).items():
        if not isinstance(key, str) or not _KEY.match(key):
            raise UsageError(f"invalid filter field {key!r} (letters, digits, _ . - only)")
        values = list(allowed) if isinstance(allowed, (list, tuple, set)) else [allowed]
        if not values:
            return None
        literals = [_literal(v) for v in values]
        if key in _TOP_LEVEL:
            if not all(isinstance(v, str) for v in values):
                return None
            clauses.append(f"{key} in [{', '.join(literals)}]")
        else:
            path = f"meta[{json.dumps(key)}]"
            clauses.append("(" + " or ".join(f"{path} == {lit}" for lit in literals) + ")")
    return " and ".join(clauses)


def collection_name(path: Path, uri: str | None, collection: str | None) -> str:
    """The collection a store folder uses.

    Milvus Lite keeps one file per store, so the name is ``collection`` or ``records``. On a
    server, stores share one namespace: ``collection`` is a prefix completed with the folder
    name (an index's ``text`` and ``image`` stores differ in dimension), and without it a name
    is derived from the folder and remembered in ``<path>/milvus.json`` the first time.

    Example:
        >>> collection_name(Path("idx/text"), "http://milvus:19530", "medquad")
        'medquad_text'
    """
    if uri is None:
        return collection or "records"
    safe_folder = re.sub(r"[^A-Za-z0-9_]", "_", path.name)
    if collection:
        return f"{collection}_{safe_folder}"
    remembered = path / "milvus.json"
    if remembered.exists():
        return str(json.loads(remembered.read_text())["collection"])
    digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:10]
    name = f"mmedrag_{safe_folder}_{digest}"
    path.mkdir(parents=True, exist_ok=True)
    remembered.write_text(json.dumps({"uri": uri, "collection": name}))
    return name


class MilvusStore:
    """Vector store in Milvus (Lite file by default, Standalone/Distributed by ``uri``).

    Args:
        path: store folder; Milvus Lite keeps its data in ``<path>/milvus.db``.
        dim: vector dimension (an existing collection of another dimension is an error).
        uri: a Milvus server (``http://host:19530``) instead of the local Lite file.
        collection: collection name for Lite (default ``records``); for a server, a prefix
            completed with the folder name (see ``collection_name``).
        token / token_env: credentials for a server (``token_env`` names an env variable).
        index_type, m, ef_construction, ef_search: the vector index (HNSW by default).

    Example:
        >>> import tempfile, numpy as np
        >>> store = MilvusStore(tempfile.mkdtemp(), dim=2)
        >>> store.add([Record(id="a", text="x")], np.array([[1.0, 0.0]], "float32"))
        1
        >>> store.search(np.array([[1.0, 0.0]], "float32"), k=1)[0][0].id
        'a'
        >>> store.close()
    """

    def __init__(self, path: str | Path, dim: int, uri: str | None = None,
                 collection: str | None = None, token: str | None = None,
                 token_env: str | None = None, index_type: str = "HNSW", m: int = 32,
                 ef_construction: int = 200, ef_search: int = 128, num_partitions: int = 16,
                 name: str = "milvus") -> None:
        pymilvus = optional_import("pymilvus", extra="milvus")
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self.dim = int(dim)
        self.name = name
        self.ef_search = ef_search
        self._lite_path: str | None = None
        self.collection = collection_name(self.path, uri, collection)
        if token_env:
            from mmedrag.config import resolve_secret

            token = resolve_secret({"token_env": token_env}, "token")
        if uri is None:
            optional_import("milvus_lite", extra="milvus", package="milvus-lite")
            self._lite_path = str((self.path / "milvus.db").resolve())
            _lite_acquire(self._lite_path)
        target = uri or self._lite_path
        try:
            self._client = pymilvus.MilvusClient(uri=target, token=token or "")
        except Exception as exc:  # noqa: BLE001 - any connection failure, named once
            self._release_lite()
            reason = getattr(exc, "message", None) or exc
            raise MmedragError(f"cannot connect to Milvus at {target}: {reason}") from None
        self._closed = False
        try:
            self._open_collection(pymilvus, index_type, m, ef_construction, num_partitions)
        except Exception:
            self.close()
            raise

    # -- opening ---------------------------------------------------------------------------
    def _open_collection(self, pymilvus: Any, index_type: str, m: int, ef_construction: int,
                         num_partitions: int) -> None:
        client = self._client
        if client.has_collection(self.collection):
            stored = self._stored_dim()
            if stored != self.dim:
                raise IndexMismatchError(
                    f"{self.path}: Milvus collection {self.collection!r} holds {stored}-d "
                    f"vectors, opened with {self.dim}")
        else:
            data_type = pymilvus.DataType
            schema = client.create_schema(auto_id=False, enable_dynamic_field=False)
            schema.add_field("id", data_type.VARCHAR, is_primary=True, max_length=_MAX_ID)
            schema.add_field("vector", data_type.FLOAT_VECTOR, dim=self.dim)
            schema.add_field("domain", data_type.VARCHAR, max_length=512, is_partition_key=True)
            schema.add_field("meta", data_type.JSON)
            schema.add_field("data", data_type.VARCHAR, max_length=_MAX_VARCHAR)
            params = client.prepare_index_params()
            index_params = {"M": m, "efConstruction": ef_construction} if index_type == "HNSW" \
                else {}
            params.add_index("vector", index_type=index_type, metric_type="IP",
                             params=index_params)
            client.create_collection(self.collection, schema=schema, index_params=params,
                                     consistency_level="Strong", num_partitions=num_partitions)
        client.load_collection(self.collection)

    def _stored_dim(self) -> int:
        described = self._client.describe_collection(self.collection)
        for field in described.get("fields", []):
            if field.get("name") == "vector":
                return int(field.get("params", {}).get("dim", -1))
        raise MmedragError(f"{self.path}: Milvus collection {self.collection!r} has no "
                           "'vector' field (not made by mmedrag)")

    # -- writes ----------------------------------------------------------------------------
    def add(self, records: list[Record], vectors: np.ndarray) -> int:
        """Add records with their vectors; ids already present are skipped. Durable on return."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if len(records) != len(vectors):
            raise MmedragError(f"add: {len(records)} records but {len(vectors)} vectors")
        if not records:
            return 0
        if vectors.ndim != 2 or vectors.shape[1] != self.dim:
            raise MmedragError(f"add: vectors are {vectors.shape[-1]}-d, store is {self.dim}-d")
        present = self.has([r.id for r in records])
        rows, seen = [], set(present)
        for record, vector in zip(records, vectors):
            if record.id in seen:
                continue
            seen.add(record.id)
            rows.append(self._row(record, vector))
        if rows:
            self._client.insert(self.collection, rows)
        return len(rows)

    def _row(self, record: Record, vector: np.ndarray) -> dict[str, Any]:
        data = json.dumps(record.to_dict(), ensure_ascii=False)
        if len(record.id.encode()) > _MAX_ID:
            raise InputError(f"id longer than {_MAX_ID} bytes", field="id")
        if len(data.encode()) > _MAX_VARCHAR:
            raise InputError(f"record {record.id}: {len(data.encode())} bytes of JSON exceed "
                             f"Milvus' {_MAX_VARCHAR}-byte limit; chunk the text", field="text")
        meta = {k: v for k, v in record.meta.items() if isinstance(v, (str, int, float, bool))}
        return {"id": record.id, "vector": vector.tolist(), "domain": record.domain,
                "meta": meta, "data": data}

    def delete(self, ids: list[str]) -> int:
        present = sorted(self.has(ids))
        for start in range(0, len(present), _CHUNK):
            self._client.delete(self.collection, ids=present[start:start + _CHUNK])
        return len(present)

    # -- reads -----------------------------------------------------------------------------
    def _query_ids(self, ids: list[str], fields: list[str]) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        unique = list(dict.fromkeys(ids))
        for start in range(0, len(unique), _CHUNK):
            chunk = unique[start:start + _CHUNK]
            expr = f"id in [{', '.join(_literal(i) for i in chunk)}]"
            rows.extend(self._client.query(self.collection, filter=expr, output_fields=fields))
        return rows

    def has(self, ids: list[str]) -> set[str]:
        return {row["id"] for row in self._query_ids(ids, ["id"])}

    def get(self, ids: list[str]) -> list[Record]:
        """Records for ``ids`` in the given order; unknown ids are left out."""
        found = {row["id"]: Record.from_dict(json.loads(row["data"]))
                 for row in self._query_ids(ids, ["id", "data"])}
        return [found[i] for i in ids if i in found]

    def vectors(self, ids: list[str]) -> np.ndarray:
        """Stored vectors for ``ids`` (unknown ids raise)."""
        found = {row["id"]: row["vector"] for row in self._query_ids(ids, ["id", "vector"])}
        missing = [i for i in ids if i not in found]
        if missing:
            raise MmedragError(f"{self.path}: unknown ids {missing[:5]}")
        return np.asarray([found[i] for i in ids], dtype=np.float32).reshape(len(ids), self.dim)

    def count(self, filters: dict[str, Any] | None = None) -> int:
        expr = filter_expression(filters)
        if expr is None:
            return 0
        rows = self._client.query(self.collection, filter=expr, output_fields=["count(*)"])
        return int(rows[0]["count(*)"]) if rows else 0

    def _iterate(self, fields: list[str], expr: str = "", batch: int = 1000
                 ) -> Iterator[list[dict[str, Any]]]:
        iterator = self._client.query_iterator(self.collection, batch_size=batch, filter=expr,
                                               output_fields=fields)
        try:
            while True:
                rows = iterator.next()
                if not rows:
                    return
                yield rows
        finally:
            iterator.close()

    def iter_records(self, batch: int = 1000) -> Iterator[Record]:
        for rows in self._iterate(["data"], batch=batch):
            for row in rows:
                yield Record.from_dict(json.loads(row["data"]))

    def search(self, vectors: np.ndarray, k: int, filters: dict[str, Any] | None = None,
               exact: bool = False) -> list[list[Hit]]:
        """Top-``k`` hits per query vector, best first (``exact`` scans every vector)."""
        queries = np.ascontiguousarray(np.atleast_2d(vectors), dtype=np.float32)
        if queries.shape[1] != self.dim:
            raise MmedragError(f"search: query vectors are {queries.shape[1]}-d, "
                               f"store is {self.dim}-d")
        expr = filter_expression(filters)
        if expr is None or k <= 0 or not len(queries):
            return [[] for _ in queries]
        k = min(k, 16384)  # Milvus' top-k limit
        if exact:
            return self._exact(queries, k, expr)
        results = self._client.search(
            self.collection, data=queries.tolist(), limit=k, filter=expr,
            output_fields=["data"],
            search_params={"metric_type": "IP", "params": {"ef": max(self.ef_search, k)}})
        return [self._hits([(row["entity"]["data"], row["distance"]) for row in found])
                for found in results]

    def _exact(self, queries: np.ndarray, k: int, expr: str) -> list[list[Hit]]:
        ids: list[str] = []
        chunks: list[np.ndarray] = []
        for rows in self._iterate(["id", "vector"], expr=expr, batch=4096):
            ids.extend(row["id"] for row in rows)
            chunks.append(np.asarray([row["vector"] for row in rows], dtype=np.float32))
        if not ids:
            return [[] for _ in queries]
        scores = queries @ np.concatenate(chunks).T
        k = min(k, len(ids))
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        top_scores = np.take_along_axis(scores, top, axis=1)
        order = np.argsort(-top_scores, axis=1, kind="stable")
        top = np.take_along_axis(top, order, axis=1)
        records = {r.id: r for r in self.get(sorted({ids[j] for row in top for j in row}))}
        out = []
        for row, row_scores in zip(top, np.take_along_axis(top_scores, order, axis=1)):
            pairs = [(records[ids[j]], float(s)) for j, s in zip(row, row_scores)
                     if ids[j] in records]
            out.append([Hit(record=r, score=s, retriever=self.name, rank=n + 1)
                        for n, (r, s) in enumerate(pairs)])
        return out

    def _hits(self, found: list[tuple[str, float]]) -> list[Hit]:
        return [Hit(record=Record.from_dict(json.loads(data)), score=float(score),
                    retriever=self.name, rank=n + 1) for n, (data, score) in enumerate(found)]

    def build_ann(self) -> None:
        """Seal inserted rows into segments and, on Milvus Lite, index them now.

        A server builds segment indexes in the background. Milvus Lite 3.x attaches an HNSW
        index to a segment only when the collection is loaded; segments sealed later are
        searched by brute force (about 50x slower at 20k rows) until the next load, so the
        collection is reloaded here, building the missing indexes synchronously.
        """
        self._client.flush(self.collection)
        if self._lite_path is not None:
            self._client.release_collection(self.collection)
            self._client.load_collection(self.collection)

    # -- closing ---------------------------------------------------------------------------
    def _release_lite(self) -> None:
        if self._lite_path is not None:
            _lite_release(self._lite_path)
            self._lite_path = None

    def close(self) -> None:
        """Close the connection; for Milvus Lite, stop its server when no store uses it."""
        if getattr(self, "_closed", True) and not self._lite_path:
            return
        self._closed = True
        try:
            self._client.close()
        finally:
            self._release_lite()
