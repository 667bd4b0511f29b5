"""``mmedrag train ...``: sub-commands registered by cli/train_*.py modules."""

from __future__ import annotations

import importlib

import typer

train_app = typer.Typer(help="Train the domain classifier, the image retriever, or DPO.",
                        no_args_is_help=True)

_MODULES = ("train_domain", "train_retriever", "train_dpo")


def register(app: typer.Typer) -> None:
    for name in _MODULES:
        try:
            module = importlib.import_module(f"mmedrag.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"mmedrag.cli.{name}":
                continue
            raise
        module.register(train_app)
    app.add_typer(train_app, name="train")
