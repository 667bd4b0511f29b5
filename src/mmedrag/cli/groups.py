"""Register command modules on a typer app."""

from __future__ import annotations

import importlib

import typer


def register_modules(app: typer.Typer, names: tuple[str, ...]) -> None:
    """Import ``mmedrag.cli.<name>`` for each name and call its ``register(app)`` (heavy
    dependencies are imported inside the commands, so this stays fast).

    Example:
        >>> register_modules(typer.Typer(), ("kg",))
    """
    for name in names:
        importlib.import_module(f"mmedrag.cli.{name}").register(app)
