"""The embedded default store: SQLite for records (the commit point), a memory-mapped vector
file for vectors, and a FAISS index chosen by size (``stores/ann.py``) for speed.

Durability: every ``add`` first writes and fsyncs the batch's vectors at the rows the new
records will take (row = SQLite ``seq`` - 1, ``stores/vector_file.py``), then commits the
records in one SQLite transaction (WAL, synchronous=FULL): a process killed mid-ingest leaves
the last committed batch whole, and uncommitted rows past it are overwritten by the next batch.
The ANN index is a derived cache saved atomically beside the database with the rows it covers;
on open, rows added after it are appended, and an index older than a deletion is rebuilt (the
IVF-PQ kind removes deleted rows in place and is saved again).

Memory: vectors are never loaded whole. Per row the store keeps one alive flag and one int32
domain code in RAM; record ids, texts and metadata stay in SQLite and are read for the hits.
Metadata filter columns are read on first use (one SQLite pass) and kept up to date.

Search is exact (inner product over the memory-mapped rows) when fewer than ``exact_below``
records pass the filters, for ``exact=True``, for filters that keep under 2 % of the records,
and for the ``flat`` kind; otherwise the ANN index (filters applied inside the search). Scores
are inner products of L2-normalised vectors.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from mmedrag.errors import IndexMismatchError, MmedragError, StoreDamaged
from mmedrag.records import Hit, Record
from mmedrag.stores import ann as ann_kinds
from mmedrag.stores.ann import AnnParams
from mmedrag.stores.graph_cache import cache_files, read_graph, write_graph
from mmedrag.stores.vector_file import VectorFile

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
_BLOCK = 262_144  # rows per block of an exact scan


def _digest(vector: np.ndarray) -> bytes:
    """128-bit digest of a vector's bytes (the key of its copies; 16 bytes, not 4·dim)."""
    return hashlib.blake2b(np.ascontiguousarray(vector).tobytes(), digest_size=16).digest()


