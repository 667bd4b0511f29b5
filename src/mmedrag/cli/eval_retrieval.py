"""``mmedrag eval retrieval``: image→report and text→document retrieval metrics of an index."""

from __future__ import annotations

import typer


def register(eval_app: typer.Typer) -> None:
    from mmedrag.evaluation.retrieval import retrieval_command

    eval_app.command("retrieval")(retrieval_command)
