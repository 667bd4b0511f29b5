"""A knowledge graph persisted as one SQLite file: triples plus the entity-name gazetteer.

Entities are identified by their normalised label (lowercase, punctuation folded to spaces);
synonyms map to the label they name. Building writes a temporary file and renames it, so a
crash never leaves a half-written graph behind.

Example:
    >>> import tempfile, os
    >>> from mmedrag.retrieval.kg_loaders import LoadResult, Triple
    >>> path = os.path.join(tempfile.mkdtemp(), "kg.sqlite")
    >>> kg = KnowledgeGraph.build(path, [LoadResult([Triple("Flu", "has symptom", "fever", "t")])])
    >>> [t.tail for t in kg.triples_of("flu")]
    ['fever']
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from mmedrag.errors import InputError
from mmedrag.retrieval.kg_loaders import LoadResult

FORMAT_VERSION = 1
_NON_WORD = re.compile(r"[^0-9a-z]+")


def normalise(name: str) -> str:
    """Lowercase, every run of non-alphanumerics becomes one space.

    Example:
        >>> normalise("Crohn's  Disease (CD)")
        'crohn s disease cd'
    """
    return _NON_WORD.sub(" ", name.lower()).strip()


@dataclass(frozen=True)
class StoredTriple:
    """A triple as read back, with its row id and the normalised entity keys of both sides."""

    id: int
    head: str
    relation: str
    tail: str
    source: str
    head_key: str
    tail_key: str

    @property
    def text(self) -> str:
        return f"{self.head} — {self.relation} — {self.tail}"


_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE triples (id INTEGER PRIMARY KEY, head TEXT, relation TEXT, tail TEXT, source TEXT,
                      head_key TEXT, tail_key TEXT, UNIQUE (head, relation, tail));
CREATE TABLE names (name TEXT PRIMARY KEY, entity TEXT, label INTEGER);
"""


class KnowledgeGraph:
    """Read access to a built graph: the gazetteer and the triples around an entity."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise InputError("knowledge graph not found (build it with 'mmedrag kg build')",
                             path=str(self.path))
        self._db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True,
                                   check_same_thread=False)
        try:
            meta = dict(self._db.execute("SELECT key, value FROM meta"))
        except sqlite3.DatabaseError:
            raise InputError("not a mmedrag knowledge graph", path=str(self.path)) from None
        self.meta = {k: json.loads(v) for k, v in meta.items()}
        self._names: dict[str, str] | None = None

    @classmethod
    def build(cls, path: str | Path, results: list[LoadResult]) -> KnowledgeGraph:
        """Write all triples and names of ``results`` to ``path`` (replacing it atomically)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + f".tmp{os.getpid()}")
        tmp.unlink(missing_ok=True)
        db = sqlite3.connect(tmp)
        try:
            db.executescript(_SCHEMA)
            counts = _write(db, results)
            meta = {"format_version": FORMAT_VERSION, "built": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                             time.gmtime()),
                    **counts}
            db.executemany("INSERT INTO meta VALUES (?, ?)",
                           [(k, json.dumps(v)) for k, v in meta.items()])
            db.execute("CREATE INDEX triples_head ON triples (head_key)")
            db.execute("CREATE INDEX triples_tail ON triples (tail_key)")
            db.commit()
        finally:
            db.close()
        os.replace(tmp, path)
        return cls(path)

    def names(self) -> dict[str, str]:
        """Gazetteer: normalised surface name → entity key (cached after the first call)."""
        if self._names is None:
            self._names = dict(self._db.execute("SELECT name, entity FROM names"))
        return self._names

    def count(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM triples").fetchone()[0])

    def triples_of(self, entity: str, limit: int | None = None) -> list[StoredTriple]:
        """Triples with ``entity`` as head (first), then as tail; stable order by row id."""
        rows = self._db.execute(
            "SELECT id, head, relation, tail, source, head_key, tail_key, "
            "CASE WHEN head_key = ? THEN 0 ELSE 1 END AS side FROM triples "
            "WHERE head_key = ? OR tail_key = ? ORDER BY side, id LIMIT ?",
            (entity, entity, entity, -1 if limit is None else int(limit))).fetchall()
        return [StoredTriple(*row[:7]) for row in rows]

    def degree(self, entity: str) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM triples WHERE head_key = ? OR "
                                    "tail_key = ?", (entity, entity)).fetchone()[0])

    def info(self) -> dict[str, object]:
        return {"path": str(self.path), "triples": self.count(), "names": len(self.names()),
                **self.meta}

    def close(self) -> None:
        self._db.close()


def _write(db: sqlite3.Connection, results: list[LoadResult]) -> dict[str, object]:
    names: dict[str, tuple[str, int]] = {}
    sources: dict[str, int] = {}
    rows = []
    for result in results:
        for t in result.triples:
            head_key, tail_key = normalise(t.head), normalise(t.tail)
            if not head_key or not tail_key:
                continue
            rows.append((t.head, t.relation, t.tail, t.source, head_key, tail_key))
            sources[t.source] = sources.get(t.source, 0) + 1
            for key, is_entity in ((head_key, t.head_entity), (tail_key, t.tail_entity)):
                if is_entity:
                    names[key] = (key, 1)
    for result in results:
        for synonym, label in result.synonyms:
            surface, key = normalise(synonym), normalise(label)
            if surface and key and surface not in names:
                names[surface] = (key, 0)
    db.executemany("INSERT OR IGNORE INTO triples (head, relation, tail, source, head_key, "
                   "tail_key) VALUES (?, ?, ?, ?, ?, ?)", rows)
    db.executemany("INSERT INTO names VALUES (?, ?, ?)",
                   [(name, key, label) for name, (key, label) in names.items()])
    return {"sources": sources, "skipped": sum(r.skipped for r in results)}
