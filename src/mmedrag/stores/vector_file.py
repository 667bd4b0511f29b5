"""Vectors on disk: an append-only, memory-mapped array beside the SQLite record store.

Row ``r`` of ``vectors.f32`` (or ``vectors.f16``) holds the vector of the record whose SQLite
``seq`` is ``r + 1``. A writer writes and fsyncs the rows of a batch *before* the SQLite
transaction that adds the records commits, so the database is the commit point: a row whose
record committed is whole on disk, and rows past the last committed ``seq`` (a batch killed
mid-write) are garbage that the next batch overwrites. Deleted records leave their rows in the
file (dead rows are never read: the record store says which rows are alive).

Nothing here loads the array whole: queries read single rows with ``pread``, exact search maps
the file, and passes over all rows (building an ANN index, brute force at scale) read blocks with ``pread``
into private buffers, so the resident memory of a 10M-row scan is one block.

Example:
    >>> import tempfile, numpy as np
    >>> vf = VectorFile(tempfile.mkdtemp(), dim=2, dtype="float16")
    >>> vf.write(0, np.array([[1.0, 0.0], [0.0, 1.0]], "float32"))
    >>> vf.rows([1]).tolist()
    [[0.0, 1.0]]
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from mmedrag.errors import MmedragError, StoreDamaged

DTYPES = {"float32": ("vectors.f32", np.float32), "float16": ("vectors.f16", np.float16)}


class VectorFile:
    """An append-only ``rows × dim`` array of float32 or float16 in one file."""

    def __init__(self, folder: str | Path, dim: int, dtype: str = "float32",
                 read_only: bool = False) -> None:
        if dtype not in DTYPES:
            raise MmedragError(f"vector_dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
        name, self.np_dtype = DTYPES[dtype]
        self.dtype = dtype
        self.path = Path(folder) / name
        self.dim = int(dim)
        self.row_bytes = self.dim * np.dtype(self.np_dtype).itemsize
        self.read_only = read_only
        if not self.path.exists() and not read_only:
            self.path.touch()
        self._map: np.ndarray | None = None
        self._mapped_rows = 0

    # -- size ------------------------------------------------------------------------------
    def file_rows(self) -> int:
        """Whole rows the file holds (committed or not)."""
        try:
            return self.path.stat().st_size // self.row_bytes
        except FileNotFoundError:
            return 0

    def nbytes(self) -> int:
        try:
            return self.path.stat().st_size
        except FileNotFoundError:
            return 0

    def check(self, committed_rows: int) -> None:
        """Raise ``StoreDamaged`` when rows that the record store committed are missing."""
        have = self.file_rows()
        if have < committed_rows:
            raise StoreDamaged(f"{self.path}: holds {have} vectors but the record store "
                               f"committed {committed_rows} (truncated vector file)",
                               path=str(self.path))

    # -- writes ----------------------------------------------------------------------------
    def write(self, start: int, vectors: np.ndarray) -> None:
        """Write ``vectors`` at rows ``start…`` and fsync (before the records commit)."""
        if self.read_only:
            raise MmedragError(f"{self.path}: opened read-only")
        data = np.ascontiguousarray(vectors, dtype=self.np_dtype)
        if data.ndim != 2 or data.shape[1] != self.dim:
            raise MmedragError(f"{self.path}: vectors are {data.shape}, file is {self.dim}-d")
        if np.dtype(self.np_dtype) == np.float16 and not np.isfinite(data).all():
            raise MmedragError(f"{self.path}: vectors overflow float16")
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            os.pwrite(fd, data.tobytes(), start * self.row_bytes)
            os.fsync(fd)
        finally:
            os.close(fd)

    # -- reads -----------------------------------------------------------------------------
    def view(self, rows: int) -> np.ndarray:
        """A read-only memory map of the first ``rows`` rows (re-mapped when the file grew)."""
        if rows <= 0:
            return np.zeros((0, self.dim), dtype=self.np_dtype)
        if self._map is None or self._mapped_rows < rows:
            have = self.file_rows()
            if have < rows:
                raise StoreDamaged(f"{self.path}: holds {have} vectors, {rows} needed",
                                   path=str(self.path))
            self._map = np.memmap(self.path, dtype=self.np_dtype, mode="r",
                                  shape=(have, self.dim))
            self._mapped_rows = have
        return self._map[:rows]

    def rows(self, rows: list[int] | np.ndarray) -> np.ndarray:
        """The given rows as float32 (random access with ``pread``)."""
        index = np.asarray(rows, dtype=np.int64)
        if not len(index):
            return np.zeros((0, self.dim), dtype=np.float32)
        # pread, not the memory map: rows read for re-ranking stay in the page cache (shared,
        # evictable) instead of becoming resident pages of the process
        return self._gather(index)

    def _gather(self, index: np.ndarray) -> np.ndarray:
        out = np.empty((len(index), self.dim), dtype=self.np_dtype)
        fd = os.open(self.path, os.O_RDONLY)
        try:
            for i, row in enumerate(index.tolist()):
                data = os.pread(fd, self.row_bytes, row * self.row_bytes)
                if len(data) != self.row_bytes:
                    raise StoreDamaged(f"{self.path}: row {row} is past the end",
                                       path=str(self.path))
                out[i] = np.frombuffer(data, dtype=self.np_dtype)
        finally:
            os.close(fd)
        return out.astype(np.float32, copy=False)

    def blocks(self, stop: int, block: int = 65536, start: int = 0
               ) -> Iterator[tuple[int, np.ndarray]]:
        """``(first_row, float32 block)`` for rows ``start:stop``, read with pread (the pages
        are not kept mapped, so a full pass does not grow the resident set)."""
        with open(self.path, "rb") as handle:
            for first in range(start, stop, block):
                count = min(block, stop - first)
                handle.seek(first * self.row_bytes)
                data = np.fromfile(handle, dtype=self.np_dtype, count=count * self.dim)
                if len(data) != count * self.dim:
                    raise StoreDamaged(f"{self.path}: truncated at row {first}",
                                       path=str(self.path))
                yield first, data.reshape(count, self.dim).astype(np.float32, copy=False)

    def close(self) -> None:
        self._map = None
        self._mapped_rows = 0
