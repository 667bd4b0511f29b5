"""``mmedrag repair``: rebuild a damaged index from what its SQLite stores still hold."""

from __future__ import annotations

import json
from pathlib import Path

import typer


def repair_command(
    index: Path = typer.Option(..., "--index", "-i", help="Index folder to repair."),
    wait: float = typer.Option(0.0, "--wait", help="Seconds to wait for another writer."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Salvage readable records, drop half-written ones, rebuild graph, BM25 and counts.

    Damaged store files are kept beside the new ones as damaged-<time>-store.sqlite. Records
    that were lost are re-added from their manifest with --resume.

    Example: mmedrag repair --index idx && mmedrag index pairs.jsonl --index idx --resume
    """
    from mmedrag.errors import UsageError
    from mmedrag.index_repair import repair
    from mmedrag.stores.lock import WriterLock

    if not (index / "index.json").is_file():
        raise UsageError(f"{index}: not an mmedrag index (no index.json)")
    lock = WriterLock(index)
    lock.acquire(wait)
    lock.release()  # repair takes it again through Index.writing()
    report = repair(index)
    if as_json:
        typer.echo(json.dumps(report))
        return
    for name in ("text", "image"):
        if name in report:
            salvaged = report[name]["salvaged"]
            state = "intact" if salvaged < 0 else f"rebuilt, {salvaged} rows salvaged"
            typer.echo(f"{name} store: {state}")
    typer.echo(f"removed {report['removed_without_image_vector']} half-written records; index "
               f"now holds {report['count']} records (re-add lost ones with --resume)")


def register(app: typer.Typer) -> None:
    app.command("repair")(repair_command)
