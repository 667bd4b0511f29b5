"""The REST server (FastAPI) and the web page, thin shells around one Index and one Pipeline.

Endpoints (JSON errors are ``{"error": message, "status": code}``):

* ``GET /healthz``; ``GET /`` the web page; ``GET /openapi.json`` (no Swagger UI: it loads
  its scripts from a CDN, and the server works offline);
* ``POST /v1/answer`` — multipart (``image`` file, ``question``, ``task``, ``no_rag``,
  ``options``) or JSON (``image_b64``); returns ``Answer.to_dict()`` plus image URLs;
* ``POST /v1/search`` — JSON ``{text?, image_b64?, k, mode, domain?}`` or multipart;
* ``GET /v1/records/{id}``, ``GET /v1/images/{id}[?size=256]`` (by record id only),
  ``GET /v1/gallery?limit=&offset=&domain=``, ``GET /v1/info``.

Example:
    >>> import uvicorn
    >>> app = create_app("idx", api_key=None)                      # doctest: +SKIP
    >>> uvicorn.run(app, host="127.0.0.1", port=8000)              # doctest: +SKIP
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from mmedrag.config import Config
from mmedrag.errors import InputError, MmedragError, UsageError
from mmedrag.server import inputs
from mmedrag.server.concurrency import Busy, Refresher, refresh_index
from mmedrag.server.inputs import BadRequest
from mmedrag.server.security import BodyTimeout, BodyTooLarge, GuardMiddleware
from mmedrag.server.service import Service

LOG = logging.getLogger("mmedrag.server")
STATIC = Path(__file__).parent / "static"
CSP = ("default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; "
       "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
SECURITY_HEADERS = {"x-content-type-options": "nosniff", "referrer-policy": "no-referrer",
                    "content-security-policy": CSP}

_OBJ = {"type": "object"}
_ANSWER_BODY = {"requestBody": {"required": True, "content": {
    "multipart/form-data": {"schema": {"type": "object", "required": ["question"], "properties": {
        "image": {"type": "string", "format": "binary"}, "question": {"type": "string"},
        "task": {"type": "string", "default": "open_vqa"},
        "no_rag": {"type": "boolean", "default": False},
        "options": {"type": "string", "description": "JSON object letter -> option text"}}}},
    "application/json": {"schema": {"type": "object", "required": ["question"], "properties": {
        "question": {"type": "string"}, "image_b64": {"type": "string", "format": "byte"},
        "task": {"type": "string"}, "no_rag": {"type": "boolean"}, "options": _OBJ,
        "include_messages": {"type": "boolean"}}}}}}}
_SEARCH_BODY = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": {"type": "object", "properties": {
        "text": {"type": "string"}, "image_b64": {"type": "string", "format": "byte"},
        "k": {"type": "integer", "default": 10, "minimum": 1, "maximum": 100},
        "mode": {"type": "string", "enum": ["dense", "bm25", "hybrid", "image-image"]},
        "domain": {"type": "string"}}}},
    "multipart/form-data": {"schema": {"type": "object", "properties": {
        "image": {"type": "string", "format": "binary"}, "text": {"type": "string"},
        "k": {"type": "integer"}, "mode": {"type": "string"}, "domain": {"type": "string"}}}}}}}


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message, "status": status}, status_code=status, headers=headers)


def create_app(index_dir: str | Path | None = None, config: Config | str | Path | None = None,
               api_key: str | None = None, max_upload_mb: float = 20.0, max_waiting: int = 8,
               service: Service | None = None, preload: bool = False,
               refresh_seconds: float = 2.0, body_timeout: float = 30.0,
               rate: float | None = None, burst: int = 60) -> FastAPI:
    """Build the app over the index at ``index_dir`` (opened read-only in spirit: never written).

    Args:
        index_dir: Index folder (or pass a ready ``service``).
        config: Config, YAML path or None (defaults: llama.cpp SmolLM2 generator).
        api_key: When set, every ``/v1/*`` request must carry it.
        max_upload_mb: Largest request body; larger ones get 413 before being read.
        max_waiting: Answer requests allowed to queue for the generator before 503.
        preload: Build the pipeline (load the generator) now instead of on the first answer.
        refresh_seconds: How often to pick up records a writer committed (0: only on
            ``POST /v1/admin/refresh``).
        body_timeout: Seconds a request body may stall before a 408.
        rate: ``/v1/*`` requests per second per client and key (429 above; None: unlimited).
        burst: Requests a client may send at once before ``rate`` applies.
    """
    if isinstance(config, (str, Path)):
        config = Config.from_yaml(config)
    config = config or Config()
    if service is None:
        if index_dir is None:
            raise UsageError("create_app needs an index folder")
        service = Service.open(index_dir, config, max_waiting)
    if preload:
        try:
            service.pipeline()
        except MmedragError:
            raise
        except Exception as exc:
            raise MmedragError(f"could not load the pipeline ({config.generator.name} "
                               f"generator): {exc.__class__.__name__}: {exc}") from exc
    app = FastAPI(title="mmedrag", version=_version(), docs_url=None, redoc_url=None,
                  description="Multimodal medical RAG: search an index, answer with evidence.")
    app.state.service = service
    app.state.refresher = Refresher(service.index, refresh_seconds).start()
    app.state.auth = bool(api_key)
    _install_errors(app)
    _install_routes(app, service)
    _install_record_routes(app, service)
    _install_admin_routes(app, service)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    # Pure ASGI and outermost: keys and sizes are checked before anything reads the body.
    app.add_middleware(GuardMiddleware, api_key=api_key,
                       max_body=int(max_upload_mb * 1024 * 1024), headers=SECURITY_HEADERS,
                       body_timeout=body_timeout, rate=rate, burst=burst)
    return app


def _install_errors(app: FastAPI) -> None:
    @app.exception_handler(BadRequest)
    async def bad_request(_: Request, exc: BadRequest) -> JSONResponse:
        return _error(exc.status, exc.message)

    @app.exception_handler(BodyTimeout)
    async def stalled(_: Request, exc: BodyTimeout) -> JSONResponse:
        return _error(408, "request body stalled; send it promptly", {"Connection": "close"})

    @app.exception_handler(BodyTooLarge)
    async def too_large(_: Request, exc: BodyTooLarge) -> JSONResponse:
        return _error(413, str(exc))

    @app.exception_handler(Busy)
    async def busy(_: Request, exc: Busy) -> JSONResponse:
        return _error(503, str(exc), {"Retry-After": "5"})

    @app.exception_handler(MmedragError)
    async def mmedrag_error(_: Request, exc: MmedragError) -> JSONResponse:
        status = 400 if isinstance(exc, (InputError, UsageError)) else 500
        return _error(status, str(exc))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        where = ".".join(str(p) for p in first.get("loc", ()) if p not in ("query", "path"))
        return _error(422, f"{where}: {first.get('msg')}" if where else str(first.get("msg")))

    @app.exception_handler(ClientDisconnect)
    async def gone(_: Request, exc: ClientDisconnect) -> JSONResponse:
        LOG.info("client disconnected before sending its whole body")
        return _error(400, "client disconnected before sending the whole body")

    @app.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception) -> JSONResponse:
        LOG.exception("unexpected error")
        return _error(500, f"internal error ({exc.__class__.__name__}); see the server log")


async def _body(request: Request) -> inputs.Body:
    raw = await request.body()
    return await run_in_threadpool(inputs.parse_body, raw, request.headers.get("content-type", ""))


def _install_routes(app: FastAPI, service: Service) -> None:
    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    @app.get("/healthz", tags=["meta"])
    async def healthz() -> dict[str, Any]:
        """Liveness: always answers while the server runs (no API key needed)."""
        return {**service.health(), "auth": app.state.auth}

    @app.get("/v1/info", tags=["meta"])
    async def info() -> dict[str, Any]:
        """Index encoders, counts per domain, generator, tasks and search modes."""
        return await run_in_threadpool(service.info)

    @app.post("/v1/search", tags=["retrieval"], openapi_extra=_SEARCH_BODY)
    async def search(request: Request) -> dict[str, Any]:
        """Search by text (dense | bm25 | hybrid), by image (dense), or both (fused)."""
        body = await _body(request)
        fields = body.fields
        text = inputs.text_field(fields, "text")
        k = inputs.int_field(fields, "k", min(service.config.retrieval.k, 100), 1, 100)
        mode = inputs.text_field(fields, "mode", max_chars=16) or None
        domain = inputs.text_field(fields, "domain", max_chars=100)
        return await run_in_threadpool(service.search, text, body.image, k, mode, domain)

    @app.post("/v1/answer", tags=["answering"], openapi_extra=_ANSWER_BODY)
    async def answer(request: Request) -> dict[str, Any]:
        """Answer a question about an image (optional) with retrieved, cited evidence."""
        body = await _body(request)
        fields = body.fields
        task = inputs.text_field(fields, "task", max_chars=32) or "open_vqa"
        question = inputs.text_field(fields, "question")
        if question is None and body.image is None:
            raise BadRequest("send a question and an image (or at least a question)")
        if question is None and task != "report":
            raise BadRequest("'question' is required (only task 'report' may omit it)")
        no_rag = inputs.bool_field(fields, "no_rag", False)
        return await run_in_threadpool(
            service.answer, question or "", body.image, task, inputs.options_field(fields),
            not no_rag, inputs.bool_field(fields, "include_messages", False))



def _install_admin_routes(app: FastAPI, service: Service) -> None:
    @app.post("/v1/admin/refresh", tags=["meta"])
    async def refresh() -> dict[str, Any]:
        """Pick up records, BM25 and counts a writer has committed, now (the server also does
        it every ``refresh_seconds``)."""
        return await run_in_threadpool(refresh_index, service.index)


def _install_record_routes(app: FastAPI, service: Service) -> None:
    @app.get("/v1/records/{record_id:path}", tags=["records"])
    async def record(record_id: str) -> dict[str, Any]:
        """A stored record by id (ids never contain slashes)."""
        return await run_in_threadpool(service.record, record_id)

    @app.get("/v1/images/{record_id:path}", tags=["records"],
             responses={200: {"content": {"image/png": {}, "image/jpeg": {}}}})
    async def image(record_id: str, size: int | None = Query(None)) -> Response:
        """A record's stored image, served from the index by record id (PNG, or JPEG thumbnail)."""
        headers = {"Cache-Control": "private, max-age=3600"}
        if size is not None:
            data = await run_in_threadpool(service.thumbnail, record_id, size)
            return Response(data, media_type="image/jpeg", headers=headers)
        path = await run_in_threadpool(service.image_file, record_id)
        return FileResponse(path, media_type="image/png", headers=headers)

    @app.get("/v1/gallery", tags=["records"])
    async def gallery(limit: int = Query(24, ge=1, le=200), offset: int = Query(0, ge=0),
                      domain: str | None = Query(None, max_length=100)) -> dict[str, Any]:
        """Indexed records that have an image, for picking a query image on the page."""
        return await run_in_threadpool(service.gallery, limit, offset, domain)


def _version() -> str:
    from mmedrag import __version__

    return __version__
