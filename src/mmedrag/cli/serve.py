"""``mmedrag serve``: the REST API and web page over one index."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from mmedrag.errors import UsageError


def serve_command(
    index: Path = typer.Option(..., "--index", "-i", help="Index folder to serve (read-only)."),
    config: Path | None = typer.Option(None, "--config", "-c", help="YAML pipeline config."),
    host: str = typer.Option("127.0.0.1", help="Address to bind; non-loopback needs an API key."),
    port: int = typer.Option(8000, help="TCP port."),
    api_key_env: str | None = typer.Option(
        None, "--api-key-env", help="Environment variable holding the API key (required for "
                                    "a non-loopback --host; optional on loopback)."),
    max_upload_mb: float = typer.Option(20.0, help="Largest request body in MB (413 above)."),
    max_waiting: int = typer.Option(8, help="Answer requests allowed to queue before 503."),
    preload: bool = typer.Option(False, help="Load the generator at start, not on first answer."),
    log_level: str = typer.Option("info", help="uvicorn log level."),
    rate: float = typer.Option(20.0, help="/v1 requests per second per client and key (429 above; 0: no limit)."),
    burst: int = typer.Option(60, help="Requests a client may send at once before --rate applies."),
    header_timeout: float = typer.Option(10.0, help="Seconds a client has to send its request headers."),
    body_timeout: float = typer.Option(30.0, help="Seconds a request body may stall (408 after)."),
    max_per_client: int = typer.Option(32, help="Open connections allowed per client address."),
    refresh_seconds: float = typer.Option(2.0, help="How often to pick up records a writer committed."),
) -> None:
    """Serve the REST API (/v1/answer, /v1/search, ...) and the web page at /.

    Example: MMEDRAG_KEY=secret mmedrag serve --index idx --host 0.0.0.0 --api-key-env MMEDRAG_KEY
    """
    from mmedrag.errors import optional_import

    uvicorn = optional_import("uvicorn", extra="server")
    optional_import("fastapi", extra="server")
    from mmedrag.server.app import create_app
    from mmedrag.server.security import check_bind

    if not 0 < port < 65536:
        raise UsageError(f"--port must be 1-65535, got {port}")
    if max_upload_mb <= 0:
        raise UsageError("--max-upload-mb must be positive")
    api_key = None
    if api_key_env:
        api_key = os.environ.get(api_key_env)
        if not api_key:
            raise UsageError(f"--api-key-env {api_key_env}: that environment variable is not set "
                             "or empty")
    check_bind(host, api_key)
    app = create_app(index, config=config, api_key=api_key, max_upload_mb=max_upload_mb,
                     max_waiting=max_waiting, preload=preload, rate=rate or None, burst=burst,
                     body_timeout=body_timeout, refresh_seconds=refresh_seconds)
    auth = "API key required" if api_key else "no API key (loopback only)"
    typer.echo(f"serving {index} on http://{host}:{port}/ ({auth}); Ctrl-C stops", err=True)
    from mmedrag.server.connections import uvicorn_options

    uvicorn.run(app, host=host, port=port, log_level=log_level,
                **uvicorn_options(header_timeout, max_per_client))


def register(app: typer.Typer) -> None:
    app.command("serve")(serve_command)
