"""The ``mmedrag`` command. One module per command group registers itself on the app.

Exit codes: 0 ok, 1 failed, 2 bad usage. Errors go to stderr as one line naming the file/field.
"""

from __future__ import annotations

import os
import sqlite3
import sys

import typer

try:  # typer >= 0.20 vendors click as typer._click
    from typer._click import exceptions as click_exc
except ImportError:  # pragma: no cover - older typer uses click itself
    from click import exceptions as click_exc  # type: ignore[no-redef]

from mmedrag.cli.groups import register_modules
from mmedrag.errors import MmedragError

app = typer.Typer(
    name="mmedrag",
    help="Multimodal retrieval-augmented generation for medical vision-language models.\n\n"
         "Example: mmedrag demo",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Command-group modules; each defines register(app).
_GROUPS = ("index_cmd", "repair", "ask", "demo", "serve", "eval_cmd", "train", "prefs",
           "calibrate", "kg")


register_modules(app, _GROUPS)


def fail(message: str, code: int = 1) -> None:
    """Print one line on stderr and exit with ``code``."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1") if os.environ.get("MMEDRAG_OFFLINE", "1") == "1" else None
    try:
        app(args=argv, standalone_mode=False)
        return 0
    except MmedragError as exc:
        typer.echo(f"error: {exc}", err=True)
        return exc.exit_code
    except typer.Exit as exc:
        return int(exc.exit_code or 0)
    except typer.Abort:
        typer.echo("error: aborted", err=True)
        return 1
    except click_exc.UsageError as exc:
        typer.echo(f"error: {exc.format_message()}", err=True)
        return 2
    except click_exc.ClickException as exc:
        typer.echo(f"error: {exc.format_message()}", err=True)
        return 1
    except sqlite3.DatabaseError as exc:  # damage found past the checks made on open
        typer.echo(f"error: an index store is corrupt (sqlite: {exc}); run 'mmedrag repair "
                   "--index DIR', then 'mmedrag index MANIFEST --index DIR --resume'", err=True)
        return 1
    except KeyboardInterrupt:
        typer.echo("error: interrupted", err=True)
        return 130


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
