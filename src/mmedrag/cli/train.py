"""``mmedrag train ...``: sub-commands registered by cli/train_*.py modules."""

from __future__ import annotations

import typer

from mmedrag.cli.groups import register_modules

train_app = typer.Typer(help="Train the domain classifier, the image retriever, or DPO.",
                        no_args_is_help=True)

_MODULES = ("train_domain", "train_retriever", "train_dpo")


def register(app: typer.Typer) -> None:
    register_modules(train_app, _MODULES)
    app.add_typer(train_app, name="train")
