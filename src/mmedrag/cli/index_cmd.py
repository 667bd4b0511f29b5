"""``mmedrag index``, ``mmedrag search`` and ``mmedrag info``."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from mmedrag.errors import UsageError


def _load_records(source: Path, kind: str, text_field: str | None, domain_field: str,
                  domain: str | None, on_error: str, chunk_tokens: int, chunk_overlap: int,
                  allow_outside: tuple[Path, ...] = ()):
    from mmedrag.ingest.corpus import read_corpus
    from mmedrag.ingest.folder import read_folder
    from mmedrag.ingest.manifest import read_manifest

    if not source.exists():
        raise UsageError(f"{source}: not found")
    if source.is_dir():
        return read_folder(source, domain=domain, on_error=on_error)
    if kind == "auto":
        kind = "pairs"
        with open(source, encoding="utf-8-sig", errors="replace") as handle:
            first = handle.readline(1 << 20)
        try:
            row = json.loads(first)
            if isinstance(row, dict) and "content" in row and "image" not in row:
                kind = "corpus"
        except json.JSONDecodeError:
            pass
    if kind == "corpus":
        return read_corpus(source, chunk_tokens, chunk_overlap, domain=domain or "text",
                           on_error=on_error)
    return read_manifest(source, text_field=text_field, domain_field=domain_field,
                         default_domain=domain or "", on_error=on_error,
                         allow_outside=allow_outside)


def index_command(
    manifest: list[Path] = typer.Argument(..., help="JSONL/CSV manifests, corpora, or image folders."),
    index: Path = typer.Option(..., "--index", "-i", help="Index folder (created if missing)."),
    kind: str = typer.Option("auto", help="auto | pairs | corpus"),
    text_field: str | None = typer.Option(None, help="Field holding the report (default: text/report/caption)."),
    domain_field: str = typer.Option("domain", help="Field used as the routing domain (e.g. modality)."),
    domain: str | None = typer.Option(None, help="Domain for records that have none."),
    config: Path | None = typer.Option(None, "--config", "-c", help="YAML config (index section)."),
    on_error: str = typer.Option("skip", help="skip | fail: what to do with a bad line or image."),
    resume: bool = typer.Option(False, "--resume", help="Complete an interrupted ingest (already-stored ids are skipped)."),
    limit: int | None = typer.Option(None, help="Index only the first N records."),
    keep_tags: list[str] = typer.Option([], "--keep-tags", help="Extra non-identifying DICOM tags to keep (PHI tags are always removed)."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
    allow_outside: list[Path] = typer.Option([], "--allow-outside", help="Folder outside the manifest's own from which images may be read (repeatable)."),
    max_pixels: int | None = typer.Option(None, "--max-pixels", min=1, help="Pixel limit per image, checked before decoding (default 64000000; DICOM: rows x columns x frames)."),
    allow_burned_in: bool = typer.Option(False, "--allow-burned-in", help="Index DICOMs with BurnedInAnnotation=YES (text in the pixels is NOT removed)."),
    wait: float = typer.Option(0.0, "--wait", help="Seconds to wait when another process is writing to the index (default: fail at once)."),
    embeddings: Path | None = typer.Option(None, "--embeddings", help="Precomputed text embeddings (.npy rows x dim, float32/16, memory-mapped; or .npz with 'embeddings' and 'ids'): nothing is re-encoded; the corpus is read unchunked."),
    embedding_ids: Path | None = typer.Option(None, "--embedding-ids", help="Row ids of an .npy --embeddings file (.txt one per line, .json list, or .npy)."),
    embeddings_model: str | None = typer.Option(None, "--embeddings-model", help="Model that made --embeddings; must be the index's text encoder (or a FILE.json sidecar with {\"model\": ...})."),
    ray: str | None = typer.Option(None, "--ray", help="Encode texts on a Ray cluster (pip install 'mmedrag[ray]'): auto (a running cluster, else a local one), local, or an address (ray://host:10001). This process still writes the index."),
    ray_workers: int | None = typer.Option(None, "--ray-workers", min=1, help="Encoder actors on the Ray cluster (default: its CPUs); needs --ray."),
) -> None:
    """Index image–report pairs or text corpora (incremental: re-adding adds nothing).

    Example: mmedrag index data/medpix/pairs.jsonl --index idx --text-field caption --domain-field modality

    Example: mmedrag index medcorp.jsonl --index idx --ray auto --ray-workers 16
    """
    from mmedrag.config import Config
    from mmedrag.index import Index, IngestSummary

    if on_error not in ("skip", "fail"):
        raise UsageError(f"--on-error must be skip or fail, got {on_error!r}")
    if ray_workers is not None and ray is None:
        raise UsageError("--ray-workers needs --ray ADDRESS (auto, local, or a cluster address)")
    if ray is not None and not ray.strip():
        raise UsageError("--ray needs an address: auto, local, or ray://host:10001")
    from mmedrag.ingest.deid import check_keep_tags

    keep = check_keep_tags(tuple(t for item in keep_tags for t in item.split(",") if t))
    cfg = Config.from_yaml(config) if config else Config()
    exists = (index / "index.json").exists()
    if resume and not exists:
        raise UsageError(f"{index}: nothing to resume (no index.json)")
    if (embedding_ids or embeddings_model) and embeddings is None:
        raise UsageError("--embedding-ids and --embeddings-model go with --embeddings FILE")
    if embeddings is not None and len(manifest) != 1:
        raise UsageError("--embeddings describes one corpus: give exactly one input")
    if embeddings is not None and ray is not None:
        raise UsageError("--embeddings and --ray exclude each other: precomputed vectors need "
                         "no encoding")
    if ray is not None:  # join the cluster and size the pool before creating anything
        from mmedrag.encoders.distributed import connect, fit_workers

        connect(ray.strip())
        ray_workers = fit_workers(ray_workers, address=ray.strip())
    idx = Index.open(index, create=True, config=cfg.index if (config or not exists) else None)
    idx.writing(wait)
    text_vectors = None
    if embeddings is not None:
        from mmedrag.ingest.embeddings import PrecomputedEmbeddings

        signature = idx.meta["text_encoder"]
        text_vectors = PrecomputedEmbeddings(embeddings, embedding_ids, embeddings_model,
                                             expect_model=signature["model"],
                                             expect_dim=int(signature["dim"]),
                                             expect_names=(signature["name"],),
                                             strict_ids=not limit)
    elif ray is not None:
        from mmedrag.encoders.distributed import RayTextVectors

        text_vectors = RayTextVectors(idx.meta["text_encoder"], address=ray.strip(),
                                      workers=ray_workers, skip=idx.text_store.has,
                                      shutdown=True)  # progress: the writer's own bar
    total = IngestSummary()
    try:
        for source in manifest:
            chunk_tokens = 0 if embeddings is not None else cfg.index.chunk_tokens
            read = _load_records(source, kind, text_field, domain_field, domain, on_error,
                                 chunk_tokens, cfg.index.chunk_overlap, tuple(allow_outside))
            records = read.records[:limit] if limit else read.records
            summary = idx.add(records, on_error=on_error, progress=not as_json,
                              source=source.name, keep_tags=keep, max_pixels=max_pixels,
                              allow_burned_in=allow_burned_in, text_vectors=text_vectors)
            summary.skipped += read.skipped
            summary.errors = read.errors + summary.errors
            total.merge(summary)
    finally:
        close = getattr(text_vectors, "close", None)
        if close is not None:
            close()
    count, domain_counts = idx.count(), idx.domain_counts()
    idx.close()
    ray_info = ({"address": ray, "workers": text_vectors.workers, "sent": text_vectors.sent}
                if ray is not None and text_vectors is not None else None)
    if as_json:
        typer.echo(json.dumps({**total.to_dict(), "count": count,
                               **({"ray": ray_info} if ray_info else {})}))
    else:
        domains = ", ".join(f"{k or '-'}: {v}" for k, v in domain_counts.items())
        for error in total.errors[:20]:
            typer.echo(f"skipped: {error}", err=True)
        if len(total.errors) > 20:
            typer.echo(f"... and {len(total.errors) - 20} more errors", err=True)
        on_ray = (f" (texts encoded by {ray_info['workers']} Ray workers)" if ray_info else "")
        typer.echo(f"added {total.added}, already indexed {total.already_indexed}, "
                   f"skipped {total.skipped} in {total.seconds:.1f}s{on_ray}; index now holds "
                   f"{count} records ({domains})")
    if total.errors and on_error == "fail":
        raise typer.Exit(1)



def search_command(
    index: Path = typer.Option(..., "--index", "-i", help="Index folder."),
    image: Path | None = typer.Option(None, "--image", help="Query image (PNG/JPEG/DICOM)."),
    text: str | None = typer.Option(None, "--text", help="Query text (with or without --image)."),
    k: int | None = typer.Option(None, "-k", help="Number of hits (default: the config's retrieval.k)."),
    mode: str | None = typer.Option(None, help="dense | bm25 | hybrid (text side; default: the config's retrieval.mode) | image-image (plain image→image search, no router or tower)."),
    domain: str | None = typer.Option(None, help="Only this domain."),
    where: list[str] = typer.Option([], "--where", help="Filter FIELD=VALUE (repeatable), e.g. split=train."),
    config: Path | None = typer.Option(None, "--config", "-c", help="YAML config (retrieval, reranker); the same one 'ask' uses."),
    exact: bool = typer.Option(False, help="Exact (brute-force) dense search."),
    as_json: bool = typer.Option(False, "--json", help="Print {\"hits\": [...], \"route\": ..., \"retrievers\": [...]} as JSON."),
) -> None:
    """Search an index by image, text or both, through the same retrieval as 'ask' (an image is
    routed to its domain and searched with the domain's tower when the index has them).

    Example: mmedrag search --index idx --image scan.png --text "pleural effusion" -k 5 --json
    """
    from mmedrag.config import Config
    from mmedrag.index import Index
    from mmedrag.ingest.images import load_image
    from mmedrag.retrieval.flow import RetrievalFlow

    if image is None and not text:
        raise UsageError("give --image PATH, --text TEXT, or both")
    if k is not None and k <= 0:
        raise UsageError("-k must be positive")
    filters: dict[str, str] = {}
    for item in where:
        if "=" not in item:
            raise UsageError(f"--where expects FIELD=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        filters[key] = value
    if domain:
        filters["domain"] = domain
    cfg = Config.from_yaml(config) if config else Config()
    written = cfg.index if "index" in cfg.model_fields_set else None
    flow = RetrievalFlow(cfg, Index.open(index, config=written)).for_mode(mode, exact=exact)
    query_image = load_image(image, what=str(image)) if image is not None else None
    found = flow.run(text or "", query_image, k, filters or None, select=False)
    hits = found.candidates
    if as_json:
        typer.echo(json.dumps({"hits": [
            {"id": h.id, "score": h.score, "rank": h.rank, "domain": h.record.domain,
             "text": h.record.text, "image": h.record.image, "title": h.record.title,
             "retriever": h.retriever} for h in hits], **found.to_dict()},
            ensure_ascii=False, default=str))
        return
    for line in found.trace:
        typer.echo(f"# {line}")
    for hit in hits:
        snippet = hit.record.text.replace("\n", " ")
        snippet = snippet[:117] + "..." if len(snippet) > 120 else snippet
        typer.echo(f"{hit.rank:>3}  {hit.score:7.4f}  {hit.record.domain or '-':<10} {hit.id}  {snippet}")


def info_command(
    index: Path = typer.Option(..., "--index", "-i", help="Index folder."),
    as_json: bool = typer.Option(False, "--json", help="Print as JSON (top-level 'count')."),
) -> None:
    """Show an index's encoders, format version and counts per domain.

    Example: mmedrag info --index idx --json
    """
    from mmedrag.index import Index

    data = Index.open(index).info()
    if as_json:
        typer.echo(json.dumps(data, indent=2))
        return
    typer.echo(f"index {data['path']} (format {data['format_version']}, created {data['created']})")
    te = data["text_encoder"]
    typer.echo(f"  text encoder : {te['model']} ({te['dim']}-d)")
    ie = data["image_encoder"]
    typer.echo(f"  image encoder: {ie['model']} ({ie['dim']}-d)" if ie else "  image encoder: none")
    typer.echo(f"  records      : {data['count']} ({data['images']} with images)")
    for domain, count in data["domains"].items():
        typer.echo(f"    {domain or '-':<12} {count}")
    for name, store in data.get("stores", {}).items():
        params = ", ".join(f"{k}={v}" for k, v in store["params"].items())
        typer.echo(f"  {name + ' store':<13}: {store['kind']} ({params}; configured "
                   f"{store['configured_kind']}), {store['vector_dtype']} vectors "
                   f"{store['vector_file_bytes'] / 2**20:.1f} MiB on disk, ANN file "
                   f"{store['ann_file_bytes'] / 2**20:.1f} MiB, RAM estimate "
                   f"{store['ram_estimate_bytes'] / 2**20:.1f} MiB")
    art = data["artefacts"]
    if art["router"]:
        typer.echo(f"  router       : {art['router']['path']}")
    for tower in art["towers"]:
        typer.echo(f"  tower        : {tower['path']} (domain {tower['domain'] or 'all'})")
    if art["calibration"]:
        typer.echo("  calibration  : yes")
    if art["kg"]:
        typer.echo(f"  kg           : {art['kg']}")


def register(app: typer.Typer) -> None:
    app.command("index")(index_command)
    app.command("search")(search_command)
    app.command("info")(info_command)
