"""Precomputed text embeddings: index a corpus without encoding it again.

MedRAG distributes MedCPT embeddings of its corpora (PubMed's 23.9M snippets among them);
encoding them again takes a week on one machine. ``mmedrag index CORPUS --embeddings FILE``
reads the vectors memory-mapped from

* ``FILE.npy`` (rows × dim, float32 or float16) with the row ids in ``--embedding-ids``
  (``.txt``: one id per line; ``.json``: a list; ``.npy``: an array of strings), or
* ``FILE.npz`` holding ``embeddings`` and ``ids`` arrays,

and checks everything before the first record is written: the dtype, the dimension and model
against the index's text encoder (the model from ``--embeddings-model`` or a ``FILE.json``
sidecar ``{"model": ...}``), NaN/Inf and all-zero rows, as many rows as ids, ids that are
unique, and that every corpus record has a row and every row a record. Any failure is one
``InputError`` naming the file; nothing is indexed. Rows are L2-normalised when stored (the
store scores by inner product of unit vectors).

Example:
    >>> import tempfile, numpy as np, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> np.savez(folder / "e.npz", embeddings=np.eye(2, dtype="float32"), ids=np.array(["a", "b"]))
    >>> source = PrecomputedEmbeddings(folder / "e.npz", model="m", expect_model="m", expect_dim=2)
    >>> source.row_count
    2
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from mmedrag.errors import InputError
from mmedrag.records import Record

_BLOCK = 65_536


class PrecomputedEmbeddings:
    """A ``TextVectorSource`` (see ``mmedrag.index_ingest``) over an embeddings file."""

    def __init__(self, path: str | Path, ids_path: str | Path | None = None,
                 model: str | None = None, expect_model: str = "", expect_dim: int = 0,
                 expect_names: tuple[str, ...] = (), strict_ids: bool = True) -> None:
        self.path = Path(path)
        where = str(self.path)
        if not self.path.is_file():
            raise InputError("embeddings file not found", path=where)
        self.matrix, ids = self._open(ids_path)
        if self.matrix.ndim != 2:
            raise InputError(f"embeddings must be a 2-d array (rows x dim), got shape "
                             f"{self.matrix.shape}", path=where)
        if self.matrix.dtype not in (np.float32, np.float16):
            raise InputError(f"embeddings must be float32 or float16, got {self.matrix.dtype}",
                             path=where)
        rows, dim = self.matrix.shape
        if expect_dim and dim != expect_dim:
            raise InputError(f"embeddings are {dim}-d but the index's text encoder "
                             f"({expect_model}) is {expect_dim}-d", path=where)
        model = model or self._sidecar_model()
        if not model:
            raise InputError("which model made these embeddings? give --embeddings-model NAME "
                             f"or a sidecar {self.path.with_suffix('.json').name} with "
                             f'{{"model": NAME}}', path=where)
        accepted = {expect_model, *expect_names} - {""}
        if accepted and model not in accepted:
            raise InputError(f"embeddings were made by {model!r} but the index's text encoder "
                             f"is {expect_model!r}; queries would be encoded in another space",
                             path=where)
        if len(ids) != rows:
            raise InputError(f"{rows} embedding rows but {len(ids)} ids "
                             f"({'fewer' if rows < len(ids) else 'more'} rows than ids)",
                             path=where)
        self.ids = np.asarray([str(i).encode("utf-8") for i in ids])  # bytes: 1 B/char
        order = np.argsort(self.ids, kind="stable")
        self._sorted = self.ids[order]
        self._order = order
        same = np.flatnonzero(self._sorted[1:] == self._sorted[:-1])
        if len(same):
            raise InputError(f"id {self._sorted[same[0]].decode()!r} appears twice", path=where)
        self.row_count = rows
        self.model = model
        self.strict_ids = strict_ids  # every row must be a corpus record (off with --limit)

    def _open(self, ids_path: str | Path | None) -> tuple[np.ndarray, Any]:
        where = str(self.path)
        try:
            if self.path.suffix == ".npz":
                with np.load(self.path, allow_pickle=False) as bundle:
                    if "embeddings" not in bundle or "ids" not in bundle:
                        raise InputError("an .npz needs 'embeddings' and 'ids' arrays, has "
                                         f"{sorted(bundle.files)}", path=where)
                    return bundle["embeddings"], [_as_id(i) for i in bundle["ids"].tolist()]
            matrix = np.load(self.path, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise InputError(f"not a readable .npy/.npz array ({exc})", path=where) from None
        if ids_path is None:
            raise InputError("give the row ids with --embedding-ids FILE (.txt, .json or .npy)",
                             path=where)
        return matrix, _read_ids(Path(ids_path))

    def _sidecar_model(self) -> str:
        sidecar = self.path.with_suffix(".json")
        if not sidecar.is_file():
            return ""
        try:
            return str(json.loads(sidecar.read_text(encoding="utf-8")).get("model", ""))
        except (json.JSONDecodeError, AttributeError):
            raise InputError("sidecar is not a JSON object with a 'model'",
                             path=str(sidecar)) from None

    def _rows(self, records: list[Record]) -> np.ndarray:
        wanted = np.asarray([r.id.encode("utf-8") for r in records])
        at = np.searchsorted(self._sorted, wanted)
        at = np.minimum(at, len(self._sorted) - 1)
        found = self._sorted[at] == wanted
        if not found.all():
            missing = wanted[~found]
            raise InputError(f"{len(missing)} corpus record(s) have no embedding row, e.g. "
                             f"{missing[0].decode()!r} (index the corpus unchunked: its ids must be "
                             f"the embedding ids)", path=str(self.path))
        return self._order[at]

    def start(self, records: list[Record]) -> None:
        """Check the file against the whole corpus before anything is written."""
        rows = self._rows(records)
        covered = len(np.unique(rows))  # a corpus id listed twice is still one row
        if self.strict_ids and covered < self.row_count:
            known = {r.id for r in records}
            extra = next(i.decode() for i in self.ids if i.decode() not in known)
            raise InputError(f"{self.row_count - covered} embedding id(s) are not in the "
                             f"corpus, e.g. {extra!r}", path=str(self.path))
        for start in range(0, self.row_count, _BLOCK):
            block = np.asarray(self.matrix[start:start + _BLOCK], dtype=np.float32)
            bad = ~np.isfinite(block).all(axis=1)
            if bad.any():
                raise InputError(f"row {start + int(np.flatnonzero(bad)[0])} "
                                 f"(id {self.ids[start + int(np.flatnonzero(bad)[0])].decode()!r}) holds "
                                 f"NaN or Inf", path=str(self.path))
            zero = np.linalg.norm(block, axis=1) == 0
            if zero.any():
                raise InputError(f"row {start + int(np.flatnonzero(zero)[0])} is all zeros",
                                 path=str(self.path))

    def vectors(self, records: list[Record]) -> np.ndarray:
        rows = self._rows(records)
        order = np.argsort(rows)  # read the file in ascending rows, return the records' order
        block = np.empty((len(rows), self.matrix.shape[1]), dtype=np.float32)
        block[order] = self.matrix[rows[order]]
        return block / np.linalg.norm(block, axis=1, keepdims=True)


def _as_id(value: Any) -> str:
    """An id read from an array: bytes (dtype ``S``, as h5py and converters write) are UTF-8
    text, not ``"b'...'"``."""
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _read_ids(path: Path) -> list[str]:
    where = str(path)
    if not path.is_file():
        raise InputError("ids file not found", path=where)
    try:
        if path.suffix == ".npy":
            return [_as_id(i) for i in np.load(path, allow_pickle=False).tolist()]
        if path.suffix == ".json":
            data = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(data, list):
                raise InputError("ids .json must be a list of ids", path=where)
            return [str(i) for i in data]
        return [line.rstrip("\n") for line in path.open(encoding="utf-8") if line.strip()]
    except (ValueError, OSError, UnicodeDecodeError) as exc:
        raise InputError(f"unreadable ids file ({exc})", path=where) from None
