"""``mmedrag eval ...``: sub-commands registered by cli/eval_*.py modules."""

from __future__ import annotations

import typer

from mmedrag.cli.groups import register_modules

eval_app = typer.Typer(help="Evaluate pipelines, retrieval and domain identification.",
                       no_args_is_help=True)

_MODULES = ("eval_run", "eval_retrieval")


def register(app: typer.Typer) -> None:
    register_modules(eval_app, _MODULES)
    app.add_typer(eval_app, name="eval")