class _Codes:
    """A column of small-integer codes over the vector-file rows (value -1: none)."""

    def __init__(self) -> None:
        self.codes = np.zeros(0, dtype=np.int32)
        self.vocab: dict[Any, int] = {}

    def code(self, value: Any) -> int:
        if value is None:
            return -1
        return self.vocab.setdefault(value, len(self.vocab))

    def put(self, rows: np.ndarray, values: list[Any], size: int) -> None:
        if len(self.codes) < size:
            grown = np.full(max(size, 2 * len(self.codes)), -1, dtype=np.int32)
            grown[:len(self.codes)] = self.codes
            self.codes = grown
        self.codes[rows] = [self.code(v) for v in values]

    def mask(self, allowed: Any, size: int) -> np.ndarray:
        values = allowed if isinstance(allowed, (list, tuple, set)) else [allowed]
        wanted = [self.vocab[v] for v in values if v in self.vocab]
        if self.vocab and any(v is None for v in values):
            wanted.append(-1)  # None: rows without a value (a key some record has)
        column = self.codes[:size]
        if len(column) < size:
            column = np.concatenate([column, np.full(size - len(column), -1, np.int32)])
        return np.isin(column, wanted) if wanted else np.zeros(size, dtype=bool)


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
                 read_only: bool = False, must_exist: bool = False, kind: str = "auto",
                 vector_dtype: str = "float32", lists: int = 0, pq_m: int = 0,
                 nprobe: int = 32, rerank: int = 200, ivf_above: int = 1_000_000,
                 train_sample: int = 0, pq_bits: int = 8) -> None:
        self.path = Path(path)
        self.read_only = read_only
        db = self.path / "store.sqlite"
        if (must_exist or read_only) and (not db.is_file() or db.stat().st_size == 0):
            state = "is empty (0 bytes)" if db.is_file() else "is missing"
            raise StoreDamaged(f"{db}: store file {state}", path=str(db))
        self.path.mkdir(parents=True, exist_ok=True)
        self.dim = int(dim)
        self.kind = ann_kinds.check_kind(kind)
        self.params = AnnParams(m=m, ef_construction=ef_construction, ef_search=ef_search,
                                lists=lists, pq_m=pq_m, pq_bits=pq_bits, nprobe=nprobe,
                                rerank=rerank, ivf_above=ivf_above, train_sample=train_sample)
        self.m, self.ef_construction, self.ef_search = m, ef_construction, ef_search
        self.exact_below = exact_below
        self.name = name
        self._lock = threading.RLock()
        try:
            self._db = self._connect(db)
            stored_dim = self._state("dim")
            stored_dtype = self._state("vector_dtype")
            self._db.execute("SELECT COUNT(*) FROM records").fetchone()
        except sqlite3.DatabaseError as exc:
            raise StoreDamaged(f"{db}: corrupt store ({exc})", path=str(db)) from None
        if stored_dim is not None and int(stored_dim) != self.dim:
            self._db.close()
            raise IndexMismatchError(
                f"{self.path}: store holds {stored_dim}-d vectors, opened with {self.dim}")
        legacy = self._state("vectors") != "file" and self._has_rows()
        if stored_dtype is not None and stored_dtype != vector_dtype and not legacy:
            self._db.close()
            raise IndexMismatchError(f"{self.path}: store keeps {stored_dtype} vectors, "
                                     f"opened with vector_dtype={vector_dtype}")
        self.vector_dtype = vector_dtype
        if legacy and read_only:
            self._db.close()
            raise StoreDamaged(f"{db}: built by an older mmedrag (vectors inside SQLite); open "
                               f"it once for writing to move them to a vector file", path=str(db))
        self._file = VectorFile(self.path, self.dim, vector_dtype, read_only=read_only)
        if not read_only and (stored_dim is None or legacy or stored_dtype is None):
            if legacy:
                self._migrate_legacy()
            self._set_state("dim", str(self.dim))
            self._set_state("vector_dtype", vector_dtype)
            self._set_state("vectors", "file")
            self._db.commit()
        self._file.check(self._committed_rows())
        self._loaded = False
        self._ann: Any = None
        self._ann_kind = ""
        self._ann_covers = 0  # vector-file rows the ANN index has seen
        self._ann_dirty = False  # the index holds rows (or removals) its saved copy lacks

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

    def _has_rows(self) -> bool:
        return self._db.execute("SELECT 1 FROM records LIMIT 1").fetchone() is not None

    def _committed_rows(self) -> int:
        """Vector-file rows the committed records reach (the largest seq)."""
        row = self._db.execute("SELECT MAX(seq) FROM records").fetchone()
        return int(row[0] or 0)

    def _next_seq(self) -> int:
        """The seq the next record takes; never at or below a committed one (a lost or lagging
        ``sqlite_sequence`` row must not place a batch's vectors over committed rows)."""
        row = self._db.execute("SELECT seq FROM sqlite_sequence WHERE name='records'").fetchone()
        return max(int(row[0]) + 1 if row else 1, self._committed_rows() + 1)

    def _migrate_legacy(self) -> None:
        """Move vectors stored inside SQLite (mmedrag ≤ 0.4) to the vector file, once."""
        last = 0
        while True:
            rows = self._db.execute("SELECT seq, vec FROM records WHERE seq > ? ORDER BY seq "
                                    "LIMIT 4096", (last,)).fetchall()
            if not rows:
                break
            # one write (one fsync) per run of consecutive seqs, not per row
            seqs = np.fromiter((seq for seq, _ in rows), dtype=np.int64, count=len(rows))
            breaks = np.flatnonzero(np.diff(seqs) != 1) + 1
            for run in np.split(np.arange(len(rows)), breaks):
                block = np.stack([np.frombuffer(rows[i][1], np.float32) for i in run.tolist()])
                self._file.write(int(seqs[run[0]]) - 1, block)
            last = rows[-1][0]
        with self._db:
            self._db.execute("UPDATE records SET vec = x''")
            self._set_state("vectors", "file")

    def refresh(self) -> int:
        """Pick up rows committed by another process; returns how many arrived (a delete
        elsewhere reloads everything on the next read)."""
        with self._lock:
            if not self._loaded:
                return 0
            if (self._state("delete_epoch") or "0") != self._epoch:
                self._loaded = False
                self._ann = None
                return 0
            before = self._alive_count
            self._load_rows(after_seq=self._max_seq)
            return self._alive_count - before

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
            present = self.has([r.id for r in records])
            keep: list[int] = []
            for i, record in enumerate(records):
                if record.id not in present:
                    present.add(record.id)
                    keep.append(i)
            if not keep:
                return 0
            first = self._next_seq()
            self._file.write(first - 1, vectors[keep])  # fsynced before the records commit
            with self._db:  # one transaction: the commit point
                self._db.executemany(
                    "INSERT INTO records (seq, id, domain, data, vec) VALUES (?, ?, ?, ?, x'')",
                    [(first + j, records[i].id, records[i].domain,
                      json.dumps(records[i].to_dict(), ensure_ascii=False))
                     for j, i in enumerate(keep)])
            if self._loaded:
                self._load_rows(after_seq=self._max_seq)
            return len(keep)

    def delete(self, ids: list[str]) -> int:
        with self._lock:
            rows = self._rows_of(ids)
            with self._db:
                marks = ",".join("?" * len(ids))
                cur = (self._db.execute(f"DELETE FROM records WHERE id IN ({marks})", ids)
                       if ids else None)
                removed = cur.rowcount if cur else 0
                if removed:
                    epoch = int(self._state("delete_epoch") or 0) + 1
                    self._set_state("delete_epoch", str(epoch))
            if removed:
                if self._loaded and self._ann is not None and self._ann_kind == "ivfpq":
                    # IVF lists drop rows in place; the saved copy is updated at build_ann
                    self._ann.remove_ids(np.asarray(sorted(rows.values()), dtype=np.int64))
                    self._ann_dirty = True
                    self._alive[list(rows.values())] = False
                    self._alive_count = int(self._alive[:self._rows].sum())
                    self._epoch = self._state("delete_epoch") or "0"
                else:
                    self._loaded = False
                    self._ann = None
            return removed

    # -- reads -----------------------------------------------------------------------------
    def count(self, filters: dict[str, Any] | None = None) -> int:
        with self._lock:
            if not filters and self._loaded:
                return self._alive_count  # what search sees (refresh() brings in new rows)
            if not filters:
                return int(self._db.execute("SELECT COUNT(*) FROM records").fetchone()[0])
            self._ensure_loaded()
            return int(self._mask(filters).sum())

    def domain_counts(self) -> dict[str, int]:
        """Records per domain."""
        with self._lock:
            return {domain: int(n) for domain, n in self._db.execute(
                "SELECT domain, COUNT(*) FROM records GROUP BY domain")}

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

    def _rows_of(self, ids: list[str]) -> dict[str, int]:
        """Vector-file row of each known id."""
        rows: dict[str, int] = {}
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            marks = ",".join("?" * len(chunk))
            rows.update((rid, seq - 1) for rid, seq in self._db.execute(
                f"SELECT id, seq FROM records WHERE id IN ({marks})", chunk))
        return rows

    def vectors(self, ids: list[str]) -> np.ndarray:
        """Stored vectors for ``ids`` (unknown ids raise)."""
        with self._lock:
            rows = self._rows_of(ids)
            missing = [i for i in ids if i not in rows]
            if missing:
                raise MmedragError(f"{self.path}: unknown ids {missing[:5]}")
            return self._file.rows([rows[i] for i in ids])

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
            n = self._alive_count
            if n == 0 or k <= 0:
                return [[] for _ in queries]
            mask = self._mask(filters) if filters else None
            allowed = int(mask.sum()) if mask is not None else n
            if allowed == 0:
                return [[] for _ in queries]
            # few candidates: brute force is fast and exact; a filter that rejects almost
            # everything also makes filtered ANN searches slow and lossy
            kind = self.active_kind()
            use_exact = (exact or kind == "flat" or allowed < self.exact_below
                         or allowed < n // 50)
            if use_exact:
                rows, scores = self._exact(queries, k, mask if mask is not None
                                           else self._alive_mask())
            elif kind == "ivfpq":
                rows, scores = self._ivf(queries, k, mask)
            else:
                rows, scores = self._hnsw(queries, k, mask)
            records = self._records_at({int(r) for row in rows for r in row if r >= 0})
        results = []
        for row, score in zip(rows, scores):
            hits: list[Hit] = []
            for r, s in zip(row, score):
                record = records.get(int(r))
                if record is None:
                    continue
                hits.append(Hit(record=record, score=float(s), retriever=self.name,
                                rank=len(hits) + 1))
            results.append(hits)
        return results

    def _records_at(self, rows: set[int]) -> dict[int, Record]:
        found: dict[int, Record] = {}
        wanted = sorted(r + 1 for r in rows)
        for start in range(0, len(wanted), 500):
            chunk = wanted[start:start + 500]
            marks = ",".join("?" * len(chunk))
            for seq, data in self._db.execute(
                    f"SELECT seq, data FROM records WHERE seq IN ({marks})", chunk):
                found[seq - 1] = Record.from_dict(json.loads(data))
        return found

    # -- exact search ----------------------------------------------------------------------
    def _exact(self, queries: np.ndarray, k: int, mask: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray]:
        """Brute force over the allowed rows: gathered when few, blockwise otherwise."""
        allowed = np.flatnonzero(mask)
        k = min(k, len(allowed))
        if len(allowed) * 4 < self._rows:
            rows_parts, score_parts = [], []
            for start in range(0, len(allowed), _BLOCK):
                subset = allowed[start:start + _BLOCK]
                scores = queries @ self._file.rows(subset).T
                top = _top_k(scores, k)
                rows_parts.append(subset[top])
                score_parts.append(np.take_along_axis(scores, top, axis=1))
            return _merge(rows_parts, score_parts, k)
        view = self._file.view(self._rows)
        rows_parts, score_parts = [], []
        for start in range(0, self._rows, _BLOCK):
            block = np.asarray(view[start:start + _BLOCK], dtype=np.float32)
            scores = queries @ block.T
            scores[:, ~mask[start:start + len(block)]] = -np.inf
            top = _top_k(scores, min(k, scores.shape[1]))
            rows_parts.append(top + start)
            score_parts.append(np.take_along_axis(scores, top, axis=1))
        rows, scores = _merge(rows_parts, score_parts, k)
        rows[~np.isfinite(scores)] = -1
        return rows, scores

    # -- masks -----------------------------------------------------------------------------
    def _alive_mask(self) -> np.ndarray:
        return self._alive[:self._rows]

    def _mask(self, filters: dict[str, Any]) -> np.ndarray:
        """Boolean mask over the vector-file rows of live records passing every filter."""
        mask = self._alive_mask().copy()
        for key, allowed in filters.items():
            column = self._column(key)
            if column is None:
                return np.zeros(self._rows, dtype=bool)
            mask &= column.mask(allowed, self._rows)
        return mask

    def _column(self, key: str) -> _Codes | None:
        if key == "domain":
            return self._domain
        if key in _RESERVED:
            return None
        if key not in self._meta_columns:
            column = _Codes()
            seqs, values = [], []
            # a JSON-path label matches the key as stored: keys that JSON escapes ('"', '\\',
            # control characters) are read from the meta objects instead
            by_path = json.dumps(key, ensure_ascii=False)[1:-1] == key
            if not by_path:
                for seq, meta in self._db.execute(
                        "SELECT seq, json_extract(data, '$.meta') FROM records WHERE seq <= ?",
                        (self._max_seq,)):
                    value = json.loads(meta).get(key) if meta else None
                    if isinstance(value, (str, int, float, bool)):
                        seqs.append(seq - 1)
                        values.append(value)
            path = f'$.meta."{key}"'
            for seq, kind, value in (() if not by_path else self._db.execute(
                    "SELECT seq, json_type(data, ?), json_extract(data, ?) FROM records "
                    "WHERE seq <= ?", (path, path, self._max_seq))):
                if kind in ("text", "integer", "real", "true", "false"):
                    seqs.append(seq - 1)
                    values.append(bool(value) if kind in ("true", "false") else value)
            column.put(np.asarray(seqs, dtype=np.int64), values, self._rows)
            self._meta_columns[key] = column
        return self._meta_columns[key]

    # -- HNSW ------------------------------------------------------------------------------
    def _hnsw(self, queries: np.ndarray, k: int, mask: np.ndarray | None
              ) -> tuple[np.ndarray, np.ndarray]:
        """HNSW search over distinct vectors; each hit is expanded to the rows that share its
        vector (boilerplate passages repeat hundreds of times in real corpora; as graph nodes,
        such copies trap the greedy search — MedQuAD's 41k chunks lost 6 % recall@10)."""
        import faiss

        index = self._index()
        params = faiss.SearchParametersHNSW()  # type: ignore[attr-defined]
        params.efSearch = max(self.ef_search, k)
        if mask is not None:
            reps = np.unique(self._rep_of[:self._rows][mask])
            params.sel = faiss.IDSelectorBatch(reps[reps >= 0].astype(np.int64))
        scores, nodes = index.search(queries, k, params=params)
        alive = self._alive_mask()
        rows = np.full((len(queries), k), -1, dtype=np.int64)
        out = np.zeros((len(queries), k), dtype=np.float32)
        for q in range(len(queries)):
            filled = 0
            for node, score in zip(nodes[q], scores[q], strict=True):
                if node < 0 or filled == k:
                    continue
                for row in (int(node), *self._copies.get(int(node), ())):
                    if filled < k and alive[row] and (mask is None or mask[row]):
                        rows[q, filled], out[q, filled] = row, score
                        filled += 1
        return rows, out

    def _track_copies(self, rows: np.ndarray, vectors: np.ndarray) -> list[int]:
        """Map ``rows`` to the first row with the same vector; return the rows that are new
        graph nodes (the others become their node's copies)."""
        nodes = []
        for row, vector in zip(rows.tolist(), vectors):
            first = self._first_of.setdefault(_digest(vector), row)
            self._rep_of[row] = first
            if first == row:
                nodes.append(row)
            else:
                self._copies.setdefault(first, []).append(row)
        return nodes

    # -- IVF-PQ ----------------------------------------------------------------------------
    def _ivf(self, queries: np.ndarray, k: int, mask: np.ndarray | None
             ) -> tuple[np.ndarray, np.ndarray]:
        """IVF-PQ candidates, re-scored exactly from the vector file."""
        index = self._index()
        depth = max(self.params.rerank, k)
        bitmap = ann_kinds.packed(mask) if mask is not None else None
        params = ann_kinds.ivf_search_params(index, self.params.nprobe, bitmap)
        _, candidates = index.search(queries, depth, params=params)
        rows = np.full((len(queries), k), -1, dtype=np.int64)
        out = np.full((len(queries), k), -np.inf, dtype=np.float32)
        for q in range(len(queries)):
            found = candidates[q][candidates[q] >= 0]
            if not len(found):
                continue
            order = np.argsort(found)  # ascending rows: sequential-ish reads of the file
            found = found[order]
            exact = self._file.rows(found) @ queries[q]
            best = np.argsort(-exact, kind="stable")[:k]
            rows[q, :len(best)], out[q, :len(best)] = found[best], exact[best]
        return rows, out

    # -- the ANN index ---------------------------------------------------------------------
    def active_kind(self) -> str:
        """The kind this store searches with at its present size."""
        rows = self._alive_count if self._loaded else self.count()
        return ann_kinds.resolve_kind(self.kind, rows, self.params)

    def _expect(self, kind: str) -> dict[str, Any]:
        expect: dict[str, Any] = {"epoch": self._state("delete_epoch") or "0", "dim": self.dim,
                                  "kind": kind}
        if kind == "hnsw":
            expect["m"] = self.m
        else:
            expect.update(lists=ann_kinds.ivf_lists(self._alive_count, self.params)
                          if not self.params.lists else self.params.lists,
                          pq_m=ann_kinds.pq_bytes(self.dim, self.params),
                          pq_bits=self.params.pq_bits)
        return expect

    def _index(self) -> Any:
        kind = self.active_kind()
        if self._ann is None or self._ann_kind != kind:
            self._ann = self._load_index(kind)
            self._ann_kind = kind
        if self._ann_covers < self._rows:
            self._add_rows(self._ann_covers, self._rows)
            self._ann_covers = self._rows
            self._ann_dirty = True
        return self._ann

    def _load_index(self, kind: str) -> Any:
        self._first_of: dict[bytes, int] = {}
        # node of each row (HNSW only: IVF-PQ keeps no per-row map, 8 bytes a row at 10M rows)
        self._rep_of = np.full(len(self._alive) if kind == "hnsw" else 0, -1, dtype=np.int64)
        self._copies: dict[int, list[int]] = {}
        saved = self._read_saved(kind)
        if saved is not None:
            return saved
        self._ann_covers = 0
        if kind == "hnsw":
            return ann_kinds.new_hnsw(self.dim, self.params)
        return self._train_ivf()

    def _read_saved(self, kind: str) -> Any:
        expect = self._expect(kind)
        if kind == "ivfpq":
            expect.pop("lists")  # the list count was fixed when the index was trained
            # an index older than a deletion drops the deleted rows in place (below), never
            # trained again: a store opened cold by ``mmedrag delete`` keeps its quantizers
            expect.pop("epoch")
        saved = read_graph(self.path, expect, stem=kind)
        # the index file is replaced before its sidecar: a crash between the two leaves
        # counts that disagree, and the index is rebuilt rather than trusted
        rows = int(saved[1].get("rows", -1)) if saved else -1
        if saved is None or not 0 <= rows <= self._rows:
            return None
        if kind == "hnsw":
            for first, vectors in self._alive_blocks(0, rows):
                self._track_copies(first, vectors)  # the loaded graph holds these nodes
            if saved[0].ntotal != len(self._first_of):
                self._first_of, self._copies = {}, {}
                self._rep_of[:] = -1
                return None
        else:
            if saved[1].get("epoch") != self._expect(kind)["epoch"]:
                dead = np.flatnonzero(~self._alive[:rows]).astype(np.int64)
                if len(dead):
                    saved[0].remove_ids(dead)  # rows are never reused: dead rows only go
                self._ann_dirty = True
            # the index holds a subset of the rows below ``rows``: the same count as the live
            # rows there means exactly the live rows
            if saved[0].ntotal != int(self._alive[:rows].sum()):
                return None
        self._ann_covers = rows
        return saved[0]

    def _alive_blocks(self, start: int, stop: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(rows, float32 vectors) of the live rows in ``start:stop``, block by block."""
        for first, block in self._file.blocks(stop, start=start):
            alive = self._alive[first:first + len(block)]
            rows = np.flatnonzero(alive) + first
            if len(rows):
                yield rows, block[alive]

    def _train_ivf(self) -> Any:
        index = ann_kinds.new_ivfpq(self.dim, self._alive_count, self.params)
        lists = ann_kinds.ivf_lists(self._alive_count, self.params)
        size = ann_kinds.train_size(self._alive_count, lists, self.params)
        live = np.flatnonzero(self._alive_mask())
        sample = np.sort(np.random.default_rng(0).choice(live, size=size, replace=False))
        index.train(self._file.rows(sample))
        return index

    def _add_rows(self, start: int, stop: int) -> None:
        """Put live rows ``start:stop`` in the ANN index (copies of a node join the node)."""
        from tqdm import tqdm

        bar = tqdm(total=stop - start, desc=f"{self._ann_kind} {self.path.name}", unit="vec",
                   disable=None if stop - start > 200_000 else True, file=sys.stderr)
        for rows, vectors in self._alive_blocks(start, stop):
            if self._ann_kind == "hnsw":
                nodes = self._track_copies(rows, vectors)
                if nodes:
                    keep = np.isin(rows, nodes)
                    self._ann.add_with_ids(vectors[keep], rows[keep])
            else:
                self._ann.add_with_ids(vectors, rows)
            bar.update(len(rows))
        bar.close()

    def save_graph(self) -> None:
        """Persist the ANN index atomically (a cache: losing it only costs a rebuild)."""
        if self._ann is None or self.read_only:
            return
        meta = {**self._expect(self._ann_kind), "rows": self._ann_covers}
        if self._ann_kind == "ivfpq":
            import faiss

            meta["lists"] = int(faiss.extract_index_ivf(self._ann).nlist)
        write_graph(self.path, self._ann, meta, stem=self._ann_kind)
        for other in ("hnsw", "ivfpq"):  # a store that changed kind drops the old cache
            if other != self._ann_kind:
                for name in cache_files(other):
                    (self.path / name).unlink(missing_ok=True)
        self._ann_dirty = False

    def build_ann(self) -> None:
        """Build (or catch up) the ANN index now rather than at the first large search."""
        with self._lock:
            self._ensure_loaded()
            if self._alive_count >= self.exact_below and self.active_kind() != "flat":
                self._index()
                if self._ann_dirty:
                    self.save_graph()

    def describe(self) -> dict[str, Any]:
        """Kind, parameters, memory model and bytes on disk (``index.json``, ``mmedrag info``)."""
        rows = self.count()
        kind = ann_kinds.resolve_kind(self.kind, rows, self.params)
        ann_bytes = sum((self.path / name).stat().st_size
                        for name in cache_files(kind) if (self.path / name).exists())
        estimate = ann_kinds.memory_estimate(kind, rows, self.dim, self.params,
                                             self.vector_dtype)
        params = {key: value for key, value in self.params.to_dict().items()
                  if (kind == "hnsw" and key in ("m", "ef_construction", "ef_search"))
                  or (kind == "ivfpq" and key in ("lists", "pq_m", "pq_bits", "nprobe",
                                                   "rerank", "train_sample"))}
        if kind == "ivfpq":
            params["lists"] = self._trained_lists() or ann_kinds.ivf_lists(rows, self.params)
            params["pq_m"] = ann_kinds.pq_bytes(self.dim, self.params)
        return {"kind": kind, "configured_kind": self.kind, "params": params,
                "vector_dtype": self.vector_dtype, "rows": rows,
                "ram_estimate_bytes": estimate["ram_bytes"],
                "vector_file_bytes": self._file.nbytes(), "ann_file_bytes": ann_bytes,
                "exact_below": self.exact_below}

    def _trained_lists(self) -> int:
        """IVF lists of the saved index (fixed when it was trained), 0 when there is none."""
        sidecar = self.path / cache_files("ivfpq")[1]
        try:
            return int(json.loads(sidecar.read_text()).get("lists", 0))
        except (OSError, ValueError, TypeError):
            return 0

    # -- loading ---------------------------------------------------------------------------
    def _ensure_loaded(self) -> None:
        if not self._loaded:
            self._rows = 0  # vector-file rows in use (= largest committed seq)
            self._max_seq = 0
            self._alive = np.zeros(0, dtype=bool)
            self._alive_count = 0
            self._domain = _Codes()
            self._meta_columns: dict[str, _Codes] = {}
            self._epoch = self._state("delete_epoch") or "0"
            self._ann, self._ann_kind, self._ann_covers = None, "", 0
            self._load_rows(after_seq=0)
            self._loaded = True

    def _load_rows(self, after_seq: int) -> None:
        """Read the alive flags and domains of rows after ``after_seq`` (ids and texts stay in
        SQLite), chunk by chunk so that 10M rows never exist as Python objects at once."""
        cursor = self._db.execute("SELECT seq, domain FROM records WHERE seq > ? ORDER BY seq",
                                  (after_seq,))
        top = 0
        while True:
            chunk = cursor.fetchmany(100_000)
            if not chunk:
                break
            rows = np.fromiter((seq for seq, _ in chunk), dtype=np.int64, count=len(chunk)) - 1
            top = int(rows[-1]) + 1
            if len(self._alive) < top:
                self._grow(top)
            self._alive[rows] = True
            self._alive_count += len(rows)
            self._domain.put(rows, [domain for _, domain in chunk], len(self._alive))
        if not top:
            return
        self._file.check(top)
        self._meta_columns.clear()  # re-read on next use (one pass, rare after an ingest)
        self._rows = top
        self._max_seq = top

    def _grow(self, rows: int) -> None:
        size = max(rows, 2 * len(self._alive))
        grown = np.zeros(size, dtype=bool)
        grown[:len(self._alive)] = self._alive
        self._alive = grown
        if self._ann is not None and self._ann_kind == "hnsw":  # the live graph's node map
            rep = np.full(size, -1, dtype=np.int64)
            rep[:len(self._rep_of)] = self._rep_of
            self._rep_of = rep

    def close(self) -> None:
        """Save a grown ANN index and close the database (closing twice is harmless)."""
        with self._lock:
            if self._ann is not None and self._ann_dirty:
                self.save_graph()
            self._file.close()
            self._db.close()


def _top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Column indexes of the ``k`` highest scores per row (unordered)."""
    if k >= scores.shape[1]:
        return np.tile(np.arange(scores.shape[1]), (len(scores), 1))
    return np.argpartition(-scores, k - 1, axis=1)[:, :k]


def _merge(rows_parts: list[np.ndarray], score_parts: list[np.ndarray], k: int
           ) -> tuple[np.ndarray, np.ndarray]:
    """Best ``k`` of several partial top-k lists, best first (stable on ties)."""
    rows = np.concatenate(rows_parts, axis=1)
    scores = np.concatenate(score_parts, axis=1).astype(np.float32)
    order = np.lexsort((rows, -scores), axis=1)[:, :k] if rows.size else rows[:, :0]
    return np.take_along_axis(rows, order, axis=1), np.take_along_axis(scores, order, axis=1)
