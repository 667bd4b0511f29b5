"""The embedded default store: SQLite for records and vectors (the truth), FAISS HNSW for speed.

Durability: every ``add`` is one SQLite transaction (WAL, synchronous=FULL), so a process killed
mid-ingest leaves the last committed batch readable. The HNSW graph is a derived cache saved
atomically beside the database with the sequence number it covers; on open, rows added after it
are appended to the graph, and a graph older than a deletion is rebuilt.

Search is exact (NumPy inner product) when fewer than ``exact_below`` records pass the filters,
for ``exact=True`` and for filters that keep under 2 % of the records; otherwise HNSW with
``ef_search`` (filters applied inside the graph walk). Scores are inner products of
L2-normalised vectors.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from mmedrag.errors import IndexMismatchError, MmedragError, StoreDamaged
from mmedrag.records import Hit, Record
from mmedrag.stores.graph_cache import read_graph, write_graph
from mmedrag.stores.vectors import exact_top_k, filter_mask

_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT UNIQUE NOT NULL,
    domain TEXT NOT NULL DEFAULT '',
    data TEXT NOT NULL,
    vec BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value TEXT);
"""
_RESERVED = frozenset({"id", "text", "image", "domain", "title"})


def _digest(vector: np.ndarray) -> bytes:
    """128-bit digest of a vector's bytes (the key of its copies; 16 bytes, not 4·dim)."""
    return hashlib.blake2b(vector.tobytes(), digest_size=16).digest()


