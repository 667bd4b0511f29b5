"""``mmedrag calibrate``: RULE's calibrated k from per-sample results, stored with the index."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from mmedrag.errors import UsageError


def _parse_order(order: str | None) -> list[int] | None:
    if not order:
        return None
    try:
        return [int(part) for part in order.split(",") if part.strip()]
    except ValueError:
        raise UsageError(f"--order expects comma-separated integers, got {order!r}") from None


def _results_path(results: Path | None, from_run: Path | None) -> Path:
    if (results is None) == (from_run is None):
        raise UsageError("give exactly one of RESULTS.jsonl or --from-run RUN_DIR")
    if from_run is not None:
        path = from_run / "calibration.jsonl"
        if not path.is_file():
            raise UsageError(f"{from_run}: no calibration.jsonl in this run folder "
                             f"(evaluate with several k to produce one)")
        return path
    assert results is not None
    return results


def calibrate_command(
    results: Path | None = typer.Argument(
        None, help="JSONL of {\"id\", \"k\", \"correct\"} rows."),
    from_run: Path | None = typer.Option(
        None, "--from-run", help="Run folder holding calibration.jsonl."),
    index: Path | None = typer.Option(
        None, "--index", "-i", help="Store the calibration with this index."),
    task: str | None = typer.Option(None, help="Use only rows of this task (runner output)."),
    alpha: float = typer.Option(0.1, help="Target risk: FR = 1 - accuracy <= alpha."),
    delta: float = typer.Option(0.1, help="Tolerated failure probability of the guarantee."),
    method: str = typer.Option("bonferroni", help="bonferroni | fixed-sequence"),
    choose: str = typer.Option("accuracy",
                               help="Which valid k to use: accuracy | largest | smallest"),
    order: str | None = typer.Option(
        None, help="Candidate k in testing order, e.g. 3,2,4,1 (fixed before seeing data; "
                   "default ascending)."),
    as_json: bool = typer.Option(False, "--json", help="Print the calibration as JSON."),
) -> None:
    """Choose k with a risk guarantee P(FR <= alpha) >= 1 - delta (RULE, Learn-then-Test).

    Example: mmedrag calibrate results.jsonl --index idx --alpha 0.2 --delta 0.1
    """
    from mmedrag.selection.calibrated import calibrate
    from mmedrag.selection.calibration_io import read_calibration_results

    path = _results_path(results, from_run)
    parsed_order = _parse_order(order)
    data = read_calibration_results(path, task=task)
    cal = calibrate(data, alpha=alpha, delta=delta, method=method, choose=choose,
                    order=parsed_order)
    payload = {**cal.to_dict(), "source": str(path), "task": task}
    if index is not None:
        from mmedrag.index import Index

        if not (index / "index.json").exists():
            raise UsageError(f"{index}: not an index (no index.json)")
        opened = Index.open(index)
        opened.set_artefacts(opened.artefacts.model_copy(update={"calibration": payload}))
    if as_json:
        typer.echo(json.dumps({**payload, "stored_in": str(index) if index else None},
                              ensure_ascii=False))
        return
    typer.echo(f"{'k':>4} {'n':>6} {'FR(k)':>7} {'p-value':>10}  valid")
    for row in cal.candidates:
        typer.echo(f"{row.k:>4} {row.n:>6} {row.risk:7.4f} {row.p_value:10.3g}  "
                   f"{'yes' if row.valid else 'no'}")
    typer.echo(cal.summary())
    if index is not None:
        typer.echo(f"stored with index {index} (selector 'calibrated' will use k={cal.k})")


def register(app: typer.Typer) -> None:
    app.command("calibrate")(calibrate_command)
