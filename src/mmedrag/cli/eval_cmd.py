"""``mmedrag eval ...``: sub-commands registered by cli/eval_*.py modules."""

from __future__ import annotations

import importlib

import typer

eval_app = typer.Typer(help="Evaluate pipelines, retrieval and domain identification.",
                       no_args_is_help=True)

_MODULES = ("eval_run", "eval_retrieval")


def register(app: typer.Typer) -> None:
    for name in _MODULES:
        try:
            module = importlib.import_module(f"mmedrag.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"mmedrag.cli.{name}":
                continue
            raise
        module.register(eval_app)
    app.add_typer(eval_app, name="eval")