class EmbeddedStore:
    """Durable vector store in a folder, no server needed.

    Example:
        >>> import tempfile, numpy as np
        >>> store = EmbeddedStore(tempfile.mkdtemp(), dim=2)
        >>> store.add([Record(id="a", text="x")], np.array([[1.0, 0.0]], "float32"))
        1
        >>> store.search(np.array([[1.0, 0.0]], "float32"), k=1)[0][0].id
        'a'
    """

    def __init__(self, path: str | Path, dim: int, m: int = 32, ef_construction: int = 200,
                 ef_search: int = 128, exact_below: int = 5000, name: str = "embedded",
                 read_only: bool = False, must_exist: bool = False) -> None:
        self.path = Path(path)
        self.read_only = read_only
        db = self.path / "store.sqlite"
        if (must_exist or read_only) and (not db.is_file() or db.stat().st_size == 0):
            state = "is empty (0 bytes)" if db.is_file() else "is missing"
            raise StoreDamaged(f"{db}: store file {state}", path=str(db))
        self.path.mkdir(parents=True, exist_ok=True)
        self.dim = int(dim)
        self.m = m
        self.ef_construction = ef_construction
        self.ef_search = ef_search
        self.exact_below = exact_below
        self.name = name
        self._lock = threading.RLock()
        self._rep_cache: np.ndarray | None = None
        try:
            self._db = self._connect(db)
            stored_dim = self._state("dim")
            self._db.execute("SELECT COUNT(*) FROM records").fetchone()
        except sqlite3.DatabaseError as exc:
            raise StoreDamaged(f"{db}: corrupt store ({exc})", path=str(db)) from None
        if stored_dim is None and not read_only:
            self._set_state("dim", str(self.dim))
            self._db.commit()
        elif stored_dim is not None and int(stored_dim) != self.dim:
            self._db.close()
            raise IndexMismatchError(
                f"{self.path}: store holds {stored_dim}-d vectors, opened with {self.dim}")
        self._loaded = False
        self._ann: Any = None
        self._ann_covers = 0  # number of in-memory rows the graph holds
        self._ann_dirty = False  # graph holds rows its saved copy lacks

    def _connect(self, db: Path) -> sqlite3.Connection:
        if self.read_only:  # a reader never writes: no schema, no journal-mode change
            conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, check_same_thread=False,
                                   timeout=30)
            conn.execute("PRAGMA query_only=ON")
            return conn
        conn = sqlite3.connect(str(db), check_same_thread=False, timeout=30)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.executescript(_SCHEMA)
        return conn

    def refresh(self) -> int:
        """Pick up rows committed by another process; returns how many arrived (a delete
        elsewhere reloads everything on the next read)."""
        with self._lock:
            if not self._loaded:
                return 0
            if (self._state("delete_epoch") or "0") != self._epoch:
                self._loaded, self._ann = False, None
                return 0
            before = len(self._ids)
            self._load_rows(after_seq=self._max_seq)
            return len(self._ids) - before

    # -- state -----------------------------------------------------------------------------
    def _state(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM state WHERE key=?", (key,)).fetchone()
        return row[0] if row else None

    def _set_state(self, key: str, value: str) -> None:
        self._db.execute("INSERT OR REPLACE INTO state VALUES (?, ?)", (key, value))

    # -- writes ----------------------------------------------------------------------------
    def add(self, records: list[Record], vectors: np.ndarray) -> int:
        """Add records with their vectors; ids already present are skipped. Durable on return."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if len(records) != len(vectors):
            raise MmedragError(f"add: {len(records)} records but {len(vectors)} vectors")
        if len(records) and (vectors.ndim != 2 or vectors.shape[1] != self.dim):
            raise MmedragError(f"add: vectors are {vectors.shape[-1]}-d, store is {self.dim}-d")
        with self._lock:
            before = self._db.total_changes
            with self._db:  # one transaction
                self._db.executemany(
                    "INSERT OR IGNORE INTO records (id, domain, data, vec) VALUES (?, ?, ?, ?)",
                    [(r.id, r.domain, json.dumps(r.to_dict(), ensure_ascii=False), v.tobytes())
                     for r, v in zip(records, vectors)])
            added = self._db.total_changes - before
            if self._loaded and added:
                self._load_rows(after_seq=self._max_seq)
            return added

    def delete(self, ids: list[str]) -> int:
        with self._lock:
            with self._db:
                marks = ",".join("?" * len(ids))
                cur = (self._db.execute(f"DELETE FROM records WHERE id IN ({marks})", ids)
                       if ids else None)
                removed = cur.rowcount if cur else 0
                if removed:
                    epoch = int(self._state("delete_epoch") or 0) + 1
                    self._set_state("delete_epoch", str(epoch))
            if removed:
                self._loaded = False
                self._ann = None
            return removed

    # -- reads -----------------------------------------------------------------------------
    def count(self, filters: dict[str, Any] | None = None) -> int:
        with self._lock:
            if not filters:
                return int(self._db.execute("SELECT COUNT(*) FROM records").fetchone()[0])
            self._ensure_loaded()
            return int(filter_mask(self._fields, len(self._ids), filters).sum())

    def get(self, ids: list[str]) -> list[Record]:
        """Records for ``ids`` in the given order; unknown ids are left out."""
        found: dict[str, Record] = {}
        with self._lock:
            for start in range(0, len(ids), 500):
                chunk = ids[start:start + 500]
                marks = ",".join("?" * len(chunk))
                for rid, data in self._db.execute(
                        f"SELECT id, data FROM records WHERE id IN ({marks})", chunk):
                    found[rid] = Record.from_dict(json.loads(data))
        return [found[i] for i in ids if i in found]

    def has(self, ids: list[str]) -> set[str]:
        present: set[str] = set()
        with self._lock:
            for start in range(0, len(ids), 500):
                chunk = ids[start:start + 500]
                marks = ",".join("?" * len(chunk))
                present.update(r[0] for r in self._db.execute(
                    f"SELECT id FROM records WHERE id IN ({marks})", chunk))
        return present

    def vectors(self, ids: list[str]) -> np.ndarray:
        """Stored vectors for ``ids`` (unknown ids raise)."""
        with self._lock:
            self._ensure_loaded()
            missing = [i for i in ids if i not in self._row_of]
            if missing:
                raise MmedragError(f"{self.path}: unknown ids {missing[:5]}")
            rows = [self._row_of[i] for i in ids]
            return self._matrix()[rows]

    def iter_records(self, batch: int = 1000) -> Iterator[Record]:
        last = 0
        while True:
            with self._lock:
                rows = self._db.execute("SELECT seq, data FROM records WHERE seq > ? ORDER BY seq "
                                        "LIMIT ?", (last, batch)).fetchall()
            if not rows:
                return
            for _, data in rows:
                yield Record.from_dict(json.loads(data))
            last = rows[-1][0]

    def search(self, vectors: np.ndarray, k: int, filters: dict[str, Any] | None = None,
               exact: bool = False) -> list[list[Hit]]:
        """Top-``k`` hits per query vector, best first."""
        queries = np.ascontiguousarray(np.atleast_2d(vectors), dtype=np.float32)
        if queries.shape[1] != self.dim:
            raise MmedragError(f"search: query vectors are {queries.shape[1]}-d, "
                               f"store is {self.dim}-d")
        with self._lock:
            self._ensure_loaded()
            n = len(self._ids)
            if n == 0 or k <= 0:
                return [[] for _ in queries]
            mask = filter_mask(self._fields, len(self._ids), filters) if filters else None
            allowed = int(mask.sum()) if mask is not None else n
            if allowed == 0:
                return [[] for _ in queries]
            # few candidates: brute force is fast and exact; a filter that rejects almost
            # everything also makes filtered HNSW walks slow and lossy
            use_exact = exact or allowed < self.exact_below or allowed < n // 50
            if use_exact:
                rows, scores = exact_top_k(queries, self._matrix(), k, mask)
            else:
                rows, scores = self._approximate(queries, k, mask)
            wanted = sorted({self._ids[r] for row in rows for r in row if r >= 0})
        records = {r.id: r for r in self.get(wanted)}
        results = []
        for row, score in zip(rows, scores):
            hits: list[Hit] = []
            for r, s in zip(row, score):
                if r < 0 or self._ids[r] not in records:
                    continue
                hits.append(Hit(record=records[self._ids[r]], score=float(s), retriever=self.name,
                                rank=len(hits) + 1))
            results.append(hits)
        return results

    # -- internals -------------------------------------------------------------------------
    def _approximate(self, queries: np.ndarray, k: int, mask: np.ndarray | None
                     ) -> tuple[np.ndarray, np.ndarray]:
        """HNSW search over distinct vectors; each hit is expanded to the rows that share its
        vector (boilerplate passages repeat hundreds of times in real corpora; as graph nodes,
        such copies trap the greedy search — MedQuAD's 41k chunks lost 6 % recall@10)."""
        import faiss

        index = self._graph()
        params = faiss.SearchParametersHNSW()  # type: ignore[attr-defined]
        params.efSearch = max(self.ef_search, k)
        rep_of = self._rep_array()
        if mask is not None:
            reps = np.unique(rep_of[mask])
            params.sel = faiss.IDSelectorBatch(reps.astype(np.int64))
        scores, nodes = index.search(queries, k, params=params)
        rows = np.full((len(queries), k), -1, dtype=np.int64)
        out = np.zeros((len(queries), k), dtype=np.float32)
        for q in range(len(queries)):
            filled = 0
            for node, score in zip(nodes[q], scores[q], strict=True):
                if node < 0 or filled == k:
                    continue
                for row in (int(node), *self._copies.get(int(node), ())):
                    if filled < k and (mask is None or mask[row]):
                        rows[q, filled], out[q, filled] = row, score
                        filled += 1
        return rows, out

    def _rep_array(self) -> np.ndarray:
        if self._rep_cache is None or len(self._rep_cache) != len(self._rep_of):
            self._rep_cache = np.asarray(self._rep_of, dtype=np.int64)
        return self._rep_cache

    def _add_to_graph(self, start: int) -> None:
        """Put rows ``start:`` of the matrix in the graph (copies of a node join the node)."""
        rows = self._track_copies(start, len(self._ids))
        if rows and self._ann is not None:
            self._ann.add_with_ids(self._matrix()[rows], np.asarray(rows, dtype=np.int64))

    def _track_copies(self, start: int, stop: int) -> list[int]:
        """Map rows ``start:stop`` to the first row with the same vector; return the rows that
        are new graph nodes (the others become their node's copies)."""
        matrix = self._matrix()
        nodes = []
        for row in range(start, stop):
            first = self._first_of.setdefault(_digest(matrix[row]), row)
            self._rep_of.append(first)
            if first == row:
                nodes.append(row)
            else:
                self._copies.setdefault(first, []).append(row)
        return nodes

    def _graph(self) -> Any:
        import faiss

        if self._ann is None:
            self._ann = self._load_graph()
        if self._ann_covers < len(self._ids):
            self._add_to_graph(self._ann_covers)
            self._ann_covers = len(self._ids)
            self._ann_dirty = True
        assert isinstance(self._ann, faiss.Index)
        return self._ann

    def _load_graph(self) -> Any:
        import faiss

        epoch = self._state("delete_epoch") or "0"
        self._first_of: dict[bytes, int] = {}
        self._rep_of: list[int] = []
        self._copies: dict[int, list[int]] = {}
        self._rep_cache = None
        saved = read_graph(self.path, {"epoch": epoch, "m": self.m, "dim": self.dim})
        # the graph file is replaced before its sidecar: a crash between the two leaves
        # counts that disagree, and the graph is rebuilt rather than trusted
        rows = int(saved[1].get("rows", -1)) if saved else -1
        if saved is not None and 0 <= rows <= len(self._ids):
            self._track_copies(0, rows)  # the loaded graph holds these rows' nodes
            if saved[0].ntotal == len(self._first_of):
                self._ann_covers = rows
                return saved[0]
            self._first_of, self._rep_of, self._copies = {}, [], {}
        index = faiss.IndexIDMap2(faiss.IndexHNSWFlat(self.dim, self.m,
                                                      faiss.METRIC_INNER_PRODUCT))
        hnsw = faiss.downcast_index(index.index).hnsw  # type: ignore[attr-defined]
        hnsw.efConstruction = self.ef_construction
        self._ann_covers = 0
        return index

    def save_graph(self) -> None:
        """Persist the HNSW graph atomically (a cache: losing it only costs a rebuild)."""
        if self._ann is None or self.read_only:
            return
        write_graph(self.path, self._ann, {"rows": self._ann_covers, "m": self.m,
                                           "epoch": self._state("delete_epoch") or "0"})
        self._ann_dirty = False

    def build_ann(self) -> None:
        """Build (or catch up) the HNSW graph now rather than at the first large search."""
        with self._lock:
            self._ensure_loaded()
            if len(self._ids) >= self.exact_below:
                self._graph()
                if self._ann_dirty:
                    self.save_graph()

    def _ensure_loaded(self) -> None:
        if not self._loaded:
            self._ids: list[str] = []
            self._row_of: dict[str, int] = {}
            self._chunks: list[np.ndarray] = []
            self._cached: np.ndarray | None = None
            self._fields: dict[str, list[Any]] = {"domain": []}
            self._max_seq = 0
            self._epoch = self._state("delete_epoch") or "0"
            self._load_rows(after_seq=0)
            self._loaded = True

    def _load_rows(self, after_seq: int) -> None:
        cursor = self._db.execute(
            "SELECT seq, id, data, vec FROM records WHERE seq > ? ORDER BY seq", (after_seq,))
        vecs = []
        for seq, rid, data, blob in cursor:
            record = json.loads(data)
            self._row_of[rid] = len(self._ids)
            self._ids.append(rid)
            n = len(self._ids)
            self._fields["domain"].append(record.get("domain", ""))
            for key, value in (record.get("meta") or {}).items():
                if key not in _RESERVED and isinstance(value, (str, int, float, bool)):
                    column = self._fields.setdefault(key, [None] * (n - 1))
                    column.append(value)
            for column in self._fields.values():
                if len(column) < n:
                    column.append(None)
            vecs.append(np.frombuffer(blob, dtype=np.float32))
            self._max_seq = seq
        if vecs:
            self._chunks.append(np.stack(vecs))
            self._cached = None

    def _matrix(self) -> np.ndarray:
        if self._cached is None:
            self._cached = (np.concatenate(self._chunks) if self._chunks
                            else np.zeros((0, self.dim), dtype=np.float32))
            self._chunks = [self._cached]
        return self._cached

    def close(self) -> None:
        """Save a grown HNSW graph and close the database (closing twice is harmless)."""
        with self._lock:
            if self._ann is not None and self._ann_dirty:
                self.save_graph()
            self._db.close()
