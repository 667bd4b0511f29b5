"""``mmedrag eval retrieval``: image→report and text→document retrieval metrics of an index,
measured through the one retrieval flow (the metric functions are in ``mmedrag.ir_metrics``).

Example:
    >>> sorted(relevant_ids("a", "Axial CT", [("a", "x"), ("b", "axial  ct")]))
    ['a', 'b']
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import typer

from mmedrag.config import Config
from mmedrag.ingest.images import load_image
from mmedrag.ingest.labelled import Row
from mmedrag.ir_metrics import bootstrap_interval, per_query_metrics
from mmedrag.retrieval.flow import RetrievalFlow
from mmedrag.retrieval.protocol import SearchableIndex

# -- evaluating retrievers over an index -------------------------------------------------------

def _normal(text: str) -> str:
    return " ".join(text.split()).lower()


def relevant_ids(query_id: str, reference: str, corpus: Sequence[tuple[str, str]]) -> set[str]:
    """Ids that count as hits: the query's own pair and any record with identical text."""
    want = _normal(reference)
    return {query_id} | ({rid for rid, text in corpus if _normal(text) == want} if want else set())


def evaluate_index(index: SearchableIndex, rows: Sequence[Row], mode: str = "image",
                   k: int = 10, exclude_self: bool = False, config: Config | None = None,
                   progress: bool = False) -> dict[str, Any]:
    """Run ``rows`` (labelled rows: id, image, text) as queries through the retrieval flow.

    ``mode="image"``: the image is the query (routed to its domain, then the domain's tower when
    the index has them, else image→image: exactly what ``search`` and ``ask`` do);
    ``mode="text"``: the row text is the query (dense text search). Relevance: the query's own id
    or identical text. ``exclude_self`` drops the query's own record from its ranking.
    """
    from tqdm.auto import tqdm

    flow = RetrievalFlow(config or Config(), index)
    flow = flow.for_mode("dense") if mode == "text" else flow
    corpus = [(r.id, r.text) for r in index.text_store.iter_records(batch=5000)]
    rankings, relevant = [], []
    used: set[str] = set()
    routed: dict[str, int] = {}
    for row in tqdm(rows, disable=not progress, desc="queries", unit="q"):
        image = load_image(row.image, what=str(row.image)) if mode == "image" else None
        found = flow.run("" if mode == "image" else row.text, image, k,
                         exclude_ids={row.id} if exclude_self else None, select=False)
        used.update(found.retrievers)
        route = found.domain or "(all)"
        routed[route] = routed.get(route, 0) + 1
        rel = relevant_ids(row.id, row.text, corpus)
        if exclude_self:
            rel.discard(row.id)
        rankings.append([h.id for h in found.candidates][:k])
        relevant.append(rel)
    values = per_query_metrics(rankings, relevant)
    return {"retriever": "+".join(sorted(used)) or "none", "mode": mode,
            "queries": len(rankings), "corpus": len(corpus), "routed": routed,
            "metrics": {n: float(v.mean()) for n, v in values.items()},
            "intervals": {n: bootstrap_interval(v) for n, v in values.items()}}


def retrieval_command(
    queries: Path = typer.Argument(..., help="Query manifest (JSONL/CSV: id, image, text)."),
    index: Path = typer.Option(..., "--index", "-i", help="Index to search."),
    mode: str = typer.Option("image", help="image (image→report) | text (text→document)."),
    k: int = typer.Option(10, help="Ranking depth."),
    exclude_self: bool = typer.Option(False, "--exclude-self",
                                      help="Drop each query's own record from its ranking."),
    text_field: str | None = typer.Option(None, help="Reference/query text field."),
    split_field: str | None = typer.Option(None, help="Keep rows whose field equals --split."),
    split: str = typer.Option("dev", help="Value of --split-field to evaluate."),
    config: Path | None = typer.Option(None, "--config", "-c",
                                       help="YAML config (retrieval), as for 'ask' and 'search'."),
    limit: int | None = typer.Option(None, help="Evaluate the first N queries only."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Recall@1/5/10, MRR and nDCG@10 (bootstrap 95 % intervals) of an index's retriever.

    Example: mmedrag eval retrieval medpix/pairs.jsonl --index idx --split-field split --split dev
    """
    from mmedrag.errors import UsageError
    from mmedrag.index import Index
    from mmedrag.ingest.labelled import read_rows

    if mode not in ("image", "text"):
        raise UsageError(f"--mode must be image or text, got {mode!r}")
    rows = read_rows(queries, text_field=text_field)
    if split_field:
        rows = [r for r in rows if str(r.fields.get(split_field, "")) == split]
    rows = rows[:limit] if limit else rows
    if not rows:
        raise UsageError(f"{queries}: no query rows to evaluate")
    cfg = Config.from_yaml(config) if config else Config()
    result = evaluate_index(Index.open(index), rows, mode, k, exclude_self, cfg,
                            progress=not as_json)
    if as_json:
        typer.echo(json.dumps(result, indent=1))
        return
    typer.echo(f"{result['retriever']} ({mode}): {result['queries']} queries over "
               f"{result['corpus']} records; routed: {result['routed']}")
    for name, value in result["metrics"].items():  # type: ignore[union-attr]
        low, high = result["intervals"][name]  # type: ignore[index]
        typer.echo(f"  {name:<8} {value:.3f}  [{low:.3f}, {high:.3f}]")
