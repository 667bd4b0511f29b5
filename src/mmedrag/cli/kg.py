"""``mmedrag kg build`` and ``mmedrag kg query``: knowledge graphs for KG-Rank retrieval."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from mmedrag.errors import UsageError

kg_app = typer.Typer(help="Build and query knowledge graphs (KG-Rank retrieval).",
                     no_args_is_help=True)


@kg_app.command("build")
def build_command(
    sources: list[str] = typer.Argument(..., help="KG files or folders (Disease Ontology TSVs, "
                                                  "SLAKE '#' CSVs, head,relation,tail CSV/TSV) "
                                                  "or the word 'hpo'."),
    out: Path = typer.Option(..., "--out", "-o", help="SQLite file to write (replaced)."),
    index: Path | None = typer.Option(None, "--index", "-i",
                                         help="Record the graph's path with this index."),
    hpo_diseases: bool = typer.Option(False, help="With 'hpo': add disease-phenotype triples."),
    hpo_max_annotations: int = typer.Option(20, help="With --hpo-diseases: per-term cap."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Build a knowledge graph file from KG tables.

    Example: mmedrag kg build ../shared/data/kg --out kg.sqlite --index idx
    """
    from mmedrag.retrieval.kg_loaders import load_source
    from mmedrag.retrieval.kg_store import KnowledgeGraph

    if index is not None and not (index / "index.json").exists():
        raise UsageError(f"{index}: not an index (no index.json)")
    results = [load_source(source, include_diseases=hpo_diseases,
                           max_annotations_per_term=hpo_max_annotations)
               if source.lower() == "hpo" else load_source(source) for source in sources]
    graph = KnowledgeGraph.build(out, results)
    info = graph.info()
    graph.close()
    if index is not None:
        from mmedrag.index import Index

        opened = Index.open(index)
        opened.set_artefacts(opened.artefacts.model_copy(update={"kg": str(out.resolve())}))
    if as_json:
        typer.echo(json.dumps(info))
        return
    for result in results:
        for error in result.errors[:10]:
            typer.echo(f"note: {error}", err=True)
    sources_line = ", ".join(f"{k}: {v}" for k, v in info["sources"].items())  # type: ignore[union-attr]
    typer.echo(f"built {out}: {info['triples']} triples, {info['names']} entity names "
               f"({sources_line}); skipped {info['skipped']} rows")


@kg_app.command("query")
def query_command(
    question: str = typer.Argument(..., help="The question."),
    kg: Path | None = typer.Option(None, "--kg", help="Graph file (default: the index's)."),
    index: Path | None = typer.Option(None, "--index", "-i",
                                         help="Index (encoder, graph path)."),
    k: int = typer.Option(5, "-k", help="Number of triples."),
    encoder: str | None = typer.Option(None, help="Text encoder name when no index is given "
                                                     "(default sentence-transformers)."),
    hops: int = typer.Option(1, help="1 or 2."),
    mmr: float | None = typer.Option(None, help="MMR λ (off by default)."),
    as_json: bool = typer.Option(False, "--json", help="Print {\"entities\", \"hits\"} as JSON."),
) -> None:
    """Show the entities found in a question and the best triples.

    Example: mmedrag kg query "What are the symptoms of influenza?" --kg kg.sqlite
    """
    from mmedrag.records import Query
    from mmedrag.retrieval.kg import KGRetriever

    if kg is None and index is None:
        raise UsageError("give --kg FILE or --index DIR (with a graph from 'kg build --index')")
    idx = None
    if index is not None:
        from mmedrag.index import Index

        idx = Index.open(index)
    retriever = KGRetriever(index=idx, kg_path=kg, encoder=encoder, hops=hops, mmr=mmr)
    entities = retriever.entities(question)
    hits = retriever.retrieve(Query(text=question), k)
    if as_json:
        typer.echo(json.dumps({"entities": [e.__dict__ for e in entities],
                               "hits": [h.to_dict() for h in hits]}, ensure_ascii=False))
        return
    typer.echo("entities: " + (", ".join(f"{e.entity} ({e.score:.0f})" for e in entities)
                               or "none found"))
    for hit in hits:
        typer.echo(f"{hit.rank:>3}  {hit.score:6.3f}  {hit.record.text}")


def register(app: typer.Typer) -> None:
    app.add_typer(kg_app, name="kg")
