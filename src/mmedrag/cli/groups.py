"""Register command modules on a typer app; a module that is not installed is skipped."""

from __future__ import annotations

import importlib

import typer


def register_modules(app: typer.Typer, names: tuple[str, ...]) -> None:
    """Import ``mmedrag.cli.<name>`` for each name and call its ``register(app)``.

    Example:
        >>> register_modules(typer.Typer(), ("no_such_group",))
    """
    for name in names:
        try:
            module = importlib.import_module(f"mmedrag.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"mmedrag.cli.{name}":
                continue
            raise
        module.register(app)
